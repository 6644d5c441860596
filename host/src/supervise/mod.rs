//! The fix-module host: runs one fix module under the Survivor rules and never hangs.
//!
//! One stage a module, in the order [`run`] goes through them: `inspect` (rule 3, lock header),
//! `lock` (rule 1), `spawn` (rule 5: no arguments, own process group, clean environment),
//! `pump` (the poll loop over the pipes and the module's pidfd), `timeout` (TERM, grace, KILL
//! of everything the module started), `leak` (rule 7), `outcome` (rules 8 and 9, the decided
//! ReturnCode), with `track` finding the module's processes through `/proc` and the host's
//! child-subreaper role. All syscalls are in [`crate::sys`].

mod cgroup;
mod error;
mod escalate;
mod inspect;
mod leak;
mod lock;
mod outcome;
mod pump;
mod run;
mod spawn;
mod spec;
mod timeout;
mod track;

pub use cgroup::{
    parse_bytes, parse_percent, parse_pids, CgroupError, CgroupUsage, Limits,
    ROOT_ENV as CGROUP_ROOT_ENV,
};
pub use error::SuperviseError;
pub use inspect::{header_limits, header_lock, Inspection};
pub use lock::{acquire, Acquired, BadLockLevel, LockGuard, LockLevel, LockPlan};
pub use outcome::{Exit, FixOutcome, Proc, Rusage, Violation, ViolationKind};
pub use run::{run, Supervisor};
pub use spec::{
    FixSpec, DEFAULT_GRACE, DEFAULT_LEAK_TIMEOUT, DEFAULT_LOCK_DIR, DEFAULT_MAX_OUTPUT,
    DEFAULT_TIMEOUT,
};
