//! Authorize: (Identity, step, action, request facts) -> [`Permit`] or [`Denied`], by Cedar.
//! Default deny; `forbid` beats `permit`; a `forbid` that fails to evaluate denies.

pub mod entities;
pub mod input_use;
pub mod policies;
pub mod reload;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use cedar_policy::{Authorizer, Context, Decision, Entities, Request, RestrictedExpression};

pub use entities::{RequestFacts, Vocabulary};
pub use policies::PolicyBundle;

use crate::authn::Identity;
use crate::model::{Action, Decided, MAX_DECIDED_PER_STEP, MAX_STEPS_PER_TOKEN, StepSlot, Verdict};

/// Proof that policy allowed `action` on `step` for `identity`. Only [`Policies::decide`]
/// makes one.
#[derive(Debug, Clone)]
pub struct Permit {
    identity: Arc<Identity>,
    step: String,
    action: Action,
    reasons: Arc<[String]>,
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
    /// The permitting policy ids, shared (no copy per request).
    pub fn shared_reasons(&self) -> Arc<[String]> {
        Arc::clone(&self.reasons)
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

/// Most source addresses whose `ip(...)` context value is kept.
const MAX_CACHED_IPS: usize = 4096;
/// Most contexts kept for the current second.
const MAX_CACHED_CONTEXTS: usize = 4096;

/// Contexts without `input`, for one second of the clock: every member of such a context is a
/// function of the second, the source address and the token's age, so requests that share
/// these share one context (Cedar evaluates each member, `ip(...)` included, when a context
/// is made).
#[derive(Default)]
struct Contexts {
    second: u64,
    by_source: HashMap<(IpAddr, u64), Context>,
}

/// The live policy set; replaced whole on reload.
pub struct Policies {
    live: ArcSwap<Live>,
    authorizer: Authorizer,
    /// Entity types and actions, parsed once (an error here fails every decision closed).
    vocabulary: Result<Vocabulary, String>,
    generations: AtomicU64,
    /// `source_ip` context values by address.
    ips: Mutex<HashMap<IpAddr, RestrictedExpression>>,
    /// Contexts of the current second.
    contexts: Mutex<Contexts>,
}

/// A bundle and its generation: per-token entity sets built for an older generation are
/// rebuilt, so a reload that changes a step's attributes is seen at once.
struct Live {
    generation: u64,
    bundle: Arc<PolicyBundle>,
}

impl Policies {
    /// Starts with a validated bundle.
    pub fn new(bundle: PolicyBundle) -> Self {
        Self {
            live: ArcSwap::from_pointee(Live {
                generation: 0,
                bundle: Arc::new(bundle),
            }),
            authorizer: Authorizer::new(),
            vocabulary: Vocabulary::new().map_err(|e| e.0),
            generations: AtomicU64::new(0),
            ips: Mutex::new(HashMap::new()),
            contexts: Mutex::new(Contexts::default()),
        }
    }

    /// The current bundle.
    pub fn current(&self) -> Arc<PolicyBundle> {
        self.live.load().bundle.clone()
    }

    /// Replaces the whole set at once; requests see the old set or the new one, never a mix.
    pub fn replace(&self, bundle: PolicyBundle) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.live.store(Arc::new(Live {
            generation,
            bundle: Arc::new(bundle),
        }));
    }

    /// The `ip(...)` value of an address, made once per address.
    fn source_ip(&self, ip: IpAddr) -> RestrictedExpression {
        let Ok(mut ips) = self.ips.lock() else {
            return RestrictedExpression::new_ip(ip.to_string());
        };
        if let Some(e) = ips.get(&ip) {
            return e.clone();
        }
        if ips.len() >= MAX_CACHED_IPS {
            ips.clear();
        }
        let e = RestrictedExpression::new_ip(ip.to_string());
        ips.insert(ip, e.clone());
        e
    }

    /// The request's context: its own, with `input`, when there is no `shared` key (a policy
    /// reads the input and the request has one); else the context shared by the requests of
    /// `shared`'s second from the same address with tokens of the same age.
    fn context(
        &self,
        facts: &RequestFacts<'_>,
        identity: &Identity,
        input_use: &input_use::InputUse,
        shared: Option<&Memo>,
    ) -> Result<Context, AuthzError> {
        let build = |input| {
            entities::context(facts, identity, self.source_ip(facts.source_ip), input)
                .map_err(|e| AuthzError(e.0))
        };
        let Some(m) = shared else {
            return build(Some(input_use));
        };
        let key = (m.source_ip, m.token_age);
        if let Ok(c) = self.contexts.lock()
            && c.second == m.second
            && let Some(ctx) = c.by_source.get(&key)
        {
            return Ok(ctx.clone());
        }
        let ctx = build(None)?;
        if let Ok(mut c) = self.contexts.lock() {
            if c.second != m.second || c.by_source.len() >= MAX_CACHED_CONTEXTS {
                c.by_source.clear();
                c.second = m.second;
            }
            c.by_source.insert(key, ctx.clone());
        }
        Ok(ctx)
    }

    /// The principal and the entity set of (principal, step), from the token's slot when it
    /// has them for this generation, else built and kept there; with them the decision kept
    /// for `memo`, when there is one.
    fn entities(
        vocabulary: &Vocabulary,
        identity: &Identity,
        step: &str,
        step_entity: &cedar_policy::Entity,
        generation: u64,
        memo: Option<&Memo>,
    ) -> Result<Slotted, AuthzError> {
        let slot = &identity.cedar;
        let principal = slot
            .principal
            .get_or_init(|| vocabulary.caller(identity).map(Arc::new).map_err(|e| e.0))
            .clone()
            .map_err(AuthzError)?;
        let mut per_step = slot
            .per_step
            .lock()
            .map_err(|_| AuthzError("entity cache poisoned".into()))?;
        if let Some(kept) = per_step.get(step)
            && kept.generation == generation
        {
            return Ok(match memo.and_then(|m| m.find(&kept.decided)) {
                Some(verdict) => Slotted::Decided(verdict),
                None => Slotted::Built(principal, kept.entities.clone()),
            });
        }
        let ents = Arc::new(
            Entities::from_entities([(*principal).clone(), step_entity.clone()], None)
                .map_err(|e| AuthzError(e.to_string()))?,
        );
        if per_step.len() >= MAX_STEPS_PER_TOKEN {
            per_step.clear();
        }
        per_step.insert(
            step.to_string(),
            StepSlot {
                generation,
                entities: ents.clone(),
                decided: Decided::default(),
            },
        );
        Ok(Slotted::Built(principal, ents))
    }

    /// Keeps `verdict` for `memo` in the token's slot for `step`, if the slot is still of
    /// `generation`.
    fn remember(identity: &Identity, step: &str, generation: u64, memo: &Memo, verdict: &Verdict) {
        let Ok(mut per_step) = identity.cedar.per_step.lock() else {
            return;
        };
        if let Some(kept) = per_step.get_mut(step)
            && kept.generation == generation
        {
            let decided = &mut kept.decided;
            if decided.second != memo.second || decided.by.len() >= MAX_DECIDED_PER_STEP {
                decided.by.clear();
                decided.second = memo.second;
            }
            decided
                .by
                .push((memo.source_ip, memo.token_age, memo.action, verdict.clone()));
        }
    }

    /// Decides one request.
    pub fn decide(
        &self,
        identity: &Arc<Identity>,
        step: &str,
        action: Action,
        facts: &RequestFacts<'_>,
    ) -> Result<Result<Permit, Denied>, AuthzError> {
        let live = self.live.load();
        let bundle = &live.bundle;
        let vocabulary = self
            .vocabulary
            .as_ref()
            .map_err(|e| AuthzError(e.clone()))?;
        let step_entity = bundle
            .steps
            .get(step)
            .ok_or_else(|| AuthzError(format!("step `{step}` has no entity")))?;
        let memo = Memo::of(facts, identity, action, &bundle.input_use);
        let verdict = match Self::entities(
            vocabulary,
            identity,
            step,
            step_entity,
            live.generation,
            memo.as_ref(),
        )? {
            Slotted::Decided(verdict) => verdict,
            Slotted::Built(principal, ents) => {
                let context = self.context(facts, identity, &bundle.input_use, memo.as_ref())?;
                let request = Request::new(
                    principal.uid(),
                    vocabulary.action(action).clone(),
                    step_entity.uid(),
                    context,
                    None,
                )
                .map_err(|e| AuthzError(e.to_string()))?;
                let verdict = self.evaluate(bundle, &request, &ents, step, action)?;
                if let Some(m) = &memo {
                    Self::remember(identity, step, live.generation, m, &verdict);
                }
                verdict
            }
        };
        Ok(if verdict.allowed {
            Ok(Permit {
                identity: Arc::clone(identity),
                step: step.to_string(),
                action,
                reasons: verdict.reasons,
            })
        } else {
            Err(Denied {
                reasons: verdict.reasons.to_vec(),
            })
        })
    }

    /// Evaluates `request` (`action` on `step`) against the policies that can apply to it.
    fn evaluate(
        &self,
        bundle: &PolicyBundle,
        request: &Request,
        ents: &Entities,
        step: &str,
        action: Action,
    ) -> Result<Verdict, AuthzError> {
        let sets = bundle
            .applicable(step, action)
            .ok_or_else(|| AuthzError(format!("step `{step}` has no policy index")))?;
        // The sets are disjoint and together hold every policy that can apply, so Cedar's rule
        // over their union is: a satisfied forbid in any set denies (reasons: every satisfied
        // forbid), else a satisfied permit in any set allows (reasons: every satisfied permit),
        // else deny with no reasons. A set's `Deny` with reasons names satisfied forbids.
        let (mut failed_forbids, mut forbidden, mut permitted) =
            (Vec::new(), Vec::new(), Vec::new());
        for set in sets {
            let response = self.authorizer.is_authorized(request, set, ents);
            failed_forbids.extend(response.diagnostics().errors().filter_map(|e| {
                tracing::warn!(message = "Policy failed to evaluate.", error = %e);
                let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
                let id = pe.policy_id();
                bundle.forbids.contains(id).then(|| reason(id))
            }));
            let reasons = response.diagnostics().reason().map(reason);
            match response.decision() {
                Decision::Allow => permitted.extend(reasons),
                Decision::Deny => forbidden.extend(reasons),
            }
        }
        Ok(if !failed_forbids.is_empty() {
            Verdict {
                allowed: false,
                reasons: failed_forbids.into(),
            }
        } else if forbidden.is_empty() && !permitted.is_empty() {
            Verdict {
                allowed: true,
                reasons: permitted.into(),
            }
        } else {
            Verdict {
                allowed: false,
                reasons: forbidden.into(),
            }
        })
    }
}

/// What a context without `input` is a function of (its members: [`entities::context`]), and
/// with the action what a decision made with it depends on beside the token, the step and the
/// policy generation. The one place that says when a request's context and decision are shared.
struct Memo {
    second: u64,
    source_ip: IpAddr,
    token_age: u64,
    action: Action,
}

impl Memo {
    /// `None` when a policy reads `input` and the request has one: then the context and the
    /// decision are the request's own.
    fn of(
        facts: &RequestFacts<'_>,
        identity: &Identity,
        action: Action,
        input_use: &input_use::InputUse,
    ) -> Option<Self> {
        if input_use.is_read() && facts.input.is_some() {
            return None;
        }
        Some(Memo {
            second: crate::clock::unix_secs(facts.now),
            source_ip: facts.source_ip,
            token_age: entities::token_age(facts, identity),
            action,
        })
    }

    /// The decision kept for this memo, if `decided` is of its second and holds it.
    fn find(&self, decided: &Decided) -> Option<Verdict> {
        if decided.second != self.second {
            return None;
        }
        decided
            .by
            .iter()
            .find(|(ip, age, action, _)| {
                *ip == self.source_ip && *age == self.token_age && *action == self.action
            })
            .map(|(.., v)| v.clone())
    }
}

/// What the token's slot gave for a step.
enum Slotted {
    /// A decision kept for the request's memo.
    Decided(Verdict),
    /// The principal and the entity set, to decide with.
    Built(Arc<cedar_policy::Entity>, Arc<Entities>),
}

/// A policy's id as the audit record and the answer name it: the id as written (`Display`
/// would escape it character by character, `"` as `\"`; the JSON writer escapes what needs it).
fn reason(id: &cedar_policy::PolicyId) -> String {
    let id: &str = id.as_ref();
    id.to_owned()
}

#[cfg(test)]
mod tests;
