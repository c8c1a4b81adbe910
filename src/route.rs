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

/// The steps that front a Step Functions state machine, by what a fronted request names: the
/// machine's ARN (a start) or the ARN prefix of its executions (describe, stop). Built once from
/// the configuration, so a request finds its step in a few comparisons however many steps there
/// are (a scan of every step, with an execution prefix formatted per step, cost ~1,000 of each
/// per request at 1,000 steps). Where several steps front one machine, the first by name has it.
#[derive(Debug, Default)]
pub struct StateMachines {
    by_arn: std::collections::BTreeMap<String, String>,
    by_execution_prefix: std::collections::BTreeMap<String, String>,
}

impl StateMachines {
    /// Indexes `steps`, taken in name order.
    pub fn new<'a>(steps: impl IntoIterator<Item = &'a crate::config::StepSettings>) -> Self {
        let mut machines = Self::default();
        for step in steps {
            if let crate::config::StepTarget::StepFunctions { arn, .. } = &step.target {
                machines
                    .by_arn
                    .entry(arn.arn.clone())
                    .or_insert_with(|| step.name.clone());
                machines
                    .by_execution_prefix
                    .entry(arn.execution_prefix())
                    .or_insert_with(|| step.name.clone());
            }
        }
        machines
    }

    /// The step fronting the state machine `arn`.
    pub fn by_machine(&self, arn: &str) -> Option<&str> {
        self.by_arn.get(arn).map(String::as_str)
    }

    /// The step fronting the machine whose executions' ARNs start like `arn`. Every prefix is
    /// `arn:<partition>:states:<region>:<account>:execution:<name>:`, seven colons (no part of a
    /// state machine ARN holds one), so an ARN starts with a prefix exactly when its text up to
    /// its seventh colon is that prefix.
    pub fn by_execution(&self, arn: &str) -> Option<&str> {
        let (seventh, _) = arn.match_indices(':').nth(6)?;
        self.by_execution_prefix
            .get(&arn[..=seventh])
            .map(String::as_str)
    }
}

/// Maps a fronted Step Functions request (`X-Amz-Target` and its JSON body) to the step whose
/// state machine it names and the action its operation is; a start's body becomes the native
/// start body (`{"input": {...}, "name": ...}`), so every later stage is the same. Pure.
pub fn aws_states(
    target: Option<&str>,
    body: &[u8],
    machines: &StateMachines,
) -> Result<(StepRoute, Option<StartBody>), RouteError> {
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
        let step = machines.by_machine(&arn).ok_or_else(|| unmapped(&arn))?;
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
            step: step.to_string(),
            action,
            execution: None,
        };
        return Ok((route, Some(start)));
    }
    let arn = req
        .execution_arn
        .ok_or_else(|| RouteError::Malformed("`executionArn` is required".into()))?;
    let step = machines.by_execution(&arn).ok_or_else(|| unmapped(&arn))?;
    let route = StepRoute {
        step: step.to_string(),
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

    /// Steps `b-load` and `a-load` front one machine, `other` another.
    fn machines() -> StateMachines {
        let mut text = String::from(
            "[server]\nlisten = \"127.0.0.1:8443\"\n[policies]\ndir = \"p\"\n[audit]\npath = \"a.jsonl\"\n\
             [[issuers]]\nname = \"corp\"\nissuer = \"https://login.example.com\"\naudiences = [\"sg\"]\n\
             [credentials.etl]\nkind = \"aws_static\"\naccess_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"s\"\n",
        );
        for (step, machine) in [("b-load", "load"), ("a-load", "load"), ("other", "load-2")] {
            text.push_str(&format!(
                "[steps.{step}]\npipeline = \"p\"\nkind = \"stepfunctions\"\ncredentials = \"etl\"\n\
                 state_machine_arn = \"arn:aws:states:us-east-1:123456789012:stateMachine:{machine}\"\n"
            ));
        }
        let settings =
            crate::config::parse(&text, std::path::Path::new("/etc/stepgate.toml")).unwrap();
        StateMachines::new(settings.steps.values())
    }

    fn fronted(machines: &StateMachines, op: &str, body: &str) -> Result<String, RouteError> {
        let target = format!("AWSStepFunctions.{op}");
        aws_states(Some(&target), body.as_bytes(), machines).map(|(r, _)| r.step)
    }

    #[test]
    fn fronted_requests_find_their_step_by_machine_or_execution_arn() {
        let m = machines();
        let arn = "arn:aws:states:us-east-1:123456789012:stateMachine:load";
        let start = format!(r#"{{"stateMachineArn":"{arn}","input":"{{}}"}}"#);
        // Two steps front `load`: the first by name has it.
        assert_eq!(fronted(&m, "StartExecution", &start).unwrap(), "a-load");
        let start2 = start.replace(":load\"", ":load-2\"");
        assert_eq!(fronted(&m, "StartExecution", &start2).unwrap(), "other");
        let exec = "arn:aws:states:us-east-1:123456789012:execution";
        for (body, step) in [
            (
                format!(r#"{{"executionArn":"{exec}:load:run-1"}}"#),
                "a-load",
            ),
            (
                format!(r#"{{"executionArn":"{exec}:load-2:run-1"}}"#),
                "other",
            ),
            // Whatever follows the machine's prefix, as a prefix match has it.
            (
                format!(r#"{{"executionArn":"{exec}:load:run:1"}}"#),
                "a-load",
            ),
        ] {
            assert_eq!(fronted(&m, "DescribeExecution", &body).unwrap(), step);
            assert_eq!(fronted(&m, "StopExecution", &body).unwrap(), step);
        }
        for body in [
            format!(r#"{{"stateMachineArn":"{arn}-3"}}"#),
            r#"{"stateMachineArn":"load"}"#.to_string(),
        ] {
            assert!(matches!(
                fronted(&m, "StartExecution", &body),
                Err(RouteError::Denied(_))
            ));
        }
        for body in [
            format!(r#"{{"executionArn":"{exec}:load"}}"#),
            format!(r#"{{"executionArn":"{exec}:loa:run-1"}}"#),
            format!(r#"{{"executionArn":"{exec}:load-3:run-1"}}"#),
            r#"{"executionArn":"arn:aws:states:us-east-1:123456789012:express:load:r:u"}"#
                .to_string(),
        ] {
            assert!(
                matches!(
                    fronted(&m, "DescribeExecution", &body),
                    Err(RouteError::Denied(_))
                ),
                "{body}"
            );
        }
    }
}
