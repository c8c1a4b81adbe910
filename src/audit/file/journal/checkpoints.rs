//! The checkpointer: the thread that syncs the live log now and then and records in the
//! journal's header how far it is durable, so the ring can be written over again.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Checkpoint, Journal};
use crate::observe::AuditMetrics;

/// The checkpointer syncs the live log at least this often while records are pending.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// The writer asks for a checkpoint once this much of the ring waits and [`CHECKPOINT_GAP`]
/// passed since the last one began (or once an eighth of the ring waits, whichever comes
/// first). Small and frequent rather than one per eighth of the default 8 MiB ring: syncing
/// ~1 MiB of the live log at once held up the journal commits behind it for a millisecond or
/// more, the tail of every request waiting for a commit; 64 KiB at a time did not. Measured
/// on the shared harness's 2-vCPU VM at ~2,000 requests/s, interleaved with the rule before
/// (an eighth of the ring): request p99 1,321-2,580 µs against 2,400-4,793 in six of seven
/// pairs, commits over 1 ms 10-35 against 25-80 of ~6,400.
const CHECKPOINT_BYTES: u64 = 64 * 1024;
/// Shortest time between checkpoints asked for by [`CHECKPOINT_BYTES`]: each costs 170-300 µs
/// of CPU (two syncs and their metadata), so under saturation, where 64 KiB wait every few
/// milliseconds, they are taken at most this often (~33 a second on the harness, a few hundred
/// KiB each) instead of ~125 a second (~2% of a CPU).
const CHECKPOINT_GAP: Duration = Duration::from_millis(25);

fn stopped() -> std::io::Error {
    std::io::Error::other("checkpointer stopped")
}

/// What the writer and the checkpointer share.
pub struct Checkpoints {
    state: Mutex<State>,
    wake: Condvar,
    /// Held across a header write (a sync): checkpoints are written one at a time, in order,
    /// without holding `state`, which the writer takes on every commit. Holds the last
    /// checkpoint's `n`.
    header: Mutex<u64>,
    /// Stream position of the last checkpoint written: what the ring may not overwrite past.
    /// Stored under `header`, so it does not change while that is held.
    done_pos: AtomicU64,
    journal: Journal,
    metrics: AuditMetrics,
}

struct State {
    /// Where the writer is: what the next checkpoint may record.
    committed: Checkpoint,
    /// The live log, for syncing; replaced at rotation.
    live: File,
    /// Counts rotations, so a checkpoint taken across one is dropped.
    generation: u64,
    /// The writer asked for a checkpoint (the ring fills).
    wanted: bool,
    /// When the checkpointer took the last request for one.
    last: Instant,
    stopped: bool,
    /// The checkpointer thread has ended.
    finished: bool,
}

impl Checkpoints {
    /// Shares `journal`, whose last checkpoint is `done`, for the live log at `live`.
    pub fn new(
        journal: Journal,
        done: Checkpoint,
        live: &Path,
        metrics: AuditMetrics,
    ) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            metrics,
            header: Mutex::new(done.n),
            done_pos: AtomicU64::new(done.pos),
            state: Mutex::new(State {
                committed: done,
                live: File::open(live)?,
                generation: 0,
                wanted: false,
                last: Instant::now(),
                stopped: false,
                finished: false,
            }),
            wake: Condvar::new(),
            journal: journal.try_clone()?,
        }))
    }

    /// Bytes the ring can take at stream position `pos` without overwriting what is not
    /// checkpointed.
    pub fn room(&self, pos: u64) -> u64 {
        self.journal.capacity - (pos - self.done_pos.load(Ordering::Acquire))
    }

    /// The writer committed up to `cp`; asks for a checkpoint once `CHECKPOINT_BYTES` wait
    /// (at most every `CHECKPOINT_GAP`) or an eighth of the ring does.
    pub fn committed(&self, cp: Checkpoint) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let waiting = cp.pos - self.done_pos.load(Ordering::Acquire);
        let due = waiting >= self.journal.capacity / 8
            || (waiting >= CHECKPOINT_BYTES && s.last.elapsed() >= CHECKPOINT_GAP);
        s.committed = cp;
        if due && !s.wanted {
            s.wanted = true;
            drop(s);
            self.wake.notify_all();
        }
    }

    /// Records `cp` now, the live log already synced up to it: a batch that did not fit the
    /// ring, or a rotation about to rename the live log.
    pub fn record(&self, cp: Checkpoint) -> std::io::Result<()> {
        self.write(self.header.lock().map_err(|_| stopped())?, cp)
    }

    /// Records `cp` at the start of the new live log at `live`, after a rotation; a checkpoint
    /// the checkpointer took of the old file is dropped.
    pub fn rotated(&self, cp: Checkpoint, live: &Path) -> std::io::Result<()> {
        let header = self.header.lock().map_err(|_| stopped())?;
        let live = File::open(live)?;
        {
            let mut s = self.state.lock().map_err(|_| stopped())?;
            s.live = live;
            s.generation += 1;
        }
        self.write(header, cp)
    }

    /// Writes `cp` as the next checkpoint, the header lock held.
    fn write(
        &self,
        mut header: std::sync::MutexGuard<'_, u64>,
        mut cp: Checkpoint,
    ) -> std::io::Result<()> {
        cp.n = *header + 1;
        self.journal.write_checkpoint(&cp)?;
        *header = cp.n;
        self.done_pos.store(cp.pos, Ordering::Release);
        self.metrics.checkpoints.inc();
        Ok(())
    }

    /// Ends the checkpointer thread after one last checkpoint; waits for it at most `wait`.
    pub fn stop(&self, wait: Duration) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        s.stopped = true;
        self.wake.notify_all();
        let _ = self.wake.wait_timeout_while(s, wait, |s| !s.finished);
    }

    /// The checkpointer thread: syncs the live log and records how far it is durable, when
    /// the writer asks (see `committed`) or every 500 ms (`CHECKPOINT_EVERY`) while anything
    /// waits.
    pub fn run(&self) {
        self.serve();
        if let Ok(mut s) = self.state.lock() {
            s.finished = true;
        }
        self.wake.notify_all();
    }

    fn serve(&self) {
        loop {
            let (target, live, generation, last) = {
                let Ok(mut s) = self.state.lock() else {
                    return;
                };
                while !s.wanted && !s.stopped {
                    s = match self.wake.wait_timeout(s, CHECKPOINT_EVERY) {
                        Ok((s, t))
                            if t.timed_out()
                                && s.committed.pos > self.done_pos.load(Ordering::Acquire) =>
                        {
                            let mut s = s;
                            s.wanted = true;
                            s
                        }
                        Ok((s, _)) => s,
                        Err(_) => return,
                    };
                }
                s.wanted = false;
                s.last = Instant::now();
                let Ok(live) = s.live.try_clone() else {
                    return;
                };
                (s.committed.clone(), live, s.generation, s.stopped)
            };
            let result = live.sync_data().and_then(|()| {
                let Ok(header) = self.header.lock() else {
                    return Ok(());
                };
                // Still news, and no rotation since the snapshot (it is of the old file).
                let current = target.pos > self.done_pos.load(Ordering::Acquire)
                    && self.state.lock().is_ok_and(|s| s.generation == generation);
                if current {
                    self.write(header, target)?;
                }
                Ok(())
            });
            if let Err(e) = result {
                self.metrics.checkpoint_failures.inc();
                // The ring fills; the writer then syncs the live log itself, and fails its
                // batches if that fails too (fail closed).
                tracing::error!(message = "Audit checkpoint failed.", error = %e);
            }
            if last {
                return;
            }
        }
    }
}
