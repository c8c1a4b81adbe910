//! The vocabulary the stages share (DESIGN.md §5): the actions a caller can ask for, and the
//! per-token slot where authorization keeps the Cedar principal it built for that token. A
//! module of its own, so no stage reaches back up the pipeline for a type.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

/// The body of a start: `{"input": {...}, "name": "optional"}` (the native API's, or what a
/// fronted API's start maps to).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// The execution input (a JSON object); `{}` when absent.
    #[serde(default)]
    pub input: Option<serde_json::Value>,
    /// Execution name; AWS generates one when absent.
    #[serde(default)]
    pub name: Option<String>,
}

/// A Cedar action on a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Start an execution.
    Start,
    /// Stop an execution.
    Stop,
    /// Look at an execution.
    Describe,
    /// List what one may start.
    List,
}

impl Action {
    /// Every action, in [`Action::index`] order.
    pub const ALL: [Action; 4] = [Action::Start, Action::Stop, Action::Describe, Action::List];

    /// The Cedar action id.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Describe => "describe",
            Action::List => "list",
        }
    }

    /// Position in [`Action::ALL`] (for per-action tables).
    pub fn index(self) -> usize {
        match self {
            Action::Start => 0,
            Action::Stop => 1,
            Action::Describe => 2,
            Action::List => 3,
        }
    }

    /// Parses a Cedar action id.
    pub fn parse(s: &str) -> Option<Self> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// What authorization derived from one verified token, kept with the token in the
/// verified-token cache so it is built once per token, not once per request: the principal
/// entity (with its `Group` parents and claim tags), and per step what [`StepSlot`] holds.
/// Opaque to every other stage.
#[derive(Default)]
pub struct PrincipalSlot {
    /// The principal, once built (or why it could not be).
    pub principal: OnceLock<Result<Arc<cedar_policy::Entity>, String>>,
    /// Per step.
    pub per_step: Mutex<HashMap<String, StepSlot>>,
}

/// What authorization keeps per token and step, for one policy generation.
pub struct StepSlot {
    /// The policy generation it was built for.
    pub generation: u64,
    /// The entity set of the principal and the step.
    pub entities: Arc<cedar_policy::Entities>,
    /// Decisions made with them in one second of the clock.
    pub decided: Decided,
}

/// Decisions of one token on one step in one second of the clock, by source address, token
/// age and action: when no policy reads `input`, those (with the policy generation) are every
/// input of a decision, so requests that share them share it.
#[derive(Default)]
pub struct Decided {
    /// The second (Unix time) they were made in.
    pub second: u64,
    /// (source address, token age in seconds, action) and what was decided.
    pub by: Vec<(IpAddr, u64, Action, Verdict)>,
}

/// A decision as it is kept: allowed or not, and the deciding policy ids.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Whether it allows.
    pub allowed: bool,
    /// The permitting policy ids when it allows, else the deciding `forbid` ids.
    pub reasons: Arc<[String]>,
}

/// Most decisions kept per token and step for one second; beyond it they start over.
pub const MAX_DECIDED_PER_STEP: usize = 64;

/// Most steps remembered per token; beyond it the slot starts over.
pub const MAX_STEPS_PER_TOKEN: usize = 64;

impl Clone for PrincipalSlot {
    /// A clone starts empty: it is a cache, rebuilt on use.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for PrincipalSlot {
    /// A cache never makes two identities different.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PrincipalSlot {}

impl std::fmt::Debug for PrincipalSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrincipalSlot")
    }
}
