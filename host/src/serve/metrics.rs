//! Counters for `GET /metrics` and the textfile sink, in a `prometheus-client` registry
//! written by [`crate::prom::encode`] (the dance's textfile uses the same encoder).

use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::prom::{self, Labels, Value};

/// Fix duration buckets, seconds: a fix takes from milliseconds to its timeout.
const DURATION_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 45.0, 120.0, 600.0];
/// Dispatch latency buckets, seconds: the goal is under 20 ms while capacity is free.
const DISPATCH_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 10.0];

/// The server's counters.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    unauthenticated: Counter,
    refused_connections: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
    fixes: Family<Labels, Counter>,
    sink_errors: Family<Labels, Counter>,
    duration: Histogram,
    dispatch: Histogram,
    queued: Gauge,
    running: Gauge,
    max_concurrent: Gauge,
    /// The gauges are set just before encoding: one render at a time.
    render: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        let unauthenticated = Counter::default();
        let refused_connections = Family::<Labels, Counter>::default();
        let decisions = Family::<Labels, Counter>::default();
        let fixes = Family::<Labels, Counter>::default();
        let sink_errors = Family::<Labels, Counter>::default();
        let duration = Histogram::new(DURATION_BUCKETS.iter().copied());
        let dispatch = Histogram::new(DISPATCH_BUCKETS.iter().copied());
        let (queued, running, max_concurrent) = Default::default();
        // Counters are written with `_total` appended.
        registry.register(
            "disco_serve_requests",
            "HTTP requests by status.",
            requests.clone(),
        );
        registry.register(
            "disco_serve_unauthenticated",
            "Requests refused for want of the right bearer token (not journaled).",
            unauthenticated.clone(),
        );
        registry.register(
            "disco_serve_refused_connections",
            "Connections closed before a request, by reason.",
            refused_connections.clone(),
        );
        registry.register(
            "disco_serve_alerts",
            "Alerts by decision (queued, deduplicated, suppressed, resolved, unmatched, rejected).",
            decisions.clone(),
        );
        registry.register(
            "disco_serve_fixes",
            "Fixes run, by the ReturnCode the host decided.",
            fixes.clone(),
        );
        registry.register(
            "disco_serve_sink_errors",
            "Sink failures by sink.",
            sink_errors.clone(),
        );
        registry.register(
            "disco_serve_fix_duration_seconds",
            "Wall time of each fix, lock wait included.",
            duration.clone(),
        );
        registry.register(
            "disco_serve_dispatch_seconds",
            "Time from the request's arrival to the start of its fix.",
            dispatch.clone(),
        );
        registry.register(
            "disco_serve_queue_length",
            "Fixes queued, not started.",
            Gauge::clone(&queued),
        );
        registry.register(
            "disco_serve_running",
            "Fixes running.",
            Gauge::clone(&running),
        );
        registry.register(
            "disco_serve_max_concurrent",
            "The concurrency limit.",
            Gauge::clone(&max_concurrent),
        );
        Metrics {
            registry,
            requests,
            unauthenticated,
            refused_connections,
            decisions,
            fixes,
            sink_errors,
            duration,
            dispatch,
            queued,
            running,
            max_concurrent,
            render: Mutex::new(()),
        }
    }
}

/// Gauges read at render time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    /// Fixes queued, not started.
    pub queued: usize,
    /// Fixes running.
    pub running: usize,
    /// The concurrency limit.
    pub max_concurrent: usize,
}

fn labels(name: &'static str, value: impl Into<Value>) -> Labels {
    vec![(name, value.into())]
}

impl Metrics {
    /// Counts an answered HTTP request.
    pub fn request(&self, status: u16) {
        self.requests
            .get_or_create(&labels("code", status.to_string()))
            .inc();
    }

    /// Counts a request refused for want of the right token (never journaled).
    pub fn unauthenticated(&self) {
        self.unauthenticated.inc();
    }

    /// Counts a connection closed before any request: over a bound, or a failed handshake.
    pub fn connection_refused(&self, why: &'static str) {
        self.refused_connections
            .get_or_create(&labels("reason", why))
            .inc();
    }

    /// Counts one alert's decision.
    pub fn decision(&self, decision: &'static str) {
        self.decisions
            .get_or_create(&labels("decision", decision))
            .inc();
    }

    /// Records a finished fix: its code, how long it took, and how long it waited to start.
    pub fn fix(&self, return_code: u32, duration: f64, dispatch: f64) {
        let name = protocol::ReturnCode::new(i64::from(return_code))
            .ok()
            .and_then(|rc| rc.name())
            .unwrap_or("custom");
        self.fixes
            .get_or_create(&vec![
                ("return_code", Value(return_code.to_string())),
                ("name", Value::from(name)),
            ])
            .inc();
        self.duration.observe(duration);
        self.dispatch.observe(dispatch);
    }

    /// Counts a sink that failed.
    pub fn sink_error(&self, sink: &str) {
        self.sink_errors.get_or_create(&labels("sink", sink)).inc();
    }

    /// Everything, in the text format ([`prom::CONTENT_TYPE`]).
    pub fn render(&self, g: Gauges) -> String {
        let _one = self.render.lock().unwrap_or_else(|e| e.into_inner());
        let int = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.queued.set(int(g.queued));
        self.running.set(int(g.running));
        self.max_concurrent.set(int(g.max_concurrent));
        prom::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.request(200);
        m.decision("queued");
        m.fix(0, 0.02, 0.003);
        m.sink_error("plugin /a\"b");
        let text = m.render(Gauges {
            queued: 2,
            running: 1,
            max_concurrent: 4,
        });
        assert!(
            text.contains("disco_serve_requests_total{code=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("disco_serve_fixes_total{return_code=\"0\",name=\"MODEXEC_OK\"} 1"));
        assert!(text.contains("disco_serve_dispatch_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("disco_serve_queue_length 2"));
        assert!(text.contains("disco_serve_sink_errors_total{sink=\"plugin /a\\\"b\"} 1"));
    }
}
