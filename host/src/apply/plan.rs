//! A scratch layer as operations on the live tree, in the order they must happen: a path's
//! deletion before what replaces it, a folder before what goes in it.

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
    /// Extended attributes (SELinux included), overlayfs's own left out.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Modification time: seconds and nanoseconds.
    pub mtime: (i64, i64),
}

/// One operation of a merge. Each can be repeated with the same result, which is what makes a
/// journal replay safe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Remove whatever is at `path` (a folder with everything in it).
    Delete {
        /// The live path.
        path: PathBuf,
    },
    /// A folder at `path` with these attributes (created when missing).
    Dir {
        /// The live path.
        path: PathBuf,
        /// Its attributes.
        attrs: Attrs,
    },
    /// A regular file: `source` (in the scratch layer) staged as `staged`, renamed to `path`.
    File {
        /// The live path.
        path: PathBuf,
        /// Its content in the scratch layer.
        source: PathBuf,
        /// Where it is staged, on the live filesystem.
        staged: PathBuf,
        /// Its attributes.
        attrs: Attrs,
    },
    /// A symbolic link.
    Symlink {
        /// The live path.
        path: PathBuf,
        /// What it points to.
        target: PathBuf,
        /// Where it is staged.
        staged: PathBuf,
        /// Its owner and group (mode and times of links are not settable).
        attrs: Attrs,
    },
    /// A device node or fifo.
    Node {
        /// The live path.
        path: PathBuf,
        /// `st_mode` (type and permissions).
        mode: u32,
        /// Device numbers.
        rdev: u64,
        /// Where it is staged.
        staged: PathBuf,
        /// Its attributes.
        attrs: Attrs,
    },
    /// A second name for a file merged earlier in the plan (hard links within the layer).
    HardLink {
        /// The live path.
        path: PathBuf,
        /// The earlier file's live path.
        to: PathBuf,
        /// Where the link is staged.
        staged: PathBuf,
    },
}

/// Reads the attributes of `path` (not following links).
pub fn attrs_of(path: &Path, meta: &std::fs::Metadata) -> Result<Attrs, ApplyError> {
    let mut xattrs = Vec::new();
    if !meta.file_type().is_symlink() {
        let names = xattr::list(path).map_err(|e| ApplyError::io("list xattrs of", path, e))?;
        for name in names {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
                continue;
            }
            if let Ok(Some(value)) = xattr::get(path, &name) {
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

struct Planner<'a> {
    staging: &'a Path,
    /// The live filesystem's device: a live path on another one is a mount point that the
    /// sandbox showed empty, and must not be deleted into or renamed onto.
    dev: u64,
    ops: Vec<Op>,
    links: HashMap<(u64, u64), PathBuf>,
}

impl Planner<'_> {
    fn staged(&self) -> PathBuf {
        self.staging.join(self.ops.len().to_string())
    }

    fn dir(&mut self, upper: &Path, live: &Path) -> Result<(), ApplyError> {
        let mut names: Vec<_> = std::fs::read_dir(upper)
            .map_err(|e| ApplyError::io("read", upper, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| ApplyError::io("read", upper, e))?;
        names.sort();
        for name in names {
            let u = upper.join(&name);
            let l = live.join(&name);
            let um = std::fs::symlink_metadata(&u).map_err(|e| ApplyError::io("stat", &u, e))?;
            let lm = std::fs::symlink_metadata(&l).ok();
            if lm.as_ref().is_some_and(|m| m.dev() != self.dev) {
                return Err(ApplyError::OtherFilesystem(l));
            }
            if is_whiteout(&um) {
                if lm.is_some() {
                    self.ops.push(Op::Delete { path: l });
                }
                continue;
            }
            let ft = um.file_type();
            if ft.is_dir() {
                let live_is_dir = lm.as_ref().is_some_and(|m| m.is_dir());
                if lm.is_some() && !live_is_dir {
                    self.ops.push(Op::Delete { path: l.clone() });
                }
                let opaque = is_opaque(&u).map_err(|e| ApplyError::Io {
                    what: "read xattrs of",
                    path: u.clone(),
                    source: std::io::Error::other(e.to_string()),
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
                        self.ops.push(Op::Delete { path: l.join(n) });
                    }
                }
                let attrs = attrs_of(&u, &um)?;
                self.ops.push(Op::Dir {
                    path: l.clone(),
                    attrs,
                });
                self.dir(&u, &l)?;
                continue;
            }
            if lm.as_ref().is_some_and(|m| m.is_dir()) {
                self.ops.push(Op::Delete { path: l.clone() });
            }
            let staged = self.staged();
            if ft.is_file() {
                let key = (um.dev(), um.ino());
                if um.nlink() > 1 {
                    if let Some(first) = self.links.get(&key) {
                        self.ops.push(Op::HardLink {
                            path: l,
                            to: first.clone(),
                            staged,
                        });
                        continue;
                    }
                    self.links.insert(key, l.clone());
                }
                let attrs = attrs_of(&u, &um)?;
                self.ops.push(Op::File {
                    path: l,
                    source: u,
                    staged,
                    attrs,
                });
            } else if ft.is_symlink() {
                let target =
                    std::fs::read_link(&u).map_err(|e| ApplyError::io("read link", &u, e))?;
                let attrs = attrs_of(&u, &um)?;
                self.ops.push(Op::Symlink {
                    path: l,
                    target,
                    staged,
                    attrs,
                });
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                let attrs = attrs_of(&u, &um)?;
                self.ops.push(Op::Node {
                    path: l,
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

/// The operations that bring `live` to what `upper` (a scratch layer over it) shows; new
/// files are to be staged in `staging` (on `live`'s filesystem).
pub fn plan(upper: &Path, live: &Path, staging: &Path) -> Result<Vec<Op>, ApplyError> {
    let dev = std::fs::symlink_metadata(live)
        .map_err(|e| ApplyError::io("stat", live, e))?
        .dev();
    let mut planner = Planner {
        staging,
        dev,
        ops: Vec::new(),
        links: HashMap::new(),
    };
    planner.dir(upper, live)?;
    Ok(planner.ops)
}
