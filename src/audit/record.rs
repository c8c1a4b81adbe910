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

/// What a request handler submits; the writer adds `v`, `seq`, `prev_hash` and `hash`. It
/// borrows what the request already holds: it is serialized when submitted and not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry<'a> {
    /// RFC 3339 time.
    pub time: &'a str,
    /// Request id.
    pub request_id: &'a str,
    /// `decision`, `outcome` or `recovered`.
    pub event: &'static str,
    /// The authenticated caller, if any.
    pub caller: Option<&'a CallerRef>,
    /// Action name.
    pub action: Option<&'a str>,
    /// Step name.
    pub step: Option<&'a str>,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// Policy ids, or the reason for a non-policy deny (`unauthenticated: token expired`).
    pub reasons: &'a [String],
    /// SHA-256 (hex) of the request body.
    pub input_sha256: Option<&'a str>,
    /// HTTP status answered (outcome, and denies).
    pub status: Option<u16>,
    /// Upstream execution id.
    pub execution_id: Option<&'a str>,
    /// The name a start's execution or job is given before the forward (decision records).
    pub execution_name: Option<&'a str>,
    /// Milliseconds from request start.
    pub latency_ms: Option<u64>,
    /// Caller address.
    pub source_ip: Option<&'a str>,
    /// Input fields the step allows in clear (`audit_input_fields`); absent otherwise.
    pub input_fields: Option<&'a serde_json::Map<String, serde_json::Value>>,
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
    /// The name given to a start's execution; only on start decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_name: Option<String>,
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
    pub fn seal(entry: &Entry<'_>, seq: u64, prev_hash: &str) -> Result<Record, serde_json::Error> {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        let mut r = Record {
            v: 1,
            seq,
            time: entry.time.to_owned(),
            request_id: entry.request_id.to_owned(),
            event: entry.event.to_string(),
            caller: entry.caller.cloned(),
            action: owned(entry.action),
            step: owned(entry.step),
            decision: entry.decision.to_string(),
            reasons: entry.reasons.to_vec(),
            input_sha256: owned(entry.input_sha256),
            status: entry.status,
            execution_id: owned(entry.execution_id),
            execution_name: owned(entry.execution_name),
            latency_ms: entry.latency_ms,
            source_ip: owned(entry.source_ip),
            input_fields: entry.input_fields.cloned(),
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
        };
        let mut v = serde_json::to_value(&r)?;
        r.hash = hash_of(&mut v)?;
        Ok(r)
    }
}

/// An entry serialized by its submitter, so that the one writer thread only splices in `seq`
/// and `prev_hash`, hashes and appends (the chain is serial; the serializing need not be).
/// [`Prepared::seal`] gives the same line and hash as [`Record::seal`] followed by
/// `serde_json::to_vec`: the canonical form is written field by field in RFC 8785 key order,
/// with serde_json's string escaping, which is RFC 8785's.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Canonical form up to and including `"prev_hash":"`.
    canon_head: Vec<u8>,
    /// Canonical form from the quote closing `prev_hash` up to and including `"seq":`.
    canon_mid: Vec<u8>,
    /// Canonical form after `seq`: `,"source_ip":...,"v":1}`.
    canon_tail: Vec<u8>,
    /// The line's members between `"seq":N,` and `,"prev_hash"`, in [`Record`] order.
    line_mid: Vec<u8>,
}

/// Each member value of an entry serialized once, as JSON text, into one buffer; the canonical
/// form and the line are both assembled from these bytes (they differ only in member order).
struct Values {
    buf: Vec<u8>,
}

impl Values {
    /// Serializes `v` and returns where its text lies in the buffer.
    fn add<T: Serialize + ?Sized>(
        &mut self,
        v: &T,
    ) -> Result<std::ops::Range<usize>, serde_json::Error> {
        let start = self.buf.len();
        serde_json::to_writer(&mut self.buf, v)?;
        Ok(start..self.buf.len())
    }

    /// Appends `"key":<value>,` to `out`.
    fn member(&self, out: &mut Vec<u8>, key: &str, at: &std::ops::Range<usize>) {
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(&self.buf[at.clone()]);
        out.push(b',');
    }

    /// Appends `"caller":{...},` with its members in the given order, or `"caller":null,`.
    fn caller(&self, out: &mut Vec<u8>, members: Option<[(&str, &std::ops::Range<usize>); 3]>) {
        let Some(members) = members else {
            out.extend_from_slice(b"\"caller\":null,");
            return;
        };
        out.extend_from_slice(b"\"caller\":{");
        for (key, at) in members {
            self.member(out, key, at);
        }
        out.pop();
        out.extend_from_slice(b"},");
    }
}

/// An integer as RFC 8785 writes it: numbers are IEEE doubles, so above 2^53 they are rounded
/// and printed the ECMAScript way (`18446744073709552000`).
fn canonical_u64(n: Option<u64>, mut write: impl FnMut(&[u8])) {
    match n {
        None => write(b"null"),
        Some(n) if n <= 1 << 53 => write(itoa::Buffer::new().format(n).as_bytes()),
        Some(n) => match serde_json_canonicalizer::to_string(&n) {
            Ok(text) => write(text.as_bytes()),
            Err(_) => write(itoa::Buffer::new().format(n).as_bytes()),
        },
    }
}

impl Prepared {
    /// Serializes everything of `entry` that does not depend on the chain.
    pub fn new(e: &Entry<'_>) -> Result<Self, serde_json::Error> {
        let mut v = Values {
            buf: Vec::with_capacity(512),
        };
        let action = v.add(&e.action)?;
        let caller = match &e.caller {
            Some(c) => Some((v.add(&c.issuer)?, v.add(&c.sub)?, v.add(&c.email)?)),
            None => None,
        };
        let decision = v.add(e.decision)?;
        let event = v.add(e.event)?;
        let execution_id = v.add(&e.execution_id)?;
        let execution_name = match &e.execution_name {
            Some(n) => Some(v.add(n)?),
            None => None,
        };
        let input_sha256 = v.add(&e.input_sha256)?;
        let reasons = v.add(&e.reasons)?;
        let request_id = v.add(&e.request_id)?;
        let source_ip = v.add(&e.source_ip)?;
        let status = v.add(&e.status)?;
        let step = v.add(&e.step)?;
        let time = v.add(&e.time)?;
        let latency_line = v.add(&e.latency_ms)?;

        // RFC 8785 order of the members: action, caller, decision, event, execution_id,
        // execution_name, input_fields, input_sha256, latency_ms, prev_hash, reasons,
        // request_id, seq, source_ip, status, step, time, v.
        let mut head = Vec::with_capacity(384);
        head.push(b'{');
        v.member(&mut head, "action", &action);
        v.caller(
            &mut head,
            caller
                .as_ref()
                .map(|(i, s, e)| [("email", e), ("issuer", i), ("sub", s)]),
        );
        v.member(&mut head, "decision", &decision);
        v.member(&mut head, "event", &event);
        v.member(&mut head, "execution_id", &execution_id);
        if let Some(n) = &execution_name {
            v.member(&mut head, "execution_name", n);
        }
        if let Some(f) = e.input_fields {
            head.extend_from_slice(b"\"input_fields\":");
            head.extend_from_slice(&serde_json_canonicalizer::to_vec(f)?);
            head.push(b',');
        }
        v.member(&mut head, "input_sha256", &input_sha256);
        head.extend_from_slice(b"\"latency_ms\":");
        canonical_u64(e.latency_ms, |b| head.extend_from_slice(b));
        head.push(b',');
        head.extend_from_slice(b"\"prev_hash\":\"");
        let mut mid = Vec::with_capacity(128);
        mid.extend_from_slice(b"\",");
        v.member(&mut mid, "reasons", &reasons);
        v.member(&mut mid, "request_id", &request_id);
        mid.extend_from_slice(b"\"seq\":");
        let mut tail = Vec::with_capacity(128);
        tail.push(b',');
        v.member(&mut tail, "source_ip", &source_ip);
        v.member(&mut tail, "status", &status);
        v.member(&mut tail, "step", &step);
        v.member(&mut tail, "time", &time);
        tail.extend_from_slice(b"\"v\":1}");

        // The line's members from `time` to `input_fields`, in [`Record`]'s order.
        let mut line_mid = Vec::with_capacity(v.buf.len() + 256);
        v.member(&mut line_mid, "time", &time);
        v.member(&mut line_mid, "request_id", &request_id);
        v.member(&mut line_mid, "event", &event);
        v.caller(
            &mut line_mid,
            caller
                .as_ref()
                .map(|(i, s, e)| [("issuer", i), ("sub", s), ("email", e)]),
        );
        v.member(&mut line_mid, "action", &action);
        v.member(&mut line_mid, "step", &step);
        v.member(&mut line_mid, "decision", &decision);
        v.member(&mut line_mid, "reasons", &reasons);
        v.member(&mut line_mid, "input_sha256", &input_sha256);
        v.member(&mut line_mid, "status", &status);
        v.member(&mut line_mid, "execution_id", &execution_id);
        if let Some(n) = &execution_name {
            v.member(&mut line_mid, "execution_name", n);
        }
        v.member(&mut line_mid, "latency_ms", &latency_line);
        v.member(&mut line_mid, "source_ip", &source_ip);
        if let Some(f) = e.input_fields {
            line_mid.extend_from_slice(b"\"input_fields\":");
            serde_json::to_writer(&mut line_mid, f)?;
            line_mid.push(b',');
        }
        // The writer adds the chain members after these.
        line_mid.pop();
        Ok(Self {
            canon_head: head,
            canon_mid: mid,
            canon_tail: tail,
            line_mid,
        })
    }

    /// Appends the record's line (with its newline) to `out` at `seq` after `prev_hash`;
    /// returns the record's hash.
    pub fn seal(&self, seq: u64, prev_hash: &str, out: &mut Vec<u8>) -> String {
        let mut h = Sha256::new();
        h.update(&self.canon_head);
        h.update(prev_hash.as_bytes());
        h.update(&self.canon_mid);
        canonical_u64(Some(seq), |b| h.update(b));
        h.update(&self.canon_tail);
        let hash = digest_hex(h.finalize().into());
        out.extend_from_slice(b"{\"v\":1,\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        out.push(b',');
        out.extend_from_slice(&self.line_mid);
        out.extend_from_slice(b",\"prev_hash\":\"");
        out.extend_from_slice(prev_hash.as_bytes());
        out.extend_from_slice(b"\",\"hash\":\"");
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(b"\"}\n");
        hash
    }
}

/// The hash of a record given as JSON: SHA-256 of its canonical form without `hash`.
pub fn hash_of(record: &mut serde_json::Value) -> Result<String, serde_json::Error> {
    if let Some(o) = record.as_object_mut() {
        o.remove("hash");
    }
    let canonical = serde_json_canonicalizer::to_string(record)?;
    Ok(digest_hex(Sha256::digest(canonical.as_bytes()).into()))
}

/// SHA-256 hex of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    digest_hex(Sha256::digest(bytes).into())
}

/// A SHA-256 digest as lowercase hex, written into a buffer at once (`hex::encode` builds its
/// string a character at a time; the request path hexes several digests).
fn digest_hex(digest: [u8; 32]) -> String {
    let mut out = vec![0u8; 64];
    // 64 bytes always hold 32 bytes' hex, and hex digits are UTF-8: the fallback never runs.
    match hex::encode_to_slice(digest, &mut out).map(|()| String::from_utf8(out)) {
        Ok(Ok(s)) => s,
        _ => hex::encode(digest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_over_canonical_json_without_hash() {
        let r = Record::seal(
            &Entry {
                time: "2026-11-24T00:00:00Z",
                request_id: "r1",
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

    #[test]
    fn prepared_lines_equal_sealed_records() {
        let mut fields = serde_json::Map::new();
        fields.insert(
            "zeta".into(),
            serde_json::json!({"b": 1.5, "a": [true, null, "x\u{1}y"]}),
        );
        fields.insert(
            "date".into(),
            serde_json::json!("2026-11-24 \u{e9}\u{1f600}\"\\/\u{7f}"),
        );
        let alice = CallerRef {
            issuer: "corp".into(),
            sub: "al\"ice".into(),
            email: Some("alice@example.com".into()),
        };
        let runner = CallerRef {
            issuer: "k8s".into(),
            sub: "system:serviceaccount:etl:runner".into(),
            email: None,
        };
        let reasons = ["p1".to_string(), "p\u{2028}2".to_string()];
        let digest = "ab".repeat(32);
        let no_fields = serde_json::Map::new();
        let entries = [
            Entry {
                time: "2026-11-24T00:00:00Z",
                request_id: "r1",
                event: "decision",
                decision: "deny",
                ..Entry::default()
            },
            Entry {
                time: "2026-11-24T00:00:00.123Z",
                request_id: "r\n2\t\u{0}",
                event: "outcome",
                caller: Some(&alice),
                action: Some("start"),
                step: Some("nightly-load"),
                decision: "allow",
                reasons: &reasons,
                input_sha256: Some(&digest),
                status: Some(201),
                execution_id: Some("arn:aws:states:x"),
                execution_name: Some("sg-0123abc"),
                latency_ms: Some(u64::MAX),
                source_ip: Some("10.0.0.1"),
                input_fields: Some(&fields),
            },
            Entry {
                caller: Some(&runner),
                input_fields: Some(&no_fields),
                ..Entry::default()
            },
        ];
        let mut prev = GENESIS.to_string();
        // The last two seqs are past 2^53: RFC 8785 writes them rounded, the line exactly.
        let seqs = [1000, (1 << 53) + 1, u64::MAX];
        for (e, seq) in entries.into_iter().zip(seqs) {
            let mut line = Vec::new();
            let hash = Prepared::new(&e).unwrap().seal(seq, &prev, &mut line);
            let r = Record::seal(&e, seq, &prev).unwrap();
            let mut want = serde_json::to_vec(&r).unwrap();
            want.push(b'\n');
            assert_eq!(
                String::from_utf8(line).unwrap(),
                String::from_utf8(want).unwrap()
            );
            assert_eq!(hash, r.hash);
            prev = hash;
        }
    }
}
