//! `[steps.NAME]`: each step's upstream target, credentials, schema, pinned fields and limits.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Collector, secure_or_loopback};
use crate::config::RawStep;
use crate::config::settings::*;

/// Dataflow job names: `[a-z]([-a-z0-9]{0,1022}[a-z0-9])?`.
pub fn valid_dataflow_job_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 1024
        && b.first().is_some_and(u8::is_ascii_lowercase)
        && b.last()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Step names appear in URLs and Cedar ids: keep them to a safe alphabet.
fn valid_step_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn dataflow_target(
    c: &mut Collector<'_>,
    key: &str,
    name: &str,
    span: Option<std::ops::Range<usize>>,
    raw: &RawStep,
    endpoint: Option<http::Uri>,
    flex: bool,
) -> Option<DataflowTarget> {
    let before = c.problems.len();
    let kind = if flex {
        "dataflow_flex_template"
    } else {
        "dataflow_template"
    };
    let mut required = |field: &str, v: &Option<String>| -> String {
        match v.as_deref().map(str::trim) {
            Some(x) if !x.is_empty() => x.to_string(),
            _ => {
                c.push(
                    span.clone(),
                    &format!("{key}.{field}"),
                    format!("required for kind `{kind}`"),
                );
                String::new()
            }
        }
    };
    let project = required("project", &raw.project);
    let location = required("location", &raw.location);
    let (path_field, path, other_field, other) = if flex {
        (
            "container_spec_gcs_path",
            &raw.container_spec_gcs_path,
            "gcs_path",
            &raw.gcs_path,
        )
    } else {
        (
            "gcs_path",
            &raw.gcs_path,
            "container_spec_gcs_path",
            &raw.container_spec_gcs_path,
        )
    };
    let path = required(path_field, path);
    if !path.is_empty() && !path.starts_with("gs://") {
        c.push(
            span.clone(),
            &format!("{key}.{path_field}"),
            format!("`{path}` must be a Cloud Storage path (gs://bucket/object)"),
        );
    }
    if other.is_some() {
        c.push(
            span.clone(),
            &format!("{key}.{other_field}"),
            format!("not used by kind `{kind}`"),
        );
    }
    if !project.is_empty()
        && !project.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b':' || b == b'.'
        })
    {
        c.push(
            span.clone(),
            &format!("{key}.project"),
            format!("`{project}` is not a project id"),
        );
    }
    if !location.is_empty()
        && !location
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        c.push(
            span.clone(),
            &format!("{key}.location"),
            format!("`{location}` is not a region (`europe-west1`)"),
        );
    }
    let prefix = match &raw.job_name_prefix {
        Some(p) => p.clone(),
        None => name.to_ascii_lowercase().replace(['_', '.'], "-"),
    };
    if !valid_dataflow_job_name(&prefix) || prefix.len() > 40 {
        c.push(
            span.clone(),
            &format!("{key}.job_name_prefix"),
            format!(
                "`{prefix}` is not a usable Dataflow job name prefix: 1-40 of lowercase letters, digits and `-`, starting with a letter{}",
                if raw.job_name_prefix.is_none() {
                    " (derived from the step name; set `job_name_prefix`)"
                } else {
                    ""
                }
            ),
        );
    }
    let mut environment = serde_json::Map::new();
    for (k, v) in &raw.environment {
        match serde_json::to_value(v) {
            Ok(j) => {
                environment.insert(k.clone(), j);
            }
            Err(e) => c.push(
                span.clone(),
                &format!("{key}.environment.{k}"),
                e.to_string(),
            ),
        }
    }
    if environment.contains_key("additionalUserLabels")
        && !environment
            .get("additionalUserLabels")
            .is_some_and(serde_json::Value::is_object)
    {
        c.push(
            span.clone(),
            &format!("{key}.environment.additionalUserLabels"),
            "must be a table of strings",
        );
    }
    let endpoint = endpoint.or_else(|| "https://dataflow.googleapis.com".parse().ok())?;
    (c.problems.len() == before).then(|| DataflowTarget {
        endpoint,
        project,
        location,
        template: if flex {
            DataflowTemplate::Flex {
                container_spec_gcs_path: path,
            }
        } else {
            DataflowTemplate::Classic { gcs_path: path }
        },
        job_name_prefix: prefix,
        environment,
    })
}

pub(super) fn validate_step(
    c: &mut Collector<'_>,
    base: &Path,
    name: &str,
    span: Option<std::ops::Range<usize>>,
    raw: RawStep,
    creds: &BTreeMap<String, CredentialSettings>,
) -> Option<StepSettings> {
    let key = format!("steps.{name}");
    let before = c.problems.len();
    if !valid_step_name(name) {
        c.push(
            span.clone(),
            &key,
            "step names use only letters, digits, `-`, `_` and `.` (at most 128)",
        );
    }
    if raw.pipeline.is_empty() {
        c.push(
            span.clone(),
            &format!("{key}.pipeline"),
            "must not be empty",
        );
    }
    if !creds.contains_key(&raw.credentials) {
        c.push(
            span.clone(),
            &format!("{key}.credentials"),
            format!("no `[credentials.{}]` block is configured", raw.credentials),
        );
    }
    let mut attributes = BTreeMap::new();
    for (k, v) in &raw.attributes {
        if k == "kind" {
            c.push(
                span.clone(),
                &format!("{key}.attributes.kind"),
                "`kind` is reserved for the step kind",
            );
        }
        match attr_value(v) {
            Ok(a) => {
                attributes.insert(k.clone(), a);
            }
            Err(m) => c.push(span.clone(), &format!("{key}.attributes.{k}"), m),
        }
    }
    let mut pinned = serde_json::Map::new();
    for (k, v) in &raw.pinned {
        match serde_json::to_value(v) {
            Ok(j) => {
                pinned.insert(k.clone(), j);
            }
            Err(e) => c.push(span.clone(), &format!("{key}.pinned.{k}"), e.to_string()),
        }
    }
    let rate_limit = match &raw.rate_limit {
        None => None,
        Some(r) => {
            let per_minute = std::num::NonZeroU32::new(r.per_minute);
            let burst = std::num::NonZeroU32::new(r.burst.unwrap_or(r.per_minute));
            match (per_minute, burst) {
                (Some(per_minute), Some(burst)) => Some(RateLimit { per_minute, burst }),
                _ => {
                    c.push(
                        span.clone(),
                        &format!("{key}.rate_limit"),
                        "`per_minute` and `burst` must be at least 1",
                    );
                    None
                }
            }
        }
    };
    let input_schema = raw.input_schema.as_ref().map(|p| base.join(p));
    let endpoint = match &raw.endpoint {
        None => None,
        Some(e) if secure_or_loopback(e) => e.parse::<http::Uri>().ok(),
        Some(e) => {
            c.push(
                span.clone(),
                &format!("{key}.endpoint"),
                format!("`{e}` must be an https URL (http only on loopback)"),
            );
            None
        }
    };
    let (kind, target) = match raw.kind.as_str() {
        "stepfunctions" => {
            let Some(arn) = raw.state_machine_arn.as_deref() else {
                c.push(
                    span,
                    &format!("{key}.state_machine_arn"),
                    "required for kind `stepfunctions`",
                );
                return None;
            };
            match StateMachineArn::parse(arn) {
                Ok(arn) => {
                    // China regions live under their own DNS suffix.
                    let suffix = if arn.partition == "aws-cn" {
                        "amazonaws.com.cn"
                    } else {
                        "amazonaws.com"
                    };
                    let default = format!("https://states.{}.{suffix}", arn.region);
                    let sync_default = format!("https://sync-states.{}.{suffix}", arn.region);
                    let sync_endpoint = endpoint.clone().or_else(|| sync_default.parse().ok())?;
                    let endpoint = endpoint.or_else(|| default.parse().ok())?;
                    (
                        StepKind::StepFunctions,
                        StepTarget::StepFunctions {
                            arn,
                            endpoint,
                            sync_endpoint,
                            sync: raw.sync,
                        },
                    )
                }
                Err(m) => {
                    c.push(span, &format!("{key}.state_machine_arn"), m);
                    return None;
                }
            }
        }
        "dataflow_template" | "dataflow_flex_template" => {
            let flex = raw.kind == "dataflow_flex_template";
            let target = dataflow_target(c, &key, name, span.clone(), &raw, endpoint, flex)?;
            let kind = if flex {
                StepKind::DataflowFlexTemplate
            } else {
                StepKind::DataflowTemplate
            };
            (kind, StepTarget::Dataflow(target))
        }
        other => {
            c.push(
                span,
                &format!("{key}.kind"),
                format!(
                    "unknown step kind `{other}`, expected `stepfunctions`, `dataflow_template` or `dataflow_flex_template`"
                ),
            );
            return None;
        }
    };
    if let Some(cred) = creds.get(&raw.credentials) {
        let wanted = match kind {
            StepKind::StepFunctions => Cloud::Aws,
            StepKind::DataflowTemplate | StepKind::DataflowFlexTemplate => Cloud::Google,
        };
        if cred.cloud() != wanted {
            c.push(
                span.clone(),
                &format!("{key}.credentials"),
                format!(
                    "`{}` are {} credentials; a `{}` step needs {} credentials",
                    raw.credentials,
                    cred.cloud().as_str(),
                    kind.as_str(),
                    wanted.as_str()
                ),
            );
        }
    }
    if !matches!(
        kind,
        StepKind::DataflowTemplate | StepKind::DataflowFlexTemplate
    ) && (raw.project.is_some()
        || raw.location.is_some()
        || raw.gcs_path.is_some()
        || raw.container_spec_gcs_path.is_some()
        || raw.job_name_prefix.is_some()
        || !raw.environment.is_empty())
    {
        c.push(
            span.clone(),
            &key,
            "`project`, `location`, `gcs_path`, `container_spec_gcs_path`, `job_name_prefix` and `environment` are for Dataflow steps",
        );
    }
    (c.problems.len() == before).then(|| StepSettings {
        name: name.to_string(),
        pipeline: raw.pipeline,
        kind,
        target,
        credentials: raw.credentials,
        attributes,
        input_schema,
        pinned,
        rate_limit,
        audit_input_fields: raw.audit_input_fields,
    })
}

fn attr_value(v: &toml::Value) -> Result<AttrValue, String> {
    match v {
        toml::Value::String(s) => Ok(AttrValue::String(s.clone())),
        toml::Value::Integer(i) => Ok(AttrValue::Long(*i)),
        toml::Value::Boolean(b) => Ok(AttrValue::Bool(*b)),
        toml::Value::Array(a) => a
            .iter()
            .map(attr_value)
            .collect::<Result<_, _>>()
            .map(AttrValue::Set),
        other => Err(format!(
            "a {} cannot be a policy attribute (use a string, integer, boolean or array)",
            other.type_str()
        )),
    }
}
