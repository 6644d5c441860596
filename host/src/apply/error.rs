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
    /// A path a dance changed was changed again since: a rollback would lose that change.
    #[error("{path} {why}: refusing to roll back dance {dance} (`--force` restores it and keeps the newer version beside it){more}")]
    ChangedSince {
        /// The dance.
        dance: String,
        /// The live path.
        path: PathBuf,
        /// What changed.
        why: String,
        /// How many other paths changed, said.
        more: String,
    },
    /// A newer dance changed the same root and must be rolled back first.
    #[error("dance {newer} is newer than {dance} on {root}: roll it back first (`disco rollback {newer}`)")]
    NewerDance {
        /// The dance asked for.
        dance: String,
        /// The newest dance after it.
        newer: String,
        /// The root.
        root: PathBuf,
    },
    /// No dance onto this root can be rolled back.
    #[error("no live dance onto {root} can be rolled back{known}")]
    NoUndo {
        /// The root.
        root: PathBuf,
        /// The dances that can, said.
        known: String,
    },
    /// A rollback of another dance is unfinished.
    #[error("the rollback of dance {dance} is unfinished: `disco rollback {dance}` finishes it")]
    RollbackPending {
        /// The dance.
        dance: String,
    },
    /// The undo record cannot put a path back.
    #[error("dance {dance} cannot be rolled back: {why}")]
    CannotUndo {
        /// The dance.
        dance: String,
        /// Why.
        why: String,
    },
    /// A deferred command's program is not in the root's `PATH`.
    #[error("deferred command {command}: not found in the root's PATH")]
    DeferredNotFound {
        /// The command.
        command: String,
    },
    /// A deferred command's request could not be written.
    #[error("deferred command {command}: {source}")]
    DeferredRequest {
        /// The command.
        command: String,
        /// Why (boxed: a dance's error holds an apply error).
        #[source]
        source: Box<crate::dance::DanceError>,
    },
    /// A deferred command could not be run.
    #[error("deferred command {command}: {source}")]
    Deferred {
        /// The command.
        command: String,
        /// Why.
        #[source]
        source: crate::supervise::SuperviseError,
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
