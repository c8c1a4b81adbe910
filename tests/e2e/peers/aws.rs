//! With the real `moto_server`: per-step assumed roles, web identity from moto STS, and
//! retried starts through a lossy proxy that run exactly once.

use super::*;

#[tokio::test]
async fn a_step_signs_with_its_own_assumed_role_and_an_unassumable_role_fails_closed() {
    let Some(p) = peers() else { return };
    let _serial = SERIAL.lock().await;
    let role = std::env::var("STEPGATE_TEST_MOTO_ROLE_ARN").unwrap();
    let untrusted = std::env::var("STEPGATE_TEST_MOTO_UNTRUSTED_ROLE_ARN").unwrap();
    let viewer = std::env::var("STEPGATE_TEST_MOTO_VIEWER_ROLE_ARN").unwrap();
    let (moto, arn, ak, sk) = (p.moto.clone(), p.sm_arn.clone(), p.ak.clone(), p.sk.clone());
    let h = Harness::start_with(move |c| {
        c.replace(
            "[credentials.sandbox]",
            &format!(
                "[credentials.proxy]\nkind = \"aws_static\"\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\n\n\
                 [credentials.runner]\nkind = \"aws_assume_role\"\nrole_arn = \"{role}\"\nsource = \"proxy\"\n\
                 session_name = \"stepgate-demo\"\nduration = \"15m\"\nsts_endpoint = \"{moto}\"\n\n\
                 [credentials.locked-out]\nkind = \"aws_assume_role\"\nrole_arn = \"{untrusted}\"\nsource = \"proxy\"\nsts_endpoint = \"{moto}\"\n\n\
                 [credentials.viewer]\nkind = \"aws_assume_role\"\nrole_arn = \"{viewer}\"\nsource = \"proxy\"\nsts_endpoint = \"{moto}\"\n\n\
                 [steps.demo-viewer]\npipeline = \"nightly-etl\"\nkind = \"stepfunctions\"\nstate_machine_arn = \"{arn}\"\n\
                 credentials = \"viewer\"\nendpoint = \"{moto}\"\n\n\
                 [steps.demo]\npipeline = \"nightly-etl\"\nkind = \"stepfunctions\"\nstate_machine_arn = \"{arn}\"\n\
                 credentials = \"runner\"\nendpoint = \"{moto}\"\n\n\
                 [steps.demo-locked]\npipeline = \"nightly-etl\"\nkind = \"stepfunctions\"\nstate_machine_arn = \"{arn}\"\n\
                 credentials = \"locked-out\"\nendpoint = \"{moto}\"\n\n[credentials.sandbox]"
            ),
        )
    })
    .await;
    let before = moto_executions(&p).await.len();
    let alice = format!("Bearer {}", h.token("alice"));
    let r = h
        .authorized("POST", "/v1/steps/demo/executions", &alice, "{}")
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let r2 = h
        .authorized("POST", "/v1/steps/demo/executions", &alice, "{}")
        .await;
    assert_eq!(r2.status, 201, "{}", r2.json);
    assert_eq!(moto_executions(&p).await.len(), before + 2);
    // The same machine through a step whose role may only describe: moto's IAM check refuses
    // the start (AccessDenied, kept in the message), proof that each step signs as its own role.
    let r = h
        .authorized("POST", "/v1/steps/demo-viewer/executions", &alice, "{}")
        .await;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (502, Some("upstream_error")),
        "{}",
        r.json
    );
    let msg = r.json["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("AccessDenied"), "{msg}");
    assert!(
        msg.contains("step-viewer"),
        "moto names the assumed role: {msg}"
    );
    assert_eq!(moto_executions(&p).await.len(), before + 2);
    let ready = h.send("GET", "/readyz", &[], "").await;
    assert_eq!(ready.json["credentials"]["runner"], true, "{}", ready.json);
    let metrics = h.send("GET", "/metrics", &[], "").await.text;
    let left = metrics
        .lines()
        .find(|l| l.starts_with("stepgate_credentials_expiry_seconds{provider=\"runner\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok());
    assert!(
        left.is_some_and(|s| s > 0.0),
        "seconds to expiry of the assumed role: {metrics}"
    );
    assert_eq!(
        ready.json["credentials"]["locked-out"], false,
        "{}",
        ready.json
    );
    // A role the proxy may not assume: fail closed, nothing forwarded, and audited.
    let r = h
        .authorized("POST", "/v1/steps/demo-locked/executions", &alice, "{}")
        .await;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{}",
        r.json
    );
    assert_eq!(moto_executions(&p).await.len(), before + 2);
    let last = h.audit_records().await.last().cloned().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["status"].as_u64()),
        (Some("outcome"), Some(503))
    );
    h.stop().await;
}

/// A proxy in front of moto that loses answers: the first `lose` StartExecution calls reach moto
/// (the execution starts) but the caller gets a 500 instead of moto's answer, as when a
/// connection drops after the upstream acted.
async fn lossy_proxy(
    moto: String,
    lose: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lost = Arc::new(AtomicUsize::new(0));
    let lost2 = lost.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (moto, lost) = (moto.clone(), lost2.clone());
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (moto, lost) = (moto.clone(), lost.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let start = parts
                                .headers
                                .get("x-amz-target")
                                .is_some_and(|t| t == "AWSStepFunctions.StartExecution");
                            let mut fwd = http::Request::builder()
                                .method(parts.method)
                                .uri(format!("{moto}{}", parts.uri.path()));
                            for (k, v) in &parts.headers {
                                fwd = fwd.header(k, v); // Host included: the signature covers it
                            }
                            let resp = client()
                                .request(fwd.body(Full::new(body)).unwrap())
                                .await
                                .unwrap();
                            let (status, answer) = body_of(resp).await;
                            let out = if start && lost.fetch_add(1, Ordering::SeqCst) < lose {
                                http::Response::builder()
                                    .status(500)
                                    .header("content-type", "application/x-amz-json-1.0")
                                    .body(Full::new(Bytes::from_static(
                                        br#"{"__type":"InternalFailure","message":"answer lost"}"#,
                                    )))
                            } else {
                                http::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/x-amz-json-1.0")
                                    .body(Full::new(answer))
                            };
                            Ok::<_, std::convert::Infallible>(out.unwrap())
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), lost)
}

#[tokio::test]
async fn concurrent_retried_starts_with_one_key_run_exactly_once_on_moto() {
    let Some(p) = peers() else { return };
    let _serial = SERIAL.lock().await;
    let (proxy, lost) = lossy_proxy(p.moto.clone(), 3).await;
    let (arn, ak, sk) = (p.sm_arn.clone(), p.ak.clone(), p.sk.clone());
    let h = Harness::start_with(move |c| {
        c.replace(
            "[credentials.sandbox]",
            &format!(
                "[credentials.moto]\nkind = \"aws_static\"\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\n\n\
                 [steps.demo]\npipeline = \"nightly-etl\"\nkind = \"stepfunctions\"\nstate_machine_arn = \"{arn}\"\n\
                 credentials = \"moto\"\nendpoint = \"{proxy}\"\n\n[credentials.sandbox]"
            ),
        )
    })
    .await;
    let before = moto_executions(&p).await.len();
    let alice = format!("Bearer {}", h.token("alice"));
    let key = format!("load-{}-{}", std::process::id(), before);
    let headers = [
        ("authorization", alice.as_str()),
        ("idempotency-key", key.as_str()),
    ];
    let sends = (0..8).map(|_| {
        h.send(
            "POST",
            "/v1/steps/demo/executions",
            &headers,
            r#"{"input": {"date": "2026-11-24"}}"#,
        )
    });
    let replies = futures_util::future::join_all(sends).await;
    let ids: std::collections::BTreeSet<String> = replies
        .iter()
        .map(|r| {
            assert!(matches!(r.status, 200 | 201), "{}", r.json);
            r.json["execution_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every caller got the same execution: {ids:?}");
    assert!(
        lost.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "answers were lost"
    );
    let execs = moto_executions(&p).await;
    assert_eq!(execs.len(), before + 1, "exactly one execution on moto");
    // The same key with another input is a conflict, never a second run.
    let r = h
        .send(
            "POST",
            "/v1/steps/demo/executions",
            &[("authorization", &alice), ("idempotency-key", &key)],
            r#"{"input": {"date": "2026-11-25"}}"#,
        )
        .await;
    assert_eq!((r.status, error_code(&r)), (409, "conflict"), "{}", r.json);
    assert_eq!(moto_executions(&p).await.len(), before + 1);
    h.stop().await;
}

#[tokio::test]
async fn web_identity_credentials_from_moto_sts_and_the_token_file_is_reread() {
    use std::sync::Arc;
    use std::time::Duration;
    use stepgate::clock::{Clock, ManualClock};
    use stepgate::credentials::{Cached, aws};
    let Some(_p) = peers() else { return };
    let noauth = std::env::var("STEPGATE_TEST_MOTO_NOAUTH_URL").unwrap();
    let role = std::env::var("STEPGATE_TEST_MOTO_WI_ROLE_ARN").unwrap();
    let machine = std::env::var("STEPGATE_TEST_MOTO_WI_SM_ARN").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOmFjbWUvZXRsIn0.c2ln",
    )
    .unwrap();

    // Through stepgate: a step signed with web-identity credentials starts on moto.
    let tf = token_file.display().to_string();
    let (ep, r2, m2) = (noauth.clone(), role.clone(), machine.clone());
    let h = Harness::start_with(move |c| {
        c.replace(
            "[credentials.sandbox]",
            &format!(
                "[credentials.gha]\nkind = \"aws_web_identity\"\nrole_arn = \"{r2}\"\ntoken_file = \"{tf}\"\n\
                 session_name = \"gha-run-42\"\nsts_endpoint = \"{ep}\"\n\n\
                 [steps.demo]\npipeline = \"nightly-etl\"\nkind = \"stepfunctions\"\nstate_machine_arn = \"{m2}\"\n\
                 credentials = \"gha\"\nendpoint = \"{ep}\"\n\n[credentials.sandbox]"
            ),
        )
    })
    .await;
    let r = h.start_as("alice", "demo", "{}").await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert!(
        r.json["execution_id"]
            .as_str()
            .unwrap()
            .starts_with(&machine.replace(":stateMachine:", ":execution:"))
    );
    h.stop().await;

    // The provider re-reads the file at every refresh: emptied, the refresh fails (the held
    // credentials keep serving); rewritten, the next refresh gets new credentials.
    let clock = Arc::new(ManualClock::at(1_795_000_000));
    let settings = stepgate::config::AwsWebIdentitySettings {
        sts: stepgate::config::StsSettings {
            role_arn: role,
            session_name: "stepgate".into(),
            duration: Duration::from_secs(900),
            region: "us-east-1".into(),
            endpoint: Some(noauth),
        },
        token_file: token_file.clone(),
    };
    let provider = Arc::new(aws::WebIdentity::new(settings, aws::SdkDeps::new()));
    let cached = Cached::new("gha".into(), provider, clock.clone());
    let first = cached.get().await.unwrap();
    // moto stamps its own expiry (12 h from its wall clock): move the manual clock past the due time.
    let due = cached.refresh_due().unwrap();
    clock.advance(due.duration_since(clock.now()).unwrap() + Duration::from_secs(1));
    std::fs::write(&token_file, "").unwrap();
    assert!(
        cached.refresh_if_due().await.is_err(),
        "an empty token file is refused"
    );
    assert_eq!(
        cached.get().await.unwrap().access_key_id(),
        first.access_key_id()
    );
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOmFjbWUvZXRsIn0.c2lnMg",
    )
    .unwrap();
    cached.refresh_if_due().await.unwrap();
    assert_ne!(
        cached.get().await.unwrap().access_key_id(),
        first.access_key_id()
    );
}
