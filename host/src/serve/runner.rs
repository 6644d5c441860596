//! Running one queued fix: on the dispatcher's worker thread, through the server's one
//! [`Supervisor`], exactly as `disco fix` runs it.
//!
//! Why threads of one process can share a supervisor: each fix runs in a cgroup of its own, so
//! its processes are its cgroup's members wherever they go, and the orphans re-parented to the
//! server (a child subreaper) are told apart by the cgroup they are in (`supervise/track.rs`):
//! two fixes at once never claim, kill or report each other's processes, and a daemon one fix
//! leaves is never taken for another's. Without a writable cgroup v2 an orphan carries no mark
//! of its fix, so the server then runs one fix at a time (see [`Runner::concurrency`]).

use std::path::{Path, PathBuf};

use super::rules::Planned;
use crate::supervise::{CgroupUsage, FixSpec, Supervisor};

/// How one fix ended, as the server records it.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The decided ReturnCode.
    pub return_code: u32,
    /// Its comment.
    pub comment: String,
    /// Wall time of the fix, ms.
    pub duration_ms: u64,
    /// What the fix's cgroup measured (none without cgroups, or when it could not run).
    pub cgroup: Option<CgroupUsage>,
    /// The host's outcome as JSON (`disco fix --format json`), or `{"error": ...}` when the fix
    /// could not be attempted.
    pub outcome: serde_json::Value,
}

/// Runs the server's fixes, several at once, under one [`Supervisor`].
#[derive(Debug)]
pub struct Runner {
    supervisor: Supervisor,
    lock_dir: PathBuf,
}

impl Runner {
    /// A runner locking under `lock_dir`; finds the cgroup subtree now.
    pub fn new(lock_dir: &Path) -> Runner {
        Runner {
            supervisor: Supervisor::new(),
            lock_dir: lock_dir.to_owned(),
        }
    }

    /// How many fixes may run at once, of `wanted`: one without cgroups, where concurrent
    /// fixes of one process could claim each other's orphans.
    pub fn concurrency(&self, wanted: usize) -> usize {
        if self.supervisor.has_cgroups() {
            wanted
        } else {
            if wanted > 1 {
                crate::output::warning(
                    "without a writable cgroup v2, disco serve runs one fix at a time",
                );
            }
            1
        }
    }

    /// Runs one fix to its end (the host bounds its time) and says how it went.
    pub fn run(&self, plan: &Planned) -> Ran {
        let mut spec = FixSpec::new(
            &plan.module,
            plan.request.clone(),
            &plan.host,
            &plan.service,
        );
        spec.timeout = plan.timeout;
        spec.lock = plan.lock;
        spec.lock_dir = self.lock_dir.clone();
        spec.limits = plan.resources;
        match self.supervisor.run(&spec) {
            Ok(o) => Ran {
                return_code: u32::from(o.return_code.value()),
                comment: o.comment.clone(),
                duration_ms: u64::try_from(o.duration.as_millis()).unwrap_or(u64::MAX),
                cgroup: o.cgroup,
                outcome: serde_json::to_value(&o).unwrap_or_default(),
            },
            Err(e) => {
                let why = e.to_string();
                Ran {
                    return_code: u32::from(e.return_code().value()),
                    comment: why.clone(),
                    duration_ms: 0,
                    cgroup: None,
                    outcome: serde_json::json!({
                        "error": why,
                        "return_code": e.return_code().value(),
                    }),
                }
            }
        }
    }
}
