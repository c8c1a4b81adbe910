//! Policy hot reload: a bad edit leaves the old set serving; a good edit takes effect without
//! dropping requests under concurrent load.

use std::time::Duration;

use crate::support::Harness;

async fn wait_for(mut cond: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..100 {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_edit_is_refused_and_a_good_one_applies_under_load() {
    let h = std::sync::Arc::new(Harness::start().await);
    let policies = h.dir.path().join("policies");
    let body = r#"{"input": {"date": "2026-11-24"}}"#;
    assert_eq!(h.start_as("alice", "adhoc-report", body).await.status, 201);

    // A typo: refused at reload, the old set keeps serving.
    std::fs::write(
        policies.join("typo.cedar"),
        "@id(\"typo\")\nforbid (principal, action, resource) when { resource.enviroment == \"dev\" };\n",
    )
    .unwrap();
    let refused = wait_for(async || {
        let m = h.send("GET", "/metrics", &[], "").await;
        m.text
            .contains("stepgate_policy_reloads_total{result=\"refused\"} 1")
    })
    .await;
    assert!(refused, "the bad set was not refused");
    assert_eq!(h.start_as("alice", "adhoc-report", body).await.status, 201);

    // Load while a good edit lands: every answer is 201 (old set) or 403 (new set), never an error.
    let load = {
        let h = h.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..60 {
                statuses.push(
                    h.start_as("alice", "adhoc-report", r#"{"input": {}}"#)
                        .await
                        .status,
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(
        policies.join("typo.cedar"),
        "@id(\"freeze-reporting\")\nforbid (principal, action == Action::\"start\", resource in Pipeline::\"reporting\");\n",
    )
    .unwrap();
    let statuses = load.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 403),
        "{statuses:?}"
    );
    let applied =
        wait_for(async || h.start_as("alice", "adhoc-report", body).await.status == 403).await;
    assert!(applied, "the good edit did not take effect");
    let last = h.audit_records().await.last().cloned().unwrap();
    assert_eq!(last["reasons"][0], "freeze-reporting");
    // Other steps are untouched by the new forbid.
    assert_eq!(h.start_as("alice", "nightly-load", body).await.status, 201);
}
