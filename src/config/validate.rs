//! Raw TOML -> typed [`Settings`], purely: no file system, no network. Every problem is
//! collected (file, line, key, message) so `stepgate check` can show them all at once.
//!
//! This module holds the problem list and the walk over the file; each section is checked in
//! its own module: [`server`], [`issuers`], [`credentials`], [`steps`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::settings::*;
use super::{RawAudit, RawCredentials, RawIssuer, RawPolicies, RawServer, RawStep};

mod credentials;
mod issuers;
mod server;
mod steps;

pub use credentials::CLOUD_PLATFORM_SCOPE;
use credentials::validate_credentials;
use issuers::validate_issuer;
pub(crate) use server::secure_or_loopback;
use server::validate_server;
pub use steps::valid_dataflow_job_name;
use steps::validate_step;

// === Problems ===

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// Dotted key the problem is about (`steps.nightly-load.kind`), empty for the whole file.
    pub key: String,
    /// What is wrong, lowercase, no final period.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Collects problems against one file.
struct Collector<'a> {
    file: &'a Path,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Collector<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text
            .get(..offset.min(self.text.len()))
            .map(|s| s.bytes().filter(|b| *b == b'\n').count() + 1)
            .unwrap_or(1)
    }

    fn push(
        &mut self,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) {
        let line = span.map(|s| self.line_of(s.start));
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Deserializes one section, recording its error (with the innermost span) if any.
    fn section<T: DeserializeOwned>(
        &mut self,
        key: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => Some(v),
            Err(e) => {
                let span = e.span().or_else(|| Some(value.span()));
                self.push(span, key, e.message().trim().to_string());
                None
            }
        }
    }
}

// === Loading ===

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Settings, Problems> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse(&text, path)
}

/// Journal ring sizes accepted (1 GiB is far beyond any batch).
const MIN_JOURNAL: u64 = crate::audit::file::journal::MIN_BYTES;
const MAX_JOURNAL: u64 = 1 << 30;

/// Validates config text as if read from `path` (relative paths resolve against its folder).
pub fn parse(text: &str, path: &Path) -> Result<Settings, Problems> {
    let mut c = Collector {
        file: path,
        text,
        problems: Vec::new(),
    };
    let (root, syntax) = DeTable::parse_recoverable(text);
    for e in syntax {
        c.push(e.span(), "", e.message().trim().to_string());
    }
    if !c.problems.is_empty() {
        return Err(Problems(c.problems));
    }
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();

    let mut server = RawServer::default();
    let mut policies = RawPolicies::default();
    let mut audit = RawAudit::default();
    let mut issuers = Vec::new();
    let mut credentials = BTreeMap::new();
    let mut steps = BTreeMap::new();
    let mut cred_spans = BTreeMap::new();
    let mut step_spans = BTreeMap::new();

    for (key, value) in root.get_ref().iter() {
        match key.get_ref().as_ref() {
            "server" => server = c.section(key.get_ref(), value).unwrap_or_default(),
            "policies" => policies = c.section(key.get_ref(), value).unwrap_or_default(),
            "audit" => audit = c.section(key.get_ref(), value).unwrap_or_default(),
            "issuers" => match value.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(raw) = c.section::<RawIssuer>(&format!("issuers[{i}]"), item) {
                            issuers.push((raw, item.span()));
                        }
                    }
                }
                _ => c.push(Some(value.span()), "issuers", "must be an array of tables ([[issuers]])"),
            },
            "credentials" => match value.get_ref() {
                DeValue::Table(t) => {
                    for (name, item) in t.iter() {
                        let k = format!("credentials.{}", name.get_ref());
                        cred_spans.insert(name.get_ref().to_string(), item.span());
                        if let Some(raw) = c.section::<RawCredentials>(&k, item) {
                            credentials.insert(name.get_ref().to_string(), raw);
                        }
                    }
                }
                _ => c.push(Some(value.span()), "credentials", "must be a table of tables"),
            },
            "steps" => match value.get_ref() {
                DeValue::Table(t) => {
                    for (name, item) in t.iter() {
                        let k = format!("steps.{}", name.get_ref());
                        step_spans.insert(name.get_ref().to_string(), item.span());
                        if let Some(raw) = c.section::<RawStep>(&k, item) {
                            steps.insert(name.get_ref().to_string(), raw);
                        }
                    }
                }
                _ => c.push(Some(value.span()), "steps", "must be a table of tables"),
            },
            other => c.push(
                Some(key.span()),
                other,
                format!("unknown key `{other}`, expected one of `server`, `policies`, `audit`, `issuers`, `credentials`, `steps`"),
            ),
        }
    }

    let server = validate_server(&mut c, &base, server);
    let policies_dir = base.join(policies.dir.as_deref().unwrap_or("policies"));
    let audit_path = base.join(
        audit
            .path
            .as_deref()
            .unwrap_or("audit/stepgate-audit.jsonl"),
    );

    let audit_rotate_bytes = match audit.rotate_bytes {
        None => Some(128 * 1024 * 1024),
        Some(0) => None,
        Some(n) => Some(n),
    };
    let audit_journal_bytes = match audit.journal_bytes {
        None => 8 * 1024 * 1024,
        Some(n) if n == 0 || (MIN_JOURNAL..=MAX_JOURNAL).contains(&n) => n,
        Some(n) => {
            c.push(
                None,
                "audit.journal_bytes",
                format!("{n} is outside 0 (no journal) or {MIN_JOURNAL}..={MAX_JOURNAL}"),
            );
            0
        }
    };
    let audit_rotate_age = audit
        .rotate_age
        .as_deref()
        .map(|a| duration(&mut c, "audit.rotate_age", Some(a), Duration::ZERO))
        .filter(|d| !d.is_zero());

    let mut issuer_settings = Vec::new();
    for (i, (raw, span)) in issuers.into_iter().enumerate() {
        if let Some(s) = validate_issuer(&mut c, &format!("issuers[{i}]"), span.clone(), raw) {
            if issuer_settings
                .iter()
                .any(|o: &IssuerSettings| o.name == s.name || o.issuer == s.issuer)
            {
                c.push(
                    Some(span),
                    &format!("issuers[{i}]"),
                    format!("issuer `{}` is configured twice", s.name),
                );
            }
            issuer_settings.push(s);
        }
    }

    let mut cred_settings = BTreeMap::new();
    let kinds: BTreeMap<String, &'static str> = credentials
        .iter()
        .map(|(n, r)| {
            let k = match r {
                RawCredentials::AwsStatic(_) => "aws_static",
                RawCredentials::AwsAssumeRole(_) => "aws_assume_role",
                RawCredentials::AwsWebIdentity(_) => "aws_web_identity",
                RawCredentials::AwsDefaultChain(_) => "aws_default_chain",
                RawCredentials::GcpServiceAccount(_) => "gcp_service_account",
                RawCredentials::GcpExternalAccount(_) => "gcp_external_account",
                RawCredentials::GcpImpersonate(_) => "gcp_impersonate",
                RawCredentials::GcpMetadata(_) => "gcp_metadata",
            };
            (n.clone(), k)
        })
        .collect();
    for (name, raw) in credentials {
        let span = cred_spans.get(&name).cloned();
        let key = format!("credentials.{name}");
        if let Some(s) = validate_credentials(&mut c, &base, &key, span, raw, &kinds) {
            cred_settings.insert(name, s);
        }
    }

    let mut step_settings = BTreeMap::new();
    for (name, raw) in steps {
        let span = step_spans.get(&name).cloned();
        if let Some(s) = validate_step(&mut c, &base, &name, span, raw, &cred_settings) {
            step_settings.insert(name, s);
        }
    }
    // Job names are how a Dataflow step knows its jobs: no step's jobs may look like another's.
    let dataflow: Vec<(&String, &DataflowTarget)> = step_settings
        .iter()
        .filter_map(|(n, s)| match &s.target {
            StepTarget::Dataflow(t) => Some((n, t)),
            StepTarget::StepFunctions { .. } => None,
        })
        .collect();
    for (a, ta) in &dataflow {
        for (b, tb) in &dataflow {
            if a != b
                && ta.project == tb.project
                && ta.location == tb.location
                && (ta.job_name_prefix == tb.job_name_prefix
                    || tb
                        .job_name_prefix
                        .starts_with(&format!("{}-", ta.job_name_prefix)))
            {
                c.push(
                    step_spans.get(b.as_str()).cloned(),
                    &format!("steps.{b}.job_name_prefix"),
                    format!(
                        "`{}` overlaps step `{a}`'s job names (`{}-...`) in the same project and location; give each step its own prefix",
                        tb.job_name_prefix, ta.job_name_prefix
                    ),
                );
            }
        }
    }

    if !c.problems.is_empty() {
        return Err(Problems(c.problems));
    }
    Ok(Settings {
        source: path.to_path_buf(),
        server: server.ok_or_else(|| Problems(Vec::new()))?,
        policies_dir,
        audit_path,
        audit_rotate_bytes,
        audit_rotate_age,
        audit_journal_bytes,
        audit_accept_broken_chain: false,
        issuers: issuer_settings,
        credentials: cred_settings,
        steps: step_settings,
    })
}

fn duration(c: &mut Collector<'_>, key: &str, v: Option<&str>, default: Duration) -> Duration {
    match v {
        None => default,
        Some(s) => match humantime::parse_duration(s) {
            Ok(d) => d,
            Err(e) => {
                c.push(
                    None,
                    key,
                    format!("`{s}` is not a duration (like \"30s\" or \"5m\"): {e}"),
                );
                default
            }
        },
    }
}

#[cfg(test)]
mod tests;
