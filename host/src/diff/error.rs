//! The one error type of the diff module: every variant names the path at fault.

use std::path::PathBuf;

/// Why an upper layer could not be compared with its lower one. Messages are one line, lowercase,
/// and name the file (as found in the layer on disk, not as seen inside the sandbox), so that the
/// operator can go and look at it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiffError {
    /// A system call on a file failed (unreadable file, bad layer directory...).
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was attempted: `stat`, `read`, `list`, `read xattrs of`...
        op: &'static str,
        /// The file on disk.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file listed by its directory was gone when it was examined: something is still writing
    /// to the layer, so the diff would not be trustworthy.
    #[error(
        "{path} vanished while the layer was being compared (is something still writing to it?)"
    )]
    Vanished {
        /// The file on disk.
        path: PathBuf,
    },
    /// The diff was still reading `path` at its deadline (the module's timeout).
    #[error("the diff did not finish in time (the module's timeout): it was still reading {path}")]
    TimedOut {
        /// The file being read, as seen inside the sandbox.
        path: PathBuf,
    },
    /// A layer's `upper` or `lower` is not a directory.
    #[error("layer directory {path} is not a directory")]
    NotADirectory {
        /// The directory as given in [`Layer`](super::Layer).
        path: PathBuf,
    },
    /// JSON output could not be produced.
    #[error("cannot render the diff as json: {0}")]
    Json(#[source] serde_json::Error),
}

impl DiffError {
    /// Wraps an I/O error, turning "not found" into [`DiffError::Vanished`]: every path the diff
    /// touches was listed a moment before, so a missing one means the layer changed under it.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            DiffError::Vanished { path }
        } else {
            DiffError::Io { op, path, source }
        }
    }
}
