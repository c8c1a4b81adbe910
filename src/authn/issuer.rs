//! One trusted issuer: verifies a token's signature, `iss`, `aud`, `exp`, `nbf`, `iat` and
//! turns its claims into an [`Identity`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreGenderClaim, CoreIdTokenVerifier, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AdditionalClaims, ClaimsVerificationError, ClientId, IdToken, IdTokenClaims, IssuerUrl,
    JsonWebTokenType, Nonce, SignatureVerificationError,
};
use serde::{Deserialize, Serialize};

use super::AuthnError;
use super::identity::{Identity, flatten_tags};
use super::jwks::{FetchedKeys, KeyPolicy, KeySource};
use crate::clock::SharedClock;
use crate::config::IssuerSettings;
use crate::http_client::SharedHttpClient;

/// Every claim openidconnect does not model itself (`groups`, `nbf`, GitHub's `repository`, ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OtherClaims(pub serde_json::Map<String, serde_json::Value>);
impl AdditionalClaims for OtherClaims {}

/// A bearer JWT as openidconnect parses it.
pub type BearerJwt = IdToken<
    OtherClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// Verified claims.
pub type Claims = IdTokenClaims<OtherClaims, CoreGenderClaim>;

/// Claims that are token mechanics, not identity: never tags.
const NOT_TAGS: &[&str] = &["nbf", "jti", "email_verified"];

/// One configured issuer with its keys.
pub struct Issuer {
    settings: IssuerSettings,
    keys: KeySource,
    clock: SharedClock,
}

impl Issuer {
    /// An issuer whose keys are fetched through `http`.
    pub fn new(settings: IssuerSettings, http: SharedHttpClient, clock: SharedClock) -> Self {
        let policy = KeyPolicy {
            stale_for: settings.stale_keys_for,
            refetch_floor: settings.min_refetch_interval,
            ..KeyPolicy::default()
        };
        let keys = KeySource::new(
            settings.issuer.clone(),
            settings.jwks_uri.clone(),
            http,
            policy,
        );
        Self {
            settings,
            keys,
            clock,
        }
    }

    /// Configured name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The `iss` value.
    pub fn issuer_url(&self) -> &str {
        &self.settings.issuer
    }

    /// Key source (readiness, warm-up).
    pub fn keys(&self) -> &KeySource {
        &self.keys
    }

    /// Verifies `jwt` and derives the identity.
    pub async fn verify(&self, jwt: &BearerJwt) -> Result<Identity, AuthnError> {
        let keys = self
            .keys
            .current()
            .await
            .map_err(AuthnError::KeysUnavailable)?;
        match self.verify_with(jwt, &keys) {
            Err(AuthnError::UnknownKey) => match self.keys.refresh_for_unknown_kid(&keys).await {
                Some(fresh) => self.verify_with(jwt, &fresh),
                None => Err(AuthnError::UnknownKey),
            },
            other => other,
        }
    }

    fn verifier(&self, keys: &FetchedKeys) -> Result<CoreIdTokenVerifier<'static>, AuthnError> {
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|_| AuthnError::Internal("issuer URL does not parse".into()))?;
        let clock = self.clock.clone();
        let leeway = self.settings.leeway;
        let algs = self
            .settings
            .algorithms
            .iter()
            .filter_map(|a| serde_plain_alg(a))
            .collect::<Vec<_>>();
        let types = ["JWT", "at+jwt", "application/jwt", "application/at+jwt"]
            .iter()
            .filter_map(|t| JsonWebTokenType::new((*t).to_string()).normalize().ok())
            .collect::<Vec<_>>();
        Ok(CoreIdTokenVerifier::new_public_client(
            ClientId::new(String::new()),
            issuer,
            keys.set.clone(),
        )
        // Audience containment is checked below against every configured audience.
        .require_audience_match(false)
        .set_allowed_algs(algs)
        .set_allowed_jose_types(types)
        // `exp` gets the leeway: the verifier compares exp with this "now".
        .set_time_fn(move || DateTime::<Utc>::from(clock.now() - leeway)))
    }

    fn verify_with(&self, jwt: &BearerJwt, keys: &FetchedKeys) -> Result<Identity, AuthnError> {
        let verifier = self.verifier(keys)?;
        let claims = jwt
            .claims(&verifier, |_: Option<&Nonce>| Ok::<(), String>(()))
            .map_err(map_verification_error)?;
        self.check_times(claims)?;
        self.check_audience(claims)?;
        let identity = self.identity(claims);
        for (claim, want) in &self.settings.required_claims {
            let have = identity.tags.get(claim).or(if claim == "sub" {
                Some(&identity.sub)
            } else {
                None
            });
            if have != Some(want) {
                return Err(AuthnError::RequiredClaim(claim.clone()));
            }
        }
        Ok(identity)
    }

    fn check_audience(&self, claims: &Claims) -> Result<(), AuthnError> {
        if claims.audiences().iter().any(|a| {
            self.settings
                .audiences
                .iter()
                .any(|ours| ours == a.as_str())
        }) {
            Ok(())
        } else {
            Err(AuthnError::Audience)
        }
    }

    fn check_times(&self, claims: &Claims) -> Result<(), AuthnError> {
        let now = self.clock.now();
        let leeway = self.settings.leeway;
        if let Some(nbf) = claims.additional_claims().0.get("nbf") {
            let nbf = nbf.as_i64().ok_or(AuthnError::Malformed)?;
            if epoch(nbf) > now + leeway {
                return Err(AuthnError::NotYetValid);
            }
        }
        let iat = SystemTime::from(claims.issue_time());
        if iat > now + leeway {
            return Err(AuthnError::NotYetValid);
        }
        if let Some(max) = self.settings.max_token_age
            && now.duration_since(iat).unwrap_or(Duration::ZERO) > max + leeway
        {
            return Err(AuthnError::TooOld);
        }
        Ok(())
    }

    fn identity(&self, claims: &Claims) -> Identity {
        let other = &claims.additional_claims().0;
        let groups_claim = self.settings.groups_claim.as_str();
        let groups = match other.get(groups_claim) {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let mut skip: Vec<&str> = NOT_TAGS.to_vec();
        skip.push(groups_claim);
        let mut tags = BTreeMap::new();
        flatten_tags("", other, &skip, &mut tags);
        if let Some(u) = claims.preferred_username() {
            tags.insert("preferred_username".into(), u.to_string());
        }
        let email_ok =
            claims.email_verified().unwrap_or(false) || !self.settings.require_verified_email;
        let email = claims.email().filter(|_| email_ok).map(|e| e.to_string());
        if let Some(e) = &email {
            tags.insert("email".into(), e.clone());
        }
        Identity {
            issuer: self.settings.name.clone(),
            sub: claims.subject().to_string(),
            email,
            groups,
            tags,
            issued_at: Some(SystemTime::from(claims.issue_time())),
            expires_at: SystemTime::from(claims.expiration()),
            cedar: Default::default(),
        }
    }
}

fn epoch(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH
    }
}

fn serde_plain_alg(name: &str) -> Option<CoreJwsSigningAlgorithm> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

fn map_verification_error(e: ClaimsVerificationError) -> AuthnError {
    match e {
        ClaimsVerificationError::Expired(_) => AuthnError::Expired,
        ClaimsVerificationError::InvalidAudience(_) => AuthnError::Audience,
        ClaimsVerificationError::InvalidIssuer(_) => AuthnError::UntrustedIssuer,
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        ) => AuthnError::UnknownKey,
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::DisallowedAlg(_),
        )
        | ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::UnsupportedAlg(_),
        ) => AuthnError::Algorithm,
        ClaimsVerificationError::SignatureVerification(_) => AuthnError::Signature,
        ClaimsVerificationError::Unsupported(_) => AuthnError::Unsupported,
        _ => AuthnError::Malformed,
    }
}

/// Reads the claimed `iss` of a token before verification, only to pick the issuer to verify
/// with (openidconnect's own unverified read; nothing read here is trusted).
pub fn claimed_issuer(jwt: &BearerJwt) -> Option<String> {
    let peek = CoreIdTokenVerifier::new_insecure_without_verification()
        .allow_all_jose_types()
        .allow_any_alg()
        .set_time_fn(|| DateTime::<Utc>::from(UNIX_EPOCH));
    jwt.claims(&peek, |_: Option<&Nonce>| Ok::<(), String>(()))
        .ok()
        .map(|c| c.issuer().to_string())
}

/// The issuers by `iss`.
pub type IssuerMap = BTreeMap<String, Arc<Issuer>>;
