//! Crash consistency against moto: under concurrent starts, `kill -9` the server mid-load;
//! after a restart the chain verifies and every execution moto holds has an `allow` decision
//! record for its request (0 unaudited triggers). Repeated with different kill points.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

use crate::support::Harness;

fn spawn_serve(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("STEPGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(base: &str) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    for _ in 0..200 {
        let req = http::Request::get(format!("{base}/readyz"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_millis(500), client.request(req)).await;
        if matches!(answer, Ok(Ok(ref r)) if r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("stepgate at {base} never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_load_leaves_no_unaudited_trigger() {
    let Some(p) = crate::peers::peers() else {
        return;
    };
    let _serial = crate::peers::SERIAL.lock().await;
    let arn = std::env::var("STEPGATE_TEST_MOTO_SM_ARN_ORDERS").unwrap();
    // The harness gives the dev issuer and a workspace; the server under test is a separate
    // `stepgate serve` process on a fixed free port, so it can be killed.
    let h = Harness::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let audit = h.dir.path().join("crash/audit.jsonl");
    let config = h.dir.path().join("crash.toml");
    let text = std::fs::read_to_string(h.dir.path().join("stepgate.toml")).unwrap();
    let text = text
        .replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""), 1)
        .replacen(&h.audit_path.display().to_string(), &audit.display().to_string(), 1)
        .replace(
            "[credentials.sandbox]",
            &format!(
                "[credentials.moto]\nkind = \"aws_static\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n\n\
                 [steps.orders]\npipeline = \"nightly-etl\"\nkind = \"stepfunctions\"\nstate_machine_arn = \"{arn}\"\n\
                 credentials = \"moto\"\nendpoint = \"{}\"\n\n[credentials.sandbox]",
                p.ak, p.sk, p.moto
            ),
        );
    std::fs::write(&config, text).unwrap();
    let token = h.token("alice");
    let run_id = std::process::id();
    let mut sent_total = 0usize;
    for (round, kill_after_ms) in [150u64, 400, 900].into_iter().enumerate() {
        let mut child = spawn_serve(&config);
        wait_ready(&base).await;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let mut tasks = Vec::new();
        for w in 0..16 {
            let (client, base, token) = (client.clone(), base.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                let mut sent = 0usize;
                for i in 0..1000 {
                    let name = format!("crash-{run_id}-{round}-{w}-{i}");
                    let req = http::Request::post(format!("{base}/v1/steps/orders/executions"))
                        .header("authorization", format!("Bearer {token}"))
                        .header("x-request-id", &name)
                        .body(Full::new(Bytes::from(format!(
                            r#"{{"name": "{name}", "input": {{"i": {i}}}}}"#
                        ))))
                        .unwrap();
                    sent += 1;
                    if client.request(req).await.is_err() {
                        break; // the server is gone
                    }
                }
                sent
            }));
        }
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for t in tasks {
            sent_total += t.await.unwrap();
        }
    }
    // Restart: start-up verifies the whole chain (and would refuse a broken one).
    let mut child = spawn_serve(&config);
    wait_ready(&base).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let verdict = stepgate::audit::verify::verify_path(&audit).unwrap();
    assert!(
        matches!(verdict, stepgate::audit::verify::Verdict::Ok { .. }),
        "{verdict}"
    );

    let allowed: HashSet<String> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["event"] == "decision" && r["decision"] == "allow")
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    let ours: Vec<String> = crate::peers::list_executions(&p, &arn)
        .await
        .into_iter()
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .filter(|n| n.starts_with(&format!("crash-{run_id}-")))
        .collect();
    let unaudited: Vec<&String> = ours.iter().filter(|n| !allowed.contains(*n)).collect();
    eprintln!(
        "crash test: {sent_total} requests sent, {} executions on moto, {} allow decisions, {} unaudited",
        ours.len(),
        allowed.len(),
        unaudited.len()
    );
    assert!(
        !ours.is_empty(),
        "no execution reached moto: the test did not exercise anything"
    );
    assert!(
        unaudited.is_empty(),
        "executions without an audit record: {unaudited:?}"
    );
    h.stop().await;
}
