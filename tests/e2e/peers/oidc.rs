//! With the real `oidc-provider` issuing the tokens: they start executions on moto (whose own
//! signature and IAM refusals come back as 502), other audiences are refused, and a key rotation
//! is followed without a restart.

use super::*;

#[tokio::test]
async fn oidc_provider_token_starts_a_moto_execution_and_a_viewer_is_refused() {
    let Some(p) = peers() else { return };
    let _serial = SERIAL.lock().await;
    let h = Harness::start_with(peer_config(&p, &p.sk, &p.ak)).await;
    let before = moto_executions(&p).await.len();

    // pipeline-bot is in group data-eng (extraTokenClaims of the provider).
    let bot = oidc_token(&p, "pipeline-bot", "bot-secret").await;
    let name = format!("peer-{}", std::process::id());
    let r = h
        .authorized(
            "POST",
            "/v1/steps/demo/executions",
            &format!("Bearer {bot}"),
            &format!(r#"{{"input": {{"date": "2026-11-24"}}, "name": "{name}"}}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let exec = r.json["execution_id"].as_str().unwrap();
    assert!(exec.ends_with(&format!(":{name}")), "{exec}");
    let execs = moto_executions(&p).await;
    assert_eq!(execs.len(), before + 1);
    assert!(execs.iter().any(|e| e["executionArn"] == exec));

    // reader-bot is a viewer: 403, and moto sees nothing new.
    let reader = oidc_token(&p, "reader-bot", "reader-secret").await;
    let r = h
        .authorized(
            "POST",
            "/v1/steps/demo/executions",
            &format!("Bearer {reader}"),
            "{}",
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.json);
    assert_eq!(moto_executions(&p).await.len(), before + 1);

    // The audit log names the provider's subject.
    let recs = h.audit_records().await;
    assert!(
        recs.iter()
            .any(|r| r["caller"]["sub"] == "pipeline-bot" && r["decision"] == "allow")
    );
    h.stop().await;
}

#[tokio::test]
async fn moto_signature_and_iam_failures_are_502_with_the_aws_message() {
    let Some(p) = peers() else { return };
    let _serial = SERIAL.lock().await;
    let bot = oidc_token(&p, "pipeline-bot", "bot-secret").await;
    let auth = format!("Bearer {bot}");

    let h = Harness::start_with(peer_config(&p, "wrong-secret", &p.ak)).await;
    let r = h
        .authorized("POST", "/v1/steps/demo/executions", &auth, "{}")
        .await;
    assert_eq!(
        (r.status, error_code(&r)),
        (502, "upstream_error"),
        "{}",
        r.json
    );
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SignatureDoesNotMatch"),
        "{}",
        r.json
    );
    h.stop().await;

    let h = Harness::start_with(peer_config(&p, &p.denied_sk, &p.denied_ak)).await;
    let r = h
        .authorized("POST", "/v1/steps/demo/executions", &auth, "{}")
        .await;
    assert_eq!(r.status, 502, "{}", r.json);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("AccessDenied"),
        "{}",
        r.json
    );
    h.stop().await;
}

#[tokio::test]
async fn tokens_for_another_audience_are_refused() {
    let Some(p) = peers() else { return };
    let _serial = SERIAL.lock().await;
    let bot = oidc_token(&p, "pipeline-bot", "bot-secret").await;
    let h = Harness::start_with(|c| {
        let f = peer_config(&p, &p.sk, &p.ak);
        f(c).replace(
            &format!("audiences = [\"{}\"]", p.audience),
            "audiences = [\"another-api\"]",
        )
    })
    .await;
    let r = h
        .authorized(
            "POST",
            "/v1/steps/demo/executions",
            &format!("Bearer {bot}"),
            "{}",
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.json);
    assert_eq!(r.json["error"]["message"], "audience not accepted");
    h.stop().await;
}

#[tokio::test]
async fn after_the_provider_rotates_its_keys_new_tokens_verify_without_a_restart() {
    let Some(p) = peers() else { return };
    let _serial = SERIAL.lock().await;
    let h = Harness::start_with(|c| {
        let f = peer_config(&p, &p.sk, &p.ak);
        f(c).replace(
            &format!("audiences = [\"{}\"]", p.audience),
            &format!(
                "audiences = [\"{}\"]\nmin_refetch_interval = \"1s\"",
                p.audience
            ),
        )
    })
    .await;
    let before = oidc_token(&p, "pipeline-bot", "bot-secret").await;
    let r = h
        .authorized("GET", "/v1/steps", &format!("Bearer {before}"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.json);

    let req = http::Request::post(format!("{}/test/rotate-keys", p.oidc))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, body) = body_of(client().request(req).await.unwrap()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;

    let after = oidc_token(&p, "pipeline-bot", "bot-secret").await;
    assert_ne!(before, after);
    let r = h
        .authorized("GET", "/v1/steps", &format!("Bearer {after}"), "")
        .await;
    assert_eq!(
        r.status, 200,
        "a token signed with the rotated key was refused: {}",
        r.json
    );
    h.stop().await;
}
