//! Step 2 of a rollback, which changes nothing: every kept entry is in its undo folder, and
//! every path the dance changed holds what the dance left there; and `--noop`'s reverse diff.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::apply::merge::Opened;
use crate::apply::undo::{self, Record};
use crate::apply::{at, ApplyError, Op};
use crate::diff::{Change, DiffOptions, Restored};

use super::{displayed, undo_folders, Opening};

/// Refuses, before anything changes, a dance whose undo folders lack an entry their records
/// list (a folder someone removed, a prune cut short): undoing it would delete the merge's
/// files and put nothing back.
pub(super) fn missing_kept(o: &Opening, dance: &str) -> Result<(), ApplyError> {
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

/// For each path the dance changed, the record and operation that last changed it.
pub(super) fn latest(o: &Opening) -> BTreeMap<PathBuf, (usize, usize)> {
    let mut latest = BTreeMap::new();
    for (r, (_, rec)) in o.records.iter().enumerate() {
        for ((fs, rel), i) in undo::last_ops(&rec.journal.ops) {
            latest.insert(rec.journal.shown(fs, rel), (r, i));
        }
    }
    latest
}

/// Every path changed since the dance: its live path, how, its record and operation.
pub(super) fn check(o: &Opening) -> Result<Vec<(PathBuf, String, usize, usize)>, ApplyError> {
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
pub(super) fn changed_since(
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
pub(super) fn xattrs_of(file: &std::fs::File) -> Vec<(String, Vec<u8>)> {
    use xattr::FileExt;
    let mut out = Vec::new();
    for name in file.list_xattr().into_iter().flatten() {
        let name = name.to_string_lossy().into_owned();
        if crate::apply::plan::is_overlay_xattr(&name) {
            continue;
        }
        if let Ok(Some(v)) = file.get_xattr(&name) {
            out.push((name, v));
        }
    }
    out.sort();
    out
}

/// What the rollback would change, path by path: from what the path holds now to what it held
/// before the dance's first change to it.
pub(super) fn reverse_diff(o: &Opening, opts: &DiffOptions) -> Result<Vec<Change>, ApplyError> {
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
