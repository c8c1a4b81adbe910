//! The composition root: the only place real clients, credential providers and the clock are
//! made, and where settings become a running [`App`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{Audit, FileLog, file::LogOptions};
use crate::authn::Authenticator;
use crate::authz::{Policies, policies};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Problems, Settings, StepSettings};
use crate::credentials::CredentialStore;
use crate::forward::Upstreams;
use crate::http_client::{HyperClient, SharedHttpClient};
use crate::observe::{Metrics, Readiness};
use crate::ratelimit::RateLimits;
use crate::validate::Guardrails;

/// Why stepgate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration or policies are invalid (exit 1).
    #[error("{0}")]
    Invalid(Problems),
    /// Something at run time failed (exit 2).
    #[error("{0}")]
    Runtime(String),
}

/// The outside world, injected.
#[derive(Clone)]
pub struct Deps {
    /// Outbound HTTP.
    pub http: SharedHttpClient,
    /// Time.
    pub clock: SharedClock,
    /// TLS crypto provider.
    pub crypto: Arc<rustls::crypto::CryptoProvider>,
}

impl Deps {
    /// The real ones: hyper + rustls (ring) with system roots, the system clock.
    pub fn real() -> Result<Self, StartError> {
        let crypto = Arc::new(rustls::crypto::ring::default_provider());
        let http = HyperClient::new(crypto.clone()).map_err(|e| {
            StartError::Runtime(format!("cannot load the system's root certificates: {e}"))
        })?;
        Ok(Self {
            http: Arc::new(http),
            clock: Arc::new(SystemClock),
            crypto,
        })
    }
}

/// Everything a request needs.
pub struct App {
    /// Validated settings.
    pub settings: Settings,
    /// Steps by name.
    pub steps: BTreeMap<String, Arc<StepSettings>>,
    /// Steps by the Step Functions state machine they front (`/aws/states`).
    pub state_machines: crate::route::StateMachines,
    /// Authentication.
    pub authn: Authenticator,
    /// Authorization.
    pub policies: Policies,
    /// Audit.
    pub audit: Audit,
    /// Input schemas per step.
    pub guardrails: Guardrails,
    /// Rate limits per caller and step.
    pub limits: RateLimits,
    /// Forwarding.
    pub upstreams: Upstreams,
    /// Time.
    pub clock: SharedClock,
    /// Metrics.
    pub metrics: Metrics,
    /// TLS crypto provider.
    pub crypto: Arc<rustls::crypto::CryptoProvider>,
}

/// RFC 3339 UTC time with milliseconds (`2026-12-02T07:03:21.123Z`). Every audit record carries
/// one: `humantime` writes it digit by digit (`time`'s format-description walk cost ten times as
/// much); it covers 1970 to 9999 and panics outside, so other times take `time`'s formatter.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    /// The first second `humantime` cannot write (year 10000).
    const YEAR_10000: u64 = 253_402_300_800;
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) if d.as_secs() < YEAR_10000 => humantime::format_rfc3339_millis(t).to_string(),
        _ => rfc3339_described(time::OffsetDateTime::from(t)),
    }
}

/// [`rfc3339`] through `time`'s formatter (times outside 1970..=9999; and the reference in tests).
fn rfc3339_described(t: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

impl App {
    /// Loads policies, opens the audit log and builds every stage.
    pub fn build(settings: Settings, deps: Deps) -> Result<Self, StartError> {
        let sources = policies::read_dir(&settings.policies_dir).map_err(StartError::Invalid)?;
        let bundle = policies::build(&sources, &settings.steps).map_err(StartError::Invalid)?;
        let guardrails = Guardrails::load(&settings.steps).map_err(StartError::Invalid)?;
        let limits = RateLimits::new(settings.steps.values());
        let clock = deps.clock.clone();
        let metrics = Metrics::default();
        let options = LogOptions {
            rotate_bytes: settings.audit_rotate_bytes,
            rotate_age: settings.audit_rotate_age,
            accept_broken_chain: settings.audit_accept_broken_chain,
            journal_bytes: settings.audit_journal_bytes,
        };
        let (log, head) = FileLog::open_with(
            &settings.audit_path,
            options,
            move || rfc3339(clock.now()),
            metrics.audit.clone(),
            Box::new(crate::audit::file::open_file),
        )
        .map_err(|e| match e {
            crate::audit::AuditError::Corrupt(m) => StartError::Runtime(format!("audit log: {m}")),
            other => StartError::Runtime(other.to_string()),
        })?;
        tracing::info!(
            message = "Audit log open.",
            path = %settings.audit_path.display(),
            last_seq = head.seq
        );
        let authn = Authenticator::new(&settings.issuers, deps.http.clone(), deps.clock.clone());
        let upstreams = Upstreams {
            http: deps.http.clone(),
            clock: deps.clock.clone(),
            credentials: CredentialStore::from_settings(&settings.credentials, deps.clock.clone()),
            timeout: settings.server.upstream_timeout,
        };
        let steps = settings
            .steps
            .iter()
            .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
            .collect();
        // In name order, as `steps`: where several steps front one machine, the first has it.
        let state_machines = crate::route::StateMachines::new(settings.steps.values());
        Ok(Self {
            steps,
            state_machines,
            authn,
            policies: Policies::new(bundle),
            guardrails,
            limits,
            audit: Audit::new(log),
            upstreams,
            clock: deps.clock,
            metrics,
            crypto: deps.crypto,
            settings,
        })
    }

    /// Now, as an audit timestamp.
    pub fn rfc3339_now(&self) -> String {
        rfc3339(self.clock.now())
    }

    /// Readiness: audit writable, policies loaded, issuers reachable once.
    pub fn readiness(&self) -> Readiness {
        let issuers: BTreeMap<String, bool> = self
            .authn
            .issuers()
            .map(|i| (i.name().to_string(), i.keys().ever_loaded()))
            .collect();
        let audit = self.audit.is_healthy();
        let credentials: BTreeMap<String, bool> = self
            .upstreams
            .credentials
            .providers()
            .map(|(n, p)| (n.clone(), p.is_usable()))
            .chain(
                self.upstreams
                    .credentials
                    .google_providers()
                    .map(|(n, p)| (n.clone(), p.is_usable())),
            )
            .collect();
        let any_issuer = issuers.is_empty() || issuers.values().any(|v| *v);
        Readiness {
            ready: audit && any_issuer && credentials.values().all(|v| *v),
            audit,
            policies: true,
            issuers,
            credentials,
        }
    }

    /// Brings the credential metrics up to date (called at every scrape).
    pub fn sync_credential_metrics(&self) {
        let m = &self.metrics.credentials;
        let creds = &self.upstreams.credentials;
        let now = self.clock.now();
        let mut rows: Vec<(String, u64, bool, Option<f64>)> = creds
            .providers()
            .map(|(n, p)| {
                let left = p.expiry().map(|exp| match exp.duration_since(now) {
                    Ok(d) => d.as_secs_f64(),
                    Err(e) => -e.duration().as_secs_f64(),
                });
                (n.clone(), p.failures(), p.is_usable(), left)
            })
            .collect();
        rows.extend(
            creds
                .google_providers()
                .map(|(n, p)| (n.clone(), p.failures(), p.is_usable(), None)),
        );
        for (name, failures, usable, left) in rows {
            let labels = crate::observe::ProviderLabels { provider: name };
            let counter = m.refresh_failures.get_or_create(&labels);
            counter.inc_by(failures.saturating_sub(counter.get()));
            m.usable.get_or_create(&labels).set(i64::from(usable));
            if let Some(left) = left {
                m.expiry_seconds.get_or_create(&labels).set(left);
            }
        }
    }

    /// Fetches every provider's credentials now, then refreshes each ahead of its expiry in the
    /// background (one refresh at a time per provider; failures retried with jittered, capped
    /// back-off), so requests never wait for STS while held credentials are valid. Google
    /// providers refresh inside `google-cloud-auth`; their task here keeps readiness current and
    /// rebuilds a provider that stopped.
    pub fn spawn_credential_refresh(self: &Arc<Self>) {
        for (_, provider) in self.upstreams.credentials.providers() {
            let (provider, clock) = (provider.clone(), self.clock.clone());
            tokio::spawn(async move {
                let mut backoff = Duration::from_secs(1);
                loop {
                    let wait = match provider.refresh_if_due().await {
                        Ok(()) => {
                            backoff = Duration::from_secs(1);
                            provider
                                .refresh_due()
                                .and_then(|due| due.duration_since(clock.now()).ok())
                                .unwrap_or(Duration::from_secs(300))
                                .clamp(Duration::from_secs(1), Duration::from_secs(300))
                        }
                        Err(_) => {
                            let w = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                            backoff = (backoff * 2).min(Duration::from_secs(60));
                            w
                        }
                    };
                    tokio::time::sleep(wait).await;
                }
            });
        }
        for (_, provider) in self.upstreams.credentials.google_providers() {
            let provider = provider.clone();
            tokio::spawn(async move {
                loop {
                    let base = if provider.token().await.is_ok() {
                        30.0
                    } else {
                        5.0
                    };
                    let wait = Duration::from_secs_f64(base * (0.75 + rand::random::<f64>() / 2.0));
                    tokio::time::sleep(wait).await;
                }
            });
        }
    }

    /// Drops idle rate-limit buckets once a minute.
    pub fn spawn_housekeeping(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let Some(app) = weak.upgrade() else { return };
                app.limits.shrink();
            }
        });
    }

    /// Fetches issuer keys now, then keeps retrying those that failed in the background.
    pub fn spawn_issuer_warmup(self: &Arc<Self>) {
        let app = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            loop {
                let failed = app.authn.warm().await;
                for (name, e) in &failed {
                    tracing::warn!(message = "Issuer keys unavailable; will retry.", issuer = %name, error = %e);
                }
                if failed.is_empty() {
                    break;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn audit_times_match_the_rfc3339_formatter() {
        for secs in [
            0,
            951_782_400,
            1_764_659_001,
            1_798_761_599,
            4_102_444_800,
            253_402_300_799,
        ] {
            for ms in [0, 7, 999] {
                let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms);
                assert_eq!(
                    super::rfc3339(t),
                    super::rfc3339_described(time::OffsetDateTime::from(t)),
                    "at {secs}.{ms}"
                );
            }
        }
        let t = UNIX_EPOCH + Duration::from_millis(1_764_659_001_042);
        assert_eq!(super::rfc3339(t), "2025-12-02T07:03:21.042Z");
    }
}
