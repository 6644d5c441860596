//! The errors a subcommand ends with, and the one mapping from error to exit status.

use std::path::PathBuf;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the operation failed, or what was checked is not valid.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: the command line is wrong (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: another dance runs on the same root or state directory; try again later
/// (`EX_TEMPFAIL`), so that a timer never piles dances up.
pub const EXIT_BUSY: u8 = 75;

/// Why a subcommand could not do its work. Messages are one line, lowercase, and name the thing
/// at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file (`-` for stdin).
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Output could not be written.
    #[error("cannot write output: {0}")]
    Write(#[source] std::io::Error),
    /// A `-o NAME=VALUE` that is not of that form, or names a bad option.
    #[error("option '{arg}': {why}")]
    BadOption {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A lock level that is none of the four (`--lock`).
    #[error(transparent)]
    BadLock(#[from] crate::supervise::BadLockLevel),
    /// A `--since` that is no time.
    #[error(transparent)]
    BadSince(#[from] crate::serve::BadSince),
    /// A document could not be written.
    #[error("cannot write the request: {0}")]
    Document(#[from] protocol::WriteError),
    /// A fix could not be run at all (`disco fix`): the module or its request is at fault.
    #[error(transparent)]
    Supervise(#[from] crate::supervise::SuperviseError),
    /// A merge, or the recovery of one, failed.
    #[error(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    /// A sandbox could not be set up (`disco shell`, `__sandbox`, `__dance-sandbox`).
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// A dance failed before it could report.
    #[error(transparent)]
    Dance(#[from] crate::dance::DanceError),
    /// The fleet's reports could not be read.
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    /// `disco serve`, `disco remote` or `disco history` could not start or go on.
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
    /// Anything else, already worded for the user.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The exit status this error ends `disco` with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::BadOption { .. } | Error::BadLock(_) | Error::BadSince(_) => EXIT_USAGE,
            // `disco fix` is a drop-in event handler: its errors exit with a ReturnCode too.
            Error::Supervise(e) => e.return_code().exit_status(),
            Error::Apply(crate::apply::ApplyError::Busy { .. })
            | Error::Dance(crate::dance::DanceError::Busy(_))
            | Error::Dance(crate::dance::DanceError::Apply(crate::apply::ApplyError::Busy {
                ..
            })) => EXIT_BUSY,
            _ => EXIT_FAILURE,
        }
    }
}

/// The result of a subcommand.
pub type Result<T, E = Error> = std::result::Result<T, E>;
