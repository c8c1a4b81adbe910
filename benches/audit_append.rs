//! Durable audit appends (group commit, one `fdatasync` per batch) with 1, 32 and 256 concurrent
//! submitters, with the journal (the default: each batch overwritten in place in a preallocated
//! ring) and without it (`journal_bytes = 0`: each batch appended to the live log and synced
//! there). `audit_append/journal/1` is the time one submitter waits for its record to be
//! durable (the cost the write-ahead log adds to a trigger); with more submitters the time per
//! record shows what group commit buys (criterion's throughput line is records/s).
//! Run: `cargo bench --bench audit_append` (writes under target/bench-audit on the real disk).

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "benchmark program"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use stepgate::audit::{Entry, FileLog};

static CALLER: std::sync::LazyLock<stepgate::audit::CallerRef> =
    std::sync::LazyLock::new(|| stepgate::audit::CallerRef {
        issuer: "corp".into(),
        sub: "alice".into(),
        email: Some("alice@example.com".into()),
    });
static REASONS: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| vec!["data-eng-operates-nightly-etl".into()]);

/// A decision record as a start writes it; `request_id` is kept by the caller.
fn entry(request_id: &str) -> Entry<'_> {
    Entry {
        time: "2026-11-24T00:00:00.000Z",
        request_id,
        event: "decision",
        caller: Some(&CALLER),
        action: Some("start"),
        step: Some("nightly-load"),
        decision: "allow",
        reasons: &REASONS,
        input_sha256: Some("2d56620eeb4db3a864acb0fc9a03b5b5a4de6cdc137994a750cfaca838f73788"),
        source_ip: Some("10.1.2.3"),
        ..Entry::default()
    }
}

fn benches(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-audit");
    let _ = std::fs::remove_dir_all(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("audit_append");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    for (mode, journal_bytes, submitters) in [("journal", 8 << 20), ("sync-live", 0)]
        .into_iter()
        .flat_map(|(m, j)| [1u64, 32, 256].map(|s| (m, j, s)))
    {
        let path = dir.join(format!("{mode}-{submitters}/audit.jsonl"));
        let (log, _) = rt
            .block_on(async {
                FileLog::open_with(
                    &path,
                    stepgate::audit::file::LogOptions {
                        rotate_bytes: None,
                        journal_bytes,
                        ..Default::default()
                    },
                    || "t".into(),
                    stepgate::observe::AuditMetrics::default(),
                    Box::new(stepgate::audit::file::open_file),
                )
            })
            .unwrap();
        let log = Arc::new(log);
        let mut written = 0u64;
        group.bench_function(BenchmarkId::new(mode, submitters), |b| {
            // `iters` records in all, split over the submitters; time per record.
            b.iter_custom(|iters| {
                let per = iters.div_ceil(submitters);
                written += per * submitters;
                rt.block_on(async {
                    let started = Instant::now();
                    let tasks: Vec<_> = (0..submitters)
                        .map(|s| {
                            let log = log.clone();
                            tokio::spawn(async move {
                                for i in 0..per {
                                    log.append(&entry(&format!("bench-{}", s * 1_000_000_000 + i)))
                                        .await
                                        .unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    started
                        .elapsed()
                        .mul_f64(iters as f64 / (per * submitters) as f64)
                })
            })
        });
        let verdict = stepgate::audit::verify::verify_path(&path).unwrap();
        assert_eq!(
            verdict,
            stepgate::audit::verify::Verdict::Ok { records: written }
        );
    }
    group.finish();
}

criterion_group!(audit_append, benches);
criterion_main!(audit_append);
