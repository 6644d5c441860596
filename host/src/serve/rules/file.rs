//! The rules file's shape as written (TOML): where each value comes from, the limits, the
//! resources, before they are checked into [`super::Rule`]s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::serve::alertmanager::Alert;
use crate::supervise::CgroupError;

use super::{strip_port, RuleError};

/// Where a value comes from.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Source {
    /// This very string.
    Literal(String),
    /// An alert label.
    Label(FromLabel),
    /// An alert annotation.
    Annotation(FromAnnotation),
}

/// `{ label = "NAME" }`, optionally `strip_port = true` (`db1:9100` → `db1`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromLabel {
    /// The label's name.
    pub label: String,
    /// Drop a trailing `:PORT` (and IPv6 brackets).
    #[serde(default)]
    pub strip_port: bool,
}

/// `{ annotation = "NAME" }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromAnnotation {
    /// The annotation's name.
    pub annotation: String,
}

/// One value or several (a list option repeats its ModuleOption).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// One.
    One(T),
    /// Several.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub(super) fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(x) => std::slice::from_ref(x),
            OneOrMany::Many(v) => v,
        }
    }
}

/// The settings of dispatch; a rule may override each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// The same alert (fingerprint) for the same target within this time is `deduplicated`.
    pub cooldown: Duration,
    /// At most this many fixes for one target in `storm_window`; more are `suppressed`.
    pub storm_limit: u32,
    /// The storm window.
    pub storm_window: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            cooldown: Duration::from_secs(300),
            storm_limit: 3,
            storm_window: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) cooldown: Option<f64>,
    pub(super) storm_limit: Option<u32>,
    pub(super) storm_window: Option<f64>,
    pub(super) timeout: Option<f64>,
    pub(super) module_dir: Option<PathBuf>,
    #[serde(default, rename = "rule")]
    pub(super) rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) name: Option<String>,
    #[serde(default, rename = "match")]
    pub(super) matchers: BTreeMap<String, OneOrMany<String>>,
    pub(super) module: String,
    pub(super) host: Option<Source>,
    pub(super) service: Option<Source>,
    pub(super) timeout: Option<f64>,
    pub(super) lock: Option<String>,
    pub(super) cooldown: Option<f64>,
    pub(super) storm_limit: Option<u32>,
    pub(super) storm_window: Option<f64>,
    pub(super) memory_max: Option<Amount>,
    pub(super) pids_max: Option<Amount>,
    pub(super) cpu_max: Option<Amount>,
    #[serde(default)]
    pub(super) options: BTreeMap<String, OneOrMany<Source>>,
}

/// A limit as the file gives it: a number, or a string (`"64M"`, `"50%"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Amount {
    Number(u64),
    Text(String),
}

impl Amount {
    pub(super) fn text(&self) -> String {
        match self {
            Amount::Number(n) => n.to_string(),
            Amount::Text(s) => s.clone(),
        }
    }
}

/// A rule's resource limits (`memory_max`, `pids_max`, `cpu_max`), read as `disco fix` reads
/// `--memory-max`, `--pids-max`, `--cpu-max`.
pub(super) fn resources(r: &RawRule) -> Result<crate::supervise::Limits, CgroupError> {
    use crate::supervise::{parse_bytes, parse_percent, parse_pids};
    let e = |e: CgroupError| e;
    Ok(crate::supervise::Limits {
        memory_max: r
            .memory_max
            .as_ref()
            .map(|a| parse_bytes("memory_max", &a.text()).map_err(e))
            .transpose()?,
        pids_max: r
            .pids_max
            .as_ref()
            .map(|a| parse_pids("pids_max", &a.text()).map_err(e))
            .transpose()?,
        cpu_max: r
            .cpu_max
            .as_ref()
            .map(|a| parse_percent("cpu_max", &a.text()).map_err(e))
            .transpose()?,
    })
}

pub(super) fn seconds(what: &'static str, v: f64) -> Result<Duration, RuleError> {
    if !v.is_finite() || !(0.0..=1e9).contains(&v) {
        return Err(RuleError::Seconds { what, value: v });
    }
    Ok(Duration::from_secs_f64(v))
}

impl Source {
    pub(super) fn describe(&self) -> String {
        match self {
            Source::Literal(s) => format!("'{s}'"),
            Source::Label(l) => format!("label '{}'", l.label),
            Source::Annotation(a) => format!("annotation '{}'", a.annotation),
        }
    }

    /// The value for `alert`, or `None` when its label or annotation is missing.
    pub fn value(&self, alert: &Alert) -> Option<String> {
        match self {
            Source::Literal(s) => Some(s.clone()),
            Source::Label(l) => alert.labels.get(&l.label).map(|v| {
                if l.strip_port {
                    strip_port(v).to_owned()
                } else {
                    v.clone()
                }
            }),
            Source::Annotation(a) => alert.annotations.get(&a.annotation).cloned(),
        }
    }
}
