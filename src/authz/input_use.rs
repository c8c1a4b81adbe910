//! Which parts of `context.input` the policies can read, found in their JSON form (Cedar's EST),
//! so a decision converts only those attributes of a start's input into the Cedar context.
//!
//! Converting the input and having Cedar evaluate it is the costliest part of a context; most
//! policies read one or two of its attributes. Leaving out an attribute no policy names
//! cannot change a decision: `context.input.a` and `context.input has a` (and the extended
//! `context has input.a.b`) see the same for every kept `a`. Any other use of `context.input`
//! or of `context` as a whole (`==`, passing it on, a form this walk does not know) keeps the
//! whole input: when in doubt, nothing is left out.

use std::collections::BTreeSet;

use serde_json::Value;

/// What the policies read of `context.input`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum InputUse {
    /// No policy refers to `context.input`: decisions leave the input out.
    #[default]
    Unread,
    /// Only these top-level attributes are read (an empty set: only `context has input`).
    Attributes(BTreeSet<String>),
    /// The record may be read as a whole: decisions convert all of it.
    Whole,
}

impl InputUse {
    /// Whether the input goes into the context at all.
    pub fn is_read(&self) -> bool {
        !matches!(self, InputUse::Unread)
    }
}

/// Reads every policy's conditions (a policy without `when`/`unless` reads no context and is
/// not converted). A policy whose JSON form cannot be produced counts as a whole read.
pub fn analyze<'a>(policies: impl IntoIterator<Item = &'a cedar_policy::Policy>) -> InputUse {
    let mut acc = Acc::default();
    for p in policies
        .into_iter()
        .filter(|p| p.has_non_scope_constraint())
    {
        match p.to_json() {
            Ok(json) => policy(&json, &mut acc),
            Err(_) => acc.whole = true,
        }
        if acc.whole {
            return InputUse::Whole;
        }
    }
    if acc.read {
        InputUse::Attributes(acc.attrs)
    } else {
        InputUse::Unread
    }
}

#[derive(Default)]
struct Acc {
    /// Some condition refers to `context.input`.
    read: bool,
    attrs: BTreeSet<String>,
    whole: bool,
}

/// Only called for policies with a `when`/`unless`: a JSON form without its list of
/// conditions is a shape this walk does not know, read as a whole use.
fn policy(json: &Value, acc: &mut Acc) {
    let Some(conditions) = json.get("conditions").and_then(Value::as_array) else {
        acc.whole = true;
        return;
    };
    for c in conditions {
        match c.get("body") {
            Some(body) => expr(body, acc),
            None => acc.whole = true,
        }
    }
}

/// `{"Var": "context"}`
fn is_context(e: &Value) -> bool {
    e.get("Var").and_then(Value::as_str) == Some("context") && single(e)
}

/// `{".": {"left": {"Var": "context"}, "attr": "input"}}`
fn is_context_input(e: &Value) -> bool {
    single(e)
        && e.get(".").is_some_and(|g| {
            g.get("left").is_some_and(is_context)
                && g.get("attr").and_then(Value::as_str) == Some("input")
        })
}

fn single(e: &Value) -> bool {
    e.as_object().is_some_and(|o| o.len() == 1)
}

/// The attribute names of a `.` or `has`: one string, or the path of an extended `has`.
fn attr_path(v: &Value) -> Option<Vec<&str>> {
    match v.get("attr")? {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(a) => a.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

fn expr(e: &Value, acc: &mut Acc) {
    if acc.whole {
        return;
    }
    let Some((key, v)) = e
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
    else {
        acc.whole = true;
        return;
    };
    match key.as_str() {
        "Value" | "Slot" | "Unknown" => {}
        "Var" => {
            if v.as_str() == Some("context") {
                acc.whole = true;
            }
        }
        "." | "has" => {
            let (Some(left), Some(path)) = (v.get("left"), attr_path(v)) else {
                acc.whole = true;
                return;
            };
            if is_context_input(left) {
                // `context.input.a`, `context.input has a`, `context.input has a.b`
                acc.read = true;
                match path.first() {
                    Some(a) => {
                        acc.attrs.insert((*a).to_string());
                    }
                    None => acc.whole = true,
                }
            } else if is_context(left) {
                match (key.as_str(), path.as_slice()) {
                    // `context.input` anywhere but under a `.` or `has`: read whole.
                    (".", ["input"]) => acc.whole = true,
                    // `context has input`: presence only. `context has input.a...`: `a`.
                    ("has", ["input"]) => acc.read = true,
                    ("has", ["input", a, ..]) => {
                        acc.read = true;
                        acc.attrs.insert((*a).to_string());
                    }
                    // Another member of the context (`context.source_ip`, ...).
                    _ => {}
                }
            } else {
                expr(left, acc);
            }
        }
        "Record" => match v.as_object() {
            Some(fields) => fields.values().for_each(|f| expr(f, acc)),
            None => acc.whole = true,
        },
        "like" => match v.get("left") {
            Some(left) => expr(left, acc),
            None => acc.whole = true,
        },
        "is" => match v.get("left") {
            Some(left) => {
                expr(left, acc);
                if let Some(i) = v.get("in") {
                    expr(i, acc);
                }
            }
            None => acc.whole = true,
        },
        // Operators (`left`/`right`, `arg`, `if`/`then`/`else`) and extension calls (an array
        // of arguments): every member is an expression.
        _ => match v {
            Value::Object(members) => members.values().for_each(|m| expr(m, acc)),
            Value::Array(args) => args.iter().for_each(|a| expr(a, acc)),
            _ => acc.whole = true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn use_of(text: &str) -> InputUse {
        let set = cedar_policy::PolicySet::from_str(text).expect("policies parse");
        analyze(set.policies())
    }

    fn attrs(names: &[&str]) -> InputUse {
        InputUse::Attributes(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn attribute_reads_are_collected() {
        assert_eq!(
            use_of(
                r#"forbid (principal, action, resource) when {
                    resource has env && resource.env == "prod" &&
                    context has input && context.input has full_refresh && context.input.full_refresh
                };
                permit (principal, action, resource) when { context.input.date like "2026-*" &&
                    context.input["region"] == "eu-west-1" && context.hour_utc < 18 };"#
            ),
            attrs(&["date", "full_refresh", "region"])
        );
        // Nested: the top-level attribute is kept whole.
        assert_eq!(
            use_of(
                r#"permit (principal, action, resource) when { context.input.a.b == 1 };
                permit (principal, action, resource) when { context has input.c.d };
                permit (principal, action, resource) when { context.input has e.f };"#
            ),
            attrs(&["a", "c", "e"])
        );
        assert_eq!(
            use_of(r#"permit (principal, action, resource) when { context has input };"#),
            attrs(&[])
        );
    }

    #[test]
    fn whole_reads_keep_everything() {
        for text in [
            r#"permit (principal, action, resource) when { context.input == {"a": 1} };"#,
            r#"permit (principal, action, resource) when { [context.input].contains({"a": 1}) };"#,
            r#"permit (principal, action, resource) when { context == {"input": {}} };"#,
            r#"permit (principal, action, resource) when { {"x": context}.x.input.a == 1 };"#,
            r#"permit (principal, action, resource) when { (if true then context.input else {}).a == 1 };"#,
        ] {
            assert_eq!(use_of(text), InputUse::Whole, "{text}");
        }
    }

    #[test]
    fn no_reference_leaves_the_input_out() {
        assert_eq!(
            use_of(
                r#"permit (principal, action, resource) when { context.source_ip.isLoopback() &&
                    principal.hasTag("input") && principal.getTag("input") == "input" };
                forbid (principal, action, resource) unless { context.hour_utc < 18 };"#
            ),
            InputUse::Unread
        );
    }

    #[test]
    fn an_escaped_name_is_still_found() {
        // The text never says `input`; the parsed policy does.
        assert_eq!(
            use_of(
                r#"forbid (principal, action, resource) when { context["\u{69}nput"]["\u{78}"] == 1 };"#
            ),
            attrs(&["x"])
        );
    }
}
