//! Steps 4 and 5 of a rollback: each record's operations undone in reverse order (a forced
//! path's newer version kept beside it), and older dances' records restamped.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{renameat, renameat2, RenameFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::apply::merge::{self, Opened};
use crate::apply::staging::{self, Staging};
use crate::apply::undo::{self, Progress, Record};
use crate::apply::{at, ApplyError, Op};

use super::{Opening, Outcome};

/// Brings older dances' records up to date with what this rollback put back: keeping an entry
/// aside and renaming it back moved its change time, not its content. Only an entry that was,
/// when this dance's merge kept it, exactly what the older record names is restamped; one
/// edited between the two dances still stops the older rollback.
pub(super) fn restamp(o: &Opening, older: &[undo::Dance]) -> Result<(), ApplyError> {
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
                crate::apply::journal::write_json_durably(path, &rec)?;
            }
        }
    }
    Ok(())
}

/// A record's undo folders, one per filesystem, opened and checked (`None` where the merge
/// kept nothing, or the folder is gone).
pub(super) fn undo_folders(
    rec: &Record,
    opened: &Opened,
) -> Result<Vec<Option<Staging>>, ApplyError> {
    merge::reopen(&rec.journal, opened, |fs| fs.undo.as_ref())
}

/// A free name beside `name` for the newer version of a forced path.
pub(super) fn newer_name(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    dance: &str,
) -> OsString {
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
pub(super) fn keep_newer(
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
pub(super) fn undo_record(
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
        crate::apply::journal::write_json_durably(path, rec)?;
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
