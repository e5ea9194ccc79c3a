//! Prometheus metrics, served at `/metrics` in the text exposition format.
//!
//! One registry per server (not a global), so tests that run several servers in one process see
//! their own numbers.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

/// Labels of HTTP request metrics: the route template (never the raw path, which would carry
/// device ids), the method and the status code. Built without allocating: the route is an
/// interned string and the method an enum, because every request records them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template, e.g. `/v1/devices/{id}/check-in`.
    pub route: Route,
    /// HTTP method.
    pub method: Method,
    /// Status code.
    pub status: u16,
}

/// An interned route template.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Route(pub Arc<str>);

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// HTTP methods fota serves.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum Method {
    /// GET.
    GET,
    /// HEAD.
    HEAD,
    /// POST.
    POST,
    /// PUT.
    PUT,
    /// DELETE.
    DELETE,
    /// Anything else.
    OTHER,
}

impl From<&axum::http::Method> for Method {
    fn from(m: &axum::http::Method) -> Self {
        match *m {
            axum::http::Method::GET => Method::GET,
            axum::http::Method::HEAD => Method::HEAD,
            axum::http::Method::POST => Method::POST,
            axum::http::Method::PUT => Method::PUT,
            axum::http::Method::DELETE => Method::DELETE,
            _ => Method::OTHER,
        }
    }
}

/// Route templates seen so far, so each request's label is a lookup, not an allocation.
#[derive(Debug, Default)]
pub struct RouteNames(RwLock<HashMap<String, Arc<str>>>);

impl RouteNames {
    /// The interned name of `route`.
    pub fn intern(&self, route: &str) -> Route {
        if let Some(r) = self.0.read().unwrap_or_else(|p| p.into_inner()).get(route) {
            return Route(r.clone());
        }
        let mut names = self.0.write().unwrap_or_else(|p| p.into_inner());
        Route(
            names
                .entry(route.to_string())
                .or_insert_with(|| route.into())
                .clone(),
        )
    }
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
    /// Check-ins answered while the database was unavailable (from memory, without an offer).
    pub check_ins_without_database: Counter,
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
    /// Interned route names for the labels above.
    pub routes: RouteNames,
    /// 1 while the MQTT link is up, 0 while it is down or connecting (absent without MQTT).
    pub mqtt_connected: Gauge,
    /// Reports received over MQTT and stored.
    pub mqtt_reports: Counter,
    /// MQTT publishes dropped, by reason (topic, too_large, malformed, unknown_device).
    pub mqtt_dropped: Family<DropLabels, Counter>,
    /// Commands (nudges, stops) published to devices.
    pub mqtt_commands: Counter,
    /// Rollout statuses computed for the dashboard's event streams (one per rollout per change
    /// or tick, whatever the number of streams watching it).
    pub live_statuses: Counter,
    /// Unexpected resets per device-hour of each active rollout, on its new release and on the
    /// baseline (refreshed at every scrape).
    pub rollout_reset_rate: Family<RolloutSideLabels, Gauge<f64, AtomicU64>>,
    /// Each active rollout's current reset limit, a ratio to the baseline (0: off).
    pub rollout_reset_limit: Family<RolloutLabels, Gauge<f64, AtomicU64>>,
    /// Each active rollout's gate failure rate and its limit (0-1).
    pub rollout_failure_rate: Family<RolloutSideLabels, Gauge<f64, AtomicU64>>,
}

/// A rollout.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    /// Rollout id.
    pub rollout: i64,
}

/// A rollout and a side of a comparison (`new` / `baseline`, or `observed` / `limit`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutSideLabels {
    /// Rollout id.
    pub rollout: i64,
    /// Which figure.
    pub side: &'static str,
}

/// Why an MQTT publish was dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// The reason.
    pub reason: &'static str,
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
            check_ins_without_database: Counter::default(),
            reports: Counter::default(),
            events: Family::default(),
            artifact_bytes: Counter::default(),
            facts_flushed: Counter::default(),
            flush_seconds: latency_histogram(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            routes: RouteNames::default(),
            mqtt_connected: Gauge::default(),
            mqtt_reports: Counter::default(),
            mqtt_dropped: Family::default(),
            mqtt_commands: Counter::default(),
            live_statuses: Counter::default(),
            rollout_reset_rate: Family::default(),
            rollout_reset_limit: Family::default(),
            rollout_failure_rate: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "check_ins",
            "Device check-ins answered",
            m.check_ins.clone(),
        );
        registry.register(
            "check_ins_without_database",
            "Device check-ins answered from memory while the database was unavailable",
            m.check_ins_without_database.clone(),
        );
        registry.register("reports", "Device reports stored", m.reports.clone());
        registry.register(
            "rollout_unexpected_resets_per_device_hour",
            "Unexpected resets per device-hour of each active rollout: side=new (its release) or baseline (its targets on the old release)",
            m.rollout_reset_rate.clone(),
        );
        registry.register(
            "rollout_reset_ratio_limit",
            "Each active rollout's reset limit, a ratio to the baseline (0: off)",
            m.rollout_reset_limit.clone(),
        );
        registry.register(
            "rollout_failure_rate",
            "Each active rollout's gate failure rate: side=observed or limit",
            m.rollout_failure_rate.clone(),
        );
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
        registry.register(
            "mqtt_connected",
            "1 while the MQTT broker link is up",
            m.mqtt_connected.clone(),
        );
        registry.register(
            "mqtt_reports",
            "Device reports received over MQTT and stored",
            m.mqtt_reports.clone(),
        );
        registry.register(
            "mqtt_dropped",
            "MQTT publishes dropped, by reason",
            m.mqtt_dropped.clone(),
        );
        registry.register(
            "mqtt_commands",
            "Commands (check-in nudges, stops) published to devices",
            m.mqtt_commands.clone(),
        );
        registry.register(
            "dashboard_live_statuses",
            "Rollout statuses computed for the dashboard's event streams, shared by every stream of a rollout",
            m.live_statuses.clone(),
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
