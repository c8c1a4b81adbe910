//! Decision latency with 10, 1,000 and 10,000 policies over 1,000 steps (the path a request
//! takes: entities built from the identity, the policy index, Cedar's authorizer).
//! Run: `cargo bench --bench decision`.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    reason = "benchmark program"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use stepgate::authn::Identity;
use stepgate::authz::policies::{PolicySources, build};
use stepgate::authz::{Policies, RequestFacts};
use stepgate::config::{AttrValue, StateMachineArn, StepKind, StepSettings, StepTarget};
use stepgate::route::Action;

const STEPS: usize = 1000;

fn step(i: usize) -> StepSettings {
    let name = format!("step-{i}");
    StepSettings {
        name: name.clone(),
        pipeline: format!("pipeline-{}", i % 50),
        kind: StepKind::StepFunctions,
        target: StepTarget::StepFunctions {
            arn: StateMachineArn::parse(&format!(
                "arn:aws:states:us-east-1:123456789012:stateMachine:{name}"
            ))
            .unwrap(),
            endpoint: "https://states.us-east-1.amazonaws.com".parse().unwrap(),
            sync_endpoint: "https://sync-states.us-east-1.amazonaws.com"
                .parse()
                .unwrap(),
            sync: false,
        },
        credentials: "c".into(),
        attributes: BTreeMap::from([(
            "env".to_string(),
            AttrValue::String(if i.is_multiple_of(2) { "prod" } else { "dev" }.into()),
        )]),
        input_schema: None,
        pinned: Default::default(),
        rate_limit: None,
        audit_input_fields: Vec::new(),
    }
}

/// `n` policies of the shapes real sets have: per step, per pipeline, and a few global ones.
fn policies(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let text = match i % 10 {
            0 => format!(
                "@id(\"p{i}\") permit (principal in Group::\"g{}\", action in [Action::\"start\", Action::\"stop\"], resource in Pipeline::\"pipeline-{}\");\n",
                i % 97,
                i % 50
            ),
            1 => format!(
                "@id(\"p{i}\") forbid (principal, action == Action::\"start\", resource == Step::\"step-{}\") when {{ context.hour_utc < 2 && principal.hasTag(\"ref\") && principal.getTag(\"ref\") != \"refs/heads/main\" }};\n",
                i % STEPS
            ),
            _ => format!(
                "@id(\"p{i}\") permit (principal, action == Action::\"start\", resource == Step::\"step-{}\") when {{ principal.hasTag(\"repository\") && principal.getTag(\"repository\") == \"acme/r{}\" }};\n",
                i % STEPS,
                i % 13
            ),
        };
        out.push_str(&text);
    }
    out
}

fn main() {
    let schema = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/schema.cedarschema"
    ))
    .unwrap();
    let steps: BTreeMap<String, StepSettings> =
        (0..STEPS).map(|i| (format!("step-{i}"), step(i))).collect();
    println!(
        "decision latency over {STEPS} steps (entities + index + Cedar), 20,000 decisions per row"
    );
    println!(
        "{:>9} {:>9} {:>9} {:>9} {:>12}",
        "policies", "p50 µs", "p99 µs", "mean µs", "load ms"
    );
    for n in [10usize, 1_000, 10_000] {
        let src = PolicySources {
            policies: vec![(PathBuf::from("bench.cedar"), policies(n))],
            schema: (PathBuf::from("schema.cedarschema"), schema.clone()),
        };
        let t = Instant::now();
        let bundle = build(&src, &steps).unwrap();
        let load = t.elapsed();
        let p = Policies::new(bundle);
        let mut lat = Vec::with_capacity(20_000);
        let mut allowed = 0;
        for k in 0..20_000usize {
            let identity = Identity {
                issuer: "github".into(),
                sub: format!("repo:acme/r{}:ref:refs/heads/main", k % 13),
                email: None,
                groups: vec![format!("g{}", k % 97)],
                tags: BTreeMap::from([
                    ("repository".to_string(), format!("acme/r{}", k % 13)),
                    ("ref".to_string(), "refs/heads/main".to_string()),
                ]),
                issued_at: Some(SystemTime::now()),
                expires_at: SystemTime::now() + Duration::from_secs(300),
            };
            let facts = RequestFacts {
                source_ip: [10, 0, 0, 1].into(),
                now: SystemTime::now(),
                input: Some(serde_json::json!({"date": "2026-11-24"})),
            };
            let step = format!("step-{}", (k * 7919) % STEPS);
            let t = Instant::now();
            let d = p.decide(&identity, &step, Action::Start, &facts).unwrap();
            lat.push(t.elapsed());
            allowed += usize::from(d.is_ok());
        }
        let mean = lat.iter().sum::<Duration>() / lat.len() as u32;
        lat.sort();
        let pct = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
        println!(
            "{:>9} {:>9.1} {:>9.1} {:>9.1} {:>12} (allowed {allowed})",
            n,
            pct(0.5).as_secs_f64() * 1e6,
            pct(0.99).as_secs_f64() * 1e6,
            mean.as_secs_f64() * 1e6,
            load.as_millis()
        );
    }
}
