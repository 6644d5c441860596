//! Ending a module that ran too long: SIGTERM to its process group and to every member of its
//! fix (its cgroup's members, and every descendant the `/proc` tracking finds), a grace period,
//! then SIGKILL (`cgroup.kill`) until nothing of it is left.

use std::time::{Duration, Instant};

use nix::libc::{SIGKILL, SIGTERM};

use super::pump::{Pump, Wake};
use super::track::{self, Members, Tracker};
use super::{Proc, SuperviseError, Violation, ViolationKind};
use crate::sys::{self, Ended, ProcStat, RawRusage};

/// How often the process table is looked at while waiting for processes to die.
const TICK: Duration = Duration::from_millis(10);
/// How long SIGKILLed processes get to disappear before the host stops looking (a process in
/// uninterruptible sleep can take long; the host must not hang on it).
const KILL_WAIT: Duration = Duration::from_secs(2);

/// What ending the module found and did.
#[derive(Debug)]
pub struct Terminated {
    /// How the module ended and its resource usage, if it was reaped.
    pub ended: Option<(Ended, RawRusage)>,
    /// Processes found outside the module's process group (rule 2).
    pub escaped: Vec<Proc>,
    /// Whether SIGKILL was needed.
    pub killed: bool,
    /// How many processes were signalled to end them (the module included).
    pub signalled: usize,
}

/// Signals every process of `tracker` (and the group) with `signal`; returns what was signalled.
pub fn signal_all(tracker: &Tracker<'_>, procs: &[ProcStat], signal: i32) {
    let _ = sys::killpg(tracker.pgid, signal);
    for p in procs {
        let _ = sys::kill(p.pid, signal);
    }
}

/// Reaps the module once its pidfd said it exited.
pub fn reap_module(
    module: &std::path::Path,
    tracker: &Tracker<'_>,
) -> Result<(Ended, RawRusage), SuperviseError> {
    let reaped = sys::wait4(tracker.module, false).map_err(|source| SuperviseError::Io {
        module: module.to_owned(),
        what: "wait4",
        source,
    })?;
    tracker.registry.unregister_module(tracker.module);
    Ok(reaped.expect("a blocking wait4 returns the process"))
}

/// Ends the module and everything of its fix: TERM, `grace`, KILL. With a cgroup, the first look
/// and every KILL happen with the cgroup frozen, and the KILL is `cgroup.kill`, so a process
/// that forks and exits faster than `/proc` can be read is still caught. Never returns before
/// they are gone, except for processes that do not die even to SIGKILL within [`KILL_WAIT`].
pub fn terminate(
    module: &std::path::Path,
    pump: &mut Pump,
    members: Members<'_>,
    grace: Duration,
) -> Result<Terminated, SuperviseError> {
    let io = |what| {
        let module = module.to_owned();
        move |source| SuperviseError::Io {
            module,
            what,
            source,
        }
    };
    let tracker = members.tracker;
    let mut ended = None;
    let mut signalled: Vec<ProcStat> = Vec::new();
    let note = |procs: &[ProcStat], signalled: &mut Vec<ProcStat>| {
        for p in procs {
            if !signalled.iter().any(|s| s.pid == p.pid) {
                signalled.push(p.clone());
            }
        }
    };
    // The fix as it is at the timeout, seen (and named) in one frozen moment.
    let (first, escaped) = members.frozen(|| {
        let first = members.alive();
        signal_all(tracker, &first, SIGTERM);
        let escaped: Vec<Proc> = first
            .iter()
            .filter(|p| p.pgrp != tracker.pgid)
            .map(|p| Proc::of(p.pid))
            .collect();
        (first, escaped)
    });
    note(&first, &mut signalled);
    let grace_end = Instant::now() + grace;
    let mut killed = false;
    loop {
        let wake = pump
            .run((Instant::now() + TICK).min(grace_end))
            .map_err(io("poll"))?;
        match wake {
            Wake::Exited if ended.is_none() => ended = Some(reap_module(module, tracker)?),
            // Nothing left to poll: the wait for processes to die is a look per tick.
            Wake::Closed => std::thread::sleep(TICK.min(grace_end - Instant::now().min(grace_end))),
            _ => {}
        }
        if !members.any_alive() {
            break;
        }
        if Instant::now() >= grace_end {
            killed = true;
            // Repeat: without a cgroup a process may fork between the table read and the
            // signal; with one, a member may have left it.
            let kill_end = Instant::now() + KILL_WAIT;
            loop {
                let alive = members.frozen(|| {
                    let alive = members.alive();
                    if let Some(cg) = members.cgroup {
                        cg.kill();
                    }
                    signal_all(tracker, &alive, SIGKILL);
                    alive
                });
                note(&alive, &mut signalled);
                let wake = pump
                    .run((Instant::now() + Duration::from_millis(2)).min(kill_end))
                    .map_err(io("poll"))?;
                match wake {
                    Wake::Exited if ended.is_none() => ended = Some(reap_module(module, tracker)?),
                    Wake::Closed => std::thread::sleep(Duration::from_millis(2)),
                    _ => {}
                }
                if !members.any_alive() || Instant::now() >= kill_end {
                    break;
                }
            }
            break;
        }
    }
    if ended.is_none() && !pump.exited() {
        // The module itself was SIGKILLed above; its exit is on its way.
        if pump.run(Instant::now() + KILL_WAIT).map_err(io("poll"))? == Wake::Exited {
            ended = Some(reap_module(module, tracker)?);
        }
    } else if ended.is_none() {
        ended = Some(reap_module(module, tracker)?);
    }
    track::reap_orphans(&signalled);
    Ok(Terminated {
        ended,
        escaped,
        killed,
        signalled: signalled.len(),
    })
}

/// The `timeout` violation for a module that ran past `timeout`.
pub fn violation(timeout: Duration, grace: Duration, t: &Terminated) -> Violation {
    let how = if t.killed {
        format!(
            "sent SIGTERM, then SIGKILL after a grace of {} ms",
            grace.as_millis()
        )
    } else {
        "sent SIGTERM".to_owned()
    };
    Violation::new(
        ViolationKind::Timeout,
        format!(
            "the module ran past its timeout of {:.3} s; {how}",
            timeout.as_secs_f64()
        ),
    )
}
