//! Keys per issuer: discovery, JWKS fetch, cache (moka), single-flight refetch on an unknown
//! `kid` with a floor between fetches, and a back-off after failures so an outage or a flood
//! of bogus kids cannot hammer the issuer.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use openidconnect::core::{CoreJsonWebKeySet, CoreProviderMetadata};
use openidconnect::{IssuerUrl, JsonWebKeySetUrl};

use crate::http_client::{SharedHttpClient, error_chain};

/// How long fetched keys are used before they are fetched again.
pub const KEYS_TTL: Duration = Duration::from_secs(300);
/// Least time between two fetches caused by unknown key ids.
pub const REFETCH_FLOOR: Duration = Duration::from_secs(30);
/// After a failed fetch, requests fail fast for this long instead of calling the issuer again.
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(5);
/// Deadline of one discovery or JWKS request.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A fetched key set.
#[derive(Debug)]
pub struct FetchedKeys {
    /// The keys.
    pub set: CoreJsonWebKeySet,
    /// When they were fetched (monotonic).
    pub fetched_at: Instant,
}

/// Why keys could not be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("keys of issuer `{issuer}` are unavailable: {detail}")]
pub struct KeysUnavailable {
    /// Issuer URL.
    pub issuer: String,
    /// Why.
    pub detail: String,
}

/// The keys of one issuer.
pub struct KeySource {
    issuer: String,
    jwks_uri: Mutex<Option<String>>,
    http: SharedHttpClient,
    cache: moka::future::Cache<(), Arc<FetchedKeys>>,
    last_failure: Mutex<Option<(Instant, String)>>,
    ever_loaded: std::sync::atomic::AtomicBool,
}

impl KeySource {
    /// Keys for `issuer`, from `jwks_uri` if given, else from discovery.
    pub fn new(issuer: String, jwks_uri: Option<String>, http: SharedHttpClient) -> Self {
        Self {
            issuer,
            jwks_uri: Mutex::new(jwks_uri),
            http,
            cache: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(KEYS_TTL)
                .build(),
            last_failure: Mutex::new(None),
            ever_loaded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether keys have been fetched at least once (readiness).
    pub fn ever_loaded(&self) -> bool {
        self.ever_loaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Current keys, fetching them (once, for all waiting callers) when absent or expired.
    pub async fn current(&self) -> Result<Arc<FetchedKeys>, KeysUnavailable> {
        if let Some(k) = self.cache.get(&()).await {
            return Ok(k);
        }
        if let Some(detail) = self.recent_failure() {
            return Err(self.unavailable(detail));
        }
        self.cache
            .try_get_with((), self.fetch())
            .await
            .map_err(|e: Arc<KeysUnavailable>| {
                self.note_failure(e.detail.clone());
                (*e).clone()
            })
    }

    /// Called when a token names a key the cached set does not have: refetches at most once per
    /// [`REFETCH_FLOOR`]. Returns the keys to retry with, or `None` when it is too soon.
    pub async fn refresh_for_unknown_kid(
        &self,
        seen: &Arc<FetchedKeys>,
    ) -> Result<Option<Arc<FetchedKeys>>, KeysUnavailable> {
        if seen.fetched_at.elapsed() < REFETCH_FLOOR {
            return Ok(None);
        }
        // Only invalidate if nobody has refreshed since we looked (single flight).
        if let Some(k) = self.cache.get(&()).await
            && !Arc::ptr_eq(&k, seen)
        {
            return Ok(Some(k));
        }
        self.cache.invalidate(&()).await;
        self.current().await.map(Some)
    }

    /// Fetches now (start-up warm-up and background retries).
    pub async fn warm(&self) -> Result<(), KeysUnavailable> {
        self.current().await.map(|_| ())
    }

    fn recent_failure(&self) -> Option<String> {
        let g = self.last_failure.lock().ok()?;
        g.as_ref()
            .filter(|(at, _)| at.elapsed() < FAILURE_BACKOFF)
            .map(|(_, d)| d.clone())
    }

    fn note_failure(&self, detail: String) {
        if let Ok(mut g) = self.last_failure.lock() {
            *g = Some((Instant::now(), detail));
        }
    }

    fn unavailable(&self, detail: String) -> KeysUnavailable {
        KeysUnavailable {
            issuer: self.issuer.clone(),
            detail,
        }
    }

    /// Boxed with an explicit `Send` so the openidconnect client closure's borrow does not
    /// leak a higher-ranked lifetime into every caller's future.
    fn fetch(&self) -> BoxFuture<'_, Result<Arc<FetchedKeys>, KeysUnavailable>> {
        Box::pin(self.fetch_inner())
    }

    async fn fetch_inner(&self) -> Result<Arc<FetchedKeys>, KeysUnavailable> {
        let client = OidcHttp(self.http.clone());
        let known = self.jwks_uri.lock().ok().and_then(|g| g.clone());
        let set = match known {
            Some(uri) => {
                let url = JsonWebKeySetUrl::new(uri)
                    .map_err(|e| self.unavailable(format!("bad jwks_uri: {e}")))?;
                CoreJsonWebKeySet::fetch_async(&url, &client)
                    .await
                    .map_err(|e| self.unavailable(error_chain(&e)))?
            }
            None => {
                let issuer = IssuerUrl::new(self.issuer.clone())
                    .map_err(|e| self.unavailable(format!("bad issuer URL: {e}")))?;
                let meta = CoreProviderMetadata::discover_async(issuer, &client)
                    .await
                    .map_err(|e| self.unavailable(format!("discovery: {}", error_chain(&e))))?;
                let uri = meta.jwks_uri().to_string();
                if !crate::config::secure_or_loopback(&uri) {
                    return Err(
                        self.unavailable(format!("discovered jwks_uri `{uri}` is not https"))
                    );
                }
                if let Ok(mut g) = self.jwks_uri.lock() {
                    *g = Some(uri);
                }
                meta.jwks().clone()
            }
        };
        self.ever_loaded
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(message = "Fetched issuer keys.", issuer = %self.issuer, keys = set.keys().len());
        Ok(Arc::new(FetchedKeys {
            set,
            fetched_at: Instant::now(),
        }))
    }
}

/// Adapts the [`HttpClient`](crate::http_client::HttpClient) seam to openidconnect's client trait.
struct OidcHttp(SharedHttpClient);

impl<'c> openidconnect::AsyncHttpClient<'c> for OidcHttp {
    type Error = std::io::Error;
    type Future = BoxFuture<'c, Result<openidconnect::HttpResponse, std::io::Error>>;

    fn call(&'c self, req: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let resp = self
                .0
                .send(req.map(Bytes::from), FETCH_TIMEOUT)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok(resp.map(|b| b.to_vec()))
        })
    }
}
