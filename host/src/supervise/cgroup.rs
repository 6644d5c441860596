//! A cgroup per fix: membership, not ancestry, says what a fix started.
//!
//! Every fix gets a cgroup v2 of its own (`fix-PID-RANDOM`) under disco's subtree, and its
//! module moves itself in after the fork and before the exec, so everything it ever starts is a
//! member, whatever it does with sessions, groups or parents (only a process that writes itself
//! into another cgroup leaves, which needs root and is what the `/proc` tracking still covers).
//! The kernel gives every cgroup v2, even without controllers: the member list
//! (`cgroup.procs`), whether any is left (`cgroup.events`), a freezer (`cgroup.freeze`, so a
//! process that forks and exits every few milliseconds can be looked at and killed in one
//! stable moment), `cgroup.kill` (SIGKILL to every member, atomically against forks) and the CPU
//! time of every member (`cpu.stat`, reparented or not, waited for or not).
//!
//! Where the subtree is: `$DISCO_CGROUP_ROOT` when set (used as it is), else `disco` under
//! disco's own cgroup when it can be made there (a `Delegate=yes` unit), else `disco` at the top
//! of the cgroup2 mount (a hybrid host, which mounts cgroup2 at `/sys/fs/cgroup/unified` beside
//! the v1 controllers). Limits use the v2 controllers that the subtree has; a limit whose
//! controller is not there uses the v1 hierarchy of that controller (`memory`, `pids`, `cpu`),
//! under disco's own v1 cgroup so that the limits of whoever runs disco still hold.
//!
//! A cgroup that still has members when the fix ends (a proper daemon the module left) stays,
//! and a later fix removes it once it is empty and a minute old; so does the cgroup of a disco
//! that died.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys;

/// The environment variable that points disco at the cgroup2 folder to make its fix cgroups
/// in, instead of looking for one (a delegated subtree elsewhere; the fallback test).
pub const ROOT_ENV: &str = "DISCO_CGROUP_ROOT";

/// How long a freeze may take to settle before the host looks anyway (a task in
/// uninterruptible sleep freezes when it wakes).
const FREEZE_WAIT: Duration = Duration::from_millis(100);

/// Why a fix cannot have the cgroup it asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// No cgroup2 folder disco may make cgroups in.
    #[error("no writable cgroup v2 ({path}): {source}")]
    Unavailable {
        /// The folder tried last.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: io::Error,
    },
    /// A cgroup could not be made, or a file of it written.
    #[error("cannot set up cgroup {path}: {source}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A limit was asked for and no controller of this host can enforce it.
    #[error("cannot enforce {limit}: the {controller} controller is neither delegated to {path} (cgroup v2) nor mounted as cgroup v1")]
    NoController {
        /// The limit (`--memory-max`...).
        limit: &'static str,
        /// The controller it needs.
        controller: &'static str,
        /// disco's cgroup2 subtree.
        path: PathBuf,
    },
    /// A limit's value cannot be read.
    #[error("invalid {limit} '{value}': {why}")]
    BadLimit {
        /// Which limit.
        limit: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Resource limits of one fix (`--memory-max`, `--pids-max`, `--cpu-max`, or the module's
/// `# survivor-memory-max:` ... headers). `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory (anonymous and page cache) its processes may use together.
    pub memory_max: Option<u64>,
    /// How many processes and threads it may have at once.
    pub pids_max: Option<u64>,
    /// CPU time it may use, in percent of one CPU per wall-clock period (200 = two CPUs).
    pub cpu_max: Option<u32>,
}

impl Limits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// The stricter of `self` and `other`, limit by limit.
    pub fn stricter(self, other: Limits) -> Limits {
        fn min<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        Limits {
            memory_max: min(self.memory_max, other.memory_max),
            pids_max: min(self.pids_max, other.pids_max),
            cpu_max: min(self.cpu_max, other.cpu_max),
        }
    }
}

/// Reads a byte count: digits with an optional binary suffix `K`, `M`, `G` or `T` (`64M`).
pub fn parse_bytes(limit: &'static str, s: &str) -> Result<u64, CgroupError> {
    let bad = |why| CgroupError::BadLimit {
        limit,
        value: s.to_owned(),
        why,
    };
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad("the suffix must be K, M, G or T")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad("not a number of bytes"))?;
    let bytes = n.checked_mul(1 << shift).ok_or_else(|| bad("too large"))?;
    if bytes < 1 << 20 {
        return Err(bad("less than 1M, too little for any module"));
    }
    Ok(bytes)
}

/// Reads a process count (at least 1).
pub fn parse_pids(limit: &'static str, s: &str) -> Result<u64, CgroupError> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(CgroupError::BadLimit {
            limit,
            value: s.to_owned(),
            why: "not a positive number of processes",
        }),
    }
}

/// Reads a CPU percentage (1 to 100 per CPU).
pub fn parse_percent(limit: &'static str, s: &str) -> Result<u32, CgroupError> {
    match s.trim().trim_end_matches('%').parse::<u32>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(CgroupError::BadLimit {
            limit,
            value: s.to_owned(),
            why: "not a percentage of one CPU (1 to 100000)",
        }),
    }
}

/// The controllers a limit needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }

    fn option(self) -> &'static str {
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
    v2: Result<PathBuf, CgroupError>,
    /// The controllers enabled for the fix cgroups in the subtree.
    v2_controllers: Vec<Controller>,
    /// For each controller with a v1 hierarchy: disco's subtree there (made when first used).
    v1: Vec<(Controller, PathBuf)>,
    /// The subtrees held open by [`pin`]; the paths above then go through `/proc/self/fd`.
    pins: Vec<OwnedFd>,
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
fn mounts(mountinfo: &str) -> impl Iterator<Item = (&str, &str, &str, &str)> {
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
fn lists(text: &str, c: Controller) -> bool {
    text.split_whitespace().any(|x| x == c.name())
}

/// The leaf a disco in a delegated cgroup moves itself into (see [`hand_down`]).
const SELF_LEAF: &str = "disco-self";

/// The delegated cgroup a process is in: its own, or the one above when it is the leaf that
/// [`hand_down`] moved disco into (so that every disco of a unit shares one subtree).
fn delegated(own: &Path) -> PathBuf {
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
fn hand_down(own: &Path) {
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
fn below(base: &str, mount_root: &str, path: &str) -> PathBuf {
    let rel = path.strip_prefix(mount_root).unwrap_or(path);
    let mut p = PathBuf::from(base);
    p.extend(rel.split('/').filter(|s| !s.is_empty()));
    p
}

impl Hierarchy {
    /// Finds the subtrees from the text of `/proc/self/mountinfo` and `/proc/self/cgroup`, and
    /// makes disco's cgroup2 subtree (`root` instead when given).
    fn discover(mountinfo: &str, own: &str, root: Option<PathBuf>) -> Hierarchy {
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
    fn pin(&mut self) {
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
    fn usable(dir: &Path) -> io::Result<()> {
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
    fn enable_controllers(dir: &Path) -> Vec<Controller> {
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

/// The cgroup of one fix (v2, plus the v1 cgroups its limits need).
#[derive(Debug)]
pub struct FixCgroup {
    /// `fix-PID-RANDOM`, unique.
    name: String,
    v2: PathBuf,
    /// v1 cgroups, by controller.
    v1: Vec<(Controller, PathBuf)>,
    /// Where each controller's files are: v2 or v1.
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
}

fn write(path: PathBuf, value: &str) -> Result<(), CgroupError> {
    fs::write(&path, value).map_err(|source| CgroupError::Write { path, source })
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines).
fn keyed(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

fn number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// How old an empty `fix-*` cgroup must be to be taken for the leftover of a disco that died:
/// a live fix's cgroup is empty only between its `mkdir` and its module's start.
const STALE: Duration = Duration::from_secs(60);

/// Removes the empty leftovers of earlier fixes in `base`: old `fix-*` cgroups (that kept a
/// daemon until it ended, or of a disco that died; not judged by the pid in the name, which
/// may be from another PID namespace). `rmdir` refuses a cgroup with members, so nothing in
/// use is ever removed.
fn prune(base: &Path) {
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
fn remove_tree(dir: &Path, depth: usize) {
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
    fn v1_dir(
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
    fn limit(
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

    /// Removes the cgroups if no member is left, else leaves them to a later fix's prune
    /// (cgroup v2 cannot rename a cgroup); the same happens when a fix's cgroup is dropped on an
    /// error path.
    pub fn finish(self) {
        drop(self);
    }

    fn remove(&self) {
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

    #[test]
    fn limits_parse_and_combine() {
        assert_eq!(parse_bytes("m", "64M").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("m", "2g").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("m", "2097152").unwrap(), 2 << 20);
        assert!(parse_bytes("m", "12").is_err());
        assert!(parse_bytes("m", "5X").is_err());
        assert!(parse_pids("p", "0").is_err());
        assert_eq!(parse_percent("c", "50%").unwrap(), 50);
        let a = Limits {
            memory_max: Some(10),
            pids_max: None,
            cpu_max: Some(50),
        };
        let b = Limits {
            memory_max: Some(5),
            pids_max: Some(64),
            cpu_max: None,
        };
        assert_eq!(
            a.stricter(b),
            Limits {
                memory_max: Some(5),
                pids_max: Some(64),
                cpu_max: Some(50)
            }
        );
    }
}
