//! The writer thread of [`super::FileLog`]: group commit (take what accumulated, append, one
//! `fdatasync`, release the waiters), lingering under sustained load, and rotation.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::journal::{Checkpoint, Checkpoints, Journal};
use super::{LogFile, LogOptions, Open, Opener, Shared};
use crate::audit::files;
use crate::observe::AuditMetrics;

/// Longest a record nobody waits for stays in memory when no waited-for record comes to take
/// it along (at low load). Only the first such record of an empty batch wakes a parked writer,
/// which then waits this long before it writes: a request that comes meanwhile takes the
/// record along in its own commit, so the writer is not woken between a handler and its answer.
pub(super) const LATER_MAX_DELAY: Duration = Duration::from_millis(5);
/// Batches taken back to back (each found waiting submitters the moment the previous sync
/// ended, the writer never idle in between) that mean sustained load: from then on a batch is
/// given [`BUSY_LINGER`] to grow before it is synced.
const BUSY_STREAK: u32 = 3;
/// How long a batch is left to grow under sustained load. One `fdatasync` costs tens of µs of
/// CPU; at saturation the CPU is the limit and a sync per few requests is a large share of it,
/// while the added wait is small beside the queueing such load brings. As soon as the writer
/// finds nothing to do it is idle again, and a request that comes to an idle writer is synced
/// at once.
const BUSY_LINGER: Duration = Duration::from_micros(250);

/// Under load the live log is appended once this many bytes of committed records wait for it
/// (or [`LIVE_MAX_LAG`] passed, or a reader waits for them), not once per commit: each append
/// costs a system call and the file system's per-call work whatever its size, and the records
/// are durable in the journal meanwhile (a restart replays them). Measured on the shared
/// harness's 2-vCPU VM (ext4): the per-commit append was a third of the writer thread's CPU.
const LIVE_CHUNK: usize = 128 * 1024;
/// Fewest records in a batch that may be committed ahead of the live log: a batch that big
/// means load (at saturation on the harness 84% of the commits hold more, 34 on average);
/// smaller ones, as every batch at low load, are appended at once, so the live log a reader
/// tails holds a decision as soon as its answer is out.
const AHEAD_MIN_RECORDS: usize = 16;
/// Longest the live log lags the journal.
const LIVE_MAX_LAG: Duration = Duration::from_millis(10);

/// Puts the calling (writer) thread under `SCHED_BATCH`: when its `fdatasync` returns it does
/// not preempt a request handler on the same CPU; it runs when the handler yields, and takes a
/// bigger batch. On a busy single CPU every wake-up preemption was a switch away from serving.
/// (Measured against the normal policy, niced or not, and against switching policy with load:
/// each lost 13-26% of throughput at saturation for at most 50-80 µs at low load; switched by
/// the rate records come in, it gained nothing outside noise either way.)
pub(super) fn batch_scheduling() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityOsValue, ThreadSchedulePolicy,
    };
    if let Err(e) = thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        ThreadPriority::Os(ThreadPriorityOsValue::default()),
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
    ) {
        tracing::debug!(message = "Audit writer keeps the default scheduling.", error = ?e);
    }
}

/// The one thread that appends and syncs: takes whatever accumulated, writes it, makes it
/// durable, releases its waiters; rotates the live file when due.
pub(super) struct Writer {
    pub(super) file: Box<dyn LogFile>,
    /// The live file's length (kept here: no `stat` per batch).
    pub(super) size: u64,
    pub(super) path: PathBuf,
    pub(super) opened: Instant,
    pub(super) options: LogOptions,
    pub(super) opener: Opener,
    pub(super) metrics: AuditMetrics,
    /// The durable chain head: the live log's last record.
    pub(super) head: (u64, String),
    /// Where batches become durable, when the log has a journal.
    pub(super) ring: Option<Ring>,
    /// Committed records the live log does not hold yet.
    pub(super) behind: Behind,
}

/// Records durable in the journal, not yet appended to the live log (see [`LIVE_CHUNK`]).
#[derive(Default)]
pub(super) struct Behind {
    buf: Vec<u8>,
    /// Set exactly while `buf` holds records.
    first: Option<Waiting>,
    /// The last append to the live log failed: commit nothing ahead of it until one succeeds.
    failing: bool,
}

/// What the writer keeps of records behind, beside their bytes.
struct Waiting {
    /// The chain head after the last of them.
    head: (u64, String),
    /// When the first of them was committed.
    since: Instant,
}

impl Behind {
    /// Records wait for an append that may succeed.
    fn waiting(&self) -> bool {
        self.first.is_some() && !self.failing
    }

    /// The first of them has waited [`LIVE_MAX_LAG`].
    fn overdue(&self) -> bool {
        self.first
            .as_ref()
            .is_some_and(|w| w.since.elapsed() >= LIVE_MAX_LAG)
    }

    /// Whether a batch of `len` more bytes may wait here.
    fn may_take(&self, len: usize) -> bool {
        !self.failing && self.buf.len() + len <= LIVE_CHUNK && !self.overdue()
    }

    /// Keeps a batch committed to the journal, the chain's head after it `head`.
    fn take(&mut self, buf: &[u8], head: (u64, String)) {
        self.buf.extend_from_slice(buf);
        match &mut self.first {
            Some(w) => w.head = head,
            None => {
                self.first = Some(Waiting {
                    head,
                    since: Instant::now(),
                });
            }
        }
    }

    /// How long until they are overdue, when they wait.
    fn left(&self) -> Option<std::time::Duration> {
        let w = self.first.as_ref().filter(|_| self.waiting())?;
        Some(LIVE_MAX_LAG.saturating_sub(w.since.elapsed()))
    }
}

/// The journal as the writer uses it.
pub(super) struct Ring {
    pub(super) journal: Journal,
    pub(super) checkpoints: std::sync::Arc<Checkpoints>,
    /// The journal stream position of the next batch.
    pub(super) pos: u64,
}

impl Ring {
    /// Whether `len` bytes fit the ring without overwriting what is not checkpointed.
    fn fits(&self, len: u64) -> bool {
        self.journal.span(self.pos, len) <= self.checkpoints.room(self.pos)
    }

    /// Takes the journal `j` (last checkpoint `last`) into use at `cp`, a ring of `capacity`
    /// bytes: resized (and started over) if it had another size; the live log at `live` synced,
    /// so that what it holds is the checkpoint.
    pub(super) fn start(
        mut j: Journal,
        last: Option<Checkpoint>,
        capacity: u64,
        mut cp: Checkpoint,
        live: &std::path::Path,
        metrics: AuditMetrics,
    ) -> std::io::Result<Self> {
        if j.capacity() != capacity {
            j.resize(capacity)?;
            cp.pos = 0;
        }
        j.write_direct();
        File::open(live)?.sync_data()?;
        cp.n = last.map_or(1, |l| l.n + 1);
        j.write_checkpoint(&cp)?;
        Ok(Self {
            pos: cp.pos,
            checkpoints: Checkpoints::new(j.try_clone()?, cp, live, metrics)?,
            journal: j,
        })
    }
}

impl Writer {
    /// Serves until the log is dropped, then has the checkpointer record the end.
    pub(super) fn run(mut self, shared: &Shared) {
        self.serve(shared);
        self.catch_up_or_log();
        if let Some(ring) = &self.ring {
            ring.checkpoints.stop(std::time::Duration::from_secs(4));
        }
    }

    fn serve(&mut self, shared: &Shared) {
        let mut spare = Vec::with_capacity(16 * 1024);
        // Batches taken back to back, without the writer idling.
        let mut streak = 0;
        loop {
            // Take what accumulated; park only when there is nothing.
            let (batch, head) = {
                let Ok(mut c) = shared.chain.lock() else {
                    return;
                };
                let mut lingered = false;
                loop {
                    if self.behind.waiting()
                        && (self.behind.overdue() || c.live_wanted > self.head.0)
                    {
                        // The live log catches up: its lag is up, or a reader waits for it.
                        drop(c);
                        self.catch_up_or_log();
                        c = match shared.chain.lock() {
                            Ok(c) => c,
                            Err(_) => return,
                        };
                        self.publish_live(&mut c, shared);
                        continue;
                    }
                    if c.open.count > 0 && (c.open.waited > 0 || lingered || c.stopped) {
                        break;
                    }
                    if c.stopped {
                        return;
                    }
                    streak = 0;
                    c.writer_idle = true;
                    // Only records nobody waits for: give a waited-for one a moment to come
                    // and take them along.
                    let later = c.open.count > 0;
                    let timeout = [later.then_some(LATER_MAX_DELAY), self.behind.left()]
                        .into_iter()
                        .flatten()
                        .min();
                    c = match timeout {
                        None => match shared.wake.wait(c) {
                            Ok(c) => c,
                            Err(_) => return,
                        },
                        Some(t) => match shared.wake.wait_timeout(c, t) {
                            Ok((c, _)) => c,
                            Err(_) => return,
                        },
                    };
                    lingered |= later;
                }
                c.writer_idle = false;
                streak += 1;
                if streak > BUSY_STREAK && !c.stopped {
                    // Not idle: submitters do not wake it while the batch grows.
                    c = match shared.wake.wait_timeout(c, BUSY_LINGER) {
                        Ok((c, _)) => c,
                        Err(_) => return,
                    };
                }
                let next = Open::new(std::mem::take(&mut spare));
                let batch = std::mem::replace(&mut c.open, next);
                c.in_flight = Some(batch.commit.clone());
                (batch, (c.seq, c.hash.clone()))
            };
            let result = self.flush(&batch.buf, batch.count, head.clone(), true);
            let mut failed_next = None;
            if let Ok(mut c) = shared.chain.lock() {
                c.in_flight = None;
                match &result {
                    Ok(()) => {
                        (c.durable_seq, c.durable_hash) = head;
                    }
                    Err(_) => {
                        // Records sealed after this batch chain onto it: fail them too and
                        // continue the chain from what is on disk.
                        c.seq = c.durable_seq;
                        c.hash = c.durable_hash.clone();
                        c.live_wanted = c.live_wanted.min(c.seq);
                        if c.open.count > 0 {
                            failed_next =
                                Some(std::mem::replace(&mut c.open, Open::new(Vec::new())));
                        }
                    }
                }
                // A reader waiting for records still behind is served by the catch-up at the
                // top of the next turn, before the writer takes or waits for anything.
                self.publish_live(&mut c, shared);
            }
            match &result {
                Ok(()) => {
                    if !shared.healthy.swap(true, Ordering::Relaxed) {
                        tracing::info!(message = "Audit log writable again.");
                    }
                }
                Err(e) => {
                    if shared.healthy.swap(false, Ordering::Relaxed) {
                        tracing::error!(message = "Audit log write failed; triggers are refused until it recovers.", error = %e);
                    }
                }
            }
            batch.commit.finish(result.clone());
            if let Some(next) = failed_next {
                next.commit.finish(result.clone());
            }
            spare = batch.buf;
            spare.clear();
        }
    }

    /// Tells readers waiting for records in the live log ([`super::FileLog::flush`]) how far
    /// it goes.
    fn publish_live(&self, c: &mut super::Chain, shared: &Shared) {
        let before = std::mem::replace(&mut c.live_seq, self.head.0);
        if c.live_wanted > before && c.live_wanted <= c.live_seq {
            shared.live.notify_waiters();
        }
    }

    /// Counting what is behind: the live log's length once it catches up.
    fn due_for_rotation(&self) -> bool {
        let len = self.size + self.behind.buf.len() as u64;
        let size = self.options.rotate_bytes.is_some_and(|max| len >= max);
        let age = self
            .options
            .rotate_age
            .is_some_and(|max| self.opened.elapsed() >= max);
        (size || age) && len > 0
    }

    /// Renames the live file to the next number and starts a new one. The chain continues:
    /// the new file's first record links to the old file's last hash.
    /// With a journal, a checkpoint at the old file's end comes before the rename and one at
    /// the new file's start after it, so a restart finds the checkpointed file either way.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.catch_up()?;
        self.file.sync()?;
        let (seq, hash) = &self.head;
        if let Some(ring) = &self.ring {
            let cp = Checkpoint::at(ring.pos, self.size, *seq, hash);
            ring.checkpoints.record(cp)?;
        }
        let to = files::next_rotated(&self.path)?;
        std::fs::rename(&self.path, &to)?;
        self.file = (self.opener)(&self.path)?;
        self.size = self.file.size()?;
        files::sync_folder_of(&self.path)?;
        if let Some(ring) = &self.ring {
            let cp = Checkpoint::at(ring.pos, self.size, *seq, hash);
            ring.checkpoints.rotated(cp, &self.path)?;
        }
        self.opened = Instant::now();
        tracing::info!(message = "Audit log rotated.", to = %to.display());
        Ok(())
    }

    /// Makes `n` sealed records, the last of them `head`, durable and appends them to the live
    /// log; on failure cuts the live log back to before them. When `ahead`, the batch is big
    /// ([`AHEAD_MIN_RECORDS`]) and the journal has room, the append waits for more
    /// ([`LIVE_CHUNK`], [`LIVE_MAX_LAG`]).
    pub(super) fn flush(
        &mut self,
        buf: &[u8],
        n: usize,
        head: (u64, String),
        ahead: bool,
    ) -> Result<(), String> {
        if self.due_for_rotation()
            && let Err(e) = self.rotate()
        {
            tracing::error!(message = "Audit log rotation failed; writing on.", error = %e);
        }
        let started = Instant::now();
        let len = buf.len();
        let result = match &mut self.ring {
            // Committed to the journal only; the live log gets it with a later append.
            Some(ring)
                if ahead
                    && n >= AHEAD_MIN_RECORDS
                    && self.behind.may_take(len)
                    && ring.fits(len as u64) =>
            {
                ring.journal.commit(ring.pos, buf).map(|()| {
                    ring.pos += len as u64;
                    self.behind.take(buf, head);
                })
            }
            _ => self.append_and_commit(buf, head),
        };
        match result {
            Ok(()) => {
                self.metrics.observe_batch(n, started.elapsed());
                Ok(())
            }
            Err(e) => {
                self.metrics.failures.inc();
                Err(format!("audit write failed: {e}"))
            }
        }
    }

    /// Appends what is behind and the batch to the live log in one write, then makes the batch
    /// durable; on failure the live log keeps only what was durable before.
    fn append_and_commit(&mut self, buf: &[u8], head: (u64, String)) -> std::io::Result<()> {
        self.append_live(buf)?;
        let result = self.make_durable(buf, &head);
        match result {
            Ok(()) => {
                self.size += buf.len() as u64;
                self.head = head;
                Ok(())
            }
            Err(e) => {
                self.cut_back();
                Err(e)
            }
        }
    }

    /// Appends to the live log what only the journal holds, and tells the checkpointer.
    pub(super) fn catch_up(&mut self) -> std::io::Result<()> {
        if self.behind.first.is_none() {
            return Ok(());
        }
        self.append_live(&[])?;
        if let Some(ring) = &self.ring {
            let (seq, hash) = &self.head;
            ring.checkpoints
                .committed(Checkpoint::at(ring.pos, self.size, *seq, hash));
        }
        Ok(())
    }

    /// [`Self::catch_up`]; a failure is logged (the records are in the journal, and the next
    /// batch, not committed ahead while the live log fails, tries the append again).
    fn catch_up_or_log(&mut self) {
        if let Err(e) = self.catch_up() {
            tracing::error!(message = "Audit live log append failed; the journal keeps the records.", error = %e);
        }
    }

    /// Appends the records behind, then `more`, in one write. What was behind is the live
    /// log's from then on; `more` is not counted in its length until it is durable. On failure
    /// cuts the live log back, keeping what is behind for the next append.
    fn append_live(&mut self, more: &[u8]) -> std::io::Result<()> {
        let behind = self.behind.buf.len();
        let result = if behind == 0 {
            self.file.append(more)
        } else {
            self.behind.buf.extend_from_slice(more);
            let r = self.file.append(&self.behind.buf);
            self.behind.buf.truncate(behind);
            r
        };
        self.behind.failing = result.is_err();
        if let Err(e) = result {
            self.cut_back();
            return Err(e);
        }
        if let Some(w) = self.behind.first.take() {
            self.size += behind as u64;
            self.head = w.head;
        }
        self.behind.buf.clear();
        Ok(())
    }

    /// Cuts whatever part of a failed append landed; if even that fails, learns the real
    /// length so the next roll-back point is right.
    fn cut_back(&mut self) {
        if self.file.truncate(self.size).is_err()
            && let Ok(len) = self.file.size()
        {
            self.size = len;
        }
    }

    /// Makes a batch just appended to the live log durable: in the journal when the ring has
    /// room for it, else by syncing the live log and recording a checkpoint past it.
    fn make_durable(&mut self, buf: &[u8], (seq, hash): &(u64, String)) -> std::io::Result<()> {
        let Some(ring) = &mut self.ring else {
            return self.file.sync();
        };
        let len = buf.len() as u64;
        let end = Checkpoint::at(ring.pos + len, self.size + len, *seq, hash);
        if ring.fits(len) {
            ring.journal.commit(ring.pos, buf)?;
            ring.checkpoints.committed(end);
        } else {
            self.file.sync()?;
            ring.checkpoints.record(end)?;
        }
        ring.pos += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
