//! The recipe of one fix, stage by stage: inspect the module, take its lock, spawn it, pump its
//! pipes until it exits or its time is up, end it if need be, wait for its handles, decide.

use std::time::{Duration, Instant};

use protocol::ReturnCode;

use std::path::Path;

use super::cgroup::{CgroupError, FixCgroup, Hierarchy, Limits};
use super::inspect::inspect;
use super::lock::{self, Acquired, LockPlan};
use super::outcome::judge;
use super::pump::{Pump, Wake};
use super::track::{self, Members, Registry, Tracker};
use super::{leak, spawn, timeout};
use super::{Exit, FixOutcome, FixSpec, Proc, Rusage, SuperviseError, Violation, ViolationKind};
use crate::sys;

/// How long processes killed at a limit get to vanish.
const KILL_WAIT: Duration = Duration::from_secs(2);

fn members_of<'a>(cg: &'a FixCgroup, tracker: &'a Tracker<'a>) -> Members<'a> {
    Members {
        tracker,
        cgroup: Some(cg),
    }
}

/// The fix's cgroup with `limits`: `None` (the `/proc` tracking alone) when this host has no
/// writable cgroup v2 and no limit is asked for; an error when a limit cannot be enforced.
fn fix_cgroup(
    hierarchy: &Hierarchy,
    spec: &FixSpec,
    limits: Limits,
) -> Result<Option<FixCgroup>, SuperviseError> {
    let refused = |source| SuperviseError::Cgroup {
        module: spec.module.clone(),
        source,
    };
    match FixCgroup::create(hierarchy, limits) {
        Ok(cg) => Ok(Some(cg)),
        Err(e @ (CgroupError::NoController { .. } | CgroupError::BadLimit { .. })) => {
            Err(refused(e))
        }
        Err(e) if !limits.is_empty() => Err(refused(e)),
        Err(e) => {
            // Found once at the start; a cgroup that cannot be made later is said each time.
            if hierarchy.v2().is_ok() {
                crate::output::warning(&format!(
                    "{e}; the fix is tracked through /proc only (see ARCHITECTURE.md, known limits)"
                ));
            }
            Ok(None)
        }
    }
}

/// Runs one fix with a supervisor of its own: for a process that runs one fix, or fixes one at
/// a time that leave nothing behind. A process that runs fixes at once, or many over a long
/// life, keeps one [`Supervisor`] (which remembers what earlier fixes left, to reap it).
pub fn run(spec: &FixSpec) -> Result<FixOutcome, SuperviseError> {
    Supervisor::new().run(spec)
}

/// The fix-module host. Holds what its fixes share (where their cgroups go, the modules running
/// now, what earlier fixes left in the background) and nothing global, so several supervisors,
/// and several fixes of one supervisor on several threads, can run in one process. Fixes of
/// one supervisor never claim each other's processes when the host has cgroups; without
/// cgroups, orphans carry no mark of their fix and concurrent fixes should run in processes of
/// their own.
#[derive(Debug)]
pub struct Supervisor {
    hierarchy: Hierarchy,
    registry: Registry,
}

impl Supervisor {
    /// A supervisor with no fix run yet, its cgroup subtree found now (with the one warning
    /// when this host has no writable cgroup v2).
    pub fn new() -> Supervisor {
        Supervisor {
            hierarchy: Hierarchy::find(false),
            registry: Registry::default(),
        }
    }

    /// A supervisor whose cgroup subtrees are held open, so that it (and its forks) still
    /// reach them from a mount namespace where `/sys/fs/cgroup` is read-only or gone (the
    /// dance's sandbox). Make it before entering such a namespace, in a process that forks but
    /// does not exec: the descriptors are close-on-exec.
    pub fn pinned() -> Supervisor {
        Supervisor {
            hierarchy: Hierarchy::find(true),
            registry: Registry::default(),
        }
    }

    /// Whether its fixes get cgroups (this host has a writable cgroup v2): only then are
    /// fixes that run at once told apart by membership.
    pub fn has_cgroups(&self) -> bool {
        self.hierarchy.v2().is_ok()
    }

    /// Runs one fix under the Survivor rules and says what it amounted to.
    ///
    /// Returns an error only when the fix could not be attempted at all (the module is missing
    /// or not executable, a bad lock name, a limit that cannot be enforced, a failing syscall);
    /// everything a module can do wrong is an outcome with violations. Never waits longer than
    /// the timeout, plus the grace after SIGTERM, plus the leak timeout (plus the time
    /// SIGKILLed processes take to vanish).
    pub fn run(&self, spec: &FixSpec) -> Result<FixOutcome, SuperviseError> {
        run_fix(self, spec)
    }
}

impl Default for Supervisor {
    fn default() -> Supervisor {
        Supervisor::new()
    }
}

fn run_fix(supervisor: &Supervisor, spec: &FixSpec) -> Result<FixOutcome, SuperviseError> {
    let registry = &supervisor.registry;
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let mut outcome = FixOutcome {
        module: spec.module.clone(),
        host: spec.host.clone(),
        service: spec.service.clone(),
        return_code: ReturnCode::OK,
        comment: String::new(),
        exit: Exit::NotRun,
        duration: Duration::ZERO,
        timed_out: false,
        violations: Vec::new(),
        background: Vec::new(),
        rusage: Rusage::default(),
        killed: 0,
        cgroup: None,
        stderr_tail: String::new(),
        stdout: Vec::new(),
    };

    // Stage 1: look at the module (rule 3, and the lock its header asks for).
    // Run through an interpreter named on the command line, the file needs no x bit.
    let executed = spec
        .command
        .as_ref()
        .and_then(|argv| argv.first())
        .is_none_or(|first| Path::new(first) == spec.module);
    let inspection = inspect(&spec.module, executed)?;
    if inspection.compiled && !spec.allow_compiled {
        outcome.return_code = ReturnCode::MISCONFIG;
        outcome.comment = format!(
            "{} is a compiled executable; fix modules must be scripts",
            spec.module.display()
        );
        outcome.violations.push(Violation::new(
            ViolationKind::CompiledModule,
            format!(
                "{} starts with the ELF magic; refused without running it (--allow-compiled overrides)",
                spec.module.display()
            ),
        ));
        outcome.duration = started.elapsed();
        return Ok(outcome);
    }

    // Stage 2: the lock (rule 1); waiting for it counts against the timeout.
    let mut levels = vec![spec.lock];
    levels.extend(inspection.header_lock);
    let plan = LockPlan::of(&levels);
    let _guard = match lock::acquire(&spec.lock_dir, &spec.host, &spec.service, plan, deadline)? {
        Acquired::Held(guard) => guard,
        Acquired::TimedOut { path, waited } => {
            outcome.return_code = ReturnCode::TIMEDOUT;
            outcome.timed_out = true;
            outcome.comment = format!("fix timed out waiting for its lock {}", path.display());
            outcome.violations.push(Violation::new(
                ViolationKind::Timeout,
                format!(
                    "waited {:.3} s for the lock {} (another fix holds it) and was not started",
                    waited.as_secs_f64(),
                    path.display()
                ),
            ));
            outcome.duration = started.elapsed();
            return Ok(outcome);
        }
    };

    // Stage 3: spawn. Orphans of the module must come to us, not to init, to stay trackable
    // (a process-wide flag; setting it again is one cheap syscall).
    sys::set_child_subreaper().map_err(|source| SuperviseError::Io {
        module: spec.module.clone(),
        what: "prctl(PR_SET_CHILD_SUBREAPER)",
        source,
    })?;
    registry.reap_left();
    // Its cgroup, made before it starts; without a writable cgroup v2, the `/proc` tracking
    // alone (the warning was said once, when the hierarchy was found).
    let limits = spec.limits.stricter(inspection.header_limits);
    let cgroup = fix_cgroup(&supervisor.hierarchy, spec, limits)?;
    let child = match spawn::spawn(spec, cgroup.as_ref(), registry) {
        Ok(child) => child,
        Err(e) => {
            if let Some(cg) = cgroup {
                cg.finish();
            }
            return Err(e);
        }
    };
    let tracker = Tracker {
        module: child.pid,
        pgid: child.pid,
        start_time: child.start_time,
        registry,
    };
    let members = Members {
        tracker: &tracker,
        cgroup: cgroup.as_ref(),
    };
    let mut pump = Pump::new(
        child.stdin,
        child.stdout,
        child.stderr,
        child.pidfd,
        spec.request.clone(),
        spec.max_output,
    );
    let io = |what: &'static str| {
        let module = spec.module.clone();
        move |source| SuperviseError::Io {
            module,
            what,
            source,
        }
    };

    // Stage 4: pump until the module exits or its time is up.
    let wake = match pump.run(deadline) {
        Ok(wake) => wake,
        Err(source) => {
            // Never leave a module running because the host's poll failed.
            let _ = sys::killpg(tracker.pgid, nix::sys::signal::SIGKILL);
            if let Some(cg) = &cgroup {
                cg.kill();
            }
            return Err(io("poll")(source));
        }
    };
    let (ended, raw_rusage) = if wake == Wake::Deadline {
        // Stage 5a: the deadline. End everything the module started, wherever it went.
        outcome.timed_out = true;
        let t = timeout::terminate(&spec.module, &mut pump, members, spec.grace)?;
        outcome.killed += t.signalled;
        outcome
            .violations
            .push(timeout::violation(spec.timeout, spec.grace, &t));
        for p in &t.escaped {
            outcome.violations.push(Violation::new(
                ViolationKind::ProcessGroupChanged,
                format!(
                    "{p} was outside the module's process group {} at the timeout",
                    tracker.pgid
                ),
            ));
        }
        pump.close_outputs();
        match t.ended {
            Some((ended, ru)) => (Some(ended), ru),
            None => (None, sys::RawRusage::default()),
        }
    } else {
        // Stage 5b: the module exited. Its zombie still shows the group it ended in (rule 2).
        if let Some(stat) = sys::proc_stat(tracker.module) {
            if stat.pgrp != tracker.pgid {
                outcome.violations.push(Violation::new(
                    ViolationKind::ProcessGroupChanged,
                    format!(
                        "the module (pid {}) moved from process group {} to {}",
                        tracker.module, tracker.pgid, stat.pgrp
                    ),
                ));
            }
        }
        let (ended, ru) = timeout::reap_module(&spec.module, &tracker)?;
        pump.close_stdin();
        // Stage 6: its handles must be released (rule 7).
        let settled = leak::settle(
            &spec.module,
            &mut pump,
            members,
            &child.inodes,
            spec.leak_timeout,
            spec.grace,
        )?;
        outcome
            .violations
            .extend(settled.violations(spec.leak_timeout));
        outcome.background = settled.background.iter().map(|p| Proc::of(p.pid)).collect();
        outcome.killed += settled.killed;
        (Some(ended), ru)
    };
    // The limits: a fix that ran into one is contained, and nothing of it stays.
    let mut limit_hit = None;
    if let Some(cg) = cgroup {
        let hits = cg.hits();
        if hits.oom_kills > 0 {
            let detail = format!(
                "the fix reached its memory limit of {} bytes; the kernel killed {} of its processes",
                limits.memory_max.unwrap_or_default(),
                hits.oom_kills
            );
            limit_hit = Some(detail.clone());
            outcome
                .violations
                .push(Violation::new(ViolationKind::MemoryLimit, detail));
        }
        if hits.pids_refused > 0 {
            let detail = format!(
                "the fix reached its limit of {} processes; {} forks were refused",
                limits.pids_max.unwrap_or_default(),
                hits.pids_refused
            );
            limit_hit.get_or_insert(detail.clone());
            outcome
                .violations
                .push(Violation::new(ViolationKind::PidsLimit, detail));
        }
        if limit_hit.is_some() && cg.populated() {
            let ended = members_of(&cg, &tracker).frozen(|| {
                let alive = members_of(&cg, &tracker).alive();
                cg.kill();
                alive
            });
            cg.wait_empty(Instant::now() + KILL_WAIT);
            track::reap_orphans(&ended);
            outcome.killed += ended.len();
            outcome.background.clear();
        }
        outcome.cgroup = Some(cg.usage());
        cg.finish();
    }
    drop(_guard);

    // Stage 7: decide.
    outcome.exit = ended.map_or(Exit::NotRun, Exit::from);
    outcome.rusage = raw_rusage.into();
    if outcome.timed_out {
        outcome.return_code = ReturnCode::TIMEDOUT;
        outcome.comment = format!("fix timed out after {:.3} s", spec.timeout.as_secs_f64());
    } else {
        let (code, comment, violations) = judge(&pump.out, outcome.exit, spec.plain_output);
        outcome.return_code = code;
        outcome.comment = comment;
        outcome.violations.extend(violations);
        if let Some(detail) = limit_hit {
            // Whatever the module answered, a fix cut short by its limit did not do its job.
            outcome.return_code = ReturnCode::PROBLEM;
            outcome.comment = detail;
        }
    }
    for (name, total) in [("stdout", pump.out_total), ("stderr", pump.err_total)] {
        if total > spec.max_output as u64 {
            outcome.violations.push(Violation::new(
                ViolationKind::OutputTruncated,
                format!(
                    "{name} had {total} bytes, over the bound of {}; the rest was discarded",
                    spec.max_output
                ),
            ));
        }
    }
    outcome.stderr_tail = pump.stderr_tail();
    outcome.stdout = std::mem::take(&mut pump.out);
    outcome.duration = started.elapsed();
    Ok(outcome)
}
