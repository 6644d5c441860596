//! The rules file: which alerts run which fix, for which target, with which options.
//!
//! TOML (documented in `doc/serve.md`). Each `[[rule]]` has label matchers, a fix module, and
//! where the host, the service and each ModuleOption come from: a literal, an alert label or an
//! annotation. Label values only ever become option *data* in the SurvivorFixData request (or
//! the host and service names, which are checked like lock names); they are never part of a
//! command line (Survivor rule 6). The first rule that matches an alert decides.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::{Document, FixData};
use serde::Deserialize;

use super::alertmanager::Alert;
use super::ServeError;
use crate::supervise::{BadLockLevel, CgroupError, LockLevel};

/// What is wrong with a rules file; one line, naming the rule.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// Not TOML, or not the rules file's shape.
    #[error("line {line}: {message}")]
    Toml {
        /// The line.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// No rule at all.
    #[error("no [[rule]]: nothing would ever run")]
    NoRules,
    /// A time that is no number of seconds.
    #[error("{what} = {value} is not a number of seconds")]
    Seconds {
        /// The field.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// A module named neither by NAME nor by an absolute path.
    #[error("module '{name}' must be a NAME (looked up as {}/fix/NAME) or an absolute path", .dir.display())]
    ModuleName {
        /// The name as given.
        name: String,
        /// The module directory.
        dir: PathBuf,
    },
    /// The module cannot be found or resolved.
    #[error("module {}: {source}", .path.display())]
    Module {
        /// The module.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The module is no executable file.
    #[error("module {} is not executable", .path.display())]
    NotExecutable {
        /// The module.
        path: PathBuf,
    },
    /// An option name the protocol does not allow.
    #[error(
        "option name '{0}' is not allowed (letters, digits, '_', '-', '.'; not 'module' or '_...')"
    )]
    OptionName(String),
    /// A lock level that is none of the four.
    #[error(transparent)]
    Lock(#[from] BadLockLevel),
    /// A resource limit that cannot be read.
    #[error(transparent)]
    Limit(#[from] CgroupError),
    /// What is wrong with one rule.
    #[error("rule '{rule}': {source}")]
    InRule {
        /// The rule's name.
        rule: String,
        /// What is wrong.
        #[source]
        source: Box<RuleError>,
    },
}

/// A host or service name refused as a lock and fixhistory name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} '{}' is refused: {why}", .name.escape_debug())]
pub struct BadTargetName {
    /// `host` or `service`.
    pub what: &'static str,
    /// The name.
    pub name: String,
    /// Why.
    pub why: &'static str,
}

/// Why a rule cannot make a fix of an alert (recorded as the alert's `rejected` reason).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The alert lacks what names the host or the service.
    #[error("no {what}: the alert has no {from}")]
    Missing {
        /// `host` or `service`.
        what: &'static str,
        /// Where it was to come from.
        from: String,
    },
    /// The host or service cannot be a lock name.
    #[error(transparent)]
    Target(#[from] BadTargetName),
    /// The request document cannot be written (a value XML cannot carry).
    #[error("cannot write the request: {0}")]
    Request(#[from] protocol::WriteError),
}

/// The module directory when none is given: `PREFIX/mod`, as the original's `-m`. `PREFIX` is
/// `/usr/local` unless the build sets `DISCO_PREFIX` (the autotools build does).
pub fn default_module_dir() -> PathBuf {
    PathBuf::from(option_env!("DISCO_PREFIX").unwrap_or("/usr/local")).join("mod")
}

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
    fn as_slice(&self) -> &[T] {
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
struct RawFile {
    cooldown: Option<f64>,
    storm_limit: Option<u32>,
    storm_window: Option<f64>,
    timeout: Option<f64>,
    module_dir: Option<PathBuf>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    #[serde(default, rename = "match")]
    matchers: BTreeMap<String, OneOrMany<String>>,
    module: String,
    host: Option<Source>,
    service: Option<Source>,
    timeout: Option<f64>,
    lock: Option<String>,
    cooldown: Option<f64>,
    storm_limit: Option<u32>,
    storm_window: Option<f64>,
    memory_max: Option<Amount>,
    pids_max: Option<Amount>,
    cpu_max: Option<Amount>,
    #[serde(default)]
    options: BTreeMap<String, OneOrMany<Source>>,
}

/// A limit as the file gives it: a number, or a string (`"64M"`, `"50%"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Amount {
    Number(u64),
    Text(String),
}

impl Amount {
    fn text(&self) -> String {
        match self {
            Amount::Number(n) => n.to_string(),
            Amount::Text(s) => s.clone(),
        }
    }
}

/// A rule's resource limits (`memory_max`, `pids_max`, `cpu_max`), read as `disco fix` reads
/// `--memory-max`, `--pids-max`, `--cpu-max`.
fn resources(r: &RawRule) -> Result<crate::supervise::Limits, CgroupError> {
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

/// One rule, checked and with its module resolved.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Its name (`rule N` when the file gives none), recorded with every fix it makes.
    pub name: String,
    /// Label name → accepted values; every matcher must hold.
    pub matchers: BTreeMap<String, Vec<String>>,
    /// The module's absolute path.
    pub module: PathBuf,
    /// Where the host comes from.
    pub host: Source,
    /// Where the service comes from.
    pub service: Source,
    /// The fix's timeout.
    pub timeout: Duration,
    /// The lock level.
    pub lock: LockLevel,
    /// Dedup and storm settings.
    pub limits: Limits,
    /// The fix's resource limits (its cgroup's).
    pub resources: crate::supervise::Limits,
    /// Option name → its values' sources.
    pub options: Vec<(String, Vec<Source>)>,
}

/// A checked rules file.
#[derive(Clone, Debug)]
pub struct Rules {
    /// The rules, in file order.
    pub rules: Vec<Rule>,
    /// The longest cool-down or storm window of any rule: how far back a restart looks in the
    /// history to rebuild dispatch state.
    pub horizon: Duration,
}

/// What one alert asks for, once a rule matched.
#[derive(Clone, Debug)]
pub struct Planned {
    /// The rule's name.
    pub rule: String,
    /// The module to run.
    pub module: PathBuf,
    /// The target host.
    pub host: String,
    /// The target service.
    pub service: String,
    /// The options, name → values, as recorded in the history.
    pub options: BTreeMap<String, Vec<String>>,
    /// The SurvivorFixData document.
    pub request: Vec<u8>,
    /// The timeout.
    pub timeout: Duration,
    /// The lock level.
    pub lock: LockLevel,
    /// Dedup and storm settings.
    pub limits: Limits,
    /// The fix's resource limits (its cgroup's).
    pub resources: crate::supervise::Limits,
}

fn seconds(what: &'static str, v: f64) -> Result<Duration, RuleError> {
    if !v.is_finite() || !(0.0..=1e9).contains(&v) {
        return Err(RuleError::Seconds { what, value: v });
    }
    Ok(Duration::from_secs_f64(v))
}

/// `db1:9100` → `db1`, `[::1]:9100` → `::1`, `db1` → `db1`; a bare IPv6 address is left alone.
pub fn strip_port(instance: &str) -> &str {
    if let Some(rest) = instance.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match instance.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => instance,
    }
}

/// Checks that `name` can name a lock file and a fixhistory folder: the host's own rules
/// (no `/`, NUL or leading `.`, no `@` in a host), plus no control characters.
pub fn check_target_name(what: &'static str, name: &str) -> Result<(), BadTargetName> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.contains('/') || name.contains('\0') {
        "it holds '/' or NUL"
    } else if name.starts_with('.') {
        "it starts with '.'"
    } else if what == "host" && name.contains('@') {
        "it holds '@'"
    } else if name.chars().any(char::is_control) {
        "it holds a control character"
    } else if name.len() > 255 {
        "it is longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(BadTargetName {
        what,
        name: name.to_owned(),
        why,
    })
}

/// Resolves a rule's module: an absolute path, or a NAME looked up as `DIR/fix/NAME` only.
pub fn resolve_module(module_dir: &Path, name: &str) -> Result<PathBuf, RuleError> {
    let path = if Path::new(name).is_absolute() {
        PathBuf::from(name)
    } else if name.contains('/') || name.is_empty() || name.starts_with('.') {
        return Err(RuleError::ModuleName {
            name: name.to_owned(),
            dir: module_dir.to_owned(),
        });
    } else {
        module_dir.join("fix").join(name)
    };
    let gone = |e: std::io::Error| RuleError::Module {
        path: path.clone(),
        // The kind alone ("entity not found"), as the path says the rest.
        source: std::io::Error::from(e.kind()),
    };
    let meta = std::fs::metadata(&path).map_err(gone)?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(RuleError::NotExecutable { path });
    }
    // Absolute, so that history and fixes name it the same whatever the working directory.
    std::path::absolute(&path).map_err(|source| RuleError::Module {
        path: path.clone(),
        source,
    })
}

impl Source {
    fn describe(&self) -> String {
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

impl Rules {
    /// Reads and checks `path`; `module_dir` is where module NAMEs are looked up unless the file
    /// says otherwise. An unknown module, a bad option name or lock level is an error here, at
    /// start, never at the first alert.
    pub fn load(path: &Path, module_dir: &Path) -> Result<Rules, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::Read {
            path: path.to_owned(),
            source,
        })?;
        Rules::parse(&text, module_dir).map_err(|source| ServeError::Rules {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses and checks the text of a rules file.
    pub fn parse(text: &str, module_dir: &Path) -> Result<Rules, RuleError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            // toml's Display spans several lines (a snippet); keep one: the place and the why.
            let line = e.span().map_or(0, |sp| {
                text[..sp.start.min(text.len())].matches('\n').count() + 1
            });
            RuleError::Toml {
                line,
                message: e.message().trim().to_owned(),
            }
        })?;
        let secs = |what: &'static str, v: Option<f64>, default: Duration| {
            v.map_or(Ok(default), |v| seconds(what, v))
        };
        let base = Limits {
            cooldown: secs("cooldown", raw.cooldown, Limits::default().cooldown)?,
            storm_limit: raw.storm_limit.unwrap_or(Limits::default().storm_limit),
            storm_window: secs(
                "storm_window",
                raw.storm_window,
                Limits::default().storm_window,
            )?,
        };
        let timeout = secs("timeout", raw.timeout, crate::supervise::DEFAULT_TIMEOUT)?;
        let module_dir = raw.module_dir.as_deref().unwrap_or(module_dir);
        if raw.rules.is_empty() {
            return Err(RuleError::NoRules);
        }
        let mut rules = Vec::new();
        let mut horizon = Duration::ZERO;
        for (i, r) in raw.rules.into_iter().enumerate() {
            let name = r.name.clone().unwrap_or_else(|| format!("rule {}", i + 1));
            let ctx = |e: RuleError| RuleError::InRule {
                rule: name.clone(),
                source: Box::new(e),
            };
            let module = resolve_module(module_dir, &r.module).map_err(ctx)?;
            let resources = resources(&r).map_err(|e| ctx(e.into()))?;
            let limits = Limits {
                cooldown: secs("cooldown", r.cooldown, base.cooldown).map_err(ctx)?,
                storm_limit: r.storm_limit.unwrap_or(base.storm_limit),
                storm_window: secs("storm_window", r.storm_window, base.storm_window)
                    .map_err(ctx)?,
            };
            horizon = horizon.max(limits.cooldown).max(limits.storm_window);
            let lock = match &r.lock {
                Some(l) => l.parse().map_err(|e: BadLockLevel| ctx(e.into()))?,
                None => LockLevel::ServiceAtHost,
            };
            let mut options = Vec::new();
            for (opt, sources) in r.options {
                if !protocol::options::is_valid_option_name(&opt)
                    || protocol::options::is_reserved_option_name(&opt)
                {
                    return Err(ctx(RuleError::OptionName(opt)));
                }
                options.push((opt, sources.as_slice().to_vec()));
            }
            let default_service = module
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            rules.push(Rule {
                name: name.clone(),
                matchers: r
                    .matchers
                    .into_iter()
                    .map(|(k, v)| (k, v.as_slice().to_vec()))
                    .collect(),
                module,
                host: r.host.unwrap_or(Source::Label(FromLabel {
                    label: "instance".to_owned(),
                    strip_port: true,
                })),
                service: r.service.unwrap_or(Source::Literal(default_service)),
                timeout: secs("timeout", r.timeout, timeout).map_err(ctx)?,
                lock,
                limits,
                resources,
                options,
            });
        }
        Ok(Rules { rules, horizon })
    }

    /// The first rule whose matchers all hold for `alert`.
    pub fn find(&self, alert: &Alert) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(alert))
    }
}

impl Rule {
    /// Whether every matcher holds: the label exists and has one of the listed values.
    pub fn matches(&self, alert: &Alert) -> bool {
        self.matchers
            .iter()
            .all(|(k, vs)| alert.labels.get(k).is_some_and(|v| vs.contains(v)))
    }

    /// The fix this rule makes of `alert`, or why it cannot make one (a missing label, a host
    /// name that cannot be a lock name, a value XML cannot carry).
    pub fn plan(&self, alert: &Alert) -> Result<Planned, PlanError> {
        let host = self.host.value(alert).ok_or_else(|| PlanError::Missing {
            what: "host",
            from: self.host.describe(),
        })?;
        let service = self
            .service
            .value(alert)
            .ok_or_else(|| PlanError::Missing {
                what: "service",
                from: self.service.describe(),
            })?;
        check_target_name("host", &host)?;
        check_target_name("service", &service)?;
        let mut data = FixData {
            // <Timeout> is whole seconds; round up so the module never thinks it has less.
            timeout: Some(self.timeout.as_secs() + u64::from(self.timeout.subsec_nanos() > 0)),
            ..FixData::default()
        };
        let mut options = BTreeMap::new();
        for (name, sources) in &self.options {
            for source in sources {
                // A missing label leaves the option out; the module says whether it needs it.
                if let Some(value) = source.value(alert) {
                    data.options.push(name.clone(), value.clone());
                    options
                        .entry(name.clone())
                        .or_insert_with(Vec::new)
                        .push(value);
                }
            }
        }
        let request = data.to_xml().map_err(PlanError::Request)?;
        Ok(Planned {
            rule: self.name.clone(),
            module: self.module.clone(),
            host,
            service,
            options,
            request,
            timeout: self.timeout,
            lock: self.lock,
            limits: self.limits,
            resources: self.resources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("db1:9100"), "db1");
        assert_eq!(strip_port("10.0.0.1:9100"), "10.0.0.1");
        assert_eq!(strip_port("[::1]:9100"), "::1");
        assert_eq!(strip_port("db1"), "db1");
        assert_eq!(strip_port("fe80::1"), "fe80::1");
    }

    #[test]
    fn a_rule_plans_options_from_labels_verbatim() {
        let rules = Rules::parse(
            r#"
            [[rule]]
            name = "r"
            match = { alertname = ["Down", "Gone"] }
            module = "/bin/sh"
            service = "web"
            options = { service = { label = "job" }, note = { annotation = "summary" }, x = ["a", "b"] }
            "#,
            Path::new("/nonexistent"),
        )
        .unwrap();
        let mut alert = Alert::default();
        alert.labels.insert("alertname".into(), "Gone".into());
        alert.labels.insert("instance".into(), "web1:80".into());
        alert.labels.insert("job".into(), "nginx; rm -rf /".into());
        let rule = rules.find(&alert).unwrap();
        let p = rule.plan(&alert).unwrap();
        assert_eq!(p.host, "web1");
        assert_eq!(p.options["service"], vec!["nginx; rm -rf /"]);
        assert_eq!(p.options["x"], vec!["a", "b"]);
        assert!(!p.options.contains_key("note"));
        alert.labels.insert("alertname".into(), "Other".into());
        assert!(rules.find(&alert).is_none());
    }

    #[test]
    fn unknown_modules_and_keys_are_errors() {
        let e = Rules::parse("[[rule]]\nmodule = \"nope\"\n", Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/fix/nope"), "{e}");
        let e = Rules::parse(
            "[[rule]]\nmodule = \"/bin/sh\"\nmatchh = {}\n",
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("matchh"), "{e}");
        let e = Rules::parse("[[rule]]\nmodule = \"a/b\"\n", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("NAME"), "{e}");
    }

    #[test]
    fn a_rule_carries_its_resource_limits() {
        let rules = Rules::parse(
            "[[rule]]\nmodule = \"/bin/sh\"\nmemory_max = \"64M\"\npids_max = 32\ncpu_max = \"50%\"\n\
             [[rule]]\nmodule = \"/bin/sh\"\nmemory_max = 134217728\n",
            Path::new("/"),
        )
        .unwrap();
        let r = &rules.rules[0].resources;
        assert_eq!(
            (r.memory_max, r.pids_max, r.cpu_max),
            (Some(64 << 20), Some(32), Some(50))
        );
        let r = &rules.rules[1].resources;
        assert_eq!(
            (r.memory_max, r.pids_max, r.cpu_max),
            (Some(128 << 20), None, None)
        );
        let mut alert = Alert::default();
        alert.labels.insert("instance".into(), "db1".into());
        assert_eq!(
            rules.rules[0].plan(&alert).unwrap().resources.pids_max,
            Some(32)
        );
        for (field, value) in [
            ("pids_max", "0"),
            ("memory_max", "\"5X\""),
            ("cpu_max", "\"0\""),
        ] {
            let e = Rules::parse(
                &format!("[[rule]]\nname = \"lim\"\nmodule = \"/bin/sh\"\n{field} = {value}\n"),
                Path::new("/"),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.starts_with(&format!("rule 'lim': invalid {field}")),
                "{e}"
            );
        }
    }
}
