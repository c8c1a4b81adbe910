//! The Google sandbox of `stepgate dev` and of the tests (in memory): Dataflow v1b3 and the
//! token endpoints `google-cloud-auth` calls. No emulator of Dataflow exists, so this checks what
//! Google checks: the bearer token (one it issued, or a service account's self-signed JWT
//! verified with the account's public key: RS256, issuer, expiry, lifetime, scope or audience),
//! the principal's permissions on the project, and the request shapes of the v1b3 discovery
//! document (unknown fields are refused, as Google's JSON parser does).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::clock::SharedClock;

mod dataflow;
mod tokens;

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const DATAFLOW_AUDIENCE: &str = "https://dataflow.googleapis.com/";

/// RuntimeEnvironment fields (classic templates), from the v1b3 discovery document.
const RUNTIME_ENVIRONMENT: &[&str] = &[
    "numWorkers",
    "maxWorkers",
    "zone",
    "serviceAccountEmail",
    "tempLocation",
    "bypassTempDirValidation",
    "machineType",
    "additionalExperiments",
    "network",
    "subnetwork",
    "additionalUserLabels",
    "kmsKeyName",
    "ipConfiguration",
    "workerRegion",
    "workerZone",
    "enableStreamingEngine",
    "diskSizeGb",
    "streamingMode",
];

/// FlexTemplateRuntimeEnvironment adds these.
const FLEX_ENVIRONMENT: &[&str] = &[
    "stagingLocation",
    "launcherMachineType",
    "sdkContainerImage",
    "autoscalingAlgorithm",
    "dumpHeapOnOom",
    "saveHeapDumpsToGcsPath",
    "flexrsGoal",
];

struct Job {
    json: Value,
    project: String,
    location: String,
    parameters: Value,
    kind: &'static str,
}

struct Issued {
    principal: String,
    expires: SystemTime,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, (String, jsonwebtoken::DecodingKey)>,
    grants: HashSet<(String, String, String)>,
    impersonation: HashSet<(String, String)>,
    federation: HashMap<(String, String), String>,
    metadata_account: Option<String>,
    lifetime: Option<Duration>,
    tokens_down: bool,
    inject: VecDeque<(u16, String)>,
    issued: HashMap<String, Issued>,
    jobs: Vec<Job>,
    launches: usize,
    token_requests: usize,
    calls: Vec<(String, String, String)>,
    seq: u64,
}

/// The sandbox.
pub struct GoogleSandbox {
    url: String,
    clock: SharedClock,
    state: Mutex<State>,
}

type Answer = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: &Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// A `google.rpc.Status` error.
fn rpc(code: u16, status: &str, message: &str) -> Answer {
    reply(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({"error": {"code": code, "message": message, "status": status}}),
    )
}

fn form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((decode(k), decode(v)))
        })
        .collect()
}

fn decode(s: &str) -> String {
    crate::route::percent_decode(&s.replace('+', " ")).into_owned()
}

fn query(uri: &http::Uri) -> HashMap<String, String> {
    uri.query().map(|q| form(q.as_bytes())).unwrap_or_default()
}

impl GoogleSandbox {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Registers a service account's key (RSA SPKI PEM) for its self-signed JWTs.
    pub fn add_service_account_key(&self, email: &str, key_id: &str, public_key_pem: &str) {
        match jsonwebtoken::DecodingKey::from_rsa_pem(public_key_pem.as_bytes()) {
            Ok(k) => {
                self.state()
                    .keys
                    .insert(key_id.to_string(), (email.to_string(), k));
            }
            Err(e) => tracing::warn!(message = "Sandbox: bad public key.", error = %e),
        }
    }

    /// Grants `permission` (`dataflow.jobs.create|get|list|cancel`) on `project`.
    pub fn grant(&self, principal: &str, project: &str, permission: &str) {
        self.state().grants.insert((
            principal.to_string(),
            project.to_string(),
            permission.to_string(),
        ));
    }

    /// `source_principal` may mint tokens for `target_email` (Service Account Token Creator).
    pub fn allow_impersonation(&self, source_principal: &str, target_email: &str) {
        self.state()
            .impersonation
            .insert((source_principal.to_string(), target_email.to_string()));
    }

    /// A workload identity provider: `subject_token` for `audience` is `principal`.
    pub fn add_federation(&self, audience: &str, subject_token: &str, principal: &str) {
        self.state().federation.insert(
            (audience.to_string(), subject_token.to_string()),
            principal.to_string(),
        );
    }

    /// The metadata server's default service account.
    pub fn set_metadata_account(&self, email: &str) {
        self.state().metadata_account = Some(email.to_string());
    }

    /// Lifetime of the tokens it issues (default 1 h).
    pub fn set_token_lifetime(&self, d: Duration) {
        self.state().lifetime = Some(d);
    }

    /// Makes STS, `generateAccessToken` and the metadata server answer 503.
    pub fn set_token_endpoints_down(&self, down: bool) {
        self.state().tokens_down = down;
    }

    /// Queues a failure for the next Dataflow call (before any work is done).
    pub fn fail_next_dataflow(&self, status: u16, rpc_status: &str) {
        self.state()
            .inject
            .push_back((status, rpc_status.to_string()));
    }

    /// Moves a job to `JOB_STATE_DONE`.
    pub fn finish_job(&self, job_id: &str) {
        let now = crate::app::rfc3339(self.clock.now());
        let mut st = self.state();
        if let Some(j) = st.jobs.iter_mut().find(|j| j.json["id"] == job_id) {
            j.json["currentState"] = json!("JOB_STATE_DONE");
            j.json["currentStateTime"] = json!(now);
        }
    }

    /// Every job as Job JSON, with what was launched under `_sandbox`.
    pub fn jobs(&self) -> Vec<Value> {
        self.state()
            .jobs
            .iter()
            .map(|j| {
                let mut v = j.json.clone();
                v["_sandbox"] = json!({"parameters": j.parameters, "kind": j.kind});
                v
            })
            .collect()
    }

    /// Successful launches.
    pub fn launches(&self) -> usize {
        self.state().launches
    }

    /// Tokens issued (STS, `generateAccessToken`, metadata).
    pub fn token_requests(&self) -> usize {
        self.state().token_requests
    }

    /// Accepted Dataflow calls: (method, path, principal).
    pub fn dataflow_calls(&self) -> Vec<(String, String, String)> {
        self.state().calls.clone()
    }

    async fn answer(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> Answer {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return rpc(400, "INVALID_ARGUMENT", "unreadable body"),
        };
        let path = parts.uri.path().to_string();
        if path == "/v1/token" {
            return self.sts(&parts.method, &body);
        }
        if let Some(rest) = path.strip_prefix("/v1/projects/-/serviceAccounts/") {
            return self.generate_access_token(&parts, rest, &body);
        }
        if path.starts_with("/computeMetadata/v1/") {
            return self.metadata(&parts, &path);
        }
        if let Some(rest) = path.strip_prefix("/v1b3/projects/") {
            return self.dataflow(&parts, rest, &body);
        }
        rpc(404, "NOT_FOUND", &format!("unknown path {path}"))
    }
}

fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "JOB_STATE_DONE"
            | "JOB_STATE_FAILED"
            | "JOB_STATE_CANCELLED"
            | "JOB_STATE_UPDATED"
            | "JOB_STATE_DRAINED"
    )
}

/// Starts the sandbox on `127.0.0.1:0`.
pub async fn start(clock: SharedClock) -> Result<Arc<GoogleSandbox>, String> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| format!("google sandbox cannot listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let sandbox = Arc::new(GoogleSandbox {
        url: format!("http://{addr}"),
        clock,
        state: Mutex::new(State::default()),
    });
    super::serve_loopback(listener, {
        let sandbox = sandbox.clone();
        move |req| sandbox.clone().answer(req)
    });
    Ok(sandbox)
}

#[cfg(test)]
mod tests;
