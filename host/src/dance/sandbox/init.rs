//! The sandbox's start and its PID 1: `disco __dance-sandbox` makes the namespaces, forks the
//! worker, which prepares `/dev`, `/proc` and `/sys` once, then serves one [`Request`] a line
//! (a module's runner and an earlier module's differ side by side), and kills whatever a
//! module left before the next.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{umount2, MntFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::differ::{finish_differ, start_differ};
use super::runner::module;
use super::wire::{Ran, Reply, Request, Setup};
use crate::sandbox::enter::{self, prep, sys};
use crate::sandbox::paths::{DEFERRED, DEFER_SHIM_DIR, SHIM_DIR};
use crate::sandbox::seccomp::Program;
use crate::sandbox::shims::ShimMode;
use crate::sandbox::SandboxError;
use crate::supervise::Supervisor;

/// `disco __dance-sandbox SETUP`: the namespaces, then the worker as their PID 1; returns the
/// exit status.
/// Its caller (`disco __dance-sandbox`) has closed every inherited descriptor but 0, 1 and 2,
/// and pinned the cgroups its fixes use.
pub fn sandbox_main(setup: &Setup, supervisor: Supervisor) -> Result<i32, SandboxError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("set", "PR_SET_PDEATHSIG"))?;
    // A session of its own, without the dance's terminal: no script can push keystrokes into
    // the user's shell (TIOCSTI) through /dev/tty.
    nix::unistd::setsid().map_err(sys("start", "a session"))?;
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if setup.noop {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    unshare(flags).map_err(sys("unshare", "namespaces"))?;
    if setup.noop {
        enter::isolate_network(setup.network)?;
    }
    if let Some(name) = &setup.hostname {
        nix::unistd::sethostname(name).map_err(sys("set hostname", name))?;
    }
    crate::sys::make_mounts_private().map_err(sys("make mounts private", "/"))?;
    enter::forward_signals()?;
    // SAFETY: this process is single-threaded (nothing started a thread before here).
    match unsafe { fork() }.map_err(sys("fork", "the dance's worker"))? {
        ForkResult::Child => {
            let code = match worker_main(setup, supervisor) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: dance sandbox: {e}");
                    enter::EXIT_SANDBOX
                }
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => Ok(enter::wait_for(child, false)),
    }
}

/// The shared trees every root gets: `/dev`, `/proc`, `/sys` and the hiding tmpfs.
pub(super) struct Shared {
    /// Noop's seccomp filter, watching connections: compiled here once, loaded by each
    /// confined child.
    pub(super) filter: Program,
    pub(super) dev: PathBuf,
    pub(super) proc: PathBuf,
    pub(super) sys: PathBuf,
    pub(super) empty: PathBuf,
    /// Runs every template and script (its cgroup subtrees pinned before the namespaces).
    pub(super) supervisor: Supervisor,
}

fn worker_main(setup: &Setup, supervisor: Supervisor) -> Result<(), SandboxError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("set", "PR_SET_PDEATHSIG"))?;
    // Not dumpable: a script must not reach the host's tree through /proc/1/root or /cwd.
    nix::sys::prctl::set_dumpable(false).map_err(sys("set", "PR_SET_DUMPABLE"))?;
    if !setup.noop {
        // Live there is no PID namespace: what a module leaves behind comes back to us.
        crate::sys::set_child_subreaper().map_err(|e| SandboxError::Prepare {
            path: "PR_SET_CHILD_SUBREAPER".into(),
            source: e,
        })?;
    }
    let base = setup.run.join("sandbox");
    let shared = Shared {
        filter: Program::compile(true)?,
        dev: base.join("dev"),
        proc: base.join("proc"),
        sys: base.join("sys"),
        empty: base.join("empty"),
        supervisor,
    };
    let mut shims = vec![(SHIM_DIR, ShimMode::Report)];
    if !setup.noop {
        shims.push((DEFER_SHIM_DIR, ShimMode::Defer));
    }
    enter::populate_dev(&shared.dev, Some(&setup.tools), &setup.shims, &shims)?;
    let deferred = shared.dev.join(DEFERRED.trim_start_matches("/dev/"));
    std::fs::write(&deferred, "").map_err(prep(&deferred))?;
    enter::mount_proc(&shared.proc, setup.noop)?;
    enter::mount_sys_at(&shared.sys)?;
    std::fs::create_dir_all(&shared.empty).map_err(prep(&shared.empty))?;
    crate::sandbox::mounts::empty_tmpfs(&mut crate::sandbox::mounts::Kernel, &shared.empty)
        .map_err(sys("mount tmpfs", shared.empty.display()))?;

    // The host's /proc, /sys and /dev (and all below them) are no use here any more: every
    // root gets the trees above. Each module's runner copies this namespace and tears its copy
    // down, so every mount left out is work saved per module.
    for pseudo in ["/proc", "/sys", "/dev"] {
        let _ = umount2(pseudo, MntFlags::MNT_DETACH);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let say = |out: &mut std::io::StdoutLock<'_>, line: &str| -> Result<(), SandboxError> {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(prep(Path::new("stdout")))
    };
    say(&mut out, "ready")?;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.map_err(prep(Path::new("stdin")))?;
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(request) => serve(setup, &shared, &request),
            Err(e) => Reply {
                module: Some(Ran {
                    error: Some(format!("bad request: {e}")),
                    ..Ran::default()
                }),
                earlier: None,
            },
        };
        let json =
            serde_json::to_string(&reply).map_err(|e| prep(Path::new("stdout"))(e.into()))?;
        say(&mut out, &json)?;
    }
    Ok(())
}

/// One module: templates, pieces, diff.
/// One request: the module's runner and the earlier module's differ run side by side.
fn serve(setup: &Setup, shared: &Shared, request: &Request) -> Reply {
    let differ = request
        .earlier
        .as_ref()
        .map(|job| start_differ(setup, shared, job));
    let module = request.module.as_ref().map(|r| module(setup, shared, r));
    let earlier = differ.map(|started| {
        started
            .and_then(finish_differ)
            .unwrap_or_else(|e| Err(e.into()))
    });
    if module.is_some() || earlier.is_some() {
        clean_up(setup.noop, &shared.proc);
    }
    Reply { module, earlier }
}

/// Nothing a module started outlives it: in noop (PID 1 of the namespace) everything else
/// is killed; live, whatever was re-parented to the worker.
fn clean_up(noop: bool, proc: &Path) {
    if noop {
        // From PID 1, kill(-1) reaches every other process of the namespace.
        let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGKILL);
    } else {
        kill_adopted(proc);
    }
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Kills whatever was re-parented to this process (a child subreaper), and reaps it: a killed
/// process's own children come back to us in turn, until none is left. `proc` is the procfs
/// of the sandbox's PID namespace (this process's `/proc` is the host's).
pub(super) fn kill_adopted(proc: &Path) {
    let me = crate::sys::getpid();
    for _ in 0..100 {
        // Nothing adopted (the usual case): no need to read the process table.
        if !crate::sys::has_children() {
            return;
        }
        let mine: Vec<i32> = crate::sys::proc_table_in(proc)
            .into_iter()
            .filter(|p| p.ppid == me && !p.is_zombie())
            .map(|p| p.pid)
            .collect();
        for pid in &mine {
            let _ = crate::sys::kill(*pid, Signal::SIGKILL);
        }
        // Reap what ended (the killed, and zombies already there).
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        if mine.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
