//! Keys per issuer: discovery (openidconnect's metadata types), JWKS fetch honouring
//! `Cache-Control: max-age` within bounds, a moka cache that single-flights loads, one refetch
//! on an unknown `kid` at most every [`KeyPolicy::refetch_floor`], a back-off after failures,
//! and stale keys kept serving through an outage for [`KeyPolicy::stale_for`].

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use openidconnect::core::{CoreJsonWebKeySet, CoreProviderMetadata};

use crate::http_client::{SharedHttpClient, error_chain};

/// Deadline of one discovery or JWKS request.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How keys are cached and refetched.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    /// Used when the JWKS response has no `Cache-Control: max-age`.
    pub default_ttl: Duration,
    /// Least time keys are kept, whatever the issuer says.
    pub min_ttl: Duration,
    /// Most time keys are kept before a refetch.
    pub max_ttl: Duration,
    /// Least time between two fetches caused by unknown key ids.
    pub refetch_floor: Duration,
    /// After a failed fetch, requests do not call the issuer again for this long.
    pub failure_backoff: Duration,
    /// When refetching fails, keys this much past their expiry still serve.
    pub stale_for: Duration,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(300),
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            refetch_floor: Duration::from_secs(5),
            failure_backoff: Duration::from_secs(5),
            stale_for: Duration::from_secs(3600),
        }
    }
}

/// A fetched key set.
#[derive(Debug)]
pub struct FetchedKeys {
    /// The keys.
    pub set: CoreJsonWebKeySet,
    /// When they were fetched (monotonic).
    pub fetched_at: Instant,
    /// How long they are fresh.
    pub ttl: Duration,
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

struct FreshFor;

impl moka::Expiry<(), Arc<FetchedKeys>> for FreshFor {
    fn expire_after_create(
        &self,
        _: &(),
        value: &Arc<FetchedKeys>,
        _: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The keys of one issuer.
pub struct KeySource {
    issuer: String,
    jwks_uri: Mutex<Option<String>>,
    http: SharedHttpClient,
    policy: KeyPolicy,
    cache: moka::future::Cache<(), Arc<FetchedKeys>>,
    last_good: Mutex<Option<Arc<FetchedKeys>>>,
    last_failure: Mutex<Option<(Instant, String)>>,
    ever_loaded: AtomicBool,
    fetches: AtomicU64,
}

impl KeySource {
    /// Keys for `issuer`, from `jwks_uri` if given, else from discovery.
    pub fn new(
        issuer: String,
        jwks_uri: Option<String>,
        http: SharedHttpClient,
        policy: KeyPolicy,
    ) -> Self {
        Self {
            issuer,
            jwks_uri: Mutex::new(jwks_uri),
            http,
            policy,
            cache: moka::future::Cache::builder()
                .max_capacity(1)
                .expire_after(FreshFor)
                .build(),
            last_good: Mutex::new(None),
            last_failure: Mutex::new(None),
            ever_loaded: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
        }
    }

    /// Whether keys have been fetched at least once (readiness).
    pub fn ever_loaded(&self) -> bool {
        self.ever_loaded.load(Ordering::Relaxed)
    }

    /// How many JWKS fetches were attempted (tests, metrics).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Current keys: fresh from the cache, else fetched (once for all waiters), else, while the
    /// issuer is failing, the last good keys within the stale window.
    pub async fn current(&self) -> Result<Arc<FetchedKeys>, KeysUnavailable> {
        if let Some(k) = self.cache.get(&()).await {
            return Ok(k);
        }
        if let Some(detail) = self.recent_failure() {
            return self.stale().ok_or_else(|| self.unavailable(detail));
        }
        match self.cache.try_get_with((), self.fetch()).await {
            Ok(k) => {
                if let Ok(mut g) = self.last_good.lock() {
                    *g = Some(k.clone());
                }
                Ok(k)
            }
            Err(e) => {
                self.note_failure(e.detail.clone());
                match self.stale() {
                    Some(k) => {
                        tracing::warn!(message = "Issuer keys unavailable; serving cached keys.", issuer = %self.issuer, error = %e.detail);
                        Ok(k)
                    }
                    None => Err((*e).clone()),
                }
            }
        }
    }

    /// Called when a token names a key the set does not have: refetches at most once per
    /// refetch floor. Returns the keys to retry with, or `None` when there is nothing newer.
    pub async fn refresh_for_unknown_kid(
        &self,
        seen: &Arc<FetchedKeys>,
    ) -> Option<Arc<FetchedKeys>> {
        // Someone already refreshed since we looked (single flight).
        if let Some(k) = self.cache.get(&()).await
            && !Arc::ptr_eq(&k, seen)
        {
            return Some(k);
        }
        if seen.fetched_at.elapsed() < self.policy.refetch_floor || self.recent_failure().is_some()
        {
            return None;
        }
        self.cache.invalidate(&()).await;
        let fresh = self.current().await.ok()?;
        (!Arc::ptr_eq(&fresh, seen)).then_some(fresh)
    }

    /// Fetches now (start-up warm-up and background retries).
    pub async fn warm(&self) -> Result<(), KeysUnavailable> {
        self.current().await.map(|_| ())
    }

    fn stale(&self) -> Option<Arc<FetchedKeys>> {
        let g = self.last_good.lock().ok()?;
        g.as_ref()
            .filter(|k| k.fetched_at.elapsed() < k.ttl + self.policy.stale_for)
            .cloned()
    }

    fn recent_failure(&self) -> Option<String> {
        let g = self.last_failure.lock().ok()?;
        g.as_ref()
            .filter(|(at, _)| at.elapsed() < self.policy.failure_backoff)
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

    /// Boxed with an explicit `Send`, so callers' futures stay `Send`.
    fn fetch(&self) -> BoxFuture<'_, Result<Arc<FetchedKeys>, KeysUnavailable>> {
        Box::pin(self.fetch_inner())
    }

    async fn get(&self, url: &str) -> Result<http::Response<Bytes>, KeysUnavailable> {
        let req = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Bytes::new())
            .map_err(|e| self.unavailable(format!("bad URL `{url}`: {e}")))?;
        let resp = self
            .http
            .send(req, FETCH_TIMEOUT)
            .await
            .map_err(|e| self.unavailable(error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(self.unavailable(format!("`{url}` answered {}", resp.status())));
        }
        Ok(resp)
    }

    /// Discovery: openidconnect's provider metadata; issuers whose document lacks fields OIDC
    /// requires but JWT issuers omit (GitHub Actions and Kubernetes have no
    /// `authorization_endpoint`) fall back to `issuer` + `jwks_uri`. Either way `issuer` must
    /// equal the configured one exactly.
    async fn discover(&self) -> Result<String, KeysUnavailable> {
        #[derive(serde::Deserialize)]
        struct Minimal {
            issuer: String,
            jwks_uri: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let resp = self.get(&url).await?;
        let (issuer, jwks_uri) = match serde_json::from_slice::<CoreProviderMetadata>(resp.body()) {
            Ok(m) => (m.issuer().to_string(), m.jwks_uri().to_string()),
            Err(_) => {
                let m: Minimal = serde_json::from_slice(resp.body())
                    .map_err(|e| self.unavailable(format!("discovery document: {e}")))?;
                (m.issuer, m.jwks_uri)
            }
        };
        if issuer != self.issuer {
            return Err(self.unavailable(format!(
                "discovery names issuer `{issuer}`, not `{}`",
                self.issuer
            )));
        }
        if !crate::config::secure_or_loopback(&jwks_uri) {
            return Err(self.unavailable(format!("discovered jwks_uri `{jwks_uri}` is not https")));
        }
        if let Ok(mut g) = self.jwks_uri.lock() {
            *g = Some(jwks_uri.clone());
        }
        Ok(jwks_uri)
    }

    async fn fetch_inner(&self) -> Result<Arc<FetchedKeys>, KeysUnavailable> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let known = self.jwks_uri.lock().ok().and_then(|g| g.clone());
        let uri = match known {
            Some(u) => u,
            None => self.discover().await?,
        };
        let resp = self.get(&uri).await?;
        let set: CoreJsonWebKeySet = serde_json::from_slice(resp.body())
            .map_err(|e| self.unavailable(format!("JWKS does not parse: {e}")))?;
        let ttl = max_age(resp.headers())
            .unwrap_or(self.policy.default_ttl)
            .clamp(self.policy.min_ttl, self.policy.max_ttl);
        self.ever_loaded.store(true, Ordering::Relaxed);
        tracing::info!(message = "Fetched issuer keys.", issuer = %self.issuer, keys = set.keys().len(), ttl = ?ttl);
        Ok(Arc::new(FetchedKeys {
            set,
            fetched_at: Instant::now(),
            ttl,
        }))
    }
}

/// `Cache-Control: max-age=N` (0 for `no-store`/`no-cache`).
pub fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::CACHE_CONTROL)?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    let mut out = None;
    for d in v.split(',').map(str::trim) {
        if d == "no-store" || d == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(n) = d
            .strip_prefix("max-age=")
            .and_then(|n| n.trim_matches('"').parse::<u64>().ok())
        {
            out = Some(Duration::from_secs(n));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        let mut h = http::HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(
            http::header::CACHE_CONTROL,
            "public, max-age=3600, must-revalidate".parse().unwrap(),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(3600)));
        h.insert(http::header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(max_age(&h), Some(Duration::ZERO));
    }
}
