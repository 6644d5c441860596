//! The dance report: what every step of a dance cost and how it ended, kept under the state
//! directory and printed by `disco report` in the original's format (GNU time's four lines per
//! step, `report: MODULE: STEP`), plus each script's ReturnCode and violations.
//!
//! The dance fills a [`DanceReport`] as it goes: steps that run a process take their figures
//! from wait4(2) ([`Step::from_fix`], [`Usage::from_rusage`]); steps done in-process take a
//! [`SelfUsage`] snapshot before and call [`Usage::of_self_since`] after. [`save`] keeps the
//! newest [`KEEP`] reports as `STATE/reports/<id>.json`; [`load`] reads one back; [`render_text`]
//! and [`super::schema::dance_json`] are pure functions of the report, so they are tested without a dance.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::resource::{getrusage, UsageWho};
use protocol::ReturnCode;
use serde::{Deserialize, Serialize};

use crate::supervise::{Exit, FixOutcome, Rusage};

/// How many reports [`save`] keeps (the newest).
pub const KEEP: usize = 20;

/// The module name of dance-wide steps (`fetch_params`, the final diff...), as in the original.
pub const INTERNAL: &str = "_internal";

/// Resource usage of one step: GNU time's figures, from rusage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall time.
    pub real: Duration,
    /// User CPU time.
    pub user: Duration,
    /// System CPU time.
    pub sys: Duration,
    /// Peak resident set size, KiB.
    pub mem_max_kb: u64,
    /// Page faults that needed I/O.
    pub faults_major: u64,
    /// Page faults served without I/O.
    pub faults_minor: u64,
    /// File system input, in 512-byte blocks.
    pub io_in: u64,
    /// File system output, in 512-byte blocks.
    pub io_out: u64,
    /// Signals received.
    pub signals: u64,
}

/// A count from rusage (a `long`, never negative in practice) as a `u64`.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Usage {
    /// The usage of a process reaped by the supervisor; `real` is its wall time, which wait4(2)
    /// does not report.
    pub fn from_rusage(r: &Rusage, real: Duration) -> Usage {
        let ms = |ms: f64| Duration::try_from_secs_f64(ms / 1000.0).unwrap_or_default();
        Usage {
            real,
            user: ms(r.user_ms),
            sys: ms(r.system_ms),
            mem_max_kb: count(r.max_rss_kib),
            faults_major: count(r.major_faults),
            faults_minor: count(r.minor_faults),
            io_in: count(r.blocks_in),
            io_out: count(r.blocks_out),
            signals: count(r.signals),
        }
    }

    /// The usage of a process reaped with wait4 (`raw`) that ran for `real`.
    pub fn from_raw(raw: &crate::sys::RawRusage, real: Duration) -> Usage {
        Usage {
            real,
            user: raw.user,
            sys: raw.system,
            mem_max_kb: count(raw.max_rss_kib),
            faults_major: count(raw.major_faults),
            faults_minor: count(raw.minor_faults),
            io_in: count(raw.blocks_in),
            io_out: count(raw.blocks_out),
            signals: count(raw.signals),
        }
    }

    /// The usage of in-process work on this thread since `start` was taken: CPU time, faults,
    /// I/O and signals as differences, and the process's peak RSS so far (a peak cannot be
    /// differenced).
    pub fn of_self_since(start: SelfUsage) -> Usage {
        let now = SelfUsage::now();
        Usage {
            real: now.at.saturating_duration_since(start.at),
            user: now.user.saturating_sub(start.user),
            sys: now.sys.saturating_sub(start.sys),
            mem_max_kb: now.mem_max_kb,
            faults_major: now.faults_major.saturating_sub(start.faults_major),
            faults_minor: now.faults_minor.saturating_sub(start.faults_minor),
            io_in: now.io_in.saturating_sub(start.io_in),
            io_out: now.io_out.saturating_sub(start.io_out),
            signals: now.signals.saturating_sub(start.signals),
        }
    }
}

/// A snapshot of this thread's resource usage and the time, to measure an in-process step with
/// [`Usage::of_self_since`]. Take it and finish the step on the same thread.
#[derive(Clone, Copy, Debug)]
pub struct SelfUsage {
    at: Instant,
    user: Duration,
    sys: Duration,
    mem_max_kb: u64,
    faults_major: u64,
    faults_minor: u64,
    io_in: u64,
    io_out: u64,
    signals: u64,
}

impl SelfUsage {
    /// This thread's usage now. RUSAGE_THREAD rather than RUSAGE_SELF: the dance runs steps on
    /// several threads at once (fetches with `--jobs`), and a step must not be charged for its
    /// neighbours. See getrusage(2).
    pub fn now() -> SelfUsage {
        let at = Instant::now();
        let tv = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(count(t.tv_sec())) + Duration::from_micros(count(t.tv_usec()))
        };
        match getrusage(UsageWho::RUSAGE_THREAD) {
            Ok(ru) => SelfUsage {
                at,
                user: tv(ru.user_time()),
                sys: tv(ru.system_time()),
                mem_max_kb: count(ru.max_rss()),
                faults_major: count(ru.major_page_faults()),
                faults_minor: count(ru.minor_page_faults()),
                io_in: count(ru.block_reads()),
                io_out: count(ru.block_writes()),
                signals: count(ru.signals()),
            },
            // getrusage fails only for a bad `who` or pointer (EINVAL, EFAULT), neither possible
            // here; a measurement is not worth failing a dance for, so it reads as zero.
            Err(e) => {
                tracing::debug!("getrusage(RUSAGE_THREAD): {e}");
                SelfUsage {
                    at,
                    user: Duration::ZERO,
                    sys: Duration::ZERO,
                    mem_max_kb: 0,
                    faults_major: 0,
                    faults_minor: 0,
                    io_in: 0,
                    io_out: 0,
                    signals: 0,
                }
            }
        }
    }
}

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
fn started(real: Duration) -> u64 {
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

/// A new report id for a dance started at `at`: seconds and microseconds since the epoch and
/// this process's pid, so ids sort by time and two dances in the same microsecond differ.
pub fn new_id(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "{}.{:06}-{}",
        since.as_secs(),
        since.subsec_micros(),
        std::process::id()
    )
}

/// Why a report could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// No dance has left a report yet.
    #[error("no dance report in {} yet (run 'disco dance --noop' first)", .0.display())]
    NoReport(PathBuf),
    /// The report asked for is not there.
    #[error("no dance report '{id}' in {}", .dir.display())]
    UnknownReport {
        /// The id asked for.
        id: String,
        /// The reports folder.
        dir: PathBuf,
    },
    /// A report file could not be read, written or removed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A report file is not a report.
    #[error("{}: not a dance report: {source}", .path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The folder reports are kept in: `STATE/reports`.
pub fn reports_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("reports")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether `id` can name a report file: not empty, no `/`, not hidden (the temporary files
/// [`save`] writes start with a dot).
fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.contains('/') && !id.starts_with('.')
}

/// The order of ids: by time, then pid, numerically, so that ids from before 2001 or with a
/// shorter pid still sort right. An id of another shape sorts before all others (and is pruned
/// first).
fn id_key(id: &str) -> (u64, u32, u64, &str) {
    let parse = || -> Option<(u64, u32, u64)> {
        let (time, pid) = id.split_once('-')?;
        let (secs, frac) = time.split_once('.')?;
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // "5" means .5 s: scale the fraction to nanoseconds.
        let nanos = frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32);
        Some((secs.parse().ok()?, nanos, pid.parse().ok()?))
    };
    let (secs, nanos, pid) = parse().unwrap_or((0, 0, 0));
    (secs, nanos, pid, id)
}

/// The ids of the reports in `dir`, oldest first.
fn list(dir: &Path) -> Result<Vec<String>, ReportError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if valid_id(id) {
            ids.push(id.to_owned());
        }
    }
    ids.sort_by(|a, b| id_key(a).cmp(&id_key(b)));
    Ok(ids)
}

/// Saves `report` as `STATE/reports/<id>.json` and deletes all but the newest [`KEEP`]
/// reports. The file is written beside and renamed into place, so a reader never sees half a
/// report.
pub fn save(state_dir: &Path, report: &DanceReport) -> Result<PathBuf, ReportError> {
    let dir = reports_dir(state_dir);
    if !valid_id(&report.id) {
        return Err(ReportError::UnknownReport {
            id: report.id.clone(),
            dir,
        });
    }
    // Reports name every changed path and carry content diffs: root's alone.
    crate::sys::private_dir(&dir).map_err(io_err(&dir))?;
    let path = dir.join(format!("{}.json", report.id));
    let tmp = dir.join(format!(".{}.json.tmp", report.id));
    let json = serde_json::to_vec_pretty(report).map_err(|source| ReportError::Json {
        path: path.clone(),
        source,
    })?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&json))
            .map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    prune(&dir, &report.id)?;
    Ok(path)
}

/// Deletes all but the newest [`KEEP`] reports in `dir`, never `just_saved` (even if the clock
/// went back and it is not among the newest).
fn prune(dir: &Path, just_saved: &str) -> Result<(), ReportError> {
    let ids = list(dir)?;
    let excess = ids.len().saturating_sub(KEEP);
    for id in ids.iter().take(excess).filter(|id| *id != just_saved) {
        let path = dir.join(format!("{id}.json"));
        match std::fs::remove_file(&path) {
            // Another dance pruning at the same time got there first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(io_err(&path))?,
        }
    }
    Ok(())
}

/// Loads report `id`, or the latest report (the greatest id) when `id` is `None`.
pub fn load(state_dir: &Path, id: Option<&str>) -> Result<DanceReport, ReportError> {
    let dir = reports_dir(state_dir);
    let id = match id {
        Some(id) if valid_id(id) => id.to_owned(),
        Some(id) => {
            return Err(ReportError::UnknownReport {
                id: id.to_owned(),
                dir,
            })
        }
        None => match list(&dir)?.pop() {
            Some(latest) => latest,
            None => return Err(ReportError::NoReport(dir)),
        },
    };
    let path = dir.join(format!("{id}.json"));
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReportError::UnknownReport { id, dir })
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    serde_json::from_slice(&bytes).map_err(|source| ReportError::Json { path, source })
}

/// The report as `disco report` prints it: the original's format, steps sorted by module
/// (`_internal` first, then by name), then by step name, a step's items in run order under one
/// header; then a summary line and one line per module that failed or was skipped.
pub fn render_text(report: &DanceReport) -> String {
    let mut steps: Vec<&Step> = report.steps.iter().collect();
    // A stable sort: items of one step keep their run order.
    steps.sort_by(|a, b| {
        module_key(&a.module)
            .cmp(&module_key(&b.module))
            .then_with(|| a.step.cmp(&b.step))
    });
    let mut out = String::new();
    let mut header: Option<(&str, &str)> = None;
    for step in steps {
        let this = (step.module.as_str(), step.step.as_str());
        if header != Some(this) {
            let _ = writeln!(out, "report: {}: {}", step.module, step.step);
            header = Some(this);
        }
        match &step.item {
            Some(item) => {
                let _ = writeln!(out, "report:    {item} :");
                step_body(&mut out, step, "        ");
            }
            None => step_body(&mut out, step, "    "),
        }
    }
    let (ok, failed, skipped) = report.counts();
    let _ = writeln!(
        out,
        "report: result: {} ({} modules: {ok} ok, {failed} failed, {skipped} skipped) in {} s",
        if report.ok { "ok" } else { "failed" },
        report.modules.len(),
        secs(report.duration),
    );
    for module in &report.modules {
        let (what, reason) = match &module.status {
            ModuleStatus::Ok => continue,
            ModuleStatus::Failed { reason } => ("failed", reason),
            ModuleStatus::Skipped { reason } => ("skipped", reason),
        };
        let _ = writeln!(out, "report:    {}: {what}: {reason}", module.name);
    }
    out
}

/// The sort key of a module name: `_internal` before every module, then by name.
fn module_key(module: &str) -> (bool, &str) {
    (module != INTERNAL, module)
}

/// Seconds with two decimals, as GNU time prints them, rounded half up in integers (through
/// `f64`, 1.255 would print as 1.25 or 1.26 depending on its binary expansion).
fn secs(d: Duration) -> String {
    let centis = (d.as_nanos() + 5_000_000) / 10_000_000;
    format!("{}.{:02}", centis / 100, centis % 100)
}

/// One step's lines, each `report:` then `indent`.
fn step_body(out: &mut String, step: &Step, indent: &str) {
    let u = &step.usage;
    let _ = writeln!(
        out,
        "report:{indent}time_real {} : time_user {} : time_sys {}",
        secs(u.real),
        secs(u.user),
        secs(u.sys)
    );
    // mem_avg and io_sock* stay 0, as in the original: Linux's rusage does not fill the
    // integral memory sizes (ru_ixrss, ru_idrss, ru_isrss) nor the message counts (ru_msgsnd,
    // ru_msgrcv) that GNU time derives them from.
    let _ = writeln!(
        out,
        "report:{indent}mem_avg 0 : mem_max {} : mem_faults_major {} : mem_faults_minor {}",
        u.mem_max_kb, u.faults_major, u.faults_minor
    );
    let _ = writeln!(
        out,
        "report:{indent}io_fsin {} : io_fsout {} : io_sockin 0 : io_sockout 0 : io_signals {}",
        u.io_in, u.io_out, u.signals
    );
    // An in-process step has no exit status: it reads like a command that exited 0 when it
    // succeeded and 1 when it failed.
    let exit = step.exit.unwrap_or(if step.ok { 0 } else { 1 });
    let _ = writeln!(out, "report:{indent}exit: {exit}");
    if let Some(code) = step.return_code {
        match &step.return_code_name {
            Some(name) => {
                let _ = writeln!(out, "report:{indent}return_code: {code} ({name})");
            }
            None => {
                let _ = writeln!(out, "report:{indent}return_code: {code}");
            }
        }
    }
    for violation in &step.violations {
        let _ = writeln!(out, "report:{indent}violation: {violation}");
    }
    for address in &step.would_connect {
        let _ = writeln!(out, "report:{indent}would connect: {address}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(real_cs: u64, user_cs: u64, sys_cs: u64, mem: u64, minor: u64) -> Usage {
        Usage {
            real: Duration::from_millis(real_cs * 10),
            user: Duration::from_millis(user_cs * 10),
            sys: Duration::from_millis(sys_cs * 10),
            mem_max_kb: mem,
            faults_minor: minor,
            ..Usage::default()
        }
    }

    fn report(steps: Vec<Step>, modules: Vec<ModuleResult>) -> DanceReport {
        DanceReport {
            id: "1795387035.799595-14937".into(),
            node: "localhost.localdomain".into(),
            noop: true,
            started_unix: 1_795_387_035,
            started_unix_ms: 0,
            duration: Duration::from_millis(1234),
            ok: modules.iter().all(|m| m.status == ModuleStatus::Ok),
            modules,
            steps,
        }
    }

    #[test]
    fn a_step_without_item_has_four_lines() {
        let r = report(
            vec![Step::new(
                INTERNAL,
                "fetch_params",
                None,
                usage(126, 2, 8, 11136, 1728),
                true,
            )],
            vec![],
        );
        assert_eq!(
            render_text(&r),
            "report: _internal: fetch_params\n\
             report:    time_real 1.26 : time_user 0.02 : time_sys 0.08\n\
             report:    mem_avg 0 : mem_max 11136 : mem_faults_major 0 : mem_faults_minor 1728\n\
             report:    io_fsin 0 : io_fsout 0 : io_sockin 0 : io_sockout 0 : io_signals 0\n\
             report:    exit: 0\n\
             report: result: ok (0 modules: 0 ok, 0 failed, 0 skipped) in 1.23 s\n"
        );
    }

    #[test]
    fn internal_first_then_modules_then_steps_items_in_run_order() {
        let s = |m: &str, st: &str, item: Option<&str>| {
            Step::new(m, st, item.map(str::to_owned), Usage::default(), true)
        };
        let r = report(
            vec![
                s("b", "fetch", None),
                s("a", "exec", Some("10-z.sh")),
                s("a", "exec", Some("00-y.sh")),
                s(INTERNAL, "fetch_params", None),
                s("a", "diff", None),
                s("A", "diff", None),
                s(INTERNAL, "diff", None),
            ],
            vec![],
        );
        let text = render_text(&r);
        let headers: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("report:  ") && !l.contains("result:"))
            .collect();
        assert_eq!(
            headers,
            [
                "report: _internal: diff",
                "report: _internal: fetch_params",
                "report: A: diff",
                "report: a: diff",
                "report: a: exec",
                "report: b: fetch",
            ]
        );
        let items: Vec<&str> = text.lines().filter(|l| l.ends_with(".sh :")).collect();
        assert_eq!(items, ["report:    10-z.sh :", "report:    00-y.sh :"]);
    }

    #[test]
    fn scripts_show_return_code_and_violations() {
        let mut step = Step::new(
            "m",
            "exec",
            Some("10-x.sh".into()),
            usage(1, 0, 0, 1, 1),
            false,
        );
        step.exit = Some(1);
        step.return_code = Some(1);
        step.return_code_name = Some("MODEXEC_PROBLEM".into());
        step.violations = vec!["leaked_file_handle: pid 7 (sleep 9)".into()];
        let mut custom = step.clone();
        custom.item = Some("20-y.sh".into());
        custom.return_code = Some(42);
        custom.return_code_name = None;
        custom.violations.clear();
        let text = render_text(&report(vec![step, custom], vec![]));
        assert!(text.contains(
            "report:        exit: 1\n\
             report:        return_code: 1 (MODEXEC_PROBLEM)\n\
             report:        violation: leaked_file_handle: pid 7 (sleep 9)\n\
             report:    20-y.sh :\n"
        ));
        assert!(text.contains("report:        return_code: 42\nreport: result:"));
    }

    #[test]
    fn failed_in_process_step_exits_1() {
        let step = Step::new("m", "diff", None, Usage::default(), false);
        assert!(render_text(&report(vec![step], vec![])).contains("report:    exit: 1\n"));
    }

    #[test]
    fn summary_names_failed_and_skipped_modules() {
        let m = |name: &str, status| ModuleResult {
            name: name.into(),
            status,
            changes: (0, 0, 0),
            paths: Vec::new(),
        };
        let r = report(
            vec![],
            vec![
                m("a", ModuleStatus::Ok),
                m(
                    "b",
                    ModuleStatus::Failed {
                        reason: "exec 10-x.sh: MODEXEC_PROBLEM".into(),
                    },
                ),
                m(
                    "c",
                    ModuleStatus::Skipped {
                        reason: "requires b, which failed".into(),
                    },
                ),
            ],
        );
        assert_eq!(
            render_text(&r),
            "report: result: failed (3 modules: 1 ok, 1 failed, 1 skipped) in 1.23 s\n\
             report:    b: failed: exec 10-x.sh: MODEXEC_PROBLEM\n\
             report:    c: skipped: requires b, which failed\n"
        );
    }

    #[test]
    fn times_round_to_two_decimals() {
        assert_eq!(secs(Duration::from_millis(1254)), "1.25");
        assert_eq!(secs(Duration::from_millis(1255)), "1.26");
        assert_eq!(secs(Duration::from_millis(1256)), "1.26");
        assert_eq!(secs(Duration::ZERO), "0.00");
        assert_eq!(secs(Duration::from_secs(12)), "12.00");
    }

    #[test]
    fn ids_sort_by_time_then_pid() {
        let mut ids = vec![
            "1795387035.799595-14937",
            "999999999.5-1",
            "1795387035.8-2",
            "1795387035.799595-200",
            "garbage",
        ];
        ids.sort_by(|a, b| id_key(a).cmp(&id_key(b)));
        assert_eq!(
            ids,
            [
                "garbage",
                "999999999.5-1",
                "1795387035.799595-200",
                "1795387035.799595-14937",
                "1795387035.8-2",
            ]
        );
    }

    #[test]
    fn new_ids_have_the_documented_shape() {
        let at = UNIX_EPOCH + Duration::new(1_795_387_035, 799_595_123);
        let id = new_id(at);
        assert_eq!(id, format!("1795387035.799595-{}", std::process::id()));
        assert_eq!(id_key(&id).0, 1_795_387_035);
    }

    #[test]
    fn rusage_converts() {
        let r = Rusage {
            user_ms: 30.0,
            system_ms: 180.0,
            max_rss_kib: 4672,
            minor_faults: 3783,
            major_faults: 32,
            blocks_in: 6640,
            blocks_out: 8,
            signals: 0,
            ..Rusage::default()
        };
        let u = Usage::from_rusage(&r, Duration::from_millis(270));
        assert_eq!(
            (secs(u.real), secs(u.user), secs(u.sys)),
            ("0.27".into(), "0.03".into(), "0.18".into())
        );
        assert_eq!(
            (
                u.mem_max_kb,
                u.faults_major,
                u.faults_minor,
                u.io_in,
                u.io_out
            ),
            (4672, 32, 3783, 6640, 8)
        );
    }
}
