//! Fuzz the bearer-token path: header parse, RFC 8725 checks, openidconnect parse, issuer
//! selection and verification against a fixed key set. Any input must give `Ok` only for a
//! genuinely signed token (never here) and must never panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use stepgate::authn::Authenticator;

struct Fixture {
    rt: tokio::runtime::Runtime,
    authn: Authenticator,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let authn = rt.block_on(async {
            let clock: stepgate::clock::SharedClock = Arc::new(stepgate::clock::SystemClock);
            let issuer = stepgate::dev::issuer::start(0, clock.clone()).await.unwrap();
            let settings = stepgate::config::IssuerSettings {
                name: "dev".into(),
                issuer: issuer.url.clone(),
                audiences: vec!["stepgate".into()],
                jwks_uri: None,
                groups_claim: "groups".into(),
                algorithms: vec!["ES256".into(), "RS256".into()],
                leeway: std::time::Duration::from_secs(60),
                require_verified_email: true,
                stale_keys_for: std::time::Duration::from_secs(3600),
                min_refetch_interval: std::time::Duration::from_secs(3600),
                max_token_age: None,
                required_claims: Default::default(),
            };
            let deps = stepgate::app::Deps::real().unwrap();
            let a = Authenticator::new(&[settings], deps.http.clone(), clock);
            a.warm().await;
            a
        });
        Fixture { rt, authn }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let f = fixture();
    let result = f.rt.block_on(f.authn.verify_token(token));
    assert!(result.is_err(), "an unsigned input verified: {token:?}");
});
