//! The development OIDC issuer of `stepgate dev` (loopback only): discovery, JWKS and tokens
//! for a few sample callers, signed ES256 with a key made at start-up. Also used by tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{Value, json};

use crate::clock::{SharedClock, unix_secs};
use crate::secret::Secret;

/// The audience dev tokens carry.
pub const DEV_AUDIENCE: &str = "stepgate";

/// A signing key with its JWK.
pub struct DevKey {
    kid: String,
    encoding: Secret<EncodingKey>,
    jwk: Value,
}

impl DevKey {
    /// A fresh P-256 key.
    pub fn generate(kid: &str) -> Result<Self, String> {
        let sk = SigningKey::random(&mut rand::rngs::OsRng);
        let pem = sk.to_pkcs8_pem(LineEnding::LF).map_err(|e| e.to_string())?;
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
        let public = p256::PublicKey::from(sk.verifying_key());
        let mut jwk = serde_json::to_value(public.to_jwk()).map_err(|e| e.to_string())?;
        if let Some(o) = jwk.as_object_mut() {
            o.insert("kid".into(), json!(kid));
            o.insert("alg".into(), json!("ES256"));
            o.insert("use".into(), json!("sig"));
        }
        Ok(Self {
            kid: kid.to_string(),
            encoding: Secret::new(encoding),
            jwk,
        })
    }

    /// The public JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs arbitrary header and claims JSON (any shape, for attack tests) with this key.
    pub fn sign_raw(&self, header: &Value, claims: &[u8]) -> Result<String, String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let msg = format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims));
        let sig =
            jsonwebtoken::crypto::sign(msg.as_bytes(), self.encoding.expose(), Algorithm::ES256)
                .map_err(|e| e.to_string())?;
        Ok(format!("{msg}.{sig}"))
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` as an ES256 JWT with this key's `kid`.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, self.encoding.expose()).map_err(|e| e.to_string())
    }
}

/// The sample callers of the demo: name -> extra claims.
pub fn sample_callers() -> BTreeMap<&'static str, Value> {
    BTreeMap::from([
        (
            "alice",
            json!({"sub": "alice", "email": "alice@example.com", "email_verified": true,
                   "groups": ["data-eng"], "preferred_username": "alice"}),
        ),
        (
            "victor",
            json!({"sub": "victor", "email": "victor@example.com", "email_verified": true,
                   "groups": ["viewers"], "preferred_username": "victor"}),
        ),
        (
            "ci",
            json!({"sub": "repo:acme/etl:ref:refs/heads/main", "repository": "acme/etl",
                   "repository_owner": "acme", "ref": "refs/heads/main", "environment": "prod",
                   "workflow_ref": "acme/etl/.github/workflows/nightly.yml@refs/heads/main",
                   "job_workflow_ref": "acme/etl/.github/workflows/nightly.yml@refs/heads/main",
                   "actor": "octocat", "event_name": "schedule", "groups": []}),
        ),
    ])
}

/// A running dev issuer.
pub struct DevIssuer {
    /// Issuer URL (`http://127.0.0.1:<port>`).
    pub url: String,
    key: DevKey,
    clock: SharedClock,
}

impl DevIssuer {
    /// Mints a token for a sample caller, valid for `ttl`.
    pub fn token_for(&self, caller: &str, ttl: Duration) -> Option<String> {
        let extra = sample_callers().remove(caller)?;
        self.mint(extra, ttl).ok()
    }

    /// The issuer's signing key.
    pub fn key(&self) -> &DevKey {
        &self.key
    }

    /// Mints a token with the given claims (plus `iss`, `aud`, `iat`, `nbf`, `exp`).
    pub fn mint(&self, mut claims: Value, ttl: Duration) -> Result<String, String> {
        let now = unix_secs(self.clock.now());
        if let Some(o) = claims.as_object_mut() {
            o.entry("iss").or_insert(json!(self.url));
            o.entry("aud").or_insert(json!(DEV_AUDIENCE));
            o.entry("iat").or_insert(json!(now));
            o.entry("nbf").or_insert(json!(now));
            o.entry("exp").or_insert(json!(now + ttl.as_secs()));
        }
        self.key.sign(&claims)
    }

    fn answer(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let body = match path {
            "/.well-known/openid-configuration" => json!({
                "issuer": self.url,
                "authorization_endpoint": format!("{}/authorize", self.url),
                "jwks_uri": format!("{}/jwks", self.url),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            }),
            "/jwks" => json!({"keys": [self.key.jwk()]}),
            p if p.starts_with("/token/") => {
                let name = p.trim_start_matches("/token/");
                return match self.token_for(name, Duration::from_secs(3600)) {
                    Some(t) => plain(StatusCode::OK, t),
                    None => plain(StatusCode::NOT_FOUND, format!("no sample caller `{name}`")),
                };
            }
            _ => return plain(StatusCode::NOT_FOUND, "not found".into()),
        };
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }
}

fn plain(status: StatusCode, s: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(s + "\n")));
    *r.status_mut() = status;
    r
}

/// Starts the dev issuer on `127.0.0.1:<port>` (0 = any free port).
pub async fn start(port: u16, clock: SharedClock) -> Result<Arc<DevIssuer>, String> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .map_err(|e| format!("dev issuer cannot listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let issuer = Arc::new(DevIssuer {
        url: format!("http://{addr}"),
        key: DevKey::generate("dev-es256-1")?,
        clock,
    });
    super::serve_loopback(listener, {
        let issuer = issuer.clone();
        move |req| {
            let r = issuer.answer(&req);
            async move { r }
        }
    });
    Ok(issuer)
}
