//! Token verification, ES256 and RS256 (2048-bit): cold (a token not seen before: header
//! checks, parse, signature, claims, identity) and warm (the verified-token cache).
//! The issuer's JWKS is served by an in-process `HttpClient`, so no socket is involved.
//! Run: `cargo bench --bench verify`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "benchmark program"
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use rsa::pkcs8::EncodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use stepgate::authn::Authenticator;
use stepgate::authn::issuer::{BearerJwt, Issuer};
use stepgate::clock::{SharedClock, SystemClock};
use stepgate::config::IssuerSettings;
use support::ISSUER;

/// A signing key: signs claims into a compact JWT.
trait Signer {
    fn sign(&self, claims: &Value) -> String;
    fn jwk(&self) -> Value;
    fn alg(&self) -> &'static str;
}

struct Es256(stepgate::dev::issuer::DevKey);

impl Signer for Es256 {
    fn sign(&self, claims: &Value) -> String {
        self.0.sign(claims).unwrap()
    }
    fn jwk(&self) -> Value {
        self.0.jwk().clone()
    }
    fn alg(&self) -> &'static str {
        "ES256"
    }
}

struct Rs256 {
    key: jsonwebtoken::EncodingKey,
    jwk: Value,
}

impl Rs256 {
    fn generate() -> Self {
        let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let pem = private.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "bench-rs256",
            "n": b64.encode(private.n().to_bytes_be()),
            "e": b64.encode(private.e().to_bytes_be()),
        });
        Self {
            key: jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            jwk,
        }
    }
}

impl Signer for Rs256 {
    fn sign(&self, claims: &Value) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some("bench-rs256".into());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }
    fn jwk(&self) -> Value {
        self.jwk.clone()
    }
    fn alg(&self) -> &'static str {
        "RS256"
    }
}

fn settings(alg: &str) -> IssuerSettings {
    IssuerSettings {
        name: "bench".into(),
        issuer: ISSUER.into(),
        audiences: vec!["stepgate".into()],
        jwks_uri: Some(format!("{ISSUER}/jwks")),
        groups_claim: "groups".into(),
        algorithms: vec![alg.into()],
        leeway: Duration::from_secs(60),
        require_verified_email: true,
        stale_keys_for: Duration::from_secs(3600),
        min_refetch_interval: Duration::from_secs(5),
        max_token_age: None,
        required_claims: Default::default(),
    }
}

fn token(signer: &dyn Signer, i: usize) -> String {
    signer.sign(&support::claims(
        "stepgate",
        json!({
            "sub": format!("user-{i}"), "email": format!("user-{i}@example.com"),
            "email_verified": true, "groups": ["data-eng"], "repository": "acme/etl",
            "ref": "refs/heads/main",
        }),
    ))
}

fn bench_alg(c: &mut Criterion, rt: &tokio::runtime::Runtime, signer: &dyn Signer) {
    let clock: SharedClock = Arc::new(SystemClock);
    let jwks = Bytes::from(json!({"keys": [signer.jwk()]}).to_string());
    let http: stepgate::http_client::SharedHttpClient =
        Arc::new(support::Canned(move |_: &Request<Bytes>| jwks.clone()));
    let alg = signer.alg();
    let issuer = Issuer::new(settings(alg), http.clone(), clock.clone());
    rt.block_on(issuer.keys().warm()).unwrap();
    let authn = Authenticator::new(&[settings(alg)], http, clock);
    assert!(rt.block_on(authn.warm()).is_empty());

    // Cold: what a token not in the cache costs (header checks, parse, signature, claims).
    let tokens: Vec<String> = (0..64).map(|i| token(signer, i)).collect();
    let mut i = 0;
    c.bench_function(&format!("verify/{alg}/cold"), |b| {
        b.iter_batched(
            || {
                i = (i + 1) % tokens.len();
                tokens.get(i).unwrap().clone()
            },
            |t| {
                let header = jsonwebtoken::decode_header(&t).unwrap();
                assert!(header.jku.is_none() && header.jwk.is_none());
                let jwt: BearerJwt = t.parse().unwrap();
                rt.block_on(issuer.verify(&jwt)).unwrap()
            },
            BatchSize::SmallInput,
        )
    });

    // Warm: the verified-token cache (SHA-256 of the token, cache lookup, identity clone).
    for t in &tokens {
        rt.block_on(authn.verify_token(t)).unwrap();
    }
    let mut i = 0;
    c.bench_function(&format!("verify/{alg}/warm"), |b| {
        b.iter(|| {
            i = (i + 1) % tokens.len();
            rt.block_on(authn.verify_token(tokens.get(i).unwrap()))
                .unwrap()
        })
    });
}

fn benches(c: &mut Criterion) {
    let rt = support::runtime();
    bench_alg(
        c,
        &rt,
        &Es256(stepgate::dev::issuer::DevKey::generate("bench-es256").unwrap()),
    );
    bench_alg(c, &rt, &Rs256::generate());
}

criterion_group!(verify, benches);
criterion_main!(verify);
