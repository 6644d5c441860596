//! Counters for `GET /metrics` and the textfile sink, in the Prometheus text format (0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Fix duration buckets, seconds: a fix takes from milliseconds to its timeout.
const DURATION_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 45.0, 120.0, 600.0];
/// Dispatch latency buckets, seconds: the goal is under 20 ms while capacity is free.
const DISPATCH_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 10.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Debug)]
struct Inner {
    requests: BTreeMap<u16, u64>,
    unauthenticated: u64,
    refused_connections: BTreeMap<&'static str, u64>,
    decisions: BTreeMap<&'static str, u64>,
    return_codes: BTreeMap<u32, u64>,
    sink_errors: BTreeMap<String, u64>,
    duration: Histogram,
    dispatch: Histogram,
}

/// The server's counters.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            inner: Mutex::new(Inner {
                requests: BTreeMap::new(),
                unauthenticated: 0,
                refused_connections: BTreeMap::new(),
                decisions: BTreeMap::new(),
                return_codes: BTreeMap::new(),
                sink_errors: BTreeMap::new(),
                duration: Histogram::new(DURATION_BUCKETS),
                dispatch: Histogram::new(DISPATCH_BUCKETS),
            }),
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

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Counts an answered HTTP request.
    pub fn request(&self, status: u16) {
        self.with(|m| *m.requests.entry(status).or_default() += 1);
    }

    /// Counts a request refused for want of the right token (never journaled).
    pub fn unauthenticated(&self) {
        self.with(|m| m.unauthenticated += 1);
    }

    /// Counts a connection closed before any request: over a bound, or a failed handshake.
    pub fn connection_refused(&self, why: &'static str) {
        self.with(|m| *m.refused_connections.entry(why).or_default() += 1);
    }

    /// Counts one alert's decision.
    pub fn decision(&self, decision: &'static str) {
        self.with(|m| *m.decisions.entry(decision).or_default() += 1);
    }

    /// Records a finished fix: its code, how long it took, and how long it waited to start.
    pub fn fix(&self, return_code: u32, duration: f64, dispatch: f64) {
        self.with(|m| {
            *m.return_codes.entry(return_code).or_default() += 1;
            m.duration.observe(duration);
            m.dispatch.observe(dispatch);
        });
    }

    /// Counts a sink that failed.
    pub fn sink_error(&self, sink: &str) {
        self.with(|m| *m.sink_errors.entry(sink.to_owned()).or_default() += 1);
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self, g: Gauges) -> String {
        let mut out = String::new();
        self.with(|m| {
            let counter = |out: &mut String, name: &str, help: &str| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            };
            counter(&mut out, "disco_serve_requests_total", "HTTP requests by status.");
            for (s, n) in &m.requests {
                let _ = writeln!(out, "disco_serve_requests_total{{code=\"{s}\"}} {n}");
            }
            counter(
                &mut out,
                "disco_serve_unauthenticated_total",
                "Requests refused for want of the right bearer token (not journaled).",
            );
            let _ = writeln!(out, "disco_serve_unauthenticated_total {}", m.unauthenticated);
            counter(
                &mut out,
                "disco_serve_refused_connections_total",
                "Connections closed before a request, by reason.",
            );
            for (r, n) in &m.refused_connections {
                let _ = writeln!(
                    out,
                    "disco_serve_refused_connections_total{{reason=\"{r}\"}} {n}"
                );
            }
            counter(
                &mut out,
                "disco_serve_alerts_total",
                "Alerts by decision (queued, deduplicated, suppressed, resolved, unmatched, rejected).",
            );
            for (d, n) in &m.decisions {
                let _ = writeln!(out, "disco_serve_alerts_total{{decision=\"{d}\"}} {n}");
            }
            counter(
                &mut out,
                "disco_serve_fixes_total",
                "Fixes run, by the ReturnCode the host decided.",
            );
            for (c, n) in &m.return_codes {
                let name = protocol::ReturnCode::new(i64::from(*c))
                    .ok()
                    .and_then(|rc| rc.name())
                    .unwrap_or("custom");
                let _ = writeln!(
                    out,
                    "disco_serve_fixes_total{{return_code=\"{c}\",name=\"{}\"}} {n}",
                    escape(name)
                );
            }
            counter(&mut out, "disco_serve_sink_errors_total", "Sink failures by sink.");
            for (s, n) in &m.sink_errors {
                let _ = writeln!(out, "disco_serve_sink_errors_total{{sink=\"{}\"}} {n}", escape(s));
            }
            m.duration.render(
                &mut out,
                "disco_serve_fix_duration_seconds",
                "Wall time of each fix, lock wait included.",
            );
            m.dispatch.render(
                &mut out,
                "disco_serve_dispatch_seconds",
                "Time from the request's arrival to the start of its fix.",
            );
        });
        for (name, help, v) in [
            (
                "disco_serve_queue_length",
                "Fixes queued, not started.",
                g.queued,
            ),
            ("disco_serve_running", "Fixes running.", g.running),
            (
                "disco_serve_max_concurrent",
                "The concurrency limit.",
                g.max_concurrent,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
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
        let text = m.render(Gauges {
            queued: 2,
            running: 1,
            max_concurrent: 4,
        });
        assert!(text.contains("disco_serve_requests_total{code=\"200\"} 1"));
        assert!(text.contains("disco_serve_fixes_total{return_code=\"0\",name=\"MODEXEC_OK\"} 1"));
        assert!(text.contains("disco_serve_dispatch_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("disco_serve_queue_length 2"));
    }
}
