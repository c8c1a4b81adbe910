//! Helper of the load benchmark (`benches/load.sh`), loopback only. One process that:
//! - serves a minimal Step Functions upstream (HTTP/1.1 + h2c, keep-alive) that answers every
//!   `POST` carrying `X-Amz-Target: AWSStepFunctions.StartExecution` like `StartExecution` does;
//! - runs two OIDC issuers (discovery + JWKS, ES256 keys made at start-up) that stepgate fetches;
//! - writes into `--dir`: `tokens.txt` (one valid token per line, 16 callers over both issuers),
//!   `body.json` (the ~200-byte start request), and two stepgate workspaces: `small/` (the
//!   sample policies, 4 steps, 10 policies) and `scale/` (1,000 steps, 10,000 policies),
//!   each with a `stepgate.toml` whose audit log is a real file (fdatasync per group commit).
//!
//! Then it prints `ready` and serves until killed.
//! Run: `cargo run --release --example loadkit -- --dir DIR --upstream-port P
//! --small-port A --scale-port B`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "benchmark helper program"
)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

/// The start request every load run sends (about 200 bytes).
const BODY: &str = include_str!("../benches/data/start-body.json");

/// The input schema of the benchmarked step.
const SCHEMA: &str = include_str!("../benches/data/nightly-load.schema.json");

const ACCOUNT: &str = "123456789012";
/// Generated steps at scale (plus the 4 named ones: 1,000 in all).
const STEPS_AT_SCALE: usize = 996;
/// Generated policies at scale (plus the 10 of the small set: 10,000 in all).
const POLICIES_AT_SCALE: usize = 9_990;

struct Args {
    dir: std::path::PathBuf,
    upstream_port: u16,
    small_port: u16,
    scale_port: u16,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let (mut dir, mut up, mut small, mut scale) = (None, 0, 0, 0);
    while let Some(a) = it.next() {
        let v = it.next().expect("flag value");
        match a.as_str() {
            "--dir" => dir = Some(v.into()),
            "--upstream-port" => up = v.parse().expect("port"),
            "--small-port" => small = v.parse().expect("port"),
            "--scale-port" => scale = v.parse().expect("port"),
            other => panic!("unknown flag {other}"),
        }
    }
    Args {
        dir: dir.expect("--dir"),
        upstream_port: up,
        small_port: small,
        scale_port: scale,
    }
}

fn main() {
    let a = args();
    // The upstream gets one runtime thread: it must answer fast, not compete for both cores.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(a));
}

async fn run(a: Args) {
    let clock: stepgate::clock::SharedClock = Arc::new(stepgate::clock::SystemClock);
    let corp = stepgate::dev::issuer::start(0, clock.clone())
        .await
        .unwrap();
    let ci = stepgate::dev::issuer::start(0, clock.clone())
        .await
        .unwrap();
    let upstream = start_upstream(a.upstream_port).await;

    std::fs::create_dir_all(&a.dir).unwrap();
    let ttl = Duration::from_secs(6 * 3600);
    let mut tokens = String::new();
    for i in 0..8 {
        let t = corp
            .mint(
                json!({"sub": format!("engineer-{i}"), "email": format!("engineer-{i}@example.com"),
                       "email_verified": true, "groups": ["data-eng", "staff"]}),
                ttl,
            )
            .unwrap();
        writeln!(tokens, "{t}").unwrap();
    }
    for i in 0..8 {
        let t = ci
            .mint(
                json!({"sub": format!("repo:acme/etl:ref:refs/heads/main:job-{i}"),
                       "repository": "acme/etl", "repository_owner": "acme",
                       "ref": "refs/heads/main", "environment": "prod", "actor": "octocat",
                       "workflow_ref": "acme/etl/.github/workflows/nightly.yml@refs/heads/main",
                       "event_name": "schedule"}),
                ttl,
            )
            .unwrap();
        writeln!(tokens, "{t}").unwrap();
    }
    std::fs::write(a.dir.join("tokens.txt"), tokens).unwrap();
    std::fs::write(a.dir.join("body.json"), BODY.trim_end()).unwrap();

    workspace(
        &a.dir.join("small"),
        a.small_port,
        &corp.url,
        &ci.url,
        &upstream,
        0,
        0,
    );
    workspace(
        &a.dir.join("scale"),
        a.scale_port,
        &corp.url,
        &ci.url,
        &upstream,
        STEPS_AT_SCALE,
        POLICIES_AT_SCALE,
    );
    println!("ready");
    std::future::pending::<()>().await;
}

/// Writes a stepgate workspace: config, policies (sample ones plus `extra_policies` generated
/// over `extra_steps` generated steps), schema and input schema.
fn workspace(
    dir: &Path,
    port: u16,
    corp: &str,
    ci: &str,
    upstream: &str,
    extra_steps: usize,
    extra_policies: usize,
) {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    std::fs::create_dir_all(dir.join("audit")).unwrap();
    for (name, text) in stepgate::dev::SAMPLE_POLICIES {
        std::fs::write(policies.join(name), text).unwrap();
    }
    // Three more everyday policies: the small set has 10 in all.
    let mut extra = String::from(
        r#"@id("staff-describe-anything")
permit (principal in Group::"staff", action in [Action::"describe", Action::"list"], resource);
@id("ci-lists-nightly")
permit (principal, action == Action::"list", resource in Pipeline::"nightly-etl")
when { principal.hasTag("repository_owner") && principal.getTag("repository_owner") == "acme" };
@id("no-stop-from-forks")
forbid (principal, action == Action::"stop", resource)
when { principal.hasTag("event_name") && principal.getTag("event_name") == "pull_request" };
"#,
    );
    // The shapes real sets have, as in benches/decision.rs: per pipeline, per step, guardrails.
    for i in 0..extra_policies {
        let s = i % extra_steps.max(1);
        match i % 10 {
            0 => writeln!(
                extra,
                "@id(\"p{i}\") permit (principal in Group::\"g{}\", action in [Action::\"start\", Action::\"stop\"], resource in Pipeline::\"pipeline-{}\");",
                i % 97,
                i % 50
            ),
            1 => writeln!(
                extra,
                "@id(\"p{i}\") forbid (principal, action == Action::\"start\", resource == Step::\"step-{s}\") when {{ context.hour_utc < 2 && principal.hasTag(\"ref\") && principal.getTag(\"ref\") != \"refs/heads/main\" }};"
            ),
            _ => writeln!(
                extra,
                "@id(\"p{i}\") permit (principal, action == Action::\"start\", resource == Step::\"step-{s}\") when {{ principal.hasTag(\"repository\") && principal.getTag(\"repository\") == \"acme/r{}\" }};",
                i % 13
            ),
        }
        .unwrap();
    }
    std::fs::write(policies.join("more.cedar"), extra).unwrap();
    std::fs::write(dir.join("schemas/nightly-load.json"), SCHEMA).unwrap();

    let mut cfg = format!(
        r#"# Generated by examples/loadkit.rs for benches/load.sh.
[server]
listen = "127.0.0.1:{port}"
max_body_bytes = 262144

[policies]
dir = "policies"

[audit]
path = "audit/stepgate-audit.jsonl"

[[issuers]]
name = "corp"
issuer = "{corp}"
audiences = ["stepgate"]
groups_claim = "groups"

[[issuers]]
name = "github"
issuer = "{ci}"
audiences = ["stepgate"]
algorithms = ["ES256"]
required_claims = {{ repository_owner = "acme" }}

[credentials.runner]
kind = "aws_static"
access_key_id = "AKIDLOADBENCHMARK000"
secret_access_key = "load-benchmark-secret-key"

[steps.nightly-load]
pipeline = "nightly-etl"
kind = "stepfunctions"
state_machine_arn = "arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:nightly-load"
credentials = "runner"
endpoint = "{upstream}"
input_schema = "schemas/nightly-load.json"
audit_input_fields = ["date", "full_refresh"]
[steps.nightly-load.attributes]
env = "prod"
owner = "data-eng"
[steps.nightly-load.pinned]
output_dataset = "warehouse.nightly"
"#
    );
    for (name, pipeline, env) in [
        ("adhoc-report", "reporting", "dev"),
        ("weekly-analytics", "analytics", "prod"),
        ("backfill", "nightly-etl", "prod"),
    ] {
        write!(
            cfg,
            r#"
[steps.{name}]
pipeline = "{pipeline}"
kind = "stepfunctions"
state_machine_arn = "arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{name}"
credentials = "runner"
endpoint = "{upstream}"
[steps.{name}.attributes]
env = "{env}"
"#
        )
        .unwrap();
    }
    for i in 0..extra_steps {
        write!(
            cfg,
            r#"
[steps.step-{i}]
pipeline = "pipeline-{}"
kind = "stepfunctions"
state_machine_arn = "arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:step-{i}"
credentials = "runner"
endpoint = "{upstream}"
[steps.step-{i}.attributes]
env = "{}"
"#,
            i % 50,
            if i % 2 == 0 { "prod" } else { "dev" }
        )
        .unwrap();
    }
    std::fs::write(dir.join("stepgate.toml"), cfg).unwrap();
}

/// Starts the fake Step Functions endpoint; returns its base URL.
async fn start_upstream(port: u16) -> String {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let counter = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    async move { Ok::<_, std::convert::Infallible>(answer(req, n).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    url
}

async fn answer(req: Request<hyper::body::Incoming>, n: u64) -> Response<Full<Bytes>> {
    let start = req.method() == http::Method::POST
        && req
            .headers()
            .get("x-amz-target")
            .is_some_and(|v| v == "AWSStepFunctions.StartExecution");
    // Read the whole body, as the real service does.
    let _ = req.into_body().collect().await;
    if !start {
        let mut r = Response::new(Full::new(Bytes::from_static(
            br#"{"__type":"UnknownOperationException"}"#,
        )));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let body = format!(
        r#"{{"executionArn":"arn:aws:states:us-east-1:{ACCOUNT}:execution:nightly-load:load-{n:016x}","startDate":{now:.3}}}"#
    );
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    r
}
