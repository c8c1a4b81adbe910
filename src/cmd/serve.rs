//! `stepgate serve`: run the proxy until SIGTERM/SIGINT.

use std::path::Path;
use std::sync::Arc;

use crate::app::{App, Deps, StartError};
use crate::config;
use crate::listen::{Server, shutdown_signal};

/// Loads, starts and serves.
pub async fn run(path: &Path, accept_broken_audit_chain: bool) -> Result<(), StartError> {
    let mut settings = config::load(path).map_err(StartError::Invalid)?;
    settings.audit_accept_broken_chain = accept_broken_audit_chain;
    let listen = settings.server.listen;
    let app = Arc::new(App::build(settings, Deps::real()?)?);
    app.spawn_issuer_warmup();
    crate::authz::reload::spawn(&app);
    app.spawn_housekeeping();
    app.spawn_credential_refresh();
    let server = Server::bind(app, listen)
        .await
        .map_err(StartError::Runtime)?;
    tracing::info!(message = "stepgate listening.", addr = %server.local_addr().map(|a| a.to_string()).unwrap_or_default());
    server.run(shutdown_signal()).await;
    Ok(())
}
