//! A module's roots: an overlay per filesystem (its scratch layer on the layers before it and
//! the live tree), the state directory hidden, the worker's `/dev`, `/proc` and `/sys` bound
//! in, and the host folders a module sees read-only.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use super::init::Shared;
use super::wire::Setup;
use crate::sandbox::enter::{self, prep, sys};
use crate::sandbox::paths::DEFERRED;
use crate::sandbox::{LayerInfo, SandboxError};

/// A root to run a part of a module in.
pub(super) struct Root<'a> {
    /// Where it is mounted.
    pub(super) path: PathBuf,
    /// Its layers, one per filesystem.
    pub(super) layers: &'a [LayerInfo],
    /// Where views of the live tree are mounted for it.
    pub(super) views: &'a Path,
    /// Live: the module's deferred-commands record.
    pub(super) defer: Option<&'a Path>,
    /// Host folders bound read-only inside (where): the fetched module, the rendered templates.
    pub(super) binds: Vec<&'a (PathBuf, PathBuf)>,
}

/// Mounts `root`: an overlay per filesystem, the state directory hidden, the shared trees
/// bound in, and (live) the module's deferred-commands record.
pub(super) fn mount_root(
    setup: &Setup,
    shared: &Shared,
    root: &Root<'_>,
) -> Result<(), SandboxError> {
    let Root {
        path: root,
        layers,
        views,
        defer,
        binds,
    } = root;
    let root = root.as_path();
    std::fs::create_dir_all(root).map_err(prep(root))?;
    for (i, layer) in layers.iter().enumerate() {
        let target = inside(root, &layer.mount_point);
        if read_only(&layer.lower) {
            if setup.noop {
                // Nothing can write there, yet a bind would be the filesystem itself, and a
                // unix socket on it would connect to its live listener: a read-only overlay
                // (of it and an empty folder) shows the same files, `nodev`, and its sockets
                // lead nowhere.
                crate::sys::mount_overlay_readonly(&[&layer.lower, &shared.empty], &target)
                    .map_err(sys("mount a read-only view of", layer.lower.display()))?;
            } else {
                // Live, scripts may reach what they would anyway: the filesystem itself, bound
                // read-only (and `nodev`), costs less than an overlay.
                enter::bind_read_only(&layer.lower, &target, false)?;
            }
            continue;
        }
        let base = live_base(layer, &shared.empty, views, i)?;
        let lowers: Vec<&Path> = layer
            .lowers_above
            .iter()
            .map(PathBuf::as_path)
            .chain(std::iter::once(base.as_path()))
            .collect();
        // Noop layers are in memory: nothing to sync.
        enter::mount_overlay_as(&target, &lowers, &layer.upper, &layer.work, !setup.noop)?;
    }
    for hidden in &setup.hide {
        let target = inside(root, hidden);
        if target.is_dir() {
            bind(&shared.empty, &target, false)?;
        }
    }
    for (tree, name) in [
        (&shared.dev, "dev"),
        (&shared.proc, "proc"),
        (&shared.sys, "sys"),
    ] {
        let target = root.join(name);
        if !target.is_dir() {
            std::fs::create_dir_all(&target).map_err(prep(&target))?;
        }
        bind(tree, &target, true)?;
    }
    // The module's own folder, as fetched (scripts and templates run from it), and the
    // rendered templates: read-only.
    for (source, at) in binds {
        enter::bind_read_only(source, &inside(root, at), false)?;
    }
    if let Some(record) = *defer {
        let target = inside(root, Path::new(DEFERRED));
        mount(
            Some(record),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("bind", target.display()))?;
    }
    Ok(())
}

/// Whether the filesystem holding `path` is mounted read-only.
fn read_only(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// The live folder beneath a layer: itself, or, when scratch layers nested in it (on its
/// filesystem, under it) are stacked on it, a read-only view of it that is a filesystem of
/// its own (overlayfs refuses lower layers nested in one another). Mounted afresh each time:
/// a live dance changes the tree.
pub(super) fn live_base(
    layer: &LayerInfo,
    empty: &Path,
    views: &Path,
    i: usize,
) -> Result<PathBuf, SandboxError> {
    use std::os::unix::fs::MetadataExt;
    let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    let live = device(&layer.lower);
    if !layer
        .lowers_above
        .iter()
        .any(|l| l.starts_with(&layer.lower) && device(l) == live)
    {
        return Ok(layer.lower.clone());
    }
    let view = views.join(format!("live{i}"));
    std::fs::create_dir_all(&view).map_err(prep(&view))?;
    // An overlay of the live folder and an empty tmpfs: a superblock of its own.
    crate::sys::mount_overlay_readonly(&[&layer.lower, empty], &view)
        .map_err(sys("mount a read-only view of", layer.lower.display()))?;
    Ok(view)
}

fn bind(source: &Path, target: &Path, recursive: bool) -> Result<(), SandboxError> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(source), target, None::<&str>, flags, None::<&str>)
        .map_err(sys("bind", target.display()))
}

fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}
