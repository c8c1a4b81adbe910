//! Token verification cost: cold (a token not seen before: signature, claims, identity) and
//! warm (the verified-token cache), ES256 tokens from the dev issuer.
//! Run: `cargo bench --bench verify`.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    reason = "benchmark program"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use stepgate::authn::Authenticator;
use stepgate::clock::SystemClock;
use stepgate::config::IssuerSettings;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let clock: stepgate::clock::SharedClock = Arc::new(SystemClock);
        let issuer = stepgate::dev::issuer::start(0, clock.clone()).await.unwrap();
        let settings = IssuerSettings {
            name: "dev".into(),
            issuer: issuer.url.clone(),
            audiences: vec!["stepgate".into()],
            jwks_uri: None,
            groups_claim: "groups".into(),
            algorithms: vec!["ES256".into()],
            leeway: Duration::from_secs(60),
            require_verified_email: true,
            stale_keys_for: Duration::from_secs(3600),
            min_refetch_interval: Duration::from_secs(5),
            max_token_age: None,
            required_claims: Default::default(),
        };
        let deps = stepgate::app::Deps::real().unwrap();
        let authn = Authenticator::new(&[settings], deps.http.clone(), clock);
        assert!(authn.warm().await.is_empty());
        let n = 5000;
        let tokens: Vec<String> = (0..n)
            .map(|i| {
                issuer
                    .mint(serde_json::json!({"sub": format!("user-{i}"), "groups": ["data-eng"], "repository": "acme/etl"}), Duration::from_secs(600))
                    .unwrap()
            })
            .collect();
        let mut cold = Vec::with_capacity(n);
        for t in &tokens {
            let s = Instant::now();
            authn.verify_token(t).await.unwrap();
            cold.push(s.elapsed());
        }
        let mut warm = Vec::with_capacity(n);
        for t in &tokens {
            let s = Instant::now();
            authn.verify_token(t).await.unwrap();
            warm.push(s.elapsed());
        }
        println!("token verification, ES256, {n} tokens");
        println!("{:>6} {:>9} {:>9}", "", "p50 µs", "p99 µs");
        for (name, mut v) in [("cold", cold), ("warm", warm)] {
            v.sort();
            let pct = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e6;
            println!("{:>6} {:>9.1} {:>9.1}", name, pct(0.5), pct(0.99));
        }
    });
}
