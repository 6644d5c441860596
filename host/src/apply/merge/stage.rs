//! Phase one of a merge: fresh staging and undo folders with random names, every new file,
//! link and node written into them, and their removal; a replay reopens the ones it finds.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;

use crate::apply::journal::{FsRecord, Journal};
use crate::apply::staging::{self, Staging};
use crate::apply::undo::{self};
use crate::apply::{ApplyError, Op};

use super::{Folders, Opened};

/// A new random staging name for each filesystem whose plan stages something, and, when the
/// merge keeps an undo record, a new undo folder name for each.
pub(super) fn name_stagings(j: &mut Journal, undo: bool) -> Result<(), ApplyError> {
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
pub(super) fn stage(
    j: &Journal,
    opened: &Opened,
) -> Result<(Folders, BTreeMap<u32, u64>), ApplyError> {
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

pub(super) fn remove_stagings(stagings: Vec<Option<Staging>>, opened: &Opened) {
    for (i, s) in stagings.into_iter().enumerate() {
        if let Some(s) = s {
            let _ = s.remove(opened.tops[i].as_fd());
        }
    }
}

/// Removes staging and undo folders of a merge that changed nothing live.
pub(super) fn remove_folders(folders: Folders, opened: &Opened) {
    remove_stagings(folders.staging, opened);
    remove_stagings(folders.undo, opened);
}

/// Opens the folders named `names` that a replay finds (a lost one is `None`).
pub(in crate::apply) fn reopen(
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
pub(super) fn reopen_folders(j: &Journal, opened: &Opened) -> Result<Folders, ApplyError> {
    Ok(Folders {
        staging: reopen(j, opened, |fs| fs.staging.as_ref())?,
        undo: reopen(j, opened, |fs| fs.undo.as_ref())?,
    })
}
