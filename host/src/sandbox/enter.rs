//! The sandbox recipe, in the order it runs inside `disco __sandbox`. One line of why a step.
//!
//! 1. New mount, UTS and IPC namespaces (and PID, in noop).
//! 2. Make every mount private, so nothing propagates to the host.
//! 3. An overlay per filesystem (`nodev`, plain upper layer).
//! 4. Hide the state directory.
//! 5. Our own `/dev` and a read-only `/sys`.
//! 6. Fork PID 1, which mounts `/proc` of the new PID namespace, makes the dangerous parts of
//!    `/proc` read-only and `pivot_root`s into the overlay.
//! 7. PID 1 forks the payload as PID 2 (so signals are forwarded and orphans reaped), which in
//!    noop drops the capabilities that reach outside and gets the shims first on `PATH`.
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

use super::shims::ShimMode;
use super::{SandboxError, Spec};

/// Exit status of `disco __sandbox` when the sandbox itself could not be set up.
pub const EXIT_SANDBOX: i32 = 125;
/// Exit status when the payload could not be executed.
pub const EXIT_EXEC: i32 = 127;

/// Where disco's own files (the shims) appear inside the sandbox: in its private `/dev`, so
/// they never land in a scratch layer or a diff.
pub const SHIM_DIR: &str = "/dev/.disco/shims";
/// Where disco's tools (`disco-param`) appear inside the sandbox.
pub const BIN_DIR: &str = "/dev/.disco/bin";
/// Where a live sandbox's shims record the commands they defer.
pub const DEFERRED: &str = "/dev/.disco/deferred";
/// The environment variable that names the descriptor a module's pieces report on (see
/// `dance::pieces`): a descriptor, not a path, so that the scripts cannot reach it.
pub const RESULTS_FD: &str = "DISCO_RESULTS_FD";

/// Capabilities dropped in noop: each reaches outside the sandbox (modules, clock, network,
/// raw I/O, other processes, mounts, immutable flags that would pin the scratch layer).
const DROPPED: &[caps::Capability] = {
    use caps::Capability::*;
    &[
        CAP_SYS_MODULE,
        CAP_SYS_BOOT,
        CAP_SYS_TIME,
        CAP_NET_ADMIN,
        CAP_SYS_RAWIO,
        CAP_SYS_PTRACE,
        CAP_SYS_ADMIN,
        CAP_LINUX_IMMUTABLE,
        CAP_MAC_ADMIN,
        CAP_MAC_OVERRIDE,
        CAP_SYSLOG,
        CAP_WAKE_ALARM,
        CAP_BLOCK_SUSPEND,
        CAP_AUDIT_CONTROL,
        CAP_SYS_PACCT,
        CAP_SYS_TTY_CONFIG,
        CAP_BPF,
        CAP_PERFMON,
        CAP_CHECKPOINT_RESTORE,
    ]
};

fn sys(call: &'static str, detail: impl std::fmt::Display) -> impl FnOnce(Errno) -> SandboxError {
    let detail = detail.to_string();
    move |errno| SandboxError::Syscall {
        call,
        detail,
        errno,
    }
}

fn prep(path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError + '_ {
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
    // If the disco that started this sandbox dies, the sandbox dies with it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("set", "PR_SET_PDEATHSIG"))?;
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if spec.noop {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    unshare(flags).map_err(sys("unshare", "namespaces"))?;
    if let Some(name) = &spec.hostname {
        // Only this UTS namespace's name: scripts that ask `hostname` see the node.
        nix::unistd::sethostname(name).map_err(sys("set hostname", name))?;
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
    // Opened here, on the host's side of the mounts, and handed down as a descriptor.
    let results = match &spec.results {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(prep(path))?,
        ),
        None => None,
    };
    forward_signals()?;
    // SAFETY: this process is single-threaded (disco __sandbox starts no threads before here),
    // so the child may run arbitrary code after fork.
    match unsafe { fork() }.map_err(sys("fork", "the sandbox's init"))? {
        ForkResult::Child => {
            let err = match init(spec, argv, cwd, results.as_ref()) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            eprintln!("error: sandbox: {err}");
            std::process::exit(EXIT_SANDBOX);
        }
        ForkResult::Parent { child } => Ok(wait_for(child, false)),
    }
}

/// One overlay per filesystem, shallowest first, all `nodev`, with the options that keep the
/// upper layer plain (files, directories, links, whiteouts, opaque directories only).
fn mount_overlays(spec: &Spec) -> Result<(), SandboxError> {
    std::fs::create_dir_all(&spec.merged).map_err(prep(&spec.merged))?;
    let empty = spec.merged.with_extension("empty");
    for (i, layer) in spec.layers.iter().enumerate() {
        let target = inside(&spec.merged, &layer.mount_point);
        // Scratch layers are `volatile` (no syncs while scripts write: a merge makes what it
        // needs durable itself). overlayfs marks such a work folder, and refuses it until the
        // mark is removed; the sandbox that used it last has ended, so it goes.
        let _ = std::fs::remove_dir_all(layer.work.join("work/incompat/volatile"));
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
        let lowers = crate::sys::overlay_lowerdir(&lowers)
            .map_err(sys("enter the layers' folder for", target.display()))?;
        let data = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off,xino=off",
            lowers,
            crate::sys::overlay_escape(&layer.upper),
            crate::sys::overlay_escape(&layer.work)
        );
        let overlay = |data: &str| {
            mount(
                Some("overlay"),
                &target,
                Some("overlay"),
                MsFlags::MS_NODEV,
                Some(data),
            )
        };
        // Kernels before 5.10 know no `volatile`: the same layer, with syncs.
        overlay(&format!("{data},volatile"))
            .or_else(|e| {
                if e == Errno::EINVAL {
                    overlay(&data)
                } else {
                    Err(e)
                }
            })
            .map_err(sys(
                "mount overlay",
                format!("on {} (lower {})", target.display(), layer.lower.display()),
            ))?;
    }
    Ok(())
}

/// A minimal `/dev`: bind mounts of the harmless character devices into a `nodev` tmpfs (a
/// bind mount carries its own flags, so these open while anything created beside them cannot),
/// a private `devpts`, `shm`, and the shims.
fn mount_dev(spec: &Spec) -> Result<(), SandboxError> {
    let dev = spec.merged.join("dev");
    std::fs::create_dir_all(&dev).map_err(prep(&dev))?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755,size=1m"),
    )
    .map_err(sys("mount tmpfs", dev.display()))?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        std::fs::File::create(&target).map_err(prep(&target))?;
        let source = Path::new("/dev").join(name);
        bind_read_only(&source, &target)?;
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
    if let Some(tools) = &spec.tools {
        // disco itself, under the name that makes it `disco param` (see `host::run`).
        let bin = inside(&spec.merged, Path::new(BIN_DIR));
        std::fs::create_dir_all(&bin).map_err(prep(&bin))?;
        for name in ["disco-param", "disco"] {
            let target = bin.join(name);
            std::fs::File::create(&target).map_err(prep(&target))?;
            bind_read_only(tools, &target)?;
        }
    }
    if spec.noop {
        let shims = inside(&spec.merged, Path::new(SHIM_DIR));
        super::shims::install(&spec.shims, &shims, ShimMode::Report).map_err(prep(&shims))?;
    } else if let Some(record) = &spec.defer {
        let shims = inside(&spec.merged, Path::new(SHIM_DIR));
        super::shims::install(&spec.shims, &shims, ShimMode::Defer).map_err(prep(&shims))?;
        // The record survives the sandbox: it is the host's file, bound in.
        bind_file(record, &inside(&spec.merged, Path::new(DEFERRED)))?;
    }
    Ok(())
}

/// Binds the host's `source` at `target`, read-only: a bind mount is the host's file itself,
/// so a script's chmod, chown or xattr would otherwise change the host's (a device still opens
/// for writing on a read-only mount).
fn bind_read_only(source: &Path, target: &Path) -> Result<(), SandboxError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys("bind", target.display()))?;
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID,
        None::<&str>,
    )
    .map_err(sys("remount read-only", target.display()))
}

/// Binds the host's `file` at `target` (created empty first), writable.
fn bind_file(file: &Path, target: &Path) -> Result<(), SandboxError> {
    std::fs::File::create(target).map_err(prep(target))?;
    mount(
        Some(file),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys("bind", target.display()))
}

/// `/sys` read-only: scripts may read hardware facts, never change them.
fn mount_sys(merged: &Path) -> Result<(), SandboxError> {
    let sys_dir = merged.join("sys");
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

/// PID 1 of the sandbox: `/proc`, `pivot_root`, then the payload as PID 2.
fn init(
    spec: &Spec,
    argv: &[OsString],
    cwd: &Path,
    results: Option<&std::fs::File>,
) -> Result<Infallible, SandboxError> {
    // If `disco __sandbox` dies, the whole sandbox goes with it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("set", "PR_SET_PDEATHSIG"))?;
    let proc_dir = spec.merged.join("proc");
    std::fs::create_dir_all(&proc_dir).map_err(prep(&proc_dir))?;
    if spec.noop {
        // Mounted from inside the new PID namespace, /proc shows only the sandbox's processes.
        mount(
            Some("proc"),
            &proc_dir,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(sys("mount proc", proc_dir.display()))?;
    } else {
        mount(
            Some("/proc"),
            &proc_dir,
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
    // pivot_root(".", ".") stacks the old root under the new one without a put_old folder
    // (which would land in the scratch layer); detaching it leaves no way back out.
    chdir(&spec.merged).map_err(sys("chdir", spec.merged.display()))?;
    pivot_root(".", ".").map_err(sys("pivot_root", spec.merged.display()))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detach", "the old root"))?;
    if chdir(cwd).is_err() {
        chdir("/").map_err(sys("chdir", "/"))?;
    }
    // SAFETY: PID 1 is single-threaded, as its parent was.
    match unsafe { fork() }.map_err(sys("fork", "the payload"))? {
        ForkResult::Child => {
            let err = payload(spec, argv, results);
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
fn payload(spec: &Spec, argv: &[OsString], results: Option<&std::fs::File>) -> SandboxError {
    let Some((program, args)) = argv.split_first() else {
        return SandboxError::Exec {
            command: String::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command"),
        };
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    if let Some(file) = results {
        // The payload (disco __pieces) inherits it; it closes it on exec for the scripts.
        use std::os::fd::AsRawFd;
        if let Err(e) = nix::fcntl::fcntl(
            file,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        ) {
            return SandboxError::Exec {
                command: program.to_string_lossy().into_owned(),
                source: e.into(),
            };
        }
        cmd.env(RESULTS_FD, file.as_raw_fd().to_string());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut full = OsString::new();
    if spec.noop {
        if let Err(e) = drop_capabilities() {
            return e;
        }
        cmd.env("NOOP", "true");
    }
    if spec.noop || spec.defer.is_some() {
        full.push(SHIM_DIR);
        full.push(":");
    }
    if spec.tools.is_some() {
        full.push(BIN_DIR);
        full.push(":");
    }
    full.push(&path);
    cmd.env("DISCO_REAL_PATH", &path).env("PATH", full);
    let source = cmd.exec();
    SandboxError::Exec {
        command: program.to_string_lossy().into_owned(),
        source,
    }
}

fn drop_capabilities() -> Result<(), SandboxError> {
    use caps::CapSet;
    let err = |e: caps::errors::CapsError| SandboxError::Caps(e.to_string());
    for cap in DROPPED {
        // The bounding set is what limits root after exec; the others for this process.
        caps::drop(None, CapSet::Bounding, *cap).map_err(err)?;
        for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
            caps::drop(None, set, *cap).map_err(err)?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err)
}

static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: i32) {
    PENDING.store(sig, Ordering::Relaxed);
}

/// Catches the signals a supervisor or a terminal sends, without SA_RESTART, so that `waitpid`
/// returns and the signal can be forwarded to the payload.
fn forward_signals() -> Result<(), SandboxError> {
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
fn wait_for(child: Pid, reap_all: bool) -> i32 {
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
