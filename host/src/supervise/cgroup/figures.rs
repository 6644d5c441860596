//! What a fix's cgroup counted: CPU time, peak memory and processes (`cpu.stat`,
//! `memory.peak`, `pids.peak`, or their v1 names) and the limits it hit (`pids.events`,
//! `memory.events`).

use std::fs;
use std::path::Path;

use super::FixCgroup;

/// What a fix's cgroup measured: every member's CPU time, peaks where a controller keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CgroupUsage {
    /// User CPU time of every process that was a member, ms.
    pub cpu_user_ms: f64,
    /// System CPU time of every process that was a member, ms.
    pub cpu_system_ms: f64,
    /// The most memory the members used at once, bytes (with a memory controller).
    pub memory_peak_bytes: Option<u64>,
    /// The most processes the cgroup had at once (with a pids controller).
    pub pids_peak: Option<u64>,
}

/// Which limits the fix ran into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hits {
    /// Processes the kernel's OOM killer killed at the memory limit.
    pub oom_kills: u64,
    /// Forks refused at the pids limit.
    pub pids_refused: u64,
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines).
pub(super) fn keyed(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

pub(super) fn number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl FixCgroup {
    /// What the cgroup measured so far.
    pub fn usage(&self) -> CgroupUsage {
        // One read of cpu.stat for both figures: this is on every fix's path.
        let stat = fs::read_to_string(self.v2.join("cpu.stat")).unwrap_or_default();
        let ms = |key: &str| {
            stat.lines()
                .find_map(|l| {
                    l.strip_prefix(key)?
                        .strip_prefix(' ')?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map_or(0.0, |us| us as f64 / 1000.0)
        };
        let memory_peak_bytes = self.memory.as_ref().and_then(|d| {
            number(&d.join("memory.peak")).or_else(|| number(&d.join("memory.max_usage_in_bytes")))
        });
        CgroupUsage {
            cpu_user_ms: ms("user_usec"),
            cpu_system_ms: ms("system_usec"),
            memory_peak_bytes,
            pids_peak: self
                .pids
                .as_ref()
                .and_then(|d| number(&d.join("pids.peak"))),
        }
    }

    /// Which limits were hit.
    pub fn hits(&self) -> Hits {
        let oom_kills = self.memory.as_ref().map_or(0, |d| {
            keyed(&d.join("memory.events"), "oom_kill")
                .or_else(|| keyed(&d.join("memory.oom_control"), "oom_kill"))
                .unwrap_or(0)
        });
        let pids_refused = self
            .pids
            .as_ref()
            .map_or(0, |d| keyed(&d.join("pids.events"), "max").unwrap_or(0));
        Hits {
            oom_kills,
            pids_refused,
        }
    }
}
