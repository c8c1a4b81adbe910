//! SigV4 signing of a Step Functions `StartExecution` request (the ~200-byte input of the load
//! benchmark): canonical request, string to sign, HMAC chain, headers applied.
//! Run: `cargo bench --bench sigv4`.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "benchmark program"
)]

use std::time::SystemTime;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};

use stepgate::forward::sigv4::sign_request;

fn request() -> http::Request<Bytes> {
    let body = serde_json::json!({
        "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:nightly-load",
        "input": r#"{"date":"2026-11-24","dataset":"warehouse.sales_daily","full_refresh":false,"output_dataset":"warehouse.nightly","partitions":["2026-11-23","2026-11-24"],"priority":5,"region":"eu-west-1","requested_by":"load-benchmark"}"#,
    });
    http::Request::post("https://states.us-east-1.amazonaws.com/")
        .header(http::header::HOST, "states.us-east-1.amazonaws.com")
        .header(http::header::CONTENT_TYPE, "application/x-amz-json-1.0")
        .header("x-amz-target", "AWSStepFunctions.StartExecution")
        .body(Bytes::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn benches(c: &mut Criterion) {
    let creds = aws_credential_types::Credentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        Some("session-token".into()),
        None,
        "bench",
    );
    let template = request();
    c.bench_function("sigv4/start_execution", |b| {
        b.iter_batched(
            || template.clone(),
            |mut req| {
                sign_request(&mut req, &creds, "us-east-1", "states", SystemTime::now()).unwrap();
                req
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(sigv4, benches);
criterion_main!(sigv4);
