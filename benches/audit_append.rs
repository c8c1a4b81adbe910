//! Durable audit records per second with 1, 32 and 256 concurrent submitters, and the latency a
//! submitter waits for durability (the cost the write-ahead log adds to a trigger).
//! Run: `cargo bench --bench audit_append` (writes under target/bench-audit on the real disk).

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    reason = "benchmark program"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use stepgate::audit::{Entry, FileLog};

const RUN_FOR: Duration = Duration::from_secs(3);

fn entry(i: u64) -> Entry {
    Entry {
        time: "2026-11-24T00:00:00.000Z".into(),
        request_id: format!("bench-{i}"),
        event: "decision",
        caller: Some(stepgate::audit::CallerRef {
            issuer: "corp".into(),
            sub: "alice".into(),
            email: Some("alice@example.com".into()),
        }),
        action: Some("start".into()),
        step: Some("nightly-load".into()),
        decision: "allow",
        reasons: vec!["data-eng-operates-nightly-etl".into()],
        input_sha256: Some(
            "2d56620eeb4db3a864acb0fc9a03b5b5a4de6cdc137994a750cfaca838f73788".into(),
        ),
        source_ip: Some("10.1.2.3".into()),
        ..Entry::default()
    }
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-audit");
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "audit append, durable (fdatasync per group commit), {} s per row, log under {}",
        RUN_FOR.as_secs(),
        dir.display()
    );
    println!(
        "{:>11} {:>14} {:>10} {:>10} {:>10}",
        "submitters", "records/s", "p50 µs", "p99 µs", "batches"
    );
    for submitters in [1usize, 32, 256] {
        let path = dir.join(format!("s{submitters}/audit.jsonl"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let metrics = stepgate::observe::AuditMetrics::default();
        let (log, _) = FileLog::open_with(
            &path,
            stepgate::audit::file::LogOptions {
                rotate_bytes: None,
                ..Default::default()
            },
            || "t".into(),
            metrics.clone(),
            Box::new(stepgate::audit::file::open_file),
        )
        .unwrap();
        let log = Arc::new(log);
        let (total, mut lat) = rt.block_on(async {
            let started = Instant::now();
            let mut tasks = Vec::new();
            for s in 0..submitters {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = 0u64;
                    while started.elapsed() < RUN_FOR {
                        let t = Instant::now();
                        log.append(entry(s as u64 * 1_000_000 + i)).await.unwrap();
                        lat.push(t.elapsed());
                        i += 1;
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            (all.len(), all)
        });
        lat.sort();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len() - 1))
                .copied()
                .unwrap_or_default()
        };
        let batches = metrics.batches.get();
        println!(
            "{:>11} {:>14.0} {:>10} {:>10} {:>10}",
            submitters,
            total as f64 / RUN_FOR.as_secs_f64(),
            pct(0.50).as_micros(),
            pct(0.99).as_micros(),
            batches
        );
        let verdict = stepgate::audit::verify::verify_path(&path).unwrap();
        assert_eq!(
            verdict,
            stepgate::audit::verify::Verdict::Ok {
                records: total as u64
            }
        );
    }
}
