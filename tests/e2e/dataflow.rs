//! Dataflow steps against the Google sandbox (`stepgate::dev::google`): no public emulator of
//! Dataflow exists, so the sandbox checks what Google checks (the bearer it issued or a
//! self-signed service-account JWT verified with the account's public key; per-principal
//! permissions; v1b3 request shapes) and the tests assert on what it received.

use std::sync::Arc;

use serde_json::Value;
use stepgate::clock::SystemClock;
use stepgate::dev::google::{self, GoogleSandbox};

use crate::support::{Harness, error_code};

const PROJECT: &str = "sandbox-project";
const LAUNCHER: &str = "launcher@sandbox-project.iam.gserviceaccount.com";
const RUNNER: &str = "runner@sandbox-project.iam.gserviceaccount.com";
const VIEWER: &str = "viewer@sandbox-project.iam.gserviceaccount.com";
const AUDIENCE: &str =
    "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/providers/gha";
const FEDERATED: &str = "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/subject/repo:acme/etl";

fn fixture(name: &str) -> String {
    format!("{}/tests/cases/gcp/{name}", env!("CARGO_MANIFEST_DIR"))
}

async fn sandbox() -> Arc<GoogleSandbox> {
    let g = google::start(Arc::new(SystemClock)).await.unwrap();
    let public = std::fs::read_to_string(fixture("sa-key.pub.pem")).unwrap();
    g.add_service_account_key(LAUNCHER, "sandbox-key-1", &public);
    g
}

fn grant_all(g: &GoogleSandbox, who: &str) {
    for p in ["create", "get", "list", "cancel"] {
        g.grant(who, PROJECT, &format!("dataflow.jobs.{p}"));
    }
}

/// Steps `flex` (flex template) and `classic` (classic template) signed with `credentials`,
/// plus the credential blocks in `blocks`.
fn dataflow_config(url: &str, credentials: &str, blocks: &str) -> impl FnOnce(String) -> String {
    let (url, credentials, blocks) = (url.to_string(), credentials.to_string(), blocks.to_string());
    move |c: String| {
        c.replace(
            "[credentials.sandbox]",
            &format!(
                "{blocks}\n\
                 [steps.flex]\npipeline = \"nightly-etl\"\nkind = \"dataflow_flex_template\"\n\
                 project = \"{PROJECT}\"\nlocation = \"europe-west1\"\n\
                 container_spec_gcs_path = \"gs://acme-templates/export.json\"\n\
                 credentials = \"{credentials}\"\nendpoint = \"{url}\"\njob_name_prefix = \"flex-export\"\n\
                 [steps.flex.environment]\ntempLocation = \"gs://acme-tmp/df\"\nmaxWorkers = 4\n\
                 [steps.flex.pinned]\noutput_table = \"acme:exports.daily\"\n\n\
                 [steps.classic]\npipeline = \"nightly-etl\"\nkind = \"dataflow_template\"\n\
                 project = \"{PROJECT}\"\nlocation = \"europe-west1\"\n\
                 gcs_path = \"gs://dataflow-templates/latest/Word_Count\"\n\
                 credentials = \"{credentials}\"\nendpoint = \"{url}\"\n\n\
                 [credentials.sandbox]"
            ),
        )
    }
}

fn key_block() -> String {
    format!(
        "[credentials.sa]\nkind = \"gcp_service_account\"\nkey_file = \"{}\"\n",
        fixture("service-account.json")
    )
}

fn jobs_named(g: &GoogleSandbox, prefix: &str) -> Vec<Value> {
    g.jobs()
        .into_iter()
        .filter(|j| j["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .collect()
}

#[tokio::test]
async fn a_flex_template_starts_is_described_listed_and_cancelled_with_a_service_account_key() {
    let g = sandbox().await;
    grant_all(&g, LAUNCHER);
    let h = Harness::start_with(dataflow_config(g.url(), "sa", &key_block())).await;
    let auth = format!("Bearer {}", h.token("alice"));
    let r = h
        .start_as(
            "alice",
            "flex",
            r#"{"input": {"date": "2026-11-24", "shards": 8}}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["execution_id"].as_str().unwrap().to_string();

    // What Dataflow received: the flex launch, parameters as strings, pinned field and the
    // step's environment, the input digest label; signed as the key's service account.
    let jobs = jobs_named(&g, "flex-export-");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!(job["id"], id.as_str());
    let sent = &job["_sandbox"];
    assert_eq!(sent["parameters"]["date"], "2026-11-24");
    assert_eq!(sent["parameters"]["shards"], "8");
    assert_eq!(sent["parameters"]["output_table"], "acme:exports.daily");
    assert!(job["labels"]["stepgate-input"].as_str().is_some(), "{job}");
    let calls = g.dataflow_calls();
    assert!(
        calls.iter().any(|(m, p, who)| m == "POST"
            && p.ends_with("/flexTemplates:launch")
            && who == LAUNCHER),
        "{calls:?}"
    );

    let path = format!("/v1/steps/flex/executions/{id}");
    let r = h.authorized("GET", &path, &auth, "").await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        (r.json["status"].as_str(), r.json["state"].as_str()),
        (Some("RUNNING"), Some("JOB_STATE_RUNNING")),
        "{}",
        r.json
    );

    let r = h
        .authorized("GET", "/v1/steps/flex/executions", &auth, "")
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let listed: Vec<&str> = r.json["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["execution_id"].as_str())
        .collect();
    assert_eq!(listed, vec![id.as_str()]);

    let r = h
        .authorized("POST", &format!("{path}/stop"), &auth, "")
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = h.authorized("GET", &path, &auth, "").await;
    assert_eq!(r.json["status"], "ABORTED", "{}", r.json);

    // A job of the other step is not this step's: 404, and nothing is cancelled.
    let r = h
        .start_as(
            "alice",
            "classic",
            r#"{"input": {"inputFile": "gs://in/a.txt"}}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let other = r.json["execution_id"].as_str().unwrap().to_string();
    let r = h
        .authorized(
            "POST",
            &format!("/v1/steps/flex/executions/{other}/stop"),
            &auth,
            "",
        )
        .await;
    assert_eq!((r.status, error_code(&r)), (404, "not_found"), "{}", r.json);
    assert_eq!(
        jobs_named(&g, "classic-")[0]["currentState"],
        "JOB_STATE_RUNNING"
    );
    // Nested input cannot be a template parameter.
    let r = h
        .start_as("alice", "flex", r#"{"input": {"date": {"y": 2026}}}"#)
        .await;
    assert_eq!(
        (r.status, error_code(&r)),
        (400, "invalid_input"),
        "{}",
        r.json
    );
    h.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_gives_one_job_even_after_it_finished_and_retries() {
    let g = sandbox().await;
    grant_all(&g, LAUNCHER);
    let h = Harness::start_with(dataflow_config(g.url(), "sa", &key_block())).await;
    let auth = format!("Bearer {}", h.token("alice"));
    let start = |body: &'static str| {
        let auth = auth.clone();
        let h = &h;
        async move {
            h.send(
                "POST",
                "/v1/steps/classic/executions",
                &[
                    ("authorization", auth.as_str()),
                    ("idempotency-key", "wordcount-2026-11-24"),
                ],
                body,
            )
            .await
        }
    };
    let first = start(r#"{"input": {"inputFile": "gs://in/a.txt"}}"#).await;
    assert_eq!(first.status, 201, "{}", first.json);
    let id = first.json["execution_id"].as_str().unwrap().to_string();
    let again = start(r#"{"input": {"inputFile": "gs://in/a.txt"}}"#).await;
    assert_eq!(
        (again.status, again.json["execution_id"].as_str()),
        (200, Some(id.as_str()))
    );
    // Dataflow would start a finished job's name again: stepgate finds it first.
    g.finish_job(&id);
    let after = start(r#"{"input": {"inputFile": "gs://in/a.txt"}}"#).await;
    assert_eq!(
        (after.status, after.json["execution_id"].as_str()),
        (200, Some(id.as_str()))
    );
    let other = start(r#"{"input": {"inputFile": "gs://in/b.txt"}}"#).await;
    assert_eq!(
        (other.status, error_code(&other)),
        (409, "conflict"),
        "{}",
        other.json
    );
    assert_eq!(g.launches(), 1);

    // Upstream failures on a keyed launch are retried: one job.
    g.fail_next_dataflow(503, "UNAVAILABLE");
    g.fail_next_dataflow(503, "UNAVAILABLE");
    let r = h
        .send(
            "POST",
            "/v1/steps/classic/executions",
            &[
                ("authorization", auth.as_str()),
                ("idempotency-key", "retry-me"),
            ],
            r#"{"input": {"inputFile": "gs://in/c.txt"}}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(g.launches(), 2);
    let start_classic = |body: &'static str| h.start_as("alice", "classic", body);
    // An unnamed start is named by stepgate before its decision record, so it is retried
    // too and lands once, as the job its decision record names.
    g.fail_next_dataflow(503, "UNAVAILABLE");
    let r = start_classic(r#"{"input": {"inputFile": "gs://in/d.txt"}}"#).await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(g.launches(), 3);
    let decision = h.decision_of(&r).await;
    let job = g
        .jobs()
        .into_iter()
        .find(|j| j["id"] == r.json["execution_id"])
        .unwrap();
    assert_eq!(job["name"], decision["execution_name"]);
    assert!(job["name"].as_str().unwrap().contains("-sg-"), "{job}");
    // A refusal is not retried: it is the answer, with Google's message.
    g.fail_next_dataflow(400, "INVALID_ARGUMENT");
    let r = start_classic(r#"{"input": {"inputFile": "gs://in/e.txt"}}"#).await;
    assert_eq!(
        (r.status, error_code(&r)),
        (502, "upstream_error"),
        "{}",
        r.json
    );
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("INVALID_ARGUMENT"),
        "{}",
        r.json
    );
    assert_eq!(g.launches(), 3);
    h.stop().await;
}

#[tokio::test]
async fn each_step_acts_as_its_own_impersonated_account_from_federated_credentials() {
    let g = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("subject-token");
    std::fs::write(&subject, "eyJhbGciOiJSUzI1NiJ9.gha-oidc-token.sig").unwrap();
    let wif = dir.path().join("wif.json");
    std::fs::write(
        &wif,
        serde_json::json!({
            "type": "external_account",
            "audience": AUDIENCE,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": format!("{}/v1/token", g.url()),
            "credential_source": {"file": subject.display().to_string()},
        })
        .to_string(),
    )
    .unwrap();
    g.add_federation(
        AUDIENCE,
        "eyJhbGciOiJSUzI1NiJ9.gha-oidc-token.sig",
        FEDERATED,
    );
    g.allow_impersonation(FEDERATED, RUNNER);
    g.allow_impersonation(FEDERATED, VIEWER);
    grant_all(&g, RUNNER);
    g.grant(VIEWER, PROJECT, "dataflow.jobs.get");
    let blocks = format!(
        "[credentials.wif]\nkind = \"gcp_external_account\"\nconfig_file = \"{}\"\n\n\
         [credentials.runner]\nkind = \"gcp_impersonate\"\nsource = \"wif\"\n\
         target_service_account = \"{RUNNER}\"\nlifetime = \"30m\"\niam_endpoint = \"{url}\"\n\n\
         [credentials.viewer]\nkind = \"gcp_impersonate\"\nsource = \"wif\"\n\
         target_service_account = \"{VIEWER}\"\niam_endpoint = \"{url}\"\n\n\
         [steps.view-only]\npipeline = \"nightly-etl\"\nkind = \"dataflow_template\"\n\
         project = \"{PROJECT}\"\nlocation = \"europe-west1\"\ngcs_path = \"gs://t/x\"\n\
         credentials = \"viewer\"\nendpoint = \"{url}\"\n",
        wif.display(),
        url = g.url()
    );
    let h = Harness::start_with(dataflow_config(g.url(), "runner", &blocks)).await;
    let r = h
        .start_as("alice", "flex", r#"{"input": {"date": "2026-11-24"}}"#)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let calls = g.dataflow_calls();
    assert!(
        calls.iter().any(|(m, _, who)| m == "POST" && who == RUNNER),
        "launched as the step's own account: {calls:?}"
    );
    // The view-only step's account may not launch: Google's 403 comes back as 502, message kept.
    let r = h.start_as("alice", "view-only", "{}").await;
    assert_eq!(
        (r.status, error_code(&r)),
        (502, "upstream_error"),
        "{}",
        r.json
    );
    let msg = r.json["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("PERMISSION_DENIED") && msg.contains("dataflow.jobs.create"),
        "{msg}"
    );
    assert_eq!(g.launches(), 1);
    let ready = h.send("GET", "/readyz", &[], "").await;
    assert_eq!(ready.json["credentials"]["runner"], true, "{}", ready.json);
    h.stop().await;
}

#[tokio::test]
async fn google_tokens_rotate_and_an_outage_past_expiry_fails_closed_then_recovers() {
    let g = sandbox().await;
    g.set_metadata_account(RUNNER);
    grant_all(&g, RUNNER);
    g.set_token_lifetime(std::time::Duration::from_secs(3));
    let block = format!(
        "[credentials.mds]\nkind = \"gcp_metadata\"\nendpoint = \"{}\"\n",
        g.url()
    );
    let h = Harness::start_with(dataflow_config(g.url(), "mds", &block)).await;
    let r = h
        .start_as(
            "alice",
            "classic",
            r#"{"input": {"inputFile": "gs://in/1"}}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let issued = g.token_requests();
    // The metadata server goes away; once the held token has expired, starts fail closed.
    g.set_token_endpoints_down(true);
    let mut refused = None;
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let r = h
            .start_as(
                "alice",
                "classic",
                r#"{"input": {"inputFile": "gs://in/2"}}"#,
            )
            .await;
        if r.status != 201 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("refused within 15 s of the outage");
    assert_eq!(
        (r.status, error_code(&r)),
        (503, "unavailable"),
        "{}",
        r.json
    );
    let launched = g.launches();
    // Back again: recovers by itself, with a new token.
    g.set_token_endpoints_down(false);
    let mut ok = false;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let r = h
            .start_as(
                "alice",
                "classic",
                r#"{"input": {"inputFile": "gs://in/3"}}"#,
            )
            .await;
        if r.status == 201 {
            ok = true;
            break;
        }
        assert_eq!(r.status, 503, "{}", r.json);
    }
    assert!(ok, "recovered within 20 s");
    assert!(g.token_requests() > issued, "a new token was fetched");
    assert_eq!(g.launches(), launched + 1);
    h.stop().await;
}
