//! Where a log left off: the last complete record of the live file (a torn tail cut off), or
//! of the last rotated file when the live one is empty.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::ChainHead;
use crate::audit::record::{GENESIS, Record};
use crate::audit::{AuditError, files};

/// How far from the end the tail is read to find the last record.
const TAIL_BYTES: u64 = 1 << 20;

/// Finds the last complete record; cuts a torn (newline-less) tail. A live file that is empty
/// continues from the last rotated file.
pub(super) fn recover(file: &mut File, path: &Path) -> Result<ChainHead, AuditError> {
    let io = |e: std::io::Error| AuditError::Io(format!("cannot read `{}`: {e}", path.display()));
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        if let Some((_, prev)) = files::rotated(path).map_err(io)?.last() {
            let mut f = File::open(prev).map_err(io)?;
            let mut h = recover(&mut f, prev)?;
            h.truncated = 0;
            return Ok(h);
        }
        return Ok(ChainHead {
            seq: 0,
            hash: GENESIS.into(),
            truncated: 0,
            accepted_break: None,
        });
    }
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).map_err(io)?;
    let mut truncated = 0;
    if tail.last() != Some(&b'\n') {
        let keep = tail
            .iter()
            .rposition(|b| *b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(0);
        truncated = (tail.len() - keep) as u64;
        tail.truncate(keep);
        file.set_len(start + keep as u64).map_err(io)?;
        file.sync_data().map_err(io)?;
        tracing::warn!(
            message = "Audit log ended in a torn line; it was cut off.",
            bytes = truncated
        );
    }
    let last = last_line(&tail);
    if last.is_empty() {
        if start == 0 {
            let mut h = recover(file, path)?;
            h.truncated = truncated;
            return Ok(h);
        }
        return Err(AuditError::Corrupt(format!(
            "`{}`: last record not found",
            path.display()
        )));
    }
    let r: Record = serde_json::from_slice(last).map_err(|e| {
        AuditError::Corrupt(format!(
            "`{}`: last record does not parse: {e}",
            path.display()
        ))
    })?;
    Ok(ChainHead {
        seq: r.seq,
        hash: r.hash,
        truncated,
        accepted_break: None,
    })
}

/// The last line of `buf`, without its newline (empty if there is none).
fn last_line(buf: &[u8]) -> &[u8] {
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    body.rsplit(|b| *b == b'\n').next().unwrap_or_default()
}

/// The record on the line that ends at byte `end` of `file` (its newline the byte before
/// `end`), if that whole line parses as one.
pub(crate) fn record_ending_at(file: &File, end: u64) -> std::io::Result<Option<Record>> {
    use std::os::unix::fs::FileExt;
    if end == 0 || file.metadata()?.len() < end {
        return Ok(None);
    }
    let start = end.saturating_sub(TAIL_BYTES);
    let mut tail = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut tail, start)?;
    if tail.last() != Some(&b'\n') {
        return Ok(None);
    }
    Ok(serde_json::from_slice(last_line(&tail)).ok())
}
