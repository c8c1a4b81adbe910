//! Route: (method, path) -> what the caller asks for. Pure; knows nothing of steps or tokens.

use std::borrow::Cow;

use http::Method;

use crate::model::{Action, StartBody};

/// What a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /healthz`.
    Health,
    /// `GET /readyz`.
    Ready,
    /// `GET /metrics`.
    Metrics,
    /// `GET /v1/steps`.
    ListSteps,
    /// An action on one step.
    Step(StepRoute),
    /// `POST /aws/states`: the Step Functions JSON protocol, fronted unchanged.
    AwsStates,
}

/// An action on a named step (the step may not exist: that is decided after authentication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRoute {
    /// The step name from the path.
    pub step: String,
    /// The action.
    pub action: Action,
    /// Execution id (ARN or name) for describe/stop.
    pub execution: Option<String>,
}

/// Why a request matched no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No such path.
    #[error("no route for `{0}`")]
    NotFound(String),
    /// A fronted AWS request stepgate does not let through (unsupported target, unmapped ARN).
    #[error("{0}")]
    Denied(String),
    /// A fronted AWS request that does not parse.
    #[error("{0}")]
    Malformed(String),
    /// The path exists but not with this method.
    #[error("method `{method}` is not allowed on `{path}`")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path.
        path: String,
    },
}

/// The caller's address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy. Pure.
pub fn source_ip(
    peer: std::net::IpAddr,
    headers: &http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut chain: Vec<std::net::IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(s) = v.to_str() else { return peer };
        for part in s.split(',') {
            match part.trim().parse() {
                Ok(ip) => chain.push(ip),
                // A malformed hop makes the whole header untrustworthy.
                Err(_) => return peer,
            }
        }
    }
    chain
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

/// The members of a fronted Step Functions request that stepgate reads (others are ignored).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AwsRequest<'a> {
    #[serde(borrow, default)]
    state_machine_arn: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    execution_arn: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    input: Option<std::borrow::Cow<'a, str>>,
}

/// Maps a fronted Step Functions request (`X-Amz-Target` and its JSON body) to the step whose
/// state machine it names and the action its operation is; a start's body becomes the native
/// start body (`{"input": {...}, "name": ...}`), so every later stage is the same. Pure.
pub fn aws_states<'a>(
    target: Option<&str>,
    body: &[u8],
    steps: impl IntoIterator<Item = &'a crate::config::StepSettings>,
) -> Result<(StepRoute, Option<StartBody>), RouteError> {
    use crate::config::StepTarget;
    let op = target
        .and_then(|t| t.strip_prefix("AWSStepFunctions."))
        .ok_or_else(|| {
            RouteError::Malformed("`X-Amz-Target: AWSStepFunctions.<operation>` is required".into())
        })?;
    let action = match op {
        "StartExecution" => Action::Start,
        "DescribeExecution" => Action::Describe,
        "StopExecution" => Action::Stop,
        other => {
            return Err(RouteError::Denied(format!(
                "operation `{other}` is not available through stepgate"
            )));
        }
    };
    let req: AwsRequest<'_> = serde_json::from_slice(body)
        .map_err(|e| RouteError::Malformed(format!("body is not a Step Functions request: {e}")))?;
    let unmapped = |arn: &str| RouteError::Denied(format!("`{arn}` maps to no step of this proxy"));
    if action == Action::Start {
        let arn = req
            .state_machine_arn
            .ok_or_else(|| RouteError::Malformed("`stateMachineArn` is required".into()))?;
        let step = steps
            .into_iter()
            .find(|s| matches!(&s.target, StepTarget::StepFunctions { arn: m, .. } if m.arn == arn))
            .ok_or_else(|| unmapped(&arn))?;
        let input = match req.input {
            None => serde_json::json!({}),
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| RouteError::Malformed(format!("`input` is not JSON: {e}")))?,
        };
        let start = StartBody {
            input: Some(input),
            name: req.name.map(std::borrow::Cow::into_owned),
        };
        let route = StepRoute {
            step: step.name.clone(),
            action,
            execution: None,
        };
        return Ok((route, Some(start)));
    }
    let arn = req
        .execution_arn
        .ok_or_else(|| RouteError::Malformed("`executionArn` is required".into()))?;
    let step = steps
        .into_iter()
        .find(|s| {
            matches!(&s.target, StepTarget::StepFunctions { arn: m, .. }
                if arn.starts_with(&m.execution_prefix()))
        })
        .ok_or_else(|| unmapped(&arn))?;
    let route = StepRoute {
        step: step.name.clone(),
        action,
        execution: Some(arn.into_owned()),
    };
    Ok((route, None))
}

/// Resolves a request line. Path segments are percent-decoded.
pub fn resolve(method: &Method, path: &str) -> Result<Endpoint, RouteError> {
    let segs: Vec<Cow<'_, str>> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(|s| &**s).collect();
    let not_allowed = || RouteError::MethodNotAllowed {
        method: method.to_string(),
        path: path.to_string(),
    };
    let ep = match segs.as_slice() {
        ["healthz"] => (Method::GET, Endpoint::Health),
        ["readyz"] => (Method::GET, Endpoint::Ready),
        ["metrics"] => (Method::GET, Endpoint::Metrics),
        ["v1", "steps"] => (Method::GET, Endpoint::ListSteps),
        ["aws", "states"] => (Method::POST, Endpoint::AwsStates),
        ["v1", "steps", step, "executions"]
            if !step.is_empty() && (*method == Method::GET || *method == Method::HEAD) =>
        {
            (
                Method::GET,
                Endpoint::Step(StepRoute {
                    step: step.to_string(),
                    action: Action::List,
                    execution: None,
                }),
            )
        }
        ["v1", "steps", step, "executions"] if !step.is_empty() => (
            Method::POST,
            Endpoint::Step(StepRoute {
                step: step.to_string(),
                action: Action::Start,
                execution: None,
            }),
        ),
        ["v1", "steps", step, "executions", id] if !step.is_empty() && !id.is_empty() => (
            Method::GET,
            Endpoint::Step(StepRoute {
                step: step.to_string(),
                action: Action::Describe,
                execution: Some(id.to_string()),
            }),
        ),
        ["v1", "steps", step, "executions", id, "stop"] if !step.is_empty() && !id.is_empty() => (
            Method::POST,
            Endpoint::Step(StepRoute {
                step: step.to_string(),
                action: Action::Stop,
                execution: Some(id.to_string()),
            }),
        ),
        _ => return Err(RouteError::NotFound(path.to_string())),
    };
    if *method == ep.0 || (ep.0 == Method::GET && *method == Method::HEAD) {
        Ok(ep.1)
    } else {
        Err(not_allowed())
    }
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are). Borrows when there are none.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_the_contract_paths() {
        assert_eq!(resolve(&Method::GET, "/healthz"), Ok(Endpoint::Health));
        assert_eq!(resolve(&Method::GET, "/v1/steps"), Ok(Endpoint::ListSteps));
        let Endpoint::Step(r) = resolve(&Method::POST, "/v1/steps/load/executions").unwrap() else {
            panic!()
        };
        assert_eq!(
            (r.step.as_str(), r.action, r.execution),
            ("load", Action::Start, None)
        );
        let Endpoint::Step(r) = resolve(
            &Method::GET,
            "/v1/steps/load/executions/arn%3Aaws%3Astates%3Aus-east-1%3A1%3Aexecution%3Am%3Ar",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(r.action, Action::Describe);
        assert_eq!(
            r.execution.as_deref(),
            Some("arn:aws:states:us-east-1:1:execution:m:r")
        );
        let Endpoint::Step(r) =
            resolve(&Method::POST, "/v1/steps/load/executions/run-1/stop").unwrap()
        else {
            panic!()
        };
        assert_eq!(r.action, Action::Stop);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = http::HeaderMap::new();
        h.append("x-forwarded-for", "198.51.100.7, 10.1.1.1".parse().unwrap());
        let proxy: std::net::IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: std::net::IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(
            source_ip(proxy, &h, &trusted),
            "198.51.100.7".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(source_ip(stranger, &h, &trusted), stranger);
        // A client-supplied left-most entry cannot hide the real client.
        let mut h2 = http::HeaderMap::new();
        h2.append("x-forwarded-for", "10.9.9.9, 198.51.100.7".parse().unwrap());
        assert_eq!(
            source_ip(proxy, &h2, &trusted),
            "198.51.100.7".parse::<std::net::IpAddr>().unwrap()
        );
        let mut bad = http::HeaderMap::new();
        bad.append("x-forwarded-for", "not-an-ip".parse().unwrap());
        assert_eq!(source_ip(proxy, &bad, &trusted), proxy);
    }

    #[test]
    fn wrong_method_and_unknown_paths() {
        assert!(matches!(
            resolve(&Method::PUT, "/v1/steps/load/executions"),
            Err(RouteError::MethodNotAllowed { .. })
        ));
        let Endpoint::Step(r) = resolve(&Method::GET, "/v1/steps/load/executions").unwrap() else {
            panic!()
        };
        assert_eq!(r.action, Action::List);
        assert!(matches!(
            resolve(&Method::GET, "/v2/x"),
            Err(RouteError::NotFound(_))
        ));
        assert!(matches!(
            resolve(&Method::POST, "/v1/steps//executions"),
            Err(RouteError::NotFound(_))
        ));
    }
}
