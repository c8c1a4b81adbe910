//! Raw TOML -> typed [`Settings`], purely: no file system, no network. Every problem is
//! collected (file, line, key, message) so `stepgate check` can show them all at once.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::settings::*;
use super::{RawAudit, RawCredentials, RawIssuer, RawPolicies, RawServer, RawStep};

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

fn validate_server(c: &mut Collector<'_>, base: &Path, raw: RawServer) -> Option<ServerSettings> {
    let listen_s = raw.listen.as_deref().unwrap_or("127.0.0.1:8443");
    let listen = match listen_s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            c.push(
                None,
                "server.listen",
                format!("`{listen_s}` is not an address like `127.0.0.1:8443`"),
            );
            None
        }
    };
    let tls = match (raw.tls_cert, raw.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: base.join(cert),
            key: base.join(key),
        }),
        (None, None) => None,
        _ => {
            c.push(
                None,
                "server",
                "`tls_cert` and `tls_key` must be given together",
            );
            None
        }
    };
    if let Some(a) = listen
        && tls.is_none()
        && !a.ip().is_loopback()
    {
        c.push(
            None,
            "server.listen",
            format!("plain HTTP is only allowed on a loopback address, not `{a}`: set `tls_cert` and `tls_key`"),
        );
    }
    let max_body = raw.max_body_bytes.unwrap_or(262_144);
    if max_body == 0 || max_body > 64 * 1024 * 1024 {
        c.push(
            None,
            "server.max_body_bytes",
            "must be between 1 and 67108864",
        );
    }
    let header_read_timeout = duration(
        c,
        "server.header_read_timeout",
        raw.header_read_timeout.as_deref(),
        Duration::from_secs(10),
    );
    let shutdown_grace = duration(
        c,
        "server.shutdown_grace",
        raw.shutdown_grace.as_deref(),
        Duration::from_secs(30),
    );
    let upstream_timeout = duration(
        c,
        "server.upstream_timeout",
        raw.upstream_timeout.as_deref(),
        Duration::from_secs(30),
    );
    let mut trusted_proxies = Vec::new();
    for p in &raw.trusted_proxies {
        match p
            .parse::<ipnet::IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => c.push(
                None,
                "server.trusted_proxies",
                format!("`{p}` is not an address or CIDR range"),
            ),
        }
    }
    Some(ServerSettings {
        trusted_proxies,
        listen: listen?,
        tls,
        max_body_bytes: usize::try_from(max_body).unwrap_or(262_144),
        header_read_timeout,
        shutdown_grace,
        upstream_timeout,
    })
}

/// True for `https://` URLs, and for `http://` URLs on a loopback host.
pub(crate) fn secure_or_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => true,
        (Some("http"), Some(h)) => {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

const KNOWN_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn validate_issuer(
    c: &mut Collector<'_>,
    key: &str,
    span: std::ops::Range<usize>,
    raw: RawIssuer,
) -> Option<IssuerSettings> {
    let before = c.problems.len();
    if raw.name.is_empty() || raw.name.contains('/') {
        c.push(
            Some(span.clone()),
            &format!("{key}.name"),
            "must be non-empty and contain no `/`",
        );
    }
    if !secure_or_loopback(&raw.issuer) {
        c.push(
            Some(span.clone()),
            &format!("{key}.issuer"),
            format!(
                "`{}` must be an https URL (http only on loopback)",
                raw.issuer
            ),
        );
    }
    if let Some(j) = &raw.jwks_uri
        && !secure_or_loopback(j)
    {
        c.push(
            Some(span.clone()),
            &format!("{key}.jwks_uri"),
            format!("`{j}` must be an https URL (http only on loopback)"),
        );
    }
    if raw.audiences.is_empty() || raw.audiences.iter().any(|a| a.is_empty()) {
        c.push(
            Some(span.clone()),
            &format!("{key}.audiences"),
            "must list at least one non-empty audience",
        );
    }
    let algorithms = raw
        .algorithms
        .unwrap_or_else(|| vec!["RS256".into(), "ES256".into()]);
    for a in &algorithms {
        if !KNOWN_ALGS.contains(&a.as_str()) {
            c.push(
                Some(span.clone()),
                &format!("{key}.algorithms"),
                format!(
                    "`{a}` is not an accepted algorithm; use one of {}",
                    KNOWN_ALGS.join(", ")
                ),
            );
        }
    }
    let leeway = duration(
        c,
        &format!("{key}.leeway"),
        raw.leeway.as_deref(),
        Duration::from_secs(60),
    );
    if leeway > Duration::from_secs(300) {
        c.push(
            Some(span.clone()),
            &format!("{key}.leeway"),
            "must be at most 5m",
        );
    }
    let stale_keys_for = duration(
        c,
        &format!("{key}.stale_keys_for"),
        raw.stale_keys_for.as_deref(),
        Duration::from_secs(3600),
    );
    let min_refetch_interval = duration(
        c,
        &format!("{key}.min_refetch_interval"),
        raw.min_refetch_interval.as_deref(),
        Duration::from_secs(5),
    );
    let max_token_age = raw
        .max_token_age
        .as_deref()
        .map(|a| duration(c, &format!("{key}.max_token_age"), Some(a), Duration::ZERO));
    (c.problems.len() == before).then(|| IssuerSettings {
        name: raw.name,
        issuer: raw.issuer,
        audiences: raw.audiences,
        jwks_uri: raw.jwks_uri,
        groups_claim: raw.groups_claim.unwrap_or_else(|| "groups".into()),
        algorithms,
        leeway,
        require_verified_email: raw.require_verified_email.unwrap_or(true),
        stale_keys_for,
        min_refetch_interval,
        max_token_age,
        required_claims: raw.required_claims.unwrap_or_default(),
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

/// The STS fields both role kinds have, as written.
struct RawSts {
    role_arn: String,
    session_name: Option<String>,
    duration: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
}

fn sts_settings(
    c: &mut Collector<'_>,
    key: &str,
    span: Option<std::ops::Range<usize>>,
    raw: RawSts,
) -> StsSettings {
    let RawSts {
        role_arn,
        session_name,
        duration: duration_s,
        region,
        endpoint,
    } = raw;
    if !role_arn.starts_with("arn:") || !role_arn.contains(":role/") {
        c.push(
            span.clone(),
            &format!("{key}.role_arn"),
            format!("`{role_arn}` is not a role ARN (arn:aws:iam::<account>:role/<name>)"),
        );
    }
    let session_name = session_name.unwrap_or_else(|| "stepgate".into());
    if !(2..=64).contains(&session_name.len())
        || !session_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
    {
        c.push(
            span.clone(),
            &format!("{key}.session_name"),
            "must be 2-64 of letters, digits and `+=,.@_-`",
        );
    }
    let duration = duration(
        c,
        &format!("{key}.duration"),
        duration_s.as_deref(),
        Duration::from_secs(3600),
    );
    if !(Duration::from_secs(900)..=Duration::from_secs(43_200)).contains(&duration) {
        c.push(
            span.clone(),
            &format!("{key}.duration"),
            "must be between 15m and 12h",
        );
    }
    if let Some(e) = &endpoint
        && !secure_or_loopback(e)
    {
        c.push(
            span,
            &format!("{key}.sts_endpoint"),
            format!("`{e}` must be an https URL (http only on loopback)"),
        );
    }
    StsSettings {
        role_arn,
        session_name,
        duration,
        region: region.unwrap_or_else(|| "us-east-1".into()),
        endpoint,
    }
}

fn validate_credentials(
    c: &mut Collector<'_>,
    base: &Path,
    key: &str,
    span: Option<std::ops::Range<usize>>,
    raw: RawCredentials,
    kinds: &BTreeMap<String, &'static str>,
) -> Option<CredentialSettings> {
    let before = c.problems.len();
    let out = match raw {
        RawCredentials::AwsStatic(a) => {
            if a.access_key_id.trim().is_empty() || a.secret_access_key.expose().trim().is_empty() {
                c.push(
                    span,
                    key,
                    "`access_key_id` and `secret_access_key` must not be empty",
                );
            }
            CredentialSettings::AwsStatic(AwsStaticSettings {
                access_key_id: a.access_key_id,
                secret_access_key: a.secret_access_key,
                session_token: a.session_token,
            })
        }
        RawCredentials::AwsAssumeRole(a) => {
            match kinds.get(&a.source).copied() {
                None => c.push(span.clone(), &format!("{key}.source"), format!("no `[credentials.{}]` block is configured", a.source)),
                Some("aws_assume_role") => c.push(
                    span.clone(),
                    &format!("{key}.source"),
                    "role chaining through another `aws_assume_role` is not supported; use static, web identity or default-chain source credentials",
                ),
                Some(_) => {}
            }
            let sts = RawSts {
                role_arn: a.role_arn,
                session_name: a.session_name,
                duration: a.duration,
                region: a.region,
                endpoint: a.sts_endpoint,
            };
            let sts = sts_settings(c, key, span, sts);
            CredentialSettings::AwsAssumeRole(AwsAssumeRoleSettings {
                sts,
                source: a.source,
                external_id: a.external_id,
            })
        }
        RawCredentials::AwsWebIdentity(w) => {
            let sts = RawSts {
                role_arn: w.role_arn,
                session_name: w.session_name,
                duration: w.duration,
                region: w.region,
                endpoint: w.sts_endpoint,
            };
            let sts = sts_settings(c, key, span, sts);
            CredentialSettings::AwsWebIdentity(AwsWebIdentitySettings {
                sts,
                token_file: base.join(w.token_file),
            })
        }
        RawCredentials::AwsDefaultChain(d) => CredentialSettings::AwsDefaultChain {
            region: d.region.unwrap_or_else(|| "us-east-1".into()),
        },
        RawCredentials::GcpServiceAccount(g) => CredentialSettings::GcpServiceAccount {
            key_file: base.join(g.key_file),
            scopes: scopes(c, key, span, g.scopes),
        },
        RawCredentials::GcpExternalAccount(g) => CredentialSettings::GcpExternalAccount {
            config_file: base.join(g.config_file),
            scopes: scopes(c, key, span, g.scopes),
        },
        RawCredentials::GcpImpersonate(g) => {
            match kinds.get(&g.source).copied() {
                None => c.push(
                    span.clone(),
                    &format!("{key}.source"),
                    format!("no `[credentials.{}]` block is configured", g.source),
                ),
                Some("gcp_impersonate") => c.push(
                    span.clone(),
                    &format!("{key}.source"),
                    "chaining impersonations is not supported; use `delegates` instead",
                ),
                Some(k) if !k.starts_with("gcp_") => c.push(
                    span.clone(),
                    &format!("{key}.source"),
                    format!("`{}` is `{k}`; the source of an impersonation must be a `gcp_*` provider", g.source),
                ),
                Some("gcp_metadata") if g.iam_endpoint.is_some() => c.push(
                    span.clone(),
                    &format!("{key}.iam_endpoint"),
                    "an IAM endpoint override needs a file-based source (`gcp_service_account` or `gcp_external_account`)",
                ),
                Some(_) => {}
            }
            if !g.target_service_account.contains('@') {
                c.push(
                    span.clone(),
                    &format!("{key}.target_service_account"),
                    format!(
                        "`{}` is not a service account email",
                        g.target_service_account
                    ),
                );
            }
            let lifetime = duration(
                c,
                &format!("{key}.lifetime"),
                g.lifetime.as_deref(),
                Duration::from_secs(3600),
            );
            if !(Duration::from_secs(60)..=Duration::from_secs(43_200)).contains(&lifetime) {
                c.push(
                    span.clone(),
                    &format!("{key}.lifetime"),
                    "must be between 1m and 12h (over 1h needs Google's lifetime-extension org policy)",
                );
            }
            if let Some(e) = &g.iam_endpoint
                && !secure_or_loopback(e)
            {
                c.push(
                    span.clone(),
                    &format!("{key}.iam_endpoint"),
                    format!("`{e}` must be an https URL (http only on loopback)"),
                );
            }
            CredentialSettings::GcpImpersonate(GcpImpersonateSettings {
                source: g.source,
                target_service_account: g.target_service_account,
                delegates: g.delegates,
                lifetime,
                scopes: scopes(c, key, span, g.scopes),
                iam_endpoint: g.iam_endpoint.map(|e| e.trim_end_matches('/').to_string()),
            })
        }
        RawCredentials::GcpMetadata(g) => {
            if let Some(e) = &g.endpoint
                && !e.starts_with("http://")
                && !e.starts_with("https://")
            {
                c.push(
                    span.clone(),
                    &format!("{key}.endpoint"),
                    format!("`{e}` must be an http(s) URL"),
                );
            }
            CredentialSettings::GcpMetadata {
                endpoint: g.endpoint,
                scopes: g.scopes.unwrap_or_default(),
            }
        }
    };
    (c.problems.len() == before).then_some(out)
}

/// The cloud-platform scope, the default of every Google provider.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

fn scopes(
    c: &mut Collector<'_>,
    key: &str,
    span: Option<std::ops::Range<usize>>,
    raw: Option<Vec<String>>,
) -> Vec<String> {
    let scopes = raw.unwrap_or_else(|| vec![CLOUD_PLATFORM_SCOPE.to_string()]);
    if scopes.is_empty() || scopes.iter().any(|s| !s.starts_with("https://")) {
        c.push(
            span,
            &format!("{key}.scopes"),
            "give at least one scope, each an https URL (`https://www.googleapis.com/auth/cloud-platform`)",
        );
    }
    scopes
}

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
pub(crate) fn valid_step_name(name: &str) -> bool {
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

fn validate_step(
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

#[cfg(test)]
mod tests;
