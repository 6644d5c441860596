//! Where disco's cgroups are: the cgroup2 subtree (`$DISCO_CGROUP_ROOT`, a delegated unit's,
//! or the top of the mount) with the controllers it can enable, and the v1 hierarchies of the
//! controllers it lacks, found from `/proc/self/mountinfo` and `/proc/self/cgroup`.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::sys;

use super::{CgroupError, ROOT_ENV};

/// The controllers a limit needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    pub(super) fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }

    pub(super) fn option(self) -> &'static str {
        match self {
            Controller::Memory => "--memory-max",
            Controller::Pids => "--pids-max",
            Controller::Cpu => "--cpu-max",
        }
    }
}

/// Where this process makes its fix cgroups, found once (see the module documentation).
#[derive(Debug)]
pub struct Hierarchy {
    /// disco's cgroup2 subtree, or why there is none.
    pub(super) v2: Result<PathBuf, CgroupError>,
    /// The controllers enabled for the fix cgroups in the subtree.
    pub(super) v2_controllers: Vec<Controller>,
    /// For each controller with a v1 hierarchy: disco's subtree there (made when first used).
    pub(super) v1: Vec<(Controller, PathBuf)>,
    /// The subtrees held open by [`pin`]; the paths above then go through `/proc/self/fd`.
    pub(super) pins: Vec<OwnedFd>,
}

impl Hierarchy {
    /// Finds this process's hierarchy now (see the module documentation), and says the one
    /// warning when it has none. With `pin`, holds its subtrees open, so that fixes run later
    /// by this process or its forks reach them through `/proc/self/fd` even from mount
    /// namespaces where `/sys/fs/cgroup` is read-only or absent (the dance's sandbox): call it
    /// before entering such a namespace, in a process that forks but does not exec (the
    /// descriptors are close-on-exec, so no module inherits them).
    pub fn find(pin: bool) -> Hierarchy {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut h = Hierarchy::discover(
            &mountinfo,
            &own,
            std::env::var_os(ROOT_ENV).map(PathBuf::from),
        );
        if pin {
            h.pin();
        }
        if let Err(e) = &h.v2 {
            // The one warning line: fixes still run, tracked through /proc as before.
            crate::output::warning(&format!(
                "{e}; fixes are tracked through /proc only, without limits or cgroup accounting"
            ));
        }
        h
    }
}

/// One line of `/proc/self/mountinfo`: (root within the filesystem, mount point, filesystem
/// type, super options). See proc_pid_mountinfo(5).
pub(super) fn mounts(mountinfo: &str) -> impl Iterator<Item = (&str, &str, &str, &str)> {
    mountinfo.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut l = left.split(' ');
        let root = l.nth(3)?;
        let point = l.next()?;
        let mut r = right.split(' ');
        let fstype = r.next()?;
        let superopts = r.nth(1).unwrap_or("");
        Some((root, point, fstype, superopts))
    })
}

/// Whether a `cgroup.controllers` or `cgroup.subtree_control` text lists controller `c`.
pub(super) fn lists(text: &str, c: Controller) -> bool {
    text.split_whitespace().any(|x| x == c.name())
}

/// The leaf a disco in a delegated cgroup moves itself into (see [`hand_down`]).
pub(super) const SELF_LEAF: &str = "disco-self";

/// The delegated cgroup a process is in: its own, or the one above when it is the leaf that
/// [`hand_down`] moved disco into (so that every disco of a unit shares one subtree).
pub(super) fn delegated(own: &Path) -> PathBuf {
    match own.parent() {
        Some(parent) if own.file_name().is_some_and(|n| n == SELF_LEAF) => parent.to_owned(),
        _ => own.to_owned(),
    }
}

/// In a delegated cgroup (systemd's `Delegate=yes`) disco itself is a member, and the kernel
/// lets a cgroup with members give its children no controller ("no internal processes"). So,
/// as systemd asks of a delegated service, disco moves itself into a leaf (`disco-self`) and
/// enables in `own` the controllers it has, for its subtree. Only when disco is the cgroup's
/// one process: the processes of a unit that runs more are not disco's to move.
pub(super) fn hand_down(own: &Path) {
    let read = |f: &str| fs::read_to_string(own.join(f)).unwrap_or_default();
    let (available, enabled) = (read("cgroup.controllers"), read("cgroup.subtree_control"));
    let missing: Vec<Controller> = Controller::ALL
        .into_iter()
        .filter(|&c| lists(&available, c) && !lists(&enabled, c))
        .collect();
    if missing.is_empty() {
        return;
    }
    let me = std::process::id().to_string();
    let procs = read("cgroup.procs");
    if procs.lines().any(|p| p.trim() != me) {
        return;
    }
    let leaf = own.join(SELF_LEAF);
    if fs::create_dir(&leaf).is_err() && !leaf.is_dir() {
        return;
    }
    if fs::write(leaf.join("cgroup.procs"), &me).is_err() {
        return;
    }
    for c in missing {
        let _ = fs::write(own.join("cgroup.subtree_control"), format!("+{}", c.name()));
    }
}

/// Joins a cgroup path (`/a/b`, from `/proc/self/cgroup`) below `base`, minus the mount's root.
pub(super) fn below(base: &str, mount_root: &str, path: &str) -> PathBuf {
    let rel = path.strip_prefix(mount_root).unwrap_or(path);
    let mut p = PathBuf::from(base);
    p.extend(rel.split('/').filter(|s| !s.is_empty()));
    p
}

impl Hierarchy {
    /// Finds the subtrees from the text of `/proc/self/mountinfo` and `/proc/self/cgroup`, and
    /// makes disco's cgroup2 subtree (`root` instead when given).
    pub(super) fn discover(mountinfo: &str, own: &str, root: Option<PathBuf>) -> Hierarchy {
        let v2_mount = mounts(mountinfo).find(|m| m.2 == "cgroup2");
        let own_v2 = own.lines().find_map(|l| l.strip_prefix("0::"));
        let candidates: Vec<PathBuf> = match root {
            Some(root) => vec![root],
            None => {
                let mut c = Vec::new();
                if let Some((mroot, point, _, _)) = v2_mount {
                    if let Some(path) = own_v2 {
                        c.push(delegated(&below(point, mroot, path)).join("disco"));
                    }
                    let top = Path::new(point).join("disco");
                    if !c.contains(&top) {
                        c.push(top);
                    }
                }
                c
            }
        };
        let mut v2 = Err(CgroupError::Unavailable {
            path: PathBuf::from("/sys/fs/cgroup"),
            source: io::Error::new(io::ErrorKind::NotFound, "no cgroup2 filesystem is mounted"),
        });
        for dir in candidates {
            v2 = Self::usable(&dir).map(|()| dir.clone()).map_err(|source| {
                CgroupError::Unavailable {
                    path: dir.clone(),
                    source,
                }
            });
            if v2.is_ok() {
                break;
            }
        }
        let v2_controllers = match &v2 {
            Ok(dir) => {
                if let (Some(parent), Some(path)) = (dir.parent(), own_v2) {
                    if let Some((mroot, point, _, _)) = v2_mount {
                        if parent == delegated(&below(point, mroot, path)) {
                            hand_down(parent);
                        }
                    }
                }
                Self::enable_controllers(dir)
            }
            Err(_) => Vec::new(),
        };
        let mut v1 = Vec::new();
        for c in Controller::ALL {
            if v2_controllers.contains(&c) {
                continue;
            }
            let own_path = own.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                ctrls.split(',').any(|x| x == c.name()).then_some(path)
            });
            let mount = mounts(mountinfo)
                .find(|m| m.2 == "cgroup" && m.3.split(',').any(|o| o == c.name()));
            if let (Some(path), Some((mroot, point, _, _))) = (own_path, mount) {
                v1.push((c, below(point, mroot, path).join("disco")));
            }
        }
        Hierarchy {
            v2,
            v2_controllers,
            v1,
            pins: Vec::new(),
        }
    }

    /// Opens each subtree (making the v1 ones) and names it by its descriptor from now on.
    pub(super) fn pin(&mut self) {
        fn open(dir: &Path) -> io::Result<OwnedFd> {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_DIRECTORY)
                .open(dir)
                .map(OwnedFd::from)
        }
        let through = |fd: &OwnedFd| {
            use std::os::fd::AsRawFd;
            PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        };
        if let Ok(dir) = &self.v2 {
            match open(dir) {
                Ok(fd) => {
                    self.v2 = Ok(through(&fd));
                    self.pins.push(fd);
                }
                Err(source) => {
                    self.v2 = Err(CgroupError::Unavailable {
                        path: dir.clone(),
                        source,
                    })
                }
            }
        }
        let mut pinned = Vec::new();
        for (c, dir) in std::mem::take(&mut self.v1) {
            if let Ok(fd) = fs::create_dir_all(&dir).and_then(|()| open(&dir)) {
                pinned.push((c, through(&fd)));
                self.pins.push(fd);
            }
        }
        self.v1 = pinned;
    }

    /// Makes `dir` if need be and checks it is a cgroup2 folder.
    pub(super) fn usable(dir: &Path) -> io::Result<()> {
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if !sys::is_cgroup2(dir) || !dir.join("cgroup.procs").exists() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a cgroup2 folder",
            ));
        }
        Ok(())
    }

    /// Enables the controllers that `dir` has for its children (it holds no process, so the
    /// kernel allows it) and says which are on.
    pub(super) fn enable_controllers(dir: &Path) -> Vec<Controller> {
        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
        let available = read("cgroup.controllers");
        let before = read("cgroup.subtree_control");
        for c in Controller::ALL {
            if lists(&available, c) && !lists(&before, c) {
                // Refused when the folder has processes of its own (an override root): then
                // the v1 hierarchies, or no limits.
                let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{}", c.name()));
            }
        }
        let enabled = if Controller::ALL
            .iter()
            .any(|&c| lists(&available, c) && !lists(&before, c))
        {
            read("cgroup.subtree_control")
        } else {
            before
        };
        Controller::ALL
            .into_iter()
            .filter(|&c| lists(&enabled, c))
            .collect()
    }

    /// disco's cgroup2 subtree, or why there is none.
    pub fn v2(&self) -> Result<&Path, &CgroupError> {
        self.v2.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
30 22 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
";
    const HYBRID_OWN: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/jobs/j1
2:cpu,cpuacct:/
0::/
";

    #[test]
    fn hybrid_v1_subtrees_are_under_our_own_cgroups() {
        let h = Hierarchy::discover(
            HYBRID_MOUNTS,
            HYBRID_OWN,
            Some(PathBuf::from("/nonexistent/for/the/test")),
        );
        assert!(h.v2().is_err());
        let v1: Vec<_> = h.v1.iter().map(|(c, p)| (c.name(), p.clone())).collect();
        assert_eq!(
            v1,
            [
                (
                    "memory",
                    PathBuf::from("/sys/fs/cgroup/memory/jobs/j1/disco")
                ),
                ("pids", PathBuf::from("/sys/fs/cgroup/pids/disco")),
                ("cpu", PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/disco")),
            ]
        );
    }

    #[test]
    fn every_disco_of_a_delegated_unit_shares_one_subtree() {
        let unit = Path::new("/sys/fs/cgroup/system.slice/disco-serve.service");
        // The first disco of the unit, and the workers it starts after moving to its leaf.
        assert_eq!(delegated(unit), unit);
        assert_eq!(delegated(&unit.join(SELF_LEAF)), unit);
        assert_eq!(
            delegated(&unit.join("other")),
            unit.join("other"),
            "only disco's own leaf"
        );
    }
}
