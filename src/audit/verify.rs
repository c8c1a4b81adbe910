//! Walk a log's hash chain, across rotated files: the first broken record, or `ok N records`.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::files;
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
        /// The file it is in.
        file: PathBuf,
        /// 1-based line in that file.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Ok { records } => write!(f, "ok {records} records"),
            Verdict::Broken { file, line, reason } => {
                write!(f, "broken at {}:{line}: {reason}", file.display())
            }
        }
    }
}

/// Where the walk is.
struct Walk {
    prev: String,
    prev_seq: u64,
    records: u64,
}

/// Verifies a log file (with the rotated files before it) or a folder of logs.
pub fn verify_path(path: &Path) -> std::io::Result<Verdict> {
    if !path.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file or folder",
        ));
    }
    verify_chain(&files::chain(path)?)
}

/// Verifies one file alone (the chain must start in it).
pub fn verify_file(path: &Path) -> std::io::Result<Verdict> {
    verify_chain(&[path.to_path_buf()])
}

/// Verifies files that form one chain, in order.
pub fn verify_chain(paths: &[PathBuf]) -> std::io::Result<Verdict> {
    let mut w = Walk {
        prev: GENESIS.to_string(),
        prev_seq: 0,
        records: 0,
    };
    for p in paths {
        let f = match std::fs::File::open(p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // Only regular files hold records (a device such as /dev/full would read forever).
        if !f.metadata()?.is_file() {
            continue;
        }
        if let Some(v) = walk(&mut w, p, std::io::BufReader::new(f))? {
            return Ok(v);
        }
    }
    Ok(Verdict::Ok { records: w.records })
}

fn walk(w: &mut Walk, file: &Path, r: impl BufRead) -> std::io::Result<Option<Verdict>> {
    for (i, line) in r.split(b'\n').enumerate() {
        match link(&line?, w.prev_seq, &w.prev) {
            Ok(hash) => {
                w.prev = hash;
                w.prev_seq += 1;
                w.records += 1;
            }
            Err(reason) => {
                return Ok(Some(Verdict::Broken {
                    file: file.to_path_buf(),
                    line: i as u64 + 1,
                    reason,
                }));
            }
        }
    }
    Ok(None)
}

/// Checks that `line` (without its newline) is the record that follows `prev_seq` / `prev_hash`
/// in a chain: its own hash matches its contents, it links to the previous hash, its seq is the
/// next. Returns its hash.
pub fn link(line: &[u8], prev_seq: u64, prev_hash: &str) -> Result<String, String> {
    let mut v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|h| h.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (claimed, linked) = (field("hash"), field("prev_hash"));
    let seq = v.get("seq").and_then(|s| s.as_u64()).unwrap_or(0);
    let actual = hash_of(&mut v).map_err(|e| format!("cannot canonicalize: {e}"))?;
    if actual != claimed {
        return Err(format!(
            "seq {seq}: hash does not match the record's contents"
        ));
    }
    if linked != prev_hash {
        return Err(format!(
            "seq {seq}: prev_hash does not match the previous record"
        ));
    }
    if seq != prev_seq + 1 {
        return Err(format!("seq {seq}: expected seq {}", prev_seq + 1));
    }
    Ok(claimed)
}
