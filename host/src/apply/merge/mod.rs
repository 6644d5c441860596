//! Carrying out a plan: stage, `syncfs`, rename into place in plan order, check, `syncfs`.
//!
//! Staging writes every new file, link and node into a staging folder at the top of its
//! filesystem (see [`super::staging`]: only on filesystems the module changes), then one
//! `syncfs` makes all their data durable at once — the crash guarantee of an fsync per file,
//! without paying one per file. The journal then records each staged inode. Only then is the
//! live tree changed, one rename (or deletion) at a time through descriptors (see [`super::at`]),
//! so a file is always entirely old or entirely new. Last, every changed path is checked to hold
//! what was staged for it before the merge is called done.

mod commit;
mod replay;
mod stage;

use commit::{commit, record_undo, sync_tops, verify, Committed};
pub use replay::{clean_staging, replay, Replayed, Unfinishable};
#[cfg(test)]
use stage::remove_folders;
pub(in crate::apply) use stage::reopen;
use stage::{name_stagings, remove_stagings, reopen_folders, stage};

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::deferred::Deferred;
use super::journal::{self, FsRecord, Identity, Journal, Phase};
use super::staging::{self, Staging};
use super::{at, plan, ApplyError};

/// What a merge changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Paths written, created or deleted.
    pub paths: usize,
    /// The journal, kept until the caller ran the deferred commands and calls
    /// [`journal::remove`]; `None` when there were none.
    pub journal: Option<PathBuf>,
    /// What the merge saw and left alone (objects planted where staging folders go).
    pub warnings: Vec<String>,
}

/// What follows a merge: service commands to run, for which node.
#[derive(Clone, Debug, Default)]
pub struct After {
    /// The node.
    pub node: String,
    /// The deferred service commands, with what they run with.
    pub deferred: Deferred,
    /// Keep no undo record (`--keep-undo 0`): what the merge replaces is removed.
    pub no_undo: bool,
}

/// The live side of a journal, opened: the root and each filesystem's top, checked against
/// the identities the journal recorded.
pub(super) struct Opened {
    pub(super) tops: Vec<OwnedFd>,
}

pub(super) fn open(j: &Journal) -> Result<Opened, ApplyError> {
    let root = at::open_root(&j.root)?;
    let now = Identity::of(root.as_fd(), &j.root)?;
    if !j.root_id.same(&now) {
        return Err(ApplyError::NotSameRoot {
            path: j.root.clone(),
            then: j.root_id.to_string(),
            now: now.to_string(),
        });
    }
    let mut tops = Vec::new();
    for (i, fs) in j.filesystems.iter().enumerate() {
        let shown = j.shown(i, Path::new(""));
        let top = at::open_top(root.as_fd(), &fs.rel, &shown)?;
        let now = Identity::of(top.as_fd(), &shown)?;
        if !fs.id.same(&now) {
            return Err(ApplyError::NotSameRoot {
                path: shown,
                then: fs.id.to_string(),
                now: now.to_string(),
            });
        }
        tops.push(top);
    }
    Ok(Opened { tops })
}

/// The folders a merge writes in on each filesystem of a journal: where it stages (`None`
/// where nothing is staged) and where it keeps what it replaces (`None` when the journal has
/// none, or it was lost).
#[derive(Default)]
struct Folders {
    staging: Vec<Option<Staging>>,
    undo: Vec<Option<Staging>>,
}

/// Merges a module's scratch layers onto the live tree under `root`: `layers` pairs each
/// scratch layer with its filesystem's top, relative to the root. The plan is journaled first;
/// on a staging failure (no space, typically) nothing of the live tree was changed and the
/// journal is dropped; on a commit or check failure the journal is kept, so that the next
/// dance (or `disco recover`) finishes the merge.
pub fn apply(
    state_dir: &Path,
    run: &str,
    module: &str,
    name: &str,
    root: &Path,
    layers: &[(PathBuf, PathBuf)],
    after: After,
) -> Result<Applied, ApplyError> {
    if let Some(journal) = journal::pending_for_root(state_dir, root) {
        return Err(ApplyError::Pending(journal));
    }
    let no_undo = after.no_undo;
    let root_fd = at::open_root(root)?;
    let mut j = Journal {
        version: journal::VERSION,
        run: run.to_owned(),
        module: module.to_owned(),
        node: after.node,
        root: root.to_owned(),
        root_id: Identity::of(root_fd.as_fd(), root)?,
        filesystems: Vec::new(),
        ops: Vec::new(),
        phase: Phase::Planned,
        deferred: after.deferred,
    };
    let mut tops = Vec::new();
    let mut next = 0;
    for (upper, rel) in layers {
        let shown = root.join(rel);
        let fs = j.filesystems.len();
        let ops = plan::plan(upper, &shown, fs, &mut next)?;
        if ops.is_empty() {
            // Untouched: no staging there, nothing opened (a read-only one included).
            continue;
        }
        let top = at::open_top(root_fd.as_fd(), rel, &shown)?;
        j.filesystems.push(FsRecord {
            rel: rel.clone(),
            id: Identity::of(top.as_fd(), &shown)?,
            staging: None,
            undo: None,
        });
        j.ops.extend(ops);
        tops.push((upper.clone(), top));
    }
    if j.ops.is_empty() && j.deferred.commands.is_empty() {
        return Ok(Applied::default());
    }
    name_stagings(&mut j, !no_undo)?;
    // The scratch layers were written without syncs (`volatile`); the journal will point at
    // them, so they must be on disk before it exists.
    for (upper, _) in &tops {
        let f = std::fs::File::open(upper).map_err(|e| ApplyError::io("open", upper, e))?;
        nix::unistd::syncfs(f.as_fd()).map_err(|e| ApplyError::io("syncfs", upper, e.into()))?;
    }
    let opened = Opened {
        tops: tops.into_iter().map(|(_, t)| t).collect(),
    };
    let mut warnings = Vec::new();
    for (i, fs) in j.filesystems.iter().enumerate() {
        let ours: Vec<String> = fs.staging.iter().cloned().collect();
        warnings.extend(staging::strangers(
            opened.tops[i].as_fd(),
            &j.shown(i, Path::new("")),
            &ours,
        ));
    }
    let path = j.write(state_dir, name)?;
    let mut applied = Applied {
        warnings,
        ..Applied::default()
    };
    if !j.ops.is_empty() {
        let (folders, inodes) = match stage(&j, &opened) {
            Ok(staged) => staged,
            Err(e) => {
                journal::remove(&path)?;
                return Err(ApplyError::Staging(Box::new(e)));
            }
        };
        j.phase = Phase::Staged {
            inodes: inodes.clone(),
        };
        j.write(state_dir, name)?;
        let finish = |folders: Folders| -> Result<usize, ApplyError> {
            let done = commit(&j, &opened, &folders, &inodes)?;
            if let Some(path) = done.missing.into_iter().next() {
                return Err(ApplyError::Verify {
                    path,
                    why: "its staged copy vanished before it was put in place".into(),
                });
            }
            let after = verify(&j, &opened, &inodes)?;
            sync_tops(&j, &opened)?;
            remove_stagings(folders.staging, &opened);
            record_undo(
                state_dir,
                name,
                &j,
                &opened,
                folders.undo,
                after,
                done.before,
            )?;
            Ok(done.paths)
        };
        applied.paths = finish(folders).map_err(|e| ApplyError::Commit {
            journal: path.clone(),
            source: Box::new(e),
        })?;
    }
    if j.deferred.commands.is_empty() {
        journal::remove(&path)?;
    } else {
        // Merged: only the deferred commands remain, and the journal says so until they ran.
        j.phase = Phase::Committed;
        j.write(state_dir, name)?;
        applied.journal = Some(path);
    }
    Ok(applied)
}
