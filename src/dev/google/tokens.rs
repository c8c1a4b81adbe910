//! The token side of the Google sandbox: issued and self-signed tokens, STS, IAM, metadata.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::{Answer, CLOUD_PLATFORM, DATAFLOW_AUDIENCE, GoogleSandbox, Issued, form, reply, rpc};

impl GoogleSandbox {
    pub(super) fn issue(&self, principal: &str) -> (String, Duration) {
        let token = format!("ya29.sandbox-{}", hex::encode(rand::random::<[u8; 16]>()));
        let mut st = self.state();
        let lifetime = st.lifetime.unwrap_or(Duration::from_secs(3600));
        st.issued.insert(
            token.clone(),
            Issued {
                principal: principal.to_string(),
                expires: self.clock.now() + lifetime,
            },
        );
        st.token_requests += 1;
        (token, lifetime)
    }

    /// The principal behind a bearer token, or why not.
    pub(super) fn principal(&self, req_headers: &http::HeaderMap) -> Result<String, String> {
        let token = req_headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or("no bearer token")?;
        let now = self.clock.now();
        if let Some(i) = self.state().issued.get(token) {
            return if i.expires > now {
                Ok(i.principal.clone())
            } else {
                Err("token expired".into())
            };
        }
        self.self_signed(token, now)
    }

    /// A service account's self-signed JWT (AIP-4111).
    fn self_signed(&self, token: &str, now: SystemTime) -> Result<String, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        if header.alg != jsonwebtoken::Algorithm::RS256 {
            return Err("only RS256".into());
        }
        let kid = header.kid.ok_or("no kid")?;
        let st = self.state();
        let (email, key) = st.keys.get(&kid).ok_or("unknown key id")?;
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.validate_exp = false; // checked below against the injected clock
        v.validate_aud = false;
        v.set_required_spec_claims(&["exp", "iat", "iss"]);
        let data = jsonwebtoken::decode::<Value>(token, key, &v).map_err(|e| e.to_string())?;
        let c = data.claims;
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (iat, exp) = (
            c["iat"].as_u64().unwrap_or(u64::MAX),
            c["exp"].as_u64().unwrap_or(0),
        );
        if c["iss"] != email.as_str() || c.get("sub").is_some_and(|s| s != email.as_str()) {
            return Err("issuer is not the key's service account".into());
        }
        // Google allows an hour plus clock-skew allowance (google-cloud-auth backdates `iat`).
        if exp <= secs || iat > secs + 60 || exp.saturating_sub(iat) > 3600 + 300 {
            return Err("token expired or too long-lived".into());
        }
        let scoped = c["scope"]
            .as_str()
            .is_some_and(|s| s.split(' ').any(|x| x == CLOUD_PLATFORM));
        if !scoped && c["aud"] != DATAFLOW_AUDIENCE {
            return Err("neither the cloud-platform scope nor the Dataflow audience".into());
        }
        Ok(email.clone())
    }

    pub(super) fn sts(&self, method: &Method, body: &[u8]) -> Answer {
        if method != Method::POST {
            return rpc(405, "METHOD_NOT_ALLOWED", "POST only");
        }
        if self.state().tokens_down {
            return rpc(503, "UNAVAILABLE", "sts is down");
        }
        let f = form(body);
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
        let bad = |d: &str| {
            reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": "invalid_request", "error_description": d}),
            )
        };
        if get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" {
            return bad("grant_type must be token-exchange");
        }
        if get("requested_token_type") != "urn:ietf:params:oauth:token-type:access_token" {
            return bad("requested_token_type must be access_token");
        }
        if get("subject_token_type").is_empty() {
            return bad("subject_token_type is required");
        }
        if !get("scope").split(' ').any(|s| s == CLOUD_PLATFORM) {
            return bad("scope must include cloud-platform");
        }
        let principal = self
            .state()
            .federation
            .get(&(
                get("audience").to_string(),
                get("subject_token").to_string(),
            ))
            .cloned();
        let Some(principal) = principal else {
            return reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": "invalid_grant", "error_description": "The subject token is not accepted for this audience."}),
            );
        };
        let (token, lifetime) = self.issue(&principal);
        reply(
            StatusCode::OK,
            &json!({
                "access_token": token,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": lifetime.as_secs(),
            }),
        )
    }

    pub(super) fn generate_access_token(
        &self,
        parts: &http::request::Parts,
        rest: &str,
        body: &[u8],
    ) -> Answer {
        let Some(target) = rest.strip_suffix(":generateAccessToken") else {
            return rpc(404, "NOT_FOUND", "unknown IAM credentials method");
        };
        if parts.method != Method::POST {
            return rpc(405, "METHOD_NOT_ALLOWED", "POST only");
        }
        if self.state().tokens_down {
            return rpc(503, "UNAVAILABLE", "iamcredentials is down");
        }
        let source = match self.principal(&parts.headers) {
            Ok(p) => p,
            Err(e) => {
                return rpc(
                    401,
                    "UNAUTHENTICATED",
                    &format!("Request had invalid authentication credentials: {e}"),
                );
            }
        };
        let Ok(b) = serde_json::from_slice::<Value>(body) else {
            return rpc(400, "INVALID_ARGUMENT", "body is not JSON");
        };
        let scoped = b["scope"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s == CLOUD_PLATFORM));
        if !scoped {
            return rpc(400, "INVALID_ARGUMENT", "scope must include cloud-platform");
        }
        if let Some(l) = b["lifetime"].as_str() {
            let secs: u64 = l.trim_end_matches('s').parse().unwrap_or(u64::MAX);
            if secs > 3600 {
                return rpc(400, "INVALID_ARGUMENT", "lifetime must be at most 3600s");
            }
        }
        let allowed = self
            .state()
            .impersonation
            .contains(&(source.clone(), target.to_string()));
        if !allowed {
            return rpc(
                403,
                "PERMISSION_DENIED",
                &format!(
                    "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist): {source} -> {target}"
                ),
            );
        }
        let (token, lifetime) = self.issue(target);
        reply(
            StatusCode::OK,
            &json!({"accessToken": token, "expireTime": crate::app::rfc3339(self.clock.now() + lifetime)}),
        )
    }

    pub(super) fn metadata(&self, parts: &http::request::Parts, path: &str) -> Answer {
        if parts
            .headers
            .get("metadata-flavor")
            .and_then(|v| v.to_str().ok())
            != Some("Google")
        {
            return reply(
                StatusCode::FORBIDDEN,
                &json!("Missing Metadata-Flavor:Google header."),
            );
        }
        if self.state().tokens_down {
            return rpc(503, "UNAVAILABLE", "metadata server is down");
        }
        let account = self.state().metadata_account.clone();
        match path {
            "/computeMetadata/v1/universe/universe-domain" => {
                Response::new(Full::new(Bytes::from_static(b"googleapis.com")))
            }
            "/computeMetadata/v1/instance/service-accounts/default/token" => match account {
                Some(a) => {
                    let (token, lifetime) = self.issue(&a);
                    reply(
                        StatusCode::OK,
                        &json!({"access_token": token, "expires_in": lifetime.as_secs(), "token_type": "Bearer"}),
                    )
                }
                None => rpc(404, "NOT_FOUND", "no service account"),
            },
            "/computeMetadata/v1/instance/service-accounts/default/email" => match account {
                Some(a) => Response::new(Full::new(Bytes::from(a))),
                None => rpc(404, "NOT_FOUND", "no service account"),
            },
            _ => rpc(404, "NOT_FOUND", "unknown metadata path"),
        }
    }
}
