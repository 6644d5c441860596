//! What to run: one fix, fully described, so that `disco fix`, a dance and `disco serve` all
//! hand the same thing to [`run`](super::run).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::{Limits, LockLevel};

/// Survivor's default fix timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(45);
/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_millis(2000);
/// Default time to wait for the module's handles to close after it exited.
pub const DEFAULT_LEAK_TIMEOUT: Duration = Duration::from_millis(1000);
/// Default bound on captured stdout (and on stderr before it is reported as truncated).
pub const DEFAULT_MAX_OUTPUT: usize = 4 << 20;
/// Default directory of the lock files.
pub const DEFAULT_LOCK_DIR: &str = "/run/disco/locks";

/// One fix to run.
#[derive(Clone, Debug)]
pub struct FixSpec {
    /// The fix module (an executable script).
    pub module: PathBuf,
    /// The SurvivorFixData document written on the module's stdin.
    pub request: Vec<u8>,
    /// The host the fix is for (`DISCO_HOST`, and the lock name).
    pub host: String,
    /// The service the fix is for (`DISCO_SERVICE`, and the lock name).
    pub service: String,
    /// How long the fix may take, lock wait included.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// How long to wait for the module's handles to close after it exited.
    pub leak_timeout: Duration,
    /// Bound on captured stdout and stderr, in bytes.
    pub max_output: usize,
    /// The lock to hold (a module header may ask for a stricter one).
    pub lock: LockLevel,
    /// Where the lock files live.
    pub lock_dir: PathBuf,
    /// Run compiled (ELF) modules instead of refusing them.
    pub allow_compiled: bool,
    /// Environment variables for the module beyond `PATH`, `DISCO_HOST` and `DISCO_SERVICE`.
    pub env: Vec<(OsString, OsString)>,
    /// The command line that runs the module when it is not the module itself: a sandbox
    /// (`disco __sandbox SPEC -- /path/inside`). The module itself still gets no arguments.
    pub command: Option<Vec<OsString>>,
    /// Accept output that is not a SurvivorFixResult: a plain disco script or a template.
    /// Then stdout is the script's output (or the template's content) and its exit status is
    /// the return code; a SurvivorFixResult, when there is one, still decides.
    pub plain_output: bool,
    /// Resource limits of the fix's cgroup (a module header may ask for stricter ones).
    pub limits: Limits,
}

impl FixSpec {
    /// A fix of `module` for `service@host` with `request`, and the defaults for the rest.
    pub fn new(
        module: impl Into<PathBuf>,
        request: Vec<u8>,
        host: impl Into<String>,
        service: impl Into<String>,
    ) -> FixSpec {
        FixSpec {
            module: module.into(),
            request,
            host: host.into(),
            service: service.into(),
            timeout: DEFAULT_TIMEOUT,
            grace: DEFAULT_GRACE,
            leak_timeout: DEFAULT_LEAK_TIMEOUT,
            max_output: DEFAULT_MAX_OUTPUT,
            lock: LockLevel::ServiceAtHost,
            lock_dir: PathBuf::from(DEFAULT_LOCK_DIR),
            allow_compiled: false,
            // Modules find the host that runs them (`disco args`, `disco result`) even from a
            // checkout, where no disco is on the cleared PATH.
            env: std::env::current_exe()
                .map(|exe| vec![("DISCO".into(), exe.into_os_string())])
                .unwrap_or_default(),
            command: None,
            plain_output: false,
            limits: Limits::default(),
        }
    }
}
