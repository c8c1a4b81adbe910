//! The audit file: handlers seal their records into the chain themselves and wait until they
//! are durable; one writer thread appends whatever accumulated and makes it durable with one
//! `fdatasync` (group commit). A failed write is rolled back (file and chain) and fails every
//! waiter: fail closed, and the next batch tries again, so recovery is automatic once the disk
//! accepts writes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::record::{Entry, Prepared};
use super::{AuditError, files};
use crate::observe::AuditMetrics;
use journal::Checkpoint;
use writer::{Behind, Ring, Writer, batch_scheduling};

pub mod journal;
mod recover;
mod writer;

pub(crate) use recover::record_ending_at;
use recover::recover;

/// How the log is kept.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Rotate once the live file reaches this size.
    pub rotate_bytes: Option<u64>,
    /// Rotate once the live file is this old.
    pub rotate_age: Option<Duration>,
    /// Start even if the live file's chain does not verify (the acceptance is recorded).
    pub accept_broken_chain: bool,
    /// Ring size of the journal where batches become durable ([`journal`]); 0: none, each
    /// batch is synced in the live log.
    pub journal_bytes: u64,
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

/// How long a submitter waits for its record to become durable before it gives up (503). The
/// writer keeps going; a record that lands later is still in the chain.
const DURABLE_WAIT: Duration = Duration::from_secs(10);
/// Records waiting for the writer beyond which new submissions are refused (a stalled disk).
const MAX_PENDING: usize = 65_536;
/// The result of one group commit, shared by every record in it.
///
/// The writer thread wakes one waiter (`notify_one`); that waiter, on the runtime, wakes the
/// rest. A wake from outside the runtime costs a syscall (the runtime's eventfd) each; from
/// inside it is a queue push. So a batch costs the writer one wake-up, not one per request.
struct Commit {
    result: std::sync::OnceLock<Result<(), String>>,
    notify: tokio::sync::Notify,
    /// A waiter has already woken the others.
    relayed: AtomicBool,
}

impl Commit {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            result: std::sync::OnceLock::new(),
            notify: tokio::sync::Notify::new(),
            relayed: AtomicBool::new(false),
        })
    }

    /// Called by the writer thread. If the woken waiter is gone before it runs, tokio hands the
    /// `notify_one` on to another waiter; with no waiter at all it is kept for the next one,
    /// and a waiter that comes later finds the result before it sleeps.
    fn finish(&self, result: Result<(), String>) {
        let _ = self.result.set(result);
        self.notify.notify_one();
    }

    /// Waits for the commit, at most [`DURABLE_WAIT`].
    async fn wait(&self) -> Result<(), AuditError> {
        let done = wait_until(&self.notify, || {
            let r = self.result.get()?;
            if !self.relayed.swap(true, Ordering::AcqRel) {
                // The first to see the result wakes every other waiter (registered before
                // this call; later ones see the result themselves).
                self.notify.notify_waiters();
            }
            Some(r.clone())
        });
        match done.await {
            Some(r) => r.map_err(AuditError::Io),
            None => Err(AuditError::Io(format!(
                "audit records not durable within {DURABLE_WAIT:?}"
            ))),
        }
    }
}

/// Checks `ready` each time `notify` wakes it (registered before each check, so no wake is
/// missed) until it gives a value; `None` after [`DURABLE_WAIT`].
async fn wait_until<T>(
    notify: &tokio::sync::Notify,
    mut ready: impl FnMut() -> Option<T>,
) -> Option<T> {
    let check = async {
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = ready() {
                return v;
            }
            notified.await;
        }
    };
    tokio::time::timeout(DURABLE_WAIT, check).await.ok()
}

/// Records sealed into the chain but not yet handed to the writer.
struct Open {
    buf: Vec<u8>,
    count: usize,
    /// Records whose submitter waits for them.
    waited: usize,
    commit: Arc<Commit>,
}

impl Open {
    /// An empty batch writing into `buf` (a buffer of an earlier batch, cleared, when there is one).
    fn new(buf: Vec<u8>) -> Self {
        Self {
            buf,
            count: 0,
            waited: 0,
            commit: Commit::new(),
        }
    }
}

/// The chain and the batch being filled. Submitters seal their record under this lock (a
/// splice and one SHA-256); the writer holds it only to take the batch.
struct Chain {
    /// Head including records not yet durable.
    seq: u64,
    hash: String,
    /// Head of what is durable on disk: where a failed batch rolls back to.
    durable_seq: u64,
    durable_hash: String,
    open: Open,
    /// The batch the writer is syncing.
    in_flight: Option<Arc<Commit>>,
    /// The writer is parked, waiting for a record.
    writer_idle: bool,
    /// The last record a reader waits to find in the live log ([`FileLog::flush`]), which
    /// may lag the journal by [`writer::LIVE_MAX_LAG`].
    live_wanted: u64,
    /// The live log's last record.
    live_seq: u64,
    stopped: bool,
}

impl Chain {
    /// Someone waits on the open batch. Returns whether the writer is parked and must be woken:
    /// the caller wakes it after releasing the lock, so the writer does not wake only to block
    /// on the lock the caller still holds.
    #[must_use]
    fn call_writer(&mut self) -> bool {
        self.open.waited += 1;
        std::mem::take(&mut self.writer_idle)
    }

    /// A record nobody waits on was added to the open batch. Returns whether the writer is
    /// parked and must be woken: only for the first record of an empty batch (it then lingers
    /// [`writer::LATER_MAX_DELAY`] for a waited-for record to take the batch along, and else
    /// writes it), so no record stays in memory while the log is quiet. The caller wakes it
    /// after releasing the lock, as for [`Self::call_writer`].
    #[must_use]
    fn call_writer_later(&mut self) -> bool {
        self.open.count == 1 && std::mem::take(&mut self.writer_idle)
    }
}

struct Shared {
    chain: std::sync::Mutex<Chain>,
    wake: std::sync::Condvar,
    /// The live log caught up with what a reader waits for.
    live: tokio::sync::Notify,
    healthy: AtomicBool,
}

/// Handle to the log; cheap to clone. Submitting a record never crosses to another thread:
/// the submitter seals it into the chain and appends it to the open batch; one writer thread
/// takes whatever has accumulated while it was syncing the previous batch (group commit that
/// grows with load) and is woken only when it was idle.
#[derive(Clone)]
pub struct FileLog {
    shared: Arc<Shared>,
    path: PathBuf,
    _stop: Arc<StopOnDrop>,
}

/// Stops the writer when the last handle goes, after it writes what is pending and the
/// journal's last checkpoint records it; waits for that a bounded time (a stalled disk).
struct StopOnDrop {
    shared: Arc<Shared>,
    /// Disconnected when the writer thread ends.
    writer_done: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

/// How long the last handle's drop waits for the writer to finish.
const STOP_WAIT: Duration = Duration::from_secs(5);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Ok(mut c) = self.shared.chain.lock() {
            c.stopped = true;
        }
        self.shared.wake.notify_all();
        if let Ok(done) = self.writer_done.lock() {
            let _ = done.recv_timeout(STOP_WAIT);
        }
    }
}

/// The chain position recovered at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Last sequence number written (0 for a new log).
    pub seq: u64,
    /// Last hash written ([`GENESIS`](super::record::GENESIS) for a new log).
    pub hash: String,
    /// Bytes after the last durable record that were cut off (a torn line, records never
    /// acknowledged).
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
        let mut found = journal::open_beside(path, options.journal_bytes)?;
        let (mut head, pos) = match found.as_mut().and_then(|f| f.restored.take()) {
            Some(r) => (r.head, r.pos),
            None => {
                let mut f = OpenOptions::new()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| io("cannot open", e))?;
                (recover(&mut f, path)?, 0)
            }
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
        let size = file.size().map_err(|e| io("cannot read the size of", e))?;
        let ring = match found {
            Some(f) if options.journal_bytes > 0 => {
                let capacity = options.journal_bytes.max(journal::MIN_BYTES);
                let cp = Checkpoint::at(pos, size, head.seq, &head.hash);
                Some(
                    Ring::start(f.journal, f.last, capacity, cp, path, metrics.clone())
                        .map_err(|e| io("cannot start the journal of", e))?,
                )
            }
            Some(f) => {
                // Journal turned off: what only it held is in the live log now.
                f.remove(path)
                    .map_err(|e| io("cannot remove the journal of", e))?;
                None
            }
            None => None,
        };
        let checkpoints = ring.as_ref().map(|r| r.checkpoints.clone());
        let mut writer = Writer {
            file,
            size,
            path: path.to_path_buf(),
            opened: Instant::now(),
            options,
            opener,
            metrics,
            head: (head.seq, head.hash.clone()),
            ring,
            behind: Behind::default(),
        };
        let (mut seq, mut hash) = (head.seq, head.hash.clone());
        let mut notes = Vec::new();
        if head.truncated > 0 {
            notes.push(format!(
                "{} bytes after the last durable record removed at start-up (a torn line or records never acknowledged)",
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
            let time = now_rfc3339();
            let entry = Entry {
                time: &time,
                event: "recovered",
                decision: "deny",
                reasons: &notes,
                ..Entry::default()
            };
            let entry = Prepared::new(&entry).map_err(|e| AuditError::Io(e.to_string()))?;
            let mut buf = Vec::new();
            let h = entry.seal(seq + 1, &hash, &mut buf);
            writer
                .flush(&buf, 1, (seq + 1, h.clone()), false)
                .map_err(AuditError::Io)?;
            seq += 1;
            hash = h;
        }
        let shared = Arc::new(Shared {
            chain: std::sync::Mutex::new(Chain {
                seq,
                hash: hash.clone(),
                durable_seq: seq,
                durable_hash: hash,
                open: Open::new(Vec::with_capacity(16 * 1024)),
                in_flight: None,
                writer_idle: false,
                live_wanted: 0,
                live_seq: seq,
                stopped: false,
            }),
            wake: std::sync::Condvar::new(),
            live: tokio::sync::Notify::new(),
            healthy: AtomicBool::new(true),
        });
        if let Some(checkpoints) = checkpoints {
            std::thread::Builder::new()
                .name("stepgate-audit-checkpoint".into())
                .spawn(move || checkpoints.run())
                .map_err(|e| io("cannot start the checkpointer for", e))?;
        }
        let for_writer = shared.clone();
        let (done, writer_done) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("stepgate-audit".into())
            .spawn(move || {
                let _done = done;
                batch_scheduling();
                writer.run(&for_writer)
            })
            .map_err(|e| io("cannot start the writer for", e))?;
        Ok((
            Self {
                _stop: Arc::new(StopOnDrop {
                    shared: shared.clone(),
                    writer_done: std::sync::Mutex::new(writer_done),
                }),
                shared,
                path: path.to_path_buf(),
            },
            head,
        ))
    }

    /// Whether the last write succeeded.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// The live file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry and waits until it is durable; returns its `seq`. The record is sealed
    /// into the chain by this call; the future only waits for its commit, so it holds neither
    /// the entry nor the record (it is moved at every level of the request's future).
    pub fn append(
        &self,
        entry: &Entry<'_>,
    ) -> impl Future<Output = Result<u64, AuditError>> + Send + 'static + use<> {
        let submitted = self.submit(entry, true);
        async move {
            let (seq, commit) = submitted?;
            commit.wait().await.map(|()| seq)
        }
    }

    /// Appends an entry to the next group commit without waiting for it; returns its `seq`.
    /// For records whose loss a durable earlier record covers (a start's outcome: its decision
    /// record names the execution).
    pub fn append_later(&self, entry: &Entry<'_>) -> Result<u64, AuditError> {
        self.submit(entry, false).map(|(seq, _)| seq)
    }

    /// Waits until every record submitted so far is durable (or its batch failed) and in the
    /// live log. For shutdown and for readers that must see the outcome records too.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let stopped = || AuditError::Io("audit writer has stopped".into());
        let (pending, wanted) = {
            let mut c = self.shared.chain.lock().map_err(|_| stopped())?;
            let mut pending = Vec::new();
            pending.extend(c.in_flight.clone());
            if c.open.count > 0 {
                // Someone waits on the open batch now: no lingering.
                pending.push(c.open.commit.clone());
                let _ = c.call_writer();
            }
            c.live_wanted = c.seq;
            (pending, c.seq)
        };
        // Wakes a parked writer for the open batch or for the live log's catch-up.
        self.shared.wake.notify_one();
        for commit in pending {
            commit.wait().await?;
        }
        let caught_up = wait_until(&self.shared.live, || match self.shared.chain.lock() {
            Ok(c) => (c.live_seq >= wanted).then_some(Ok(())),
            Err(_) => Some(Err(stopped())),
        });
        caught_up.await.unwrap_or_else(|| {
            Err(AuditError::Io(format!(
                "audit records not in the live log within {DURABLE_WAIT:?}"
            )))
        })
    }

    /// Serializes (outside the lock), then seals the record into the open batch.
    fn submit(&self, entry: &Entry<'_>, wait: bool) -> Result<(u64, Arc<Commit>), AuditError> {
        let prepared = Prepared::new(entry)
            .map_err(|e| AuditError::Io(format!("cannot serialize an audit record: {e}")))?;
        let stopped = || AuditError::Io("audit writer has stopped".into());
        let mut guard = self.shared.chain.lock().map_err(|_| stopped())?;
        let c = &mut *guard;
        if c.stopped {
            return Err(stopped());
        }
        if c.open.count >= MAX_PENDING {
            return Err(AuditError::Io(format!(
                "{MAX_PENDING} audit records are waiting for the disk"
            )));
        }
        let seq = c.seq + 1;
        c.hash = prepared.seal(seq, &c.hash, &mut c.open.buf);
        c.seq = seq;
        c.open.count += 1;
        let commit = c.open.commit.clone();
        let wake = if wait {
            c.call_writer()
        } else {
            c.call_writer_later()
        };
        drop(guard);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok((seq, commit))
    }
}

#[cfg(test)]
mod tests;
