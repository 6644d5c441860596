//! Finding a module's processes, wherever they went.
//!
//! The host is a child subreaper, so a descendant whose parent dies is re-parented to the host,
//! never to init: every live descendant is reachable through parent links from the module, from
//! the module's process group, or from an orphan the host inherited. That is what lets the host
//! find (and kill at the timeout) a process that left the group with `setsid` or `setpgid`.
//!
//! Orphans re-parented to the host carry no mark of the fix they came from. The host attributes
//! to a fix the orphans started after its module that are not another running module and, with
//! cgroups, not a member of another fix's cgroup ([`Members`]); so two fixes supervised at once
//! by one process never claim each other's orphans when the host has cgroups, and may without.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::cgroup::FixCgroup;
use crate::sys::{self, ProcStat};

/// What the fixes of one [`Supervisor`](super::Supervisor) share: the modules it supervises
/// now (host children, but nobody's orphans) and the processes its earlier fixes left in the
/// background, by (pid, start time): when they end they are the host's zombies (it is their
/// subreaper), and only these are reaped on their behalf.
#[derive(Debug, Default)]
pub struct Registry {
    modules: Mutex<Vec<i32>>,
    left: Mutex<Vec<(i32, u64)>>,
}

impl Registry {
    /// Records a running module.
    pub fn register_module(&self, pid: i32) {
        self.modules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pid);
    }

    /// Forgets a module once it is reaped.
    pub fn unregister_module(&self, pid: i32) {
        self.modules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != pid);
    }

    fn modules(&self) -> Vec<i32> {
        self.modules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Remembers processes a fix left running, to reap them when they end.
    pub fn remember_left(&self, procs: &[ProcStat]) {
        let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        left.extend(procs.iter().map(|p| (p.pid, p.start_time)));
    }

    /// Reaps the zombies among the processes earlier fixes left behind, so a long-lived host
    /// does not collect them. Cheap when the host has no children at all.
    pub fn reap_left(&self) {
        let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        if left.is_empty() || !sys::has_children() {
            left.clear();
            return;
        }
        left.retain(|&(pid, start)| match sys::proc_stat(pid) {
            Some(s) if s.start_time == start => {
                if s.is_zombie() && s.ppid == sys::getpid() {
                    let _ = sys::wait4(pid, true);
                    false
                } else {
                    true
                }
            }
            // Gone, or the pid now names another process.
            _ => false,
        });
    }
}

/// One module's process tree.
#[derive(Clone, Copy, Debug)]
pub struct Tracker<'a> {
    /// The module's pid.
    pub module: i32,
    /// The process group it was given (its own pid).
    pub pgid: i32,
    /// The module's start time.
    pub start_time: u64,
    /// What the supervisor's fixes share.
    pub registry: &'a Registry,
}

impl Tracker<'_> {
    /// The module's live and zombie descendants in `table`, the module itself included while it
    /// exists; never the host.
    pub fn descendants(&self, table: &[ProcStat]) -> Vec<ProcStat> {
        let me = sys::getpid();
        let modules = self.registry.modules();
        let mut children: HashMap<i32, Vec<&ProcStat>> = HashMap::new();
        for p in table {
            children.entry(p.ppid).or_default().push(p);
        }
        let mut seen = HashSet::new();
        let mut stack: Vec<&ProcStat> = table
            .iter()
            .filter(|p| {
                p.pid != me
                    && (p.pid == self.module
                        || p.pgrp == self.pgid
                        || (p.ppid == me
                            && p.start_time >= self.start_time
                            && !modules.contains(&p.pid)))
            })
            .collect();
        let mut found = Vec::new();
        while let Some(p) = stack.pop() {
            if p.pid == me || !seen.insert(p.pid) {
                continue;
            }
            found.push(p.clone());
            if let Some(kids) = children.get(&p.pid) {
                stack.extend(kids.iter().copied());
            }
        }
        found.sort_by_key(|p| p.pid);
        found
    }

    /// The live (not zombie) descendants now.
    pub fn alive(&self) -> Vec<ProcStat> {
        let mut d = self.descendants(&sys::proc_table());
        d.retain(|p| !p.is_zombie());
        d
    }
}

/// Reaps the host's zombie children among `procs` (orphans it inherited and killed).
pub fn reap_orphans(procs: &[ProcStat]) {
    let me = sys::getpid();
    for p in procs {
        if let Some(now) = sys::proc_stat(p.pid) {
            if now.start_time == p.start_time && now.ppid == me && now.is_zombie() {
                let _ = sys::wait4(p.pid, true);
            }
        }
    }
}

/// Everything of one fix: its cgroup's members when it has a cgroup (the truth), and what the
/// `/proc` tracking finds (the second line: a process that left the cgroup, or a host without
/// cgroups).
#[derive(Clone, Copy, Debug)]
pub struct Members<'a> {
    /// The `/proc` tracking of the module's tree.
    pub tracker: &'a Tracker<'a>,
    /// The fix's cgroup.
    pub cgroup: Option<&'a FixCgroup>,
}

impl Members<'_> {
    /// What the `/proc` tracking finds in `table`, minus the members of another fix's cgroup
    /// (an orphan re-parented to a host running several fixes carries no other mark of its
    /// fix), plus this cgroup's members.
    pub fn descendants(&self, table: &[ProcStat]) -> Vec<ProcStat> {
        let mut found = self.tracker.descendants(table);
        if let Some(cg) = self.cgroup {
            let members = cg.members();
            found.retain(|p| members.contains(&p.pid) || !cg.foreign(p.pid));
            for pid in members {
                if !found.iter().any(|p| p.pid == pid) {
                    found.extend(table.iter().find(|p| p.pid == pid).cloned());
                }
            }
        }
        found
    }

    /// Every live process of the fix now.
    pub fn alive(&self) -> Vec<ProcStat> {
        let mut alive = self.tracker.alive();
        if let Some(cg) = self.cgroup {
            let members = cg.members();
            alive.retain(|p| members.contains(&p.pid) || !cg.foreign(p.pid));
            for pid in members {
                if alive.iter().any(|p| p.pid == pid) {
                    continue;
                }
                if let Some(p) = sys::proc_stat(pid).filter(|p| !p.is_zombie()) {
                    alive.push(p);
                }
            }
        }
        alive
    }

    /// Whether anything of the fix is alive: one read of `cgroup.events` when the cgroup says
    /// so, else the `/proc` tracking.
    pub fn any_alive(&self) -> bool {
        self.cgroup.is_some_and(|cg| cg.populated()) || !self.tracker.alive().is_empty()
    }

    /// Runs `f` with the cgroup frozen (when there is one), so that the processes `f` looks at
    /// neither fork nor exit meanwhile; a fatal signal still ends a frozen process.
    pub fn frozen<R>(&self, f: impl FnOnce() -> R) -> R {
        if let Some(cg) = self.cgroup {
            cg.freeze(true);
        }
        let r = f();
        if let Some(cg) = self.cgroup {
            cg.freeze(false);
        }
        r
    }
}
