//! Forward: a validated, audited trigger -> the workflow API, signed with the step's
//! credentials. Entering this stage takes a [`ValidatedTrigger`] and an [`AuditTicket`].

pub mod dataflow;
pub mod sigv4;
pub mod stepfunctions;

use std::time::Duration;

use crate::audit::AuditTicket;
use crate::clock::SharedClock;
use crate::config::StepTarget;
use crate::credentials::{CredentialStore, CredentialsError};
use crate::http_client::SharedHttpClient;
use crate::validate::{Operation, ValidatedTrigger};

/// What the upstream answered.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// An execution was started (or, idempotently, found).
    Started {
        /// Execution ARN / job id.
        execution_id: String,
        /// The execution already existed with the same input (a retried idempotent start).
        existing: bool,
        /// For synchronous starts: `status`, `output`, `error`, `cause`, `stop_date`.
        result: Option<serde_json::Value>,
        /// The upstream's answer, for callers of the fronting API.
        raw: Raw,
    },
    /// Execution details.
    Described {
        /// Execution ARN.
        execution_id: String,
        /// Normalized details.
        body: serde_json::Value,
        /// The upstream's answer.
        raw: Raw,
    },
    /// The step's executions (one page).
    Listed {
        /// `{"executions": [...], "next_token": ...}`.
        body: serde_json::Value,
        /// The upstream's answer.
        raw: Raw,
    },
    /// The execution was asked to stop.
    Stopped {
        /// Execution ARN.
        execution_id: String,
        /// Normalized details.
        body: serde_json::Value,
        /// The upstream's answer.
        raw: Raw,
    },
}

impl Outcome {
    /// The upstream's own answer (what a fronted AWS caller gets).
    pub fn raw(&self) -> &Raw {
        match self {
            Outcome::Started { raw, .. }
            | Outcome::Described { raw, .. }
            | Outcome::Stopped { raw, .. }
            | Outcome::Listed { raw, .. } => raw,
        }
    }

    /// The execution id, for the audit record (none for a listing).
    pub fn execution_id(&self) -> Option<&str> {
        match self {
            Outcome::Started { execution_id, .. }
            | Outcome::Described { execution_id, .. }
            | Outcome::Stopped { execution_id, .. } => Some(execution_id),
            Outcome::Listed { .. } => None,
        }
    }
}

/// The upstream's answer as a fronted caller gets it.
#[derive(Debug, Clone)]
pub enum Raw {
    /// The body as the upstream sent it (read as JSON, so it is JSON).
    Verbatim(bytes::Bytes),
    /// The answer as stepgate holds it (read into a value, or made up, as for a start found
    /// by its name).
    Json(serde_json::Value),
}

impl From<serde_json::Value> for Raw {
    fn from(v: serde_json::Value) -> Self {
        Raw::Json(v)
    }
}

/// Why the forward failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream answered with an error (its code and message kept).
    #[error("{service} answered {status}: {code}: {message}")]
    Answered {
        /// Service name.
        service: &'static str,
        /// HTTP status.
        status: u16,
        /// Error code (`ExecutionAlreadyExists`).
        code: String,
        /// Error message.
        message: String,
    },
    /// An idempotent start found an execution of that name with another input (409).
    #[error("{0}")]
    Conflict(String),
    /// Could not reach it, or its answer made no sense.
    #[error("{0}")]
    Transport(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The execution belongs to another step (404).
    #[error("{0}")]
    NotOfStep(String),
    /// Credentials unusable: fail closed (503).
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

/// Everything the forward stage needs.
pub struct Upstreams {
    /// Outbound HTTP.
    pub http: SharedHttpClient,
    /// Signing time.
    pub clock: SharedClock,
    /// Credentials by name.
    pub credentials: CredentialStore,
    /// Deadline per call.
    pub timeout: Duration,
}

/// Attempts for a call that is safe to repeat.
const ATTEMPTS: u32 = 3;

/// Runs `call`; when `idempotent`, failures `retryable` says are worth it are tried again (up to
/// [`ATTEMPTS`] in all) after capped, jittered exponential back-off. A non-idempotent call is
/// made once.
async fn with_retries<F, Fut, T>(
    idempotent: bool,
    retryable: fn(&UpstreamError) -> bool,
    mut call: F,
) -> Result<T, UpstreamError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, UpstreamError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match call().await {
            Err(e) if idempotent && attempt < ATTEMPTS && retryable(&e) => {
                let cap = Duration::from_millis(50 * 2u64.pow(attempt)).min(Duration::from_secs(1));
                let wait = cap.mul_f64(rand::random::<f64>());
                tracing::debug!(message = "Retrying upstream call.", attempt, error = %e, wait = ?wait);
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// One HTTP exchange within the deadline. The request is handed to the client by this call;
/// the future holds only the client's (boxed) exchange.
fn exchange<'a>(
    http: &'a dyn crate::http_client::HttpClient,
    req: http::Request<bytes::Bytes>,
    timeout: Duration,
) -> impl std::future::Future<Output = Result<http::Response<bytes::Bytes>, UpstreamError>> + Send + 'a
{
    use futures_util::FutureExt;
    http.send(req, timeout).map(|r| {
        r.map_err(|e| match e {
            crate::http_client::HttpError::Timeout { after, .. } => UpstreamError::Timeout(after),
            other => UpstreamError::Transport(other.to_string()),
        })
    })
}

/// Sends a trigger upstream. The ticket proves its decision record is durable.
pub async fn send(
    up: &Upstreams,
    trigger: &ValidatedTrigger,
    _ticket: &AuditTicket,
) -> Result<Outcome, UpstreamError> {
    let step = trigger.step();
    match &step.target {
        StepTarget::StepFunctions {
            arn,
            endpoint,
            sync_endpoint,
            sync,
        } => {
            let creds = up.credentials.aws(&step.credentials).await?;
            let sfn = stepfunctions::Client {
                http: up.http.as_ref(),
                clock: up.clock.as_ref(),
                endpoint,
                region: &arn.region,
                creds: &creds,
                timeout: up.timeout,
            };
            match trigger.operation() {
                Operation::Start { name, input, .. } if *sync => {
                    let sync_client = stepfunctions::Client {
                        endpoint: sync_endpoint,
                        ..sfn
                    };
                    sync_client.start_sync(arn, name, input).await
                }
                Operation::Start { name, input, .. } => sfn.start(arn, name, input).await,
                Operation::List(q) => sfn.list(arn, q).await,
                Operation::Describe { execution_id } => sfn.describe(execution_id).await,
                Operation::Stop { execution_id } => sfn.stop(execution_id).await,
            }
        }
        StepTarget::Dataflow(target) => {
            let token = up.credentials.google(&step.credentials).await?;
            let df = dataflow::Client {
                http: up.http.as_ref(),
                clock: up.clock.as_ref(),
                target,
                step: &step.name,
                token: &token,
                timeout: up.timeout,
            };
            match trigger.operation() {
                Operation::Start {
                    name,
                    fresh,
                    input,
                    parameters: Some(parameters),
                } => df.start(name, *fresh, input, parameters).await,
                // Validation makes parameters for every Dataflow start; refuse rather than guess.
                Operation::Start {
                    parameters: None, ..
                } => Err(UpstreamError::Transport(
                    "a Dataflow start without template parameters".into(),
                )),
                Operation::List(q) => df.list(q).await,
                Operation::Describe { execution_id } => df.describe(execution_id).await,
                Operation::Stop { execution_id } => df.stop(execution_id).await,
            }
        }
    }
}
