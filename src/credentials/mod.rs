//! Credentials: named providers the forward stage signs with; callers never hold them. Every
//! provider sits behind a [`Cached`] that refreshes ahead of expiry (one fetch at a time for all
//! waiters), keeps serving the current credentials while a refresh fails, and fails closed
//! (503) once they have expired.

pub mod aws;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use futures_util::future::BoxFuture;

use crate::clock::SharedClock;
use crate::config::CredentialSettings;

/// Refresh this long before credentials expire.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

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

/// A provider with a refresh-ahead cache.
#[derive(Debug)]
pub struct Cached {
    name: String,
    inner: Arc<dyn AwsCredentialProvider>,
    clock: SharedClock,
    current: Mutex<Option<Credentials>>,
    refresh: tokio::sync::Mutex<()>,
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
        }
    }

    fn peek(&self) -> Option<Credentials> {
        self.current.lock().ok().and_then(|g| g.clone())
    }

    /// Fresh: not within [`REFRESH_BEFORE`] of expiry (no expiry = always fresh).
    fn fresh(&self, c: &Credentials) -> bool {
        c.expiry()
            .is_none_or(|e| e > self.clock.now() + REFRESH_BEFORE)
    }

    /// Usable: not expired.
    fn usable(&self, c: &Credentials) -> bool {
        c.expiry().is_none_or(|e| e > self.clock.now())
    }

    /// When the next refresh is due (`None`: never).
    pub fn refresh_due(&self) -> Option<SystemTime> {
        self.peek()
            .and_then(|c| c.expiry())
            .map(|e| e - REFRESH_BEFORE)
    }

    /// Whether usable credentials are held now (readiness).
    pub fn is_usable(&self) -> bool {
        self.peek().is_some_and(|c| self.usable(&c))
    }

    /// Current credentials, fetching when there are none or they are due for refresh.
    pub async fn get(&self) -> Result<Credentials, CredentialsError> {
        if let Some(c) = self.peek().filter(|c| self.fresh(c)) {
            return Ok(c);
        }
        let _one_at_a_time = self.refresh.lock().await;
        if let Some(c) = self.peek().filter(|c| self.fresh(c)) {
            return Ok(c);
        }
        match self.inner.fetch().await {
            Ok(c) => {
                if let Ok(mut g) = self.current.lock() {
                    *g = Some(c.clone());
                }
                tracing::info!(message = "Credentials refreshed.", name = %self.name, expires = ?c.expiry());
                Ok(c)
            }
            Err(detail) => match self.peek().filter(|c| self.usable(c)) {
                Some(c) => {
                    tracing::warn!(message = "Credential refresh failed; the current ones serve until they expire.", name = %self.name, error = %detail);
                    Ok(c)
                }
                None => {
                    tracing::error!(message = "Credentials unavailable.", name = %self.name, error = %detail);
                    Err(CredentialsError::Unavailable {
                        name: self.name.clone(),
                        detail,
                    })
                }
            },
        }
    }
}

/// All configured providers by name.
#[derive(Debug, Default, Clone)]
pub struct CredentialStore {
    aws: BTreeMap<String, Arc<Cached>>,
}

impl CredentialStore {
    /// Builds every configured provider (sources first, so role providers can use them).
    pub fn from_settings(
        settings: &BTreeMap<String, CredentialSettings>,
        clock: SharedClock,
    ) -> Self {
        let mut aws: BTreeMap<String, Arc<Cached>> = BTreeMap::new();
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
            };
            aws.insert(
                name.clone(),
                Arc::new(Cached::new(name.clone(), provider, clock.clone())),
            );
        }
        Self { aws }
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
