//! Ending a module that ran too long: SIGTERM to its process group and to every member of its
//! fix (its cgroup's members, and every descendant the `/proc` tracking finds), a grace period,
//! then SIGKILL (`cgroup.kill`) until nothing of it is left: the host's one escalation
//! (`escalate.rs`), with the module's pipes drained meanwhile.

use std::time::{Duration, Instant};

use super::escalate::{escalate, Doomed, KILL_WAIT};
use super::pump::{Pump, Wake};
use super::track::{self, Members, Tracker};
use super::{Proc, SuperviseError, Violation, ViolationKind};
use crate::sys::{self, Ended, ProcStat, RawRusage};

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

/// The whole fix at the timeout, and the module's pipes drained (and the module reaped) while
/// it is given its grace.
struct Fix<'a, 'p> {
    module: &'a std::path::Path,
    members: Members<'a>,
    pump: &'p mut Pump,
    ended: Option<(Ended, RawRusage)>,
}

impl Doomed for Fix<'_, '_> {
    fn look(&mut self) -> Vec<ProcStat> {
        self.members.alive()
    }

    fn any_left(&mut self) -> bool {
        self.members.any_alive()
    }

    fn wait(&mut self, until: Instant) -> Result<(), SuperviseError> {
        let wake = self.pump.run(until).map_err(|source| SuperviseError::Io {
            module: self.module.to_owned(),
            what: "poll",
            source,
        })?;
        match wake {
            Wake::Exited if self.ended.is_none() => {
                self.ended = Some(reap_module(self.module, self.members.tracker)?);
            }
            // Nothing left to poll: the wait for processes to die is a look per tick.
            Wake::Closed => std::thread::sleep(until.saturating_duration_since(Instant::now())),
            _ => {}
        }
        Ok(())
    }
}

/// Ends the module and everything of its fix: TERM, `grace`, KILL ([`escalate`]). With a
/// cgroup, every look and every KILL happen with the cgroup frozen, and the KILL is also
/// `cgroup.kill`, so a process that forks and exits faster than `/proc` can be read is still
/// caught. Never returns before they are gone, except for processes that do not die even to
/// SIGKILL within [`KILL_WAIT`].
pub fn terminate(
    module: &std::path::Path,
    pump: &mut Pump,
    members: Members<'_>,
    grace: Duration,
) -> Result<Terminated, SuperviseError> {
    let tracker = members.tracker;
    let mut fix = Fix {
        module,
        members,
        pump,
        ended: None,
    };
    let e = escalate(members, &mut fix, grace, true)?;
    let escaped: Vec<Proc> = e
        .first
        .iter()
        .filter(|p| p.pgrp != tracker.pgid)
        .map(|p| Proc::of(p.pid))
        .collect();
    let Fix { pump, ended, .. } = fix;
    let mut ended = ended;
    if ended.is_none() && !pump.exited() {
        // The module itself was SIGKILLed above; its exit is on its way.
        let wake = pump
            .run(Instant::now() + KILL_WAIT)
            .map_err(|source| SuperviseError::Io {
                module: module.to_owned(),
                what: "poll",
                source,
            })?;
        if wake == Wake::Exited {
            ended = Some(reap_module(module, tracker)?);
        }
    } else if ended.is_none() {
        ended = Some(reap_module(module, tracker)?);
    }
    // The module first (its rusage), then the orphans the host inherited and killed.
    track::reap_orphans(&e.signalled);
    Ok(Terminated {
        ended,
        escaped,
        killed: e.killed,
        signalled: e.signalled.len(),
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
