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

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{renameat, renameat2, RenameFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::deferred::{self, Owner};
use super::merge::{self, Opened};
use super::staging::{self, Staging};
use super::undo::{self, Progress, Record};
use super::{at, ApplyError, Op};
use crate::diff::{Change, DiffOptions, Restored};
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
            super::journal::write_durably(path, &to_json(path, rec)?)?;
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
        super::journal::write_durably(path, &to_json(path, rec)?)?;
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

/// Brings older dances' records up to date with what this rollback put back: keeping an entry
/// aside and renaming it back moved its change time, not its content. Only an entry that was,
/// when this dance's merge kept it, exactly what the older record names is restamped; one
/// edited between the two dances still stops the older rollback.
fn restamp(o: &Opening, older: &[undo::Dance]) -> Result<(), ApplyError> {
    if older.is_empty() {
        return Ok(());
    }
    let mut moved: std::collections::HashMap<undo::Stamp, undo::Stamp> = Default::default();
    for (r, (_, rec)) in o.records.iter().enumerate() {
        for (&i, &was) in &rec.before {
            let Some(op) = rec.journal.ops.get(i as usize) else {
                continue;
            };
            let (fs, rel) = op.target();
            let shown = rec.journal.shown(fs, rel);
            let Ok((dir, name)) = at::parent(o.opened[r].tops[fs].as_fd(), rel, &shown) else {
                continue;
            };
            if let Some(st) = at::stat(dir.as_fd(), name, &shown)? {
                if st.st_ino == was.ino {
                    moved.insert(was, undo::Stamp::of(&st));
                }
            }
        }
    }
    if moved.is_empty() {
        return Ok(());
    }
    for dance in older {
        for (path, rec) in &dance.records {
            let mut rec = rec.clone();
            let mut changed = false;
            for stamp in rec.after.values_mut() {
                if let Some(now) = moved.get(stamp) {
                    *stamp = *now;
                    changed = true;
                }
            }
            if changed {
                super::journal::write_durably(path, &to_json(path, &rec)?)?;
            }
        }
    }
    Ok(())
}

fn to_json(path: &Path, rec: &Record) -> Result<Vec<u8>, ApplyError> {
    serde_json::to_vec(rec).map_err(|e| ApplyError::Journal {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// Refuses, before anything changes, a dance whose undo folders lack an entry their records
/// list (a folder someone removed, a prune cut short): undoing it would delete the merge's
/// files and put nothing back.
fn missing_kept(o: &Opening, dance: &str) -> Result<(), ApplyError> {
    for (r, (_, rec)) in o.records.iter().enumerate() {
        let folders = undo_folders(rec, &o.opened[r])?;
        for &i in &rec.asides {
            let Some(op) = rec.journal.ops.get(i as usize) else {
                continue;
            };
            let (fs, rel) = op.target();
            let shown = rec.journal.shown(fs, rel);
            let there = match &folders[fs] {
                Some(u) => at::stat(u.fd(), &undo::aside_name(i as usize), &shown)?.is_some(),
                None => false,
            };
            if !there {
                return Err(ApplyError::CannotUndo {
                    dance: dance.to_owned(),
                    why: format!(
                        "what it replaced at {} is gone from its undo folder",
                        shown.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// A record's undo folders, one per filesystem, opened and checked (`None` where the merge
/// kept nothing, or the folder is gone).
fn undo_folders(rec: &Record, opened: &Opened) -> Result<Vec<Option<Staging>>, ApplyError> {
    merge::reopen(&rec.journal, opened, |fs| fs.undo.as_ref())
}

/// For each path the dance changed, the record and operation that last changed it.
fn latest(o: &Opening) -> BTreeMap<PathBuf, (usize, usize)> {
    let mut latest = BTreeMap::new();
    for (r, (_, rec)) in o.records.iter().enumerate() {
        for ((fs, rel), i) in undo::last_ops(&rec.journal.ops) {
            latest.insert(rec.journal.shown(fs, rel), (r, i));
        }
    }
    latest
}

/// Every path changed since the dance: its live path, how, its record and operation.
fn check(o: &Opening) -> Result<Vec<(PathBuf, String, usize, usize)>, ApplyError> {
    // What the dance put there: every path it staged or made, and every folder any of its
    // merges made (a later module's chown of it does not make it pre-existing).
    let mut made: BTreeSet<PathBuf> = BTreeSet::new();
    let mut made_folders: BTreeSet<PathBuf> = BTreeSet::new();
    for (_, rec) in &o.records {
        for op in &rec.journal.ops {
            let (fs, rel) = op.target();
            let shown = rec.journal.shown(fs, rel);
            if matches!(op, Op::Dir { before: None, .. }) {
                made_folders.insert(shown.clone());
            }
            if !matches!(op, Op::Delete { .. }) {
                made.insert(shown);
            }
        }
    }
    let mut changed = Vec::new();
    for (shown, (r, i)) in latest(o) {
        let rec = &o.records[r].1;
        if let Some(why) = changed_since(rec, &o.opened[r], i, &made, &made_folders)? {
            changed.push((shown, why, r, i));
        }
    }
    Ok(changed)
}

/// How the path of operation `i` changed since the merge, if it did.
fn changed_since(
    rec: &Record,
    opened: &Opened,
    i: usize,
    made: &BTreeSet<PathBuf>,
    made_folders: &BTreeSet<PathBuf>,
) -> Result<Option<String>, ApplyError> {
    let op = &rec.journal.ops[i];
    let (fs, rel) = op.target();
    let shown = rec.journal.shown(fs, rel);
    let kept = rec
        .asides
        .binary_search(&u32::try_from(i).unwrap_or(u32::MAX))
        .is_ok();
    let here = match at::parent(opened.tops[fs].as_fd(), rel, &shown) {
        Ok((dir, name)) => at::stat(dir.as_fd(), name, &shown)?.map(|st| (dir, st)),
        // What was there cannot be put back without its folder.
        Err(_) if kept => return Ok(Some("lost its folder since the dance".to_owned())),
        Err(_) => None,
    };
    let after = u32::try_from(i).ok().and_then(|i| rec.after.get(&i));
    let why = match (op, here) {
        (Op::Delete { .. }, None) => None,
        (Op::Delete { .. }, Some(_)) => Some("was made again since the dance".to_owned()),
        (_, None) => Some("is gone since the dance".to_owned()),
        (_, Some((_, st))) if Some(st.st_ino) != after.map(|a| a.ino) => {
            Some("was replaced since the dance".to_owned())
        }
        (Op::Dir { attrs, .. }, Some((dir, st))) => {
            let name = rel.file_name().unwrap_or_default();
            let fd = at::open_dir(dir.as_fd(), name, &shown)?;
            let file = std::fs::File::from(fd);
            let xattrs = xattrs_of(&file);
            if (st.st_mode & 0o7777, st.st_uid, st.st_gid) != (attrs.mode, attrs.uid, attrs.gid)
                || xattrs != attrs.xattrs
            {
                Some("had its mode, owner or extended attributes changed since the dance".into())
            } else if made_folders.contains(&shown) {
                at::names(file.as_fd(), &shown)?
                    .into_iter()
                    .find(|n| !made.contains(&shown.join(n)))
                    .map(|n| {
                        format!(
                            "holds {}, which the dance did not put there",
                            n.to_string_lossy()
                        )
                    })
            } else {
                None
            }
        }
        (_, Some((_, st))) => (Some(undo::Stamp::of(&st)) != after.copied())
            .then(|| "was changed since the dance (content or attributes)".to_owned()),
    };
    Ok(why)
}

/// A folder's extended attributes as a merge records them: sorted, overlayfs's own left out.
fn xattrs_of(file: &std::fs::File) -> Vec<(String, Vec<u8>)> {
    use xattr::FileExt;
    let mut out = Vec::new();
    for name in file.list_xattr().into_iter().flatten() {
        let name = name.to_string_lossy().into_owned();
        if super::plan::is_overlay_xattr(&name) {
            continue;
        }
        if let Ok(Some(v)) = file.get_xattr(&name) {
            out.push((name, v));
        }
    }
    out.sort();
    out
}

/// A free name beside `name` for the newer version of a forced path.
fn newer_name(dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::OsStr, dance: &str) -> OsString {
    let mut n = 0;
    loop {
        let mut candidate = name.to_owned();
        candidate.push(format!(".disco-newer-{dance}"));
        if n > 0 {
            candidate.push(format!(".{n}"));
        }
        if at::stat(dir, &candidate, Path::new(""))
            .ok()
            .flatten()
            .is_none()
        {
            return candidate;
        }
        n += 1;
    }
}

/// Renames what is at `name` in `dir` (a forced path's newer version, or what took a path the
/// rollback puts back) beside it, `NAME.disco-newer-DANCE`, and says so in `out`.
fn keep_newer(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    shown: &Path,
    dance: &str,
    out: &mut Outcome,
) -> Result<(), ApplyError> {
    let to = newer_name(dir, name, dance);
    renameat2(
        dir,
        name,
        dir,
        to.as_os_str(),
        RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|e| ApplyError::io("keep the newer version of", shown, e.into()))?;
    out.kept.push((shown.to_owned(), shown.with_file_name(&to)));
    Ok(())
}

/// Undoes record `r` from the phase it is in; returns how many operations it undid. `force`
/// (`--force`, given now) also moves aside whatever took a path the rollback puts back.
fn undo_record(
    o: &mut Opening,
    r: usize,
    force: bool,
    out: &mut Outcome,
) -> Result<usize, ApplyError> {
    let dance = out.dance.clone();
    let (path, rec) = &mut o.records[r];
    let opened = &o.opened[r];
    let forced: BTreeSet<u32> = match &rec.rollback {
        Some(Progress::Done) => return Ok(0),
        Some(Progress::Moving { forced } | Progress::Restoring { forced }) => {
            forced.iter().copied().collect()
        }
        None => BTreeSet::new(),
    };
    if matches!(rec.rollback, Some(Progress::Moving { .. })) {
        // The newer versions of forced paths go beside them, before anything is put back.
        for &i in &forced {
            let Some(op) = rec.journal.ops.get(i as usize) else {
                continue;
            };
            let (fs, rel) = op.target();
            let shown = rec.journal.shown(fs, rel);
            let Ok((dir, name)) = at::parent(opened.tops[fs].as_fd(), rel, &shown) else {
                continue;
            };
            let Some(st) = at::stat(dir.as_fd(), name, &shown)? else {
                continue;
            };
            // Newer: anything where the merge deleted, another folder, or a file whose inode
            // or change time moved (edited in place included).
            let after = rec.after.get(&i);
            let newer = match op {
                Op::Delete { .. } => true,
                Op::Dir { .. } => after.is_none_or(|a| a.ino != st.st_ino),
                _ => after != Some(&undo::Stamp::of(&st)),
            };
            if newer {
                keep_newer(dir.as_fd(), name, &shown, &dance, out)?;
            }
        }
        rec.rollback = Some(Progress::Restoring {
            forced: forced.iter().copied().collect(),
        });
        super::journal::write_durably(path, &to_json(path, rec)?)?;
    }
    let folders = undo_folders(rec, opened)?;
    let mut undone = 0;
    for (i, op) in rec.journal.ops.iter().enumerate().rev() {
        let (fs, rel) = op.target();
        let shown = rec.journal.shown(fs, rel);
        let folder = folders[fs].as_ref();
        let aside = undo::aside_name(i);
        let (dir, name) = match at::parent(opened.tops[fs].as_fd(), rel, &shown) {
            Ok(found) => found,
            Err(e) => {
                // Its folder went since the check (or a forced move took it): nothing of the
                // merge is left to remove there, and what it kept stays in the undo folder.
                if let Some(u) =
                    folder.filter(|u| at::stat(u.fd(), &aside, &shown).ok().flatten().is_some())
                {
                    out.warnings.push(format!(
                        "cannot put back {}: {e}; what it held is kept in {}",
                        shown.display(),
                        u.shown.join(&aside).display()
                    ));
                }
                continue;
            }
        };
        let here = at::stat(dir.as_fd(), name, &shown)?;
        let after = rec.after.get(&u32::try_from(i).unwrap_or(u32::MAX));
        let ours = here
            .as_ref()
            .is_some_and(|st| after.is_some_and(|a| a.ino == st.st_ino));
        let listed = rec.asides.binary_search(&(i as u32)).is_ok();
        match op {
            Op::Delete { .. } => {}
            Op::Dir {
                before: Some(before),
                ..
            } if here.as_ref().is_some_and(at::is_dir) => {
                let fd = at::open_dir(dir.as_fd(), name, &shown)?;
                staging::set_dir_attrs(&fd, before, &shown)?;
                nix::sys::stat::futimens(
                    fd.as_fd(),
                    &TimeSpec::UTIME_OMIT,
                    &TimeSpec::new(before.mtime.0, before.mtime.1),
                )
                .map_err(|e| ApplyError::io("set times of", &shown, e.into()))?;
                undone += 1;
            }
            Op::Dir {
                before: Some(_), ..
            } => {}
            _ if ours => {
                let st = here.as_ref().is_some_and(at::is_dir);
                if let (false, true, Some(u)) = (st, listed, folder) {
                    // A replaced file comes back in one rename: the path is never empty. A
                    // kept folder (ENOTDIR), or one already put back (ENOENT), goes the long way.
                    match renameat(u.fd(), aside.as_os_str(), dir.as_fd(), name) {
                        Ok(()) => {
                            undone += 1;
                            continue;
                        }
                        Err(Errno::ENOTDIR | Errno::EISDIR | Errno::ENOENT) => {}
                        Err(e) => return Err(ApplyError::io("put back", &shown, e.into())),
                    }
                }
                let flag = if st {
                    UnlinkatFlags::RemoveDir
                } else {
                    UnlinkatFlags::NoRemoveDir
                };
                match unlinkat(dir.as_fd(), name, flag) {
                    Ok(()) => {}
                    Err(Errno::ENOTEMPTY) if force || forced.contains(&(i as u32)) => {
                        keep_newer(dir.as_fd(), name, &shown, &dance, out)?;
                    }
                    Err(Errno::ENOTEMPTY) => {
                        return Err(ApplyError::ChangedSince {
                            dance,
                            path: shown,
                            why: "holds what the dance did not put there".into(),
                            more: String::new(),
                        })
                    }
                    Err(e) => return Err(ApplyError::io("remove", &shown, e.into())),
                }
                undone += 1;
            }
            _ => {}
        }
        let kept = match (listed, folder) {
            (true, Some(u)) => at::stat(u.fd(), &aside, &shown)?,
            _ => None,
        };
        if let (Some(u), Some(_)) = (folder, kept) {
            let put_back = || {
                renameat2(
                    u.fd(),
                    aside.as_os_str(),
                    dir.as_fd(),
                    name,
                    RenameFlags::RENAME_NOREPLACE,
                )
            };
            match put_back() {
                Ok(()) => {}
                // Taken since the check (or since a rollback was cut short): with --force the
                // newcomer goes beside it, as a forced path's newer version does.
                Err(Errno::EEXIST) if force => {
                    keep_newer(dir.as_fd(), name, &shown, &dance, out)?;
                    put_back().map_err(|e| ApplyError::io("put back", &shown, e.into()))?;
                }
                Err(Errno::EEXIST) => {
                    return Err(ApplyError::ChangedSince {
                        dance: dance.clone(),
                        path: shown.clone(),
                        why: "is taken by something the dance did not put there".into(),
                        more: String::new(),
                    })
                }
                Err(e) => return Err(ApplyError::io("put back", &shown, e.into())),
            }
            if !ours {
                undone += 1;
            }
        }
    }
    for (fs, top) in opened.tops.iter().enumerate() {
        nix::unistd::syncfs(top.as_fd()).map_err(|e| {
            ApplyError::io("syncfs", &rec.journal.shown(fs, Path::new("")), e.into())
        })?;
    }
    for (fs, folder) in folders.into_iter().enumerate() {
        if let Some(u) = folder {
            let left = at::names(u.fd(), &u.shown)?;
            if left.is_empty() {
                u.remove(opened.tops[fs].as_fd())?;
            } else {
                out.warnings.push(format!(
                    "{} still holds {} entr(ies) it could not put back: kept",
                    u.shown.display(),
                    left.len()
                ));
            }
        }
    }
    Ok(undone)
}

/// What the rollback would change, path by path: from what the path holds now to what it held
/// before the dance's first change to it.
fn reverse_diff(o: &Opening, opts: &DiffOptions) -> Result<Vec<Change>, ApplyError> {
    let mut first: BTreeMap<PathBuf, (usize, usize)> = BTreeMap::new();
    for (r, (_, rec)) in o.records.iter().enumerate() {
        for (i, op) in rec.journal.ops.iter().enumerate() {
            let (fs, rel) = op.target();
            first.entry(rec.journal.shown(fs, rel)).or_insert((r, i));
        }
    }
    let mut changes = Vec::new();
    for (live, (r, i)) in first {
        let rec = &o.records[r].1;
        let op = &rec.journal.ops[i];
        let (fs, rel) = op.target();
        let aside = (rec
            .asides
            .binary_search(&u32::try_from(i).unwrap_or(u32::MAX))
            .is_ok())
        .then(|| {
            rec.journal.filesystems[fs].undo.as_ref().map(|u| {
                rec.journal
                    .shown(fs, Path::new(""))
                    .join(u)
                    .join(undo::aside_name(i))
            })
        })
        .flatten();
        let (then, attrs) = match (op, aside) {
            (_, Some(aside)) => (Some(aside), None),
            (
                Op::Dir {
                    before: Some(b), ..
                },
                None,
            ) => (
                Some(live.clone()),
                Some(Restored {
                    mode: b.mode,
                    uid: b.uid,
                    gid: b.gid,
                    xattrs: &b.xattrs,
                }),
            ),
            _ => (None, None),
        };
        let shown = displayed(rec, fs, rel);
        let change = crate::diff::between(&shown, Some(&live), then.as_deref(), attrs, opts)
            .map_err(|e| ApplyError::io("compare", &live, std::io::Error::other(e.to_string())))?;
        changes.extend(change);
    }
    Ok(changes)
}
