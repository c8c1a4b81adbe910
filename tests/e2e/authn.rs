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
        .send(
            "POST",
            "/v1/steps/nightly-load/executions",
            &[("authorization", &auth)],
            "{}",
        )
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
