//! `stepgate policy test --config FILE TESTS.toml`: policy unit tests users write as data.
//! Each case gives a caller, an action, a step, a context and the expected decision (and
//! optionally the deciding policy ids); the same decision code as the proxy evaluates them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::authn::Identity;
use crate::authz::{Policies, RequestFacts};
use crate::config;
use crate::model::Action;

/// A test file: `[[case]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The cases.
    #[serde(rename = "case")]
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Shown in the report.
    pub name: String,
    /// Who calls.
    pub caller: CallerSpec,
    /// `start`, `stop`, `describe` or `list`.
    pub action: String,
    /// Step name (must be configured).
    pub step: String,
    /// Request facts.
    #[serde(default)]
    pub context: ContextSpec,
    /// `allow` or `deny`.
    pub expect: String,
    /// The deciding policy ids, when they matter.
    pub policies: Option<Vec<String>>,
}

/// The caller of a case, as claims would give it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSpec {
    /// Issuer name.
    pub issuer: String,
    /// Subject.
    pub sub: String,
    /// Verified email.
    pub email: Option<String>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Other string claims (tags).
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// Token age (`"5m"`). Default 0.
    pub token_age: Option<String>,
}

/// The request facts of a case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextSpec {
    /// Caller address. Default 127.0.0.1.
    pub source_ip: Option<IpAddr>,
    /// RFC 3339 time. Default now.
    pub time: Option<String>,
    /// Start input.
    pub input: Option<toml::Value>,
}

/// Runs the cases; prints a line per case; exit 1 when any fails.
pub fn run(config_path: &Path, tests_path: &Path, now: SystemTime) -> ExitCode {
    let invalid = |m: String| {
        println!("{m}");
        ExitCode::from(1)
    };
    let (settings, bundle) = match super::load_with_policies(config_path) {
        Ok(x) => x,
        Err(p) => return invalid(p.to_string()),
    };
    let text = match std::fs::read_to_string(tests_path) {
        Ok(t) => t,
        Err(e) => return invalid(format!("{}: cannot read: {e}", tests_path.display())),
    };
    let file: TestFile = match toml::from_str(&text) {
        Ok(f) => f,
        Err(e) => return invalid(format!("{}: {e}", tests_path.display())),
    };
    let policies = Policies::new(bundle);
    let (mut passed, mut failed) = (0, 0);
    for case in &file.cases {
        match run_case(&policies, &settings, case, now) {
            Ok(()) => {
                passed += 1;
                println!("pass  {}", case.name);
            }
            Err(why) => {
                failed += 1;
                println!("FAIL  {}: {why}", case.name);
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run_case(
    policies: &Policies,
    settings: &config::Settings,
    case: &Case,
    now: SystemTime,
) -> Result<(), String> {
    let action =
        Action::parse(&case.action).ok_or_else(|| format!("unknown action `{}`", case.action))?;
    if !settings.steps.contains_key(&case.step) {
        return Err(format!("step `{}` is not configured", case.step));
    }
    let time = match &case.context.time {
        Some(t) => humantime::parse_rfc3339(t).map_err(|e| format!("bad time `{t}`: {e}"))?,
        None => now,
    };
    let age = match &case.caller.token_age {
        Some(a) => humantime::parse_duration(a).map_err(|e| format!("bad token_age `{a}`: {e}"))?,
        None => Duration::ZERO,
    };
    let mut tags = case.caller.claims.clone();
    if let Some(e) = &case.caller.email {
        tags.insert("email".into(), e.clone());
    }
    let identity = std::sync::Arc::new(Identity {
        issuer: case.caller.issuer.clone(),
        sub: case.caller.sub.clone(),
        email: case.caller.email.clone(),
        groups: case.caller.groups.clone(),
        tags,
        issued_at: Some(time - age),
        expires_at: time + Duration::from_secs(3600),
        cedar: Default::default(),
    });
    let input = case
        .context
        .input
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| format!("bad input: {e}"))?;
    let facts = RequestFacts {
        source_ip: case
            .context
            .source_ip
            .unwrap_or(IpAddr::from([127, 0, 0, 1])),
        now: time,
        input: input.as_ref(),
    };
    let (got, ids) = match policies
        .decide(&identity, &case.step, action, &facts)
        .map_err(|e| e.to_string())?
    {
        Ok(p) => ("allow", p.reasons().to_vec()),
        Err(d) => ("deny", d.reasons),
    };
    if got != case.expect {
        return Err(format!(
            "expected {}, got {got} (policies: {})",
            case.expect,
            show(&ids)
        ));
    }
    if let Some(want) = &case.policies {
        let (mut a, mut b) = (want.clone(), ids.clone());
        a.sort();
        b.sort();
        if a != b {
            return Err(format!(
                "decided by {}, expected {}",
                show(&ids),
                show(want)
            ));
        }
    }
    Ok(())
}

fn show(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}
