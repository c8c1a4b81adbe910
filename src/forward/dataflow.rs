//! Google Cloud Dataflow v1b3: classic templates (`templates.launch`), flex templates
//! (`flexTemplates.launch`), `jobs.get`, `jobs.update` (cancel) and `jobs.list`, with the step's
//! Google access token as the bearer.
//!
//! Every job of a step is named `<job_name_prefix>-...`; describe and stop look the job up first
//! and refuse one of another step (404), and list shows only the step's jobs. An idempotent start
//! (a name from the caller or from an `Idempotency-Key`) first looks for a job of that name and
//! answers with it; Dataflow itself only refuses a second *active* job of the same name
//! (409 ALREADY_EXISTS), which is then looked up the same way. The job carries the SHA-256 of its
//! input as the label `stepgate-input`, so a repeat with another input is a 409 `conflict`, never
//! a second run.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Outcome, UpstreamError};
use crate::clock::Clock;
use crate::config::{DataflowTarget, DataflowTemplate};
use crate::http_client::HttpClient;
use crate::secret::Secret;
use crate::validate::ListQuery;

/// The job label holding the input's digest.
pub const INPUT_LABEL: &str = "stepgate-input";

/// One call context.
pub struct Client<'a> {
    /// Outbound HTTP.
    pub http: &'a dyn HttpClient,
    /// Time (generated job names).
    pub clock: &'a dyn Clock,
    /// The step's template and project.
    pub target: &'a DataflowTarget,
    /// The step's step name (messages).
    pub step: &'a str,
    /// Bearer token.
    pub token: &'a Secret<String>,
    /// Deadline per call.
    pub timeout: Duration,
}

/// The label value for an input: 40 hex digits of its SHA-256 (labels hold at most 63).
pub fn input_digest(input: &str) -> String {
    hex::encode(Sha256::digest(input.as_bytes()))
        .chars()
        .take(40)
        .collect()
}

impl Client<'_> {
    /// `<endpoint>/v1b3/projects/<project>/locations/<location>`.
    fn base_url(&self) -> String {
        format!(
            "{}/v1b3/projects/{}/locations/{}",
            self.target.endpoint.to_string().trim_end_matches('/'),
            self.target.project,
            self.target.location
        )
    }

    fn jobs_url(&self) -> String {
        format!("{}/jobs", self.base_url())
    }

    fn owns(&self, job_name: &str) -> bool {
        job_name
            .strip_prefix(&self.target.job_name_prefix)
            .is_some_and(|rest| rest.starts_with('-'))
    }

    /// Launches the step's template with `parameters` (the validated input; `input` is its JSON
    /// text, whose digest labels the job). Every start is named (the caller's name, its
    /// `Idempotency-Key`'s, or one made for the request; `job_name` carries the step's prefix),
    /// so a retry finds its own job: a name not `fresh` is first looked up, and a job of that
    /// name with the same input is the answer.
    pub async fn start(
        &self,
        job_name: &str,
        fresh: bool,
        input: &str,
        parameters: &serde_json::Map<String, Value>,
    ) -> Result<Outcome, UpstreamError> {
        let digest = input_digest(input);
        if !fresh && let Some(found) = self.existing(job_name, &digest).await? {
            return Ok(found);
        }
        let mut environment = self.target.environment.clone();
        let labels = environment
            .entry("additionalUserLabels")
            .or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert(INPUT_LABEL.into(), Value::String(digest.clone()));
        }
        let base = self.base_url();
        let (url, body) = match &self.target.template {
            DataflowTemplate::Classic { gcs_path } => (
                format!("{base}/templates:launch?gcsPath={}", query_escape(gcs_path)),
                json!({"jobName": job_name, "parameters": parameters, "environment": environment}),
            ),
            DataflowTemplate::Flex {
                container_spec_gcs_path,
            } => (
                format!("{base}/flexTemplates:launch"),
                json!({"launchParameter": {
                    "jobName": job_name,
                    "containerSpecGcsPath": container_spec_gcs_path,
                    "parameters": parameters,
                    "environment": environment,
                }}),
            ),
        };
        match self.call(http::Method::POST, &url, Some(&body), true).await {
            Ok(v) => {
                let job = v.get("job").cloned().unwrap_or(Value::Null);
                let id = job
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| UpstreamError::Transport("launch answer has no job id".into()))?
                    .to_string();
                Ok(Outcome::Started {
                    execution_id: id,
                    existing: false,
                    result: None,
                    raw: v.into(),
                })
            }
            // A job of that name is active: ours from an earlier try, or another input's.
            Err(UpstreamError::Answered { code, .. }) if code == "ALREADY_EXISTS" => {
                match self.existing(job_name, &digest).await? {
                    Some(found) => Ok(found),
                    None => Err(UpstreamError::Conflict(format!(
                        "Dataflow has an active job named `{job_name}` that is not visible to this step"
                    ))),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The newest job named `job_name`: the same input -> that job; another input -> conflict.
    async fn existing(
        &self,
        job_name: &str,
        digest: &str,
    ) -> Result<Option<Outcome>, UpstreamError> {
        let url = format!(
            "{}?filter=ALL&name={}&pageSize=10",
            self.jobs_url(),
            query_escape(job_name)
        );
        let v = self.call(http::Method::GET, &url, None, true).await?;
        let Some(job) = v.get("jobs").and_then(Value::as_array).and_then(|jobs| {
            jobs.iter()
                .find(|j| j.get("name").and_then(Value::as_str) == Some(job_name))
        }) else {
            return Ok(None);
        };
        let theirs = job
            .get("labels")
            .and_then(|l| l.get(INPUT_LABEL))
            .and_then(Value::as_str);
        if theirs != Some(digest) {
            return Err(UpstreamError::Conflict(format!(
                "job `{job_name}` already exists with a different input; use another name or Idempotency-Key"
            )));
        }
        let id = job
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(Some(Outcome::Started {
            execution_id: id,
            existing: true,
            result: None,
            raw: json!({"job": job}).into(),
        }))
    }

    /// `jobs.get`, refused (404) for a job of another step.
    async fn get_owned(&self, job_id: &str) -> Result<Value, UpstreamError> {
        let url = format!("{}/{job_id}?view=JOB_VIEW_SUMMARY", self.jobs_url());
        let job = self.call(http::Method::GET, &url, None, true).await?;
        let name = job.get("name").and_then(Value::as_str).unwrap_or_default();
        if !self.owns(name) {
            return Err(UpstreamError::NotOfStep(format!(
                "job `{job_id}` is not a job of step `{}`",
                self.step
            )));
        }
        Ok(job)
    }

    /// `jobs.get`.
    pub async fn describe(&self, job_id: &str) -> Result<Outcome, UpstreamError> {
        let job = self.get_owned(job_id).await?;
        Ok(Outcome::Described {
            execution_id: job_id.to_string(),
            body: summary(&job),
            raw: job.into(),
        })
    }

    /// `jobs.update` with `requestedState: JOB_STATE_CANCELLED` (repeating it is harmless).
    pub async fn stop(&self, job_id: &str) -> Result<Outcome, UpstreamError> {
        self.get_owned(job_id).await?;
        let url = format!("{}/{job_id}", self.jobs_url());
        let job = self
            .call(
                http::Method::PUT,
                &url,
                Some(&json!({"requestedState": "JOB_STATE_CANCELLED"})),
                true,
            )
            .await?;
        Ok(Outcome::Stopped {
            execution_id: job_id.to_string(),
            body: summary(&job),
            raw: job.into(),
        })
    }

    /// `jobs.list`, one page, only this step's jobs.
    pub async fn list(&self, q: &ListQuery) -> Result<Outcome, UpstreamError> {
        let filter = match q.status.as_deref() {
            None => "ALL",
            Some("RUNNING") => "ACTIVE",
            Some(_) => "TERMINATED",
        };
        let mut url = format!(
            "{}?filter={filter}&pageSize={}",
            self.jobs_url(),
            q.max_results.unwrap_or(50).min(100)
        );
        if let Some(t) = &q.next_token {
            url.push_str(&format!("&pageToken={}", query_escape(t)));
        }
        let v = self.call(http::Method::GET, &url, None, true).await?;
        let jobs: Vec<Value> = v
            .get("jobs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|j| self.owns(j.get("name").and_then(Value::as_str).unwrap_or("")))
                    .map(summary)
                    .filter(|s| {
                        q.status.as_deref().is_none_or(|want| {
                            s.get("status").and_then(Value::as_str) == Some(want)
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Outcome::Listed {
            body: json!({"executions": jobs, "next_token": v.get("nextPageToken")}),
            raw: v.into(),
        })
    }

    async fn call(
        &self,
        method: http::Method,
        url: &str,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Value, UpstreamError> {
        super::with_retries(idempotent, retryable, || {
            self.call_once(method.clone(), url, body)
        })
        .await
    }

    async fn call_once(
        &self,
        method: http::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, UpstreamError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| UpstreamError::Transport(format!("bad Dataflow URL: {e}")))?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| UpstreamError::Transport("endpoint has no host".into()))?;
        let bytes = match body {
            Some(b) => Bytes::from(
                serde_json::to_vec(b).map_err(|e| UpstreamError::Transport(e.to_string()))?,
            ),
            None => Bytes::new(),
        };
        // Marked sensitive: kept out of `Debug` output and never indexed by HTTP/2's HPACK.
        let mut authorization =
            http::HeaderValue::try_from(format!("Bearer {}", self.token.expose()))
                .map_err(|e| UpstreamError::Transport(format!("access token: {e}")))?;
        authorization.set_sensitive(true);
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::HOST, host)
            .header(http::header::AUTHORIZATION, authorization);
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(bytes)
            .map_err(|e| UpstreamError::Transport(e.to_string()))?;
        let resp = super::exchange(self.http, req, self.timeout).await?;
        let status = resp.status();
        if status.is_success() {
            if resp.body().is_empty() {
                return Ok(json!({}));
            }
            return serde_json::from_slice(resp.body())
                .map_err(|e| UpstreamError::Transport(format!("dataflow answered non-JSON: {e}")));
        }
        Err(parse_error(status.as_u16(), resp.body()))
    }
}

/// A job -> the contract's execution summary (`status` in the Step Functions vocabulary,
/// `state` as Dataflow says it).
pub fn summary(job: &Value) -> Value {
    let state = job
        .get("currentState")
        .and_then(Value::as_str)
        .unwrap_or("JOB_STATE_UNKNOWN");
    json!({
        "execution_id": job.get("id"),
        "name": job.get("name"),
        "status": status_of(state),
        "state": state,
        "start_date": job.get("startTime").or_else(|| job.get("createTime")),
        "state_date": job.get("currentStateTime"),
    })
}

/// Dataflow job states -> RUNNING | SUCCEEDED | FAILED | ABORTED | PENDING.
pub fn status_of(state: &str) -> &'static str {
    match state {
        "JOB_STATE_DONE" | "JOB_STATE_UPDATED" => "SUCCEEDED",
        "JOB_STATE_FAILED" => "FAILED",
        "JOB_STATE_CANCELLED" | "JOB_STATE_DRAINED" => "ABORTED",
        "JOB_STATE_STOPPED" | "JOB_STATE_PENDING" | "JOB_STATE_QUEUED" => "PENDING",
        _ => "RUNNING",
    }
}

/// Worth another try: Google's retryable statuses, 5xx, and no answer at all.
fn retryable(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::Answered { status, code, .. } => {
            *status >= 500
                || *status == 429
                || matches!(
                    code.as_str(),
                    "UNAVAILABLE" | "RESOURCE_EXHAUSTED" | "DEADLINE_EXCEEDED" | "ABORTED"
                )
        }
        UpstreamError::Transport(_) => true,
        _ => false,
    }
}

/// Maps a `google.rpc.Status` JSON error (`{"error": {"code", "message", "status"}}`).
pub fn parse_error(status: u16, body: &[u8]) -> UpstreamError {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let e = v.as_ref().and_then(|v| v.get("error"));
    let code = e
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("HTTP_{status}"));
    let message = e
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(512).collect());
    UpstreamError::Answered {
        service: "dataflow",
        status,
        code,
        message,
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_errors_keep_status_and_message() {
        let e = parse_error(
            409,
            br#"{"error":{"code":409,"message":"There is already an active job named x.","status":"ALREADY_EXISTS"}}"#,
        );
        let UpstreamError::Answered { code, message, .. } = e else {
            panic!("not an answer")
        };
        assert_eq!(code, "ALREADY_EXISTS");
        assert_eq!(message, "There is already an active job named x.");
        let e = parse_error(502, b"<html>bad gateway</html>");
        let UpstreamError::Answered { code, message, .. } = e else {
            panic!("not an answer")
        };
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("HTTP_502", "<html>bad gateway</html>")
        );
    }

    #[test]
    fn states_map_to_contract_statuses() {
        assert_eq!(status_of("JOB_STATE_RUNNING"), "RUNNING");
        assert_eq!(status_of("JOB_STATE_DONE"), "SUCCEEDED");
        assert_eq!(status_of("JOB_STATE_CANCELLED"), "ABORTED");
        assert_eq!(status_of("JOB_STATE_FAILED"), "FAILED");
        assert_eq!(query_escape("gs://b/t x"), "gs%3A%2F%2Fb%2Ft%20x");
    }
}
