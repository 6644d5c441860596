//! Walking an overlay upper layer against its lower one, to list the paths that may have changed.
//!
//! The walk only `lstat`s and lists directories: it decides *where* to look (created, whited out,
//! hidden by an opaque directory, present on both sides). Reading contents and attributes, the
//! expensive part, is left to [`compare`](super::compare), which can spread it over threads.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::Metadata;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::entry::Layer;
use super::error::DiffError;
use super::meta::{is_opaque, is_whiteout};

/// One path to compare: its file in the upper layer (absent when whited out or hidden by an opaque
/// directory) and in the lower one (absent when created).
#[derive(Debug)]
pub(crate) struct Candidate {
    /// The path as seen inside the sandbox.
    pub(crate) path: PathBuf,
    /// The file in the upper layer, with its `lstat`.
    pub(crate) upper: Option<(PathBuf, Metadata)>,
    /// The file in the lower layer, with its `lstat`.
    pub(crate) lower: Option<(PathBuf, Metadata)>,
    /// `st_dev` of the lower filesystem, reported as `device=[…]`.
    pub(crate) layer_dev: u64,
}

/// A directory of the upper layer still to be listed.
struct Pending {
    /// Relative to the layer roots.
    rel: PathBuf,
    /// Whether the lower layer has a directory at `rel` whose children show through.
    lower_is_dir: bool,
    /// Whether an ancestor is opaque: then nothing of the lower layer shows through here either
    /// (overlayfs stops its lookup at the opaque directory), so lower children that the upper
    /// layer lacks are deleted.
    inherited_opaque: bool,
}

/// Appends to `out` every path of `layer` that may differ from the lower layer. The layer roots
/// themselves are not compared: the upper root is made by the sandbox, not copied up.
pub(crate) fn walk(layer: &Layer, out: &mut Vec<Candidate>) -> Result<(), DiffError> {
    let mut layer_dev = 0;
    for dir in [&layer.upper, &layer.lower] {
        // A missing layer root is a wrong path, not a file that vanished: plain Io.
        let st = std::fs::metadata(dir).map_err(|source| DiffError::Io {
            op: "stat layer directory",
            path: dir.clone(),
            source,
        })?;
        if !st.is_dir() {
            return Err(DiffError::NotADirectory { path: dir.clone() });
        }
        layer_dev = st.dev();
    }
    // An explicit stack rather than recursion: a hostile script may nest directories very deep.
    let mut stack = vec![Pending {
        rel: PathBuf::new(),
        lower_is_dir: true,
        inherited_opaque: false,
    }];
    while let Some(dir) = stack.pop() {
        let upper_dir = layer.upper.join(&dir.rel);
        let lower_dir = layer.lower.join(&dir.rel);
        let opaque = dir.inherited_opaque || is_opaque(&upper_dir)?;
        let entries =
            std::fs::read_dir(&upper_dir).map_err(|e| DiffError::io("list", &upper_dir, e))?;
        let mut seen: HashSet<OsString> = HashSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| DiffError::io("list", &upper_dir, e))?;
            let name = entry.file_name();
            let upper = entry.path();
            let upper_st = lstat(&upper)?.ok_or_else(|| DiffError::Vanished {
                path: upper.clone(),
            })?;
            let lower = lower_dir.join(&name);
            let lower_st = if dir.lower_is_dir {
                lstat(&lower)?
            } else {
                None
            };
            let rel = dir.rel.join(&name);
            let path = layer.mount_point.join(&rel);
            if opaque {
                seen.insert(name);
            }
            if is_whiteout(&upper_st) {
                // A whiteout over nothing (the lower file went away meanwhile) hides nothing.
                if let Some(lower_st) = lower_st {
                    out.push(Candidate {
                        path,
                        upper: None,
                        lower: Some((lower, lower_st)),
                        layer_dev,
                    });
                }
                continue;
            }
            if upper_st.is_dir() {
                stack.push(Pending {
                    rel,
                    lower_is_dir: lower_st.as_ref().is_some_and(Metadata::is_dir),
                    inherited_opaque: opaque,
                });
            }
            out.push(Candidate {
                path,
                upper: Some((upper, upper_st)),
                lower: lower_st.map(|st| (lower, st)),
                layer_dev,
            });
        }
        if opaque && dir.lower_is_dir {
            // Everything of the lower directory that the upper one does not have again is gone;
            // a hidden lower directory is one deletion, not one per file in it.
            let lower_entries =
                std::fs::read_dir(&lower_dir).map_err(|e| DiffError::io("list", &lower_dir, e))?;
            for entry in lower_entries {
                let entry = entry.map_err(|e| DiffError::io("list", &lower_dir, e))?;
                let name = entry.file_name();
                if seen.contains(&name) {
                    continue;
                }
                let lower = entry.path();
                if let Some(st) = lstat(&lower)? {
                    out.push(Candidate {
                        path: layer.mount_point.join(dir.rel.join(&name)),
                        upper: None,
                        lower: Some((lower, st)),
                        layer_dev,
                    });
                }
            }
        }
    }
    Ok(())
}

/// `lstat`, with "no such file" (or a parent that is not a directory) as `None`: on the lower
/// side that is the normal answer for a created file.
fn lstat(path: &Path) -> Result<Option<Metadata>, DiffError> {
    match std::fs::symlink_metadata(path) {
        Ok(st) => Ok(Some(st)),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(None),
        Err(e) => Err(DiffError::Io {
            op: "stat",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}
