//! Finishing an interrupted merge from its journal (roll forward), or saying why it cannot be.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::apply::journal::{Journal, Phase};
use crate::apply::{ApplyError, Op};

use super::{
    commit, name_stagings, open, record_undo, remove_stagings, reopen, reopen_folders, stage,
    sync_tops, verify, Committed, Folders, Opened,
};

/// What a replay did with one journal.
#[derive(Debug)]
pub enum Replayed {
    /// The merge is finished (perhaps it already was); the deferred commands remain to run.
    Finished {
        /// Paths it changed now.
        paths: usize,
    },
    /// It cannot be finished from what remains: nothing or only part of it was applied; the
    /// caller sets the journal aside.
    Unfinishable(Unfinishable),
}

/// Why an interrupted merge cannot be finished, and how much of it was applied.
#[derive(Debug, thiserror::Error)]
pub enum Unfinishable {
    /// Nothing was applied, and the scratch layer it would stage from is gone.
    #[error("nothing of it was applied: its scratch layer is gone ({} and {more} more)", first.display())]
    LayerGone {
        /// The first staged source found missing.
        first: PathBuf,
        /// How many more are missing.
        more: usize,
    },
    /// Part of it was applied; the staged copies of the rest are gone.
    #[error(
        "{} of its {total} operations were applied; {} path(s) were not, their staged copies being gone: {}",
        total - missing.len(),
        missing.len(),
        shown(missing)
    )]
    StagedLost {
        /// The operations of the merge.
        total: usize,
        /// The paths not applied.
        missing: Vec<PathBuf>,
    },
}

/// The first five of `paths`, and `...` for more.
fn shown(paths: &[PathBuf]) -> String {
    let first: Vec<String> = paths
        .iter()
        .take(5)
        .map(|p| p.display().to_string())
        .collect();
    format!(
        "{}{}",
        first.join(", "),
        if paths.len() > 5 { ", ..." } else { "" }
    )
}

/// Finishes the merge of a journal read from `path` (roll forward), and records it as
/// committed. Refuses, keeping the journal, when the root or a filesystem is not the one the
/// journal was written for.
pub fn replay(state_dir: &Path, path: &Path, j: &mut Journal) -> Result<Replayed, ApplyError> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    let opened = open(j)?;
    let paths;
    match j.phase.clone() {
        Phase::Committed => return Ok(Replayed::Finished { paths: 0 }),
        Phase::Planned => {
            // Nothing live changed yet: stage again from the scratch layers, into fresh folders.
            let old = reopen_folders(j, &opened)?;
            for (i, (staging, undo)) in old.staging.into_iter().zip(old.undo).enumerate() {
                for s in [staging, undo].into_iter().flatten() {
                    s.remove(opened.tops[i].as_fd())?;
                }
            }
            let lost: Vec<&Path> = j
                .ops
                .iter()
                .filter_map(|op| match op {
                    Op::File { source, .. } if !source.is_file() => Some(source.as_path()),
                    _ => None,
                })
                .collect();
            if let Some(first) = lost.first() {
                return Ok(Replayed::Unfinishable(Unfinishable::LayerGone {
                    first: first.to_path_buf(),
                    more: lost.len() - 1,
                }));
            }
            let undo = j.filesystems.iter().any(|f| f.undo.is_some());
            name_stagings(j, undo)?;
            j.write(state_dir, &name)?;
            let (folders, inodes) = stage(j, &opened)?;
            j.phase = Phase::Staged {
                inodes: inodes.clone(),
            };
            j.write(state_dir, &name)?;
            match finish_staged(state_dir, &name, j, &opened, folders, &inodes)? {
                Ok(p) => paths = p,
                Err(not_applied) => return Ok(Replayed::Unfinishable(not_applied)),
            }
        }
        Phase::Staged { inodes } => {
            let folders = reopen_folders(j, &opened)?;
            match finish_staged(state_dir, &name, j, &opened, folders, &inodes)? {
                Ok(p) => paths = p,
                Err(not_applied) => return Ok(Replayed::Unfinishable(not_applied)),
            }
        }
    }
    j.phase = Phase::Committed;
    j.write(state_dir, &name)?;
    Ok(Replayed::Finished { paths })
}

/// Commits what is staged, checks, syncs and removes the staging folders; `Err` when staged
/// copies were lost, saying what was and was not applied.
pub(super) fn finish_staged(
    state_dir: &Path,
    name: &str,
    j: &Journal,
    opened: &Opened,
    folders: Folders,
    inodes: &BTreeMap<u32, u64>,
) -> Result<Result<usize, Unfinishable>, ApplyError> {
    let Committed {
        paths,
        missing,
        before,
    } = commit(j, opened, &folders, inodes)?;
    remove_stagings(folders.staging, opened);
    if !missing.is_empty() {
        return Ok(Err(Unfinishable::StagedLost {
            total: j.ops.len(),
            missing,
        }));
    }
    let after = verify(j, opened, inodes)?;
    sync_tops(j, opened)?;
    record_undo(state_dir, name, j, opened, folders.undo, after, before)?;
    Ok(Ok(paths))
}

/// Removes the staging folders a journal names, if they are there and ours (setting it aside).
pub fn clean_staging(j: &Journal) {
    let Ok(opened) = open(j) else {
        return;
    };
    if let Ok(stagings) = reopen(j, &opened, |fs| fs.staging.as_ref()) {
        remove_stagings(stagings, &opened);
    }
}
