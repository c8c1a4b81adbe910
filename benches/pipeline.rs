//! One Step Functions start through the whole pipeline, in process: `pipeline::handle` with the
//! harness's configuration (a bearer token from a cached issuer, the Cedar decision, validation,
//! the durable decision record, SigV4, the forward, the outcome record), no sockets. The issuer
//! and Step Functions are answered by an in-process `HttpClient`. Measures what the harness
//! cannot tell apart from the host's drift: a request's work in stepgate itself.
//!
//! - `pipeline/start/1`: one request at a time: its CPU plus the hand-off to the audit writer
//!   and back (each request waits for its own group commit).
//! - `pipeline/start/32`: 32 at once (the harness's connections): commits carry many records,
//!   as under load; criterion's throughput line is requests per second.
//!
//! The audit log goes to `/dev/shm` when there is one (so the disk's `fdatasync` is left out;
//! `STEPGATE_BENCH_AUDIT_DIR` puts it elsewhere, e.g. on the disk under test).
//! Run: `cargo bench --bench pipeline`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "benchmark program"
)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use http::Request;
use http_body_util::Full;
use serde_json::json;

use stepgate::app::{App, Deps};
use stepgate::clock::SystemClock;

const MACHINE: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:nightly-etl";

/// The issuer's JWKS, and Step Functions' `StartExecution` answer to a signed request.
fn peers(jwks: Bytes) -> support::Canned<impl Fn(&Request<Bytes>) -> Bytes + Send + Sync> {
    support::Canned(move |req: &Request<Bytes>| {
        if req.uri().path() == "/jwks" {
            return jwks.clone();
        }
        assert!(req.headers().contains_key(http::header::AUTHORIZATION));
        Bytes::from_static(
            br#"{"executionArn":"arn:aws:states:us-east-1:123456789012:execution:nightly-etl:x","startDate":1.7E9}"#,
        )
    })
}

fn config(dir: &std::path::Path, audit: &std::path::Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[policies]
dir = "{policies}"
[audit]
path = "{audit}"
[[issuers]]
name = "bench"
issuer = "{issuer}"
audiences = ["stepgate-bench"]
jwks_uri = "{issuer}/jwks"
groups_claim = "groups"
algorithms = ["ES256"]
[credentials.bench]
kind = "aws_static"
access_key_id = "AKIDBENCHEXAMPLE"
secret_access_key = "bench-secret-not-real"
region = "us-east-1"
[steps.nightly-etl]
pipeline = "nightly"
kind = "stepfunctions"
state_machine_arn = "{MACHINE}"
credentials = "bench"
endpoint = "https://states.bench.invalid"
"#,
        issuer = support::ISSUER,
        policies = dir.join("policies").display(),
        audit = audit.join("stepgate-audit.jsonl").display(),
    )
}

fn app(dir: &std::path::Path, audit: &std::path::Path, jwks: Bytes) -> Arc<App> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("schema.cedarschema"),
        "entity Group, Pipeline;
         entity Caller in [Group] { issuer: String, sub: String, email?: String } tags String;
         entity Step in [Pipeline] { kind: String, env?: String };
         action \"start\", \"stop\", \"describe\", \"list\" appliesTo {
           principal: [Caller], resource: [Step],
           context: { source_ip: ipaddr, now: Long, hour_utc: Long, weekday_utc: Long,
                      token_age_seconds: Long, input?: { date?: String } } };",
    )
    .unwrap();
    std::fs::write(
        policies.join("bench.cedar"),
        "@id(\"bench-operators-start\")
         permit (principal in Group::\"pipeline-operators\", action == Action::\"start\",
                 resource == Step::\"nightly-etl\");",
    )
    .unwrap();
    let path = dir.join("stepgate.toml");
    std::fs::write(&path, config(dir, audit)).unwrap();
    let settings = stepgate::config::load(&path).unwrap();
    let deps = Deps {
        http: Arc::new(peers(jwks)),
        clock: Arc::new(SystemClock),
        crypto: Arc::new(rustls::crypto::ring::default_provider()),
    };
    Arc::new(App::build(settings, deps).unwrap())
}

fn start(token: &str) -> Request<Full<Bytes>> {
    let body = json!({"stateMachineArn": MACHINE, "input": r#"{"date":"2026-12-03"}"#});
    Request::post("/aws/states")
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header("x-amz-target", "AWSStepFunctions.StartExecution")
        .header(http::header::CONTENT_TYPE, "application/x-amz-json-1.0")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn benches(c: &mut Criterion) {
    let rt = support::runtime();
    let dir = tempfile::tempdir().unwrap();
    let shm = PathBuf::from("/dev/shm");
    let audit_root = std::env::var_os("STEPGATE_BENCH_AUDIT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| if shm.is_dir() { shm } else { dir.path().into() });
    let audit = tempfile::tempdir_in(audit_root).unwrap();

    let key = stepgate::dev::issuer::DevKey::generate("bench-es256").unwrap();
    let jwks = Bytes::from(json!({"keys": [key.jwk()]}).to_string());
    let token = key
        .sign(&support::claims(
            "stepgate-bench",
            json!({"sub": "bench-user", "groups": ["pipeline-operators"]}),
        ))
        .unwrap();
    let app = rt.block_on(async { app(dir.path(), audit.path(), jwks) });
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let one = |app: &Arc<App>| {
        let app = Arc::clone(app);
        let req = start(&token);
        async move {
            let resp = stepgate::pipeline::handle(app, req, peer).await;
            assert_eq!(resp.status(), 200);
        }
    };
    // First request: keys fetched, token verified and cached, credentials loaded.
    rt.block_on(one(&app));

    let mut g = c.benchmark_group("pipeline/start");
    for at_once in [1, 32] {
        g.throughput(Throughput::Elements(at_once));
        g.bench_function(at_once.to_string(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        join_all((0..at_once).map(|_| one(&app))).await;
                    }
                    t.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
