//! The Google sandbox of `stepgate dev` and of the tests (in memory): Dataflow v1b3 and the
//! token endpoints `google-cloud-auth` calls. No emulator of Dataflow exists, so this checks what
//! Google checks: the bearer token (one it issued, or a service account's self-signed JWT
//! verified with the account's public key: RS256, issuer, expiry, lifetime, scope or audience),
//! the principal's permissions on the project, and the request shapes of the v1b3 discovery
//! document (unknown fields are refused, as Google's JSON parser does).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::clock::SharedClock;

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
    crate::route::percent_decode(&s.replace('+', " "))
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

    fn issue(&self, principal: &str) -> (String, Duration) {
        let token = format!("ya29.sandbox-{}", hex::encode(rand::random::<[u8; 16]>()));
        let mut st = self.state();
        let lifetime = st.lifetime.unwrap_or(Duration::from_secs(3600));
        st.issued.insert(
            token.clone(),
            Issued {
                principal: principal.to_string(),
                expires: self.clock.now() + lifetime,
            },
        );
        st.token_requests += 1;
        (token, lifetime)
    }

    /// The principal behind a bearer token, or why not.
    fn principal(&self, req_headers: &http::HeaderMap) -> Result<String, String> {
        let token = req_headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or("no bearer token")?;
        let now = self.clock.now();
        if let Some(i) = self.state().issued.get(token) {
            return if i.expires > now {
                Ok(i.principal.clone())
            } else {
                Err("token expired".into())
            };
        }
        self.self_signed(token, now)
    }

    /// A service account's self-signed JWT (AIP-4111).
    fn self_signed(&self, token: &str, now: SystemTime) -> Result<String, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        if header.alg != jsonwebtoken::Algorithm::RS256 {
            return Err("only RS256".into());
        }
        let kid = header.kid.ok_or("no kid")?;
        let st = self.state();
        let (email, key) = st.keys.get(&kid).ok_or("unknown key id")?;
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.validate_exp = false; // checked below against the injected clock
        v.validate_aud = false;
        v.set_required_spec_claims(&["exp", "iat", "iss"]);
        let data = jsonwebtoken::decode::<Value>(token, key, &v).map_err(|e| e.to_string())?;
        let c = data.claims;
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (iat, exp) = (
            c["iat"].as_u64().unwrap_or(u64::MAX),
            c["exp"].as_u64().unwrap_or(0),
        );
        if c["iss"] != email.as_str() || c.get("sub").is_some_and(|s| s != email.as_str()) {
            return Err("issuer is not the key's service account".into());
        }
        // Google allows an hour plus clock-skew allowance (google-cloud-auth backdates `iat`).
        if exp <= secs || iat > secs + 60 || exp.saturating_sub(iat) > 3600 + 300 {
            return Err("token expired or too long-lived".into());
        }
        let scoped = c["scope"]
            .as_str()
            .is_some_and(|s| s.split(' ').any(|x| x == CLOUD_PLATFORM));
        if !scoped && c["aud"] != DATAFLOW_AUDIENCE {
            return Err("neither the cloud-platform scope nor the Dataflow audience".into());
        }
        Ok(email.clone())
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

    fn sts(&self, method: &Method, body: &[u8]) -> Answer {
        if method != Method::POST {
            return rpc(405, "METHOD_NOT_ALLOWED", "POST only");
        }
        if self.state().tokens_down {
            return rpc(503, "UNAVAILABLE", "sts is down");
        }
        let f = form(body);
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
        let bad = |d: &str| {
            reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": "invalid_request", "error_description": d}),
            )
        };
        if get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" {
            return bad("grant_type must be token-exchange");
        }
        if get("requested_token_type") != "urn:ietf:params:oauth:token-type:access_token" {
            return bad("requested_token_type must be access_token");
        }
        if get("subject_token_type").is_empty() {
            return bad("subject_token_type is required");
        }
        if !get("scope").split(' ').any(|s| s == CLOUD_PLATFORM) {
            return bad("scope must include cloud-platform");
        }
        let principal = self
            .state()
            .federation
            .get(&(
                get("audience").to_string(),
                get("subject_token").to_string(),
            ))
            .cloned();
        let Some(principal) = principal else {
            return reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": "invalid_grant", "error_description": "The subject token is not accepted for this audience."}),
            );
        };
        let (token, lifetime) = self.issue(&principal);
        reply(
            StatusCode::OK,
            &json!({
                "access_token": token,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": lifetime.as_secs(),
            }),
        )
    }

    fn generate_access_token(
        &self,
        parts: &http::request::Parts,
        rest: &str,
        body: &[u8],
    ) -> Answer {
        let Some(target) = rest.strip_suffix(":generateAccessToken") else {
            return rpc(404, "NOT_FOUND", "unknown IAM credentials method");
        };
        if parts.method != Method::POST {
            return rpc(405, "METHOD_NOT_ALLOWED", "POST only");
        }
        if self.state().tokens_down {
            return rpc(503, "UNAVAILABLE", "iamcredentials is down");
        }
        let source = match self.principal(&parts.headers) {
            Ok(p) => p,
            Err(e) => {
                return rpc(
                    401,
                    "UNAUTHENTICATED",
                    &format!("Request had invalid authentication credentials: {e}"),
                );
            }
        };
        let Ok(b) = serde_json::from_slice::<Value>(body) else {
            return rpc(400, "INVALID_ARGUMENT", "body is not JSON");
        };
        let scoped = b["scope"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s == CLOUD_PLATFORM));
        if !scoped {
            return rpc(400, "INVALID_ARGUMENT", "scope must include cloud-platform");
        }
        if let Some(l) = b["lifetime"].as_str() {
            let secs: u64 = l.trim_end_matches('s').parse().unwrap_or(u64::MAX);
            if secs > 3600 {
                return rpc(400, "INVALID_ARGUMENT", "lifetime must be at most 3600s");
            }
        }
        let allowed = self
            .state()
            .impersonation
            .contains(&(source.clone(), target.to_string()));
        if !allowed {
            return rpc(
                403,
                "PERMISSION_DENIED",
                &format!(
                    "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist): {source} -> {target}"
                ),
            );
        }
        let (token, lifetime) = self.issue(target);
        reply(
            StatusCode::OK,
            &json!({"accessToken": token, "expireTime": crate::app::rfc3339(self.clock.now() + lifetime)}),
        )
    }

    fn metadata(&self, parts: &http::request::Parts, path: &str) -> Answer {
        if parts
            .headers
            .get("metadata-flavor")
            .and_then(|v| v.to_str().ok())
            != Some("Google")
        {
            return reply(
                StatusCode::FORBIDDEN,
                &json!("Missing Metadata-Flavor:Google header."),
            );
        }
        if self.state().tokens_down {
            return rpc(503, "UNAVAILABLE", "metadata server is down");
        }
        let account = self.state().metadata_account.clone();
        match path {
            "/computeMetadata/v1/universe/universe-domain" => {
                Response::new(Full::new(Bytes::from_static(b"googleapis.com")))
            }
            "/computeMetadata/v1/instance/service-accounts/default/token" => match account {
                Some(a) => {
                    let (token, lifetime) = self.issue(&a);
                    reply(
                        StatusCode::OK,
                        &json!({"access_token": token, "expires_in": lifetime.as_secs(), "token_type": "Bearer"}),
                    )
                }
                None => rpc(404, "NOT_FOUND", "no service account"),
            },
            "/computeMetadata/v1/instance/service-accounts/default/email" => match account {
                Some(a) => Response::new(Full::new(Bytes::from(a))),
                None => rpc(404, "NOT_FOUND", "no service account"),
            },
            _ => rpc(404, "NOT_FOUND", "unknown metadata path"),
        }
    }

    fn dataflow(&self, parts: &http::request::Parts, rest: &str, body: &[u8]) -> Answer {
        let principal = match self.principal(&parts.headers) {
            Ok(p) => p,
            Err(e) => {
                return rpc(
                    401,
                    "UNAUTHENTICATED",
                    &format!(
                        "Request had invalid authentication credentials. Expected OAuth 2 access token: {e}"
                    ),
                );
            }
        };
        if let Some((status, code)) = self.state().inject.pop_front() {
            return rpc(status, &code, "injected failure");
        }
        // {project}/locations/{location}/{what}
        let segs: Vec<&str> = rest.splitn(4, '/').collect();
        let [project, "locations", location, what] = segs.as_slice() else {
            return rpc(404, "NOT_FOUND", "unknown Dataflow path");
        };
        let (project, location) = (project.to_string(), location.to_string());
        let need = |perm: &str| -> Option<Answer> {
            let ok = self.state().grants.contains(&(
                principal.clone(),
                project.clone(),
                perm.to_string(),
            ));
            (!ok).then(|| {
                rpc(
                    403,
                    "PERMISSION_DENIED",
                    &format!("Permission '{perm}' denied on project: '{project}'"),
                )
            })
        };
        let q = query(&parts.uri);
        let m = &parts.method;
        let answer = match *what {
            "templates:launch" | "flexTemplates:launch" if m == Method::POST => {
                if let Some(d) = need("dataflow.jobs.create") {
                    return d;
                }
                self.launch(
                    *what == "flexTemplates:launch",
                    &project,
                    &location,
                    &q,
                    body,
                )
            }
            "jobs" if m == Method::GET => {
                if let Some(d) = need("dataflow.jobs.list") {
                    return d;
                }
                self.list(&project, &location, &q)
            }
            w if w.starts_with("jobs/") => {
                let id = w.trim_start_matches("jobs/");
                if m == Method::GET {
                    if let Some(d) = need("dataflow.jobs.get") {
                        return d;
                    }
                    self.get(&project, &location, id)
                } else if m == Method::PUT {
                    if let Some(d) = need("dataflow.jobs.cancel") {
                        return d;
                    }
                    self.update(&project, &location, id, body)
                } else {
                    rpc(405, "METHOD_NOT_ALLOWED", "GET or PUT")
                }
            }
            _ if matches!(*what, "templates:launch" | "flexTemplates:launch" | "jobs") => {
                rpc(405, "METHOD_NOT_ALLOWED", "wrong method")
            }
            _ => rpc(404, "NOT_FOUND", "unknown Dataflow method"),
        };
        if answer.status().is_success() {
            self.state()
                .calls
                .push((m.to_string(), parts.uri.path().to_string(), principal));
        }
        answer
    }

    fn launch(
        &self,
        flex: bool,
        project: &str,
        location: &str,
        q: &HashMap<String, String>,
        body: &[u8],
    ) -> Answer {
        let Ok(b) = serde_json::from_slice::<Value>(body) else {
            return rpc(400, "INVALID_ARGUMENT", "Invalid JSON payload received.");
        };
        let unknown = |obj: &Value, allowed: &[&str]| -> Option<String> {
            obj.as_object()?
                .keys()
                .find(|k| !allowed.contains(&k.as_str()))
                .cloned()
        };
        let (params, validate_only) = if flex {
            if let Some(k) = unknown(&b, &["launchParameter", "validateOnly"]) {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    &format!("Invalid JSON payload received. Unknown name \"{k}\""),
                );
            }
            let lp = &b["launchParameter"];
            if let Some(k) = unknown(
                lp,
                &[
                    "jobName",
                    "containerSpecGcsPath",
                    "containerSpec",
                    "parameters",
                    "launchOptions",
                    "environment",
                    "update",
                    "transformNameMappings",
                ],
            ) {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    &format!(
                        "Invalid JSON payload received. Unknown name \"{k}\" at 'launch_parameter'"
                    ),
                );
            }
            let spec = lp["containerSpecGcsPath"].as_str().unwrap_or("");
            if !spec.starts_with("gs://") && lp.get("containerSpec").is_none() {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    "containerSpecGcsPath must be a gs:// path",
                );
            }
            let env: Vec<&str> = RUNTIME_ENVIRONMENT
                .iter()
                .chain(FLEX_ENVIRONMENT)
                .copied()
                .collect();
            if let Some(k) = unknown(&lp["environment"], &env) {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    &format!(
                        "Invalid JSON payload received. Unknown name \"{k}\" at 'launch_parameter.environment'"
                    ),
                );
            }
            (lp.clone(), b["validateOnly"].as_bool().unwrap_or(false))
        } else {
            if !q.get("gcsPath").is_some_and(|p| p.starts_with("gs://")) {
                return rpc(400, "INVALID_ARGUMENT", "gcsPath must be a gs:// path");
            }
            if let Some(k) = unknown(
                &b,
                &[
                    "jobName",
                    "parameters",
                    "environment",
                    "update",
                    "transformNameMapping",
                ],
            ) {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    &format!("Invalid JSON payload received. Unknown name \"{k}\""),
                );
            }
            if let Some(k) = unknown(&b["environment"], RUNTIME_ENVIRONMENT) {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    &format!(
                        "Invalid JSON payload received. Unknown name \"{k}\" at 'launch_parameters.environment'"
                    ),
                );
            }
            (
                b.clone(),
                q.get("validateOnly").is_some_and(|v| v == "true"),
            )
        };
        let name = params["jobName"].as_str().unwrap_or("");
        if !crate::config::valid_dataflow_job_name(name) {
            return rpc(
                400,
                "INVALID_ARGUMENT",
                &format!("Invalid job name `{name}`: [a-z]([-a-z0-9]{{0,1022}}[a-z0-9])?"),
            );
        }
        if let Some(p) = params.get("parameters") {
            let all_strings = p
                .as_object()
                .is_some_and(|o| o.values().all(Value::is_string));
            if !all_strings {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    "parameters must map strings to strings",
                );
            }
        }
        if validate_only {
            return reply(StatusCode::OK, &json!({}));
        }
        let now = self.clock.now();
        let mut st = self.state();
        let active = st.jobs.iter().any(|j| {
            j.project == project
                && j.location == location
                && j.json["name"] == name
                && !is_terminal(j.json["currentState"].as_str().unwrap_or(""))
        });
        if active {
            return rpc(
                409,
                "ALREADY_EXISTS",
                &format!(
                    "There is already an active job named {name}. If you want to submit a second job, try again by setting a different name."
                ),
            );
        }
        st.seq += 1;
        let t = time::OffsetDateTime::from(now);
        let id = format!(
            "{:04}-{:02}-{:02}_{:02}_{:02}_{:02}-{:019}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            st.seq * 7_919 + u64::from(rand::random::<u16>())
        );
        let stamp = crate::app::rfc3339(now);
        let job = json!({
            "id": id,
            "projectId": project,
            "name": name,
            "type": "JOB_TYPE_BATCH",
            "currentState": "JOB_STATE_RUNNING",
            "currentStateTime": stamp,
            "createTime": stamp,
            "startTime": stamp,
            "location": location,
            "labels": params["environment"]["additionalUserLabels"].clone(),
        });
        st.jobs.push(Job {
            json: job.clone(),
            project: project.to_string(),
            location: location.to_string(),
            parameters: params["parameters"].clone(),
            kind: if flex { "flex" } else { "classic" },
        });
        st.launches += 1;
        reply(StatusCode::OK, &json!({"job": job}))
    }

    fn get(&self, project: &str, location: &str, id: &str) -> Answer {
        let st = self.state();
        match st
            .jobs
            .iter()
            .find(|j| j.project == project && j.location == location && j.json["id"] == id)
        {
            Some(j) => reply(StatusCode::OK, &j.json),
            None => rpc(404, "NOT_FOUND", &format!("(job) {id} not found")),
        }
    }

    fn update(&self, project: &str, location: &str, id: &str, body: &[u8]) -> Answer {
        let Ok(b) = serde_json::from_slice::<Value>(body) else {
            return rpc(400, "INVALID_ARGUMENT", "Invalid JSON payload received.");
        };
        let requested = b["requestedState"].as_str().unwrap_or("");
        let terminal_to = match requested {
            "JOB_STATE_CANCELLED" | "JOB_STATE_DRAINED" | "JOB_STATE_DONE" => requested,
            _ => {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    "requestedState must be JOB_STATE_CANCELLED, JOB_STATE_DRAINED or JOB_STATE_DONE",
                );
            }
        };
        let now = crate::app::rfc3339(self.clock.now());
        let mut st = self.state();
        let Some(j) = st
            .jobs
            .iter_mut()
            .find(|j| j.project == project && j.location == location && j.json["id"] == id)
        else {
            return rpc(404, "NOT_FOUND", &format!("(job) {id} not found"));
        };
        let state = j.json["currentState"].as_str().unwrap_or("").to_string();
        if is_terminal(&state) {
            return rpc(
                400,
                "FAILED_PRECONDITION",
                &format!("Workflow modification failed: the job is in state {state}"),
            );
        }
        j.json["requestedState"] = json!(terminal_to);
        j.json["currentState"] = json!(terminal_to);
        j.json["currentStateTime"] = json!(now);
        reply(StatusCode::OK, &j.json)
    }

    fn list(&self, project: &str, location: &str, q: &HashMap<String, String>) -> Answer {
        let filter = q.get("filter").map(String::as_str).unwrap_or("ALL");
        if !matches!(filter, "ALL" | "ACTIVE" | "TERMINATED" | "UNKNOWN") {
            return rpc(
                400,
                "INVALID_ARGUMENT",
                "filter must be ALL, ACTIVE or TERMINATED",
            );
        }
        let size: usize = q
            .get("pageSize")
            .and_then(|s| s.parse().ok())
            .unwrap_or(50)
            .clamp(1, 100);
        let from: usize = q.get("pageToken").and_then(|s| s.parse().ok()).unwrap_or(0);
        let st = self.state();
        let jobs: Vec<&Value> = st
            .jobs
            .iter()
            .rev()
            .filter(|j| j.project == project && j.location == location)
            .map(|j| &j.json)
            .filter(|j| q.get("name").is_none_or(|n| j["name"] == n.as_str()))
            .filter(|j| {
                let t = is_terminal(j["currentState"].as_str().unwrap_or(""));
                match filter {
                    "ACTIVE" => !t,
                    "TERMINATED" => t,
                    _ => true,
                }
            })
            .collect();
        let page: Vec<&Value> = jobs.iter().skip(from).take(size).copied().collect();
        let mut out = BTreeMap::new();
        if !page.is_empty() {
            out.insert("jobs", json!(page));
        }
        if from + size < jobs.len() {
            out.insert("nextPageToken", json!((from + size).to_string()));
        }
        reply(StatusCode::OK, &json!(out))
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
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const EMAIL: &str = "launcher@sandbox-project.iam.gserviceaccount.com";

    async fn call(
        g: &GoogleSandbox,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> (u16, Value) {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", g.url()))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn jwt(kid: &str, pem: &[u8], claims: &Value) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(
            &h,
            claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(pem).unwrap(),
        )
        .unwrap()
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/cases/gcp/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    const LAUNCH: &str =
        "/v1b3/projects/p/locations/europe-west1/templates:launch?gcsPath=gs%3A%2F%2Ft%2Fx";

    #[tokio::test]
    async fn self_signed_jwts_are_verified_like_google_does() {
        let clock = Arc::new(ManualClock::at(1_795_000_000));
        let g = start(clock.clone()).await.unwrap();
        let public = String::from_utf8(fixture("sa-key.pub.pem")).unwrap();
        g.add_service_account_key(EMAIL, "k1", &public);
        g.grant(EMAIL, "p", "dataflow.jobs.create");
        let now = 1_795_000_000u64;
        let claims = json!({"iss": EMAIL, "sub": EMAIL, "scope": CLOUD_PLATFORM, "iat": now, "exp": now + 3600});
        let key = fixture("sa-key.pem");
        let body = r#"{"jobName": "x-1", "parameters": {"a": "b"}}"#;
        let (s, v) = call(&g, "POST", LAUNCH, &jwt("k1", &key, &claims), body).await;
        assert_eq!(s, 200, "{v}");
        // Unknown kid, wrong issuer, expired, too long, no scope: 401.
        let other = {
            let mut c = claims.clone();
            c["iss"] = json!("someone@else");
            c
        };
        let expired = {
            let mut c = claims.clone();
            c["exp"] = json!(now - 1);
            c
        };
        let long = {
            let mut c = claims.clone();
            c["exp"] = json!(now + 7200);
            c
        };
        let unscoped = {
            let mut c = claims.clone();
            c["scope"] = json!("https://www.googleapis.com/auth/pubsub");
            c
        };
        for (kid, c) in [
            ("k2", &claims),
            ("k1", &other),
            ("k1", &expired),
            ("k1", &long),
            ("k1", &unscoped),
        ] {
            let (s, v) = call(
                &g,
                "POST",
                LAUNCH,
                &jwt(kid, &key, c),
                r#"{"jobName": "x-2"}"#,
            )
            .await;
            assert_eq!(
                (s, v["error"]["status"].as_str()),
                (401, Some("UNAUTHENTICATED")),
                "{kid} {c}"
            );
        }
        // Signed by another key under the registered kid: 401.
        let tampered = jwt("k1", &key, &claims);
        let (head, _) = tampered.rsplit_once('.').unwrap();
        let (s, _) = call(&g, "POST", LAUNCH, &format!("{head}.AAAA"), body).await;
        assert_eq!(s, 401);
        assert_eq!(g.launches(), 1);
    }

    #[tokio::test]
    async fn request_shapes_permissions_and_active_names_are_checked() {
        let clock = Arc::new(ManualClock::at(1_795_000_000));
        let g = start(clock.clone()).await.unwrap();
        g.set_metadata_account(EMAIL);
        let (token, _) = g.issue(EMAIL);
        let body = r#"{"jobName": "load-1", "parameters": {"date": "2026-11-24"}}"#;
        let (s, v) = call(&g, "POST", LAUNCH, &token, body).await;
        assert_eq!(
            (s, v["error"]["status"].as_str()),
            (403, Some("PERMISSION_DENIED")),
            "{v}"
        );
        g.grant(EMAIL, "p", "dataflow.jobs.create");
        for (bad, why) in [
            (r#"{"jobName": "load-1", "extra": 1}"#, "unknown field"),
            (
                r#"{"jobName": "load-1", "environment": {"workers": 3}}"#,
                "unknown environment field",
            ),
            (r#"{"jobName": "Load_1"}"#, "job name alphabet"),
            (
                r#"{"jobName": "load-1", "parameters": {"n": 3}}"#,
                "non-string parameter",
            ),
        ] {
            let (s, v) = call(&g, "POST", LAUNCH, &token, bad).await;
            assert_eq!(
                (s, v["error"]["status"].as_str()),
                (400, Some("INVALID_ARGUMENT")),
                "{why}: {v}"
            );
        }
        let no_path = "/v1b3/projects/p/locations/europe-west1/templates:launch";
        assert_eq!(call(&g, "POST", no_path, &token, body).await.0, 400);
        let (s, v) = call(&g, "POST", LAUNCH, &token, body).await;
        assert_eq!(s, 200, "{v}");
        let id = v["job"]["id"].as_str().unwrap().to_string();
        let (s, v) = call(&g, "POST", LAUNCH, &token, body).await;
        assert_eq!(
            (s, v["error"]["status"].as_str()),
            (409, Some("ALREADY_EXISTS"))
        );
        g.finish_job(&id);
        assert_eq!(
            call(&g, "POST", LAUNCH, &token, body).await.0,
            200,
            "a finished name runs again"
        );
        // Issued tokens expire with the clock.
        clock.advance(Duration::from_secs(3601));
        let (s, _) = call(&g, "POST", LAUNCH, &token, r#"{"jobName": "load-2"}"#).await;
        assert_eq!(s, 401);
        assert_eq!(g.launches(), 2);
    }
}
