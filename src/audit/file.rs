//! The audit file: one writer thread owns it; handlers submit entries and wait until they are
//! durable. Whatever is pending is written and made durable with one `fdatasync` (group commit).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::AuditError;
use super::record::{Entry, GENESIS, Record};

/// Most entries written per flush.
const MAX_BATCH: usize = 1024;
/// How far from the end the tail is read to find the last record.
const TAIL_BYTES: u64 = 1 << 20;

struct Job {
    entry: Entry,
    reply: oneshot::Sender<Result<u64, AuditError>>,
}

/// Handle to the writer; cheap to clone.
#[derive(Clone)]
pub struct FileLog {
    tx: mpsc::Sender<Job>,
    healthy: Arc<AtomicBool>,
    path: PathBuf,
}

/// The chain position recovered at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Last sequence number written (0 for a new log).
    pub seq: u64,
    /// Last hash written ([`GENESIS`] for a new log).
    pub hash: String,
    /// Bytes of a torn last line that were cut off.
    pub truncated: u64,
}

impl FileLog {
    /// Opens (creating) the log, recovers the chain head, and starts the writer thread.
    pub fn open(
        path: &Path,
        now_rfc3339: impl Fn() -> String + Send + 'static,
    ) -> Result<(Self, ChainHead), AuditError> {
        let io = |what: &str, e: std::io::Error| {
            AuditError::Io(format!("{what} `{}`: {e}", path.display()))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create folder for", e))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| io("cannot open", e))?;
        let head = recover(&mut file, path)?;
        let healthy = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel::<Job>(8192);
        let mut writer = Writer {
            file,
            seq: head.seq,
            hash: head.hash.clone(),
            healthy: healthy.clone(),
        };
        if head.truncated > 0 {
            // Record the repair in the chain itself, so `verify` and readers see it.
            let entry = Entry {
                time: now_rfc3339(),
                request_id: String::new(),
                event: "recovered",
                decision: "deny",
                reasons: vec![format!(
                    "torn last line of {} bytes removed at start-up",
                    head.truncated
                )],
                ..Entry::default()
            };
            writer.write_batch(vec![entry]).map_err(AuditError::Io)?;
        }
        std::thread::Builder::new()
            .name("stepgate-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| io("cannot start the writer for", e))?;
        Ok((
            Self {
                tx,
                healthy,
                path: path.to_path_buf(),
            },
            head,
        ))
    }

    /// Whether the last write succeeded.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry and waits until it is durable; returns its `seq`.
    pub async fn append(&self, entry: Entry) -> Result<u64, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { entry, reply })
            .await
            .map_err(|_| AuditError::Io("audit writer has stopped".into()))?;
        rx.await
            .map_err(|_| AuditError::Io("audit writer has stopped".into()))?
    }
}

struct Writer {
    file: File,
    seq: u64,
    hash: String,
    healthy: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let (entries, replies): (Vec<_>, Vec<_>) =
                jobs.into_iter().map(|j| (j.entry, j.reply)).unzip();
            let first_seq = self.seq + 1;
            match self.write_batch(entries) {
                Ok(()) => {
                    for (i, r) in replies.into_iter().enumerate() {
                        let _ = r.send(Ok(first_seq + i as u64));
                    }
                }
                Err(e) => {
                    for r in replies {
                        let _ = r.send(Err(AuditError::Io(e.clone())));
                    }
                }
            }
        }
    }

    /// Writes and syncs a batch; on failure rolls the file and the chain back to before it.
    fn write_batch(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        let mut buf = Vec::with_capacity(entries.len() * 512);
        let (mut seq, mut hash) = (self.seq, self.hash.clone());
        for e in entries {
            seq += 1;
            let r = Record::seal(e, seq, &hash).map_err(|e| e.to_string())?;
            serde_json::to_writer(&mut buf, &r).map_err(|e| e.to_string())?;
            buf.push(b'\n');
            hash = r.hash;
        }
        let before = self
            .file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| e.to_string())?;
        let result = self
            .file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data());
        match result {
            Ok(()) => {
                self.seq = seq;
                self.hash = hash;
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(message = "Audit log writable again.");
                }
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(before);
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(message = "Audit log write failed; triggers are refused until it recovers.", error = %e);
                }
                Err(format!("audit write failed: {e}"))
            }
        }
    }
}

/// Finds the last complete record; cuts a torn (newline-less) tail.
fn recover(file: &mut File, path: &Path) -> Result<ChainHead, AuditError> {
    let io = |e: std::io::Error| AuditError::Io(format!("cannot read `{}`: {e}", path.display()));
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok(ChainHead {
            seq: 0,
            hash: GENESIS.into(),
            truncated: 0,
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
    let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
    let last = body.rsplit(|b| *b == b'\n').next().unwrap_or_default();
    if last.is_empty() {
        if start == 0 {
            return Ok(ChainHead {
                seq: 0,
                hash: GENESIS.into(),
                truncated,
            });
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
    })
}
