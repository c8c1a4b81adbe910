//! Walk a log's hash chain: the first broken record, or `ok N records`.

use std::io::BufRead;
use std::path::Path;

use super::record::{GENESIS, hash_of};

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record verifies.
    Ok {
        /// Records checked.
        records: u64,
    },
    /// The first record that does not.
    Broken {
        /// 1-based line.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Ok { records } => write!(f, "ok {records} records"),
            Verdict::Broken { line, reason } => write!(f, "broken at line {line}: {reason}"),
        }
    }
}

/// Verifies a log file.
pub fn verify_file(path: &Path) -> std::io::Result<Verdict> {
    let f = std::fs::File::open(path)?;
    verify_lines(std::io::BufReader::new(f))
}

/// Verifies lines of a log.
pub fn verify_lines(r: impl BufRead) -> std::io::Result<Verdict> {
    let mut prev = GENESIS.to_string();
    let mut prev_seq = 0u64;
    let mut n = 0u64;
    for (i, line) in r.lines().enumerate() {
        let line = line?;
        let lineno = i as u64 + 1;
        let broken = |reason: String| {
            Ok(Verdict::Broken {
                line: lineno,
                reason,
            })
        };
        let mut v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => return broken(format!("not JSON: {e}")),
        };
        let claimed = v
            .get("hash")
            .and_then(|h| h.as_str())
            .unwrap_or_default()
            .to_string();
        let prev_hash = v
            .get("prev_hash")
            .and_then(|h| h.as_str())
            .unwrap_or_default()
            .to_string();
        let seq = v.get("seq").and_then(|s| s.as_u64()).unwrap_or(0);
        let actual = match hash_of(&mut v) {
            Ok(h) => h,
            Err(e) => return broken(format!("cannot canonicalize: {e}")),
        };
        if actual != claimed {
            return broken(format!(
                "seq {seq}: hash does not match the record's contents"
            ));
        }
        if prev_hash != prev {
            return broken(format!(
                "seq {seq}: prev_hash does not match the previous record"
            ));
        }
        if seq != prev_seq + 1 {
            return broken(format!("seq {seq}: expected seq {}", prev_seq + 1));
        }
        prev = claimed;
        prev_seq = seq;
        n += 1;
    }
    Ok(Verdict::Ok { records: n })
}
