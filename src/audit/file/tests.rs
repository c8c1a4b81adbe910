use std::sync::atomic::AtomicBool;

use super::*;
use crate::audit::verify::{Verdict, verify_path};

/// A file whose disk can be made "full".
pub(super) struct FlakyFile {
    inner: File,
    full: Arc<AtomicBool>,
}

impl FlakyFile {
    /// Opens live logs on a disk that is full while `full` is set.
    pub(super) fn opener(full: Arc<AtomicBool>) -> Opener {
        Box::new(move |p| {
            let inner = OpenOptions::new().create(true).append(true).open(p)?;
            Ok(Box::new(FlakyFile {
                inner,
                full: full.clone(),
            }))
        })
    }
}

impl LogFile for FlakyFile {
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            // Half the bytes land, as on a real short write, then the error.
            let _ = self.inner.write_all(&buf[..buf.len() / 2]);
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.inner.write_all(buf)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn size(&self) -> std::io::Result<u64> {
        self.inner.metadata().map(|m| m.len())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
}

/// A decision record with the given request id.
fn entry(request_id: &str) -> Entry<'_> {
    Entry {
        time: "2026-11-24T00:00:00.000Z",
        request_id,
        event: "decision",
        decision: "allow",
        ..Entry::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_full_disk_fails_every_write_then_recovers_without_breaking_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let full = Arc::new(AtomicBool::new(false));
    let opener = FlakyFile::opener(full.clone());
    let metrics = AuditMetrics::default();
    let (log, _) = FileLog::open_with(
        &path,
        LogOptions::default(),
        || "t".into(),
        metrics.clone(),
        opener,
    )
    .unwrap();
    rt().block_on(async {
        assert_eq!(log.append(&entry("r1")).await.unwrap(), 1);
        full.store(true, Ordering::SeqCst);
        assert!(log.append(&entry("r2")).await.is_err());
        assert!(log.append(&entry("r3")).await.is_err());
        assert!(!log.is_healthy());
        full.store(false, Ordering::SeqCst);
        // The failed records took no sequence numbers and left no bytes.
        assert_eq!(log.append(&entry("r4")).await.unwrap(), 2);
        assert!(log.is_healthy());
    });
    assert_eq!(verify_path(&path).unwrap(), Verdict::Ok { records: 2 });
    assert_eq!(metrics.failures.get(), 2);
}

#[test]
fn rotation_by_size_keeps_one_chain_across_files_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let opts = LogOptions {
        rotate_bytes: Some(2000),
        ..LogOptions::default()
    };
    for round in 0..2 {
        let (log, _) = FileLog::open_with(
            &path,
            opts.clone(),
            || "t".into(),
            AuditMetrics::default(),
            Box::new(open_file),
        )
        .unwrap();
        rt().block_on(async {
            for i in 0..20 {
                log.append(&entry(&format!("r{}", round * 100 + i)))
                    .await
                    .unwrap();
            }
        });
    }
    let rotated = files::rotated(&path).unwrap();
    assert!(rotated.len() >= 4, "{rotated:?}");
    assert_eq!(verify_path(&path).unwrap(), Verdict::Ok { records: 40 });
    assert_eq!(
        verify_path(dir.path()).unwrap(),
        Verdict::Ok { records: 40 }
    );
    // Removing a middle file is found at the first record after the gap.
    std::fs::remove_file(&rotated[1].1).unwrap();
    let v = verify_path(&path).unwrap();
    assert!(
        matches!(&v, Verdict::Broken { file, line: 1, .. } if *file == rotated[2].1),
        "{v}"
    );
}

#[test]
fn a_broken_chain_refuses_to_start_unless_accepted_and_the_acceptance_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let (log, _) = FileLog::open(&path, || "t".into()).unwrap();
        rt().block_on(async {
            for i in 0..3 {
                log.append(&entry(&format!("r{i}"))).await.unwrap();
            }
        });
    }
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("\"r1\"", "\"rX\"", 1);
    std::fs::write(&path, text).unwrap();
    let err = FileLog::open(&path, || "t".into()).err().unwrap();
    assert!(
        err.to_string().contains("--accept-broken-audit-chain"),
        "{err}"
    );
    let opts = LogOptions {
        accept_broken_chain: true,
        ..LogOptions::default()
    };
    let (_log, head) = FileLog::open_with(
        &path,
        opts,
        || "t".into(),
        AuditMetrics::default(),
        Box::new(open_file),
    )
    .unwrap();
    assert!(head.accepted_break.is_some());
    let last = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert!(
        last.contains("\"recovered\"") && last.contains("accepted by the operator"),
        "{last}"
    );
}

#[test]
fn one_wake_from_the_writer_releases_every_waiter_of_a_commit_even_if_the_woken_one_is_gone() {
    rt().block_on(async {
        let commit = Commit::new();
        let mut waiters = Vec::new();
        for _ in 0..16 {
            let c = commit.clone();
            waiters.push(tokio::spawn(async move { c.wait().await }));
        }
        // Let every waiter register and sleep.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        // The writer thread finishes the commit: one `notify_one`.
        let c = commit.clone();
        std::thread::spawn(move || c.finish(Ok(()))).join().unwrap();
        // The first waiter (the one woken) is cancelled before it runs: the wake moves on.
        waiters.remove(0).abort();
        for w in waiters {
            let r = tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("a waiter was left sleeping")
                .unwrap();
            assert!(r.is_ok());
        }
        // A waiter that comes after the commit finished does not sleep.
        let late = tokio::time::timeout(Duration::from_secs(5), commit.wait()).await;
        assert!(late.expect("a late waiter slept").is_ok());
    });
    // A failed commit fails every waiter.
    rt().block_on(async {
        let commit = Commit::new();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let c = commit.clone();
                tokio::spawn(async move { c.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        commit.finish(Err("disk full".into()));
        for w in waiters {
            let r = tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .unwrap()
                .unwrap();
            assert!(matches!(r, Err(AuditError::Io(m)) if m == "disk full"));
        }
    });
}

#[test]
fn a_record_nobody_waits_for_reaches_the_disk_while_the_log_is_quiet() {
    // A start's outcome record is written with the next group commit; when no request comes
    // after it, it must still reach the file within moments, not wait for the next request.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (log, _) = FileLog::open(&path, || "t".into()).unwrap();
    rt().block_on(async {
        assert_eq!(log.append(&entry("decision-1")).await.unwrap(), 1);
    });
    // Let the writer park with nothing to do, then hand it a record nobody waits for.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(log.append_later(&entry("outcome-1")).unwrap(), 2);
    let landed = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        std::fs::read_to_string(&path).is_ok_and(|s| s.contains("outcome-1"))
    });
    assert!(landed, "the outcome record stayed in memory for 2 s");
    // It is in the chain after the decision, and the log verifies.
    assert_eq!(verify_path(&path).unwrap(), Verdict::Ok { records: 2 });
}
