//! AWS Step Functions over its JSON 1.0 protocol (`X-Amz-Target: AWSStepFunctions.<Op>`).

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::{Outcome, Raw, UpstreamError, sigv4};
use crate::clock::Clock;
use crate::config::StateMachineArn;
use crate::http_client::HttpClient;
use crate::validate::ListQuery;

/// One call context: endpoint, region, credentials.
pub struct Client<'a> {
    /// Outbound HTTP.
    pub http: &'a dyn HttpClient,
    /// Signing time.
    pub clock: &'a dyn Clock,
    /// Endpoint base URL.
    pub endpoint: &'a http::Uri,
    /// Signing region.
    pub region: &'a str,
    /// Credentials.
    pub creds: &'a aws_credential_types::Credentials,
    /// Deadline.
    pub timeout: Duration,
}

impl Client<'_> {
    /// `StartExecution`. Every start is named (by the caller, its `Idempotency-Key`, or stepgate),
    /// so it is idempotent: AWS answers a repeat of a running execution with the same input with that
    /// execution, and `ExecutionAlreadyExists` otherwise; stepgate then looks the execution up
    /// and answers with it when the input matches, or 409 when it differs, never a second run.
    /// Retried, since a repeat with the same name cannot start a second run.
    pub async fn start(
        &self,
        machine: &StateMachineArn,
        name: &str,
        input: &str,
    ) -> Result<Outcome, UpstreamError> {
        let body = StartExecution {
            state_machine_arn: &machine.arn,
            name,
            input,
        };
        match self
            .call_as("AWSStepFunctions.StartExecution", &body, true, started)
            .await
        {
            Ok((execution_id, answer)) => Ok(Outcome::Started {
                execution_id,
                existing: false,
                result: None,
                raw: Raw::Verbatim(answer),
            }),
            Err(UpstreamError::Answered { code, .. }) if code == "ExecutionAlreadyExists" => {
                let arn = format!("{}{name}", machine.execution_prefix());
                let d = self
                    .call(
                        "AWSStepFunctions.DescribeExecution",
                        &json!({"executionArn": arn}),
                        true,
                    )
                    .await?;
                let theirs = d
                    .get("input")
                    .and_then(Value::as_str)
                    .and_then(|t| serde_json::from_str::<Value>(t).ok());
                let ours = serde_json::from_str::<Value>(input).ok();
                if theirs.is_some() && theirs == ours {
                    Ok(Outcome::Started {
                        execution_id: arn.clone(),
                        existing: true,
                        result: None,
                        raw: json!({"executionArn": arn, "startDate": d.get("startDate")}).into(),
                    })
                } else {
                    Err(UpstreamError::Conflict(format!(
                        "execution `{name}` already exists with a different input; use another name or Idempotency-Key"
                    )))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `StartSyncExecution` (EXPRESS machines, on the `sync-states` host): the answer is the
    /// finished execution. AWS answers 200 even when the workflow failed; its `status` says so.
    /// Never retried: EXPRESS executions have no idempotency to lean on.
    pub async fn start_sync(
        &self,
        machine: &StateMachineArn,
        name: &str,
        input: &str,
    ) -> Result<Outcome, UpstreamError> {
        let body = StartExecution {
            state_machine_arn: &machine.arn,
            name,
            input,
        };
        let v = self
            .call("AWSStepFunctions.StartSyncExecution", &body, false)
            .await?;
        let mut result = serde_json::Map::new();
        for (ours, theirs) in [
            ("status", "status"),
            ("output", "output"),
            ("error", "error"),
            ("cause", "cause"),
            ("stop_date", "stopDate"),
        ] {
            if let Some(x) = v.get(theirs) {
                result.insert(ours.into(), x.clone());
            }
        }
        Ok(Outcome::Started {
            execution_id: str_field(&v, "executionArn")?,
            existing: false,
            result: Some(Value::Object(result)),
            raw: v.into(),
        })
    }

    /// `ListExecutions` of this step's state machine, one page.
    pub async fn list(
        &self,
        machine: &StateMachineArn,
        q: &ListQuery,
    ) -> Result<Outcome, UpstreamError> {
        let mut body = json!({"stateMachineArn": machine.arn});
        if let Some(s) = &q.status {
            body["statusFilter"] = s.clone().into();
        }
        if let Some(m) = q.max_results {
            body["maxResults"] = m.into();
        }
        if let Some(t) = &q.next_token {
            body["nextToken"] = t.clone().into();
        }
        let v = self
            .call("AWSStepFunctions.ListExecutions", &body, true)
            .await?;
        let executions: Vec<Value> = v
            .get("executions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|e| {
                        json!({
                            "execution_id": e.get("executionArn"),
                            "name": e.get("name"),
                            "status": e.get("status"),
                            "start_date": e.get("startDate"),
                            "stop_date": e.get("stopDate"),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Outcome::Listed {
            body: json!({"executions": executions, "next_token": v.get("nextToken")}),
            raw: v.into(),
        })
    }

    /// `DescribeExecution`.
    pub async fn describe(&self, execution_arn: &str) -> Result<Outcome, UpstreamError> {
        let v = self
            .call(
                "AWSStepFunctions.DescribeExecution",
                &json!({"executionArn": execution_arn}),
                true,
            )
            .await?;
        let mut body = serde_json::Map::new();
        for (ours, theirs) in [
            ("execution_id", "executionArn"),
            ("name", "name"),
            ("status", "status"),
            ("start_date", "startDate"),
            ("stop_date", "stopDate"),
            ("output", "output"),
            ("error", "error"),
            ("cause", "cause"),
        ] {
            if let Some(x) = v.get(theirs) {
                body.insert(ours.into(), x.clone());
            }
        }
        Ok(Outcome::Described {
            execution_id: execution_arn.to_string(),
            body: Value::Object(body),
            raw: v.into(),
        })
    }

    /// `StopExecution` (repeating a stop is harmless, so it is retried).
    pub async fn stop(&self, execution_arn: &str) -> Result<Outcome, UpstreamError> {
        let v = self
            .call(
                "AWSStepFunctions.StopExecution",
                &json!({"executionArn": execution_arn, "cause": "stopped through stepgate"}),
                true,
            )
            .await?;
        Ok(Outcome::Stopped {
            execution_id: execution_arn.to_string(),
            body: json!({"execution_id": execution_arn, "stop_date": v.get("stopDate")}),
            raw: v.into(),
        })
    }

    /// One operation; when `idempotent`, throttling, 5xx and connection failures are retried
    /// with capped, jittered exponential back-off.
    /// `target` is the `X-Amz-Target` (`AWSStepFunctions.StartExecution`).
    async fn call<B: serde::Serialize + Sync>(
        &self,
        target: &'static str,
        body: &B,
        idempotent: bool,
    ) -> Result<Value, UpstreamError> {
        self.call_as(target, body, idempotent, json_value).await
    }

    /// [`Self::call`], its success answer read by `read` (inside each try: an answer that does
    /// not read is retried like a failed exchange).
    async fn call_as<B: serde::Serialize + Sync, T>(
        &self,
        target: &'static str,
        body: &B,
        idempotent: bool,
        read: fn(Bytes) -> Result<T, UpstreamError>,
    ) -> Result<T, UpstreamError> {
        super::with_retries(idempotent, retryable, || self.call_once(target, body, read)).await
    }

    /// The signed `POST` of one call. Built apart from [`Self::call_once`] so the request,
    /// borrowed while it is signed, is not kept in that future while the exchange runs.
    fn signed_request<B: serde::Serialize>(
        &self,
        target: &'static str,
        body: &B,
    ) -> Result<http::Request<Bytes>, UpstreamError> {
        let bytes = Bytes::from(
            serde_json::to_vec(body).map_err(|e| UpstreamError::Transport(e.to_string()))?,
        );
        let host = self
            .endpoint
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| UpstreamError::Transport("endpoint has no host".into()))?;
        let mut req = http::Request::post(self.endpoint.clone())
            .header(http::header::HOST, host)
            .header(http::header::CONTENT_TYPE, "application/x-amz-json-1.0")
            .header("x-amz-target", http::HeaderValue::from_static(target))
            .body(bytes)
            .map_err(|e| UpstreamError::Transport(e.to_string()))?;
        sigv4::sign_request(
            &mut req,
            self.creds,
            self.region,
            "states",
            self.clock.now(),
        )
        .map_err(|e| UpstreamError::Transport(format!("signing failed: {e}")))?;
        Ok(req)
    }

    async fn call_once<B: serde::Serialize + Sync, T>(
        &self,
        target: &'static str,
        body: &B,
        read: fn(Bytes) -> Result<T, UpstreamError>,
    ) -> Result<T, UpstreamError> {
        let req = self.signed_request(target, body)?;
        let resp = super::exchange(self.http, req, self.timeout).await?;
        let status = resp.status();
        if status.is_success() {
            return read(resp.into_body());
        }
        let header_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Err(parse_error(status.as_u16(), header_type, resp.body()))
    }
}

/// A success answer as JSON.
fn json_value(body: Bytes) -> Result<Value, UpstreamError> {
    serde_json::from_slice(&body)
        .map_err(|e| UpstreamError::Transport(format!("states answered non-JSON: {e}")))
}

/// A `StartExecution` answer: the execution ARN, and the answer as sent (a fronted caller gets
/// it byte for byte). Read whole as JSON, the ARN borrowed and the rest skipped.
fn started(body: Bytes) -> Result<(String, Bytes), UpstreamError> {
    #[derive(serde::Deserialize)]
    struct Started<'a> {
        #[serde(rename = "executionArn", borrow)]
        execution_arn: Option<std::borrow::Cow<'a, str>>,
    }
    let s: Started<'_> = serde_json::from_slice(&body)
        .map_err(|e| UpstreamError::Transport(format!("states answered no readable start: {e}")))?;
    let arn = s
        .execution_arn
        .ok_or_else(|| UpstreamError::Transport("states answer has no `executionArn`".into()))?
        .into_owned();
    Ok((arn, body))
}

/// The request body of `StartExecution` and `StartSyncExecution`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StartExecution<'a> {
    state_machine_arn: &'a str,
    name: &'a str,
    input: &'a str,
}

/// Worth another try: throttling, server errors, and failures to get an answer at all.
fn retryable(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::Answered { status, code, .. } => {
            *status >= 500
                || matches!(
                    code.as_str(),
                    "ThrottlingException"
                        | "TooManyRequestsException"
                        | "RequestLimitExceeded"
                        | "ServiceUnavailable"
                )
        }
        UpstreamError::Transport(_) => true,
        _ => false,
    }
}

fn str_field(v: &Value, k: &str) -> Result<String, UpstreamError> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| UpstreamError::Transport(format!("states answer has no `{k}`")))
}

/// `com.amazonaws.sfn#Foo:http://...` -> `Foo` (as the AWS SDKs sanitize error codes).
pub fn sanitize_code(raw: &str) -> String {
    let cut = raw.split(':').next().unwrap_or(raw);
    cut.rsplit('#').next().unwrap_or(cut).to_string()
}

fn xml_tag<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = text.find(&open)? + open.len();
    let end = text.get(start..)?.find(&format!("</{tag}>"))? + start;
    text.get(start..end)
}

/// Maps an AWS JSON-protocol error (or the XML some front ends answer with) to an upstream error.
pub fn parse_error(status: u16, header_type: Option<String>, body: &[u8]) -> UpstreamError {
    let text = String::from_utf8_lossy(body);
    let (code, message) = match serde_json::from_slice::<Value>(body) {
        Ok(v) => (
            v.get("__type")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or(header_type),
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_string),
        ),
        Err(_) => (
            xml_tag(&text, "Code").map(str::to_string).or(header_type),
            xml_tag(&text, "Message").map(str::to_string),
        ),
    };
    let message = message.unwrap_or_else(|| text.chars().take(512).collect());
    UpstreamError::Answered {
        service: "states",
        status,
        code: sanitize_code(code.as_deref().unwrap_or("UnknownError")),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_answer_is_read_for_its_arn_and_kept_byte_for_byte() {
        let answer = Bytes::from_static(
            br#"{"startDate":1.764892800123E9,"executionArn":"arn:aws:states:us-east-1:1:execution:m:sg-1","extra":[1,{"a":null}]}"#,
        );
        let (arn, kept) = started(answer.clone()).unwrap();
        assert_eq!(arn, "arn:aws:states:us-east-1:1:execution:m:sg-1");
        assert_eq!(kept, answer);
        // An escaped ARN is read unescaped.
        let (arn, _) = started(Bytes::from_static(br#"{"executionArn":"arn:a\u003ab"}"#)).unwrap();
        assert_eq!(arn, "arn:a:b");
        for bad in [
            &br#"{"startDate":1}"#[..],
            br#"{"executionArn":7}"#,
            br#"{"executionArn":"a"} trailing"#,
            br#"{"executionArn":"a","#,
            b"<html>busy</html>",
        ] {
            assert!(
                matches!(
                    started(Bytes::from_static(bad)),
                    Err(UpstreamError::Transport(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn error_codes_are_sanitized_and_messages_kept() {
        let e = parse_error(
            400,
            None,
            br#"{"__type":"com.amazonaws.sfn#ExecutionAlreadyExists:http://x","message":"Execution Already Exists"}"#,
        );
        let UpstreamError::Answered { code, message, .. } = e else {
            panic!()
        };
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("ExecutionAlreadyExists", "Execution Already Exists")
        );
        let e = parse_error(
            403,
            None,
            b"<ErrorResponse><Errors><Error><Code>SignatureDoesNotMatch</Code><Message>bad sig</Message></Error></Errors></ErrorResponse>",
        );
        let UpstreamError::Answered { code, message, .. } = e else {
            panic!()
        };
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("SignatureDoesNotMatch", "bad sig")
        );
    }
}
