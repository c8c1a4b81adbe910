//! Differential test: for random callers, steps, actions and contexts, stepgate's decision
//! equals the decision of cedar-policy's own `Authorizer` over the whole policy set, with
//! entities written independently as Cedar JSON. Guards the entity-building code and the
//! per-step policy index.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityUid, PolicyId, PolicySet, Request,
};
use rand::{Rng, SeedableRng};
use serde_json::json;
use stepgate::authn::Identity;
use stepgate::authz::RequestFacts;
use stepgate::model::Action;

use crate::support::Harness;

fn uid(t: &str, id: &str) -> EntityUid {
    EntityUid::from_json(json!({"type": t, "id": id})).unwrap()
}

/// Every policy of the folder in one set, ids as stepgate gives them (`@id`, else `<file>:<n>`),
/// parsed here independently of stepgate's loader and index.
fn whole_set(dir: &std::path::Path) -> PolicySet {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    let mut set = PolicySet::new();
    for f in files {
        let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
        let parsed: PolicySet = std::fs::read_to_string(&f).unwrap().parse().unwrap();
        for (n, p) in parsed.policies().enumerate() {
            let id = p
                .annotation("id")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{stem}:{n}"));
            set.add(p.new_id(PolicyId::new(id))).unwrap();
        }
    }
    set
}

#[tokio::test]
async fn stepgate_decides_as_cedar_does() {
    let h = Harness::start().await;
    let whole = whole_set(&h.app.settings.policies_dir);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let groups = ["data-eng", "viewers", "analysts", "data-eng-leads", "other"];
    let repos = ["acme/etl", "acme/web", "mallory/etl"];
    let refs = ["refs/heads/main", "refs/heads/feature"];
    let steps = [
        ("nightly-load", "nightly-etl", Some(("prod", "data-eng"))),
        ("adhoc-report", "reporting", Some(("dev", ""))),
    ];
    let actions = [Action::Start, Action::Stop, Action::Describe, Action::List];
    let (mut allows, mut denies) = (0, 0);
    for case in 0..2000 {
        let g: Vec<String> = groups
            .iter()
            .filter(|_| rng.gen_bool(0.3))
            .map(|s| s.to_string())
            .collect();
        let mut tags = BTreeMap::new();
        if rng.gen_bool(0.5) {
            tags.insert(
                "repository".to_string(),
                repos[rng.gen_range(0..repos.len())].to_string(),
            );
        }
        if rng.gen_bool(0.5) {
            tags.insert(
                "ref".to_string(),
                refs[rng.gen_range(0..refs.len())].to_string(),
            );
        }
        let email = rng.gen_bool(0.5).then(|| "u@example.com".to_string());
        let now_secs = 1_795_000_000 + rng.gen_range(0..7 * 86_400u64);
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        let age = rng.gen_range(0..3600u64);
        let identity = std::sync::Arc::new(Identity {
            issuer: ["dev", "corp"][rng.gen_range(0..2)].into(),
            sub: format!("user-{}", rng.gen_range(0..5)),
            email: email.clone(),
            groups: g.clone(),
            tags: tags.clone(),
            issued_at: Some(now - Duration::from_secs(age)),
            expires_at: now + Duration::from_secs(600),
            cedar: Default::default(),
        });
        let (step, pipeline, attrs) = steps[rng.gen_range(0..steps.len())];
        let action = actions[rng.gen_range(0..actions.len())];
        let mut input = serde_json::Map::new();
        if rng.gen_bool(0.5) {
            input.insert("full_refresh".into(), json!(rng.gen_bool(0.5)));
        }
        if rng.gen_bool(0.5) {
            input.insert("date".into(), json!("2026-11-24"));
        }
        let ip = [[10, 1, 2, 3], [127, 0, 0, 1], [203, 0, 113, 9]][rng.gen_range(0..3)];
        let input = serde_json::Value::Object(input);
        let facts = RequestFacts {
            source_ip: ip.into(),
            now,
            input: Some(&input),
        };

        // stepgate's decision.
        let ours = h
            .app
            .policies
            .decide(&identity, step, action, &facts)
            .unwrap();
        let (our_decision, mut our_ids) = match ours {
            Ok(p) => (Decision::Allow, p.reasons().to_vec()),
            Err(d) => (Decision::Deny, d.reasons),
        };

        // Cedar's, from hand-written JSON entities and context over the whole set.
        let mut caller_attrs = json!({"issuer": identity.issuer, "sub": identity.sub});
        if let Some(e) = &email {
            caller_attrs["email"] = json!(e);
        }
        let mut tag_json = serde_json::Map::new();
        for (k, v) in &tags {
            tag_json.insert(k.clone(), json!(v));
        }
        if let Some(e) = &email {
            tag_json.insert("email".into(), json!(e));
        }
        let mut step_attrs = json!({"kind": "stepfunctions"});
        if let Some((env, owner)) = attrs {
            step_attrs["env"] = json!(env);
            if !owner.is_empty() {
                step_attrs["owner"] = json!(owner);
            }
        }
        if step == "adhoc-report" {
            step_attrs["data_classification"] = json!("restricted");
        }
        let principal_id = format!("{}/{}", identity.issuer, identity.sub);
        let ents = Entities::from_json_value(
            json!([
                {"uid": {"type": "Caller", "id": principal_id}, "attrs": caller_attrs,
                 "parents": g.iter().map(|x| json!({"type": "Group", "id": x})).collect::<Vec<_>>(),
                 "tags": tag_json},
                {"uid": {"type": "Step", "id": step}, "attrs": step_attrs,
                 "parents": [{"type": "Pipeline", "id": pipeline}]}
            ]),
            None,
        )
        .unwrap();
        let when = time::OffsetDateTime::from_unix_timestamp(now_secs as i64).unwrap();
        let ctx = Context::from_json_value(
            json!({
                "source_ip": {"__extn": {"fn": "ip", "arg": std::net::IpAddr::from(ip).to_string()}},
                "now": now_secs,
                "hour_utc": when.hour(),
                "weekday_utc": when.weekday().number_from_monday(),
                "token_age_seconds": age,
                "input": input,
            }),
            None,
        )
        .unwrap();
        let req = Request::new(
            uid("Caller", &principal_id),
            uid("Action", action.as_str()),
            uid("Step", step),
            ctx,
            None,
        )
        .unwrap();
        let theirs = Authorizer::new().is_authorized(&req, &whole, &ents);
        let mut their_ids: Vec<String> = theirs
            .diagnostics()
            .reason()
            .map(|p| p.to_string())
            .collect();
        our_ids.sort();
        their_ids.sort();
        assert_eq!(
            our_decision,
            theirs.decision(),
            "case {case}: {identity:?} {action:?} on {step}"
        );
        assert_eq!(our_ids, their_ids, "case {case}: deciding policies differ");
        if our_decision == Decision::Allow {
            allows += 1
        } else {
            denies += 1
        }
        let _ = SystemTime::now();
    }
    assert!(
        allows > 200 && denies > 200,
        "the cases exercise both outcomes: {allows} allows, {denies} denies"
    );
    h.stop().await;
}
