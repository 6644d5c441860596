//! `disco rollback`: a dance's live merges undone from their undo records, newest module first,
//! with the merge's own discipline (descriptors only, durable phases, one step at a time).
//!
//! The recipe:
//! 1. Choose the dance: the newest with undo records onto the root, or the one asked for; a
//!    newer dance onto the same root must be rolled back first.
//! 2. Check, changing nothing: every path holds what the dance left there (the same inode and
//!    change time; a folder its attributes, and, if the dance made it, only what the dance put
//!    in it). A path changed since stops the rollback, named, unless `force`.
//! 3. Write every record's phase, `moving` (with its forced paths), durably: from here on a
//!    crash is finished by the next `disco rollback`.
//! 4. Per record, newest first: move the newer version of each forced path beside it; write
//!    `restoring`; undo each operation in reverse order (remove what the merge made, rename
//!    back what it kept aside: a replaced file is swapped back in one rename); `syncfs`; remove
//!    the empty undo folders; write `done`.
//! 5. Run the deferred commands of the rolled-back modules, in dance order, through the
//!    fix-module host, so a restarted service runs on the restored configuration; then remove
//!    the records.
//!
//! Every step can be repeated: an operation undoes only when its path still holds the inode
//! the merge left, and puts back only what its undo folder still holds.

mod check;
mod restore;

use check::{check, missing_kept, reverse_diff};
use restore::{restamp, undo_folders, undo_record};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::deferred::{self, Owner};
use super::merge::{self, Opened};
use super::undo::{self, Progress, Record};
use super::ApplyError;
use crate::diff::{Change, DiffOptions};
use crate::supervise::FixOutcome;

/// What to roll back, and how.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// The dance (default: the newest onto the root).
    pub dance: Option<String>,
    /// Only say what would change.
    pub noop: bool,
    /// Roll back paths changed since the dance too, keeping the newer version beside each.
    pub force: bool,
    /// With a root other than `/`, run the deferred commands anyway (chrooted).
    pub run_deferred: bool,
    /// How the noop's diff reads contents.
    pub diff: DiffOptions,
}

/// What a deferred command did after a rollback.
#[derive(Debug)]
pub struct DeferredRun {
    /// The module.
    pub module: String,
    /// The command, as words joined.
    pub command: String,
    /// How it ended; `None` when it was not run (a root other than `/`).
    pub result: Option<Result<FixOutcome, ApplyError>>,
}

/// What a rollback did (or, noop, would do).
#[derive(Debug, Default)]
pub struct Outcome {
    /// The dance.
    pub dance: String,
    /// Noop: every change it would make, in the diff's form.
    pub changes: Vec<Change>,
    /// Paths changed since the dance, and how (forced, or reported by a noop).
    pub changed: Vec<(PathBuf, String)>,
    /// Forced paths: where the newer version was kept.
    pub kept: Vec<(PathBuf, PathBuf)>,
    /// Modules undone, newest first, with how many operations each.
    pub modules: Vec<(String, usize)>,
    /// The deferred commands run afterwards.
    pub deferred: Vec<DeferredRun>,
    /// What it saw and left alone.
    pub warnings: Vec<String>,
}

/// A dance's records, opened.
struct Opening {
    records: Vec<(PathBuf, Record)>,
    opened: Vec<Opened>,
}

/// Where a path is shown to the user: as the dance's diff showed it, from the root's `/`.
fn displayed(rec: &Record, fs: usize, rel: &Path) -> PathBuf {
    let shown = rec.journal.shown(fs, rel);
    match shown.strip_prefix(&rec.journal.root) {
        Ok(inside) => Path::new("/").join(inside),
        Err(_) => shown,
    }
}

/// Rolls back a dance onto `root` (the caller holds the root's lock).
pub fn rollback(
    state_dir: &Path,
    root: &Path,
    lock_dir: &Path,
    req: &Request,
) -> Result<Outcome, ApplyError> {
    let dances = undo::dances(state_dir, Some(root))?;
    let known = || {
        let ids = undo::rollbackable(state_dir, Some(root));
        if ids.is_empty() {
            String::new()
        } else {
            format!(" (dances that can: {})", ids.join(", "))
        }
    };
    if let Some(busy) = dances.iter().find(|d| d.rolling_back()) {
        if req.dance.as_deref().is_some_and(|d| d != busy.id) {
            return Err(ApplyError::RollbackPending {
                dance: busy.id.clone(),
            });
        }
    }
    let at = match &req.dance {
        Some(id) => dances.iter().position(|d| &d.id == id),
        None => dances
            .iter()
            .position(|d| d.rolling_back())
            .or(dances.len().checked_sub(1)),
    };
    let Some(at) = at else {
        return Err(ApplyError::NoUndo {
            root: root.to_owned(),
            known: known(),
        });
    };
    if let Some(newer) = dances.last().filter(|_| at + 1 < dances.len()) {
        return Err(ApplyError::NewerDance {
            dance: dances[at].id.clone(),
            newer: newer.id.clone(),
            root: root.to_owned(),
        });
    }
    let dance = &dances[at];
    for (_, r) in &dance.records {
        if let Some(path) = r.lost.first() {
            return Err(ApplyError::CannotUndo {
                dance: dance.id.clone(),
                why: format!("{path}: what it replaced could not be kept"),
            });
        }
    }
    let mut opening = Opening {
        records: dance.records.clone(),
        opened: Vec::new(),
    };
    for (_, r) in &opening.records {
        opening.opened.push(merge::open(&r.journal)?);
    }
    let mut out = Outcome {
        dance: dance.id.clone(),
        ..Outcome::default()
    };
    let resumed = dance.rolling_back();
    let mut forced: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); opening.records.len()];
    if !resumed {
        missing_kept(&opening, &dance.id)?;
        let changed = check(&opening)?;
        if req.noop {
            out.changed = changed.iter().map(|c| (c.0.clone(), c.1.clone())).collect();
            out.changes = reverse_diff(&opening, &req.diff)?;
            return Ok(out);
        }
        if let Some(first) = changed.first() {
            if !req.force {
                let more = match changed.len() {
                    1 => String::new(),
                    n => format!("; {} other path(s) changed too", n - 1),
                };
                return Err(ApplyError::ChangedSince {
                    dance: dance.id.clone(),
                    path: first.0.clone(),
                    why: first.1.clone(),
                    more,
                });
            }
        }
        for (path, why, r, i) in changed {
            forced[r].insert(u32::try_from(i).unwrap_or(u32::MAX));
            out.changed.push((path, why));
        }
        // From here on, a crash is finished by the next rollback.
        for (r, (path, rec)) in opening.records.iter_mut().enumerate().rev() {
            rec.rollback = Some(Progress::Moving {
                forced: forced[r].iter().copied().collect(),
            });
            super::journal::write_json_durably(path, rec)?;
        }
    } else if req.noop {
        return Err(ApplyError::RollbackPending {
            dance: dance.id.clone(),
        });
    }
    for r in (0..opening.records.len()).rev() {
        let done = undo_record(&mut opening, r, req.force, &mut out)?;
        if done > 0 || !matches!(opening.records[r].1.rollback, Some(Progress::Done)) {
            out.modules
                .push((opening.records[r].1.journal.module.clone(), done));
        }
        let (path, rec) = &mut opening.records[r];
        rec.rollback = Some(Progress::Done);
        super::journal::write_json_durably(path, rec)?;
    }
    for (_, rec) in &opening.records {
        let j = &rec.journal;
        let owner = Owner {
            root: &j.root,
            node: &j.node,
            module: &j.module,
        };
        for words in &j.deferred.commands {
            let command = words.join(" ");
            let result = (j.root == Path::new("/") || req.run_deferred)
                .then(|| deferred::run(owner, &j.deferred, words, lock_dir));
            out.deferred.push(DeferredRun {
                module: j.module.clone(),
                command,
                result,
            });
        }
    }
    restamp(&opening, &dances[..at])?;
    for (path, _) in &opening.records {
        super::journal::remove(path)?;
    }
    let _ = std::fs::remove_dir(undo::dance_dir(state_dir, &dance.id));
    Ok(out)
}
