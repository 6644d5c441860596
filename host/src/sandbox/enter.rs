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
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{chdir, fork, pivot_root, ForkResult, Pid};

use super::mounts::Kernel;
use super::shims::ShimMode;
use super::{Network, SandboxError, ShimConfig, Spec};

/// Exit status of `disco __sandbox` when the sandbox itself could not be set up.
pub const EXIT_SANDBOX: i32 = 125;
/// Exit status when the payload could not be executed.
pub const EXIT_EXEC: i32 = 127;

pub use super::paths::{BIN_DIR, DEFERRED, SHIM_DIR};

/// Capabilities dropped in noop: each reaches outside the sandbox's namespaces (modules,
/// clock, raw I/O, device nodes, file handles, other processes, mounts, immutable flags that
/// would pin the scratch layer, raw and packet sockets, the host's scheduler and memory, the
/// audit log, leases on live files). What noop keeps, and why, is listed in ARCHITECTURE.md.
const DROPPED: &[caps::Capability] = {
    use caps::Capability::*;
    &[
        CAP_SYS_MODULE,
        CAP_SYS_BOOT,
        CAP_SYS_TIME,
        CAP_NET_ADMIN,
        // Raw and packet sockets: they see (and forge) traffic, and are no dry run's business.
        CAP_NET_RAW,
        CAP_SYS_RAWIO,
        CAP_MKNOD,
        // open_by_handle_at: reaches any file of a filesystem something of it is bound from.
        CAP_DAC_READ_SEARCH,
        CAP_SYS_PTRACE,
        CAP_SYS_ADMIN,
        // Real-time scheduling and priorities of the host's CPUs; locked memory of its RAM;
        // limits above the hard ones and reserved disk space: no namespace bounds them.
        CAP_SYS_NICE,
        CAP_IPC_LOCK,
        CAP_SYS_RESOURCE,
        CAP_LINUX_IMMUTABLE,
        // Leases on files that may be the host's (a read-only filesystem's).
        CAP_LEASE,
        CAP_MAC_ADMIN,
        CAP_MAC_OVERRIDE,
        CAP_SYSLOG,
        CAP_WAKE_ALARM,
        CAP_BLOCK_SUSPEND,
        // The host's audit log and its rules.
        CAP_AUDIT_CONTROL,
        CAP_AUDIT_WRITE,
        CAP_AUDIT_READ,
        CAP_SYS_PACCT,
        CAP_SYS_TTY_CONFIG,
        CAP_BPF,
        CAP_PERFMON,
        CAP_CHECKPOINT_RESTORE,
    ]
};

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
    mount_overlays(spec)?;
    for hidden in &spec.hide {
        let target = inside(&spec.merged, hidden);
        if target.is_dir() {
            // Scripts must not see, or write into, the layers that record them.
            mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("size=4k,mode=755"),
            )
            .map_err(sys("hide", target.display()))?;
        }
    }
    mount_dev(spec)?;
    mount_sys(&spec.merged)?;
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

/// One overlay per filesystem, shallowest first, all `nodev`, with the options that keep the
/// upper layer plain (files, directories, links, whiteouts, opaque directories only).
fn mount_overlays(spec: &Spec) -> Result<(), SandboxError> {
    std::fs::create_dir_all(&spec.merged).map_err(prep(&spec.merged))?;
    let empty = spec.merged.with_extension("empty");
    for (i, layer) in spec.layers.iter().enumerate() {
        let target = inside(&spec.merged, &layer.mount_point);
        let mut base = layer.lower.clone();
        if layer
            .lowers_above
            .iter()
            .any(|l| l.starts_with(&layer.lower))
        {
            // Layers kept under the live filesystem would overlap it as lower layers; a
            // read-only view of it is a filesystem of its own, so they stack on that instead.
            base = spec.merged.with_extension(format!("live{i}"));
            crate::sys::mount_live_view(&layer.lower, &empty, &base)
                .map_err(sys("mount a read-only view of", layer.lower.display()))?;
        }
        let lowers: Vec<&Path> = layer
            .lowers_above
            .iter()
            .chain(std::iter::once(&base))
            .map(PathBuf::as_path)
            .collect();
        mount_overlay(&target, &lowers, &layer.upper, &layer.work)?;
    }
    Ok(())
}

/// Mounts one writable overlay on `target`: `lowers` (topmost first) under the scratch layer
/// `upper` (with its work folder `work`), `nodev`, with the options that keep the upper layer
/// plain (files, directories, links, whiteouts, opaque directories only).
pub(crate) fn mount_overlay(
    target: &Path,
    lowers: &[&Path],
    upper: &Path,
    work: &Path,
) -> Result<(), SandboxError> {
    mount_overlay_as(target, lowers, upper, work, true)
}

/// [`mount_overlay`], `volatile` or not: a scratch layer in memory has nothing to sync, and
/// `volatile` would only cost a marker folder per mount.
pub(crate) fn mount_overlay_as(
    target: &Path,
    lowers: &[&Path],
    upper: &Path,
    work: &Path,
    volatile: bool,
) -> Result<(), SandboxError> {
    super::mounts::overlay(&mut Kernel, target, lowers, (upper, work), volatile)
}

/// The sandbox's `/dev` in `merged`, with disco's tools and, in noop, the shims.
fn mount_dev(spec: &Spec) -> Result<(), SandboxError> {
    let shims: &[(&str, ShimMode)] = if spec.noop {
        &[(SHIM_DIR, ShimMode::Report)]
    } else {
        &[]
    };
    populate_dev(
        &spec.merged.join("dev"),
        spec.tools.as_deref(),
        &spec.shims,
        shims,
    )
}

/// A minimal `/dev` at `dev`: bind mounts of the harmless character devices into a `nodev`
/// tmpfs (a bind mount carries its own flags, so these open while anything created beside
/// them cannot), a private `devpts`, `shm`, disco's tools (`tools`, bound read-only under
/// [`BIN_DIR`]) and the shims (`shims`: where, as a path inside, and in which mode).
pub(crate) fn populate_dev(
    dev: &Path,
    tools: Option<&Path>,
    config: &ShimConfig,
    shims: &[(&str, ShimMode)],
) -> Result<(), SandboxError> {
    std::fs::create_dir_all(dev).map_err(prep(dev))?;
    // Not `nodev`, so that the harmless devices below open; creating others takes CAP_MKNOD,
    // which noop drops (and the roots themselves are `nodev`).
    mount(
        Some("tmpfs"),
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
        // nodes cannot be made, the host's, bound read-only.
        if !same_node(&source, &target) {
            std::fs::File::create(&target).map_err(prep(&target))?;
            bind_read_only(&source, &target, true)?;
        }
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).map_err(prep(&pts))?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )
    .map_err(sys("mount devpts", pts.display()))?;
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).map_err(prep(&shm))?;
    mount(
        Some("tmpfs"),
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
        std::os::unix::fs::symlink(target, &path).map_err(prep(&path))?;
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
        std::fs::create_dir_all(&bin).map_err(prep(&bin))?;
        for name in ["disco-param", "disco"] {
            let target = bin.join(name);
            std::fs::File::create(&target).map_err(prep(&target))?;
            bind_read_only(tools, &target, false)?;
        }
    }
    for (dir, mode) in shims {
        let dir = under_dev(dir);
        super::shims::install(config, &dir, *mode).map_err(prep(&dir))?;
    }
    Ok(())
}

/// Makes at `target` a device node like the host's `source` (type, number, mode); false when
/// it cannot.
fn same_node(source: &Path, target: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(meta) = std::fs::metadata(source) else {
        return false;
    };
    if !meta.file_type().is_char_device() {
        return false;
    }
    let mode = nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777);
    nix::sys::stat::mknod(target, nix::sys::stat::SFlag::S_IFCHR, mode, meta.rdev()).is_ok()
        // The umask must not narrow it: /dev/null is 666.
        && nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            target,
            mode,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .is_ok()
}

/// Binds the host's `source` at `target`, read-only: a bind mount is the host's file itself,
/// so a script's chmod, chown or xattr would otherwise change the host's (a device still opens
/// for writing on a read-only mount).
pub(crate) fn bind_read_only(
    source: &Path,
    target: &Path,
    device: bool,
) -> Result<(), SandboxError> {
    super::mounts::bind_read_only(&mut Kernel, source, target, device)
}

/// `/sys` read-only: scripts may read hardware facts, never change them.
fn mount_sys(merged: &Path) -> Result<(), SandboxError> {
    mount_sys_at(&merged.join("sys"))
}

/// A read-only `/sys` at `sys_dir`.
pub(crate) fn mount_sys_at(sys_dir: &Path) -> Result<(), SandboxError> {
    let sys_dir = sys_dir.to_path_buf();
    if !sys_dir.is_dir() {
        std::fs::create_dir_all(&sys_dir).map_err(prep(&sys_dir))?;
    }
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if mount(Some("sysfs"), &sys_dir, Some("sysfs"), ro, None::<&str>).is_ok() {
        return Ok(());
    }
    // Some kernels refuse a fresh sysfs outside a new network namespace: bind, then remount.
    mount(
        Some("/sys"),
        &sys_dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys("bind", sys_dir.display()))?;
    mount(
        None::<&str>,
        &sys_dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | ro,
        None::<&str>,
    )
    .map_err(sys("remount read-only", sys_dir.display()))
}

/// `/proc` at `proc_dir`: with `own`, a new instance (mounted from inside a new PID namespace,
/// it shows only the sandbox's processes), else the host's, bound; either way with the
/// kernel's tunables and triggers read-only.
pub(crate) fn mount_proc(proc_dir: &Path, own: bool) -> Result<(), SandboxError> {
    std::fs::create_dir_all(proc_dir).map_err(prep(proc_dir))?;
    if own {
        // Mounted from inside the new PID namespace, /proc shows only the sandbox's processes.
        mount(
            Some("proc"),
            proc_dir,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(sys("mount proc", proc_dir.display()))?;
    } else {
        mount(
            Some("/proc"),
            proc_dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys("bind", proc_dir.display()))?;
    }
    // Kernel tunables and triggers stay read-only, whatever capabilities remain.
    for sub in ["sys", "sysrq-trigger", "irq", "bus"] {
        let path = proc_dir.join(sub);
        if path.exists() {
            mount(
                Some(&path),
                &path,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(sys("bind", path.display()))?;
            mount(
                None::<&str>,
                &path,
                None::<&str>,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(sys("remount read-only", path.display()))?;
        }
    }
    Ok(())
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

/// Drops, for good, the capabilities that reach outside a noop sandbox ([`DROPPED`]). Its
/// callers load noop's seccomp filter first (the keyring calls and io_uring, which no
/// capability or namespace keeps inside; see [`super::seccomp`]), while they may.
pub(crate) fn drop_capabilities() -> Result<(), SandboxError> {
    use caps::CapSet;
    let err = |e: caps::errors::CapsError| SandboxError::Caps(e.to_string());
    for cap in DROPPED {
        // The bounding set is what limits root after exec.
        caps::drop(None, CapSet::Bounding, *cap).map_err(err)?;
    }
    // The others for this process, a set at a time; effective first, as it must stay
    // within permitted.
    for set in [CapSet::Effective, CapSet::Inheritable, CapSet::Permitted] {
        let mut have = caps::read(None, set).map_err(err)?;
        for cap in DROPPED {
            have.remove(cap);
        }
        caps::set(None, set, &have).map_err(err)?;
    }
    caps::clear(None, CapSet::Ambient).map_err(err)
}

static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: i32) {
    PENDING.store(sig, Ordering::Relaxed);
}

/// Catches the signals a supervisor or a terminal sends, without SA_RESTART, so that `waitpid`
/// returns and the signal can be forwarded to the payload.
pub(crate) fn forward_signals() -> Result<(), SandboxError> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.map_err(sys("install", "signal handlers"))?;
    }
    Ok(())
}

/// Waits for `child`, forwarding signals to it; with `reap_all` (PID 1) also reaps orphans.
pub(crate) fn wait_for(child: Pid, reap_all: bool) -> i32 {
    let target = if reap_all { None } else { Some(child) };
    loop {
        match waitpid(target, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return code,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => return 128 + sig as i32,
            Ok(_) => {}
            Err(Errno::EINTR) => {
                let sig = PENDING.swap(0, Ordering::Relaxed);
                if let Ok(sig) = Signal::try_from(sig) {
                    // The payload may already be gone; nothing to do then.
                    let _ = kill(child, sig);
                }
            }
            Err(_) => return EXIT_SANDBOX,
        }
    }
}
