//! `[[issuers]]`: one OIDC issuer each, its audiences, algorithms and claim mappings.

use std::time::Duration;

use super::{Collector, duration, secure_or_loopback};
use crate::config::RawIssuer;
use crate::config::settings::*;

const KNOWN_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

pub(super) fn validate_issuer(
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
