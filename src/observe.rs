//! Observability: `/metrics` (Prometheus text), `/healthz`, `/readyz`.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a finished API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Action (`start`, ... or `none`).
    pub action: &'static str,
    /// HTTP status.
    pub status: u16,
}

/// Labels of an operation's result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `refused`.
    pub result: String,
}

/// Labels of an authorization decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `allow` or `deny`.
    pub decision: &'static str,
}

/// Labels of a credential provider.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// `[credentials.NAME]`.
    pub provider: String,
}

/// Metrics of the credential providers.
#[derive(Clone, Default)]
pub struct CredentialMetrics {
    /// `stepgate_credentials_expiry_seconds{provider}`: seconds until the held credentials
    /// expire (AWS; Google's library does not tell its tokens' expiry).
    pub expiry_seconds: Family<ProviderLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `stepgate_credentials_refresh_failures_total{provider}`.
    pub refresh_failures: Family<ProviderLabels, Counter>,
    /// `stepgate_credentials_usable{provider}`: 1 when usable credentials are held.
    pub usable: Family<ProviderLabels, Gauge>,
}

/// Metrics of the audit writer.
#[derive(Clone)]
pub struct AuditMetrics {
    /// `stepgate_audit_records_total`.
    pub records: Counter,
    /// `stepgate_audit_batch_records`: records per group commit.
    pub batch_size: Histogram,
    /// `stepgate_audit_flush_seconds`: write + fdatasync per batch.
    pub flush_seconds: Histogram,
    /// `stepgate_audit_failures_total`: batches that failed to write.
    pub failures: Counter,
    /// `stepgate_audit_batches_total`: group commits.
    pub batches: Counter,
    /// `stepgate_audit_checkpoints_total`: journal checkpoints (the live log synced and that
    /// recorded in the journal).
    pub checkpoints: Counter,
    /// `stepgate_audit_checkpoint_failures_total`: checkpoints that failed (the ring then fills
    /// and batches go to the live log, or fail).
    pub checkpoint_failures: Counter,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        Self {
            records: Counter::default(),
            batch_size: Histogram::new([
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
            ]),
            flush_seconds: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
            ]),
            failures: Counter::default(),
            batches: Counter::default(),
            checkpoints: Counter::default(),
            checkpoint_failures: Counter::default(),
        }
    }
}

impl AuditMetrics {
    /// One successful group commit.
    pub fn observe_batch(&self, n: usize, took: std::time::Duration) {
        self.records.inc_by(n as u64);
        self.batches.inc();
        self.batch_size.observe(n as f64);
        self.flush_seconds.observe(took.as_secs_f64());
    }
}

/// All metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// `stepgate_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `stepgate_decisions_total`.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Audit writer metrics.
    pub audit: AuditMetrics,
    /// `stepgate_policy_reloads_total{result}`.
    pub policy_reloads: Family<ResultLabels, Counter>,
    /// `stepgate_upstream_duration_seconds`.
    pub upstream_seconds: Histogram,
    /// Credential providers.
    pub credentials: CredentialMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        let audit = AuditMetrics::default();
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "stepgate_policy_reloads",
            "Policy reloads by result",
            policy_reloads.clone(),
        );
        let upstream_seconds = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "stepgate_requests",
            "API requests by action and status",
            requests.clone(),
        );
        registry.register(
            "stepgate_decisions",
            "Authorization decisions",
            decisions.clone(),
        );
        for (name, help, counter) in [
            (
                "stepgate_audit_records",
                "Audit records made durable",
                &audit.records,
            ),
            (
                "stepgate_audit_batches",
                "Audit group commits",
                &audit.batches,
            ),
            (
                "stepgate_audit_failures",
                "Audit batches that failed to write",
                &audit.failures,
            ),
            (
                "stepgate_audit_checkpoints",
                "Audit journal checkpoints: the live log synced and that recorded in the journal",
                &audit.checkpoints,
            ),
            (
                "stepgate_audit_checkpoint_failures",
                "Audit journal checkpoints that failed",
                &audit.checkpoint_failures,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "stepgate_audit_batch_records",
            "Records per audit group commit",
            audit.batch_size.clone(),
        );
        registry.register(
            "stepgate_audit_flush_seconds",
            "Audit write and fdatasync per batch",
            audit.flush_seconds.clone(),
        );
        registry.register(
            "stepgate_upstream_duration_seconds",
            "Upstream call latency",
            upstream_seconds.clone(),
        );
        let credentials = CredentialMetrics::default();
        registry.register(
            "stepgate_credentials_expiry_seconds",
            "Seconds until a provider's held credentials expire",
            credentials.expiry_seconds.clone(),
        );
        registry.register(
            "stepgate_credentials_refresh_failures",
            "Failed credential fetches per provider",
            credentials.refresh_failures.clone(),
        );
        registry.register(
            "stepgate_credentials_usable",
            "1 when a provider holds usable credentials",
            credentials.usable.clone(),
        );
        Self {
            credentials,
            registry: Mutex::new(registry),
            requests,
            decisions,
            audit,
            policy_reloads,
            upstream_seconds,
        }
    }
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }
}

/// One readiness check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    /// Overall.
    pub ready: bool,
    /// Audit log writable.
    pub audit: bool,
    /// Policies loaded.
    pub policies: bool,
    /// Per issuer: keys fetched at least once.
    pub issuers: std::collections::BTreeMap<String, bool>,
    /// Per credential provider: usable credentials held.
    pub credentials: std::collections::BTreeMap<String, bool>,
}
