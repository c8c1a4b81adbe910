//! The audit file: one writer thread owns it; handlers submit entries and wait until they are
//! durable. Whatever is pending is written and made durable with one `fdatasync` (group commit).
//! A failed write is rolled back (file and chain) and fails every waiter: fail closed, and the
//! next batch tries again, so recovery is automatic once the disk accepts writes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::record::{Entry, GENESIS, Prepared, Record};
use super::{AuditError, files};
use crate::observe::AuditMetrics;

/// Most entries written per flush.
const MAX_BATCH: usize = 4096;
/// How far from the end the tail is read to find the last record.
const TAIL_BYTES: u64 = 1 << 20;

/// How the log is kept.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Rotate once the live file reaches this size.
    pub rotate_bytes: Option<u64>,
    /// Rotate once the live file is this old.
    pub rotate_age: Option<Duration>,
    /// Start even if the live file's chain does not verify (the acceptance is recorded).
    pub accept_broken_chain: bool,
}

/// The storage the writer appends to. A seam so tests can make the disk fail.
pub trait LogFile: Send {
    /// Appends bytes.
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()>;
    /// Makes appended bytes durable (`fdatasync`).
    fn sync(&mut self) -> std::io::Result<()>;
    /// Current size in bytes.
    fn size(&self) -> std::io::Result<u64>;
    /// Cuts the file back to `len` (roll back a failed batch).
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl LogFile for File {
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.write_all(buf)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
    fn size(&self) -> std::io::Result<u64> {
        self.metadata().map(|m| m.len())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)
    }
}

/// Opens the live file of a log for appending.
pub type Opener = Box<dyn Fn(&Path) -> std::io::Result<Box<dyn LogFile>> + Send>;

/// The real opener: append to a file, creating it.
pub fn open_file(path: &Path) -> std::io::Result<Box<dyn LogFile>> {
    Ok(Box::new(
        OpenOptions::new().create(true).append(true).open(path)?,
    ))
}

struct Job {
    entry: Prepared,
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
    /// Where the live file's chain breaks, when it was accepted anyway.
    pub accepted_break: Option<String>,
}

impl FileLog {
    /// Opens (creating) the log with default options and metrics.
    pub fn open(
        path: &Path,
        now_rfc3339: impl Fn() -> String + Send + 'static,
    ) -> Result<(Self, ChainHead), AuditError> {
        Self::open_with(
            path,
            LogOptions::default(),
            now_rfc3339,
            AuditMetrics::default(),
            Box::new(open_file),
        )
    }

    /// Opens (creating) the log, recovers and verifies the chain head, and starts the writer.
    pub fn open_with(
        path: &Path,
        options: LogOptions,
        now_rfc3339: impl Fn() -> String + Send + 'static,
        metrics: AuditMetrics,
        opener: Opener,
    ) -> Result<(Self, ChainHead), AuditError> {
        let io = |what: &str, e: std::io::Error| {
            AuditError::Io(format!("{what} `{}`: {e}", path.display()))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create folder for", e))?;
        }
        let mut head = {
            let mut f = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(path)
                .map_err(|e| io("cannot open", e))?;
            recover(&mut f, path)?
        };
        match super::verify::verify_chain(&files::chain(path).map_err(|e| io("cannot list", e))?) {
            Ok(super::verify::Verdict::Ok { .. }) => {}
            Ok(broken) if options.accept_broken_chain => {
                tracing::warn!(message = "Audit chain does not verify; continuing as the operator asked.", verdict = %broken);
                head.accepted_break = Some(broken.to_string());
            }
            Ok(broken) => {
                return Err(AuditError::Corrupt(format!(
                    "`{}`: {broken} (start with --accept-broken-audit-chain to continue it anyway)",
                    path.display()
                )));
            }
            Err(e) => return Err(io("cannot verify", e)),
        }
        let file = opener(path).map_err(|e| io("cannot open", e))?;
        let healthy = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel::<Job>(16_384);
        let mut writer = Writer {
            file,
            path: path.to_path_buf(),
            opened: Instant::now(),
            options,
            opener,
            seq: head.seq,
            hash: head.hash.clone(),
            healthy: healthy.clone(),
            metrics,
        };
        let mut notes = Vec::new();
        if head.truncated > 0 {
            notes.push(format!(
                "torn last line of {} bytes removed at start-up",
                head.truncated
            ));
        }
        if let Some(b) = &head.accepted_break {
            notes.push(format!(
                "chain break accepted by the operator at start-up: {b}"
            ));
        }
        if !notes.is_empty() {
            // Record the repair in the chain itself, so `verify` and readers see it.
            let entry = Entry {
                time: now_rfc3339(),
                event: "recovered",
                decision: "deny",
                reasons: notes,
                ..Entry::default()
            };
            let entry = Prepared::new(&entry).map_err(|e| AuditError::Io(e.to_string()))?;
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

    /// The live file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry and waits until it is durable; returns its `seq`.
    pub async fn append(&self, entry: Entry) -> Result<u64, AuditError> {
        // Serialized here, on the submitter's thread: the one writer thread only chains.
        let entry = Prepared::new(&entry)
            .map_err(|e| AuditError::Io(format!("cannot serialize an audit record: {e}")))?;
        let (reply, rx) = oneshot::channel();
        let stopped = || AuditError::Io("audit writer has stopped".into());
        self.tx
            .send(Job { entry, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

struct Writer {
    file: Box<dyn LogFile>,
    path: PathBuf,
    opened: Instant,
    options: LogOptions,
    opener: Opener,
    seq: u64,
    hash: String,
    healthy: Arc<AtomicBool>,
    metrics: AuditMetrics,
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

    fn due_for_rotation(&self) -> bool {
        let size = self
            .options
            .rotate_bytes
            .is_some_and(|max| self.file.size().is_ok_and(|l| l >= max));
        let age = self
            .options
            .rotate_age
            .is_some_and(|max| self.opened.elapsed() >= max);
        (size || age) && self.file.size().is_ok_and(|l| l > 0)
    }

    /// Renames the live file to the next number and starts a new one. The chain continues:
    /// the new file's first record links to the old file's last hash.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync()?;
        let to = files::next_rotated(&self.path)?;
        std::fs::rename(&self.path, &to)?;
        self.file = (self.opener)(&self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        self.opened = Instant::now();
        tracing::info!(message = "Audit log rotated.", to = %to.display());
        Ok(())
    }

    /// Writes and syncs a batch; on failure rolls the file and the chain back to before it.
    fn write_batch(&mut self, entries: Vec<Prepared>) -> Result<(), String> {
        if self.due_for_rotation()
            && let Err(e) = self.rotate()
        {
            tracing::error!(message = "Audit log rotation failed; writing on.", error = %e);
        }
        let n = entries.len();
        let mut buf = Vec::with_capacity(n * 512);
        let (mut seq, mut hash) = (self.seq, self.hash.clone());
        for e in &entries {
            seq += 1;
            hash = e.seal(seq, &hash, &mut buf);
        }
        let started = Instant::now();
        let before = self.file.size().map_err(|e| e.to_string());
        let result = before.clone().and_then(|_| {
            self.file
                .append(&buf)
                .and_then(|_| self.file.sync())
                .map_err(|e| e.to_string())
        });
        match result {
            Ok(()) => {
                self.metrics.observe_batch(n, started.elapsed());
                self.seq = seq;
                self.hash = hash;
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(message = "Audit log writable again.");
                }
                Ok(())
            }
            Err(e) => {
                self.metrics.failures.inc();
                if let Ok(len) = before {
                    let _ = self.file.truncate(len);
                }
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(message = "Audit log write failed; triggers are refused until it recovers.", error = %e);
                }
                Err(format!("audit write failed: {e}"))
            }
        }
    }
}

/// Finds the last complete record; cuts a torn (newline-less) tail. A live file that is empty
/// continues from the last rotated file.
fn recover(file: &mut File, path: &Path) -> Result<ChainHead, AuditError> {
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
    let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
    let last = body.rsplit(|b| *b == b'\n').next().unwrap_or_default();
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

#[cfg(test)]
mod tests;
