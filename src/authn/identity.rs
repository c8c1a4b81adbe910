//! The identity a verified token stands for. Holds no token.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// Who is calling, as derived from a verified bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Configured issuer name (`[[issuers]].name`).
    pub issuer: String,
    /// The token's `sub`.
    pub sub: String,
    /// Email, only when the issuer marks it verified (or the issuer is configured to trust it).
    pub email: Option<String>,
    /// Cedar `Group` parents, from the issuer's groups claim.
    pub groups: Vec<String>,
    /// Every other string claim (nested objects flattened with dots): Cedar entity tags.
    pub tags: BTreeMap<String, String>,
    /// The token's `iat`.
    pub issued_at: Option<SystemTime>,
    /// The token's `exp`.
    pub expires_at: SystemTime,
    /// What authorization built for this token (kept with it in the verified-token cache).
    pub cedar: crate::model::PrincipalSlot,
}

impl Identity {
    /// The Cedar principal id, `<issuer-name>/<sub>`.
    pub fn principal_id(&self) -> String {
        format!("{}/{}", self.issuer, self.sub)
    }
}

/// Flattens claims into tags: strings as they are, nested objects with dotted keys
/// (`kubernetes.io.namespace`); numbers, booleans and arrays are left out.
pub fn flatten_tags(
    prefix: &str,
    claims: &serde_json::Map<String, serde_json::Value>,
    skip: &[&str],
    out: &mut BTreeMap<String, String>,
) {
    for (k, v) in claims {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if skip.contains(&key.as_str()) {
            continue;
        }
        match v {
            serde_json::Value::String(s) => {
                out.insert(key, s.clone());
            }
            serde_json::Value::Object(o) => flatten_tags(&key, o, skip, out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_claims_flatten_with_dots() {
        let v = serde_json::json!({
            "repository": "acme/etl",
            "kubernetes.io": {"namespace": "etl", "serviceaccount": {"name": "runner"}},
            "groups": ["a"],
            "nbf": 5
        });
        let mut out = BTreeMap::new();
        flatten_tags("", v.as_object().unwrap(), &["groups"], &mut out);
        assert_eq!(out["repository"], "acme/etl");
        assert_eq!(out["kubernetes.io.namespace"], "etl");
        assert_eq!(out["kubernetes.io.serviceaccount.name"], "runner");
        assert_eq!(out.len(), 3);
    }
}
