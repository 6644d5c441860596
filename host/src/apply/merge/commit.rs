//! Phase two of a merge: the commit into the live tree through descriptors (what it replaces
//! kept aside in the undo folder), the check that every changed path holds what was staged,
//! the `syncfs` of each changed filesystem and the undo record.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::FileStat;
use nix::sys::time::TimeSpec;

use crate::apply::journal::Journal;
use crate::apply::staging::{self, Staging};
use crate::apply::undo::{self, Stamp};
use crate::apply::{at, ApplyError, Op};

use super::{Folders, Opened};

/// Keeps what is at `name` in `dir` (the path of operation `i`, which it is about to replace
/// or delete) in the undo folder: renamed there, or for a file another operation replaces
/// (`link`), linked there so the path is never empty. Done once: what a replay finds at the
/// path after it was kept came later, and is removed as before. Where it cannot be kept (a
/// folder that overlayfs will not rename), it is removed and a mark in the undo folder says
/// so. Without an undo folder it is removed. Returns what the entry was when it was kept
/// now (its change time moves as it is linked or renamed), for [`undo::Record::before`].
pub(super) fn keep_aside(
    undo: Option<&Staging>,
    i: usize,
    (dir, name): (BorrowedFd<'_>, &OsStr),
    here: &FileStat,
    link: bool,
    shown: &Path,
) -> Result<Option<Stamp>, ApplyError> {
    let remove = || at::remove(dir, name, shown).map(|_| None);
    let Some(u) = undo else {
        // Without a record, a file another entry replaces goes in that entry's rename.
        return if link && !at::is_dir(here) {
            Ok(None)
        } else {
            remove()
        };
    };
    let aside = undo::aside_name(i);
    if at::stat(u.fd(), &aside, shown)?.is_some() {
        return if link { Ok(None) } else { remove() };
    }
    if at::is_dir(here) {
        // A mount point is never moved, as it is never emptied.
        let parent =
            nix::sys::stat::fstat(dir).map_err(|e| ApplyError::io("stat", shown, e.into()))?;
        if here.st_dev != parent.st_dev {
            return Err(ApplyError::OtherFilesystem(shown.to_owned()));
        }
        if let Some(mount) = at::mount_beneath(dir, name, shown)? {
            return Err(ApplyError::OtherFilesystem(mount));
        }
    }
    let kept = if link && !at::is_dir(here) {
        nix::unistd::linkat(
            dir,
            name,
            u.fd(),
            aside.as_os_str(),
            nix::fcntl::AtFlags::empty(),
        )
    } else {
        nix::fcntl::renameat(dir, name, u.fd(), aside.as_os_str())
    };
    match kept {
        Ok(()) => Ok(Some(Stamp::of(here))),
        Err(Errno::EXDEV | Errno::EMLINK | Errno::EPERM) => {
            let mut mark = aside;
            mark.push(".lost");
            nix::fcntl::openat(
                u.fd(),
                mark.as_os_str(),
                nix::fcntl::OFlag::O_CREAT
                    | nix::fcntl::OFlag::O_WRONLY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| ApplyError::io("mark", shown, e.into()))?;
            if link {
                // The rename of the new entry replaces a file; a folder must go first.
                if at::is_dir(here) {
                    remove()?;
                }
                Ok(None)
            } else {
                remove()
            }
        }
        Err(e) => Err(ApplyError::io("keep for undo", shown, e.into())),
    }
}

/// Phase two: the live tree changed in plan order, one atomic step at a time. A staged entry
/// that is no longer staged is in place already when its path holds its inode (a replay of a
/// commit cut short); otherwise it is returned as not applied.
pub(super) fn commit(
    j: &Journal,
    opened: &Opened,
    folders: &Folders,
    inodes: &BTreeMap<u32, u64>,
) -> Result<Committed, ApplyError> {
    let stagings = &folders.staging;
    let mut paths = 0;
    let mut missing = Vec::new();
    let mut before = BTreeMap::new();
    let mut kept = |i: usize, stamp: Option<Stamp>| {
        if let Some(stamp) = stamp {
            before.insert(u32::try_from(i).unwrap_or(u32::MAX), stamp);
        }
    };
    for (i, op) in j.ops.iter().enumerate() {
        let (fs, rel) = op.target();
        let shown = j.shown(fs, rel);
        let (dir, name) = at::parent(opened.tops[fs].as_fd(), rel, &shown)?;
        let undo = folders.undo.get(fs).and_then(Option::as_ref);
        match op {
            Op::Delete { .. } => {
                // A replay must not delete what a later operation already put in its place.
                let here = at::stat(dir.as_fd(), name, &shown)?;
                if let Some(st) = &here {
                    if !replaced_already(&j.ops[i + 1..], fs, rel, here.as_ref(), inodes) {
                        kept(
                            i,
                            keep_aside(undo, i, (dir.as_fd(), name), st, false, &shown)?,
                        );
                    }
                }
            }
            Op::Dir { attrs, .. } => {
                match at::stat(dir.as_fd(), name, &shown)? {
                    Some(st) if at::is_dir(&st) => {}
                    other => {
                        if let Some(st) = &other {
                            kept(
                                i,
                                keep_aside(undo, i, (dir.as_fd(), name), st, false, &shown)?,
                            );
                        }
                        nix::sys::stat::mkdirat(
                            dir.as_fd(),
                            name,
                            nix::sys::stat::Mode::from_bits_truncate(0o700),
                        )
                        .map_err(|e| ApplyError::io("create", &shown, e.into()))?;
                    }
                }
                let fd = at::open_dir(dir.as_fd(), name, &shown)?;
                // A folder mounted over since the plan keeps its own attributes.
                let here = nix::sys::stat::fstat(fd.as_fd())
                    .map_err(|e| ApplyError::io("stat", &shown, e.into()))?;
                let top = nix::sys::stat::fstat(opened.tops[fs].as_fd())
                    .map_err(|e| ApplyError::io("stat", &shown, e.into()))?;
                if here.st_dev != top.st_dev {
                    return Err(ApplyError::OtherFilesystem(shown));
                }
                staging::set_dir_attrs(&fd, attrs, &shown)?;
            }
            _ => {
                let n = op.staged().unwrap_or_default();
                let entry = staging::entry_name(n);
                let staged = match stagings.get(fs).and_then(Option::as_ref) {
                    Some(s) => s.inode(n)?.is_some().then_some(s),
                    None => None,
                };
                let Some(s) = staged else {
                    let here = at::stat(dir.as_fd(), name, &shown)?.map(|st| st.st_ino);
                    if here.is_none() || here != inodes.get(&n).copied() {
                        missing.push(shown);
                    }
                    continue;
                };
                if let Some(st) = at::stat(dir.as_fd(), name, &shown)? {
                    kept(
                        i,
                        keep_aside(undo, i, (dir.as_fd(), name), &st, true, &shown)?,
                    );
                    if at::is_dir(&st) && at::stat(dir.as_fd(), name, &shown)?.is_some() {
                        at::remove(dir.as_fd(), name, &shown)?;
                    }
                }
                nix::fcntl::renameat(s.fd(), entry.as_os_str(), dir.as_fd(), name)
                    .map_err(|e| ApplyError::io("rename into", &shown, e.into()))?;
            }
        }
        paths += 1;
    }
    // Folder times last: every rename above touched its folder's.
    for op in j.ops.iter().rev() {
        if let Op::Dir {
            fs, path, attrs, ..
        } = op
        {
            let shown = j.shown(*fs, path);
            let (dir, name) = at::parent(opened.tops[*fs].as_fd(), path, &shown)?;
            let fd = at::open_dir(dir.as_fd(), name, &shown)?;
            nix::sys::stat::futimens(
                fd.as_fd(),
                &TimeSpec::UTIME_OMIT,
                &TimeSpec::new(attrs.mtime.0, attrs.mtime.1),
            )
            .map_err(|e| ApplyError::io("set times of", &shown, e.into()))?;
        }
    }
    Ok(Committed {
        paths,
        missing,
        before,
    })
}

/// What a commit did.
pub(super) struct Committed {
    /// Operations carried out.
    pub(super) paths: usize,
    /// Paths whose staged copy was gone (a replay after a lost staging folder).
    pub(super) missing: Vec<PathBuf>,
    /// Operation → what its path held when the commit kept it aside.
    pub(super) before: BTreeMap<u32, Stamp>,
}

/// Whether what is at a path now (`here`) is what a later operation on it put there: the
/// entry it staged, or the folder it made where something else was.
pub(super) fn replaced_already(
    later: &[Op],
    fs: usize,
    rel: &Path,
    here: Option<&nix::sys::stat::FileStat>,
    inodes: &BTreeMap<u32, u64>,
) -> bool {
    let Some(here) = here else {
        return false;
    };
    later
        .iter()
        .filter(|op| op.target() == (fs, rel))
        .any(|op| match op {
            Op::Dir { .. } => at::is_dir(here),
            Op::Delete { .. } => false,
            _ => op.staged().and_then(|n| inodes.get(&n)) == Some(&here.st_ino),
        })
}

/// Checks, through descriptors, that every path the plan changed holds what was staged for it
/// (the same inode), is a folder, or is gone, as its last operation says: anything else (a
/// folder renamed under the merge by someone else) fails the merge. Returns what each path
/// holds, by its last operation, for the undo record.
pub(super) fn verify(
    j: &Journal,
    opened: &Opened,
    inodes: &BTreeMap<u32, u64>,
) -> Result<BTreeMap<u32, Stamp>, ApplyError> {
    let mut stamps = BTreeMap::new();
    for ((fs, rel), i) in undo::last_ops(&j.ops) {
        let op = &j.ops[i];
        let shown = j.shown(fs, rel);
        let here = match at::parent(opened.tops[fs].as_fd(), rel, &shown) {
            Ok((dir, name)) => at::stat(dir.as_fd(), name, &shown)?,
            Err(_) if matches!(op, Op::Delete { .. }) => None,
            Err(e) => return Err(e),
        };
        let why = match (op, &here) {
            (Op::Delete { .. }, None) => None,
            (Op::Delete { .. }, Some(_)) => Some("still there after its deletion".to_owned()),
            (Op::Dir { .. }, Some(st)) if at::is_dir(st) => None,
            (Op::Dir { .. }, _) => Some("not the folder the merge made".to_owned()),
            (_, Some(st))
                if Some(st.st_ino) == op.staged().and_then(|n| inodes.get(&n).copied()) =>
            {
                None
            }
            (_, Some(_)) => Some("holds another file than the one the merge put there".to_owned()),
            (_, None) => Some("missing after the merge put it there".to_owned()),
        };
        if let Some(why) = why {
            return Err(ApplyError::Verify { path: shown, why });
        }
        if let Some(st) = &here {
            stamps.insert(u32::try_from(i).unwrap_or(u32::MAX), Stamp::of(st));
        }
    }
    Ok(stamps)
}

/// Turns a merge that is done and checked into an undo record (see [`undo`]): which
/// operations kept an entry aside or could not, what each path holds now, and how much the
/// kept entries weigh. An undo folder that kept nothing is removed. Written durably before
/// the journal says the merge is committed.
pub(super) fn record_undo(
    state_dir: &Path,
    name: &str,
    j: &Journal,
    opened: &Opened,
    undo_folders: Vec<Option<Staging>>,
    after: BTreeMap<u32, Stamp>,
    before: BTreeMap<u32, Stamp>,
) -> Result<(), ApplyError> {
    // A merge that kept nothing aside (`--keep-undo 0`, a journal of an older disco) cannot be
    // undone: no record says it can.
    if j.filesystems.iter().all(|f| f.undo.is_none()) {
        return Ok(());
    }
    let mut record = undo::Record {
        version: undo::VERSION,
        journal: j.clone(),
        asides: Vec::new(),
        after,
        before,
        lost: Vec::new(),
        bytes: 0,
        at_ms: crate::dance::report::unix_ms(),
        rollback: None,
    };
    for (fs, (kept, rec)) in undo_folders
        .into_iter()
        .zip(record.journal.filesystems.iter_mut())
        .enumerate()
    {
        let Some(u) = kept else {
            if rec.undo.take().is_some() {
                record.lost.push(format!(
                    "the undo folder of {} is gone",
                    j.shown(fs, Path::new("")).display()
                ));
            }
            continue;
        };
        let names = at::names(u.fd(), &u.shown)?;
        if names.is_empty() {
            let _ = u.remove(opened.tops[fs].as_fd());
            rec.undo = None;
            continue;
        }
        for n in names {
            let text = n.to_string_lossy();
            if let Some(i) = text
                .strip_suffix(".lost")
                .and_then(|i| i.parse::<usize>().ok())
            {
                if let Some(op) = j.ops.get(i) {
                    let (f, rel) = op.target();
                    record.lost.push(j.shown(f, rel).display().to_string());
                }
            } else if let Ok(i) = text.parse::<u32>() {
                record.bytes += undo::usage(u.fd(), &n, &u.shown.join(&n));
                record.asides.push(i);
            }
        }
    }
    record.asides.sort_unstable();
    record.lost.sort();
    record.write(state_dir, name)?;
    Ok(())
}

pub(super) fn sync_tops(j: &Journal, opened: &Opened) -> Result<(), ApplyError> {
    for (i, top) in opened.tops.iter().enumerate() {
        nix::unistd::syncfs(top.as_fd())
            .map_err(|e| ApplyError::io("syncfs", &j.shown(i, Path::new("")), e.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::deferred::Deferred;
    use crate::apply::journal::{self, FsRecord, Identity, Phase};
    use crate::apply::merge::{name_stagings, open, remove_folders, stage};
    use crate::apply::Attrs;

    /// A journal of one file onto the folder `root`, staged and committed as a merge does it.
    fn merged(root: &Path, source: &Path) -> (Journal, Opened, BTreeMap<u32, u64>) {
        std::fs::write(source, "new\n").unwrap();
        let fd = at::open_root(root).unwrap();
        let id = Identity::of(fd.as_fd(), root).unwrap();
        let mut j = Journal {
            version: journal::VERSION,
            run: "r".into(),
            module: "m".into(),
            node: "n".into(),
            root: root.to_owned(),
            root_id: id.clone(),
            filesystems: vec![FsRecord {
                rel: PathBuf::new(),
                id,
                staging: None,
                undo: None,
            }],
            ops: vec![Op::File {
                fs: 0,
                path: "etc/app.conf".into(),
                source: source.to_owned(),
                staged: 1,
                attrs: Attrs {
                    mode: 0o644,
                    uid: nix::unistd::geteuid().as_raw(),
                    gid: nix::unistd::getegid().as_raw(),
                    xattrs: Vec::new(),
                    mtime: (0, 0),
                },
            }],
            phase: Phase::Planned,
            deferred: Deferred::default(),
        };
        name_stagings(&mut j, true).unwrap();
        let opened = open(&j).unwrap();
        let (folders, inodes) = stage(&j, &opened).unwrap();
        let done = commit(&j, &opened, &folders, &inodes).unwrap();
        assert_eq!((done.paths, done.missing.len()), (1, 0));
        remove_folders(folders, &opened);
        (j, opened, inodes)
    }

    #[test]
    fn the_check_after_a_commit_finds_a_path_that_holds_another_file() {
        let base = std::env::temp_dir().join(format!("disco-verify-{}", std::process::id()));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let (j, opened, inodes) = merged(&root, &base.join("source"));
        verify(&j, &opened, &inodes).expect("what the merge put there");
        // Someone renamed the folder away and put one of theirs in its place.
        std::fs::rename(root.join("etc"), root.join("etc.moved")).unwrap();
        std::fs::create_dir(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/app.conf"), "theirs\n").unwrap();
        let err = verify(&j, &opened, &inodes).unwrap_err();
        assert!(
            matches!(&err, ApplyError::Verify { why, .. } if why.contains("another file")),
            "{err}"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
