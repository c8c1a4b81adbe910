//! Credentials: named providers the forward stage signs with; callers never hold them. Every
//! provider sits behind a [`Cached`] that refreshes ahead of expiry (one fetch at a time for all
//! waiters), keeps serving the current credentials while a refresh fails, and fails closed
//! (503) once they have expired.

pub mod aws;
pub mod gcp;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use futures_util::future::BoxFuture;

use crate::clock::SharedClock;
use crate::config::CredentialSettings;

/// Refresh this long before credentials expire (at most; see [`refresh_margin`]).
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

/// How long before expiry credentials of this lifetime are refreshed: 5 minutes, or a fifth of
/// the lifetime (refresh at 80%) for short-lived ones.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    REFRESH_BEFORE.min(lifetime / 5)
}

/// Why credentials are unusable (fail closed: 503).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialsError {
    /// The provider is not configured (a step names a missing provider).
    #[error("credentials `{0}` are not configured")]
    NotConfigured(String),
    /// The provider could not produce credentials.
    #[error("credentials `{name}` unavailable: {detail}")]
    Unavailable {
        /// Provider name.
        name: String,
        /// Why.
        detail: String,
    },
}

/// Produces AWS credentials (one fetch; caching is [`Cached`]'s job).
pub trait AwsCredentialProvider: Send + Sync + std::fmt::Debug {
    /// Fetches fresh credentials.
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, String>>;
}

#[derive(Debug, Clone)]
struct Held {
    creds: Credentials,
    fetched: SystemTime,
}

/// A provider with a refresh-ahead cache. Requests never wait for a refresh while the held
/// credentials are valid: [`Cached::get`] hands them out and the background task calls
/// [`Cached::refresh_if_due`]. Only when nothing valid is held does a request fetch (one fetch
/// for all waiters).
#[derive(Debug)]
pub struct Cached {
    name: String,
    inner: Arc<dyn AwsCredentialProvider>,
    clock: SharedClock,
    current: Mutex<Option<Held>>,
    refresh: tokio::sync::Mutex<()>,
    failures: std::sync::atomic::AtomicU64,
}

impl Cached {
    /// Wraps a provider.
    pub fn new(name: String, inner: Arc<dyn AwsCredentialProvider>, clock: SharedClock) -> Self {
        Self {
            name,
            inner,
            clock,
            current: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            failures: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn peek(&self) -> Option<Held> {
        self.current.lock().ok().and_then(|g| g.clone())
    }

    /// When `h` is due for refresh (`None`: never expires).
    fn due(h: &Held) -> Option<SystemTime> {
        let expiry = h.creds.expiry()?;
        let lifetime = expiry.duration_since(h.fetched).unwrap_or_default();
        Some(expiry - refresh_margin(lifetime))
    }

    fn fresh(&self, h: &Held) -> bool {
        Self::due(h).is_none_or(|d| d > self.clock.now())
    }

    fn usable(&self, h: &Held) -> bool {
        h.creds.expiry().is_none_or(|e| e > self.clock.now())
    }

    /// When the next refresh is due (`None`: never, or nothing held).
    pub fn refresh_due(&self) -> Option<SystemTime> {
        self.peek().as_ref().and_then(Self::due)
    }

    /// Expiry of the held credentials (metrics).
    pub fn expiry(&self) -> Option<SystemTime> {
        self.peek().and_then(|h| h.creds.expiry())
    }

    /// Failed fetches so far (metrics).
    pub fn failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether usable credentials are held now (readiness).
    pub fn is_usable(&self) -> bool {
        self.peek().is_some_and(|h| self.usable(&h))
    }

    /// Credentials for a request: the held ones while valid (even when due for refresh: that is
    /// the background task's job), otherwise one fetch shared by all waiters; fails closed.
    pub async fn get(&self) -> Result<Credentials, CredentialsError> {
        if let Some(h) = self.peek().filter(|h| self.usable(h)) {
            return Ok(h.creds);
        }
        self.fetch_unless(|me, h| me.usable(h)).await
    }

    /// Background refresh: fetches when the held credentials are due (or absent). Errors when
    /// the fetch failed, so the caller can back off and retry; the held ones keep serving.
    pub async fn refresh_if_due(&self) -> Result<(), CredentialsError> {
        if self.peek().is_some_and(|h| self.fresh(&h)) {
            return Ok(());
        }
        self.fetch_unless(|me, h| me.fresh(h)).await.map(|_| ())
    }

    async fn fetch_unless(
        &self,
        good_enough: impl Fn(&Self, &Held) -> bool,
    ) -> Result<Credentials, CredentialsError> {
        let _one_at_a_time = self.refresh.lock().await;
        if let Some(h) = self.peek().filter(|h| good_enough(self, h)) {
            return Ok(h.creds);
        }
        let fetched = self.clock.now();
        match self.inner.fetch().await {
            Ok(c) => {
                if let Ok(mut g) = self.current.lock() {
                    *g = Some(Held {
                        creds: c.clone(),
                        fetched,
                    });
                }
                tracing::info!(message = "Credentials refreshed.", name = %self.name, expires = ?c.expiry());
                Ok(c)
            }
            Err(detail) => {
                self.failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if self.peek().is_some_and(|h| self.usable(&h)) {
                    tracing::warn!(message = "Credential refresh failed; the current ones serve until they expire.", name = %self.name, error = %detail);
                } else {
                    tracing::error!(message = "Credentials unavailable.", name = %self.name, error = %detail);
                }
                Err(CredentialsError::Unavailable {
                    name: self.name.clone(),
                    detail,
                })
            }
        }
    }
}

/// All configured providers by name.
#[derive(Debug, Default, Clone)]
pub struct CredentialStore {
    aws: BTreeMap<String, Arc<Cached>>,
    google: BTreeMap<String, Arc<gcp::GoogleTokens>>,
}

impl CredentialStore {
    /// Builds every configured provider (sources first, so role providers can use them).
    pub fn from_settings(
        settings: &BTreeMap<String, CredentialSettings>,
        clock: SharedClock,
    ) -> Self {
        let mut aws: BTreeMap<String, Arc<Cached>> = BTreeMap::new();
        let mut google = BTreeMap::new();
        let sdk = aws::SdkDeps::new();
        let mut pending: Vec<(&String, &CredentialSettings)> = settings.iter().collect();
        // Sources first: non-role kinds, then roles whose source is built.
        pending.sort_by_key(|(_, s)| matches!(s, CredentialSettings::AwsAssumeRole(_)));
        for (name, s) in pending {
            let provider: Arc<dyn AwsCredentialProvider> = match s {
                CredentialSettings::AwsStatic(st) => Arc::new(aws::StaticProvider::new(st)),
                CredentialSettings::AwsAssumeRole(a) => {
                    let Some(source) = aws.get(&a.source).cloned() else {
                        // Validation guarantees the source exists; fail closed if not.
                        continue;
                    };
                    Arc::new(aws::AssumeRole::new(a.clone(), source, sdk.clone()))
                }
                CredentialSettings::AwsWebIdentity(w) => {
                    Arc::new(aws::WebIdentity::new(w.clone(), sdk.clone()))
                }
                CredentialSettings::AwsDefaultChain { region } => {
                    Arc::new(aws::DefaultChain::new(region.clone(), sdk.clone()))
                }
                CredentialSettings::GcpImpersonate(_)
                | CredentialSettings::GcpServiceAccount { .. }
                | CredentialSettings::GcpExternalAccount { .. }
                | CredentialSettings::GcpMetadata { .. } => {
                    // Built lazily inside the runtime; a missing source leaves the provider
                    // out, so its steps get 503 (validation reports it first).
                    if let Some(b) = gcp::builder(s, settings) {
                        google.insert(
                            name.clone(),
                            Arc::new(gcp::GoogleTokens::new(name.clone(), b)),
                        );
                    }
                    continue;
                }
            };
            aws.insert(
                name.clone(),
                Arc::new(Cached::new(name.clone(), provider, clock.clone())),
            );
        }
        Self { aws, google }
    }

    /// The bearer token of a named Google provider.
    pub async fn google(
        &self,
        name: &str,
    ) -> Result<crate::secret::Secret<String>, CredentialsError> {
        let p = self
            .google
            .get(name)
            .ok_or_else(|| CredentialsError::NotConfigured(name.to_string()))?;
        p.token().await
    }

    /// Every Google provider (warm-up, readiness, metrics).
    pub fn google_providers(&self) -> impl Iterator<Item = (&String, &Arc<gcp::GoogleTokens>)> {
        self.google.iter()
    }

    /// AWS credentials of a named provider.
    pub async fn aws(&self, name: &str) -> Result<Credentials, CredentialsError> {
        let p = self
            .aws
            .get(name)
            .ok_or_else(|| CredentialsError::NotConfigured(name.to_string()))?;
        p.get().await
    }

    /// Every provider (warm-up, refresh tasks, readiness).
    pub fn providers(&self) -> impl Iterator<Item = (&String, &Arc<Cached>)> {
        self.aws.iter()
    }
}

#[cfg(test)]
mod tests;
