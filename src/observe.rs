//! Observability: `/metrics` (Prometheus text), `/healthz`, `/readyz`.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a finished API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Action (`start`, ... or `none`).
    pub action: String,
    /// HTTP status.
    pub status: u16,
}

/// Labels of an authorization decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `allow` or `deny`.
    pub decision: String,
}

/// All metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// `stepgate_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `stepgate_decisions_total`.
    pub decisions: Family<DecisionLabels, Counter>,
    /// `stepgate_audit_failures_total`.
    pub audit_failures: Counter,
    /// `stepgate_upstream_duration_seconds`.
    pub upstream_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        let audit_failures = Counter::default();
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
        registry.register(
            "stepgate_audit_failures",
            "Audit writes that failed",
            audit_failures.clone(),
        );
        registry.register(
            "stepgate_upstream_duration_seconds",
            "Upstream call latency",
            upstream_seconds.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            decisions,
            audit_failures,
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
}
