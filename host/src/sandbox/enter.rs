//! The sandbox recipe, in the order it runs inside `disco __sandbox`. One line of why a step.
//!
//! 0. Close every descriptor but 0, 1 and 2.
//! 1. New mount, UTS and IPC namespaces (and PID and network, in noop).
//! 2. Make every mount private, so nothing propagates to the host.
//! 3. An overlay per filesystem (`nodev`, plain upper layer).
//! 4. Hide the state directory.
//! 5. Our own `/dev` and a read-only `/sys`.
//! 6. Fork PID 1, which mounts `/proc` of the new PID namespace, makes the dangerous parts of
//!    `/proc` read-only and `pivot_root`s into the overlay.
//! 7. PID 1 forks the payload as PID 2 (so signals are forwarded and orphans reaped), which
//!    starts a session of its own (without the caller's terminal; an interactive shell's own
//!    pseudo-terminal becomes its controlling terminal), in noop drops the capabilities that
//!    reach outside and gets the shims first on `PATH`.
//! 8. When the payload exits, PID 1 exits, and the kernel kills whatever else is left in the
//!    namespace and unmounts everything.

use std::convert::Infallible;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::unistd::{chdir, fork, pivot_root, ForkResult};

use super::mounts::{self, Kernel, Mounts};
use super::pseudofs;
use super::shims::ShimMode;
use super::{Network, SandboxError, ShimConfig, Spec};

pub(crate) use super::capabilities::drop_capabilities;
pub(crate) use super::signals::{forward_signals, wait_for};

/// Exit status of `disco __sandbox` when the sandbox itself could not be set up.
pub const EXIT_SANDBOX: i32 = 125;
/// Exit status when the payload could not be executed.
pub const EXIT_EXEC: i32 = 127;

pub use super::paths::{BIN_DIR, DEFERRED, SHIM_DIR};

/// The error of a failed system call `call` on `detail`.
pub(crate) fn sys(
    call: &'static str,
    detail: impl std::fmt::Display,
) -> impl FnOnce(Errno) -> SandboxError {
    let detail = detail.to_string();
    move |errno| SandboxError::Syscall {
        call,
        detail,
        errno,
    }
}

/// The error of preparing `path`.
pub(crate) fn prep(path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError + '_ {
    move |source| SandboxError::Prepare {
        path: path.to_owned(),
        source,
    }
}

/// `path` inside the merged tree.
fn inside(merged: &Path, path: &Path) -> PathBuf {
    merged.join(path.strip_prefix("/").unwrap_or(path))
}

/// Runs the recipe and the payload `argv` (with working directory `cwd` inside the sandbox);
/// returns the payload's exit status (128 + signal when killed).
pub fn enter(spec: &Spec, argv: &[OsString], cwd: &Path) -> Result<i32, SandboxError> {
    // Nothing but 0, 1 and 2 enters: not even a descriptor that would close on exec, which
    // PID 1 would otherwise hold for the sandbox's whole life.
    crate::sys::close_from_3().map_err(|e| SandboxError::Syscall {
        call: "close",
        detail: "inherited descriptors".into(),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
    })?;
    // If the disco that started this sandbox dies, the sandbox dies with it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("set", "PR_SET_PDEATHSIG"))?;
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if spec.noop {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    unshare(flags).map_err(sys("unshare", "namespaces"))?;
    if spec.noop {
        isolate_network(spec.network)?;
    }
    // Private, recursively: no mount below may propagate to the host's namespace.
    crate::sys::make_mounts_private().map_err(sys("make mounts private", "/"))?;
    mount_root(&mut Kernel, spec)?;
    forward_signals()?;
    // SAFETY: this process is single-threaded (disco __sandbox starts no threads before here),
    // so the child may run arbitrary code after fork.
    match unsafe { fork() }.map_err(sys("fork", "the sandbox's init"))? {
        ForkResult::Child => {
            let err = match init(spec, argv, cwd) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            eprintln!("error: sandbox: {err}");
            std::process::exit(EXIT_SANDBOX);
        }
        ForkResult::Parent { child } => Ok(wait_for(child, false)),
    }
}

/// Noop's network ([`Network::Loopback`], and the start of [`Network::Outbound`], which the
/// caller then connects): a network namespace of its own, whose loopback is brought up so
/// that a script's own local services work. Nothing of the host's network is
/// reachable from it: not 127.0.0.1, nor abstract unix sockets (they belong to the network
/// namespace), nor raw sockets or netlink to the host's stack.
pub(crate) fn isolate_network(network: Network) -> Result<(), SandboxError> {
    if network == Network::Host {
        return Ok(());
    }
    unshare(CloneFlags::CLONE_NEWNET).map_err(sys("unshare", "a network namespace"))?;
    crate::sys::loopback_up().map_err(|e| SandboxError::Syscall {
        call: "bring up",
        detail: "the loopback interface".into(),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
    })
}

/// The sandbox's filesystem in `spec.merged`, through `m`: one overlay per filesystem,
/// shallowest first, all `nodev`, with the options that keep the upper layer plain (files,
/// directories, links, whiteouts, opaque directories only); the state directory hidden; our
/// own `/dev` (with disco's tools and, in noop, the shims) and a read-only `/sys`. (`/proc`
/// is PID 1's, see [`init`].)
pub(crate) fn mount_root(m: &mut dyn Mounts, spec: &Spec) -> Result<(), SandboxError> {
    mounts::mkdir(m, &spec.merged)?;
    let empty = spec.merged.with_extension("empty");
    if spec.layers.iter().any(|l| mounts::needs_live_view(m, l)) {
        // The empty top of every read-only view of the live tree: a filesystem of its own,
        // nested in nothing.
        mounts::mkdir(m, &empty)?;
        mounts::empty_tmpfs(m, &empty).map_err(sys("mount tmpfs", empty.display()))?;
    }
    for (i, layer) in spec.layers.iter().enumerate() {
        let target = inside(&spec.merged, &layer.mount_point);
        // Layers kept under the live filesystem would overlap it as lower layers; a read-only
        // view of it is a filesystem of its own, so they stack on that instead.
        let view = spec.merged.with_extension(format!("live{i}"));
        let base = mounts::live_base(m, layer, &empty, &view)?;
        let lowers: Vec<&Path> = layer
            .lowers_above
            .iter()
            .chain(std::iter::once(&base))
            .map(PathBuf::as_path)
            .collect();
        mounts::overlay(m, &target, &lowers, (&layer.upper, &layer.work), true)?;
    }
    for hidden in &spec.hide {
        let target = inside(&spec.merged, hidden);
        if m.is_dir(&target) {
            // Scripts must not see, or write into, the layers that record them.
            mounts::empty_tmpfs(m, &target).map_err(sys("hide", target.display()))?;
        }
    }
    let shims: &[(&str, ShimMode)] = if spec.noop {
        &[(SHIM_DIR, ShimMode::Report)]
    } else {
        &[]
    };
    let dev = spec.merged.join("dev");
    pseudofs::dev(m, &dev, spec.tools.as_deref(), &spec.shims, shims)?;
    pseudofs::sys_tree(m, &spec.merged.join("sys"))
}

/// [`pseudofs::dev`] on the real kernel: a dance's worker's `/dev`.
pub(crate) fn populate_dev(
    dev: &Path,
    tools: Option<&Path>,
    config: &ShimConfig,
    shims: &[(&str, ShimMode)],
) -> Result<(), SandboxError> {
    pseudofs::dev(&mut Kernel, dev, tools, config, shims)
}

/// [`pseudofs::sys_tree`] on the real kernel.
pub(crate) fn mount_sys_at(sys_dir: &Path) -> Result<(), SandboxError> {
    pseudofs::sys_tree(&mut Kernel, sys_dir)
}

/// [`pseudofs::proc_tree`] on the real kernel.
pub(crate) fn mount_proc(proc_dir: &Path, own: bool) -> Result<(), SandboxError> {
    pseudofs::proc_tree(&mut Kernel, proc_dir, own)
}

/// Makes `root` the root of this process's own mount namespace: `pivot_root` into it and
/// detach the old root, leaving no way back out; then `cwd` (or `/`).
pub(crate) fn pivot_into(root: &Path, cwd: &Path) -> Result<(), SandboxError> {
    // pivot_root(".", ".") stacks the old root under the new one without a put_old folder
    // (which would land in the scratch layer); detaching it leaves no way back out.
    chdir(root).map_err(sys("chdir", root.display()))?;
    pivot_root(".", ".").map_err(sys("pivot_root", root.display()))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detach", "the old root"))?;
    if chdir(cwd).is_err() {
        chdir("/").map_err(sys("chdir", "/"))?;
    }
    Ok(())
}

/// The `PATH` inside a sandbox, and the one without disco's folders (`DISCO_REAL_PATH`, for
/// the shims' read-only queries): the shims (`shims`) first, then disco's tools (`tools`).
pub(crate) fn sandbox_path(shims: Option<&str>, tools: bool) -> (OsString, OsString) {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut full = OsString::new();
    if let Some(dir) = shims {
        full.push(dir);
        full.push(":");
    }
    if tools {
        full.push(BIN_DIR);
        full.push(":");
    }
    full.push(&path);
    (full, path)
}

/// PID 1 of the sandbox: `/proc`, `pivot_root`, then the payload as PID 2.
fn init(spec: &Spec, argv: &[OsString], cwd: &Path) -> Result<Infallible, SandboxError> {
    // If `disco __sandbox` dies, the whole sandbox goes with it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("set", "PR_SET_PDEATHSIG"))?;
    mount_proc(&spec.merged.join("proc"), spec.noop)?;
    pivot_into(&spec.merged, cwd)?;
    // SAFETY: PID 1 is single-threaded, as its parent was.
    match unsafe { fork() }.map_err(sys("fork", "the payload"))? {
        ForkResult::Child => {
            let err = payload(spec, argv);
            eprintln!("error: sandbox: {err}");
            std::process::exit(match err {
                SandboxError::Exec { .. } => EXIT_EXEC,
                _ => EXIT_SANDBOX,
            });
        }
        ForkResult::Parent { child } => std::process::exit(wait_for(child, true)),
    }
}

/// PID 2: drop what noop must not have, then become the payload.
fn payload(spec: &Spec, argv: &[OsString]) -> SandboxError {
    let Some((program, args)) = argv.split_first() else {
        return SandboxError::Exec {
            command: String::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command"),
        };
    };
    // A session of its own: the caller's terminal is no controlling terminal of the payload,
    // which cannot push keystrokes into it (TIOCSTI) nor open it as `/dev/tty`. An interactive
    // `disco shell` gives it a pseudo-terminal of its own instead, on its stdin.
    if let Err(e) = nix::unistd::setsid() {
        return sys("start", "a session")(e);
    }
    if spec.terminal {
        if let Err(e) = crate::sys::take_terminal_on_stdin() {
            return sys("take", "the shell's terminal")(Errno::from_raw(
                e.raw_os_error().unwrap_or(0),
            ));
        }
    }
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    if spec.noop {
        let confine = super::seccomp::Program::compile(false)
            .and_then(|filter| filter.load())
            .and_then(|_| drop_capabilities());
        if let Err(e) = confine {
            return e;
        }
        cmd.env("NOOP", "true");
    }
    let (full, path) = sandbox_path(spec.noop.then_some(SHIM_DIR), spec.tools.is_some());
    cmd.env("DISCO_REAL_PATH", &path).env("PATH", full);
    let source = cmd.exec();
    SandboxError::Exec {
        command: program.to_string_lossy().into_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::mounts::Recorder;
    use crate::sandbox::LayerInfo;

    #[test]
    fn a_shell_sandbox_stacks_kept_layers_on_one_view_of_the_live_tree_and_hides_the_state() {
        let spec = Spec {
            merged: "/s/runs/1/merged".into(),
            layers: vec![LayerInfo {
                mount_point: "/".into(),
                lower: "/".into(),
                upper: "/s/runs/1/layers/0/upper".into(),
                work: "/s/runs/1/layers/0/work".into(),
                lowers_above: vec!["/s/runs/0/layers/0/upper".into()],
            }],
            hide: vec!["/s".into()],
            noop: true,
            shims: ShimConfig::default(),
            network: Network::default(),
            terminal: false,
            tools: None,
        };
        let mut m = Recorder {
            devices: vec![("/".into(), 1)],
            dirs: vec!["/s/runs/1/merged/s".into()],
            nodes: true,
            ..Recorder::default()
        };
        mount_root(&mut m, &spec).unwrap();
        let head = [
            "mkdir /s/runs/1/merged",
            // One empty top for the views, a filesystem of its own.
            "mkdir /s/runs/1/merged.empty",
            "mount tmpfs /s/runs/1/merged.empty tmpfs MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC size=4k,mode=755",
            // The kept layer lies inside `/` on its filesystem: `/` is stacked as a view.
            "mkdir /s/runs/1/merged.live0",
            "mount overlay /s/runs/1/merged.live0 overlay MS_RDONLY | MS_NODEV lowerdir=/:/s/runs/1/merged.empty,redirect_dir=off,metacopy=off,index=off,xino=off",
            "clear volatile /s/runs/1/layers/0/work",
            "mount overlay /s/runs/1/merged/ overlay MS_NODEV lowerdir=/s/runs/0/layers/0/upper:/s/runs/1/merged.live0,upperdir=/s/runs/1/layers/0/upper,workdir=/s/runs/1/layers/0/work,redirect_dir=off,metacopy=off,index=off,xino=off,volatile",
            // The state directory, hidden under an empty tmpfs.
            "mount tmpfs /s/runs/1/merged/s tmpfs MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC size=4k,mode=755",
            "mkdir /s/runs/1/merged/dev",
        ];
        assert_eq!(m.plan[..head.len()], head);
        // Then the rest of /dev (noop: with the shims) and a read-only /sys, last.
        assert!(m
            .plan
            .contains(&"shims /s/runs/1/merged/dev/.disco/shims Report".to_owned()));
        assert_eq!(
            m.plan.last().unwrap(),
            "mount sysfs /s/runs/1/merged/sys sysfs MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC -"
        );
    }
}
