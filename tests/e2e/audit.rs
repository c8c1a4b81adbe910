//! The audit log: chain across restarts, torn tails, tamper evidence.

use std::io::Write;

use stepgate::audit::verify::{Verdict, verify_file};

use crate::support::Harness;

#[tokio::test]
async fn chain_survives_restart_and_torn_tail_and_verifies() {
    let h = Harness::start().await;
    assert_eq!(h.start_as("alice", "nightly-load", "{}").await.status, 201);
    assert_eq!(h.start_as("victor", "nightly-load", "{}").await.status, 403);
    let path = h.audit_path.clone();
    let config = h.dir.path().join("stepgate.toml");
    assert_eq!(verify_file(&path).unwrap(), Verdict::Ok { records: 3 });
    // A crash mid-write leaves half a line.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"v\":1,\"seq\":4,\"ti")
        .unwrap();
    // Restart on the same log: the torn line is cut and the repair is itself recorded.
    let settings = stepgate::config::load(&config).unwrap();
    let app = stepgate::app::App::build(settings, stepgate::app::Deps::real().unwrap()).unwrap();
    let seq = app
        .audit
        .write(&stepgate::audit::Entry {
            time: "2026-11-24T00:00:00.000Z",
            request_id: "after-restart",
            event: "decision",
            decision: "deny",
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(seq, 5);
    let text = std::fs::read_to_string(&path).unwrap();
    let recs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs[3]["event"], "recovered");
    assert_eq!(verify_file(&path).unwrap(), Verdict::Ok { records: 5 });
    h.stop().await;
}

#[test]
fn any_edit_deletion_or_reorder_is_found_at_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (log, _) = stepgate::audit::FileLog::open(&path, || "t".into()).unwrap();
        for i in 0..5 {
            log.append(&stepgate::audit::Entry {
                time: &format!("2026-11-24T00:00:0{i}.000Z"),
                request_id: &format!("r{i}"),
                event: "decision",
                decision: "allow",
                ..Default::default()
            })
            .await
            .unwrap();
        }
    });
    let good = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let check = |text: String| {
        let p = dir.path().join("t.jsonl");
        std::fs::write(&p, text).unwrap();
        verify_file(&p).unwrap()
    };
    assert_eq!(check(good.clone()), Verdict::Ok { records: 5 });
    // Changed field in record 3.
    let edited = good.replacen("\"r2\"", "\"rX\"", 1);
    assert!(matches!(check(edited), Verdict::Broken { line: 3, .. }));
    // Record 3 deleted.
    let mut l = lines.clone();
    l.remove(2);
    assert!(matches!(
        check(l.join("\n") + "\n"),
        Verdict::Broken { line: 3, .. }
    ));
    // Records 2 and 3 swapped.
    let mut l = lines.clone();
    l.swap(1, 2);
    assert!(matches!(
        check(l.join("\n") + "\n"),
        Verdict::Broken { line: 2, .. }
    ));
}

/// A real full disk: the audit folder on a 64 KiB tmpfs (the tests run as root, as CI does).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot mount a tmpfs at {} (this test needs root, as in CI)",
            at.display()
        );
        Self(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_starts_forwards_nothing_and_recovers_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"));
    let log = disk.0.join("audit.jsonl");
    let h = Harness::start_with(|c| {
        let start = c.find("path = \"").unwrap();
        let end = c[start..].find('\n').unwrap() + start;
        // The smallest journal: the rest of the 64 KiB is the log's.
        format!(
            "{}path = \"{}\"\njournal_bytes = 16384{}",
            &c[..start],
            log.display(),
            &c[end..]
        )
    })
    .await;
    assert_eq!(h.start_as("alice", "nightly-load", "{}").await.status, 201);

    // Fill the disk to the last byte.
    let filler = disk.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![b'x'; 4096];
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(b"x").is_ok() {}
    drop(f);

    // The log's last page may still take a few records; then every start is refused.
    let mut refused = false;
    for _ in 0..200 {
        let r = h.start_as("alice", "nightly-load", "{}").await;
        if r.status == 503 {
            assert_eq!(crate::support::error_code(&r), "unavailable", "{}", r.json);
            refused = true;
            break;
        }
        assert_eq!(r.status, 201, "{}", r.json);
    }
    assert!(refused, "the full disk never refused a start");
    let forwarded = h.sandbox.executions().len();
    for _ in 0..5 {
        let r = h.start_as("alice", "nightly-load", "{}").await;
        assert_eq!(
            (r.status, crate::support::error_code(&r)),
            (503, "unavailable"),
            "{}",
            r.json
        );
    }
    assert_eq!(
        h.sandbox.executions().len(),
        forwarded,
        "a start was forwarded without a durable decision record"
    );
    let r = h.send("GET", "/readyz", &[], "").await;
    assert_eq!(
        (r.status, &r.json["audit"]),
        (503, &serde_json::json!(false))
    );

    // Space comes back: service resumes without a restart.
    std::fs::remove_file(&filler).unwrap();
    let r = h.start_as("alice", "nightly-load", "{}").await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(h.sandbox.executions().len(), forwarded + 1);
    let r = h.send("GET", "/readyz", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.json);
    h.stop().await;
    // Nothing of the refused requests is in the chain, and the chain holds.
    match verify_file(&log).unwrap() {
        Verdict::Ok { records } => assert!(records >= 2, "{records}"),
        broken => panic!("{broken}"),
    }
}
