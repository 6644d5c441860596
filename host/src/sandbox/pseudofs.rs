//! The sandbox's own `/dev`, `/proc` and `/sys`, mounted through the seam of [`super::mounts`]
//! (so their plan is unit-tested through its recorder): `disco shell`'s sandbox mounts them in
//! its root, a dance's worker once for every module's roots to bind.

use std::path::Path;

use nix::mount::MsFlags;

use super::enter::{prep, sys};
use super::mounts::{self, Mounts};
use super::paths::BIN_DIR;
use super::shims::ShimMode;
use super::{SandboxError, ShimConfig};

/// A minimal `/dev` at `dev`: bind mounts of the harmless character devices into a `nodev`
/// tmpfs (a bind mount carries its own flags, so these open while anything created beside
/// them cannot), a private `devpts`, `shm`, disco's tools (`tools`, bound read-only under
/// [`BIN_DIR`]) and the shims (`shims`: where, as a path inside, and in which mode).
pub(crate) fn dev(
    m: &mut dyn Mounts,
    dev: &Path,
    tools: Option<&Path>,
    config: &ShimConfig,
    shims: &[(&str, ShimMode)],
) -> Result<(), SandboxError> {
    mounts::mkdir(m, dev)?;
    // Not `nodev`, so that the harmless devices below open; creating others takes CAP_MKNOD,
    // which noop drops (and the roots themselves are `nodev`).
    m.mount(
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755,size=1m"),
    )
    .map_err(sys("mount tmpfs", dev.display()))?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        let source = Path::new("/dev").join(name);
        // A node of our own (one mount fewer for every root that binds this tree), or, where
        // nodes cannot be made, the host's, bound read-only: a bind mount is the host's file
        // itself, so a script's chmod, chown or xattr would otherwise change the host's.
        if !m.copy_node(&source, &target) {
            m.create_file(&target).map_err(prep(&target))?;
            mounts::bind_read_only(m, &source, &target, true)?;
        }
    }
    let pts = dev.join("pts");
    mounts::mkdir(m, &pts)?;
    m.mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )
    .map_err(sys("mount devpts", pts.display()))?;
    let shm = dev.join("shm");
    mounts::mkdir(m, &shm)?;
    m.mount(
        Some(Path::new("tmpfs")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .map_err(sys("mount tmpfs", shm.display()))?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        m.symlink(Path::new(target), &path).map_err(prep(&path))?;
    }
    // Paths under /dev/.disco, as they appear inside, are found here under `dev`.
    let under_dev = |inside: &str| {
        dev.join(
            Path::new(inside)
                .strip_prefix("/dev")
                .unwrap_or(Path::new(inside)),
        )
    };
    if let Some(tools) = tools {
        // disco itself, under the name that makes it `disco param` (see `host::run`).
        let bin = under_dev(BIN_DIR);
        mounts::mkdir(m, &bin)?;
        for name in ["disco-param", "disco"] {
            let target = bin.join(name);
            m.create_file(&target).map_err(prep(&target))?;
            mounts::bind_read_only(m, tools, &target, false)?;
        }
    }
    for (dir, mode) in shims {
        let dir = under_dev(dir);
        m.install_shims(config, &dir, *mode).map_err(prep(&dir))?;
    }
    Ok(())
}

/// A read-only `/sys` at `sys_dir`: scripts may read hardware facts, never change them.
pub(crate) fn sys_tree(m: &mut dyn Mounts, sys_dir: &Path) -> Result<(), SandboxError> {
    if !m.is_dir(sys_dir) {
        mounts::mkdir(m, sys_dir)?;
    }
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let sysfs = Path::new("sysfs");
    if m.mount(Some(sysfs), sys_dir, Some("sysfs"), ro, None)
        .is_ok()
    {
        return Ok(());
    }
    // Some kernels refuse a fresh sysfs outside a new network namespace: bind, then remount.
    m.mount(
        Some(Path::new("/sys")),
        sys_dir,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(sys("bind", sys_dir.display()))?;
    m.mount(
        None,
        sys_dir,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | ro,
        None,
    )
    .map_err(sys("remount read-only", sys_dir.display()))
}

/// `/proc` at `proc_dir`: with `own`, a new instance (mounted from inside a new PID namespace,
/// it shows only the sandbox's processes), else the host's, bound; either way with the
/// kernel's tunables and triggers read-only.
pub(crate) fn proc_tree(
    m: &mut dyn Mounts,
    proc_dir: &Path,
    own: bool,
) -> Result<(), SandboxError> {
    mounts::mkdir(m, proc_dir)?;
    if own {
        // Mounted from inside the new PID namespace, /proc shows only the sandbox's processes.
        m.mount(
            Some(Path::new("proc")),
            proc_dir,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        )
        .map_err(sys("mount proc", proc_dir.display()))?;
    } else {
        mounts::bind(m, Path::new("/proc"), proc_dir, true)?;
    }
    // Kernel tunables and triggers stay read-only, whatever capabilities remain.
    for sub in ["sys", "sysrq-trigger", "irq", "bus"] {
        let path = proc_dir.join(sub);
        if m.exists(&path) {
            mounts::bind(m, &path, &path, true)?;
            m.mount(
                None,
                &path,
                None,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                None,
            )
            .map_err(sys("remount read-only", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::mounts::Recorder;
    use crate::sandbox::paths::SHIM_DIR;

    /// The plan of a sandbox's `/dev` (noop: with the shims), its `/sys` and its own `/proc`,
    /// as `disco shell` and a dance's worker mount them.
    fn plan(nodes: bool) -> Vec<String> {
        let mut kernel = Recorder {
            nodes,
            dirs: vec!["/m/proc/sys".into(), "/m/proc/bus".into()],
            files: vec!["/m/proc/sysrq-trigger".into()],
            ..Recorder::default()
        };
        let shims = [(SHIM_DIR, ShimMode::Report)];
        let tools = Path::new("/usr/bin/disco");
        let config = ShimConfig::default();
        dev(
            &mut kernel,
            Path::new("/m/dev"),
            Some(tools),
            &config,
            &shims,
        )
        .unwrap();
        sys_tree(&mut kernel, Path::new("/m/sys")).unwrap();
        proc_tree(&mut kernel, Path::new("/m/proc"), true).unwrap();
        kernel.plan
    }

    const DEV_TAIL: &[&str] = &[
        // A private devpts (its own ptmx) and a shm no device opens on.
        "mkdir /m/dev/pts",
        "mount devpts /m/dev/pts devpts MS_NOSUID | MS_NOEXEC newinstance,ptmxmode=0666,mode=620",
        "mkdir /m/dev/shm",
        "mount tmpfs /m/dev/shm tmpfs MS_NOSUID | MS_NODEV mode=1777",
        "symlink /m/dev/ptmx -> pts/ptmx",
        "symlink /m/dev/fd -> /proc/self/fd",
        "symlink /m/dev/stdin -> /proc/self/fd/0",
        "symlink /m/dev/stdout -> /proc/self/fd/1",
        "symlink /m/dev/stderr -> /proc/self/fd/2",
        // disco itself, bound read-only and nodev, under both of its names.
        "mkdir /m/dev/.disco/bin",
        "file /m/dev/.disco/bin/disco-param",
        "mount /usr/bin/disco /m/dev/.disco/bin/disco-param - MS_BIND -",
        "mount - /m/dev/.disco/bin/disco-param - MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REMOUNT | MS_BIND -",
        "file /m/dev/.disco/bin/disco",
        "mount /usr/bin/disco /m/dev/.disco/bin/disco - MS_BIND -",
        "mount - /m/dev/.disco/bin/disco - MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REMOUNT | MS_BIND -",
        "shims /m/dev/.disco/shims Report",
        // A read-only sysfs.
        "mkdir /m/sys",
        "mount sysfs /m/sys sysfs MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC -",
        // The PID namespace's own /proc, with the kernel's tunables and triggers read-only
        // (only those that exist: no /proc/irq here).
        "mkdir /m/proc",
        "mount proc /m/proc proc MS_NOSUID | MS_NODEV | MS_NOEXEC -",
        "mount /m/proc/sys /m/proc/sys - MS_BIND | MS_REC -",
        "mount - /m/proc/sys - MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_REMOUNT | MS_BIND -",
        "mount /m/proc/sysrq-trigger /m/proc/sysrq-trigger - MS_BIND | MS_REC -",
        "mount - /m/proc/sysrq-trigger - MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_REMOUNT | MS_BIND -",
        "mount /m/proc/bus /m/proc/bus - MS_BIND | MS_REC -",
        "mount - /m/proc/bus - MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_REMOUNT | MS_BIND -",
    ];

    #[test]
    fn dev_is_a_tmpfs_of_own_nodes_then_sys_read_only_then_own_proc() {
        let mut expected = vec![
            "mkdir /m/dev",
            // Not nodev, so that the harmless devices open; nosuid.
            "mount tmpfs /m/dev tmpfs MS_NOSUID mode=755,size=1m",
        ];
        for name in ["null", "zero", "full", "random", "urandom", "tty"] {
            expected.push(match name {
                "null" => "node /m/dev/null like /dev/null",
                "zero" => "node /m/dev/zero like /dev/zero",
                "full" => "node /m/dev/full like /dev/full",
                "random" => "node /m/dev/random like /dev/random",
                "urandom" => "node /m/dev/urandom like /dev/urandom",
                _ => "node /m/dev/tty like /dev/tty",
            });
        }
        expected.extend_from_slice(DEV_TAIL);
        assert_eq!(plan(true), expected);
    }

    #[test]
    fn without_device_nodes_the_hosts_are_bound_read_only_and_still_open() {
        let plan = plan(false);
        let null = [
            "file /m/dev/null",
            "mount /dev/null /m/dev/null - MS_BIND -",
            // A device: read-only and nosuid, but not nodev, or it would not open.
            "mount - /m/dev/null - MS_RDONLY | MS_NOSUID | MS_REMOUNT | MS_BIND -",
        ];
        assert_eq!(plan[2..5], null);
        // Six devices, three lines each, then the rest as with nodes of our own.
        assert_eq!(plan[2 + 6 * 3..], *DEV_TAIL);
        assert!(plan.iter().all(|l| !l.starts_with("node ")));
    }

    #[test]
    fn a_bound_proc_is_the_hosts_with_the_same_read_only_parts() {
        let mut kernel = Recorder {
            dirs: vec!["/m/proc/irq".into()],
            ..Recorder::default()
        };
        proc_tree(&mut kernel, Path::new("/m/proc"), false).unwrap();
        assert_eq!(
            kernel.plan,
            [
                "mkdir /m/proc",
                "mount /proc /m/proc - MS_BIND | MS_REC -",
                "mount /m/proc/irq /m/proc/irq - MS_BIND | MS_REC -",
                "mount - /m/proc/irq - MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_REMOUNT | MS_BIND -",
            ]
        );
    }
}
