//! The policy index: each policy once, in the bucket of its resource scope (one step, one
//! pipeline, or every step), split by action. A decision evaluates the (at most three) buckets
//! that can apply to its step and combines them as Cedar combines one set.

use std::collections::{BTreeMap, HashMap};

use cedar_policy::{ActionConstraint, Policy, PolicySet, ResourceConstraint};

use crate::config::StepSettings;
use crate::model::Action;

/// One bucket's policies by action ([`Action::index`] order); `None` where it has none, so an
/// empty set costs neither memory nor an evaluation.
type ByAction = [Option<Box<PolicySet>>; 4];

/// The policies scoped to one step, and the step's pipeline (whose bucket also applies).
#[derive(Debug, Default)]
struct StepBucket {
    pipeline: String,
    sets: ByAction,
}

/// The policies whose action and resource scopes can match, by resource scope and action.
///
/// Cedar evaluates every policy of a set; this index keeps a decision's cost independent of
/// how many policies are about other steps. A policy outside a request's scopes could only
/// evaluate to "not applicable", so decisions are the same as over the whole set. Each policy
/// is held once per action of its scope (not once per step its scope covers): a per-pipeline
/// policy copied into every step's set made most of the resident memory of a large set.
#[derive(Debug, Default)]
pub struct PolicyIndex {
    /// `resource == Step::"s"` or `resource in Step::"s"`, by step.
    steps: HashMap<String, StepBucket>,
    /// `resource in Pipeline::"p"`, by pipeline.
    pipelines: HashMap<String, ByAction>,
    /// `resource` or `resource is Step`: every step.
    all: ByAction,
}

/// Where a policy's resource scope points.
enum Scope {
    Step(String),
    Pipeline(String),
    All,
    /// Matches no configured step: never applicable.
    Nothing,
}

impl PolicyIndex {
    /// An index with a bucket for each configured step.
    pub fn new(steps: &BTreeMap<String, StepSettings>) -> Self {
        Self {
            steps: steps
                .iter()
                .map(|(name, s)| {
                    (
                        name.clone(),
                        StepBucket {
                            pipeline: s.pipeline.clone(),
                            sets: ByAction::default(),
                        },
                    )
                })
                .collect(),
            pipelines: HashMap::new(),
            all: ByAction::default(),
        }
    }

    /// Files `policy` under its scope, once per action its scope can match. The error is Cedar's
    /// message (a policy id used twice).
    pub fn add(&mut self, policy: &Policy) -> Result<(), String> {
        let actions = actions(policy);
        if actions.is_empty() {
            return Ok(());
        }
        let sets = match self.scope(policy) {
            Scope::Step(step) => match self.steps.get_mut(&step) {
                Some(b) => &mut b.sets,
                None => return Ok(()),
            },
            Scope::Pipeline(p) => self.pipelines.entry(p).or_default(),
            Scope::All => &mut self.all,
            Scope::Nothing => return Ok(()),
        };
        for a in actions {
            if let Some(slot) = sets.get_mut(a.index()) {
                slot.get_or_insert_with(Box::default)
                    .add(policy.clone())
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// The sets that can apply to `action` on `step` (at most three, disjoint), or `None` for
    /// an unknown step.
    pub fn applicable(
        &self,
        step: &str,
        action: Action,
    ) -> Option<impl Iterator<Item = &PolicySet>> {
        let bucket = self.steps.get(step)?;
        let pipeline = self.pipelines.get(&bucket.pipeline);
        let i = action.index();
        Some(
            [Some(&bucket.sets), pipeline, Some(&self.all)]
                .into_iter()
                .flatten()
                .filter_map(move |sets| sets.get(i).and_then(|s| s.as_deref())),
        )
    }

    /// The bucket of `policy`'s resource scope.
    fn scope(&self, policy: &Policy) -> Scope {
        let in_entity = |uid: &cedar_policy::EntityUid| {
            let ty = uid.type_name().to_string();
            let id = uid.id().unescaped();
            if ty == "Step" && self.steps.contains_key(id) {
                Scope::Step(id.to_string())
            } else if ty == "Pipeline" && self.steps.values().any(|b| b.pipeline == id) {
                Scope::Pipeline(id.to_string())
            } else {
                Scope::Nothing
            }
        };
        match policy.resource_constraint() {
            ResourceConstraint::Any => Scope::All,
            ResourceConstraint::Is(t) if t.to_string() == "Step" => Scope::All,
            ResourceConstraint::Is(_) => Scope::Nothing,
            ResourceConstraint::Eq(uid) => {
                let id = uid.id().unescaped();
                if uid.type_name().to_string() == "Step" && self.steps.contains_key(id) {
                    Scope::Step(id.to_string())
                } else {
                    Scope::Nothing
                }
            }
            ResourceConstraint::In(uid) => in_entity(&uid),
            ResourceConstraint::IsIn(t, uid) if t.to_string() == "Step" => in_entity(&uid),
            ResourceConstraint::IsIn(..) => Scope::Nothing,
        }
    }
}

/// The actions `policy`'s action scope can match.
fn actions(policy: &Policy) -> Vec<Action> {
    let named = |a: &cedar_policy::EntityUid, x: Action| a.id().unescaped() == x.as_str();
    match policy.action_constraint() {
        ActionConstraint::Any => Action::ALL.to_vec(),
        ActionConstraint::Eq(a) => Action::ALL.into_iter().filter(|x| named(&a, *x)).collect(),
        ActionConstraint::In(list) => Action::ALL
            .into_iter()
            .filter(|x| list.iter().any(|a| named(a, *x)))
            .collect(),
    }
}
