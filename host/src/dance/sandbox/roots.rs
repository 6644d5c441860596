//! A module's roots: an overlay per filesystem (its scratch layer on the layers before it and
//! the live tree), the state directory hidden, the worker's `/dev`, `/proc` and `/sys` bound
//! in, and the host folders a module sees read-only.

use std::path::{Path, PathBuf};

use super::init::Shared;
use super::wire::Setup;
use crate::sandbox::enter::sys;
use crate::sandbox::mounts::{self, Mounts};
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

/// Mounts `root` through `m`: an overlay per filesystem, the state directory hidden, the
/// shared trees bound in, and (live) the module's deferred-commands record.
pub(super) fn mount_root(
    setup: &Setup,
    shared: &Shared,
    root: &Root<'_>,
    m: &mut dyn Mounts,
) -> Result<(), SandboxError> {
    let Root {
        path: root,
        layers,
        views,
        defer,
        binds,
    } = root;
    let root = root.as_path();
    mounts::mkdir(m, root)?;
    for (i, layer) in layers.iter().enumerate() {
        let target = inside(root, &layer.mount_point);
        if m.read_only(&layer.lower) {
            if setup.noop {
                // Nothing can write there, yet a bind would be the filesystem itself, and a
                // unix socket on it would connect to its live listener: a read-only overlay
                // (of it and an empty folder) shows the same files, `nodev`, and its sockets
                // lead nowhere.
                mounts::overlay_read_only(m, &[&layer.lower, &shared.empty], &target)
                    .map_err(sys("mount a read-only view of", layer.lower.display()))?;
            } else {
                // Live, scripts may reach what they would anyway: the filesystem itself, bound
                // read-only (and `nodev`), costs less than an overlay.
                mounts::bind_read_only(m, &layer.lower, &target, false)?;
            }
            continue;
        }
        let base = live_base(layer, &shared.empty, views, i, m)?;
        let lowers: Vec<&Path> = layer
            .lowers_above
            .iter()
            .map(PathBuf::as_path)
            .chain(std::iter::once(base.as_path()))
            .collect();
        // Noop layers are in memory: nothing to sync.
        let scratch = (layer.upper.as_path(), layer.work.as_path());
        mounts::overlay(m, &target, &lowers, scratch, !setup.noop)?;
    }
    for hidden in &setup.hide {
        let target = inside(root, hidden);
        if m.is_dir(&target) {
            mounts::bind(m, &shared.empty, &target, false)?;
        }
    }
    for (tree, name) in [
        (&shared.dev, "dev"),
        (&shared.proc, "proc"),
        (&shared.sys, "sys"),
    ] {
        let target = root.join(name);
        if !m.is_dir(&target) {
            mounts::mkdir(m, &target)?;
        }
        mounts::bind(m, tree, &target, true)?;
    }
    // The module's own folder, as fetched (scripts and templates run from it), and the
    // rendered templates: read-only.
    for (source, at) in binds {
        mounts::bind_read_only(m, source, &inside(root, at), false)?;
    }
    if let Some(record) = *defer {
        mounts::bind(m, record, &inside(root, Path::new(DEFERRED)), false)?;
    }
    Ok(())
}

/// The live folder beneath a layer: itself, or a read-only view of it (see
/// [`mounts::live_base`], the one decision for every sandbox), at `views/liveI`.
pub(super) fn live_base(
    layer: &LayerInfo,
    empty: &Path,
    views: &Path,
    i: usize,
    m: &mut dyn Mounts,
) -> Result<PathBuf, SandboxError> {
    mounts::live_base(m, layer, empty, &views.join(format!("live{i}")))
}

fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::mounts::Recorder;
    use crate::sandbox::seccomp::Program;
    use crate::sandbox::{Network, ShimConfig};

    fn setup(noop: bool) -> Setup {
        Setup {
            run: "/run/d".into(),
            hide: vec!["/var/lib/disco".into(), "/gone".into()],
            noop,
            shims: ShimConfig::default(),
            network: Network::default(),
            tools: "/usr/bin/disco".into(),
            hostname: None,
            root: "/".into(),
        }
    }

    fn shared() -> Shared {
        Shared {
            filter: Program::compile(false).unwrap(),
            dev: "/run/d/sandbox/dev".into(),
            proc: "/run/d/sandbox/proc".into(),
            sys: "/run/d/sandbox/sys".into(),
            empty: "/run/d/sandbox/empty".into(),
            supervisor: crate::supervise::Supervisor::new(),
        }
    }

    /// A root on `/` (ext4, device 1) with the kept modules' layer above it, and `/boot`, a
    /// read-only filesystem.
    fn layers() -> Vec<LayerInfo> {
        vec![
            LayerInfo {
                mount_point: "/".into(),
                lower: "/".into(),
                upper: "/run/d/m2/fs0/upper".into(),
                work: "/run/d/m2/fs0/work".into(),
                lowers_above: vec!["/run/d/m1/fs0/upper".into(), "/run/d/disco".into()],
            },
            LayerInfo {
                mount_point: "/boot".into(),
                lower: "/boot".into(),
                upper: "/run/d/m2/fs1/upper".into(),
                work: "/run/d/m2/fs1/work".into(),
                lowers_above: Vec::new(),
            },
        ]
    }

    /// `/dev`, `/proc` and `/sys`, the worker's, bound into every root (`/proc` is there
    /// already).
    const SHARED_TREES: &[&str] = &[
        "mkdir /run/d/m2/root/dev",
        "mount /run/d/sandbox/dev /run/d/m2/root/dev - MS_BIND | MS_REC -",
        "mount /run/d/sandbox/proc /run/d/m2/root/proc - MS_BIND | MS_REC -",
        "mkdir /run/d/m2/root/sys",
        "mount /run/d/sandbox/sys /run/d/m2/root/sys - MS_BIND | MS_REC -",
    ];

    fn plan(noop: bool, kernel: &mut Recorder) -> Vec<String> {
        let layers = layers();
        let module = (
            PathBuf::from("/cache/m2"),
            PathBuf::from("/var/disco/modules/m2"),
        );
        let record = PathBuf::from("/run/d/m2/deferred.jsonl");
        let root = Root {
            path: "/run/d/m2/root".into(),
            layers: &layers,
            views: Path::new("/run/d/m2/views"),
            defer: (!noop).then_some(record.as_path()),
            binds: vec![&module],
        };
        kernel.read_only.push("/boot".into());
        kernel.dirs.push("/run/d/m2/root/var/lib/disco".into());
        kernel.dirs.push("/run/d/m2/root/proc".into());
        mount_root(&setup(noop), &shared(), &root, kernel).unwrap();
        std::mem::take(&mut kernel.plan)
    }

    #[test]
    fn a_noop_root_is_overlays_in_memory_a_read_only_view_and_the_shared_trees() {
        // The run folder is a tmpfs of its own (device 2): no view of the live tree needed.
        let mut kernel = Recorder {
            devices: vec![("/".into(), 1), ("/run/d".into(), 2)],
            ..Recorder::default()
        };
        let plan = plan(true, &mut kernel);
        let expected = [
            "mkdir /run/d/m2/root",
            // The module's scratch layer on the kept modules' layer, the disco layer and the
            // live tree; in memory, so not volatile.
            "mount overlay /run/d/m2/root/ overlay MS_NODEV lowerdir=/run/d/m1/fs0/upper:/run/d/disco:/,upperdir=/run/d/m2/fs0/upper,workdir=/run/d/m2/fs0/work,redirect_dir=off,metacopy=off,index=off,xino=off",
            // A read-only filesystem: a read-only overlay of it, never the filesystem itself.
            "mount overlay /run/d/m2/root/boot overlay MS_RDONLY | MS_NODEV lowerdir=/boot:/run/d/sandbox/empty,redirect_dir=off,metacopy=off,index=off,xino=off",
            // The state directory hidden (only where it exists).
            "mount /run/d/sandbox/empty /run/d/m2/root/var/lib/disco - MS_BIND -",
        ];
        let tail = [
            // The fetched module: read-only, nosuid, nodev.
            "mount /cache/m2 /run/d/m2/root/var/disco/modules/m2 - MS_BIND -",
            "mount - /run/d/m2/root/var/disco/modules/m2 - MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REMOUNT | MS_BIND -",
        ];
        assert_eq!(plan, [&expected[..], SHARED_TREES, &tail[..]].concat());
    }

    #[test]
    fn a_live_root_is_volatile_binds_read_only_filesystems_and_records_deferred_commands() {
        // Live, the run folder is on the live filesystem: the live tree is stacked as a view
        // of its own (overlayfs refuses lower layers nested in one another).
        let mut kernel = Recorder {
            devices: vec![("/".into(), 1)],
            ..Recorder::default()
        };
        let plan = plan(false, &mut kernel);
        let expected = [
            "mkdir /run/d/m2/root",
            "mkdir /run/d/m2/views/live0",
            "mount overlay /run/d/m2/views/live0 overlay MS_RDONLY | MS_NODEV lowerdir=/:/run/d/sandbox/empty,redirect_dir=off,metacopy=off,index=off,xino=off",
            "clear volatile /run/d/m2/fs0/work",
            "mount overlay /run/d/m2/root/ overlay MS_NODEV lowerdir=/run/d/m1/fs0/upper:/run/d/disco:/run/d/m2/views/live0,upperdir=/run/d/m2/fs0/upper,workdir=/run/d/m2/fs0/work,redirect_dir=off,metacopy=off,index=off,xino=off,volatile",
            // Live, a read-only filesystem is bound as it is (read-only, nodev).
            "mount /boot /run/d/m2/root/boot - MS_BIND -",
            "mount - /run/d/m2/root/boot - MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REMOUNT | MS_BIND -",
            "mount /run/d/sandbox/empty /run/d/m2/root/var/lib/disco - MS_BIND -",
        ];
        let tail = [
            "mount /cache/m2 /run/d/m2/root/var/disco/modules/m2 - MS_BIND -",
            "mount - /run/d/m2/root/var/disco/modules/m2 - MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REMOUNT | MS_BIND -",
            // The shims' record of deferred commands: the module's own file.
            "mount /run/d/m2/deferred.jsonl /run/d/m2/root/dev/.disco/deferred - MS_BIND -",
        ];
        assert_eq!(plan, [&expected[..], SHARED_TREES, &tail[..]].concat());
    }
}
