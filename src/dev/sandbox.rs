//! The sandbox Step Functions upstream of `stepgate dev` (in memory). It speaks the JSON 1.0
//! protocol and checks what AWS checks first: the SigV4 signature (recomputed with
//! `aws-sigv4` from the known dev secret), the signing service and region, and the request shape.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::forward::sigv4;

/// The dev access key id the sandbox accepts.
pub const DEV_ACCESS_KEY: &str = "AKIASTEPGATEDEV00001";
/// Its secret (a sandbox value, not a real AWS key).
pub const DEV_SECRET_KEY: &str = "stepgate-dev-sandbox-secret-key-not-for-aws";

/// One execution the sandbox knows.
#[derive(Debug, Clone)]
pub struct Execution {
    /// ARN.
    pub arn: String,
    /// State machine ARN.
    pub state_machine_arn: String,
    /// Input JSON text.
    pub input: String,
    /// RUNNING or ABORTED.
    pub status: String,
    /// Start (epoch seconds).
    pub start: f64,
}

/// The sandbox state.
pub struct Sandbox {
    /// Base URL.
    pub url: String,
    region: String,
    executions: Mutex<BTreeMap<String, Execution>>,
    /// Failures to answer with before handling the next requests (tests): (status, AWS code).
    inject: Mutex<std::collections::VecDeque<(u16, String)>>,
    calls: std::sync::atomic::AtomicU64,
}

impl Sandbox {
    /// Makes the next request answer `status` with AWS error `code` (tests: throttling, 5xx).
    pub fn fail_next(&self, status: u16, code: &str) {
        if let Ok(mut q) = self.inject.lock() {
            q.push_back((status, code.to_string()));
        }
    }

    /// Requests received so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Executions so far.
    pub fn executions(&self) -> Vec<Execution> {
        self.executions
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn err(status: StatusCode, ty: &str, msg: &str) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from(
            json!({"__type": ty, "message": msg}).to_string(),
        )));
        *r.status_mut() = status;
        if let Ok(v) = http::HeaderValue::from_str(ty) {
            r.headers_mut().insert("x-amzn-errortype", v);
        }
        r
    }

    /// Checks the signature by re-signing the same request with the dev secret.
    #[allow(
        clippy::result_large_err,
        reason = "the error is the response the sandbox sends"
    )]
    fn check_signature(
        &self,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Result<(), Response<Full<Bytes>>> {
        let deny = |m: &str| Self::err(StatusCode::FORBIDDEN, "InvalidSignatureException", m);
        let auth = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| deny("missing Authorization header"))?;
        let rest = auth
            .strip_prefix("AWS4-HMAC-SHA256 ")
            .ok_or_else(|| deny("not a SigV4 Authorization header"))?;
        let fields: BTreeMap<&str, &str> = rest
            .split(", ")
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let credential = fields
            .get("Credential")
            .ok_or_else(|| deny("no Credential"))?;
        let signed = fields
            .get("SignedHeaders")
            .ok_or_else(|| deny("no SignedHeaders"))?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [akid, _date, region, service, "aws4_request"] = scope.as_slice() else {
            return Err(deny("malformed credential scope"));
        };
        if *akid != DEV_ACCESS_KEY {
            return Err(Self::err(
                StatusCode::FORBIDDEN,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ));
        }
        if *service != "states" || *region != self.region {
            return Err(deny("credential scope names the wrong service or region"));
        }
        let amz_date = parts
            .headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| deny("missing X-Amz-Date"))?;
        let when = time::PrimitiveDateTime::parse(
            amz_date,
            &time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
        )
        .map_err(|_| deny("bad X-Amz-Date"))?
        .assume_utc();
        let when = SystemTime::from(when);
        // Rebuild the request with only the headers that were signed, and sign it again.
        let mut again = http::Request::post(parts.uri.clone())
            .body(body.clone())
            .map_err(|_| deny("bad request"))?;
        for name in signed.split(';') {
            if name == "x-amz-date" || name == "x-amz-content-sha256" {
                continue;
            }
            if let Some(v) = parts.headers.get(name) {
                again.headers_mut().insert(
                    http::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| deny("bad header"))?,
                    v.clone(),
                );
            } else {
                return Err(deny("a signed header is missing"));
            }
        }
        let creds = aws_credential_types::Credentials::new(
            DEV_ACCESS_KEY,
            DEV_SECRET_KEY,
            None,
            None,
            "sandbox",
        );
        sigv4::sign_request(&mut again, &creds, region, service, when).map_err(|e| deny(&e))?;
        let expected = again
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if expected != Some(auth) {
            return Err(deny(
                "The request signature we calculated does not match the signature you provided.",
            ));
        }
        Ok(())
    }

    async fn answer(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let injected = self.inject.lock().ok().and_then(|mut q| q.pop_front());
        if let Some((status, code)) = injected {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Self::err(status, &code, "injected failure");
        }
        let (parts, body) = req.into_parts();
        let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
            return Self::err(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                "unreadable body",
            );
        };
        if let Err(r) = self.check_signature(&parts, &body) {
            return r;
        }
        if parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            != Some("application/x-amz-json-1.0")
        {
            return Self::err(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                "Content-Type must be application/x-amz-json-1.0",
            );
        }
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return Self::err(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                "body is not JSON",
            );
        };
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        #[allow(
            clippy::disallowed_methods,
            reason = "the sandbox stands in for AWS, which has its own clock"
        )]
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        let mut execs = match self.executions.lock() {
            Ok(g) => g,
            Err(_) => {
                return Self::err(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", "lock");
            }
        };
        let ok = |v: Value| Response::new(Full::new(Bytes::from(v.to_string())));
        match target {
            "AWSStepFunctions.StartExecution" => {
                let Some(sm) = s("stateMachineArn") else {
                    return Self::err(
                        StatusCode::BAD_REQUEST,
                        "ValidationException",
                        "stateMachineArn is required",
                    );
                };
                let Some(prefix) = sm
                    .split_once(":stateMachine:")
                    .map(|(a, n)| format!("{a}:execution:{n}:"))
                else {
                    return Self::err(StatusCode::BAD_REQUEST, "InvalidArn", "Invalid Arn");
                };
                let input = s("input").unwrap_or_else(|| "{}".into());
                if serde_json::from_str::<Value>(&input).is_err() {
                    return Self::err(
                        StatusCode::BAD_REQUEST,
                        "InvalidExecutionInput",
                        "input is not JSON",
                    );
                }
                let name = s("name").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let arn = format!("{prefix}{name}");
                if let Some(e) = execs.get(&arn) {
                    if e.input == input && e.status == "RUNNING" {
                        return ok(json!({"executionArn": e.arn, "startDate": e.start}));
                    }
                    return Self::err(
                        StatusCode::BAD_REQUEST,
                        "ExecutionAlreadyExists",
                        &format!("Execution Already Exists: '{arn}'"),
                    );
                }
                execs.insert(
                    arn.clone(),
                    Execution {
                        arn: arn.clone(),
                        state_machine_arn: sm,
                        input,
                        status: "RUNNING".into(),
                        start: now,
                    },
                );
                ok(json!({"executionArn": arn, "startDate": now}))
            }
            "AWSStepFunctions.StartSyncExecution" => {
                let Some(sm) = s("stateMachineArn") else {
                    return Self::err(
                        StatusCode::BAD_REQUEST,
                        "ValidationException",
                        "stateMachineArn is required",
                    );
                };
                let Some((head, machine)) = sm.split_once(":stateMachine:") else {
                    return Self::err(StatusCode::BAD_REQUEST, "InvalidArn", "Invalid Arn");
                };
                let input = s("input").unwrap_or_else(|| "{}".into());
                let name = s("name").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let arn = format!("{head}:express:{machine}:{name}:{}", uuid::Uuid::new_v4());
                // The sandbox's express workflows echo their input as output.
                ok(
                    json!({"executionArn": arn, "stateMachineArn": sm, "name": name, "status": "SUCCEEDED",
                          "startDate": now, "stopDate": now, "input": input, "output": input}),
                )
            }
            "AWSStepFunctions.ListExecutions" => {
                let Some(sm) = s("stateMachineArn") else {
                    return Self::err(
                        StatusCode::BAD_REQUEST,
                        "ValidationException",
                        "stateMachineArn is required",
                    );
                };
                let filter = s("statusFilter");
                let list: Vec<Value> = execs
                    .values()
                    .filter(|e| e.state_machine_arn == sm && filter.as_ref().is_none_or(|f| *f == e.status))
                    .map(|e| {
                        json!({"executionArn": e.arn, "stateMachineArn": e.state_machine_arn,
                               "name": e.arn.rsplit(':').next(), "status": e.status, "startDate": e.start})
                    })
                    .collect();
                ok(json!({"executions": list}))
            }
            "AWSStepFunctions.DescribeExecution" => {
                match s("executionArn").and_then(|a| execs.get(&a).cloned()) {
                    Some(e) => ok(
                        json!({"executionArn": e.arn, "stateMachineArn": e.state_machine_arn, "name": e.arn.rsplit(':').next(), "status": e.status, "startDate": e.start, "input": e.input}),
                    ),
                    None => Self::err(
                        StatusCode::BAD_REQUEST,
                        "ExecutionDoesNotExist",
                        "Execution Does Not Exist",
                    ),
                }
            }
            "AWSStepFunctions.StopExecution" => {
                match s("executionArn").and_then(|a| execs.get_mut(&a)) {
                    Some(e) => {
                        e.status = "ABORTED".into();
                        ok(json!({"stopDate": now}))
                    }
                    None => Self::err(
                        StatusCode::BAD_REQUEST,
                        "ExecutionDoesNotExist",
                        "Execution Does Not Exist",
                    ),
                }
            }
            other => Self::err(
                StatusCode::BAD_REQUEST,
                "UnknownOperationException",
                &format!("unknown operation `{other}`"),
            ),
        }
    }
}

/// Starts the sandbox on `127.0.0.1:<port>` for `region`.
pub async fn start(port: u16, region: &str) -> Result<Arc<Sandbox>, String> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .map_err(|e| format!("sandbox cannot listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let sandbox = Arc::new(Sandbox {
        url: format!("http://{addr}"),
        region: region.to_string(),
        executions: Mutex::new(BTreeMap::new()),
        inject: Mutex::new(std::collections::VecDeque::new()),
        calls: std::sync::atomic::AtomicU64::new(0),
    });
    super::serve_loopback(listener, {
        let sandbox = sandbox.clone();
        move |req| sandbox.clone().answer(req)
    });
    Ok(sandbox)
}
