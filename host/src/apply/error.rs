//! What can stop a merge.

use std::path::PathBuf;

/// Why a merge could not be planned, staged, committed or replayed.
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
    /// Committing failed halfway, or its check found a path that is not what was merged; the
    /// journal will finish the merge when it can.
    #[error("merge interrupted (the journal {journal} will finish it): {source}")]
    Commit {
        /// The journal left behind.
        journal: PathBuf,
        /// Why.
        #[source]
        source: Box<ApplyError>,
    },
    /// An interrupted merge must be finished first.
    #[error("an interrupted merge is pending ({0}); `disco recover` finishes it")]
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
    /// Something at a name disco makes and owns (a staging folder, a lock folder) was not made
    /// by disco.
    #[error("{path} is not disco's ({found}): refusing to use it")]
    NotOurs {
        /// What was found.
        path: PathBuf,
        /// What it is.
        found: String,
    },
    /// A journal's root (or one of its filesystems) is not the one it was written for.
    #[error("{path} is not the folder the journal was written for (then {then}; now {now}): refusing to replay; the journal is kept (`disco recover --discard` sets it aside)")]
    NotSameRoot {
        /// The root or filesystem.
        path: PathBuf,
        /// Its identity in the journal.
        then: String,
        /// Its identity now.
        now: String,
    },
    /// After the commit, a path does not hold what the merge put there.
    #[error("{path}: {why}")]
    Verify {
        /// The live path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Another dance holds the root's lock.
    #[error("another dance is running on {root} (it holds {lock})")]
    Busy {
        /// The root.
        root: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// A deferred command could not be run.
    #[error("deferred command {command}: {why}")]
    Deferred {
        /// The command.
        command: String,
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
