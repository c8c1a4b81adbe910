//! Crash consistency against moto: under 16 concurrent starters, `kill -9` the server mid-load;
//! after each restart the chain verifies, every execution moto holds maps by the SHA-256 of the
//! request body that carried it to an `allow` decision record naming that execution
//! (`execution_name`), and every 201 answered names an execution moto holds. Unnamed starts:
//! stepgate names them before its decision record is durable. Repeated at different kill points.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
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
    let run = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let body_of = |round: usize, w: usize, i: usize| {
        format!(r#"{{"input": {{"run": "{run}", "round": {round}, "w": {w}, "i": {i}}}}}"#)
    };
    let mut sent_total = 0usize;
    let mut answered: Vec<String> = Vec::new();
    for (round, kill_after_ms) in [150u64, 400, 900].into_iter().enumerate() {
        let mut child = spawn_serve(&config);
        wait_ready(&base).await;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let mut tasks = Vec::new();
        for w in 0..16 {
            let (client, base, token) = (client.clone(), base.clone(), token.clone());
            let bodies: Vec<String> = (0..1000).map(|i| body_of(round, w, i)).collect();
            tasks.push(tokio::spawn(async move {
                let (mut sent, mut started) = (0usize, Vec::new());
                for body in bodies {
                    let req = http::Request::post(format!("{base}/v1/steps/orders/executions"))
                        .header("authorization", format!("Bearer {token}"))
                        .body(Full::new(Bytes::from(body)))
                        .unwrap();
                    sent += 1;
                    let Ok(resp) = client.request(req).await else {
                        break; // the server is gone
                    };
                    let status = resp.status().as_u16();
                    let Ok(b) = resp.into_body().collect().await else {
                        break;
                    };
                    if status == 201 {
                        let v: Value = serde_json::from_slice(&b.to_bytes()).unwrap();
                        started.push(v["execution_id"].as_str().unwrap().to_string());
                    }
                }
                (sent, started)
            }));
        }
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for t in tasks {
            let (sent, started) = t.await.unwrap();
            sent_total += sent;
            answered.extend(started);
        }
        // Restart: start-up verifies the whole chain (and would refuse a broken one).
        let mut child = spawn_serve(&config);
        wait_ready(&base).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let verdict = stepgate::audit::verify::verify_path(&audit).unwrap();
        assert!(
            matches!(verdict, stepgate::audit::verify::Verdict::Ok { .. }),
            "after round {round}: {verdict}"
        );
    }

    // input_sha256 -> execution_name of every allowed start decision on disk.
    let allowed: HashMap<String, String> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["event"] == "decision" && r["decision"] == "allow" && r["action"] == "start")
        .map(|r| {
            (
                r["input_sha256"].as_str().unwrap().to_string(),
                r["execution_name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut ours = Vec::new();
    for e in crate::peers::list_executions(&p, &arn).await {
        let d = crate::peers::sfn_call(
            &p,
            "DescribeExecution",
            &serde_json::json!({"executionArn": e["executionArn"]}),
        )
        .await;
        let input: Value = serde_json::from_str(d["input"].as_str().unwrap_or("{}")).unwrap();
        if input["run"] != run.as_str() {
            continue;
        }
        let body = body_of(
            input["round"].as_u64().unwrap() as usize,
            input["w"].as_u64().unwrap() as usize,
            input["i"].as_u64().unwrap() as usize,
        );
        let sha = stepgate::audit::record::sha256_hex(body.as_bytes());
        ours.push((
            e["executionArn"].as_str().unwrap().to_string(),
            e["name"].as_str().unwrap().to_string(),
            sha,
        ));
    }
    let on_moto: HashSet<&str> = ours.iter().map(|(arn, _, _)| arn.as_str()).collect();
    let unaudited: Vec<&(String, String, String)> = ours
        .iter()
        .filter(|(_, name, sha)| allowed.get(sha) != Some(name))
        .collect();
    let phantom: Vec<&String> = answered
        .iter()
        .filter(|a| !on_moto.contains(a.as_str()))
        .collect();
    eprintln!(
        "crash test: {sent_total} requests sent, {} answered 201, {} executions on moto, {} allow decisions, {} unaudited",
        answered.len(),
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
        "executions without a decision record naming them: {unaudited:?}"
    );
    assert!(
        phantom.is_empty(),
        "201 answers naming no execution on moto: {phantom:?}"
    );
    let names: HashSet<&str> = ours.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names.len(), ours.len(), "two executions share a name");
    h.stop().await;
}
