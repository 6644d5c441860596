//! What keeps the supervisor from running a fix at all, as opposed to a fix that ran badly
//! (which is a [`FixOutcome`](super::FixOutcome) with violations).

use std::io;
use std::path::PathBuf;

use protocol::ReturnCode;

/// Why a fix could not be run. Messages are one line, lowercase, and name the module or file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuperviseError {
    /// The module file does not exist or cannot be looked at.
    #[error("module {module} not found: {source}")]
    ModuleNotFound {
        /// The module path.
        module: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The module is a directory or another non-file.
    #[error("module {module} is not a regular file")]
    NotAFile {
        /// The module path.
        module: PathBuf,
    },
    /// The module has no execute permission for us.
    #[error("module {module} is not executable")]
    NotExecutable {
        /// The module path.
        module: PathBuf,
    },
    /// The module could not be read (to check for ELF and a lock header).
    #[error("cannot read module {module}: {source}")]
    ReadModule {
        /// The module path.
        module: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The request given for the module could not be read (`--stdin`).
    #[error("invalid request for module {module}: cannot read stdin: {source}")]
    RequestUnreadable {
        /// The module path.
        module: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The request given for the module is not a valid SurvivorFixData document: every
    /// finding, on one line.
    #[error("invalid request for module {module}: {}", source.lines().join("; "))]
    Request {
        /// The module path.
        module: PathBuf,
        /// What is wrong with the request (boxed: it holds every finding).
        #[source]
        source: Box<protocol::Invalid>,
    },
    /// The kernel refused to start the module.
    #[error("cannot start module {module}: {source}")]
    Spawn {
        /// The module path.
        module: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A host or service name that cannot be a lock file name.
    #[error("{what} '{name}' cannot name a lock file: {why}")]
    BadLockName {
        /// `host` or `service`.
        what: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A lock file or the lock directory could not be created or locked.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// The lock file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The fix's cgroup could not be set up as asked: a limit that cannot be enforced here, or
    /// a limit header that cannot be read.
    #[error("module {module}: {source}")]
    Cgroup {
        /// The module path.
        module: PathBuf,
        /// Why.
        #[source]
        source: super::CgroupError,
    },
    /// A system call the supervisor needs failed while the module ran.
    #[error("cannot supervise module {module}: {what}: {source}")]
    Io {
        /// The module path.
        module: PathBuf,
        /// What the supervisor was doing.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl SuperviseError {
    /// The ReturnCode a runner reports for this error: `MODEXEC_MISCONFIG` when the module or
    /// its request is at fault (as Survivor's "failed to exec module"), `MODEXEC_PROBLEM` when
    /// the host is.
    pub fn return_code(&self) -> ReturnCode {
        match self {
            SuperviseError::Cgroup {
                source: super::CgroupError::BadLimit { .. },
                ..
            } => ReturnCode::MISCONFIG,
            SuperviseError::Lock { .. }
            | SuperviseError::Io { .. }
            | SuperviseError::Cgroup { .. } => ReturnCode::PROBLEM,
            _ => ReturnCode::MISCONFIG,
        }
    }
}
