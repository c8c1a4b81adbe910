//! Google credential providers, built with `google-cloud-auth`: service-account keys
//! (self-signed JWTs, AIP-4111), workload identity federation (`external_account`, AIP-4117),
//! impersonation (`generateAccessToken`) and the metadata server.
//!
//! `google-cloud-auth` keeps each token in its own cache with one background refresh task per
//! provider (a new token 4 minutes before expiry; reading the current one never waits). What it
//! does not do, stepgate adds here: a bound on how long a request waits when there is no valid
//! token (then 503), and recovery after a permanent refresh failure (its refresh task stops; we
//! build the provider again, at most once per [`REBUILD_FLOOR`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use google_cloud_auth::credentials::{
    AccessTokenCredentials, external_account, impersonated, mds, service_account,
};
use serde_json::{Value, json};

use super::CredentialsError;
use crate::config::{CredentialSettings, GcpImpersonateSettings};
use crate::secret::Secret;

/// Least time between two rebuilds of a failing provider.
pub const REBUILD_FLOOR: Duration = Duration::from_secs(10);

/// Longest a request waits for a token.
pub const TOKEN_WAIT: Duration = Duration::from_secs(5);

/// Something that yields Google access tokens (one built provider). The seam tests replace.
pub trait GoogleTokenSource: Send + Sync {
    /// The current access token (cached by the source).
    fn access_token(&self) -> BoxFuture<'_, Result<String, String>>;
}

/// Builds a token source; called again after failures.
pub type SourceBuilder = Box<dyn Fn() -> Result<Box<dyn GoogleTokenSource>, String> + Send + Sync>;

struct GoogleAuth(AccessTokenCredentials);

impl GoogleTokenSource for GoogleAuth {
    fn access_token(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            self.0
                .access_token()
                .await
                .map(|t| t.token)
                .map_err(|e| e.to_string())
        })
    }
}

struct Built {
    source: Option<Arc<dyn GoogleTokenSource>>,
    at: Option<Instant>,
    error: Option<String>,
}

/// One named Google provider.
pub struct GoogleTokens {
    name: String,
    build: SourceBuilder,
    built: Mutex<Built>,
    /// Held while (re)building, so concurrent failures build once.
    rebuilding: tokio::sync::Mutex<()>,
    usable: std::sync::atomic::AtomicBool,
    rebuild_floor: Duration,
    token_wait: Duration,
    failures: AtomicU64,
    last_token_hash: AtomicU64,
    rotations: AtomicU64,
}

impl std::fmt::Debug for GoogleTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleTokens")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl GoogleTokens {
    /// A provider that builds its token source with `build` (lazily, inside the runtime).
    pub fn new(name: String, build: SourceBuilder) -> Self {
        Self {
            name,
            build,
            built: Mutex::new(Built {
                source: None,
                at: None,
                error: None,
            }),
            rebuilding: tokio::sync::Mutex::new(()),
            usable: std::sync::atomic::AtomicBool::new(false),
            rebuild_floor: REBUILD_FLOOR,
            token_wait: TOKEN_WAIT,
            failures: AtomicU64::new(0),
            last_token_hash: AtomicU64::new(0),
            rotations: AtomicU64::new(0),
        }
    }

    /// Sets the least time between rebuilds (default [`REBUILD_FLOOR`]; tests).
    pub fn with_rebuild_floor(mut self, floor: Duration) -> Self {
        self.rebuild_floor = floor;
        self
    }

    /// Sets the longest wait for a token (default [`TOKEN_WAIT`]; tests).
    pub fn with_token_wait(mut self, wait: Duration) -> Self {
        self.token_wait = wait;
        self
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the last attempt gave a token (readiness).
    pub fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Relaxed)
    }

    /// Failed attempts so far (metric).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Distinct tokens seen so far (metric: rotations happen).
    pub fn rotations(&self) -> u64 {
        self.rotations.load(Ordering::Relaxed)
    }

    /// The current bearer token; fails closed within [`TOKEN_WAIT`].
    pub async fn token(&self) -> Result<Secret<String>, CredentialsError> {
        match tokio::time::timeout(self.token_wait, self.try_token()).await {
            Ok(Ok(t)) => {
                self.usable.store(true, Ordering::Relaxed);
                self.note_token(&t);
                Ok(Secret::new(t))
            }
            Ok(Err(detail)) => Err(self.failed(detail)),
            Err(_) => Err(self.failed(format!("no token within {:?}", self.token_wait))),
        }
    }

    fn failed(&self, detail: String) -> CredentialsError {
        self.usable.store(false, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(message = "Google credentials unavailable.", name = %self.name, error = %detail);
        CredentialsError::Unavailable {
            name: self.name.clone(),
            detail,
        }
    }

    fn note_token(&self, t: &str) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        t.hash(&mut h);
        let h = h.finish();
        if self.last_token_hash.swap(h, Ordering::Relaxed) != h {
            self.rotations.fetch_add(1, Ordering::Relaxed);
            tracing::info!(message = "Google access token refreshed.", name = %self.name);
        }
    }

    async fn try_token(&self) -> Result<String, String> {
        let src = match self.current() {
            Some(s) => s,
            None => self.rebuild(None).await?,
        };
        match src.access_token().await {
            Ok(t) => Ok(t),
            Err(e) => {
                // Its refresh task may have stopped for good (a non-transient error): build a
                // new source for the next request, no more often than REBUILD_FLOOR.
                let _ = self.rebuild(Some(&src)).await;
                Err(e)
            }
        }
    }

    fn current(&self) -> Option<Arc<dyn GoogleTokenSource>> {
        self.built.lock().ok().and_then(|b| b.source.clone())
    }

    /// Builds a source when there is none, or replaces `failed` unless that was built within
    /// [`REBUILD_FLOOR`] or someone replaced it already. One build at a time.
    async fn rebuild(
        &self,
        failed: Option<&Arc<dyn GoogleTokenSource>>,
    ) -> Result<Arc<dyn GoogleTokenSource>, String> {
        let _one = self.rebuilding.lock().await;
        let (current, at, error) = match self.built.lock() {
            Ok(b) => (b.source.clone(), b.at, b.error.clone()),
            Err(_) => return Err("provider state poisoned".into()),
        };
        let recent = at.is_some_and(|at| at.elapsed() < self.rebuild_floor);
        match (&current, failed) {
            (None, _) if recent => {
                return Err(error.unwrap_or_else(|| "not built yet".into()));
            }
            (Some(c), None) => return Ok(c.clone()),
            (Some(c), Some(f)) if !Arc::ptr_eq(c, f) => return Ok(c.clone()),
            (Some(_), Some(_)) if recent => {
                return Err("rebuilt recently".into());
            }
            _ => {}
        }
        let built = (self.build)();
        let mut b = self
            .built
            .lock()
            .map_err(|_| "provider state poisoned".to_string())?;
        b.at = Some(Instant::now());
        match built {
            Ok(src) => {
                let src: Arc<dyn GoogleTokenSource> = Arc::from(src);
                b.source = Some(src.clone());
                b.error = None;
                Ok(src)
            }
            Err(e) => {
                b.error = Some(e.clone());
                Err(e)
            }
        }
    }
}

/// How to build the source of a `gcp_*` provider; `all` resolves an impersonation's source.
/// `None` for an AWS kind or an impersonation whose source is not configured.
pub fn builder(
    settings: &CredentialSettings,
    all: &std::collections::BTreeMap<String, CredentialSettings>,
) -> Option<SourceBuilder> {
    let settings = settings.clone();
    match settings {
        CredentialSettings::GcpServiceAccount { .. }
        | CredentialSettings::GcpExternalAccount { .. }
        | CredentialSettings::GcpMetadata { .. } => Some(Box::new(move || {
            install_crypto_provider();
            let c = direct(&settings)?;
            Ok(Box::new(GoogleAuth(c)) as Box<dyn GoogleTokenSource>)
        })),
        CredentialSettings::GcpImpersonate(imp) => {
            let source = all.get(&imp.source)?.clone();
            Some(Box::new(move || {
                install_crypto_provider();
                let c = impersonate(&imp, &source)?;
                Ok(Box::new(GoogleAuth(c)) as Box<dyn GoogleTokenSource>)
            }))
        }
        _ => None,
    }
}

/// `google-cloud-auth` signs with the process-wide rustls provider; stepgate uses ring.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read_json(path: &std::path::Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

fn direct(s: &CredentialSettings) -> Result<AccessTokenCredentials, String> {
    let built = match s {
        CredentialSettings::GcpServiceAccount { key_file, scopes } => {
            service_account::Builder::new(read_json(key_file)?)
                .with_access_specifier(service_account::AccessSpecifier::from_scopes(
                    scopes.clone(),
                ))
                .build_access_token_credentials()
        }
        CredentialSettings::GcpExternalAccount {
            config_file,
            scopes,
        } => external_account::Builder::new(read_json(config_file)?)
            .with_scopes(scopes.clone())
            .build_access_token_credentials(),
        CredentialSettings::GcpMetadata { endpoint, scopes } => {
            let mut b = mds::Builder::default();
            if let Some(e) = endpoint {
                b = b.with_endpoint(e.clone());
            }
            if !scopes.is_empty() {
                b = b.with_scopes(scopes.clone());
            }
            b.build_access_token_credentials()
        }
        _ => return Err("not a Google provider".into()),
    };
    built.map_err(|e| e.to_string())
}

fn impersonate(
    imp: &GcpImpersonateSettings,
    source: &CredentialSettings,
) -> Result<AccessTokenCredentials, String> {
    let builder = match (&imp.iam_endpoint, source) {
        // An endpoint override goes through the `impersonated_service_account` JSON form, whose
        // URL is taken as given; it embeds the source's key or federation file.
        (Some(endpoint), CredentialSettings::GcpServiceAccount { key_file: f, .. })
        | (Some(endpoint), CredentialSettings::GcpExternalAccount { config_file: f, .. }) => {
            impersonated::Builder::new(json!({
                "type": "impersonated_service_account",
                "service_account_impersonation_url": format!(
                    "{endpoint}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
                    imp.target_service_account
                ),
                "source_credentials": read_json(f)?,
                "delegates": imp.delegates,
            }))
        }
        (Some(_), _) => {
            return Err("an IAM endpoint override needs a file-based source".into());
        }
        (None, src) => {
            let src = match src {
                CredentialSettings::GcpServiceAccount { key_file, .. } => {
                    service_account::Builder::new(read_json(key_file)?).build()
                }
                CredentialSettings::GcpExternalAccount { config_file, .. } => {
                    external_account::Builder::new(read_json(config_file)?).build()
                }
                CredentialSettings::GcpMetadata { endpoint, .. } => {
                    let mut b = mds::Builder::default();
                    if let Some(e) = endpoint {
                        b = b.with_endpoint(e.clone());
                    }
                    b.build()
                }
                _ => return Err("the source of an impersonation must be a `gcp_*` provider".into()),
            }
            .map_err(|e| e.to_string())?;
            impersonated::Builder::from_source_credentials(src)
                .with_target_principal(imp.target_service_account.clone())
                .with_delegates(imp.delegates.clone())
        }
    };
    builder
        .with_scopes(imp.scopes.clone())
        .with_lifetime(imp.lifetime)
        .build_access_token_credentials()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Source number `n` fails when `n` is in `failing`; counts builds.
    struct Fake {
        n: usize,
        failing: Vec<usize>,
        slow: bool,
    }

    impl GoogleTokenSource for Fake {
        fn access_token(&self) -> BoxFuture<'_, Result<String, String>> {
            Box::pin(async move {
                if self.slow {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                if self.failing.contains(&self.n) {
                    Err(format!("source {} refused: invalid_grant", self.n))
                } else {
                    Ok(format!("ya29.token-{}", self.n))
                }
            })
        }
    }

    fn provider(failing: Vec<usize>, slow: bool) -> (GoogleTokens, Arc<AtomicUsize>) {
        let builds = Arc::new(AtomicUsize::new(0));
        let b = builds.clone();
        let build: SourceBuilder = Box::new(move || {
            let n = b.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(Fake {
                n,
                failing: failing.clone(),
                slow,
            }) as Box<dyn GoogleTokenSource>)
        });
        (GoogleTokens::new("df".into(), build), builds)
    }

    #[tokio::test]
    async fn one_build_serves_concurrent_requests() {
        let (p, builds) = provider(vec![], false);
        let p = Arc::new(p);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                p.token().await.map(|t| t.expose().clone())
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "ya29.token-0");
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert!(p.is_usable());
        assert_eq!(p.rotations(), 1);
    }

    #[tokio::test]
    async fn a_provider_that_failed_for_good_is_rebuilt_and_recovers() {
        // Source 0 fails permanently (its refresh task would have stopped); source 1 works.
        let (p, builds) = provider(vec![0], false);
        let p = p.with_rebuild_floor(Duration::ZERO);
        let e = p.token().await.unwrap_err();
        assert!(e.to_string().contains("invalid_grant"), "{e}");
        assert!(!p.is_usable());
        assert_eq!(p.failures(), 1);
        assert_eq!(p.token().await.unwrap().expose(), "ya29.token-1");
        assert_eq!(builds.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn rebuilds_are_rate_limited() {
        let (p, builds) = provider(vec![0, 1, 2], false);
        for _ in 0..5 {
            assert!(p.token().await.is_err());
        }
        assert_eq!(
            builds.load(Ordering::SeqCst),
            1,
            "no rebuild within the floor"
        );
    }

    #[tokio::test]
    async fn a_request_waits_for_a_token_at_most_token_wait() {
        let (p, _) = provider(vec![], true);
        let p = p.with_token_wait(Duration::from_millis(50));
        let e = p.token().await.unwrap_err();
        assert!(e.to_string().contains("no token within"), "{e}");
    }
}
