//! The attack battery: forged, misused and malformed tokens each get 401 and nothing is
//! forwarded (RFC 8725 and the classic JWT library pitfalls).

use base64::Engine;
use serde_json::{Value, json};

use crate::support::Harness;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn good_claims(iss: &str) -> Value {
    json!({"iss": iss, "aud": "stepgate", "sub": "alice", "groups": ["data-eng"],
           "iat": now(), "nbf": now(), "exp": now() + 300})
}

#[tokio::test]
async fn every_attack_is_401_and_nothing_is_forwarded() {
    let h = Harness::start().await;
    let iss = h.issuer.url.clone();
    let key = h.issuer.key();
    let kid = key.kid().to_string();
    let es = |hdr: Value, claims: Value| key.sign_raw(&hdr, claims.to_string().as_bytes()).unwrap();
    let hdr = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
    let with = |extra: Value| {
        let mut h = hdr.clone();
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        h
    };
    let claims_with = |k: &str, v: Value| {
        let mut c = good_claims(&iss);
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v;
        }
        c
    };
    let good = es(hdr.clone(), good_claims(&iss));
    let (g_head, g_rest) = good.split_once('.').unwrap();
    let (g_claims, g_sig) = g_rest.split_once('.').unwrap();
    let pubkey_secret = key.jwk().to_string();
    let hs256 = {
        let msg = format!(
            "{}.{}",
            b64(json!({"alg": "HS256", "typ": "JWT", "kid": kid})
                .to_string()
                .as_bytes()),
            g_claims
        );
        let k = jsonwebtoken::EncodingKey::from_secret(pubkey_secret.as_bytes());
        format!(
            "{msg}.{}",
            jsonwebtoken::crypto::sign(msg.as_bytes(), &k, jsonwebtoken::Algorithm::HS256).unwrap()
        )
    };
    let attacker = stepgate::dev::issuer::DevKey::generate("attacker").unwrap();

    let mut cases: Vec<(&str, String)> = Vec::new();
    for none in ["none", "None", "NONE", "nOnE"] {
        let t = format!(
            "{}.{}.",
            b64(json!({"alg": none, "typ": "JWT"}).to_string().as_bytes()),
            g_claims
        );
        cases.push(("alg none", t));
    }
    cases.push(("HS256 with the public key as secret", hs256));
    cases.push((
        "wrong iss",
        es(
            hdr.clone(),
            claims_with("iss", json!("https://evil.example")),
        ),
    ));
    cases.push((
        "trailing-slash iss",
        es(hdr.clone(), claims_with("iss", json!(format!("{iss}/")))),
    ));
    cases.push((
        "wrong aud",
        es(hdr.clone(), claims_with("aud", json!("other"))),
    ));
    cases.push((
        "aud array without ours",
        es(hdr.clone(), claims_with("aud", json!(["a", "b"]))),
    ));
    cases.push((
        "expired",
        es(hdr.clone(), claims_with("exp", json!(now() - 3600))),
    ));
    cases.push((
        "nbf in the future",
        es(hdr.clone(), claims_with("nbf", json!(now() + 3600))),
    ));
    cases.push((
        "iat in the future",
        es(hdr.clone(), claims_with("iat", json!(now() + 3600))),
    ));
    cases.push((
        "missing exp",
        es(hdr.clone(), claims_with("exp", Value::Null)),
    ));
    cases.push((
        "exp as a string",
        es(
            hdr.clone(),
            claims_with("exp", json!(format!("{}", now() + 300))),
        ),
    ));
    cases.push((
        "unknown kid",
        es(with(json!({"kid": "no-such-key"})), good_claims(&iss)),
    ));
    cases.push((
        "kid path traversal",
        es(
            with(json!({"kid": "../../../../etc/passwd"})),
            good_claims(&iss),
        ),
    ));
    cases.push((
        "jku",
        attacker
            .sign_raw(
                &with(json!({"jku": "https://evil.example/jwks"})),
                good_claims(&iss).to_string().as_bytes(),
            )
            .unwrap(),
    ));
    cases.push((
        "x5u",
        attacker
            .sign_raw(
                &with(json!({"x5u": "https://evil.example/cert"})),
                good_claims(&iss).to_string().as_bytes(),
            )
            .unwrap(),
    ));
    cases.push((
        "embedded jwk",
        attacker
            .sign_raw(
                &with(json!({"jwk": attacker.jwk()})),
                good_claims(&iss).to_string().as_bytes(),
            )
            .unwrap(),
    ));
    cases.push((
        "right kid, another key",
        attacker
            .sign_raw(&hdr, good_claims(&iss).to_string().as_bytes())
            .unwrap(),
    ));
    cases.push((
        "ES256 r = s = 0",
        format!("{g_head}.{g_claims}.{}", b64(&[0u8; 64])),
    ));
    cases.push(("stripped signature", format!("{g_head}.{g_claims}")));
    cases.push(("empty signature", format!("{g_head}.{g_claims}.")));
    cases.push(("trailing garbage", format!("{good}.x")));
    cases.push((
        "garbage after the signature",
        format!("{g_head}.{g_claims}.{g_sig}AAAA"),
    ));
    cases.push(("bad base64", format!("{g_head}.!!!{g_claims}.{g_sig}")));
    cases.push((
        "JWE (five segments)",
        format!("{g_head}.{g_claims}.{g_sig}.aaaa.bbbb"),
    ));
    cases.push((
        "crit",
        es(with(json!({"crit": ["exp"]})), good_claims(&iss)),
    ));
    cases.push((
        "b64 false",
        es(
            with(json!({"b64": false, "crit": ["b64"]})),
            good_claims(&iss),
        ),
    ));
    let dup = format!(
        r#"{{"iss":"{iss}","aud":"stepgate","sub":"alice","sub":"root","groups":["data-eng"],"iat":{n},"exp":{e}}}"#,
        n = now(),
        e = now() + 300
    );
    cases.push((
        "duplicate JSON keys",
        key.sign_raw(&hdr, dup.as_bytes()).unwrap(),
    ));
    cases.push(("non-object claims", key.sign_raw(&hdr, b"[1,2,3]").unwrap()));
    cases.push(("claims a string", key.sign_raw(&hdr, b"\"alice\"").unwrap()));
    cases.push((
        "a 20 KiB token",
        format!("{g_head}.{}.{g_sig}", "A".repeat(20 * 1024)),
    ));

    // The genuine token works: the battery is testing the checks, not a broken setup.
    let ok = h
        .authorized(
            "POST",
            "/v1/steps/nightly-load/executions",
            &format!("Bearer {good}"),
            "{}",
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.json);

    for (what, token) in &cases {
        let r = h
            .authorized(
                "POST",
                "/v1/steps/nightly-load/executions",
                &format!("Bearer {token}"),
                "{}",
            )
            .await;
        assert_eq!(r.status, 401, "{what}: {}", r.json);
        assert_eq!(r.json["error"]["code"], "unauthenticated", "{what}");
        let desc = r.json["error"]["message"].as_str().unwrap();
        assert!(
            !desc.contains(token.as_str()),
            "{what}: the token was echoed"
        );
    }
    assert_eq!(
        h.sandbox.executions().len(),
        1,
        "an attack reached the upstream"
    );

    // A 1 MiB header never reaches authentication (431), and nothing is forwarded.
    let huge = format!("Bearer {}", "A".repeat(1 << 20));
    let r = h
        .authorized("POST", "/v1/steps/nightly-load/executions", &huge, "{}")
        .await;
    assert!(r.status == 431 || r.status == 401, "{}", r.status);
    assert_eq!(h.sandbox.executions().len(), 1);

    // Every 401 is audited as a deny with its reason; no token text in the log.
    let recs = h.audit_records().await;
    let denies = recs.iter().filter(|r| r["status"] == 401).count();
    assert_eq!(denies, cases.len());
    let raw = std::fs::read_to_string(&h.audit_path).unwrap();
    assert!(!raw.contains(g_claims), "token material in the audit log");
    h.stop().await;
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_keys_at_most_once() {
    let h = Harness::start().await;
    let iss = h.issuer.url.clone();
    let issuer = h.app.authn.issuers().next().unwrap().clone();
    let before = issuer.keys().fetch_count();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let t = h
            .issuer
            .key()
            .sign_raw(
                &json!({"alg": "ES256", "kid": format!("bogus-{i}")}),
                good_claims(&iss).to_string().as_bytes(),
            )
            .unwrap();
        let app = h.app.clone();
        tasks.push(tokio::spawn(
            async move { app.authn.verify_token(&t).await },
        ));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    // Keys were fetched moments ago: within the refetch floor no bogus kid causes a fetch.
    assert_eq!(issuer.keys().fetch_count(), before);
    h.stop().await;
}
