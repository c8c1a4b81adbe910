//! Decisions that share a per-second context (and a kept decision) must still see their own
//! address, token age, input and policy generation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::input_use::InputUse;
use super::*;
use crate::model::Action;

/// One Step Functions step, read by the real configuration parser.
const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8443"
[policies]
dir = "policies"
[audit]
path = "audit/log.jsonl"
[[issuers]]
name = "corp"
issuer = "https://login.example.com"
audiences = ["stepgate"]
[credentials.c]
kind = "aws_static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "secret"
[steps.load]
pipeline = "etl"
kind = "stepfunctions"
state_machine_arn = "arn:aws:states:us-east-1:123456789012:stateMachine:load"
credentials = "c"
"#;

fn policies(text: &str) -> Policies {
    Policies::new(bundle(text))
}

fn bundle(text: &str) -> PolicyBundle {
    let schema = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/schema.cedarschema"
    ))
    .unwrap();
    let src = policies::PolicySources {
        policies: vec![(PathBuf::from("p.cedar"), text.to_string())],
        schema: (PathBuf::from("schema.cedarschema"), schema),
    };
    let settings = crate::config::parse(CONFIG, Path::new("/etc/stepgate/stepgate.toml")).unwrap();
    policies::build(&src, &settings.steps).unwrap()
}

fn caller(issued_secs_ago: u64, now: std::time::SystemTime) -> Arc<Identity> {
    Arc::new(Identity {
        issuer: "corp".into(),
        sub: "alice".into(),
        email: None,
        groups: vec!["data-eng".into()],
        tags: BTreeMap::new(),
        issued_at: Some(now - Duration::from_secs(issued_secs_ago)),
        expires_at: now + Duration::from_secs(3600),
        cedar: Default::default(),
    })
}

fn allowed(p: &Policies, id: &Arc<Identity>, ip: [u8; 4], now: std::time::SystemTime) -> bool {
    let facts = RequestFacts {
        source_ip: ip.into(),
        now,
        input: None,
    };
    p.decide(id, "load", Action::Start, &facts).unwrap().is_ok()
}

#[test]
fn requests_of_one_second_keep_their_own_address_and_token_age() {
    let p = policies(
        r#"@id("office-fresh") permit (principal, action == Action::"start", resource)
        when { context.source_ip.isInRange(ip("10.0.0.0/8")) && context.token_age_seconds < 60 };"#,
    );
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let fresh = caller(5, now);
    let stale = caller(600, now);
    // Same second: the first decision's context must not answer for the others.
    assert!(allowed(&p, &fresh, [10, 1, 2, 3], now));
    assert!(!allowed(&p, &fresh, [192, 0, 2, 1], now));
    assert!(!allowed(&p, &stale, [10, 1, 2, 3], now));
    assert!(allowed(&p, &fresh, [10, 1, 2, 3], now));
    // The next second has its own `now`.
    let later = now + Duration::from_secs(120);
    assert!(!allowed(&p, &fresh, [10, 1, 2, 3], later));
}

#[test]
fn policies_that_read_input_see_it() {
    let p = policies(
        r#"@id("no-full") permit (principal, action == Action::"start", resource)
        when { !(context has input && context.input has full_refresh && context.input.full_refresh) };"#,
    );
    assert_eq!(
        p.current().input_use,
        InputUse::Attributes(["full_refresh".to_string()].into())
    );
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let id = caller(5, now);
    let full = serde_json::json!({"full_refresh": true});
    let facts = RequestFacts {
        source_ip: [10, 0, 0, 1].into(),
        now,
        input: Some(&full),
    };
    assert!(
        p.decide(&id, "load", Action::Start, &facts)
            .unwrap()
            .is_err()
    );
    assert!(allowed(&p, &id, [10, 0, 0, 1], now));
    // The decision without input is kept for this second: it must not answer for the input.
    assert!(
        p.decide(&id, "load", Action::Start, &facts)
            .unwrap()
            .is_err()
    );
    let without = policies(r#"@id("all") permit (principal, action, resource);"#);
    assert_eq!(without.current().input_use, InputUse::Unread);
}

#[test]
fn decisions_on_part_of_the_input_match_the_whole() {
    // A forbid on one attribute, beside others no policy names; and a policy that reads the
    // record whole (nothing left out then).
    let part = policies(
        r#"@id("all") permit (principal, action, resource);
        @id("no-full") forbid (principal, action == Action::"start", resource)
        when { context has input && context.input has full_refresh && context.input.full_refresh };"#,
    );
    let whole = policies(
        r#"@id("dated") permit (principal, action == Action::"start", resource)
        when { context has input && ![context.input].isEmpty() &&
            context.input has date && context.input.date == "2026-11-24" };"#,
    );
    assert_eq!(whole.current().input_use, InputUse::Whole);
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let id = caller(5, now);
    let decide = |p: &Policies, input: &serde_json::Value| {
        let facts = RequestFacts {
            source_ip: [10, 0, 0, 1].into(),
            now,
            input: Some(input),
        };
        p.decide(&id, "load", Action::Start, &facts)
            .unwrap()
            .is_ok()
    };
    let full =
        serde_json::json!({"date": "2026-11-24", "full_refresh": true, "partitions": ["a", "b"]});
    let not_full =
        serde_json::json!({"date": "2026-11-24", "full_refresh": false, "partitions": ["a"]});
    let unnamed = serde_json::json!({"date": "2026-11-24"});
    assert!(!decide(&part, &full));
    assert!(decide(&part, &not_full));
    assert!(decide(&part, &unnamed));
    assert!(decide(&whole, &not_full));
    assert!(!decide(&whole, &serde_json::json!({"date": "2026-11-25"})));
}

#[test]
fn reasons_name_policies_by_the_id_as_written() {
    let p = policies(
        r#"@id("ops \"night\" café") permit (principal, action == Action::"start", resource);
        @id("no\tstop") forbid (principal, action == Action::"stop", resource);"#,
    );
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let id = caller(5, now);
    let facts = RequestFacts {
        source_ip: [10, 0, 0, 1].into(),
        now,
        input: None,
    };
    let permit = p
        .decide(&id, "load", Action::Start, &facts)
        .unwrap()
        .unwrap();
    assert_eq!(permit.reasons(), ["ops \"night\" café"]);
    let denied = p
        .decide(&id, "load", Action::Stop, &facts)
        .unwrap()
        .unwrap_err();
    assert_eq!(denied.reasons, ["no\tstop"]);
}

#[test]
fn a_decision_kept_for_a_second_ends_with_a_reload() {
    let p = policies(r#"@id("start") permit (principal, action == Action::"start", resource);"#);
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let id = caller(5, now);
    assert!(allowed(&p, &id, [10, 0, 0, 1], now));
    // A reload in the same second decides again, for the same token, address and action.
    p.replace(bundle(
        r#"@id("stop-only") permit (principal, action == Action::"stop", resource);"#,
    ));
    assert!(!allowed(&p, &id, [10, 0, 0, 1], now));
    let stop = RequestFacts {
        source_ip: [10, 0, 0, 1].into(),
        now,
        input: None,
    };
    let permit = p.decide(&id, "load", Action::Stop, &stop).unwrap().unwrap();
    assert_eq!(permit.reasons(), ["stop-only"]);
}
