//! Validate input: the request body and path ids -> [`ValidatedTrigger`]. Pure.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::authz::Permit;
use crate::config::{StepSettings, StepTarget};
use crate::model::Action;

/// Why the input is refused (400).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

pub use crate::model::StartBody;

/// Parses a start body. Empty body = empty input.
pub fn parse_start_body(body: &[u8]) -> Result<StartBody, InvalidInput> {
    start_body(None, body)
}

/// A start's body: the one a fronted API's route already parsed, else the native body parsed
/// from `body` (empty = empty input). Its `input`, when given, must be a JSON object.
pub fn start_body(parsed: Option<StartBody>, body: &[u8]) -> Result<StartBody, InvalidInput> {
    let b = match parsed {
        Some(b) => b,
        None if body.iter().all(u8::is_ascii_whitespace) => return Ok(StartBody::default()),
        None => serde_json::from_slice(body)
            .map_err(|e| InvalidInput(format!("body is not a valid start request: {e}")))?,
    };
    if let Some(i) = &b.input
        && !i.is_object()
    {
        return Err(InvalidInput("`input` must be a JSON object".into()));
    }
    Ok(b)
}

/// Compiled input schemas per step.
#[derive(Default)]
pub struct Guardrails {
    schemas: std::collections::HashMap<String, jsonschema::Validator>,
}

impl Guardrails {
    /// Reads and compiles every step's `input_schema` (the only I/O of this stage).
    pub fn load(
        steps: &std::collections::BTreeMap<String, StepSettings>,
    ) -> Result<Self, crate::config::Problems> {
        let mut schemas = std::collections::HashMap::new();
        let mut problems = Vec::new();
        for (name, s) in steps {
            let Some(path) = &s.input_schema else {
                continue;
            };
            let problem = |message: String| crate::config::Problem {
                file: path.clone(),
                line: None,
                key: format!("steps.{name}.input_schema"),
                message,
            };
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(problem(format!("cannot read: {e}")));
                    continue;
                }
            };
            let json: serde_json::Value = match serde_json::from_str(&text) {
                Ok(j) => j,
                Err(e) => {
                    problems.push(crate::config::Problem {
                        line: Some(e.line()),
                        ..problem(format!("not JSON: {e}"))
                    });
                    continue;
                }
            };
            match jsonschema::validator_for(&json) {
                Ok(v) => {
                    schemas.insert(name.clone(), v);
                }
                Err(e) => problems.push(problem(format!("not a usable JSON Schema: {e}"))),
            }
        }
        if problems.is_empty() {
            Ok(Self { schemas })
        } else {
            Err(crate::config::Problems(problems))
        }
    }

    /// Every way `input` fails the step's schema (empty when it passes or there is none).
    pub fn failures(&self, step: &str, input: &serde_json::Value) -> Vec<String> {
        let Some(v) = self.schemas.get(step) else {
            return Vec::new();
        };
        v.iter_errors(input)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", if at.is_empty() { "/" } else { at.as_str() })
            })
            .collect()
    }
}

/// Sets the step's pinned fields in the input. A caller who sent a pinned field with another
/// value is refused: a pinned parameter is never silently changed.
pub fn apply_pinned(step: &StepSettings, mut body: StartBody) -> Result<StartBody, InvalidInput> {
    if step.pinned.is_empty() {
        return Ok(body);
    }
    let mut input = match body.input.take() {
        Some(serde_json::Value::Object(o)) => o,
        _ => serde_json::Map::new(),
    };
    for (k, v) in &step.pinned {
        match input.get(k) {
            Some(sent) if sent != v => {
                return Err(InvalidInput(format!(
                    "`{k}` is pinned by step `{}` and cannot be set by the caller",
                    step.name
                )));
            }
            _ => {
                input.insert(k.clone(), v.clone());
            }
        }
    }
    body.input = Some(serde_json::Value::Object(input));
    Ok(body)
}

/// `GET /v1/steps/{step}/executions?status=RUNNING&max_results=50&next_token=...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only executions in this state.
    pub status: Option<String>,
    /// Page size (1-1000).
    pub max_results: Option<u32>,
    /// The previous page's `next_token`.
    pub next_token: Option<String>,
}

const EXECUTION_STATES: &[&str] = &[
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "TIMED_OUT",
    "ABORTED",
    "PENDING_REDRIVE",
];

/// Parses the list query string; unknown parameters are refused.
pub fn parse_list_query(query: Option<&str>) -> Result<ListQuery, InvalidInput> {
    let mut q = ListQuery::default();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = crate::route::percent_decode(v).into_owned();
        match k {
            "status" if EXECUTION_STATES.contains(&v.as_str()) => q.status = Some(v),
            "status" => {
                return Err(InvalidInput(format!(
                    "`status` must be one of {}",
                    EXECUTION_STATES.join(", ")
                )));
            }
            "max_results" => match v.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => q.max_results = Some(n),
                _ => return Err(InvalidInput("`max_results` must be 1-1000".into())),
            },
            "next_token" if !v.is_empty() && v.len() <= 3096 => q.next_token = Some(v),
            other => return Err(InvalidInput(format!("unknown query parameter `{other}`"))),
        }
    }
    Ok(q)
}

/// What to do upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Start an execution with this input (JSON text, sent byte-identical on retries).
    Start {
        /// The name the upstream gives the execution (Step Functions) or job (Dataflow:
        /// `<job_name_prefix>-<name>`), from the caller's name, its `Idempotency-Key`, or made
        /// for this request. Every start is named before it is audited, so each execution maps
        /// to its durable decision record.
        name: String,
        /// The name was made for this request: no execution can carry it yet.
        fresh: bool,
        /// Input JSON text.
        input: String,
        /// For Dataflow steps: the input as the launch's `parameters` (flat strings).
        parameters: Option<serde_json::Map<String, serde_json::Value>>,
    },
    /// Describe an execution.
    Describe {
        /// Execution ARN (Step Functions) or job id (Dataflow).
        execution_id: String,
    },
    /// Stop an execution.
    Stop {
        /// Execution ARN (Step Functions) or job id (Dataflow).
        execution_id: String,
    },
    /// List the step's executions.
    List(ListQuery),
}

/// Proof that a permitted request's input was validated. Only [`trigger`] makes one.
#[derive(Debug, Clone)]
pub struct ValidatedTrigger {
    permit: Permit,
    step: Arc<StepSettings>,
    operation: Operation,
}

impl ValidatedTrigger {
    /// The permit it rests on.
    pub fn permit(&self) -> &Permit {
        &self.permit
    }
    /// The step.
    pub fn step(&self) -> &StepSettings {
        &self.step
    }
    /// The upstream operation.
    pub fn operation(&self) -> &Operation {
        &self.operation
    }
    /// The name the upstream execution or job gets (a start's audit `execution_name`).
    pub fn execution_name(&self) -> Option<&str> {
        match &self.operation {
            Operation::Start { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// How a start's execution is named: the caller's `Idempotency-Key`, if it sent one, and the
/// randomness for a name when the request names nothing (given by the caller of [`trigger`],
/// which owns the randomness; turned into [`fresh_name`] only when needed).
#[derive(Debug, Clone)]
pub struct Naming<'a> {
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<&'a str>,
    /// Randomness for [`fresh_name`].
    pub random: u128,
}

/// A name for an unnamed start: `sg-` and 32 hex digits of the given randomness.
pub fn fresh_name(random: u128) -> String {
    format!("sg-{random:032x}")
}

/// AWS execution names: 1-80 of letters, digits, `-` and `_` (the subset safe everywhere).
pub fn valid_execution_name(n: &str) -> bool {
    (1..=80).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The execution name an `Idempotency-Key` stands for: the same for the same step and key.
pub fn idempotent_name(step: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("{step}\n{key}").as_bytes());
    format!("sg-{}", &hex::encode(digest)[..40])
}

/// Validates a permitted request.
pub fn trigger(
    permit: Permit,
    step: Arc<StepSettings>,
    execution: Option<&str>,
    start: Option<StartBody>,
    naming: Naming<'_>,
    guardrails: &Guardrails,
    list: Option<ListQuery>,
) -> Result<ValidatedTrigger, InvalidInput> {
    let operation = match permit.action() {
        Action::Start => {
            let body = start.unwrap_or_default();
            let name = match (body.name, naming.idempotency_key) {
                (Some(n), Some(_)) => {
                    return Err(InvalidInput(format!(
                        "give either `name` (`{n}`) or an Idempotency-Key header, not both"
                    )));
                }
                (Some(n), None) => Some(n),
                (None, Some(k)) => {
                    if k.is_empty()
                        || k.len() > 256
                        || !k.bytes().all(|b| (0x21..0x7f).contains(&b))
                    {
                        return Err(InvalidInput(
                            "Idempotency-Key must be 1-256 visible ASCII characters".into(),
                        ));
                    }
                    Some(idempotent_name(&step.name, k))
                }
                (None, None) => None,
            };
            let (name, fresh) = match name {
                Some(n) => (n, false),
                None => (fresh_name(naming.random), true),
            };
            let dataflow = match &step.target {
                StepTarget::Dataflow(t) => Some(t),
                StepTarget::StepFunctions { .. } => None,
            };
            if !valid_execution_name(&name) {
                return Err(InvalidInput(format!(
                    "execution name `{name}` must be 1-80 letters, digits, `-` or `_`"
                )));
            }
            let name = match dataflow {
                None => name,
                Some(t) => {
                    let job = format!("{}-{name}", t.job_name_prefix);
                    if !crate::config::valid_dataflow_job_name(&job) {
                        return Err(InvalidInput(format!(
                            "job name `{name}` must be lowercase letters, digits and `-`, not ending in `-` (Dataflow's job names)"
                        )));
                    }
                    job
                }
            };
            let input = body.input.unwrap_or_else(|| serde_json::json!({}));
            let parameters = match dataflow {
                Some(_) => Some(template_parameters(&input)?),
                None => None,
            };
            let failures = guardrails.failures(&step.name, &input);
            if !failures.is_empty() {
                return Err(InvalidInput(format!(
                    "input does not match the schema of step `{}`: {}",
                    step.name,
                    failures.join("; ")
                )));
            }
            let input = serde_json::to_string(&input).map_err(|e| InvalidInput(e.to_string()))?;
            if input.len() > 262_144 {
                return Err(InvalidInput("`input` is larger than 262144 bytes".into()));
            }
            Operation::Start {
                name,
                fresh,
                input,
                parameters,
            }
        }
        Action::Describe | Action::Stop => {
            let id = execution.ok_or_else(|| InvalidInput("an execution id is required".into()))?;
            let execution_id = execution_id(&step, id)?;
            if permit.action() == Action::Stop {
                Operation::Stop { execution_id }
            } else {
                Operation::Describe { execution_id }
            }
        }
        Action::List => Operation::List(list.unwrap_or_default()),
    };
    Ok(ValidatedTrigger {
        permit,
        step,
        operation,
    })
}

/// A Dataflow start's input -> the launch's `parameters`: Dataflow takes a flat map of strings, so
/// strings pass as they are, numbers and booleans as their JSON text, anything else is refused.
pub fn template_parameters(
    input: &serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, InvalidInput> {
    let Some(o) = input.as_object() else {
        return Err(InvalidInput("`input` must be a JSON object".into()));
    };
    o.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(_) => Ok((k.clone(), v.clone())),
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                Ok((k.clone(), serde_json::Value::String(v.to_string())))
            }
            _ => Err(InvalidInput(format!(
                "`input.{k}`: Dataflow template parameters are strings, numbers or booleans, not {}",
                if v.is_null() { "null" } else if v.is_array() { "arrays" } else { "objects" }
            ))),
        })
        .collect()
}

/// Dataflow job ids (`2026-11-24_09_30_00-1234567890123456789`): letters, digits, `-` and `_`.
fn valid_job_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A path's execution id -> what the upstream calls it. A Step Functions id becomes its ARN and an
/// ARN of another state machine is refused, so a permit on one step never reaches another step's
/// executions; a Dataflow job id is checked for shape here and for ownership (the step's job-name
/// prefix) by the forward stage, which must look the job up to know its name.
fn execution_id(step: &StepSettings, id: &str) -> Result<String, InvalidInput> {
    let arn = match &step.target {
        StepTarget::StepFunctions { arn, .. } => arn,
        StepTarget::Dataflow(_) if valid_job_id(id) => return Ok(id.to_string()),
        StepTarget::Dataflow(_) => {
            return Err(InvalidInput(format!("`{id}` is not a Dataflow job id")));
        }
    };
    let prefix = arn.execution_prefix();
    if let Some(name) = id.strip_prefix(&prefix) {
        if valid_execution_name(name) {
            return Ok(id.to_string());
        }
    } else if valid_execution_name(id) {
        return Ok(format!("{prefix}{id}"));
    }
    Err(InvalidInput(format!(
        "execution `{id}` is not an execution of step `{}`",
        step.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_bodies() {
        assert!(parse_start_body(b"").unwrap().input.is_none());
        assert!(parse_start_body(b"{\"input\": 3}").is_err());
        assert!(parse_start_body(b"{\"inptu\": {}}").is_err());
        assert!(parse_start_body(b"not json").is_err());
        let b = parse_start_body(br#"{"input": {"a": 1}, "name": "run-1"}"#).unwrap();
        assert_eq!(b.name.as_deref(), Some("run-1"));
    }

    #[test]
    fn idempotent_names_are_stable_and_valid() {
        let a = idempotent_name("load", "k1");
        assert_eq!(a, idempotent_name("load", "k1"));
        assert_ne!(a, idempotent_name("load", "k2"));
        assert_ne!(a, idempotent_name("other", "k1"));
        assert!(valid_execution_name(&a));
        assert!(!valid_execution_name("has space"));
        assert!(!valid_execution_name(&"x".repeat(81)));
    }
}
