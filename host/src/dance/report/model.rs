//! The report as data: every step of a dance with its figures and outcome, every module's
//! result; what is saved, rendered as text (`text.rs`) and as JSON (`dance/schema.rs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::ReturnCode;
use serde::{Deserialize, Serialize};

use crate::supervise::{Exit, FixOutcome};

use super::Usage;

/// One measured step of a dance: a fetch, a template, a script, a diff...
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The module it belongs to, or [`INTERNAL`] for dance-wide steps.
    pub module: String,
    /// What it was: `fetch_params`, `fetch`, `template`, `exec`, `diff`, `merge`...
    pub step: String,
    /// What it worked on when the step repeats within a module: the template's path
    /// (`etc/othermodule/stuff.cfg`) or the script's name (`00-hello.sh`).
    pub item: Option<String>,
    /// What it cost.
    pub usage: Usage,
    /// The process's exit status (128 + N for a process killed by signal N, as shells say);
    /// `None` for in-process steps and processes never started.
    pub exit: Option<i32>,
    /// The ReturnCode the host decided for a script.
    pub return_code: Option<u16>,
    /// Its name (`MODEXEC_OK`...) when it has one.
    pub return_code_name: Option<String>,
    /// The rules the script broke, as `kind: detail`.
    pub violations: Vec<String>,
    /// In noop, the connections it attempted (`tcp 127.0.0.1:5432`), which reached nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub would_connect: Vec<String>,
    /// The service commands the shims trapped while it ran: in noop those that would have
    /// run, live those deferred until after the merge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trapped: Vec<String>,
    /// When it started, milliseconds since the epoch.
    #[serde(default)]
    pub start_unix_ms: u64,
    /// Whether the step succeeded.
    pub ok: bool,
    /// What the fix's cgroup measured, for a step run by the fix-module host with a cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<StepCgroup>,
}

/// What a fix's cgroup measured (see [`crate::supervise::CgroupUsage`]), in whole units so that
/// a step stays comparable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCgroup {
    /// User CPU time of every member, µs.
    pub cpu_user_us: u64,
    /// System CPU time of every member, µs.
    pub cpu_system_us: u64,
    /// Peak memory of the members together, bytes, where a memory controller measured it.
    pub memory_peak_bytes: Option<u64>,
    /// Peak number of processes, where a pids controller measured it.
    pub pids_peak: Option<u64>,
    /// Processes the host killed (timeout, leaked handles, a limit).
    pub killed: u64,
}

/// Now, in milliseconds since the epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// When a step that took `real` and ends now started.
pub(super) fn started(real: Duration) -> u64 {
    unix_ms().saturating_sub(u64::try_from(real.as_millis()).unwrap_or(0))
}

impl Step {
    /// A step done in-process (or a process with no ReturnCode), measured as `usage`.
    pub fn new(
        module: impl Into<String>,
        step: impl Into<String>,
        item: Option<String>,
        usage: Usage,
        ok: bool,
    ) -> Step {
        Step {
            module: module.into(),
            step: step.into(),
            item,
            usage,
            exit: None,
            return_code: None,
            return_code_name: None,
            violations: Vec::new(),
            would_connect: Vec::new(),
            trapped: Vec::new(),
            start_unix_ms: started(usage.real),
            ok,
            cgroup: None,
        }
    }

    /// A script run by the fix-module host: its figures, exit status, ReturnCode and
    /// violations. It is ok when the code is `MODEXEC_OK` and no rule was broken (processes
    /// left running as proper daemons are not violations).
    pub fn from_fix(
        module: impl Into<String>,
        step: impl Into<String>,
        item: Option<String>,
        outcome: &FixOutcome,
    ) -> Step {
        let exit = match outcome.exit {
            Exit::Code(c) => Some(c),
            Exit::Signal(s) => Some(128 + s),
            Exit::NotRun => None,
        };
        Step {
            module: module.into(),
            step: step.into(),
            item,
            usage: Usage::from_rusage(&outcome.rusage, outcome.duration),
            exit,
            return_code: Some(outcome.return_code.value()),
            return_code_name: outcome.return_code.name().map(str::to_owned),
            violations: outcome
                .violations
                .iter()
                .map(|v| format!("{}: {}", v.kind, v.detail))
                .collect(),
            would_connect: Vec::new(),
            trapped: crate::sandbox::shims::trapped(&outcome.stderr_tail),
            start_unix_ms: started(outcome.duration),
            ok: outcome.return_code == ReturnCode::OK && outcome.violations.is_empty(),
            cgroup: outcome.cgroup.map(|c| StepCgroup {
                cpu_user_us: (c.cpu_user_ms * 1000.0) as u64,
                cpu_system_us: (c.cpu_system_ms * 1000.0) as u64,
                memory_peak_bytes: c.memory_peak_bytes,
                pids_peak: c.pids_peak,
                killed: outcome.killed as u64,
            }),
        }
    }
}

/// Why a piece that the host ran failed, in one line: its ReturnCode and comment, and, when
/// the ReturnCode alone says OK, the violations that failed it (an output over its bound, say).
pub fn describe_failure(outcome: &FixOutcome) -> String {
    let mut s = format!("ReturnCode {}", outcome.return_code);
    if !outcome.comment.is_empty() {
        s.push_str(&format!(": {}", outcome.comment));
    }
    for v in &outcome.violations {
        s.push_str(&format!("; {}: {}", v.kind, v.detail));
    }
    s
}

/// How a module's part of the dance ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModuleStatus {
    /// Every step succeeded.
    Ok,
    /// A step failed.
    Failed {
        /// Which step, and how.
        reason: String,
    },
    /// It did not run.
    Skipped {
        /// Why (a module it requires failed...).
        reason: String,
    },
}

/// One module of the dance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleResult {
    /// Its name (`testmodule-1.0`).
    pub name: String,
    /// How it ended.
    pub status: ModuleStatus,
    /// Paths it created, modified and deleted.
    pub changes: (usize, usize, usize),
    /// Each of those changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<crate::diff::Change>,
}

/// Everything one dance did and cost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DanceReport {
    /// Its id, a sortable timestamp (`1795387035.799595-14937`, see [`new_id`]).
    pub id: String,
    /// The node it configured.
    pub node: String,
    /// Whether it was a noop dance.
    pub noop: bool,
    /// When it started, seconds since the epoch.
    pub started_unix: u64,
    /// When it started, milliseconds since the epoch (0 in reports of older discos).
    #[serde(default)]
    pub started_unix_ms: u64,
    /// How long it took.
    pub duration: Duration,
    /// Its modules, in run order.
    pub modules: Vec<ModuleResult>,
    /// Its steps, in run order.
    pub steps: Vec<Step>,
    /// Whether every module succeeded.
    pub ok: bool,
}

impl DanceReport {
    /// When it started, in milliseconds since the epoch.
    pub fn started_unix_ms(&self) -> u64 {
        if self.started_unix_ms > 0 {
            self.started_unix_ms
        } else {
            self.started_unix * 1000
        }
    }

    /// How many modules succeeded, failed and were skipped.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.modules
            .iter()
            .fold((0, 0, 0), |(ok, failed, skipped), m| match m.status {
                ModuleStatus::Ok => (ok + 1, failed, skipped),
                ModuleStatus::Failed { .. } => (ok, failed + 1, skipped),
                ModuleStatus::Skipped { .. } => (ok, failed, skipped + 1),
            })
    }
}
