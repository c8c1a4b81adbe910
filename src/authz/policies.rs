//! Load Cedar policies and `schema.cedarschema` from the policies folder and validate them
//! (strict mode) against the schema, reporting every problem with file and line.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Entities, Entity, Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;

use super::entities;
use crate::config::{Problem, Problems, StepSettings};
use crate::model::Action;

mod chunks;
mod index;

pub use index::PolicyIndex;

/// A validated policy set with its schema and the step entities built against it.
#[derive(Debug)]
pub struct PolicyBundle {
    /// How many policies were loaded. (The whole set and the schema are not kept: after
    /// validation only the index is evaluated, and keeping both doubled the
    /// memory of a large set.)
    pub policy_count: usize,
    /// Step entities by step name.
    pub steps: HashMap<String, Entity>,
    /// Which policies are `forbid` (an erroring forbid denies: fail closed).
    pub forbids: std::collections::HashSet<PolicyId>,
    /// Policy id -> file, for messages.
    pub files: BTreeMap<String, PathBuf>,
    /// The policies by resource scope and action (see [`PolicyIndex`]).
    pub index: PolicyIndex,
    /// What the policies read of `context.input` (from their parsed form): decisions convert
    /// only that part of a start's input to a Cedar record, and none of it when no policy
    /// reads it.
    pub input_use: super::input_use::InputUse,
}

impl PolicyBundle {
    /// The sets whose policies can apply to `action` on `step` (disjoint; their union is every
    /// policy that can apply), or `None` for an unknown step.
    pub fn applicable(
        &self,
        step: &str,
        action: Action,
    ) -> Option<impl Iterator<Item = &PolicySet>> {
        self.index.applicable(step, action)
    }
}

fn problem(file: &Path, text: &str, offset: Option<usize>, message: String) -> Problem {
    let line = offset.map(|o| {
        text.get(..o.min(text.len()))
            .map(|s| s.bytes().filter(|b| *b == b'\n').count() + 1)
            .unwrap_or(1)
    });
    Problem {
        file: file.to_path_buf(),
        line,
        key: String::new(),
        message,
    }
}

fn first_offset(d: &dyn Diagnostic) -> Option<usize> {
    d.labels().and_then(|mut l| l.next()).map(|l| l.offset())
}

fn diagnostic_message(d: &dyn Diagnostic, fallback: &str) -> String {
    let mut m = fallback.to_string();
    if let Some(h) = d.help() {
        m.push_str(&format!(" (help: {h})"));
    }
    m
}

/// Policy files read from a folder: `(path, text)` for each `*.cedar`, and the schema text.
pub struct PolicySources {
    /// `*.cedar` files, sorted by name.
    pub policies: Vec<(PathBuf, String)>,
    /// `schema.cedarschema`.
    pub schema: (PathBuf, String),
}

/// Reads the folder (the only I/O of this module).
pub fn read_dir(dir: &Path) -> Result<PolicySources, Problems> {
    let io = |p: &Path, e: std::io::Error| {
        Problems(vec![Problem {
            file: p.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        }])
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    let mut policies = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| io(&f, e))?;
        policies.push((f, text));
    }
    let schema_path = dir.join("schema.cedarschema");
    let schema_text = std::fs::read_to_string(&schema_path).map_err(|e| io(&schema_path, e))?;
    Ok(PolicySources {
        policies,
        schema: (schema_path, schema_text),
    })
}

/// Parses and validates policies and steps; pure.
pub fn build(
    src: &PolicySources,
    steps: &BTreeMap<String, StepSettings>,
) -> Result<PolicyBundle, Problems> {
    let mut problems = Vec::new();
    let (schema_path, schema_text) = &src.schema;
    let schema = match Schema::from_cedarschema_str(schema_text) {
        Ok((s, _warnings)) => Some(s),
        Err(e) => {
            problems.push(problem(
                schema_path,
                schema_text,
                first_offset(&e),
                diagnostic_message(&e, &e.to_string()),
            ));
            None
        }
    };

    let mut set = PolicySet::new();
    let mut files = BTreeMap::new();
    let mut texts: HashMap<String, (&Path, &str)> = HashMap::new();
    let mut forbids = std::collections::HashSet::new();
    if src.policies.is_empty() {
        problems.push(Problem {
            file: schema_path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            line: None,
            key: String::new(),
            message: "no `*.cedar` policy files: every request would be denied".into(),
        });
    }
    for (path, text) in &src.policies {
        // Piece by piece (see [`chunks`]); on an error the whole text is parsed again, so the
        // messages are those of the file.
        let parsed: Option<Vec<PolicySet>> = chunks::chunks(text)
            .into_iter()
            .map(|(_, piece)| PolicySet::from_str(piece).ok())
            .collect();
        let parsed = match parsed {
            Some(p) => p,
            None => {
                if let Err(errs) = PolicySet::from_str(text) {
                    for e in errs.iter() {
                        problems.push(problem(path, text, first_offset(e), e.to_string()));
                    }
                } else {
                    problems.push(problem(path, text, None, "cannot be parsed".into()));
                }
                continue;
            }
        };
        if parsed.iter().any(|set| set.templates().next().is_some()) {
            problems.push(problem(
                path,
                text,
                None,
                "policy templates are not supported".into(),
            ));
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (n, p) in parsed.iter().flat_map(PolicySet::policies).enumerate() {
            let id = p
                .annotation("id")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{stem}:{n}"));
            let offset = || text.find(&format!("@id(\"{id}\")"));
            if files.contains_key(&id) {
                problems.push(problem(
                    path,
                    text,
                    offset(),
                    format!("policy id `{id}` is used twice"),
                ));
                continue;
            }
            let pid = PolicyId::new(id.clone());
            let policy: Policy = p.new_id(pid.clone());
            if policy.effect() == cedar_policy::Effect::Forbid {
                forbids.insert(pid);
            }
            if let Err(e) = set.add(policy) {
                problems.push(problem(path, text, offset(), e.to_string()));
                continue;
            }
            files.insert(id.clone(), path.clone());
            texts.insert(id, (path.as_path(), text.as_str()));
        }
    }

    let Some(schema) = schema else {
        return Err(Problems(problems));
    };
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);

    for e in result.validation_errors() {
        let id = e.policy_id().to_string();
        let (path, text) = texts
            .get(&id)
            .copied()
            .unwrap_or((schema_path.as_path(), ""));
        problems.push(problem(
            path,
            text,
            first_offset(e),
            format!("policy `{id}`: {e}"),
        ));
    }

    let mut step_entities = HashMap::new();
    for (name, s) in steps {
        match entities::step(s) {
            Ok(ent) => {
                if let Err(e) = Entities::from_entities([ent.clone()], Some(&schema)) {
                    problems.push(Problem {
                        file: schema_path.clone(),
                        line: None,
                        key: format!("steps.{name}.attributes"),
                        message: format!("does not match the `Step` entity of the schema: {e}"),
                    });
                }
                step_entities.insert(name.clone(), ent);
            }
            Err(e) => problems.push(Problem {
                file: schema_path.clone(),
                line: None,
                key: format!("steps.{name}"),
                message: e.to_string(),
            }),
        }
    }

    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let mut index = PolicyIndex::new(steps);
    for p in set.policies() {
        index
            .add(p)
            .map_err(|e| Problems(vec![problem(Path::new(""), "", None, e)]))?;
    }
    Ok(PolicyBundle {
        input_use: super::input_use::analyze(set.policies()),
        index,
        policy_count: set.policies().count(),
        steps: step_entities,
        forbids,
        files,
    })
}
