//! Decision latency with 10, 1,000 and 10,000 policies over 1,000 steps (the path a request
//! takes: entities built from the identity, the policy index, Cedar's authorizer).
//! Run: `cargo bench --bench decision` (`decision/<policies>`; `load/<policies>` is the time to
//! parse, validate against the schema and index the set).

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "benchmark program"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use stepgate::authn::Identity;
use stepgate::authz::policies::{PolicySources, build};
use stepgate::authz::{Policies, RequestFacts};
use stepgate::config::{AttrValue, StateMachineArn, StepKind, StepSettings, StepTarget};
use stepgate::model::Action;

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

fn identity(k: usize) -> Identity {
    Identity {
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
        cedar: Default::default(),
    }
}

fn benches(c: &mut Criterion) {
    let schema = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/schema.cedarschema"
    ))
    .unwrap();
    let steps: BTreeMap<String, StepSettings> =
        (0..STEPS).map(|i| (format!("step-{i}"), step(i))).collect();
    // A mix of callers and steps, so no single cache line answers every request.
    let requests: Vec<(std::sync::Arc<Identity>, String)> = (0..1024usize)
        .map(|k| {
            (
                std::sync::Arc::new(identity(k)),
                format!("step-{}", (k * 7919) % STEPS),
            )
        })
        .collect();
    let input = serde_json::json!({"date": "2026-11-24"});
    let start = SystemTime::now();
    // No policy here reads `input`: a decision is kept for its second (by token, step, address,
    // token age and action). `decision` moves the clock one second per pass over the callers,
    // so each is evaluated; `decision-kept` keeps the second, so each after the first pass is
    // answered from the token's slot.
    let facts = |second: u64| RequestFacts {
        source_ip: [10, 0, 0, 1].into(),
        now: start + std::time::Duration::from_secs(second),
        input: Some(&input),
    };
    let mut load = c.benchmark_group("load");
    load.sample_size(10);
    for n in [10usize, 1_000, 10_000] {
        let src = PolicySources {
            policies: vec![(PathBuf::from("bench.cedar"), policies(n))],
            schema: (PathBuf::from("schema.cedarschema"), schema.clone()),
        };
        load.bench_with_input(BenchmarkId::from_parameter(n), &src, |b, src| {
            b.iter(|| build(src, &steps).unwrap())
        });
    }
    load.finish();
    for (name, passes_move_the_clock) in [("decision", true), ("decision-kept", false)] {
        let mut group = c.benchmark_group(name);
        for n in [10usize, 1_000, 10_000] {
            let src = PolicySources {
                policies: vec![(PathBuf::from("bench.cedar"), policies(n))],
                schema: (PathBuf::from("schema.cedarschema"), schema.clone()),
            };
            let p = Policies::new(build(&src, &steps).unwrap());
            let (mut k, mut second) = (0, 0);
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| {
                    k = (k + 1) % requests.len();
                    if k == 0 && passes_move_the_clock {
                        second += 1;
                    }
                    let (identity, step) = requests.get(k).unwrap();
                    p.decide(identity, step, Action::Start, &facts(second))
                        .unwrap()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(decision, benches);
criterion_main!(decision);
