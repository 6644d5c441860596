//! The rules file: which alerts run which fix, for which target, with which options.
//!
//! TOML (documented in `doc/serve.md`). Each `[[rule]]` has label matchers, a fix module, and
//! where the host, the service and each ModuleOption come from: a literal, an alert label or an
//! annotation. Label values only ever become option *data* in the SurvivorFixData request (or
//! the host and service names, which are checked like lock names); they are never part of a
//! command line (Survivor rule 6). The first rule that matches an alert decides.

mod error;
mod file;
mod names;

pub use error::{BadTargetName, PlanError, RuleError};
use file::{resources, seconds, RawFile};
pub use file::{FromLabel, Limits, Source};
pub use names::{check_target_name, default_module_dir, resolve_module, strip_port};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::{Document, FixData};

use super::alertmanager::Alert;
use super::ServeError;
use crate::supervise::{BadLockLevel, LockLevel};

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
