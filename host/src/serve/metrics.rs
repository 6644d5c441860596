//! Counters for `GET /metrics` and the textfile sink, in a `prometheus-client` registry
//! written by [`crate::prom::encode`] (the dance's textfile uses the same encoder).

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::prom::{self, Labels, Value};
use crate::supervise::CgroupUsage;

/// Fix duration buckets, seconds: a fix takes from milliseconds to its timeout.
const DURATION_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 45.0, 120.0, 600.0];
/// Peak memory buckets, bytes: 1 MiB to 4 GiB by fours.
const MEMORY_BUCKETS: &[f64] = &[
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
];
/// Peak process count buckets.
const PIDS_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0];
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
    cpu: Family<Labels, Counter<f64, AtomicU64>>,
    memory_peak: Histogram,
    pids_peak: Histogram,
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
        let cpu = Family::<Labels, Counter<f64, AtomicU64>>::default();
        let memory_peak = Histogram::new(MEMORY_BUCKETS.iter().copied());
        let pids_peak = Histogram::new(PIDS_BUCKETS.iter().copied());
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
            "disco_serve_fix_cpu_seconds",
            "CPU time of every process of the fixes (their cgroups', reparented ones included), by mode.",
            cpu.clone(),
        );
        registry.register(
            "disco_serve_fix_memory_peak_bytes",
            "The most memory each fix's processes used at once (with a memory controller).",
            memory_peak.clone(),
        );
        registry.register(
            "disco_serve_fix_pids_peak",
            "The most processes each fix had at once (with a pids controller).",
            pids_peak.clone(),
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
            cpu,
            memory_peak,
            pids_peak,
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

    /// Records a finished fix: its code, how long it took, how long it waited to start, and
    /// what its cgroup measured.
    pub fn fix(&self, return_code: u32, duration: f64, dispatch: f64, usage: Option<&CgroupUsage>) {
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
        if let Some(u) = usage {
            for (mode, ms) in [("user", u.cpu_user_ms), ("system", u.cpu_system_ms)] {
                self.cpu
                    .get_or_create(&labels("mode", mode))
                    .inc_by(ms / 1000.0);
            }
            if let Some(b) = u.memory_peak_bytes {
                self.memory_peak.observe(b as f64);
            }
            if let Some(n) = u.pids_peak {
                self.pids_peak.observe(n as f64);
            }
        }
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
        m.fix(
            0,
            0.02,
            0.003,
            Some(&CgroupUsage {
                cpu_user_ms: 1500.0,
                cpu_system_ms: 250.0,
                memory_peak_bytes: Some(3 << 20),
                pids_peak: Some(3),
            }),
        );
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
        assert!(
            text.contains("disco_serve_fix_cpu_seconds_total{mode=\"user\"} 1.5"),
            "{text}"
        );
        assert!(text.contains("disco_serve_fix_cpu_seconds_total{mode=\"system\"} 0.25"));
        assert!(text.contains("disco_serve_fix_memory_peak_bytes_bucket{le=\"4194304.0\"} 1"));
        assert!(text.contains("disco_serve_fix_memory_peak_bytes_bucket{le=\"1048576.0\"} 0"));
        assert!(text.contains("disco_serve_fix_pids_peak_bucket{le=\"4.0\"} 1"));
        assert!(text.contains("disco_serve_fix_pids_peak_bucket{le=\"2.0\"} 0"));
        assert!(text.contains("disco_serve_sink_errors_total{sink=\"plugin /a\\\"b\"} 1"));
    }
}
