//! The one kill escalation of the host: SIGTERM, a grace period, then SIGKILL until nothing is
//! left, each look at the processes taken with the fix's cgroup frozen. Used at the timeout
//! (everything of the fix) and after a leak (the holders of the module's handles and its
//! process group).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal::{self, SIGKILL, SIGTERM};

use super::track::Members;
use super::SuperviseError;
use crate::sys::{self, ProcStat};

/// How often the processes are looked at while they are given their grace.
const TICK: Duration = Duration::from_millis(10);
/// How often SIGKILL is repeated while waiting for the killed to vanish.
const KILL_TICK: Duration = Duration::from_millis(2);
/// How long SIGKILLed processes get to disappear before the host stops looking (a process in
/// uninterruptible sleep can take long; the host must not hang on it).
pub const KILL_WAIT: Duration = Duration::from_secs(2);

/// What to end and how to wait meanwhile.
pub trait Doomed {
    /// The processes to signal now (called with the cgroup frozen).
    fn look(&mut self) -> Vec<ProcStat>;
    /// Whether anything of them is left.
    fn any_left(&mut self) -> bool;
    /// Waits until `until` (the timeout drains the module's pipes and reaps it meanwhile).
    fn wait(&mut self, until: Instant) -> Result<(), SuperviseError>;
}

/// What an escalation did.
#[derive(Debug)]
pub struct Escalated {
    /// What the first look found (the TERM's targets).
    pub first: Vec<ProcStat>,
    /// Every process signalled, once each.
    pub signalled: Vec<ProcStat>,
    /// Whether SIGKILL was needed.
    pub killed: bool,
}

/// Signals the module's process group and every process in `procs` with `signal`.
pub fn signal_all(pgid: i32, procs: &[ProcStat], signal: Signal) {
    let _ = sys::killpg(pgid, signal);
    for p in procs {
        let _ = sys::kill(p.pid, signal);
    }
}

fn note(procs: &[ProcStat], signalled: &mut Vec<ProcStat>) {
    for p in procs {
        if !signalled.iter().any(|s| s.pid == p.pid) {
            signalled.push(p.clone());
        }
    }
}

/// TERM to what `doomed` finds, up to `grace` for it to go, then KILL (and, when
/// `whole_cgroup`, `cgroup.kill` to every member) at each look until nothing is left or
/// [`KILL_WAIT`] passed. The caller reaps the host's zombies among the signalled
/// (`track::reap_orphans`) once it has reaped the module itself, if it is one of them.
pub fn escalate(
    members: Members<'_>,
    doomed: &mut impl Doomed,
    grace: Duration,
    whole_cgroup: bool,
) -> Result<Escalated, SuperviseError> {
    let pgid = members.tracker.pgid;
    // One frozen moment: what is seen is what is signalled.
    let first = members.frozen(|| {
        let first = doomed.look();
        signal_all(pgid, &first, SIGTERM);
        first
    });
    let mut e = Escalated {
        signalled: first.clone(),
        first,
        killed: false,
    };
    let grace_end = Instant::now() + grace;
    let mut left = doomed.any_left();
    while left && Instant::now() < grace_end {
        doomed.wait((Instant::now() + TICK).min(grace_end))?;
        left = doomed.any_left();
    }
    if left {
        e.killed = true;
        // Repeated: without a cgroup a process may fork between the look and the signal; with
        // one, a member may have left it.
        let kill_end = Instant::now() + KILL_WAIT;
        while left && Instant::now() < kill_end {
            let alive = members.frozen(|| {
                let alive = doomed.look();
                if let Some(cg) = members.cgroup.filter(|_| whole_cgroup) {
                    cg.kill();
                }
                signal_all(pgid, &alive, SIGKILL);
                alive
            });
            note(&alive, &mut e.signalled);
            doomed.wait((Instant::now() + KILL_TICK).min(kill_end))?;
            left = doomed.any_left();
        }
    }
    Ok(e)
}
