//! The request pipeline end to end: policy decisions (allow, deny, forbid over permit, CI claims),
//! start, describe, stop and list, idempotent and synchronous starts, throttling retries, request
//! ids, health and metrics. The other refusals, status by status, are in `refusals.rs`.

use crate::support::{Harness, error_code};

#[tokio::test]
async fn allowed_start_is_audited_before_it_is_forwarded() {
    let h = Harness::start().await;
    let r = h
        .start_as(
            "alice",
            "nightly-load",
            r#"{"input": {"date": "2026-11-24"}}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let exec = r.json["execution_id"].as_str().unwrap().to_string();
    assert!(exec.starts_with("arn:aws:states:us-east-1:123456789012:execution:nightly-load:"));
    assert_eq!(r.json["step"], "nightly-load");
    let rid = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(r.json["request_id"], rid.as_str());

    // The sandbox (which checks the SigV4 signature) received exactly this execution.
    let execs = h.sandbox.executions();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0].arn, exec);
    // The pinned output dataset was set by the proxy.
    assert_eq!(
        execs[0].input,
        r#"{"date":"2026-11-24","output_dataset":"warehouse.nightly"}"#
    );

    // decision (allow) first, then the outcome with the execution id.
    let recs = h.audit_records().await;
    assert_eq!(recs.len(), 2);
    assert_eq!(
        (recs[0]["event"].as_str(), recs[0]["decision"].as_str()),
        (Some("decision"), Some("allow"))
    );
    assert_eq!(recs[0]["reasons"][0], "data-eng-operates-nightly-etl");
    assert_eq!(recs[0]["caller"]["sub"], "alice");
    assert_eq!(recs[0]["request_id"], rid.as_str());
    // The step allows `date` in clear; everything else only as the body's digest.
    assert_eq!(
        recs[0]["input_fields"],
        serde_json::json!({"date": "2026-11-24"})
    );
    assert_eq!(recs[1]["event"], "outcome");
    assert_eq!(recs[1]["status"], 201);
    assert_eq!(recs[1]["execution_id"], exec.as_str());
    assert_eq!(recs[1]["prev_hash"], recs[0]["hash"]);
    h.stop().await;
}

#[tokio::test]
async fn forbidden_start_is_refused_audited_and_not_forwarded() {
    let h = Harness::start().await;
    let r = h
        .start_as("victor", "nightly-load", r#"{"input": {}}"#)
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(error_code(&r), "forbidden");
    assert!(h.sandbox.executions().is_empty());
    let recs = h.audit_records().await;
    assert_eq!(recs.len(), 1);
    assert!(recs[0].get("input_fields").is_some());
    assert_eq!(recs[0]["decision"], "deny");
    assert_eq!(recs[0]["status"], 403);
    assert_eq!(recs[0]["caller"]["sub"], "victor");
    h.stop().await;
}

#[tokio::test]
async fn forbid_beats_permit_and_names_the_policy() {
    let h = Harness::start().await;
    let r = h
        .start_as(
            "alice",
            "nightly-load",
            r#"{"input": {"full_refresh": true}}"#,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.json);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-full-refresh-in-prod")
    );
    assert_eq!(
        h.audit_records().await[0]["reasons"][0],
        "no-full-refresh-in-prod"
    );
    // The same input on a non-prod step is fine.
    let r = h
        .start_as(
            "alice",
            "adhoc-report",
            r#"{"input": {"full_refresh": true}}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(h.sandbox.executions().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn ci_token_through_proxy_authorization_is_permitted_by_its_claims() {
    let h = Harness::start().await;
    let auth = format!("Bearer {}", h.token("ci"));
    let r = h
        .send(
            "POST",
            "/v1/steps/nightly-load/executions",
            &[("proxy-authorization", &auth)],
            "{}",
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    // ... but not a step its policy does not name.
    let r = h
        .send(
            "POST",
            "/v1/steps/adhoc-report/executions",
            &[("proxy-authorization", &auth)],
            "{}",
        )
        .await;
    assert_eq!(r.status, 403);
    let r = h.authorized("GET", "/v1/steps", &auth, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["steps"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["steps"][0]["step"], "nightly-load");
    h.stop().await;
}

#[tokio::test]
async fn describe_and_stop_reach_only_the_steps_own_executions() {
    let h = Harness::start().await;
    let r = h
        .start_as("alice", "nightly-load", r#"{"name": "run-1"}"#)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let exec = r.json["execution_id"].as_str().unwrap().to_string();

    let viewer = format!("Bearer {}", h.token("victor"));
    let r = h
        .authorized(
            "GET",
            "/v1/steps/nightly-load/executions/run-1",
            &viewer,
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "RUNNING");
    assert_eq!(r.json["execution_id"], exec.as_str());

    // An execution ARN of another state machine is refused before anything is sent.
    let other = "arn:aws:states:us-east-1:123456789012:execution:adhoc-report:run-1";
    let r = h
        .authorized(
            "GET",
            &format!("/v1/steps/nightly-load/executions/{other}"),
            &viewer,
            "",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.json);

    // Viewers may not stop; data engineers may.
    let r = h
        .authorized(
            "POST",
            "/v1/steps/nightly-load/executions/run-1/stop",
            &viewer,
            "",
        )
        .await;
    assert_eq!(r.status, 403);
    let alice = format!("Bearer {}", h.token("alice"));
    let r = h
        .authorized(
            "POST",
            "/v1/steps/nightly-load/executions/run-1/stop",
            &alice,
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(h.sandbox.executions()[0].status, "ABORTED");
    h.stop().await;
}

#[tokio::test]
async fn idempotency_key_gives_the_same_execution() {
    let h = Harness::start().await;
    let alice = format!("Bearer {}", h.token("alice"));
    let headers = [
        ("authorization", alice.as_str()),
        ("idempotency-key", "nightly-2026-11-24"),
    ];
    let body = r#"{"input": {"date": "2026-11-24"}}"#;
    let a = h
        .send("POST", "/v1/steps/nightly-load/executions", &headers, body)
        .await;
    let b = h
        .send("POST", "/v1/steps/nightly-load/executions", &headers, body)
        .await;
    assert_eq!((a.status, b.status), (201, 201), "{} {}", a.json, b.json);
    assert_eq!(a.json["execution_id"], b.json["execution_id"]);
    assert_eq!(h.sandbox.executions().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn request_ids_health_readiness_and_metrics() {
    let h = Harness::start().await;
    let r = h
        .send("GET", "/healthz", &[("x-request-id", "trace-abc.1")], "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-request-id"], "trace-abc.1");
    // A malformed request id is replaced.
    let r = h
        .send(
            "GET",
            "/healthz",
            &[("x-request-id", "bad id with spaces")],
            "",
        )
        .await;
    assert_ne!(r.headers["x-request-id"], "bad id with spaces");
    let r = h.send("GET", "/readyz", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["issuers"]["dev"], true);
    h.start_as("victor", "nightly-load", "{}").await;
    let m = h.send("GET", "/metrics", &[], "").await;
    assert_eq!(m.status, 200);
    assert!(
        m.text
            .contains("stepgate_requests_total{action=\"start\",status=\"403\"} 1"),
        "{}",
        m.text
    );
    assert!(
        m.text
            .contains("stepgate_decisions_total{decision=\"deny\"}"),
        "{}",
        m.text
    );
    let auth = format!("Bearer {}", h.token("alice"));
    let e = h
        .authorized("GET", "/v1/steps/nightly-load/executions/x", &auth, "")
        .await;
    assert!(e.headers.contains_key("x-request-id"));
    assert_eq!(
        e.json["error"]["request_id"],
        e.headers["x-request-id"].to_str().unwrap()
    );
    h.stop().await;
}

#[tokio::test]
async fn a_repeated_idempotent_start_after_the_run_closed_answers_with_it_or_409() {
    let h = Harness::start().await;
    let alice = format!("Bearer {}", h.token("alice"));
    let key = [
        ("authorization", alice.as_str()),
        ("idempotency-key", "k-2026-11-24"),
    ];
    let a = h
        .send(
            "POST",
            "/v1/steps/adhoc-report/executions",
            &key,
            r#"{"input": {"x": 1}}"#,
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.json);
    let exec = a.json["execution_id"].as_str().unwrap().to_string();
    // Close it; AWS now answers ExecutionAlreadyExists for the name.
    let stop = h
        .authorized(
            "POST",
            &format!(
                "/v1/steps/adhoc-report/executions/{}/stop",
                exec.rsplit(':').next().unwrap()
            ),
            &alice,
            "",
        )
        .await;
    assert_eq!(stop.status, 200, "{}", stop.json);
    // Same key, same input (keys in another order): the same execution, 200, no second run.
    let b = h
        .send(
            "POST",
            "/v1/steps/adhoc-report/executions",
            &key,
            r#"{"input": {"x": 1}}"#,
        )
        .await;
    assert_eq!(b.status, 200, "{}", b.json);
    assert_eq!(b.json["execution_id"], exec.as_str());
    // Same key, another input: 409, never a second run.
    let c = h
        .send(
            "POST",
            "/v1/steps/adhoc-report/executions",
            &key,
            r#"{"input": {"x": 2}}"#,
        )
        .await;
    assert_eq!((c.status, error_code(&c)), (409, "conflict"), "{}", c.json);
    assert_eq!(h.sandbox.executions().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn throttling_is_retried_for_idempotent_calls_only() {
    let h = Harness::start().await;
    let alice = format!("Bearer {}", h.token("alice"));
    let auth = [("authorization", alice.as_str())];
    let unnamed = || h.send("POST", "/v1/steps/adhoc-report/executions", &auth, "{}");
    // A start without a name gets one from stepgate before its decision record is written, so
    // it is idempotent too: the throttled attempt is retried and one execution lands, under the
    // name its durable decision record carries.
    h.sandbox.fail_next(400, "ThrottlingException");
    let before = h.sandbox.calls();
    let r = unnamed().await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(h.sandbox.calls() - before, 2);
    let runs = h.sandbox.executions();
    assert_eq!(runs.len(), 1);
    let decision = h.decision_of(&r).await;
    let name = decision["execution_name"].as_str().unwrap();
    assert!(name.starts_with("sg-") && name.len() == 35, "{name}");
    assert!(
        runs[0].arn.ends_with(&format!(":{name}")),
        "{}",
        runs[0].arn
    );
    assert_eq!(r.json["execution_id"], runs[0].arn.as_str());
    // A caller's error is not retried: one attempt, the error comes back.
    h.sandbox.fail_next(400, "InvalidExecutionInput");
    let before = h.sandbox.calls();
    let r = unnamed().await;
    assert_eq!(r.status, 502, "{}", r.json);
    assert_eq!(h.sandbox.calls() - before, 1);
    assert_eq!(h.sandbox.executions().len(), 1);
    // A named start is: two throttles, then it lands once.
    h.sandbox.fail_next(400, "ThrottlingException");
    h.sandbox.fail_next(503, "ServiceUnavailable");
    let r = h
        .authorized(
            "POST",
            "/v1/steps/adhoc-report/executions",
            &alice,
            r#"{"name": "retried"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(h.sandbox.executions().len(), 2);
    // Describe is retried too.
    h.sandbox.fail_next(500, "InternalFailure");
    let r = h
        .authorized(
            "GET",
            "/v1/steps/adhoc-report/executions/retried",
            &alice,
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    h.stop().await;
}

#[tokio::test]
async fn listing_a_steps_executions_is_its_own_permission() {
    let h = Harness::start().await;
    let alice = format!("Bearer {}", h.token("alice"));
    for n in ["l-1", "l-2"] {
        let r = h
            .start_as("alice", "adhoc-report", &format!(r#"{{"name": "{n}"}}"#))
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    let stop = h
        .authorized(
            "POST",
            "/v1/steps/adhoc-report/executions/l-1/stop",
            &alice,
            "",
        )
        .await;
    assert_eq!(stop.status, 200);
    let r = h
        .authorized("GET", "/v1/steps/adhoc-report/executions", &alice, "")
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["executions"].as_array().unwrap().len(), 2);
    let r = h
        .authorized(
            "GET",
            "/v1/steps/adhoc-report/executions?status=ABORTED&max_results=10",
            &alice,
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let listed = r.json["executions"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "l-1");
    // Viewers may list; the CI identity may only start nightly-load.
    let viewer = format!("Bearer {}", h.token("victor"));
    assert_eq!(
        h.authorized("GET", "/v1/steps/adhoc-report/executions", &viewer, "")
            .await
            .status,
        200
    );
    let ci = format!("Bearer {}", h.token("ci"));
    assert_eq!(
        h.authorized("GET", "/v1/steps/adhoc-report/executions", &ci, "")
            .await
            .status,
        403
    );
    let r = h
        .authorized(
            "GET",
            "/v1/steps/adhoc-report/executions?status=NOPE",
            &alice,
            "",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.json);
    h.stop().await;
}

#[tokio::test]
async fn a_sync_step_answers_with_the_finished_execution() {
    let h = Harness::start().await;
    let r = h
        .start_as("alice", "quick-check", r#"{"input": {"x": 1}}"#)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["status"], "SUCCEEDED");
    assert_eq!(r.json["output"], r#"{"x":1}"#);
    assert!(
        r.json["execution_id"]
            .as_str()
            .unwrap()
            .contains(":express:quick-check:")
    );
    h.stop().await;
}
