use super::*;
use crate::clock::ManualClock;

const EMAIL: &str = "launcher@sandbox-project.iam.gserviceaccount.com";

async fn call(
    g: &GoogleSandbox,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", g.url()))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn jwt(kid: &str, pem: &[u8], claims: &Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(
        &h,
        claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(pem).unwrap(),
    )
    .unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/cases/gcp/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

const LAUNCH: &str =
    "/v1b3/projects/p/locations/europe-west1/templates:launch?gcsPath=gs%3A%2F%2Ft%2Fx";

#[tokio::test]
async fn self_signed_jwts_are_verified_like_google_does() {
    let clock = Arc::new(ManualClock::at(1_795_000_000));
    let g = start(clock.clone()).await.unwrap();
    let public = String::from_utf8(fixture("sa-key.pub.pem")).unwrap();
    g.add_service_account_key(EMAIL, "k1", &public);
    g.grant(EMAIL, "p", "dataflow.jobs.create");
    let now = 1_795_000_000u64;
    let claims =
        json!({"iss": EMAIL, "sub": EMAIL, "scope": CLOUD_PLATFORM, "iat": now, "exp": now + 3600});
    let key = fixture("sa-key.pem");
    let body = r#"{"jobName": "x-1", "parameters": {"a": "b"}}"#;
    let (s, v) = call(&g, "POST", LAUNCH, &jwt("k1", &key, &claims), body).await;
    assert_eq!(s, 200, "{v}");
    // Unknown kid, wrong issuer, expired, too long, no scope: 401.
    let other = {
        let mut c = claims.clone();
        c["iss"] = json!("someone@else");
        c
    };
    let expired = {
        let mut c = claims.clone();
        c["exp"] = json!(now - 1);
        c
    };
    let long = {
        let mut c = claims.clone();
        c["exp"] = json!(now + 7200);
        c
    };
    let unscoped = {
        let mut c = claims.clone();
        c["scope"] = json!("https://www.googleapis.com/auth/pubsub");
        c
    };
    for (kid, c) in [
        ("k2", &claims),
        ("k1", &other),
        ("k1", &expired),
        ("k1", &long),
        ("k1", &unscoped),
    ] {
        let (s, v) = call(
            &g,
            "POST",
            LAUNCH,
            &jwt(kid, &key, c),
            r#"{"jobName": "x-2"}"#,
        )
        .await;
        assert_eq!(
            (s, v["error"]["status"].as_str()),
            (401, Some("UNAUTHENTICATED")),
            "{kid} {c}"
        );
    }
    // Signed by another key under the registered kid: 401.
    let tampered = jwt("k1", &key, &claims);
    let (head, _) = tampered.rsplit_once('.').unwrap();
    let (s, _) = call(&g, "POST", LAUNCH, &format!("{head}.AAAA"), body).await;
    assert_eq!(s, 401);
    assert_eq!(g.launches(), 1);
}

#[tokio::test]
async fn request_shapes_permissions_and_active_names_are_checked() {
    let clock = Arc::new(ManualClock::at(1_795_000_000));
    let g = start(clock.clone()).await.unwrap();
    g.set_metadata_account(EMAIL);
    let (token, _) = g.issue(EMAIL);
    let body = r#"{"jobName": "load-1", "parameters": {"date": "2026-11-24"}}"#;
    let (s, v) = call(&g, "POST", LAUNCH, &token, body).await;
    assert_eq!(
        (s, v["error"]["status"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{v}"
    );
    g.grant(EMAIL, "p", "dataflow.jobs.create");
    for (bad, why) in [
        (r#"{"jobName": "load-1", "extra": 1}"#, "unknown field"),
        (
            r#"{"jobName": "load-1", "environment": {"workers": 3}}"#,
            "unknown environment field",
        ),
        (r#"{"jobName": "Load_1"}"#, "job name alphabet"),
        (
            r#"{"jobName": "load-1", "parameters": {"n": 3}}"#,
            "non-string parameter",
        ),
    ] {
        let (s, v) = call(&g, "POST", LAUNCH, &token, bad).await;
        assert_eq!(
            (s, v["error"]["status"].as_str()),
            (400, Some("INVALID_ARGUMENT")),
            "{why}: {v}"
        );
    }
    let no_path = "/v1b3/projects/p/locations/europe-west1/templates:launch";
    assert_eq!(call(&g, "POST", no_path, &token, body).await.0, 400);
    let (s, v) = call(&g, "POST", LAUNCH, &token, body).await;
    assert_eq!(s, 200, "{v}");
    let id = v["job"]["id"].as_str().unwrap().to_string();
    let (s, v) = call(&g, "POST", LAUNCH, &token, body).await;
    assert_eq!(
        (s, v["error"]["status"].as_str()),
        (409, Some("ALREADY_EXISTS"))
    );
    g.finish_job(&id);
    assert_eq!(
        call(&g, "POST", LAUNCH, &token, body).await.0,
        200,
        "a finished name runs again"
    );
    // Issued tokens expire with the clock.
    clock.advance(Duration::from_secs(3601));
    let (s, _) = call(&g, "POST", LAUNCH, &token, r#"{"jobName": "load-2"}"#).await;
    assert_eq!(s, 401);
    assert_eq!(g.launches(), 2);
}
