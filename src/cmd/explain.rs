//! `stepgate explain`: the identity stepgate derives from a token and the decision, with the
//! policy ids behind it. Nothing is forwarded and nothing is audited.

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use crate::app::Deps;
use crate::authn::Authenticator;
use crate::authz::{Policies, RequestFacts};
use crate::model::Action;

/// What to explain.
pub struct ExplainArgs<'a> {
    /// Config file.
    pub config: &'a Path,
    /// The token; `None` reads `STEPGATE_TOKEN`, else standard input.
    pub token: Option<String>,
    /// Step name.
    pub step: &'a str,
    /// Action name.
    pub action: &'a str,
    /// Start input JSON.
    pub input: Option<&'a str>,
    /// Caller address for `context.source_ip`.
    pub source_ip: IpAddr,
}

/// Runs it.
pub async fn run(a: ExplainArgs<'_>) -> ExitCode {
    let fail = |m: String| {
        eprintln!("error: {m}");
        ExitCode::from(1)
    };
    let (settings, bundle) = match super::load_with_policies(a.config) {
        Ok(x) => x,
        Err(p) => return fail(p.to_string()),
    };
    let Some(action) = Action::parse(a.action) else {
        return fail(format!(
            "unknown action `{}`, expected start, stop, describe or list",
            a.action
        ));
    };
    if !settings.steps.contains_key(a.step) {
        return fail(format!("step `{}` is not configured", a.step));
    }
    let input = match a.input.map(serde_json::from_str::<serde_json::Value>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => return fail(format!("--input is not JSON: {e}")),
    };
    let token = match a.token.or_else(|| std::env::var("STEPGATE_TOKEN").ok()) {
        Some(t) => t,
        None => {
            let mut s = String::new();
            if std::io::stdin().read_to_string(&mut s).is_err() {
                return fail("no token: give --token, STEPGATE_TOKEN or standard input".into());
            }
            s
        }
    };
    let deps = match Deps::real() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let authn = Authenticator::new(&settings.issuers, deps.http.clone(), deps.clock.clone());
    let identity = match authn.verify_token(token.trim()).await {
        Ok(i) => i,
        Err(e) => return fail(format!("token refused: {}", e.description())),
    };
    println!("identity");
    println!("  principal  Caller::\"{}\"", identity.principal_id());
    println!("  email      {}", identity.email.as_deref().unwrap_or("-"));
    println!(
        "  groups     {}",
        if identity.groups.is_empty() {
            "-".into()
        } else {
            identity.groups.join(", ")
        }
    );
    println!("  tags");
    for (k, v) in &identity.tags {
        println!("    {k} = {v}");
    }
    let facts = RequestFacts {
        source_ip: a.source_ip,
        now: deps.clock.now(),
        input: input.as_ref(),
    };
    match Policies::new(bundle).decide(&identity, a.step, action, &facts) {
        Ok(Ok(permit)) => {
            println!("decision   allow {} on {}", action.as_str(), a.step);
            println!("  policies {}", permit.reasons().join(", "));
            ExitCode::SUCCESS
        }
        Ok(Err(denied)) => {
            println!("decision   deny {} on {}", action.as_str(), a.step);
            if denied.reasons.is_empty() {
                println!("  policies (none permit it: default deny)");
            } else {
                println!("  policies {} (forbid)", denied.reasons.join(", "));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
