//! Ending a module that ran too long: SIGTERM to its process group and to every descendant found
//! (in the group or not), a grace period, then SIGKILL until nothing of it is left.

use std::time::{Duration, Instant};

use nix::libc::{SIGKILL, SIGTERM};

use super::pump::{Pump, Wake};
use super::track::{self, Tracker};
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
}

/// Signals every process of `tracker` (and the group) with `signal`; returns what was signalled.
pub fn signal_all(tracker: &Tracker, procs: &[ProcStat], signal: i32) {
    let _ = sys::killpg(tracker.pgid, signal);
    for p in procs {
        let _ = sys::kill(p.pid, signal);
    }
}

/// Reaps the module once its pidfd said it exited.
pub fn reap_module(
    module: &std::path::Path,
    pid: i32,
) -> Result<(Ended, RawRusage), SuperviseError> {
    let reaped = sys::wait4(pid, false).map_err(|source| SuperviseError::Io {
        module: module.to_owned(),
        what: "wait4",
        source,
    })?;
    track::unregister_module(pid);
    Ok(reaped.expect("a blocking wait4 returns the process"))
}

/// Ends the module and its descendants: TERM, `grace`, KILL. Never returns before they are gone,
/// except for processes that do not die even to SIGKILL within [`KILL_WAIT`].
pub fn terminate(
    module: &std::path::Path,
    pump: &mut Pump,
    tracker: &Tracker,
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
    let mut ended = None;
    let mut seen: Vec<ProcStat> = Vec::new();
    let mut escaped: Vec<Proc> = Vec::new();
    let mut note = |procs: &[ProcStat], seen: &mut Vec<ProcStat>| {
        for p in procs {
            if !seen.iter().any(|s| s.pid == p.pid) {
                seen.push(p.clone());
                if p.pgrp != tracker.pgid && !p.is_zombie() {
                    escaped.push(Proc::of(p.pid));
                }
            }
        }
    };
    let first = tracker.alive();
    note(&first, &mut seen);
    signal_all(tracker, &first, SIGTERM);
    let grace_end = Instant::now() + grace;
    let mut killed = false;
    loop {
        let wake = pump
            .run((Instant::now() + TICK).min(grace_end))
            .map_err(io("poll"))?;
        match wake {
            Wake::Exited if ended.is_none() => ended = Some(reap_module(module, tracker.module)?),
            // Nothing left to poll: the wait for processes to die is a look at /proc per tick.
            Wake::Closed => std::thread::sleep(TICK.min(grace_end - Instant::now().min(grace_end))),
            _ => {}
        }
        let alive = tracker.alive();
        note(&alive, &mut seen);
        if alive.is_empty() {
            break;
        }
        if Instant::now() >= grace_end {
            killed = true;
            // Repeat: a process may fork between the table read and the signal.
            let kill_end = Instant::now() + KILL_WAIT;
            let mut alive = alive;
            while !alive.is_empty() && Instant::now() < kill_end {
                signal_all(tracker, &alive, SIGKILL);
                let wake = pump
                    .run((Instant::now() + Duration::from_millis(2)).min(kill_end))
                    .map_err(io("poll"))?;
                match wake {
                    Wake::Exited if ended.is_none() => {
                        ended = Some(reap_module(module, tracker.module)?)
                    }
                    Wake::Closed => std::thread::sleep(Duration::from_millis(2)),
                    _ => {}
                }
                alive = tracker.alive();
                note(&alive, &mut seen);
            }
            break;
        }
    }
    if ended.is_none() && !pump.exited() {
        // The module itself was SIGKILLed above; its exit is on its way.
        if pump.run(Instant::now() + KILL_WAIT).map_err(io("poll"))? == Wake::Exited {
            ended = Some(reap_module(module, tracker.module)?);
        }
    } else if ended.is_none() {
        ended = Some(reap_module(module, tracker.module)?);
    }
    track::reap_orphans(&seen);
    Ok(Terminated {
        ended,
        escaped,
        killed,
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
