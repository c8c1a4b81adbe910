//! Every refusal of the request pipeline end to end, one status code of DESIGN.md §4 after
//! another (401, 400, 404/405, 413, 429, 502/504, 503).

use crate::support::{Harness, error_code};

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
            .authorized("POST", "/v1/steps/nightly-load/executions", &auth, "{}")
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
        .authorized("POST", "/v1/steps/nightly-load/executions", &auth, "{}")
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json["error"]["message"], "signature does not verify");

    // Garbage and tampered tokens.
    let mut tampered = h.token("victor");
    tampered.replace_range(tampered.len() - 5.., "AAAAA");
    for bad in ["not-a-jwt".to_string(), tampered] {
        let auth = format!("Bearer {bad}");
        let r = h
            .authorized("POST", "/v1/steps/nightly-load/executions", &auth, "{}")
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
    let r = h.authorized("GET", "/v1/nothing", &alice, "").await;
    assert_eq!((r.status, error_code(&r)), (404, "not_found"));
    let r = h.authorized("DELETE", "/v1/steps", &alice, "").await;
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
        .authorized("POST", "/v1/steps/nightly-load/executions", &ci, body)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(h.sandbox.executions().len(), 3);
    assert!(h.audit_records().await.iter().any(|r| r["status"] == 429));
    h.stop().await;
}
