//! Prometheus metrics, served at `/metrics` in the text exposition format.
//!
//! One registry per server (not a global), so tests that run several servers in one process see
//! their own numbers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of HTTP request metrics: the route template (never the raw path, which would carry
/// device ids), the method and the status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template, e.g. `/v1/devices/{id}/check-in`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Status code.
    pub status: u16,
}

/// Labels of device event counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// Event kind.
    pub kind: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Check-ins answered.
    pub check_ins: Counter,
    /// Reports stored.
    pub reports: Counter,
    /// Events stored, by kind.
    pub events: Family<EventLabels, Counter>,
    /// Artifact bytes sent.
    pub artifact_bytes: Counter,
    /// Device fact rows written by the flusher.
    pub facts_flushed: Counter,
    /// Duration of each fact flush.
    pub flush_seconds: Histogram,
    /// Requests, by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency, by route.
    pub request_seconds: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fota");
        let m = Self {
            check_ins: Counter::default(),
            reports: Counter::default(),
            events: Family::default(),
            artifact_bytes: Counter::default(),
            facts_flushed: Counter::default(),
            flush_seconds: latency_histogram(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            registry: Registry::default(),
        };
        registry.register(
            "check_ins",
            "Device check-ins answered",
            m.check_ins.clone(),
        );
        registry.register("reports", "Device reports stored", m.reports.clone());
        registry.register("events", "Device events stored, by kind", m.events.clone());
        registry.register(
            "artifact_bytes_served",
            "Artifact bytes sent",
            m.artifact_bytes.clone(),
        );
        registry.register(
            "device_facts_flushed",
            "Device fact rows written",
            m.facts_flushed.clone(),
        );
        registry.register(
            "facts_flush_seconds",
            "Duration of a fact flush",
            m.flush_seconds.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route, method, status",
            m.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.request_seconds.clone(),
        );
        Self { registry, ..m }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
