//! Input validation of a start, as the request path does it: parse the body, apply the step's
//! pinned fields, check the input against the step's JSON Schema, serialize the input that is
//! forwarded. The body is the ~200-byte start of the load benchmark.
//! Run: `cargo bench --bench validate`.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "benchmark program"
)]

use std::collections::BTreeMap;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use stepgate::config::{StateMachineArn, StepKind, StepSettings, StepTarget};
use stepgate::validate::{Guardrails, apply_pinned, parse_start_body};

const BODY: &[u8] = include_bytes!("data/start-body.json");

const SCHEMA: &str = include_str!("data/nightly-load.schema.json");

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("nightly-load.json");
    std::fs::write(&schema, SCHEMA).unwrap();
    let step = StepSettings {
        name: "nightly-load".into(),
        pipeline: "nightly-etl".into(),
        kind: StepKind::StepFunctions,
        target: StepTarget::StepFunctions {
            arn: StateMachineArn::parse(
                "arn:aws:states:us-east-1:123456789012:stateMachine:nightly-load",
            )
            .unwrap(),
            endpoint: "https://states.us-east-1.amazonaws.com".parse().unwrap(),
            sync_endpoint: "https://sync-states.us-east-1.amazonaws.com"
                .parse()
                .unwrap(),
            sync: false,
        },
        credentials: "c".into(),
        attributes: BTreeMap::new(),
        input_schema: Some(schema),
        pinned: serde_json::json!({"output_dataset": "warehouse.nightly"})
            .as_object()
            .cloned()
            .unwrap(),
        rate_limit: None,
        audit_input_fields: Vec::new(),
    };
    let steps = BTreeMap::from([(step.name.clone(), step.clone())]);
    let guardrails = Guardrails::load(&steps).unwrap();
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Bytes(BODY.len() as u64));
    group.bench_function("start_body", |b| {
        b.iter(|| {
            let body = apply_pinned(&step, parse_start_body(BODY).unwrap()).unwrap();
            let input = body.input.unwrap();
            assert!(guardrails.failures("nightly-load", &input).is_empty());
            serde_json::to_string(&input).unwrap()
        })
    });
    let bad: serde_json::Value =
        serde_json::json!({"date": "yesterday", "priority": 12, "colour": "red"});
    group.bench_function("schema_refusal", |b| {
        b.iter(|| assert_eq!(guardrails.failures("nightly-load", &bad).len(), 3))
    });
    group.finish();
}

criterion_group!(validate, benches);
criterion_main!(validate);
