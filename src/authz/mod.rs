//! Authorize: (Identity, step, action, request facts) -> [`Permit`] or [`Denied`], by Cedar.
//! Default deny; `forbid` beats `permit`; a `forbid` that fails to evaluate denies.

pub mod entities;
pub mod policies;
pub mod reload;

use std::sync::Arc;

use arc_swap::ArcSwap;
use cedar_policy::{Authorizer, Decision, Entities, Request};

pub use entities::RequestFacts;
pub use policies::PolicyBundle;

use crate::authn::Identity;
use crate::route::Action;

/// Proof that policy allowed `action` on `step` for `identity`. Only [`Policies::decide`]
/// makes one.
#[derive(Debug, Clone)]
pub struct Permit {
    identity: Identity,
    step: String,
    action: Action,
    reasons: Vec<String>,
}

impl Permit {
    /// Who was allowed.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
    /// On which step.
    pub fn step(&self) -> &str {
        &self.step
    }
    /// To do what.
    pub fn action(&self) -> Action {
        self.action
    }
    /// The permitting policy ids.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }
}

/// A denial, with the deciding `forbid` policy ids (empty: nothing permitted it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", if reasons.is_empty() { "no policy permits this request".to_string() } else { format!("denied by policy {}", reasons.join(", ")) })]
pub struct Denied {
    /// Deciding policy ids.
    pub reasons: Vec<String>,
}

/// Why no decision could be made (fail closed: 503).
#[derive(Debug, thiserror::Error)]
#[error("authorization failed: {0}")]
pub struct AuthzError(pub String);

/// The live policy set; replaced whole on reload.
pub struct Policies {
    bundle: ArcSwap<PolicyBundle>,
    authorizer: Authorizer,
}

impl Policies {
    /// Starts with a validated bundle.
    pub fn new(bundle: PolicyBundle) -> Self {
        Self {
            bundle: ArcSwap::from_pointee(bundle),
            authorizer: Authorizer::new(),
        }
    }

    /// The current bundle.
    pub fn current(&self) -> Arc<PolicyBundle> {
        self.bundle.load_full()
    }

    /// Replaces the whole set at once; requests see the old set or the new one, never a mix.
    pub fn replace(&self, bundle: PolicyBundle) {
        self.bundle.store(Arc::new(bundle));
    }

    /// Decides one request.
    pub fn decide(
        &self,
        identity: &Identity,
        step: &str,
        action: Action,
        facts: &RequestFacts,
    ) -> Result<Result<Permit, Denied>, AuthzError> {
        let bundle = self.bundle.load();
        let err = |e: entities::EntityError| AuthzError(e.0);
        let step_entity = bundle
            .steps
            .get(step)
            .ok_or_else(|| AuthzError(format!("step `{step}` has no entity")))?;
        let caller = entities::caller(identity).map_err(err)?;
        let ents = Entities::from_entities([caller, step_entity.clone()], None)
            .map_err(|e| AuthzError(e.to_string()))?;
        let request = Request::new(
            entities::caller_uid(identity).map_err(err)?,
            entities::action_uid(action.as_str()).map_err(err)?,
            entities::step_uid(step).map_err(err)?,
            entities::context(facts, identity).map_err(err)?,
            None,
        )
        .map_err(|e| AuthzError(e.to_string()))?;
        let set = bundle
            .applicable(step, action.as_str())
            .ok_or_else(|| AuthzError(format!("step `{step}` has no policy index")))?;
        let response = self.authorizer.is_authorized(&request, set, &ents);
        let failed_forbids: Vec<String> = response
            .diagnostics()
            .errors()
            .filter_map(|e| {
                tracing::warn!(message = "Policy failed to evaluate.", error = %e);
                let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
                let id = pe.policy_id();
                bundle.forbids.contains(id).then(|| id.to_string())
            })
            .collect();
        let reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|p| p.to_string())
            .collect();
        if !failed_forbids.is_empty() {
            return Ok(Err(Denied {
                reasons: failed_forbids,
            }));
        }
        Ok(match response.decision() {
            Decision::Allow => Ok(Permit {
                identity: identity.clone(),
                step: step.to_string(),
                action,
                reasons,
            }),
            Decision::Deny => Err(Denied { reasons }),
        })
    }
}
