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
    /// A file could not be written (`disco new`, `disco report --html`).
    #[error("cannot write {}: {source}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A folder could not be made.
    #[error("cannot create {}: {source}", path.display())]
    Create {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `disco new` would overwrite a file.
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    /// `disco validate`'s PATH does not exist.
    #[error("{}: no such file or directory", .0.display())]
    NoSuchPath(PathBuf),
    /// A `-o NAME=VALUE` that is not of that form, or names a bad option.
    #[error("option '{arg}': {why}")]
    BadOption {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `disco dance --timeout` that is no duration (negative, or too large).
    #[error("--timeout {0}: not a duration")]
    BadTimeout(f64),
    /// `disco validate --env` that is not `NAME=VALUE`.
    #[error("--env '{0}': expected NAME=VALUE")]
    BadEnv(String),
    /// `disco new`'s NAME is no option name.
    #[error("module name '{0}': use only letters, digits, '_', '-' and '.', not first '.'")]
    BadModuleName(String),
    /// `disco param set -` was given a value too.
    #[error("'set -' reads PATH=VALUE lines from stdin and takes no value")]
    SetFromStdinWithValue,
    /// A lock level that is none of the four (`--lock`).
    #[error(transparent)]
    BadLock(#[from] crate::supervise::BadLockLevel),
    /// A `--since` that is no time.
    #[error(transparent)]
    BadSince(#[from] crate::serve::BadSince),
    /// The host name, the default of `--host`, cannot be read.
    #[error("cannot read the host name (give --host): {0}")]
    Hostname(#[source] std::io::Error),
    /// The running disco's own path, which `disco serve` runs fixes with, cannot be found.
    #[error("cannot find the disco binary to run fixes: {0}")]
    SelfExe(#[source] std::io::Error),
    /// A document could not be written.
    #[error("cannot write the request: {0}")]
    Document(#[from] protocol::WriteError),
    /// JSON could not be written.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// `disco __defer` could not record its command for after the merge.
    #[error("cannot record a deferred command in {path}: {source}")]
    Defer {
        /// The record.
        path: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A parameter tree could not be read or changed, or a path is no key (`disco param`).
    #[error(transparent)]
    Param(#[from] crate::params::ParamError),
    /// A fix could not be run at all (`disco fix`): the module or its request is at fault.
    #[error(transparent)]
    Supervise(#[from] crate::supervise::SuperviseError),
    /// A merge, or the recovery of one, failed.
    #[error(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    /// A sandbox could not be set up or its run found (`disco shell`, `disco diff`,
    /// `__sandbox`, `__dance-sandbox`).
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// `disco shell`'s sandbox could not be started.
    #[error("cannot start the sandbox: {0}")]
    StartSandbox(#[source] std::io::Error),
    /// `disco shell`'s terminal could not be opened or relayed.
    #[error(transparent)]
    Terminal(#[from] crate::sandbox::terminal::TerminalError),
    /// A sandbox run's layers could not be compared (`disco diff RUN`).
    #[error("run {run}: {source}")]
    Diff {
        /// The run.
        run: String,
        /// Why.
        #[source]
        source: crate::diff::DiffError,
    },
    /// A dance failed before it could report.
    #[error(transparent)]
    Dance(#[from] crate::dance::DanceError),
    /// A dance's report could not be found or read (`disco report`).
    #[error(transparent)]
    Report(#[from] crate::dance::report::ReportError),
    /// The fleet's reports could not be read.
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    /// `disco serve`, `disco remote` or `disco history` could not start or go on.
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
}

impl Error {
    /// The exit status this error ends `disco` with: every variant named, so that a new one
    /// must choose (README.md's "Exit status" table says the same).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::BadOption { .. } | Error::BadLock(_) | Error::BadSince(_) => EXIT_USAGE,
            // `disco fix` is a drop-in event handler: its errors exit with a ReturnCode too.
            Error::Supervise(e) => e.return_code().exit_status(),
            Error::Apply(e) if is_busy(e) => EXIT_BUSY,
            Error::Dance(crate::dance::DanceError::Busy(_)) => EXIT_BUSY,
            Error::Dance(crate::dance::DanceError::Apply(e)) if is_busy(e) => EXIT_BUSY,
            Error::Read { .. }
            | Error::Write(_)
            | Error::WriteFile { .. }
            | Error::Create { .. }
            | Error::Exists(_)
            | Error::NoSuchPath(_)
            | Error::BadTimeout(_)
            | Error::BadEnv(_)
            | Error::BadModuleName(_)
            | Error::SetFromStdinWithValue
            | Error::Hostname(_)
            | Error::SelfExe(_)
            | Error::Document(_)
            | Error::Json(_)
            | Error::Defer { .. }
            | Error::Param(_)
            | Error::Apply(_)
            | Error::Sandbox(_)
            | Error::StartSandbox(_)
            | Error::Terminal(_)
            | Error::Diff { .. }
            | Error::Dance(_)
            | Error::Report(_)
            | Error::Fleet(_)
            | Error::Serve(_) => EXIT_FAILURE,
        }
    }
}

/// Another dance holds the lock (`--no-wait`): try again later.
fn is_busy(e: &crate::apply::ApplyError) -> bool {
    matches!(e, crate::apply::ApplyError::Busy { .. })
}

/// The result of a subcommand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::ApplyError;
    use crate::dance::DanceError;

    fn io() -> std::io::Error {
        std::io::Error::other("refused")
    }

    fn busy() -> ApplyError {
        ApplyError::Busy {
            root: "/".into(),
            lock: "/var/lib/disco/dance.lock".into(),
        }
    }

    /// Every variant family with the status README.md's "Exit status" table gives it: a change
    /// of mapping fails here, and the table must change with it.
    #[test]
    fn each_variant_family_exits_with_its_documented_status() {
        let json = || serde_json::from_str::<u8>("x").unwrap_err();
        let cases: Vec<(Error, u8)> = vec![
            // The command line is wrong.
            (
                Error::BadOption {
                    arg: "x".into(),
                    why: "expected NAME=VALUE",
                },
                EXIT_USAGE,
            ),
            (
                Error::BadLock(crate::supervise::BadLockLevel("x".into())),
                2,
            ),
            (Error::BadSince(crate::serve::BadSince("x".into())), 2),
            // `disco fix`: the ReturnCode, modulo 256.
            (
                Error::Supervise(crate::supervise::SuperviseError::NotAFile {
                    module: "/m".into(),
                }),
                4,
            ),
            (
                Error::Supervise(crate::supervise::SuperviseError::Io {
                    module: "/m".into(),
                    what: "wait",
                    source: io(),
                }),
                1,
            ),
            // Another dance holds the lock: try again later.
            (Error::Apply(busy()), EXIT_BUSY),
            (Error::Dance(DanceError::Busy("/run/lock".into())), 75),
            (Error::Dance(DanceError::Apply(busy())), 75),
            // Everything else failed.
            (
                Error::Read {
                    path: "-".into(),
                    source: io(),
                },
                EXIT_FAILURE,
            ),
            (Error::Write(io()), 1),
            (
                Error::WriteFile {
                    path: "/f".into(),
                    source: io(),
                },
                1,
            ),
            (
                Error::Create {
                    path: "/d".into(),
                    source: io(),
                },
                1,
            ),
            (Error::Exists("/d".into()), 1),
            (Error::NoSuchPath("/d".into()), 1),
            (Error::BadTimeout(-1.0), 1),
            (Error::BadEnv("X".into()), 1),
            (Error::BadModuleName(".x".into()), 1),
            (Error::SetFromStdinWithValue, 1),
            (Error::Hostname(io()), 1),
            (Error::SelfExe(io()), 1),
            (
                Error::Document(protocol::WriteError::IllegalChar {
                    element: "Comment",
                    ch: '\u{0}',
                }),
                1,
            ),
            (Error::Json(json()), 1),
            (
                Error::Defer {
                    path: "/dev/.disco/deferred",
                    source: io(),
                },
                1,
            ),
            (
                Error::Param(crate::params::ParamError::NotFound {
                    key: "a".into(),
                    tree: "/t".into(),
                }),
                1,
            ),
            (Error::Apply(ApplyError::OtherFilesystem("/mnt".into())), 1),
            (
                Error::Sandbox(crate::sandbox::SandboxError::BadRoot("/r".into())),
                1,
            ),
            (Error::StartSandbox(io()), 1),
            (
                Error::Diff {
                    run: "r1".into(),
                    source: crate::diff::DiffError::Io {
                        op: "stat",
                        path: "/x".into(),
                        source: io(),
                    },
                },
                1,
            ),
            (
                Error::Terminal(crate::sandbox::terminal::TerminalError::Setup(io())),
                1,
            ),
            (
                Error::Dance(DanceError::NoSource("/var/lib/disco/parameters".into())),
                1,
            ),
            (
                Error::Report(crate::dance::report::ReportError::NoReport("/r".into())),
                1,
            ),
            (
                Error::Fleet(crate::fleet::FleetError::Empty("/reports".into())),
                1,
            ),
            (
                Error::Serve(crate::serve::ServeError::Read {
                    path: "/rules".into(),
                    source: io(),
                }),
                1,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(error.exit_code(), status, "{error:?}");
        }
    }

    #[test]
    fn messages_stay_the_lines_users_see() {
        assert_eq!(
            Error::Hostname(io()).to_string(),
            "cannot read the host name (give --host): refused"
        );
        assert_eq!(
            Error::BadModuleName(".x".into()).to_string(),
            "module name '.x': use only letters, digits, '_', '-' and '.', not first '.'"
        );
        assert_eq!(
            Error::Defer {
                path: "/dev/.disco/deferred",
                source: io()
            }
            .to_string(),
            "cannot record a deferred command in /dev/.disco/deferred: refused"
        );
        assert_eq!(
            Error::Exists("/m/x".into()).to_string(),
            "/m/x already exists"
        );
        // What `disco dance --timeout -1.5` says.
        assert_eq!(
            Error::BadTimeout(-1.5).to_string(),
            "--timeout -1.5: not a duration"
        );
    }
}
