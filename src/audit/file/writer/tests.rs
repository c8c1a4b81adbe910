//! Batches committed ahead of the live log under load: durable in the journal, appended later
//! in one write, never lost or reordered, and not ahead of a live log that cannot take them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::audit::Entry;
use crate::audit::file::FileLog;
use crate::audit::file::journal::{Journal, MIN_BYTES, open_beside, path_for};
use crate::audit::file::tests::FlakyFile;
use crate::audit::record::{GENESIS, Prepared};
use crate::audit::verify::{Verdict, verify_path};

/// A writer on a new log (`audit.jsonl` in a new folder) with a 1 MiB journal, started as
/// `FileLog` starts one; its live log is full while `full` is set. Also the chain's head.
fn writer(full: Arc<AtomicBool>) -> (tempfile::TempDir, PathBuf, Writer, (u64, String)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let found = open_beside(&path, 1 << 20).unwrap().unwrap();
    let opener = FlakyFile::opener(full);
    let file = opener(&path).unwrap();
    let metrics = AuditMetrics::default();
    let cp = Checkpoint::at(0, 0, 0, GENESIS);
    let ring = Ring::start(
        found.journal,
        found.last,
        1 << 20,
        cp,
        &path,
        metrics.clone(),
    )
    .unwrap();
    let checkpoints = ring.checkpoints.clone();
    std::thread::spawn(move || checkpoints.run());
    let writer = Writer {
        file,
        size: 0,
        path: path.clone(),
        opened: Instant::now(),
        options: LogOptions::default(),
        opener,
        metrics,
        head: (0, GENESIS.into()),
        ring: Some(ring),
        behind: Behind::default(),
    };
    (dir, path, writer, (0, GENESIS.into()))
}

/// Seals decision records `ids` (each with `pad` bytes of reasons) after `head` into one batch.
fn batch(head: &mut (u64, String), ids: std::ops::Range<usize>, pad: usize) -> Vec<u8> {
    let reasons = vec!["r".repeat(pad)];
    let mut buf = Vec::new();
    for i in ids {
        let id = format!("req-{i}");
        let entry = Entry {
            time: "2026-12-04T00:00:00.000Z",
            request_id: &id,
            event: "decision",
            decision: "allow",
            reasons: &reasons,
            ..Entry::default()
        };
        head.0 += 1;
        head.1 = Prepared::new(&entry)
            .unwrap()
            .seal(head.0, &head.1, &mut buf);
    }
    buf
}

/// The request ids of the decision records in the live log at `path`, which must verify.
fn decisions(path: &Path) -> Vec<String> {
    assert!(matches!(verify_path(path).unwrap(), Verdict::Ok { .. }));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "decision")
        .map(|v| v["request_id"].as_str().unwrap().to_string())
        .collect()
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("req-{i}")).collect()
}

fn live_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn batches_under_load_wait_in_the_journal_and_reach_the_live_log_in_order() {
    let (dir, path, mut w, mut head) = writer(Arc::default());
    // A small batch (low load) goes to the live log at once.
    let buf = batch(&mut head, 0..2, 10);
    w.flush(&buf, 2, head.clone(), true).unwrap();
    assert_eq!(decisions(&path), ids(0..2));
    let small = live_len(&path);
    for i in 0..3 {
        let from = 2 + i * AHEAD_MIN_RECORDS;
        let buf = batch(&mut head, from..from + AHEAD_MIN_RECORDS, 10);
        w.flush(&buf, AHEAD_MIN_RECORDS, head.clone(), true)
            .unwrap();
    }
    // Big batches (load): durable, acknowledged, and not in the live log yet.
    assert_eq!(live_len(&path), small);

    // A crash now: the journal gives them back.
    let image = tempfile::tempdir().unwrap();
    for name in ["audit.jsonl".into(), path_for(&path)] {
        let name = Path::new(&name).file_name().unwrap().to_owned();
        std::fs::copy(dir.path().join(&name), image.path().join(&name)).unwrap();
    }
    let copy = image.path().join("audit.jsonl");
    drop(FileLog::open(&copy, || "2026-12-04T00:00:01.000Z".into()).unwrap());
    assert_eq!(decisions(&copy), ids(0..50));

    // A batch not to be committed ahead goes to the live log after them, in one append.
    let buf = batch(&mut head, 50..51, 10);
    w.flush(&buf, 1, head.clone(), false).unwrap();
    assert_eq!(decisions(&path), ids(0..51));

    // Ahead again; the writer catches up when the lag is up or a reader waits.
    let buf = batch(&mut head, 51..51 + AHEAD_MIN_RECORDS, 10);
    w.flush(&buf, AHEAD_MIN_RECORDS, head.clone(), true)
        .unwrap();
    let before = live_len(&path);
    w.catch_up().unwrap();
    assert!(live_len(&path) > before);
    assert_eq!(decisions(&path), ids(0..51 + AHEAD_MIN_RECORDS));
    // The checkpointer may record it: nothing is left only in the journal after a stop.
    w.ring
        .as_ref()
        .unwrap()
        .checkpoints
        .stop(Duration::from_secs(4));
    let (_, cp) = Journal::open(&path_for(&path), MIN_BYTES).unwrap();
    let cp = cp.unwrap();
    assert_eq!(
        (cp.live_len, cp.seq),
        (live_len(&path), 51 + AHEAD_MIN_RECORDS as u64),
        "{cp:?}"
    );
}

#[test]
fn the_live_log_lags_the_journal_by_at_most_one_chunk() {
    let (_dir, path, mut w, mut head) = writer(Arc::default());
    let mut journaled = 0;
    let n = AHEAD_MIN_RECORDS;
    for i in 0..8 {
        // ~40 KiB per batch.
        let buf = batch(&mut head, i * n..(i + 1) * n, 2500);
        journaled += buf.len() as u64;
        w.flush(&buf, n, head.clone(), true).unwrap();
        assert!(journaled - live_len(&path) <= LIVE_CHUNK as u64);
    }
    assert!(live_len(&path) > 0);
    w.catch_up().unwrap();
    assert_eq!(decisions(&path), ids(0..8 * n));
}

#[test]
fn a_full_live_log_stops_commits_ahead_and_loses_nothing_once_it_has_room() {
    let full = Arc::new(AtomicBool::new(false));
    let (_dir, path, mut w, mut head) = writer(full.clone());
    let n = AHEAD_MIN_RECORDS;
    let buf = batch(&mut head, 0..n, 10);
    w.flush(&buf, n, head.clone(), true).unwrap();

    full.store(true, Ordering::SeqCst);
    // The catch-up fails and leaves nothing torn; the records stay in the journal.
    assert!(w.catch_up().is_err());
    assert_eq!(live_len(&path), 0);
    // Nothing more goes ahead of a live log that cannot take it: a big batch fails too (its
    // callers get 503) instead of piling up in the journal.
    let before = head.clone();
    let buf = batch(&mut head, n..2 * n, 10);
    assert!(w.flush(&buf, n, head.clone(), true).is_err());
    head = before;

    full.store(false, Ordering::SeqCst);
    let buf = batch(&mut head, n..2 * n, 10);
    w.flush(&buf, n, head.clone(), true).unwrap();
    w.catch_up().unwrap();
    assert_eq!(decisions(&path), ids(0..2 * n));
}
