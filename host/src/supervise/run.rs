//! The recipe of one fix, stage by stage: inspect the module, take its lock, spawn it, pump its
//! pipes until it exits or its time is up, end it if need be, wait for its handles, decide.

use std::sync::Once;
use std::time::{Duration, Instant};

use protocol::ReturnCode;

use std::path::Path;

use super::inspect::inspect;
use super::lock::{self, Acquired, LockPlan};
use super::outcome::judge;
use super::pump::{Pump, Wake};
use super::track::{self, Tracker};
use super::{leak, spawn, timeout};
use super::{Exit, FixOutcome, FixSpec, Proc, Rusage, SuperviseError, Violation, ViolationKind};
use crate::sys;

static SUBREAPER: Once = Once::new();

/// Runs one fix under the Survivor rules and says what it amounted to.
///
/// Returns an error only when the fix could not be attempted at all (the module is missing or
/// not executable, a bad lock name, a failing syscall); everything a module can do wrong is an
/// outcome with violations. Never waits longer than the timeout, plus the grace after SIGTERM,
/// plus the leak timeout (plus the time SIGKILLed processes take to vanish).
pub fn run(spec: &FixSpec) -> Result<FixOutcome, SuperviseError> {
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

    // Stage 3: spawn. Orphans of the module must come to us, not to init, to stay trackable.
    let mut subreaper = Ok(());
    SUBREAPER.call_once(|| subreaper = sys::set_child_subreaper());
    subreaper.map_err(|source| SuperviseError::Io {
        module: spec.module.clone(),
        what: "prctl(PR_SET_CHILD_SUBREAPER)",
        source,
    })?;
    track::reap_left();
    let child = spawn::spawn(spec)?;
    let tracker = Tracker {
        module: child.pid,
        pgid: child.pid,
        start_time: child.start_time,
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
            let _ = sys::killpg(tracker.pgid, nix::libc::SIGKILL);
            return Err(io("poll")(source));
        }
    };
    let (ended, raw_rusage) = if wake == Wake::Deadline {
        // Stage 5a: the deadline. End everything the module started, wherever it went.
        outcome.timed_out = true;
        let t = timeout::terminate(&spec.module, &mut pump, &tracker, spec.grace)?;
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
        let (ended, ru) = timeout::reap_module(&spec.module, tracker.module)?;
        pump.close_stdin();
        // Stage 6: its handles must be released (rule 7).
        let settled = leak::settle(
            &spec.module,
            &mut pump,
            &tracker,
            &child.inodes,
            spec.leak_timeout,
            spec.grace,
        )?;
        outcome
            .violations
            .extend(settled.violations(spec.leak_timeout));
        outcome.background = settled.background.iter().map(|p| Proc::of(p.pid)).collect();
        (Some(ended), ru)
    };
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
