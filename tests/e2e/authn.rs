//! Issuers that are down: fail closed for their tokens, others keep working.

use crate::support::{Harness, error_code};

#[tokio::test]
async fn an_issuer_down_at_start_fails_closed_and_does_not_stop_others() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let h = Harness::start_with(|c| {
        c.replace(
            "[credentials.sandbox]",
            &format!("[[issuers]]\nname = \"down\"\nissuer = \"{dead}\"\naudiences = [\"stepgate\"]\n\n[credentials.sandbox]"),
        )
    })
    .await;
    // A token claiming the dead issuer: its keys cannot be had, so 503, never a guess.
    let t = h
        .issuer
        .mint(
            serde_json::json!({"sub": "x", "iss": dead}),
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let auth = format!("Bearer {t}");
    let r = h
        .authorized("POST", "/v1/steps/nightly-load/executions", &auth, "{}")
        .await;
    assert_eq!(
        (r.status, error_code(&r)),
        (503, "unavailable"),
        "{}",
        r.json
    );
    // The dev issuer still works, and readiness says which issuer is missing.
    assert_eq!(h.start_as("alice", "nightly-load", "{}").await.status, 201);
    let ready = h.send("GET", "/readyz", &[], "").await;
    assert_eq!(ready.json["issuers"]["down"], false);
    assert_eq!(ready.json["issuers"]["dev"], true);
    h.stop().await;
}

/// A test issuer whose answers the test controls.
mod flaky_issuer {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::Full;
    use serde_json::json;
    use stepgate::dev::issuer::DevKey;

    #[derive(Clone, Copy, PartialEq)]
    pub enum Mode {
        Up,
        Down,
    }

    pub struct State {
        pub mode: Mode,
        pub keys: Vec<Arc<DevKey>>,
    }

    pub async fn start(first: DevKey) -> (String, Arc<Mutex<State>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Up,
            keys: vec![Arc::new(first)],
        }));
        let s2 = state.clone();
        let u2 = url.clone();
        stepgate::dev::serve_loopback(
            listener,
            move |req: http::Request<hyper::body::Incoming>| {
                let (mode, jwks) = {
                    let g = s2.lock().unwrap();
                    (
                        g.mode,
                        json!({"keys": g.keys.iter().map(|k| k.jwk().clone()).collect::<Vec<_>>()}),
                    )
                };
                let body = match (mode, req.uri().path()) {
                    (Mode::Down, _) => None,
                    (Mode::Up, "/.well-known/openid-configuration") => {
                        Some(json!({"issuer": u2, "jwks_uri": format!("{u2}/jwks")}))
                    }
                    (Mode::Up, "/jwks") => Some(jwks),
                    _ => None,
                };
                async move {
                    let mut r = http::Response::new(Full::new(Bytes::from(
                        body.clone().unwrap_or_default().to_string(),
                    )));
                    if body.is_none() {
                        *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    r
                }
            },
        );
        (url, state)
    }
}

#[tokio::test]
async fn keys_survive_an_outage_new_kids_wait_and_rotation_needs_no_restart() {
    use flaky_issuer::Mode;
    use std::time::Duration;
    let k1 = stepgate::dev::issuer::DevKey::generate("k1").unwrap();
    let (url, state) = flaky_issuer::start(k1).await;
    let clock: stepgate::clock::SharedClock = std::sync::Arc::new(stepgate::clock::SystemClock);
    let settings = stepgate::config::IssuerSettings {
        name: "flaky".into(),
        issuer: url.clone(),
        audiences: vec!["stepgate".into()],
        jwks_uri: None, // discovery without authorization_endpoint, as GitHub and Kubernetes serve it
        groups_claim: "groups".into(),
        algorithms: vec!["ES256".into()],
        leeway: Duration::from_secs(60),
        require_verified_email: true,
        stale_keys_for: Duration::from_secs(3600),
        min_refetch_interval: Duration::from_millis(200),
        max_token_age: None,
        required_claims: Default::default(),
    };
    let deps = stepgate::app::Deps::real().unwrap();
    let authn = stepgate::authn::Authenticator::new(&[settings], deps.http.clone(), clock);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |sub: &str| serde_json::json!({"iss": url, "aud": "stepgate", "sub": sub, "iat": now, "exp": now + 600});
    let sign = |k: &stepgate::dev::issuer::DevKey, sub: &str| {
        k.sign_raw(
            &serde_json::json!({"alg": "ES256", "kid": k.kid()}),
            claims(sub).to_string().as_bytes(),
        )
        .unwrap()
    };
    let k1 = state.lock().unwrap().keys[0].clone();
    assert_eq!(authn.verify_token(&sign(&k1, "a")).await.unwrap().sub, "a");

    // Outage: the issuer answers 503. Keys already fetched keep serving...
    state.lock().unwrap().mode = Mode::Down;
    let issuer = authn.issuers().next().unwrap().clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(authn.verify_token(&sign(&k1, "b")).await.unwrap().sub, "b");
    // ...but a token signed with a key nobody has seen is refused.
    let k2 = std::sync::Arc::new(stepgate::dev::issuer::DevKey::generate("k2").unwrap());
    assert!(matches!(
        authn.verify_token(&sign(&k2, "c")).await,
        Err(stepgate::authn::AuthnError::UnknownKey)
    ));
    // The issuer comes back having rotated to k2: new tokens verify, no restart.
    {
        let mut g = state.lock().unwrap();
        g.mode = Mode::Up;
        g.keys.push(k2.clone());
    }
    tokio::time::sleep(Duration::from_millis(6000)).await; // past the failure back-off
    let fetches = issuer.keys().fetch_count();
    assert_eq!(authn.verify_token(&sign(&k2, "d")).await.unwrap().sub, "d");
    assert_eq!(issuer.keys().fetch_count(), fetches + 1);
}

#[tokio::test]
async fn expired_keys_keep_serving_through_an_outage_within_the_stale_window() {
    use flaky_issuer::Mode;
    use std::time::Duration;
    use stepgate::authn::jwks::{KeyPolicy, KeySource};
    let (url, state) =
        flaky_issuer::start(stepgate::dev::issuer::DevKey::generate("k1").unwrap()).await;
    let deps = stepgate::app::Deps::real().unwrap();
    let policy = KeyPolicy {
        default_ttl: Duration::from_millis(200),
        min_ttl: Duration::from_millis(100),
        max_ttl: Duration::from_secs(1),
        refetch_floor: Duration::ZERO,
        failure_backoff: Duration::from_millis(100),
        stale_for: Duration::from_secs(30),
    };
    let src = KeySource::new(url, None, deps.http.clone(), policy.clone());
    let first = src.current().await.unwrap();
    state.lock().unwrap().mode = Mode::Down;
    tokio::time::sleep(Duration::from_millis(300)).await; // keys expired
    let during = src.current().await.unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first, &during),
        "stale keys should serve"
    );
    assert!(src.fetch_count() >= 2, "it did try to refetch");
    // Without a stale window the same outage fails closed.
    let strict = KeySource::new(
        format!("http://{}", "127.0.0.1:9"),
        None,
        deps.http.clone(),
        KeyPolicy {
            stale_for: Duration::ZERO,
            ..policy
        },
    );
    assert!(strict.current().await.is_err());
    state.lock().unwrap().mode = Mode::Up;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let after = src.current().await.unwrap();
    assert!(
        !std::sync::Arc::ptr_eq(&first, &after),
        "recovered keys are fresh"
    );
}

fn fixture(name: &str) -> serde_json::Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cases/tokens")
        .join(name);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("_source");
    v
}

#[tokio::test]
async fn github_actions_and_kubernetes_claims_become_tags() {
    let h = Harness::start().await;
    let mut gh = fixture("github-actions.json");
    gh.as_object_mut().unwrap().remove("aud");
    let t = h
        .issuer
        .mint(gh, std::time::Duration::from_secs(300))
        .unwrap();
    let id = h.app.authn.verify_token(&t).await.unwrap();
    assert_eq!(id.sub, "repo:acme/etl:environment:prod");
    for (k, v) in [
        ("repository", "acme/etl"),
        ("repository_owner", "acme"),
        ("ref", "refs/heads/main"),
        ("environment", "prod"),
        (
            "job_workflow_ref",
            "acme/etl/.github/workflows/nightly.yml@refs/heads/main",
        ),
        ("actor", "octocat"),
    ] {
        assert_eq!(id.tags.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(!id.tags.contains_key("jti"), "token mechanics are not tags");

    let mut k8s = fixture("kubernetes.json");
    k8s.as_object_mut().unwrap().remove("aud");
    let t = h
        .issuer
        .mint(k8s, std::time::Duration::from_secs(300))
        .unwrap();
    let id = h.app.authn.verify_token(&t).await.unwrap();
    assert_eq!(id.sub, "system:serviceaccount:etl:runner");
    assert_eq!(id.tags["kubernetes.io.namespace"], "etl");
    assert_eq!(id.tags["kubernetes.io.serviceaccount.name"], "runner");
    assert_eq!(id.tags["kubernetes.io.pod.name"], "runner-7d9f");
    h.stop().await;
}

#[tokio::test]
async fn required_claims_and_max_token_age_are_enforced() {
    let h = Harness::start_with(|c| {
        c.replace(
            "audiences = [\"stepgate\"]",
            "audiences = [\"stepgate\"]\nmax_token_age = \"10m\"\nrequired_claims = { repository_owner = \"acme\" }",
        )
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ok = h
        .issuer
        .mint(fixture_gh(), std::time::Duration::from_secs(300))
        .unwrap();
    assert!(h.app.authn.verify_token(&ok).await.is_ok());
    let mut other = fixture_gh();
    other["repository_owner"] = "mallory".into();
    let t = h
        .issuer
        .mint(other, std::time::Duration::from_secs(300))
        .unwrap();
    let e = h.app.authn.verify_token(&t).await.unwrap_err();
    assert_eq!(e.description(), "claim `repository_owner` not accepted");
    let mut old = fixture_gh();
    old["iat"] = (now - 3600).into();
    let t = h
        .issuer
        .mint(old, std::time::Duration::from_secs(300))
        .unwrap();
    assert_eq!(
        h.app
            .authn
            .verify_token(&t)
            .await
            .unwrap_err()
            .description(),
        "token too old"
    );
    h.stop().await;
}

fn fixture_gh() -> serde_json::Value {
    let mut gh = fixture("github-actions.json");
    gh.as_object_mut().unwrap().remove("aud");
    gh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_identity_and_the_deciding_policies() {
    let h = Harness::start().await;
    let config = h.dir.path().join("stepgate.toml");
    let run = |token: String, step: &str, input: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_stepgate"));
        c.args(["explain", "--config"])
            .arg(&config)
            .args(["--step", step, "--action", "start"]);
        if let Some(i) = input {
            c.args(["--input", i]);
        }
        c.env("STEPGATE_TOKEN", token).output().unwrap()
    };
    let out = run(h.token("ci"), "nightly-load", None);
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{s} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        s.contains("Caller::\"dev/repo:acme/etl:ref:refs/heads/main\""),
        "{s}"
    );
    assert!(s.contains("repository = acme/etl"), "{s}");
    assert!(s.contains("decision   allow start on nightly-load"), "{s}");
    assert!(s.contains("ci-main-starts-nightly-load"), "{s}");
    let out = run(
        h.token("alice"),
        "nightly-load",
        Some(r#"{"full_refresh": true}"#),
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("decision   deny start on nightly-load"), "{s}");
    assert!(s.contains("no-full-refresh-in-prod (forbid)"), "{s}");
    let out = run("garbage".into(), "nightly-load", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token refused: token is malformed"));
    assert!(h.sandbox.executions().is_empty());
    h.stop().await;
}
