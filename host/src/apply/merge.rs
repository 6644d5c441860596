//! Carrying out a plan: stage, `syncfs`, rename into place in plan order, check, `syncfs`.
//!
//! Staging writes every new file, link and node into a staging folder at the top of its
//! filesystem (see [`super::staging`]: only on filesystems the module changes), then one
//! `syncfs` makes all their data durable at once — the crash guarantee of an fsync per file,
//! without paying one per file. The journal then records each staged inode. Only then is the
//! live tree changed, one rename (or deletion) at a time through descriptors (see [`super::at`]),
//! so a file is always entirely old or entirely new. Last, every changed path is checked to hold
//! what was staged for it before the merge is called done.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::FileStat;
use nix::sys::time::TimeSpec;

use super::deferred::Deferred;
use super::journal::{self, FsRecord, Identity, Journal, Phase};
use super::staging::{self, Staging};
use super::undo::{self, Stamp};
use super::{at, plan, ApplyError, Op};

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

/// A new random staging name for each filesystem whose plan stages something, and, when the
/// merge keeps an undo record, a new undo folder name for each.
fn name_stagings(j: &mut Journal, undo: bool) -> Result<(), ApplyError> {
    for i in 0..j.filesystems.len() {
        j.filesystems[i].undo = if undo {
            Some(
                staging::new_name_with(undo::PREFIX)
                    .map_err(|e| ApplyError::io("draw a random name", &j.root, e))?,
            )
        } else {
            None
        };
        let stages = j
            .ops
            .iter()
            .any(|op| op.target().0 == i && op.staged().is_some());
        j.filesystems[i].staging = if stages {
            Some(
                staging::new_name()
                    .map_err(|e| ApplyError::io("draw a random name", &j.root, e))?,
            )
        } else {
            None
        };
    }
    Ok(())
}

/// Phase one: fresh staging and undo folders, every new file, link and node written in the
/// staging folders, and durable; returns each staged entry's inode.
fn stage(j: &Journal, opened: &Opened) -> Result<(Folders, BTreeMap<u32, u64>), ApplyError> {
    let mut folders = Folders::default();
    let made = (|| {
        for (i, fs) in j.filesystems.iter().enumerate() {
            let shown = j.shown(i, Path::new(""));
            let create = |name: &Option<String>| match name {
                Some(name) => Staging::create(opened.tops[i].as_fd(), &shown, name).map(Some),
                None => Ok(None),
            };
            folders.staging.push(create(&fs.staging)?);
            folders.undo.push(create(&fs.undo)?);
        }
        Ok(())
    })();
    if let Err(e) = made {
        remove_folders(folders, opened);
        return Err(e);
    }
    let stagings = &folders.staging;
    let mut inodes = BTreeMap::new();
    let result = (|| {
        for op in &j.ops {
            let (fs, _) = op.target();
            let Some(s) = stagings.get(fs).and_then(Option::as_ref) else {
                continue;
            };
            let ino = match op {
                Op::File {
                    source,
                    staged,
                    attrs,
                    ..
                } => s.file(*staged, source, attrs)?,
                Op::Symlink {
                    target,
                    staged,
                    attrs,
                    ..
                } => s.symlink(*staged, target, attrs)?,
                Op::Node {
                    mode,
                    rdev,
                    staged,
                    attrs,
                    ..
                } => s.node(*staged, *mode, *rdev, attrs)?,
                Op::HardLink { to, staged, .. } => s.hard_link(*staged, *to)?,
                Op::Delete { .. } | Op::Dir { .. } => continue,
            };
            inodes.insert(op.staged().unwrap_or_default(), ino);
        }
        for s in stagings.iter().flatten() {
            s.sync()?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok((folders, inodes)),
        Err(e) => {
            remove_folders(folders, opened);
            Err(e)
        }
    }
}

fn remove_stagings(stagings: Vec<Option<Staging>>, opened: &Opened) {
    for (i, s) in stagings.into_iter().enumerate() {
        if let Some(s) = s {
            let _ = s.remove(opened.tops[i].as_fd());
        }
    }
}

/// Removes staging and undo folders of a merge that changed nothing live.
fn remove_folders(folders: Folders, opened: &Opened) {
    remove_stagings(folders.staging, opened);
    remove_stagings(folders.undo, opened);
}

/// Opens the folders named `names` that a replay finds (a lost one is `None`).
pub(super) fn reopen(
    j: &Journal,
    opened: &Opened,
    names: impl Fn(&FsRecord) -> Option<&String>,
) -> Result<Vec<Option<Staging>>, ApplyError> {
    let mut out = Vec::new();
    for (i, fs) in j.filesystems.iter().enumerate() {
        let shown = j.shown(i, Path::new(""));
        out.push(match names(fs) {
            Some(name) => match Staging::open(opened.tops[i].as_fd(), name, &shown) {
                Ok(s) => Some(s),
                Err(ApplyError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    None
                }
                Err(e) => return Err(e),
            },
            None => None,
        });
    }
    Ok(out)
}

/// Opens the staging and undo folders a replay finds.
fn reopen_folders(j: &Journal, opened: &Opened) -> Result<Folders, ApplyError> {
    Ok(Folders {
        staging: reopen(j, opened, |fs| fs.staging.as_ref())?,
        undo: reopen(j, opened, |fs| fs.undo.as_ref())?,
    })
}

/// Keeps what is at `name` in `dir` (the path of operation `i`, which it is about to replace
/// or delete) in the undo folder: renamed there, or for a file another operation replaces
/// (`link`), linked there so the path is never empty. Done once: what a replay finds at the
/// path after it was kept came later, and is removed as before. Where it cannot be kept (a
/// folder that overlayfs will not rename), it is removed and a mark in the undo folder says
/// so. Without an undo folder it is removed. Returns what the entry was when it was kept
/// now (its change time moves as it is linked or renamed), for [`undo::Record::before`].
fn keep_aside(
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
fn commit(
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
struct Committed {
    /// Operations carried out.
    paths: usize,
    /// Paths whose staged copy was gone (a replay after a lost staging folder).
    missing: Vec<PathBuf>,
    /// Operation → what its path held when the commit kept it aside.
    before: BTreeMap<u32, Stamp>,
}

/// Whether what is at a path now (`here`) is what a later operation on it put there: the
/// entry it staged, or the folder it made where something else was.
fn replaced_already(
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
fn verify(
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
fn record_undo(
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

fn sync_tops(j: &Journal, opened: &Opened) -> Result<(), ApplyError> {
    for (i, top) in opened.tops.iter().enumerate() {
        nix::unistd::syncfs(top.as_fd())
            .map_err(|e| ApplyError::io("syncfs", &j.shown(i, Path::new("")), e.into()))?;
    }
    Ok(())
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

/// What a replay did with one journal.
#[derive(Debug)]
pub enum Replayed {
    /// The merge is finished (perhaps it already was); the deferred commands remain to run.
    Finished {
        /// Paths it changed now.
        paths: usize,
    },
    /// It cannot be finished from what remains: nothing or only part of it was applied, as
    /// the message says; the caller sets the journal aside.
    Unfinishable(String),
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
                return Ok(Replayed::Unfinishable(format!(
                    "nothing of it was applied: its scratch layer is gone ({} and {} more)",
                    first.display(),
                    lost.len() - 1
                )));
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

/// Commits what is staged, checks, syncs and removes the staging folders; `Err(message)` when
/// staged copies were lost, saying what was and was not applied.
fn finish_staged(
    state_dir: &Path,
    name: &str,
    j: &Journal,
    opened: &Opened,
    folders: Folders,
    inodes: &BTreeMap<u32, u64>,
) -> Result<Result<usize, String>, ApplyError> {
    let Committed {
        paths,
        missing,
        before,
    } = commit(j, opened, &folders, inodes)?;
    remove_stagings(folders.staging, opened);
    if !missing.is_empty() {
        let shown: Vec<String> = missing
            .iter()
            .take(5)
            .map(|p| p.display().to_string())
            .collect();
        return Ok(Err(format!(
            "{} of its {} operations were applied; {} path(s) were not, their staged copies being gone: {}{}",
            j.ops.len() - missing.len(),
            j.ops.len(),
            missing.len(),
            shown.join(", "),
            if missing.len() > 5 { ", ..." } else { "" }
        )));
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

#[cfg(test)]
mod tests {
    use super::*;
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
