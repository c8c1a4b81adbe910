//! Authenticate: bearer token (`Authorization` or `Proxy-Authorization`) -> [`Identity`].

pub mod identity;
pub mod issuer;
pub mod jwks;

use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};

pub use identity::Identity;
use issuer::{BearerJwt, Issuer, IssuerMap, claimed_issuer};
pub use jwks::KeysUnavailable;

use crate::clock::SharedClock;
use crate::config::IssuerSettings;
use crate::http_client::SharedHttpClient;

/// Longest bearer token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a caller is not authenticated. `description()` is what the caller is told.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthnError {
    /// No bearer token.
    #[error("no bearer token")]
    Missing,
    /// Not a JWS compact token, or claims of the wrong shape.
    #[error("token is malformed")]
    Malformed,
    /// Larger than [`MAX_TOKEN_BYTES`].
    #[error("token is too large")]
    TooLarge,
    /// `iss` names no configured issuer.
    #[error("issuer not trusted")]
    UntrustedIssuer,
    /// Past `exp` (plus leeway).
    #[error("token expired")]
    Expired,
    /// Before `nbf`/`iat` (minus leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` contains none of the issuer's audiences.
    #[error("audience not accepted")]
    Audience,
    /// Issued longer ago than the issuer's `max_token_age`.
    #[error("token too old")]
    TooOld,
    /// A configured `required_claims` entry does not match.
    #[error("claim `{0}` not accepted")]
    RequiredClaim(String),
    /// A header that points at or embeds keys (`jku`, `x5u`, `jwk`, `x5c`): RFC 8725 says never
    /// trust keys a token brings along.
    #[error("token header `{0}` not accepted")]
    KeyHeader(&'static str),
    /// Signature does not verify.
    #[error("signature does not verify")]
    Signature,
    /// No key of the issuer matches the token's `kid`/`alg`.
    #[error("signing key not known")]
    UnknownKey,
    /// `alg` not allowed for the issuer.
    #[error("algorithm not accepted")]
    Algorithm,
    /// A header stepgate does not accept (`typ`, `crit`, `cty`, JWE).
    #[error("token type or header not accepted")]
    Unsupported,
    /// The issuer's keys cannot be fetched: fail closed with 503.
    #[error(transparent)]
    KeysUnavailable(KeysUnavailable),
    /// A bug or broken configuration.
    #[error("internal authentication error: {0}")]
    Internal(String),
}

impl AuthnError {
    /// Short reason for `error_description` and the audit record; never echoes the token.
    pub fn description(&self) -> String {
        match self {
            AuthnError::KeysUnavailable(_) => "issuer keys unavailable".into(),
            AuthnError::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
}

/// Most verified tokens remembered.
const TOKEN_CACHE_CAPACITY: u64 = 10_000;

/// All trusted issuers, and a cache of tokens already verified.
pub struct Authenticator {
    issuers: IssuerMap,
    /// A sync cache: a lookup never waits, so it need not be a future held in every request's
    /// state.
    verified: moka::sync::Cache<[u8; 32], Arc<Identity>>,
    clock: SharedClock,
}

/// Keeps a verified token until its `exp`, but never longer than the shortest key refresh, so a
/// key the issuer revokes stops being honoured within one JWKS refresh.
struct UntilExpiry {
    clock: SharedClock,
    max: std::time::Duration,
}

impl moka::Expiry<[u8; 32], Arc<Identity>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        id: &Arc<Identity>,
        _: std::time::Instant,
    ) -> Option<std::time::Duration> {
        let left = id
            .expires_at
            .duration_since(self.clock.now())
            .unwrap_or_default();
        Some(left.min(self.max))
    }
}

impl Authenticator {
    /// Builds the issuers; keys are fetched lazily (and by [`Authenticator::warm`]).
    pub fn new(settings: &[IssuerSettings], http: SharedHttpClient, clock: SharedClock) -> Self {
        let issuers = settings
            .iter()
            .map(|s| {
                (
                    s.issuer.clone(),
                    Arc::new(Issuer::new(s.clone(), http.clone(), clock.clone())),
                )
            })
            .collect();
        let verified = moka::sync::Cache::builder()
            .max_capacity(TOKEN_CACHE_CAPACITY)
            .expire_after(UntilExpiry {
                clock: clock.clone(),
                max: jwks::KeyPolicy::default().min_ttl,
            })
            .build();
        Self {
            issuers,
            verified,
            clock,
        }
    }

    /// The configured issuers.
    pub fn issuers(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.issuers.values()
    }

    /// Fetches every issuer's keys once; returns the names of those that failed.
    pub async fn warm(&self) -> Vec<(String, KeysUnavailable)> {
        let mut failed = Vec::new();
        for i in self.issuers.values() {
            if let Err(e) = i.keys().warm().await {
                failed.push((i.name().to_string(), e));
            }
        }
        failed
    }

    /// Authenticates a request by its headers.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Identity>, AuthnError> {
        let token = bearer(headers)?;
        self.verify_token(token).await
    }

    /// Verifies a raw bearer token (also used by `stepgate explain`). A token seen before is
    /// answered from the cache with the same shared identity, and with it whatever
    /// authorization built for it.
    pub async fn verify_token(&self, token: &str) -> Result<Arc<Identity>, AuthnError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthnError::TooLarge);
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(id) = self.verified.get(&key)
            && id.expires_at > self.clock.now()
        {
            return Ok(id);
        }
        // Boxed: the rare path (key fetch, signature) would otherwise size every request's state.
        let identity = Arc::new(Box::pin(self.verify_uncached(token)).await?);
        self.verified.insert(key, identity.clone());
        Ok(identity)
    }

    async fn verify_uncached(&self, token: &str) -> Result<Identity, AuthnError> {
        // RFC 8725: a token must not choose its own keys.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthnError::Malformed)?;
        if header.jku.is_some() {
            return Err(AuthnError::KeyHeader("jku"));
        }
        if header.x5u.is_some() {
            return Err(AuthnError::KeyHeader("x5u"));
        }
        if header.jwk.is_some() {
            return Err(AuthnError::KeyHeader("jwk"));
        }
        if header.x5c.is_some() {
            return Err(AuthnError::KeyHeader("x5c"));
        }
        let jwt: BearerJwt = token.parse().map_err(|_| AuthnError::Malformed)?;
        let iss = claimed_issuer(&jwt).ok_or(AuthnError::Malformed)?;
        let issuer = self.issuers.get(&iss).ok_or(AuthnError::UntrustedIssuer)?;
        issuer.verify(&jwt).await
    }
}

/// The bearer token from `Authorization`, else `Proxy-Authorization`; scheme case-insensitive.
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthnError> {
    for name in [
        http::header::AUTHORIZATION,
        http::header::PROXY_AUTHORIZATION,
    ] {
        if let Some(v) = headers.get(&name) {
            let v = ascii(v).ok_or(AuthnError::Malformed)?;
            let (scheme, rest) = v.split_once(' ').ok_or(AuthnError::Malformed)?;
            if scheme.eq_ignore_ascii_case("bearer") {
                let t = rest.trim();
                return if t.is_empty() {
                    Err(AuthnError::Missing)
                } else {
                    Ok(t)
                };
            }
            if name == http::header::AUTHORIZATION {
                // Another scheme in Authorization (e.g. an AWS signature): look at Proxy-Authorization.
                continue;
            }
            return Err(AuthnError::Malformed);
        }
    }
    Err(AuthnError::Missing)
}

/// The header value as text when it is ASCII, checked a word at a time (`str::from_utf8`'s
/// ASCII path, then `str::is_ascii`). `HeaderValue::to_str` also refuses control bytes, one
/// byte at a time: on a 654-byte token that loop was ~1.5% of a request's CPU in the
/// profile-guided build, which left it scalar. A control byte cannot get past the token check
/// either: no verified token holds one (a JWT is base64url and dots), so such a token misses
/// the verified-token cache and is refused as malformed when it is decoded.
fn ascii(v: &http::HeaderValue) -> Option<&str> {
    std::str::from_utf8(v.as_bytes())
        .ok()
        .filter(|s| s.is_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn bearer_comes_from_either_header() {
        assert_eq!(
            bearer(&h(&[("authorization", "Bearer abc")])).unwrap(),
            "abc"
        );
        assert_eq!(
            bearer(&h(&[("authorization", "bearer abc")])).unwrap(),
            "abc"
        );
        assert_eq!(
            bearer(&h(&[
                ("authorization", "AWS4-HMAC-SHA256 x"),
                ("proxy-authorization", "Bearer t")
            ]))
            .unwrap(),
            "t"
        );
        assert!(matches!(bearer(&h(&[])), Err(AuthnError::Missing)));
        assert!(matches!(
            bearer(&h(&[("authorization", "Basic x")])),
            Err(AuthnError::Missing)
        ));
    }

    #[test]
    fn a_token_with_bytes_outside_ascii_is_malformed() {
        for value in [&b"Bearer ab\xe9c"[..], "Bearer abé".as_bytes()] {
            let mut m = HeaderMap::new();
            m.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_bytes(value).unwrap(),
            );
            assert!(matches!(bearer(&m), Err(AuthnError::Malformed)));
        }
    }
}
