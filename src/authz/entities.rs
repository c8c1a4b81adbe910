//! Identity, step and request facts -> Cedar entities and context. Pure.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::SystemTime;

use cedar_policy::{Context, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};

use super::input_use::InputUse;
use crate::authn::Identity;
use crate::clock::unix_secs;
use crate::config::{AttrValue, StepSettings};
use crate::model::Action;

/// Request facts visible to policies as `context`.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    /// The caller's address.
    pub source_ip: IpAddr,
    /// Decision time.
    pub now: SystemTime,
    /// The start input, when there is one.
    pub input: Option<&'a serde_json::Value>,
}

/// Why entities could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EntityError(pub String);

fn uid(ty: &str, id: &str) -> Result<EntityUid, EntityError> {
    let t = EntityTypeName::from_str(ty).map_err(|e| EntityError(e.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

/// The entity types and actions, parsed once (Cedar parses every name it is given as text).
#[derive(Debug, Clone)]
pub struct Vocabulary {
    caller: EntityTypeName,
    group: EntityTypeName,
    actions: [EntityUid; 4],
}

impl Vocabulary {
    /// Parses the names of DESIGN.md §5.
    pub fn new() -> Result<Self, EntityError> {
        let ty = |t: &str| EntityTypeName::from_str(t).map_err(|e| EntityError(e.to_string()));
        let action = ty("Action")?;
        Ok(Self {
            caller: ty("Caller")?,
            group: ty("Group")?,
            actions: Action::ALL.map(|a| {
                EntityUid::from_type_name_and_id(action.clone(), EntityId::new(a.as_str()))
            }),
        })
    }

    /// The uid of an action.
    pub fn action(&self, a: Action) -> &EntityUid {
        &self.actions[a.index()]
    }

    /// The principal uid of an identity.
    pub fn caller_uid(&self, identity: &Identity) -> EntityUid {
        EntityUid::from_type_name_and_id(
            self.caller.clone(),
            EntityId::new(identity.principal_id()),
        )
    }

    /// `Caller::"<issuer>/<sub>"` with `Group` parents and claim tags.
    pub fn caller(&self, identity: &Identity) -> Result<Entity, EntityError> {
        let mut attrs = vec![
            (
                "issuer".to_string(),
                RestrictedExpression::new_string(identity.issuer.clone()),
            ),
            (
                "sub".to_string(),
                RestrictedExpression::new_string(identity.sub.clone()),
            ),
        ];
        if let Some(e) = &identity.email {
            attrs.push((
                "email".to_string(),
                RestrictedExpression::new_string(e.clone()),
            ));
        }
        let parents = identity
            .groups
            .iter()
            .map(|g| EntityUid::from_type_name_and_id(self.group.clone(), EntityId::new(g)));
        let tags = identity
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())));
        Entity::new_with_tags(self.caller_uid(identity), attrs, parents, tags)
            .map_err(|e| EntityError(e.to_string()))
    }
}

/// `Step::"<name>"` with `Pipeline` parent, `kind` and the configured attributes.
pub fn step(s: &StepSettings) -> Result<Entity, EntityError> {
    let mut attrs = vec![(
        "kind".to_string(),
        RestrictedExpression::new_string(s.kind.as_str().into()),
    )];
    for (k, v) in &s.attributes {
        attrs.push((k.clone(), attr(v)));
    }
    Entity::new(
        step_uid(&s.name)?,
        attrs.into_iter().collect(),
        [uid("Pipeline", &s.pipeline)?].into(),
    )
    .map_err(|e| EntityError(e.to_string()))
}

/// The uid of a step.
pub fn step_uid(name: &str) -> Result<EntityUid, EntityError> {
    uid("Step", name)
}

fn attr(v: &AttrValue) -> RestrictedExpression {
    match v {
        AttrValue::String(s) => RestrictedExpression::new_string(s.clone()),
        AttrValue::Long(i) => RestrictedExpression::new_long(*i),
        AttrValue::Bool(b) => RestrictedExpression::new_bool(*b),
        AttrValue::Set(items) => RestrictedExpression::new_set(items.iter().map(attr)),
    }
}

/// JSON -> Cedar value: objects become records, arrays sets, integers longs. Floats become
/// their decimal text and `null` members are left out (Cedar has neither).
pub fn json_value(v: &serde_json::Value) -> Option<RestrictedExpression> {
    Some(match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => RestrictedExpression::new_bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None => RestrictedExpression::new_string(n.to_string()),
        },
        serde_json::Value::String(s) => RestrictedExpression::new_string(s.clone()),
        serde_json::Value::Array(a) => {
            RestrictedExpression::new_set(a.iter().filter_map(json_value))
        }
        serde_json::Value::Object(o) => json_record(o.iter())?,
    })
}

/// JSON members -> a Cedar record (`null` members left out).
fn json_record<'a>(
    members: impl Iterator<Item = (&'a String, &'a serde_json::Value)>,
) -> Option<RestrictedExpression> {
    let fields: BTreeMap<String, RestrictedExpression> = members
        .filter_map(|(k, v)| json_value(v).map(|e| (k.clone(), e)))
        .collect();
    RestrictedExpression::new_record(fields).ok()
}

/// Days since the epoch -> ISO weekday (1 = Monday ... 7 = Sunday). 1970-01-01 was a Thursday.
fn iso_weekday(days: u64) -> i64 {
    ((days + 3) % 7 + 1) as i64
}

/// Whole seconds since the token was issued (0 without `iat`).
pub fn token_age(facts: &RequestFacts<'_>, identity: &Identity) -> u64 {
    identity
        .issued_at
        .and_then(|iat| facts.now.duration_since(iat).ok())
        .map_or(0, |d| d.as_secs())
}

/// The `context` record (DESIGN.md §5). `source_ip` comes ready made: building an `ip(...)`
/// expression parses the extension's name, so callers keep them per address.
/// `input: None` leaves `input` out (no policy reads it; converting it is the costliest part
/// of a context); else the input goes in as far as the policies read it.
pub fn context(
    facts: &RequestFacts<'_>,
    identity: &Identity,
    source_ip: RestrictedExpression,
    input: Option<&InputUse>,
) -> Result<Context, EntityError> {
    let now = unix_secs(facts.now);
    let token_age = token_age(facts, identity);
    let mut pairs = vec![
        ("source_ip".to_string(), source_ip),
        (
            "now".to_string(),
            RestrictedExpression::new_long(i64::try_from(now).unwrap_or(i64::MAX)),
        ),
        (
            "hour_utc".to_string(),
            RestrictedExpression::new_long(((now / 3600) % 24) as i64),
        ),
        (
            "weekday_utc".to_string(),
            RestrictedExpression::new_long(iso_weekday(now / 86_400)),
        ),
        (
            "token_age_seconds".to_string(),
            RestrictedExpression::new_long(i64::try_from(token_age).unwrap_or(i64::MAX)),
        ),
    ];
    // The attributes no policy reads are left out; only an object input is a record.
    let members = facts.input.and_then(serde_json::Value::as_object);
    let converted = match (input, members) {
        (Some(InputUse::Attributes(keep)), Some(m)) => {
            json_record(keep.iter().filter_map(|k| m.get_key_value(k)))
        }
        (Some(InputUse::Whole), Some(m)) => json_record(m.iter()),
        _ => None,
    };
    if let Some(input) = converted {
        pairs.push(("input".to_string(), input));
    }
    Context::from_pairs(pairs).map_err(|e| EntityError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_are_iso() {
        // 1970-01-01 Thursday; 2026-11-24 is a Tuesday (day 20781).
        assert_eq!(iso_weekday(0), 4);
        assert_eq!(iso_weekday(20_781), 2);
    }
}
