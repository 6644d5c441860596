//! A scratch layer as operations on the live tree, in the order they must happen: a path's
//! deletion before what replaces it, a folder before what goes in it.
//!
//! Every operation names its filesystem (an index into the journal's filesystems) and a path
//! relative to that filesystem's top, in bytes: the merge reaches it through a descriptor of
//! that top, never by an absolute path.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ApplyError;
use crate::diff::{is_opaque, is_whiteout};

/// Attributes a merged path takes from the scratch layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    /// Permission bits, with setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Extended attributes (SELinux, file capabilities, ACLs, `user.*`), overlayfs's own left
    /// out.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Modification time: seconds and nanoseconds.
    pub mtime: (i64, i64),
}

/// One operation of a merge. Each can be repeated with the same result, which is what makes a
/// journal replay safe. `fs` is the filesystem, `path` relative to its top.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Remove whatever is at `path` (a folder with everything in it).
    Delete {
        /// The filesystem.
        fs: usize,
        /// The path.
        #[serde(with = "super::bytes")]
        path: PathBuf,
    },
    /// A folder at `path` with these attributes (created when missing).
    Dir {
        /// The filesystem.
        fs: usize,
        /// The path.
        #[serde(with = "super::bytes")]
        path: PathBuf,
        /// Its attributes.
        attrs: Attrs,
        /// The live folder's attributes when the plan was made, which a rollback restores;
        /// `None` when there was no folder there (the merge makes it).
        #[serde(default)]
        before: Option<Attrs>,
    },
    /// A regular file: `source` (in the scratch layer) staged as `staged`, renamed to `path`.
    File {
        /// The filesystem.
        fs: usize,
        /// The path.
        #[serde(with = "super::bytes")]
        path: PathBuf,
        /// Its content in the scratch layer.
        #[serde(with = "super::bytes")]
        source: PathBuf,
        /// Its name in the filesystem's staging folder.
        staged: u32,
        /// Its attributes.
        attrs: Attrs,
    },
    /// A symbolic link.
    Symlink {
        /// The filesystem.
        fs: usize,
        /// The path.
        #[serde(with = "super::bytes")]
        path: PathBuf,
        /// What it points to.
        #[serde(with = "super::bytes")]
        target: PathBuf,
        /// Its name in the staging folder.
        staged: u32,
        /// Its owner and group (a link's mode is not settable).
        attrs: Attrs,
    },
    /// A device node or fifo.
    Node {
        /// The filesystem.
        fs: usize,
        /// The path.
        #[serde(with = "super::bytes")]
        path: PathBuf,
        /// `st_mode` (type and permissions).
        mode: u32,
        /// Device numbers.
        rdev: u64,
        /// Its name in the staging folder.
        staged: u32,
        /// Its attributes.
        attrs: Attrs,
    },
    /// A second name for a file staged earlier in the plan (hard links within the layer):
    /// linked in the staging folder, so both names are one inode before either is in place.
    HardLink {
        /// The filesystem.
        fs: usize,
        /// The path.
        #[serde(with = "super::bytes")]
        path: PathBuf,
        /// The staged name of the first file.
        to: u32,
        /// Its own name in the staging folder.
        staged: u32,
    },
}

impl Op {
    /// The filesystem and the path (relative to its top) the operation changes.
    pub fn target(&self) -> (usize, &Path) {
        match self {
            Op::Delete { fs, path }
            | Op::Dir { fs, path, .. }
            | Op::File { fs, path, .. }
            | Op::Symlink { fs, path, .. }
            | Op::Node { fs, path, .. }
            | Op::HardLink { fs, path, .. } => (*fs, path),
        }
    }

    /// The name it is staged under, for operations that stage something.
    pub fn staged(&self) -> Option<u32> {
        match self {
            Op::File { staged, .. }
            | Op::Symlink { staged, .. }
            | Op::Node { staged, .. }
            | Op::HardLink { staged, .. } => Some(*staged),
            Op::Delete { .. } | Op::Dir { .. } => None,
        }
    }
}

/// Whether an extended attribute is overlayfs's own (a scratch layer's bookkeeping, never
/// merged nor compared).
pub fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

/// Reads the attributes of `path` (not following links).
pub fn attrs_of(path: &Path, meta: &std::fs::Metadata) -> Result<Attrs, ApplyError> {
    let mut xattrs = Vec::new();
    if !meta.file_type().is_symlink() {
        let names = xattr::list(path).map_err(|e| ApplyError::io("list xattrs of", path, e))?;
        for name in names {
            let Some(name) = name.to_str().map(str::to_owned) else {
                return Err(ApplyError::io(
                    "read xattrs of",
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "an extended attribute's name is not UTF-8",
                    ),
                ));
            };
            if is_overlay_xattr(&name) {
                continue;
            }
            if let Some(value) =
                xattr::get(path, &name).map_err(|e| ApplyError::io("read xattrs of", path, e))?
            {
                xattrs.push((name, value));
            }
        }
        xattrs.sort();
    }
    Ok(Attrs {
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        xattrs,
        mtime: (meta.mtime(), meta.mtime_nsec()),
    })
}

/// Whether the live folder `live` already has `attrs` (owner, mode, extended attributes).
fn same_attrs(
    attrs: &Attrs,
    live: &Path,
    meta: Option<&std::fs::Metadata>,
) -> Result<bool, ApplyError> {
    let Some(meta) = meta else {
        return Ok(false);
    };
    if (meta.mode() & 0o7777, meta.uid(), meta.gid()) != (attrs.mode, attrs.uid, attrs.gid) {
        return Ok(false);
    }
    Ok(attrs_of(live, meta)?.xattrs == attrs.xattrs)
}

/// Whether the live entry is what the layer's entry is: same type, owner, mode, extended
/// attributes, and content (a file's bytes, a link's target, a node's device). Times do not
/// count, as in the diff. A file with other names in the layer is always merged (its links
/// are made in the staging folder).
fn same_entry(
    upper: &Path,
    um: &std::fs::Metadata,
    live: &Path,
    lm: &std::fs::Metadata,
) -> Result<bool, ApplyError> {
    let (ut, lt) = (um.file_type(), lm.file_type());
    if (um.uid(), um.gid()) != (lm.uid(), lm.gid()) {
        return Ok(false);
    }
    if ut.is_symlink() && lt.is_symlink() {
        let read = |p: &Path| std::fs::read_link(p).map_err(|e| ApplyError::io("read link", p, e));
        return Ok(read(upper)? == read(live)?);
    }
    if um.mode() != lm.mode() {
        // Type and permission bits at once.
        return Ok(false);
    }
    if ut.is_file() {
        if um.nlink() > 1 || um.len() != lm.len() {
            return Ok(false);
        }
    } else if ut.is_char_device() || ut.is_block_device() {
        if um.rdev() != lm.rdev() {
            return Ok(false);
        }
    } else if !ut.is_fifo() {
        return Ok(false);
    }
    if attrs_of(upper, um)?.xattrs != attrs_of(live, lm)?.xattrs {
        return Ok(false);
    }
    if ut.is_file() {
        return same_content(upper, live, lm);
    }
    Ok(true)
}

/// Whether the layer's file `a` and the live file `b` (which was `b_meta` when the plan looked)
/// hold the same bytes, read side by side up to the first difference. The live file is opened
/// without following a link and without blocking, and must still be the file the plan saw: a
/// local user who swaps in a link or a fifo gets "not the same" (the entry is merged), never a
/// read elsewhere or a hang.
fn same_content(a: &Path, b: &Path, b_meta: &std::fs::Metadata) -> Result<bool, ApplyError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut fa = std::fs::File::open(a).map_err(|e| ApplyError::io("read", a, e))?;
    let Ok(mut fb) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(b)
    else {
        return Ok(false);
    };
    let still = fb
        .metadata()
        .is_ok_and(|m| m.is_file() && m.dev() == b_meta.dev() && m.ino() == b_meta.ino());
    if !still {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| ApplyError::io("read", a, e))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| ApplyError::io("read", b, e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }

    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
}

struct Planner<'a> {
    fs: usize,
    /// The live filesystem's device: a live path on another one is a mount point that the
    /// sandbox showed empty, and must not be deleted into or renamed onto.
    dev: u64,
    live_top: &'a Path,
    next: &'a mut u32,
    ops: Vec<Op>,
    links: HashMap<(u64, u64), u32>,
}

impl Planner<'_> {
    fn staged(&mut self) -> u32 {
        *self.next += 1;
        *self.next
    }

    fn dir(&mut self, upper: &Path, rel: &Path) -> Result<(), ApplyError> {
        let mut names: Vec<_> = std::fs::read_dir(upper)
            .map_err(|e| ApplyError::io("read", upper, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| ApplyError::io("read", upper, e))?;
        names.sort();
        for name in names {
            let u = upper.join(&name);
            let r = rel.join(&name);
            let l = self.live_top.join(&r);
            let um = std::fs::symlink_metadata(&u).map_err(|e| ApplyError::io("stat", &u, e))?;
            let lm = std::fs::symlink_metadata(&l).ok();
            // Only a folder's device tells a mount point: overlayfs (without `xino`) reports
            // the device of the layer a file lives in, so an overlay root is no other
            // filesystem for its files.
            if lm
                .as_ref()
                .is_some_and(|m| m.is_dir() && m.dev() != self.dev)
            {
                return Err(ApplyError::OtherFilesystem(l));
            }
            let fs = self.fs;
            if is_whiteout(&um) {
                if lm.is_some() {
                    self.ops.push(Op::Delete { fs, path: r });
                }
                continue;
            }
            let ft = um.file_type();
            if ft.is_dir() {
                let live_is_dir = lm.as_ref().is_some_and(|m| m.is_dir());
                if lm.is_some() && !live_is_dir {
                    self.ops.push(Op::Delete {
                        fs,
                        path: r.clone(),
                    });
                }
                let opaque = is_opaque(&u).map_err(|e| ApplyError::Io {
                    what: "read xattrs of",
                    path: u.clone(),
                    source: std::io::Error::other(e),
                })?;
                if opaque && live_is_dir {
                    // A replaced folder: what the layer does not hold goes.
                    let mut gone: Vec<_> = std::fs::read_dir(&l)
                        .map_err(|e| ApplyError::io("read", &l, e))?
                        .filter_map(|e| e.ok().map(|e| e.file_name()))
                        .filter(|n| std::fs::symlink_metadata(u.join(n)).is_err())
                        .collect();
                    gone.sort();
                    for n in gone {
                        self.ops.push(Op::Delete {
                            fs,
                            path: r.join(n),
                        });
                    }
                }
                let attrs = attrs_of(&u, &um)?;
                // A folder that is already as the layer has it is left alone (its times too):
                // only what changes in it is merged.
                let same = live_is_dir && same_attrs(&attrs, &l, lm.as_ref())?;
                if !same {
                    let before = match lm.as_ref().filter(|_| live_is_dir) {
                        Some(m) => Some(attrs_of(&l, m)?),
                        None => None,
                    };
                    self.ops.push(Op::Dir {
                        fs,
                        path: r.clone(),
                        attrs,
                        before,
                    });
                }
                self.dir(&u, &r)?;
                continue;
            }
            // What is already there, byte for byte and attribute for attribute, is left alone:
            // no new inode, no new time (a rewritten template with the same output).
            if let Some(live_meta) = &lm {
                if same_entry(&u, &um, &l, live_meta)? {
                    continue;
                }
            }
            if lm.as_ref().is_some_and(|m| m.is_dir()) {
                self.ops.push(Op::Delete {
                    fs,
                    path: r.clone(),
                });
            }
            if ft.is_file() {
                let key = (um.dev(), um.ino());
                if um.nlink() > 1 {
                    if let Some(&to) = self.links.get(&key) {
                        let staged = self.staged();
                        self.ops.push(Op::HardLink {
                            fs,
                            path: r,
                            to,
                            staged,
                        });
                        continue;
                    }
                }
                let staged = self.staged();
                if um.nlink() > 1 {
                    self.links.insert(key, staged);
                }
                let attrs = attrs_of(&u, &um)?;
                self.ops.push(Op::File {
                    fs,
                    path: r,
                    source: u,
                    staged,
                    attrs,
                });
            } else if ft.is_symlink() {
                let target =
                    std::fs::read_link(&u).map_err(|e| ApplyError::io("read link", &u, e))?;
                let attrs = attrs_of(&u, &um)?;
                let staged = self.staged();
                self.ops.push(Op::Symlink {
                    fs,
                    path: r,
                    target,
                    staged,
                    attrs,
                });
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                let attrs = attrs_of(&u, &um)?;
                let staged = self.staged();
                self.ops.push(Op::Node {
                    fs,
                    path: r,
                    mode: um.mode(),
                    rdev: um.rdev(),
                    staged,
                    attrs,
                });
            }
            // A socket is a live endpoint of a process that is gone: nothing to merge.
        }
        Ok(())
    }
}

/// The operations that bring the filesystem `fs`, whose top is `live_top`, to what `upper` (a
/// scratch layer over it) shows. Staged names are numbered on from `next`, which is left at
/// the last one used, so that names stay unique across a module's filesystems.
pub fn plan(
    upper: &Path,
    live_top: &Path,
    fs: usize,
    next: &mut u32,
) -> Result<Vec<Op>, ApplyError> {
    let dev = std::fs::symlink_metadata(live_top)
        .map_err(|e| ApplyError::io("stat", live_top, e))?
        .dev();
    let mut planner = Planner {
        fs,
        dev,
        live_top,
        next,
        ops: Vec::new(),
        links: HashMap::new(),
    };
    planner.dir(upper, Path::new(""))?;
    Ok(planner.ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_file_swapped_for_a_fifo_is_not_the_same_and_never_blocks() {
        let dir = std::env::temp_dir().join(format!("disco-samefifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (upper, live) = (dir.join("upper"), dir.join("live"));
        std::fs::write(&upper, "same\n").unwrap();
        std::fs::write(&live, "same\n").unwrap();
        let seen = std::fs::symlink_metadata(&live).unwrap();
        // Between the plan's look and its read, a local user puts a fifo there.
        std::fs::remove_file(&live).unwrap();
        nix::unistd::mkfifo(&live, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (u, l) = (upper.clone(), live.clone());
        std::thread::spawn(move || {
            let _ = tx.send(same_content(&u, &l, &seen).map_err(|e| e.to_string()));
        });
        let same = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the comparison blocked on a fifo");
        assert_eq!(same, Ok(false));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
