//! `[credentials.NAME]`: the cloud credentials stepgate holds, one kind each.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{Collector, duration, secure_or_loopback};
use crate::config::RawCredentials;
use crate::config::settings::*;

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

pub(super) fn validate_credentials(
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
