//! What can stop a merge.

use std::path::PathBuf;

/// Why a merge could not be planned, staged or committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Staging failed (no space, typically); nothing of the live system was changed.
    #[error("merge stopped before changing anything: {0}")]
    Staging(Box<ApplyError>),
    /// Committing failed halfway; the journal will finish the merge when it can.
    #[error("merge interrupted (the journal {journal} will finish it): {source}")]
    Commit {
        /// The journal left behind.
        journal: PathBuf,
        /// Why.
        #[source]
        source: Box<ApplyError>,
    },
    /// An interrupted merge must be finished first.
    #[error(
        "an interrupted merge is pending ({0}); any disco command finishes it when no dance runs"
    )]
    Pending(PathBuf),
    /// The layer reaches a path on another filesystem, which the sandbox did not overlay.
    #[error("{0} is on another filesystem than its layer (a mount point the sandbox did not cover); refusing to merge")]
    OtherFilesystem(PathBuf),
    /// The journal could not be read or written.
    #[error("journal {path}: {why}")]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

impl ApplyError {
    /// An I/O error on `path`.
    pub fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> ApplyError {
        ApplyError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}
