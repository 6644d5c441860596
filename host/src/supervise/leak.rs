//! Rule 7: after the module exited, nothing may still hold its stdin, stdout or stderr.
//!
//! The host waits up to the leak timeout for stdout and stderr to reach end of file (a child
//! finishing its last write is not a leak), then stops waiting: it names the processes that hold
//! any of the three pipes (found by the pipe inodes in `/proc/PID/fd`), ends them and the rest
//! of the module's process group, and lists what else is left as background. It never waits
//! for a leaked process to end on its own.

use std::time::{Duration, Instant};

use super::escalate::{escalate, Doomed};
use super::pump::{Pump, Wake};
use super::track::{self, Members};
use super::{Proc, SuperviseError, Violation, ViolationKind};
use crate::sys::{self, ProcStat};

/// How often holders of the stdin pipe are looked for when stdout and stderr have closed (stdin
/// has no end of file the host can see, since the host closed its end).
const TICK: Duration = Duration::from_millis(20);

/// Which of the module's handles a process holds.
const HANDLES: [&str; 3] = ["stdin", "stdout", "stderr"];

/// What the module left behind after it exited.
#[derive(Debug, Default)]
pub struct Settled {
    /// Processes that still held the module's handles at the leak timeout, and which.
    pub holders: Vec<(Proc, Vec<&'static str>)>,
    /// Holders outside the module's process group (they also broke rule 2).
    pub escaped: Vec<Proc>,
    /// Live descendants that hold none of the handles: a proper daemon.
    pub background: Vec<ProcStat>,
    /// How many processes were signalled to end them.
    pub killed: usize,
}

impl Settled {
    /// The violations this amounts to.
    pub fn violations(&self, leak_timeout: Duration) -> Vec<Violation> {
        let mut v = Vec::new();
        if !self.holders.is_empty() {
            let who: Vec<String> = self
                .holders
                .iter()
                .map(|(p, h)| format!("{p} holds {}", h.join(", ")))
                .collect();
            v.push(Violation::new(
                ViolationKind::LeakedFileHandle,
                format!(
                    "{} ms after the module exited: {}; killed",
                    leak_timeout.as_millis(),
                    who.join("; ")
                ),
            ));
        }
        for p in &self.escaped {
            v.push(Violation::new(
                ViolationKind::ProcessGroupChanged,
                format!("{p} left the module's process group and kept its handles"),
            ));
        }
        v
    }
}

/// Every process but the host that holds one of `inodes`, with the handles it holds.
fn holders(inodes: &[u64; 3], table: &[ProcStat]) -> Vec<(ProcStat, Vec<&'static str>)> {
    let me = sys::getpid();
    table
        .iter()
        .filter(|p| p.pid != me && !p.is_zombie())
        .filter_map(|p| {
            let fds = sys::proc_pipe_fds(p.pid);
            let held: Vec<&'static str> = (0..3)
                .filter(|&i| fds.iter().any(|&(_, ino)| ino == inodes[i]))
                .map(|i| HANDLES[i])
                .collect();
            (!held.is_empty()).then(|| (p.clone(), held))
        })
        .collect()
}

/// The holders of the module's handles (the ones first named, whatever holds them at each look)
/// and the module's process group.
struct Holding<'a> {
    members: Members<'a>,
    pgid: i32,
    doomed: &'a [ProcStat],
    inodes: &'a [u64; 3],
}

impl Doomed for Holding<'_> {
    fn look(&mut self) -> Vec<ProcStat> {
        let table = sys::proc_table();
        let mut left: Vec<ProcStat> = table
            .iter()
            .filter(|p| p.pgrp == self.pgid && !p.is_zombie())
            .cloned()
            .collect();
        let again = self.doomed.iter().filter_map(|d| {
            table
                .iter()
                .find(|p| p.pid == d.pid && p.start_time == d.start_time && !p.is_zombie())
        });
        let holding: Vec<ProcStat> = holders(self.inodes, &table)
            .into_iter()
            .map(|h| h.0)
            .collect();
        for p in again.chain(holding.iter()) {
            if !left.iter().any(|l| l.pid == p.pid) {
                left.push(p.clone());
            }
        }
        left
    }

    fn any_left(&mut self) -> bool {
        // Frozen: a holder that forks and exits may be between the two in an unfrozen look.
        let members = self.members;
        members.frozen(|| !self.look().is_empty())
    }

    fn wait(&mut self, until: Instant) -> Result<(), SuperviseError> {
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        Ok(())
    }
}

/// Waits (up to `leak_timeout` from now) for the module's handles to be released, and deals
/// with what holds them after that. Call once the module has been reaped. Each look at the
/// holders happens with the fix's cgroup frozen, so a holder that forks and exits every few
/// milliseconds is seen, named and (at the end) killed in one stable moment.
pub fn settle(
    module: &std::path::Path,
    pump: &mut Pump,
    members: Members<'_>,
    inodes: &[u64; 3],
    leak_timeout: Duration,
    grace: Duration,
) -> Result<Settled, SuperviseError> {
    let tracker = members.tracker;
    let deadline = Instant::now() + leak_timeout;
    let found = loop {
        let wake = pump.run(deadline).map_err(|source| SuperviseError::Io {
            module: module.to_owned(),
            what: "poll",
            source,
        })?;
        // The common case costs two syscalls: an empty cgroup (else no orphans at all: without
        // a cgroup, or while other fixes of this process run, the host may have children that
        // are not this fix's) and nothing left in the group.
        let empty = match members.cgroup {
            Some(cg) => !cg.populated(),
            None => !sys::has_children(),
        };
        if wake == Wake::Closed && empty && !sys::group_alive(tracker.pgid) {
            return Ok(Settled::default());
        }
        let (table, found) = members.frozen(|| {
            let table = sys::proc_table();
            let found: Vec<(ProcStat, Proc, Vec<&'static str>)> = holders(inodes, &table)
                .into_iter()
                .map(|(p, held)| {
                    let named = Proc::of(p.pid);
                    (p, named, held)
                })
                .collect();
            (table, found)
        });
        let past = Instant::now() >= deadline;
        if found.is_empty() && (wake == Wake::Closed || past) {
            let mut background = members.descendants(&table);
            background.retain(|p| !p.is_zombie());
            tracker.registry.remember_left(&background);
            return Ok(Settled {
                background,
                ..Settled::default()
            });
        }
        if past {
            break found;
        }
        if wake == Wake::Closed {
            std::thread::sleep(TICK.min(deadline - Instant::now().min(deadline)));
        }
    };
    // Past the leak timeout: stop reading, name the holders, and end them with the module's
    // group, with the same TERM, grace, KILL as a module that timed out; whatever holds the
    // handles at each look is one of them (a holder's children inherit them).
    pump.close_outputs();
    let mut settled = Settled::default();
    let mut doomed: Vec<ProcStat> = Vec::new();
    for (p, named, held) in found {
        if p.pgrp != tracker.pgid {
            settled.escaped.push(named.clone());
        }
        settled.holders.push((named, held));
        doomed.push(p);
    }
    let mut holding = Holding {
        members,
        pgid: tracker.pgid,
        doomed: &doomed,
        inodes,
    };
    // Only the holders and the group: a proper daemon the module left is background, not a
    // leak, and is not killed here.
    let signalled = escalate(members, &mut holding, grace, false)?.signalled;
    track::reap_orphans(&signalled);
    let mut background = members.alive();
    background.retain(|p| !signalled.iter().any(|d| d.pid == p.pid));
    tracker.registry.remember_left(&background);
    settled.background = background;
    settled.killed = signalled.len();
    Ok(settled)
}
