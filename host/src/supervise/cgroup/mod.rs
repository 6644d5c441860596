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

mod figures;
mod fix;
mod hierarchy;
mod limits;

pub use figures::CgroupUsage;
pub use fix::FixCgroup;
use hierarchy::Controller;
pub use hierarchy::Hierarchy;
pub use limits::{parse_bytes, parse_percent, parse_pids, Limits};

use std::io;
use std::path::PathBuf;

/// The environment variable that points disco at the cgroup2 folder to make its fix cgroups
/// in, instead of looking for one (a delegated subtree elsewhere; the fallback test).
pub const ROOT_ENV: &str = "DISCO_CGROUP_ROOT";

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
