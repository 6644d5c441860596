//! The Prometheus exposition, written once for everything disco exports: `disco serve`'s
//! `/metrics` and its textfile, and the dance's textfile. Metrics live in a
//! `prometheus-client` registry and are written by its text encoder (OpenMetrics, which
//! Prometheus scrapes and node_exporter's textfile collector reads); label values go through
//! [`Value`], which escapes them (the crate writes them as given), so a node name or a sink's
//! path with a quote, a backslash or a newline cannot break a line.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::registry::Registry;

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A label value, escaped when written (`\` → `\\`, `"` → `\"`, newline → `\n`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Value(pub String);

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value(s)
    }
}

impl EncodeLabelValue for Value {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A metric's labels, in the order they are written.
pub type Labels = Vec<(&'static str, Value)>;

/// `registry` in the text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in a metric.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!("cannot encode the metrics: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn label_values_are_escaped() {
        let mut r = Registry::default();
        let g: Family<Labels, Gauge> = Family::default();
        r.register("x", "A gauge.", g.clone());
        g.get_or_create(&vec![("node", Value::from("a\"b\\c\nd"))])
            .set(1);
        let text = encode(&r);
        assert!(text.contains("x{node=\"a\\\"b\\\\c\\nd\"} 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
