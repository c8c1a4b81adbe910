//! The request pipeline end to end: allow and deny paths and every status code of DESIGN.md §4.

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
    let r = h
        .send("GET", "/v1/steps", &[("authorization", &auth)], "")
        .await;
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
        .send(
            "GET",
            "/v1/steps/nightly-load/executions/run-1",
            &[("authorization", &viewer)],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "RUNNING");
    assert_eq!(r.json["execution_id"], exec.as_str());

    // An execution ARN of another state machine is refused before anything is sent.
    let other = "arn:aws:states:us-east-1:123456789012:execution:adhoc-report:run-1";
    let r = h
        .send(
            "GET",
            &format!("/v1/steps/nightly-load/executions/{other}"),
            &[("authorization", &viewer)],
            "",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.json);

    // Viewers may not stop; data engineers may.
    let r = h
        .send(
            "POST",
            "/v1/steps/nightly-load/executions/run-1/stop",
            &[("authorization", &viewer)],
            "",
        )
        .await;
    assert_eq!(r.status, 403);
    let alice = format!("Bearer {}", h.token("alice"));
    let r = h
        .send(
            "POST",
            "/v1/steps/nightly-load/executions/run-1/stop",
            &[("authorization", &alice)],
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
async fn authentication_failures_are_401_with_a_useful_description() {
    let h = Harness::start().await;
    // No token.
    let r = h
        .send("POST", "/v1/steps/nightly-load/executions", &[], "{}")
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(error_code(&r), "unauthenticated");
    let www = r.headers["www-authenticate"].to_str().unwrap();
    assert!(www.starts_with("Bearer error=\"invalid_token\""), "{www}");

    let cases = [
        (
            serde_json::json!({"sub": "alice", "groups": ["data-eng"], "exp": 1_000_000_000u64, "iat": 999_999_000u64}),
            "token expired",
        ),
        (
            serde_json::json!({"sub": "alice", "groups": ["data-eng"], "aud": "someone-else"}),
            "audience not accepted",
        ),
        (
            serde_json::json!({"sub": "alice", "groups": ["data-eng"], "iss": "https://evil.example"}),
            "issuer not trusted",
        ),
        (
            serde_json::json!({"sub": "alice", "groups": ["data-eng"], "nbf": 4_000_000_000u64}),
            "token not yet valid",
        ),
    ];
    for (claims, why) in cases {
        let t = h
            .issuer
            .mint(claims, std::time::Duration::from_secs(300))
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
        assert_eq!(r.status, 401, "{why}: {}", r.json);
        assert_eq!(r.json["error"]["message"], why);
        assert!(
            r.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains(why)
        );
    }

    // A forged signature: same claims, signed by a key the issuer never published.
    let forger = stepgate::dev::issuer::DevKey::generate("dev-es256-1").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged = forger
        .sign(
            &serde_json::json!({"iss": h.issuer.url, "aud": "stepgate", "sub": "alice",
            "groups": ["data-eng"], "iat": now, "exp": now + 300}),
        )
        .unwrap();
    let auth = format!("Bearer {forged}");
    let r = h
        .send(
            "POST",
            "/v1/steps/nightly-load/executions",
            &[("authorization", &auth)],
            "{}",
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json["error"]["message"], "signature does not verify");

    // Garbage and tampered tokens.
    let mut tampered = h.token("victor");
    tampered.replace_range(tampered.len() - 5.., "AAAAA");
    for bad in ["not-a-jwt".to_string(), tampered] {
        let auth = format!("Bearer {bad}");
        let r = h
            .send(
                "POST",
                "/v1/steps/nightly-load/executions",
                &[("authorization", &auth)],
                "{}",
            )
            .await;
        assert_eq!(r.status, 401, "{}", r.json);
    }

    assert!(h.sandbox.executions().is_empty());
    let recs = h.audit_records().await;
    assert!(recs.len() >= 8);
    assert!(
        recs.iter()
            .all(|r| r["decision"] == "deny" && r["status"] == 401)
    );
    assert!(
        recs.iter()
            .any(|r| r["reasons"][0] == "unauthenticated: token expired")
    );
    // Tokens never reach the log.
    let raw = std::fs::read_to_string(&h.audit_path).unwrap();
    assert!(!raw.contains("eyJ"), "a token leaked into the audit log");
    h.stop().await;
}

#[tokio::test]
async fn input_errors_are_400_and_nothing_is_sent() {
    let h = Harness::start().await;
    for body in [
        "not json",
        r#"{"input": [1, 2]}"#,
        r#"{"inptu": {}}"#,
        r#"{"name": "bad name!"}"#,
    ] {
        let r = h.start_as("alice", "nightly-load", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.json);
        assert_eq!(error_code(&r), "invalid_input");
    }
    assert!(h.sandbox.executions().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn unknown_steps_paths_and_methods() {
    let h = Harness::start().await;
    let r = h.start_as("alice", "no-such-step", "{}").await;
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "unknown_step");
    // Unknown steps are only revealed after authentication.
    let r = h
        .send("POST", "/v1/steps/no-such-step/executions", &[], "{}")
        .await;
    assert_eq!(r.status, 401);
    let alice = format!("Bearer {}", h.token("alice"));
    let r = h
        .send("GET", "/v1/nothing", &[("authorization", &alice)], "")
        .await;
    assert_eq!((r.status, error_code(&r)), (404, "not_found"));
    let r = h
        .send("DELETE", "/v1/steps", &[("authorization", &alice)], "")
        .await;
    assert_eq!((r.status, error_code(&r)), (405, "method_not_allowed"));
    h.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let h =
        Harness::start_with(|c| c.replace("[server]\n", "[server]\nmax_body_bytes = 1024\n")).await;
    let big = format!(r#"{{"input": {{"blob": "{}"}}}}"#, "x".repeat(4096));
    let r = h.start_as("alice", "nightly-load", &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(error_code(&r), "body_too_large");
    assert!(h.sandbox.executions().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn upstream_failures_are_502_and_504_with_the_upstream_message() {
    // A listener that accepts and never answers, and a port nothing listens on.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let h = Harness::start_with(|c| {
        let mut parts = c.splitn(2, "[steps.adhoc-report]");
        let head = parts.next().unwrap().to_string();
        let tail = parts.next().unwrap().to_string();
        let head = head.replace("[server]\n", "[server]\nupstream_timeout = \"1s\"\n");
        let re = |s: String, url: &str| {
            let start = s.find("endpoint = \"").unwrap();
            let end = s[start..].find('\n').unwrap() + start;
            format!("{}endpoint = \"{url}\"{}", &s[..start], &s[end..])
        };
        format!(
            "{}[steps.adhoc-report]{}",
            re(head, &silent_url),
            re(tail, &closed)
        )
    })
    .await;
    let r = h.start_as("alice", "nightly-load", "{}").await;
    assert_eq!(
        (r.status, error_code(&r)),
        (504, "upstream_timeout"),
        "{}",
        r.json
    );
    let r = h.start_as("alice", "adhoc-report", "{}").await;
    assert_eq!(
        (r.status, error_code(&r)),
        (502, "upstream_error"),
        "{}",
        r.json
    );
    // Both were allowed and audited before the attempt, then their outcome recorded.
    let recs = h.audit_records().await;
    let events: Vec<_> = recs
        .iter()
        .map(|r| (r["event"].as_str().unwrap(), r["status"].as_u64()))
        .collect();
    assert_eq!(
        events,
        [
            ("decision", None),
            ("outcome", Some(504)),
            ("decision", None),
            ("outcome", Some(502))
        ]
    );
    h.stop().await;
}

#[tokio::test]
async fn upstream_error_messages_are_kept() {
    let h = Harness::start().await;
    h.sandbox.fail_next(400, "InvalidExecutionInput");
    let r = h
        .start_as("alice", "adhoc-report", r#"{"input": {"a": 1}}"#)
        .await;
    assert_eq!(
        (r.status, error_code(&r)),
        (502, "upstream_error"),
        "{}",
        r.json
    );
    let msg = r.json["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("InvalidExecutionInput") && msg.contains("injected failure"),
        "{msg}"
    );
    h.stop().await;
}

#[tokio::test]
async fn an_unwritable_audit_log_fails_closed_with_503() {
    // /dev/full accepts the open and fails every write with ENOSPC.
    let h = Harness::start_with(|c| {
        let start = c.find("path = \"").unwrap();
        let end = c[start..].find('\n').unwrap() + start;
        format!("{}path = \"/dev/full\"{}", &c[..start], &c[end..])
    })
    .await;
    let r = h.start_as("alice", "nightly-load", "{}").await;
    assert_eq!(
        (r.status, error_code(&r)),
        (503, "unavailable"),
        "{}",
        r.json
    );
    assert!(
        h.sandbox.executions().is_empty(),
        "an unaudited trigger was forwarded"
    );
    let r = h.send("GET", "/readyz", &[], "").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json["audit"], false);
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
        .send(
            "GET",
            "/v1/steps/nightly-load/executions/x",
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert!(e.headers.contains_key("x-request-id"));
    assert_eq!(
        e.json["error"]["request_id"],
        e.headers["x-request-id"].to_str().unwrap()
    );
    h.stop().await;
}

#[tokio::test]
async fn schema_and_pinned_parameters_guard_the_input() {
    let h = Harness::start().await;
    // Each failure listed, nothing forwarded.
    let r = h
        .start_as(
            "alice",
            "nightly-load",
            r#"{"input": {"date": "yesterday", "rows": 5}}"#,
        )
        .await;
    assert_eq!(
        (r.status, error_code(&r)),
        (400, "invalid_input"),
        "{}",
        r.json
    );
    let msg = r.json["error"]["message"].as_str().unwrap();
    assert!(msg.contains("/date") && msg.contains("rows"), "{msg}");
    // A pinned parameter cannot be overridden...
    let r = h
        .start_as(
            "alice",
            "nightly-load",
            r#"{"input": {"output_dataset": "attacker.exfil"}}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.json);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`output_dataset` is pinned")
    );
    // ...restating its value is harmless.
    let r = h
        .start_as(
            "alice",
            "nightly-load",
            r#"{"input": {"output_dataset": "warehouse.nightly"}}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(h.sandbox.executions().len(), 1);
    // Refusals are audited with their reason.
    let recs = h.audit_records().await;
    assert!(
        recs.iter()
            .any(|r| r["status"] == 400 && r["reasons"][0].as_str().unwrap().contains("pinned"))
    );
    h.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_per_caller() {
    let h = Harness::start_with(|c| {
        c.replace(
            "rate_limit = { per_minute = 60, burst = 20 }",
            "rate_limit = { per_minute = 1, burst = 2 }",
        )
    })
    .await;
    let body = r#"{"input": {"date": "2026-11-24"}}"#;
    assert_eq!(h.start_as("alice", "nightly-load", body).await.status, 201);
    assert_eq!(h.start_as("alice", "nightly-load", body).await.status, 201);
    let r = h.start_as("alice", "nightly-load", body).await;
    assert_eq!(
        (r.status, error_code(&r)),
        (429, "rate_limited"),
        "{}",
        r.json
    );
    let after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&after), "{after}");
    // Another caller has its own bucket.
    let ci = format!("Bearer {}", h.token("ci"));
    let r = h
        .send(
            "POST",
            "/v1/steps/nightly-load/executions",
            &[("authorization", &ci)],
            body,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(h.sandbox.executions().len(), 3);
    assert!(h.audit_records().await.iter().any(|r| r["status"] == 429));
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
        .send(
            "POST",
            &format!(
                "/v1/steps/adhoc-report/executions/{}/stop",
                exec.rsplit(':').next().unwrap()
            ),
            &[("authorization", &alice)],
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
        .send(
            "POST",
            "/v1/steps/adhoc-report/executions",
            &[("authorization", &alice)],
            r#"{"name": "retried"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(h.sandbox.executions().len(), 2);
    // Describe is retried too.
    h.sandbox.fail_next(500, "InternalFailure");
    let r = h
        .send(
            "GET",
            "/v1/steps/adhoc-report/executions/retried",
            &[("authorization", &alice)],
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
        .send(
            "POST",
            "/v1/steps/adhoc-report/executions/l-1/stop",
            &[("authorization", &alice)],
            "",
        )
        .await;
    assert_eq!(stop.status, 200);
    let r = h
        .send(
            "GET",
            "/v1/steps/adhoc-report/executions",
            &[("authorization", &alice)],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["executions"].as_array().unwrap().len(), 2);
    let r = h
        .send(
            "GET",
            "/v1/steps/adhoc-report/executions?status=ABORTED&max_results=10",
            &[("authorization", &alice)],
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
        h.send(
            "GET",
            "/v1/steps/adhoc-report/executions",
            &[("authorization", &viewer)],
            ""
        )
        .await
        .status,
        200
    );
    let ci = format!("Bearer {}", h.token("ci"));
    assert_eq!(
        h.send(
            "GET",
            "/v1/steps/adhoc-report/executions",
            &[("authorization", &ci)],
            ""
        )
        .await
        .status,
        403
    );
    let r = h
        .send(
            "GET",
            "/v1/steps/adhoc-report/executions?status=NOPE",
            &[("authorization", &alice)],
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
