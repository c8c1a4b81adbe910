//! The journal keeps every acknowledged record across a crash that loses the live log's
//! unsynced tail (a power cut), across ring turns, batches too big for the ring and rotation.

use super::super::{FileLog, LogOptions, open_file};
use super::*;
use crate::audit::Entry;
use crate::audit::verify::{Verdict, verify_path};
use crate::observe::AuditMetrics;

fn options(journal_bytes: u64) -> LogOptions {
    LogOptions {
        journal_bytes,
        ..LogOptions::default()
    }
}

fn open(path: &Path, opts: LogOptions) -> Result<FileLog, crate::audit::AuditError> {
    open_metered(path, opts, AuditMetrics::default())
}

fn open_metered(
    path: &Path,
    opts: LogOptions,
    metrics: AuditMetrics,
) -> Result<FileLog, crate::audit::AuditError> {
    FileLog::open_with(
        path,
        opts,
        || "2026-12-03T00:00:00.000Z".into(),
        metrics,
        Box::new(open_file),
    )
    .map(|(log, _)| log)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An allowed start's decision record.
fn decision<'a>(request_id: &'a str, reasons: &'a [String]) -> Entry<'a> {
    Entry {
        time: "2026-12-03T00:00:00.000Z",
        request_id,
        event: "decision",
        decision: "allow",
        reasons,
        ..Entry::default()
    }
}

/// Appends `n` decision records, each waited for (acknowledged), `pad` bytes of reasons each.
fn append(log: &FileLog, from: usize, n: usize, pad: usize) {
    let reasons = vec!["r".repeat(pad)];
    rt().block_on(async {
        for i in from..from + n {
            let id = format!("req-{i}");
            log.append(&decision(&id, &reasons)).await.unwrap();
        }
    });
}

/// A log in a new folder (`audit.jsonl`) opened with `opts`, holding `n` acknowledged
/// decision records (`req-0`...) of 10 bytes of reasons each.
fn log_with(opts: LogOptions, n: usize) -> (tempfile::TempDir, PathBuf, FileLog) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = open(&path, opts).unwrap();
    append(&log, 0, n, 10);
    (dir, path, log)
}

/// What the disk holds after a power cut while `dir`'s log is open: the journal as it is, the
/// live log as synced at the journal's checkpoint plus part of its unsynced tail and garbage
/// (writeback that was under way). Rotated files were synced when they were rotated.
fn power_cut(dir: &Path, live: &str) -> (tempfile::TempDir, Checkpoint) {
    let image = tempfile::tempdir().unwrap();
    let journal = path_for(&dir.join(live));
    let journal_name = journal.file_name().unwrap();
    std::fs::copy(&journal, image.path().join(journal_name)).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_name() != journal_name {
            std::fs::copy(e.path(), image.path().join(e.file_name())).unwrap();
        }
    }
    let (_, cp) = Journal::open(&image.path().join(journal_name), MIN_BYTES).unwrap();
    let cp = cp.expect("a checkpoint");
    let live = image.path().join(live);
    let mut bytes = std::fs::read(&live).unwrap();
    let unsynced = bytes.len() as u64 - cp.live_len;
    bytes.truncate((cp.live_len + unsynced / 2) as usize);
    bytes.extend_from_slice(&[0u8; 100]);
    std::fs::write(&live, bytes).unwrap();
    (image, cp)
}

/// The request ids of the decision records in the chain ending in `live`, in order, after
/// checking that the chain verifies; and how many `recovered` notes it has.
fn decisions(live: &Path) -> (Vec<String>, usize) {
    assert!(matches!(verify_path(live).unwrap(), Verdict::Ok { .. }));
    let mut ids = Vec::new();
    let mut notes = 0;
    for f in crate::audit::files::chain(live).unwrap() {
        for l in std::fs::read_to_string(f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            match v["event"].as_str() {
                Some("decision") => ids.push(v["request_id"].as_str().unwrap().to_string()),
                Some("recovered") => notes += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    (ids, notes)
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("req-{i}")).collect()
}

#[test]
fn a_power_cut_loses_no_acknowledged_record() {
    let (dir, _, log) = log_with(options(1 << 20), 40);
    // Far less than an eighth of the ring and well within the checkpoint interval: the live
    // log's records are all after the start-up checkpoint, durable only in the journal.
    let (image, cp) = power_cut(dir.path(), "audit.jsonl");
    assert_eq!((cp.live_len, cp.seq), (0, 0));
    let live = image.path().join("audit.jsonl");
    assert!(verify_path(&live).unwrap() != Verdict::Ok { records: 40 });
    // `audit verify` can tell the records are in the journal.
    assert_eq!(last_journaled(&live).unwrap(), Some(40));

    let reopened = open(&live, options(1 << 20)).unwrap();
    // The garbage the cut left is not kept, and a `recovered` record says bytes were cut.
    assert_eq!(decisions(&live), (ids(0..40), 1));
    // The chain goes on from the restored head, and a second cut keeps both runs' records.
    append(&reopened, 40, 5, 10);
    let (image2, _) = power_cut(image.path(), "audit.jsonl");
    let live2 = image2.path().join("audit.jsonl");
    drop(open(&live2, options(1 << 20)).unwrap());
    assert_eq!(decisions(&live2), (ids(0..45), 2));
    // Stopped cleanly: nothing waits in the journal.
    assert_eq!(last_journaled(&live2).unwrap(), None);
    drop(log);
}

#[test]
fn the_ring_turns_many_times_and_a_batch_bigger_than_it_goes_to_the_live_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let metrics = AuditMetrics::default();
    let log = open_metered(&path, options(MIN_BYTES), metrics.clone()).unwrap();
    // ~400 bytes a record, 16 KiB ring: ~50 turns.
    append(&log, 0, 2000, 150);
    // Every turn of the ring needs checkpoints (the checkpointer's, or a batch synced in the
    // live log).
    assert!(
        metrics.checkpoints.get() >= 50,
        "{}",
        metrics.checkpoints.get()
    );
    assert_eq!(metrics.checkpoint_failures.get(), 0);
    // One record larger than the ring: synced in the live log with a checkpoint past it.
    append(&log, 2000, 1, 20_000);
    append(&log, 2001, 30, 150);
    let (image, cp) = power_cut(dir.path(), "audit.jsonl");
    assert!(cp.seq >= 2001, "the big record left a checkpoint: {cp:?}");
    let live = image.path().join("audit.jsonl");
    drop(open(&live, options(MIN_BYTES)).unwrap());
    assert_eq!(decisions(&live), (ids(0..2031), 1));
    drop(log);
    // A clean stop leaves nothing to restore: the last checkpoint is the end of the log, and
    // a restart adds no `recovered` record.
    let (_, cp) = Journal::open(&path_for(&path), MIN_BYTES).unwrap();
    let cp = cp.unwrap();
    assert_eq!(cp.seq, 2031);
    assert_eq!(cp.live_len, std::fs::metadata(&path).unwrap().len());
    drop(open(&path, options(MIN_BYTES)).unwrap());
    assert_eq!(decisions(&path), (ids(0..2031), 0));
}

#[test]
fn a_large_ring_is_checkpointed_every_64_kib_not_once_per_eighth_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let opened = std::time::Instant::now();
    let log = open(&path, options(8 << 20)).unwrap();
    // ~85 KiB of records (group commits, as under load), then one more after the shortest
    // gap between checkpoints: the live log is checkpointed past them long before the
    // checkpointer's 500 ms timer, while an eighth of the ring (1 MiB) is far off.
    let reasons = vec!["r".repeat(700)];
    let ids: Vec<String> = (0..100).map(|i| format!("req-{i}")).collect();
    rt().block_on(futures_util::future::try_join_all(
        ids.iter().map(|id| log.append(&decision(id, &reasons))),
    ))
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(30));
    append(&log, 100, 1, 10);
    let live_len = loop {
        let (_, cp) = Journal::inspect(&path_for(&path)).unwrap().unwrap();
        if cp.live_len >= 64 * 1024 || opened.elapsed() > std::time::Duration::from_millis(450) {
            break cp.live_len;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(
        live_len >= 64 * 1024,
        "checkpointed up to byte {live_len} {:?} after opening",
        opened.elapsed()
    );
    drop(log);
    let mut all = ids;
    all.push("req-100".into());
    assert_eq!(decisions(&path), (all, 0));
}

#[test]
fn rotation_under_the_journal_keeps_every_record_after_a_power_cut() {
    let opts = LogOptions {
        rotate_bytes: Some(4000),
        journal_bytes: 1 << 20,
        ..LogOptions::default()
    };
    let (dir, _, log) = log_with(opts.clone(), 50);
    let (image, cp) = power_cut(dir.path(), "audit.jsonl");
    let live = image.path().join("audit.jsonl");
    assert!(cp.seq > 0, "rotations leave checkpoints");
    drop(open(&live, opts).unwrap());
    assert!(crate::audit::files::rotated(&live).unwrap().len() >= 2);
    assert_eq!(decisions(&live).0, ids(0..50));
    drop(log);
}

#[test]
fn a_journal_that_does_not_match_its_log_is_not_replayed_onto_it() {
    let (dir, path, log) = log_with(options(1 << 20), 10);
    drop(log);
    // The log is replaced by another one; the journal stays behind.
    std::fs::remove_file(&path).unwrap();
    let other = open(&dir.path().join("other.jsonl"), LogOptions::default()).unwrap();
    append(&other, 0, 3, 10);
    drop(other);
    std::fs::rename(dir.path().join("other.jsonl"), &path).unwrap();
    let err = open(&path, options(1 << 20)).err().expect("refused");
    assert!(
        matches!(&err, crate::audit::AuditError::Corrupt(m) if m.contains("journal")),
        "{err}"
    );
    assert_eq!(verify_path(&path).unwrap(), Verdict::Ok { records: 3 });
}

#[test]
fn turning_the_journal_off_first_restores_what_only_it_holds() {
    let (dir, _, log) = log_with(options(1 << 20), 12);
    let (image, _) = power_cut(dir.path(), "audit.jsonl");
    drop(log);
    let live = image.path().join("audit.jsonl");
    let log = open(&live, options(0)).unwrap();
    assert!(!path_for(&live).exists(), "the journal is removed");
    append(&log, 12, 1, 10);
    drop(log);
    assert_eq!(decisions(&live), (ids(0..13), 1));
}

#[test]
fn the_continuation_stops_at_stale_bytes_a_foreign_link_or_a_torn_line() {
    use crate::audit::record::{GENESIS, Prepared};
    let seal = |id: &str, seq: u64, prev: &str, out: &mut Vec<u8>| {
        Prepared::new(&decision(id, &[]))
            .unwrap()
            .seal(seq, prev, out)
    };
    let mut chain = Vec::new();
    let h1 = seal("a", 1, GENESIS, &mut chain);
    let h2 = seal("b", 2, &h1, &mut chain);
    let two = chain.len();
    // A record of an earlier turn that also claims seq 3 but links elsewhere, then the real 3.
    let mut stale = Vec::new();
    seal("stale", 3, &h1, &mut stale);
    let mut real3 = Vec::new();
    seal("c", 3, &h2, &mut real3);

    let whole = [chain.clone(), real3.clone()].concat();
    let (used, seq, _) = continuation(&whole, 0, GENESIS.into());
    assert_eq!((used, seq), (whole.len(), 3));
    for tail in [
        stale.clone(),
        [stale, real3.clone()].concat(),
        real3[..real3.len() - 1].to_vec(), // torn: no newline
        vec![0u8; 64],
    ] {
        let stream = [chain.clone(), tail].concat();
        let (used, seq, hash) = continuation(&stream, 0, GENESIS.into());
        assert_eq!((used, seq, hash.as_str()), (two, 2, h2.as_str()));
    }
    // Not the chain's next record at all: nothing is taken.
    let (used, seq, _) = continuation(&chain, 5, h2.clone());
    assert_eq!((used, seq), (0, 5));
}

#[test]
fn a_cut_between_a_rotations_rename_and_its_checkpoint_restores_the_new_file_from_the_journal() {
    use crate::audit::record::Prepared;
    let (dir, path, log) = log_with(options(1 << 20), 5);
    drop(log);
    // Stopped cleanly: the checkpoint is the live file's end. Then the rotation's rename
    // happens and its second checkpoint never does; two records go to the new file and the
    // journal, and only part of them reaches the new file.
    let (mut journal, cp) = Journal::open(&path_for(&path), 1 << 20).unwrap();
    let cp = cp.unwrap();
    assert_eq!(
        (cp.seq, cp.live_len),
        (5, std::fs::metadata(&path).unwrap().len())
    );
    std::fs::rename(&path, dir.path().join("audit.jsonl.000001")).unwrap();
    let mut records = Vec::new();
    let mut hash = cp.hash.clone();
    for (seq, id) in [(6, "req-5"), (7, "req-6")] {
        hash = Prepared::new(&decision(id, &[]))
            .unwrap()
            .seal(seq, &hash, &mut records);
    }
    journal.commit(cp.pos, &records).unwrap();
    std::fs::write(&path, &records[..records.len() - 20]).unwrap();
    drop(journal);

    drop(open(&path, options(1 << 20)).unwrap());
    let (ids, _) = decisions(&path);
    assert_eq!(ids, self::ids(0..7));
}

/// Direct ring writes: commits that start and end inside blocks, fill blocks exactly, span
/// several and wrap the ring read back as committed, each leaving the commit before it intact
/// and padding its last block with zeros; after a gap in the stream (a batch that went to the
/// live log instead) the head of the block is read back from the file.
#[test]
fn direct_writes_keep_every_commit_across_blocks_gaps_and_turns() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(&dir.path().join("a.journal"), 16 * 1024).unwrap();
    j.write_direct();
    assert!(
        j.direct.is_some(),
        "the test folder's file system takes O_DIRECT"
    );
    let block = direct::BLOCK as usize;
    let mut pos = 100u64;
    let mut prev: Option<(u64, Vec<u8>)> = None;
    for (i, len) in [1, 99, 4095, 4096, 4097, 5000, 3, 7000, 12_000, 1, 4096, 333]
        .into_iter()
        .enumerate()
    {
        if i == 6 {
            pos += 1234;
            prev = None;
        }
        let buf: Vec<u8> = (0..len).map(|k| (i * 31 + k) as u8 | 1).collect();
        let at = (pos % j.capacity()) as usize;
        let span = j.span(pos, len as u64) as usize;
        assert!(span <= 16 * 1024);
        let old = j.read_from(pos).unwrap();
        j.commit(pos, &buf).unwrap();
        assert!(j.direct.is_some(), "commit {i} fell back to the page cache");
        let stream = j.read_from(pos).unwrap();
        assert_eq!(&stream[..len], &buf[..], "commit {i}");
        let pad = (at + len).next_multiple_of(block) - (at + len);
        assert!(stream[len..len + pad].iter().all(|b| *b == 0), "commit {i}");
        // Nothing past what the room check was told of is written over.
        let written = span - at % block;
        assert_eq!(stream[written..], old[written..], "commit {i}");
        if let Some((p, before)) = prev.filter(|(_, b)| b.len() + len <= 16 * 1024) {
            let stream = j.read_from(p).unwrap();
            assert_eq!(&stream[..before.len()], &before[..], "before commit {i}");
        }
        prev = Some((pos, buf));
        pos += len as u64;
    }
    // A second handle (the checkpointer's) writes the header through the page cache.
    let cp = Checkpoint::at(pos, 0, 0, "x");
    j.try_clone().unwrap().write_checkpoint(&cp).unwrap();
    assert_eq!(j.read_checkpoint().unwrap().map(|c| c.pos), Some(pos));
}
