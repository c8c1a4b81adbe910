use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::clock::ManualClock;

/// Hands out credentials expiring `ttl` after the clock's now; can be made to fail.
#[derive(Debug)]
struct Fake {
    clock: Arc<ManualClock>,
    ttl: Duration,
    calls: AtomicUsize,
    failing: std::sync::atomic::AtomicBool,
}

impl AwsCredentialProvider for Fake {
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, String>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await; // let waiters pile up
            if self.failing.load(Ordering::SeqCst) {
                return Err("sts unreachable".into());
            }
            let exp = Clock::now(self.clock.as_ref()) + self.ttl;
            Ok(Credentials::new(
                format!("ASIA{n}"),
                "secret",
                Some("token".into()),
                Some(exp),
                "fake",
            ))
        })
    }
}

use crate::clock::Clock;

fn setup() -> (Arc<ManualClock>, Arc<Fake>, Cached) {
    let clock = Arc::new(ManualClock::at(1_795_000_000));
    let fake = Arc::new(Fake {
        clock: clock.clone(),
        ttl: Duration::from_secs(3600),
        calls: AtomicUsize::new(0),
        failing: std::sync::atomic::AtomicBool::new(false),
    });
    let cached = Cached::new("role".into(), fake.clone(), clock.clone());
    (clock, fake, cached)
}

#[tokio::test]
async fn one_fetch_serves_concurrent_callers_until_refresh_is_due() {
    let (clock, fake, cached) = setup();
    let cached = Arc::new(cached);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = cached.clone();
        tasks.push(tokio::spawn(async move {
            c.get().await.unwrap().access_key_id().to_string()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "ASIA0");
    }
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "single flight");
    // 50 minutes in: still fresh, nothing to do. 56 minutes in: within 5 minutes of expiry, so
    // the background refresh fetches; requests never wait for it.
    clock.advance(Duration::from_secs(50 * 60));
    cached.refresh_if_due().await.unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(6 * 60));
    assert_eq!(
        cached.get().await.unwrap().access_key_id(),
        "ASIA0",
        "no wait"
    );
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    cached.refresh_if_due().await.unwrap();
    assert_eq!(cached.get().await.unwrap().access_key_id(), "ASIA1");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_failed_refresh_keeps_serving_until_expiry_then_fails_closed() {
    let (clock, fake, cached) = setup();
    cached.get().await.unwrap();
    fake.failing.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(57 * 60)); // due for refresh, not expired
    assert!(cached.refresh_if_due().await.is_err());
    assert_eq!(cached.failures(), 1);
    assert_eq!(cached.get().await.unwrap().access_key_id(), "ASIA0");
    assert!(cached.is_usable());
    clock.advance(Duration::from_secs(4 * 60)); // expired
    assert!(matches!(
        cached.get().await,
        Err(CredentialsError::Unavailable { .. })
    ));
    assert!(!cached.is_usable());
    fake.failing.store(false, Ordering::SeqCst);
    assert!(cached.get().await.is_ok(), "recovers without a restart");
}

#[tokio::test]
async fn short_lived_credentials_refresh_at_80_percent() {
    let clock = Arc::new(ManualClock::at(1_795_000_000));
    let fake = Arc::new(Fake {
        clock: clock.clone(),
        ttl: Duration::from_secs(600),
        calls: AtomicUsize::new(0),
        failing: std::sync::atomic::AtomicBool::new(false),
    });
    let cached = Cached::new("short".into(), fake.clone(), clock.clone());
    cached.get().await.unwrap();
    let due = cached.refresh_due().unwrap();
    assert_eq!(
        due.duration_since(clock.now()).unwrap(),
        Duration::from_secs(480),
        "10-minute credentials refresh after 8 minutes, not 5 minutes before expiry"
    );
    assert_eq!(refresh_margin(Duration::from_secs(3600)), REFRESH_BEFORE);
}

#[test]
fn credentials_never_print_their_secret() {
    let c = Credentials::new(
        "ASIAEXAMPLE",
        "very-secret-key",
        Some("session-token-value".into()),
        None,
        "x",
    );
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("very-secret-key") && !dbg.contains("session-token-value"),
        "{dbg}"
    );
}

#[tokio::test]
async fn web_identity_reads_its_token_file_at_every_fetch() {
    let settings = crate::config::AwsWebIdentitySettings {
        sts: crate::config::StsSettings {
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            session_name: "stepgate".into(),
            duration: Duration::from_secs(900),
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
        },
        token_file: "/nonexistent/stepgate-token".into(),
    };
    let p = aws::WebIdentity::new(settings, aws::SdkDeps::new());
    let err = p.fetch().await.unwrap_err();
    assert!(
        err.contains("cannot read token file `/nonexistent/stepgate-token`"),
        "{err}"
    );
}
