//! Hot reload of the policy folder: on change (polled) or SIGHUP, the new set is built and
//! validated off to the side, then swapped in whole. An invalid set is refused with a log line
//! and a metric, and the old set keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::app::App;
use crate::authz::policies;

/// How often the folder is looked at.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// Names, sizes and modification times of the folder's policy files.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "cedar" || x == "cedarschema")
        })
        .map(|p| {
            let m = std::fs::metadata(&p).ok();
            let len = m.as_ref().map(|m| m.len()).unwrap_or(0);
            let mtime = m.and_then(|m| m.modified().ok());
            (p, len, mtime)
        })
        .collect();
    out.sort();
    out
}

/// Rebuilds and swaps the policies now. Returns whether the new set was taken.
pub fn reload_now(app: &App) -> bool {
    let dir = &app.settings.policies_dir;
    let built = policies::read_dir(dir).and_then(|src| policies::build(&src, &app.settings.steps));
    match built {
        Ok(bundle) => {
            let n = bundle.policy_count;
            app.policies.replace(bundle);
            app.metrics
                .policy_reloads
                .get_or_create(&crate::observe::ResultLabels {
                    result: "ok".into(),
                })
                .inc();
            tracing::info!(message = "Policies reloaded.", policies = n);
            true
        }
        Err(problems) => {
            app.metrics
                .policy_reloads
                .get_or_create(&crate::observe::ResultLabels {
                    result: "refused".into(),
                })
                .inc();
            tracing::error!(message = "Policy reload refused; the previous policies keep serving.", problems = %problems.to_string().replace('\n', "; "));
            false
        }
    }
}

/// Watches the folder and SIGHUP until the app is dropped.
pub fn spawn(app: &Arc<App>) {
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut seen = match weak.upgrade() {
            Some(app) => fingerprint(&app.settings.policies_dir),
            None => return,
        };
        loop {
            let by_signal = tokio::select! {
                _ = tokio::time::sleep(POLL_EVERY) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let Some(app) = weak.upgrade() else { return };
            let now = fingerprint(&app.settings.policies_dir);
            if by_signal || now != seen {
                if by_signal {
                    tracing::info!(message = "SIGHUP: reloading policies.");
                }
                // Parsing and validating a large set takes a while (~1 s for 10,000 policies):
                // off the runtime, so requests keep being served meanwhile.
                let building = Arc::clone(&app);
                if tokio::task::spawn_blocking(move || reload_now(&building))
                    .await
                    .is_err()
                {
                    tracing::error!(
                        message = "Policy reload stopped unexpectedly; the old set keeps serving."
                    );
                }
                seen = now;
            }
        }
    });
}
