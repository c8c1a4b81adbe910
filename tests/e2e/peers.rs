//! Against real peers started by `scripts/test`: the npm `oidc-provider` as the OIDC issuer and
//! `moto_server` (IAM signature checking on) as the Step Functions endpoint. Without
//! `STEPGATE_TEST_PEERS=1` these tests fail, unless `STEPGATE_SKIP_PEERS=1` says to skip them.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::support::{Harness, error_code};

mod aws;
mod oidc;

pub struct Peers {
    pub oidc: String,
    pub audience: String,
    pub moto: String,
    pub ak: String,
    pub sk: String,
    pub denied_ak: String,
    pub denied_sk: String,
    pub sm_arn: String,
}

/// The peers are shared by every test here and one test rotates the provider's keys: run them
/// one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn peers() -> Option<Peers> {
    let var = |k: &str| std::env::var(k).ok();
    if var("STEPGATE_TEST_PEERS").as_deref() != Some("1") {
        assert!(
            var("STEPGATE_SKIP_PEERS").as_deref() == Some("1"),
            "peer tests need the peers: run ./scripts/test (or set STEPGATE_SKIP_PEERS=1 to skip them)"
        );
        return None;
    }
    let get = |k: &str| var(k).unwrap_or_else(|| panic!("{k} is not set"));
    Some(Peers {
        oidc: get("STEPGATE_TEST_OIDC_URL"),
        audience: var("STEPGATE_TEST_OIDC_AUDIENCE").unwrap_or_else(|| "stepgate".into()),
        moto: get("STEPGATE_TEST_MOTO_URL"),
        ak: get("STEPGATE_TEST_MOTO_AK"),
        sk: get("STEPGATE_TEST_MOTO_SK"),
        denied_ak: get("STEPGATE_TEST_MOTO_DENIED_AK"),
        denied_sk: get("STEPGATE_TEST_MOTO_DENIED_SK"),
        sm_arn: get("STEPGATE_TEST_MOTO_SM_ARN"),
    })
}

fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

async fn body_of(resp: http::Response<hyper::body::Incoming>) -> (u16, Bytes) {
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// A client-credentials access token from oidc-provider (RFC 9068 `at+jwt`). `pipeline-bot`
/// authenticates with HTTP Basic, `reader-bot` with the secret in the form (as registered).
async fn oidc_token(p: &Peers, client_id: &str, secret: &str) -> String {
    let mut req = http::Request::post(format!("{}/token", p.oidc))
        .header("content-type", "application/x-www-form-urlencoded");
    let form = if client_id == "pipeline-bot" {
        req = req.header("authorization", basic(client_id, secret));
        "grant_type=client_credentials".to_string()
    } else {
        format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}")
    };
    let req = req.body(Full::new(Bytes::from(form))).unwrap();
    let (status, body) = body_of(client().request(req).await.unwrap()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// Config for the peers: oidc-provider as issuer, moto as the Step Functions endpoint.
fn peer_config(p: &Peers, sk: &str, ak: &str) -> impl FnOnce(String) -> String {
    let (oidc, aud, moto, arn) = (
        p.oidc.clone(),
        p.audience.clone(),
        p.moto.clone(),
        p.sm_arn.clone(),
    );
    let (ak, sk) = (ak.to_string(), sk.to_string());
    move |c: String| {
        let issuer_block = format!(
            "[[issuers]]\nname = \"op\"\nissuer = \"{oidc}\"\naudiences = [\"{aud}\"]\n\n\
             [credentials.moto]\nkind = \"aws_static\"\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\n\n\
             [steps.demo]\npipeline = \"nightly-etl\"\nkind = \"stepfunctions\"\nstate_machine_arn = \"{arn}\"\n\
             credentials = \"moto\"\nendpoint = \"{moto}\"\n\n[credentials.sandbox]"
        );
        c.replace("[credentials.sandbox]", &issuer_block)
    }
}

/// Lists the demo machine's executions on moto.
async fn moto_executions(p: &Peers) -> Vec<Value> {
    list_executions(p, &p.sm_arn).await
}

/// One Step Functions call to moto, signed with the test user's key; the answer's JSON.
pub async fn sfn_call(p: &Peers, op: &str, body: &Value) -> Value {
    let creds = aws_credential_types::Credentials::new(&p.ak, &p.sk, None, None, "test");
    let host = p.moto.trim_start_matches("http://").to_string();
    let mut req = http::Request::post(format!("{}/", p.moto))
        .header("host", &host)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", format!("AWSStepFunctions.{op}"))
        .body(Bytes::from(body.to_string()))
        .unwrap();
    stepgate::forward::sigv4::sign_request(
        &mut req,
        &creds,
        "us-east-1",
        "states",
        std::time::SystemTime::now(),
    )
    .unwrap();
    let (status, body) = body_of(client().request(req.map(Full::new)).await.unwrap()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Every execution of a state machine on moto (all pages).
pub async fn list_executions(p: &Peers, arn: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut body = serde_json::json!({"stateMachineArn": arn, "maxResults": 1000});
        if let Some(t) = &next {
            body["nextToken"] = t.clone().into();
        }
        let v = sfn_call(p, "ListExecutions", &body).await;
        out.extend(v["executions"].as_array().cloned().unwrap_or_default());
        match v["nextToken"].as_str() {
            Some(t) => next = Some(t.to_string()),
            None => return out,
        }
    }
}
