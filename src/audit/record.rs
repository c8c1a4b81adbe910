//! The audit record (DESIGN.md §6): one JSON object per line, chained by SHA-256 over its
//! RFC 8785 canonical form without `hash`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record ever.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who the record is about (never a token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerRef {
    /// Issuer name.
    pub issuer: String,
    /// Subject.
    pub sub: String,
    /// Verified email.
    pub email: Option<String>,
}

/// What a request handler submits; the writer adds `v`, `seq`, `prev_hash` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// RFC 3339 time.
    pub time: String,
    /// Request id.
    pub request_id: String,
    /// `decision`, `outcome` or `recovered`.
    pub event: &'static str,
    /// The authenticated caller, if any.
    pub caller: Option<CallerRef>,
    /// Action name.
    pub action: Option<String>,
    /// Step name.
    pub step: Option<String>,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// Policy ids, or the reason for a non-policy deny (`unauthenticated: token expired`).
    pub reasons: Vec<String>,
    /// SHA-256 (hex) of the request body.
    pub input_sha256: Option<String>,
    /// HTTP status answered (outcome, and denies).
    pub status: Option<u16>,
    /// Upstream execution id.
    pub execution_id: Option<String>,
    /// Milliseconds from request start.
    pub latency_ms: Option<u64>,
    /// Caller address.
    pub source_ip: Option<String>,
    /// Input fields the step allows in clear (`audit_input_fields`); absent otherwise.
    pub input_fields: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Format version, 1.
    pub v: u32,
    /// Position in the chain, from 1.
    pub seq: u64,
    /// RFC 3339 time.
    pub time: String,
    /// Request id.
    pub request_id: String,
    /// `decision` | `outcome` | `recovered`.
    pub event: String,
    /// Caller.
    pub caller: Option<CallerRef>,
    /// Action.
    pub action: Option<String>,
    /// Step.
    pub step: Option<String>,
    /// `allow` | `deny`.
    pub decision: String,
    /// Reasons.
    pub reasons: Vec<String>,
    /// Input digest.
    pub input_sha256: Option<String>,
    /// Status.
    pub status: Option<u16>,
    /// Execution id.
    pub execution_id: Option<String>,
    /// Latency.
    pub latency_ms: Option<u64>,
    /// Caller address.
    pub source_ip: Option<String>,
    /// Allowed input fields in clear; only present for steps that configure them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_fields: Option<serde_json::Map<String, serde_json::Value>>,
    /// Previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

impl Record {
    /// Seals an entry into the chain.
    pub fn seal(entry: Entry, seq: u64, prev_hash: &str) -> Result<Record, serde_json::Error> {
        let mut r = Record {
            v: 1,
            seq,
            time: entry.time,
            request_id: entry.request_id,
            event: entry.event.to_string(),
            caller: entry.caller,
            action: entry.action,
            step: entry.step,
            decision: entry.decision.to_string(),
            reasons: entry.reasons,
            input_sha256: entry.input_sha256,
            status: entry.status,
            execution_id: entry.execution_id,
            latency_ms: entry.latency_ms,
            source_ip: entry.source_ip,
            input_fields: entry.input_fields,
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
        };
        let mut v = serde_json::to_value(&r)?;
        r.hash = hash_of(&mut v)?;
        Ok(r)
    }
}

/// The hash of a record given as JSON: SHA-256 of its canonical form without `hash`.
pub fn hash_of(record: &mut serde_json::Value) -> Result<String, serde_json::Error> {
    if let Some(o) = record.as_object_mut() {
        o.remove("hash");
    }
    let canonical = serde_json_canonicalizer::to_string(record)?;
    Ok(hex::encode(Sha256::digest(canonical.as_bytes())))
}

/// SHA-256 hex of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_over_canonical_json_without_hash() {
        let r = Record::seal(
            Entry {
                time: "2026-11-24T00:00:00Z".into(),
                request_id: "r1".into(),
                event: "decision",
                decision: "deny",
                ..Entry::default()
            },
            1,
            GENESIS,
        )
        .unwrap();
        // Recompute the way any verifier would: parse the line, drop `hash`, canonicalize.
        let line = serde_json::to_string(&r).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let canonical = {
            v.as_object_mut().unwrap().remove("hash");
            serde_json_canonicalizer::to_string(&v).unwrap()
        };
        assert!(canonical.starts_with("{\"action\":null,\"caller\":null,\"decision\":\"deny\""));
        assert_eq!(r.hash, sha256_hex(canonical.as_bytes()));
    }
}
