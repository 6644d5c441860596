//! One fix's cgroup: made with its limits, its members, freezing, `cgroup.kill`, and its
//! removal (now, or by a later fix once it is empty and a minute old).

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys;

use super::figures::keyed;
use super::{CgroupError, Controller, Hierarchy, Limits};

/// How long a freeze may take to settle before the host looks anyway (a task in
/// uninterruptible sleep freezes when it wakes).
pub(super) const FREEZE_WAIT: Duration = Duration::from_millis(100);

/// The cgroup of one fix (v2, plus the v1 cgroups its limits need).
#[derive(Debug)]
pub struct FixCgroup {
    /// `fix-PID-RANDOM`, unique.
    pub(super) name: String,
    pub(super) v2: PathBuf,
    /// v1 cgroups, by controller.
    pub(super) v1: Vec<(Controller, PathBuf)>,
    /// Where each controller's files are: v2 or v1.
    pub(super) memory: Option<PathBuf>,
    pub(super) pids: Option<PathBuf>,
}

pub(super) fn write(path: PathBuf, value: &str) -> Result<(), CgroupError> {
    fs::write(&path, value).map_err(|source| CgroupError::Write { path, source })
}

/// How old an empty `fix-*` cgroup must be to be taken for the leftover of a disco that died:
/// a live fix's cgroup is empty only between its `mkdir` and its module's start.
pub(super) const STALE: Duration = Duration::from_secs(60);

/// Removes the empty leftovers of earlier fixes in `base`: old `fix-*` cgroups (that kept a
/// daemon until it ended, or of a disco that died; not judged by the pid in the name, which
/// may be from another PID namespace). `rmdir` refuses a cgroup with members, so nothing in
/// use is ever removed.
pub(super) fn prune(base: &Path) {
    let Ok(dir) = fs::read_dir(base) else { return };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = name.starts_with("fix-")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE))
            // One read rather than a refused rmdir for a cgroup a daemon still runs in.
            && keyed(&entry.path().join("cgroup.events"), "populated") != Some(1);
        if stale {
            remove_tree(&entry.path(), 0);
        }
    }
}

/// Removes the cgroup `dir` and the cgroups under it (a `disco fix` run by the module makes
/// its own subtree there), deepest first; a cgroup's files go with it. Bounded in depth.
pub(super) fn remove_tree(dir: &Path, depth: usize) {
    if fs::remove_dir(dir).is_ok() || depth > 8 {
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path(), depth + 1);
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

impl FixCgroup {
    /// Makes a cgroup for one fix with `limits` under `hierarchy`.
    pub fn create(hierarchy: &Hierarchy, limits: Limits) -> Result<FixCgroup, CgroupError> {
        let base = hierarchy.v2.as_ref().map_err(|e| match e {
            CgroupError::Unavailable { path, source } => CgroupError::Unavailable {
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            other => CgroupError::Unavailable {
                path: PathBuf::new(),
                source: io::Error::other(other.to_string()),
            },
        })?;
        prune(base);
        let random = sys::random_bytes(6).map_err(|source| CgroupError::Write {
            path: base.clone(),
            source,
        })?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("fix-{}-{hex}", sys::getpid());
        let v2 = base.join(&name);
        fs::create_dir(&v2).map_err(|source| CgroupError::Write {
            path: v2.clone(),
            source,
        })?;
        let mut cg = FixCgroup {
            name: name.clone(),
            v2,
            v1: Vec::new(),
            memory: None,
            pids: None,
        };
        if hierarchy.v2_controllers.contains(&Controller::Memory) {
            cg.memory = Some(cg.v2.clone());
        }
        if hierarchy.v2_controllers.contains(&Controller::Pids) {
            cg.pids = Some(cg.v2.clone());
        }
        // On an error the cgroups made so far go with `cg` (dropped).
        cg.limit(hierarchy, &name, limits)?;
        Ok(cg)
    }

    /// The v1 cgroup of `c` for this fix, made on first use.
    pub(super) fn v1_dir(
        &mut self,
        hierarchy: &Hierarchy,
        name: &str,
        c: Controller,
    ) -> Result<PathBuf, CgroupError> {
        if let Some((_, d)) = self.v1.iter().find(|(x, _)| *x == c) {
            return Ok(d.clone());
        }
        let Some((_, base)) = hierarchy.v1.iter().find(|(x, _)| *x == c) else {
            return Err(CgroupError::NoController {
                limit: c.option(),
                controller: c.name(),
                path: self.v2.parent().unwrap_or(&self.v2).to_owned(),
            });
        };
        let made = |source| CgroupError::Write {
            path: base.clone(),
            source,
        };
        fs::create_dir_all(base).map_err(made)?;
        prune(base);
        let dir = base.join(name);
        fs::create_dir(&dir).map_err(|source| CgroupError::Write {
            path: dir.clone(),
            source,
        })?;
        self.v1.push((c, dir.clone()));
        Ok(dir)
    }

    /// Writes `limits` into the v2 files where the controller is delegated, else into v1.
    pub(super) fn limit(
        &mut self,
        hierarchy: &Hierarchy,
        name: &str,
        limits: Limits,
    ) -> Result<(), CgroupError> {
        let v2 = |c| hierarchy.v2_controllers.contains(&c);
        if let Some(bytes) = limits.memory_max {
            if v2(Controller::Memory) {
                write(self.v2.join("memory.max"), &bytes.to_string())?;
                // Without swap the limit is the limit: a hog is stopped, not swapped out.
                let _ = fs::write(self.v2.join("memory.swap.max"), "0");
            } else {
                let dir = self.v1_dir(hierarchy, name, Controller::Memory)?;
                write(dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), bytes.to_string());
                self.memory = Some(dir);
            }
        }
        if let Some(n) = limits.pids_max {
            let dir = if v2(Controller::Pids) {
                self.v2.clone()
            } else {
                self.v1_dir(hierarchy, name, Controller::Pids)?
            };
            write(dir.join("pids.max"), &n.to_string())?;
            self.pids = Some(dir);
        }
        if let Some(percent) = limits.cpu_max {
            // One period of 100 ms; the quota is the percentage of it (of one CPU).
            let quota = u64::from(percent) * 1000;
            if v2(Controller::Cpu) {
                write(self.v2.join("cpu.max"), &format!("{quota} 100000"))?;
            } else {
                let dir = self.v1_dir(hierarchy, name, Controller::Cpu)?;
                write(dir.join("cpu.cfs_period_us"), "100000")?;
                write(dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        Ok(())
    }

    /// The cgroup2 folder, open, for clone3's `CLONE_INTO_CGROUP`.
    pub fn dir(&self) -> io::Result<OwnedFd> {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY)
            .open(&self.v2)
            .map(OwnedFd::from)
    }

    /// The `cgroup.procs` files of the fix's cgroups, open for writing, for the module to move
    /// itself in before its exec: the v1 ones, and the v2 one first when `v2` (a kernel
    /// without `CLONE_INTO_CGROUP`).
    pub fn procs_files(&self, v2: bool) -> io::Result<Vec<OwnedFd>> {
        std::iter::once(&self.v2)
            .filter(|_| v2)
            .chain(self.v1.iter().map(|(_, d)| d))
            .map(|d| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))
                    .map(OwnedFd::from)
            })
            .collect()
    }

    /// Whether `pid` is a member of another fix's cgroup (made by any disco), by
    /// `/proc/PID/cgroup`, whose path names the cgroup whatever namespace we see it from. A
    /// process that is gone is nobody's to claim, so it counts as foreign too.
    pub fn foreign(&self, pid: i32) -> bool {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            return true;
        };
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .and_then(|path| path.trim_end().rsplit('/').next())
            .is_some_and(|last| last.starts_with("fix-") && last != self.name)
    }

    /// The members now.
    pub fn members(&self) -> Vec<i32> {
        fs::read_to_string(self.v2.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Whether any process is left in it.
    pub fn populated(&self) -> bool {
        // Unreadable means gone: nothing can be left in a cgroup that does not exist.
        keyed(&self.v2.join("cgroup.events"), "populated").is_some_and(|n| n != 0)
    }

    /// Freezes (`true`) or thaws the members; a freeze waits (briefly) until it took hold, so
    /// that a look at the members afterwards sees a set that no fork or exit changes.
    pub fn freeze(&self, frozen: bool) {
        let _ = fs::write(
            self.v2.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        );
        if !frozen {
            return;
        }
        let end = Instant::now() + FREEZE_WAIT;
        while keyed(&self.v2.join("cgroup.events"), "frozen") == Some(0) && Instant::now() < end {
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// SIGKILL to every member, forks in flight included (`cgroup.kill`).
    pub fn kill(&self) {
        let _ = fs::write(self.v2.join("cgroup.kill"), "1");
    }

    /// Waits until no member is left or `until`; says whether none is.
    pub fn wait_empty(&self, until: Instant) -> bool {
        loop {
            if !self.populated() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Removes the cgroups if no member is left, else leaves them to a later fix's prune
    /// (cgroup v2 cannot rename a cgroup); the same happens when a fix's cgroup is dropped on an
    /// error path.
    pub fn finish(self) {
        drop(self);
    }

    pub(super) fn remove(&self) {
        for d in self
            .v1
            .iter()
            .map(|(_, d)| d)
            .chain(std::iter::once(&self.v2))
        {
            remove_tree(d, 0);
        }
    }
}

impl Drop for FixCgroup {
    fn drop(&mut self) {
        if !self.populated() {
            self.remove();
        }
    }
}
