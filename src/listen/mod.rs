//! Accept: TCP (+ TLS), HTTP/1.1 and HTTP/2, header-read timeout, graceful drain.

pub mod body;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::app::App;
use crate::pipeline;

/// Most connections served at once; beyond it, accepting waits.
pub const MAX_CONNECTIONS: usize = 10_000;

/// A bound listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Arc<App>,
}

impl Server {
    /// Binds the configured address (port 0 picks a free one).
    pub async fn bind(app: Arc<App>, addr: SocketAddr) -> Result<Self, String> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on `{addr}`: {e}"))?;
        let tls = match &app.settings.server.tls {
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(
                &files.cert,
                &files.key,
                app.crypto.clone(),
            )?)),
            None => None,
        };
        Ok(Self { listener, tls, app })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and gives in-flight requests
    /// up to `grace` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let grace = self.app.settings.server.shutdown_grace;
        let header_timeout = self.app.settings.server.header_read_timeout;
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(message = "Accept failed.", error = %e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let app = self.app.clone();
            let tls = self.tls.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _permit = permit;
                let svc = service_fn(move |req| {
                    let app = app.clone();
                    // Boxed with an explicit `Send` bound: pins the lifetimes the compiler
                    // otherwise has to prove `Send` for generically.
                    let fut: futures_util::future::BoxFuture<'static, _> =
                        Box::pin(pipeline::handle(app, req, peer));
                    async move { Ok::<_, std::convert::Infallible>(fut.await) }
                });
                let builder = connection_builder(header_timeout);
                let served = match tls {
                    Some(acceptor) => {
                        let tls_stream = match tokio::time::timeout(
                            header_timeout,
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(message = "TLS handshake failed.", %peer, error = %e);
                                return;
                            }
                            Err(_) => return,
                        };
                        let conn = builder.serve_connection(TokioIo::new(tls_stream), svc);
                        watcher.watch(conn.into_owned()).await
                    }
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(stream), svc);
                        watcher.watch(conn.into_owned()).await
                    }
                };
                if let Err(e) = served {
                    tracing::debug!(message = "Connection ended with an error.", %peer, error = %e);
                }
            });
        }
        drop(self.listener);
        tracing::info!(message = "Draining in-flight requests.", grace = ?grace);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(message = "Shutdown grace elapsed with requests still in flight.");
        }
        // Outcome records go with the next group commit: make the last ones durable.
        if let Err(e) = self.app.audit.flush().await {
            tracing::error!(message = "Could not make the last audit records durable.", error = %e);
        }
    }
}

/// How every connection is served: HTTP/1.1 or HTTP/2 by preface, the header-read timeout,
/// bounded buffers and streams. (Also what `examples/bare_proxy.rs` serves with.)
pub fn connection_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024);
    builder
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!(message = "Shutdown signal received.");
}
