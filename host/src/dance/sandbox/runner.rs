//! One module in the sandbox: its runner (a mount namespace of its own) mounts the templates'
//! root and renders them in a confined child, mounts the module's root and runs its files and
//! scripts in another, then (live) makes its diff; each reports [`Record`]s, which the worker
//! decodes once into the module's [`Ran`].

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::differ::make_diff;
use super::init::{kill_adopted, Shared};
use super::roots::{mount_root, Root};
use super::wire::{Diffed, ModuleRequest, Ran, Record, Records, Setup};
use crate::dance::pieces::{self, PieceResult, Plan};
use crate::sandbox::connect::Watcher;
use crate::sandbox::enter::{self, prep, sys};
use crate::sandbox::mounts::Kernel;
use crate::sandbox::paths::{DEFER_SHIM_DIR, SHIM_DIR};
use crate::sandbox::seccomp::Program;
use crate::sandbox::SandboxError;
use crate::supervise::Supervisor;

/// Runs one module (its runner, see [`run_module`]) and reads what it reported, once: every
/// piece, in order, whatever happened after it.
pub(super) fn module(setup: &Setup, shared: &Shared, r: &ModuleRequest) -> Ran {
    let mut ran = Ran::default();
    if let Err(e) = run_and_read(setup, shared, r, &mut ran) {
        ran.error = Some(e.to_string());
    }
    ran
}

fn run_and_read(
    setup: &Setup,
    shared: &Shared,
    r: &ModuleRequest,
    ran: &mut Ran,
) -> Result<(), SandboxError> {
    let results = std::fs::OpenOptions::new()
        .append(true)
        .open(&r.results)
        .map_err(prep(&r.results))?;
    let views = r.dir.join("views");
    std::fs::create_dir_all(&views).map_err(prep(&views))?;
    let templates = r.template_layers.as_ref().map(|layers| Root {
        path: r.dir.join("templates.root"),
        layers,
        views: &views,
        defer: None,
        binds: vec![&r.module],
    });
    let pieces_root = (!r.plan.deliver.is_empty() || !r.plan.scripts.is_empty()).then(|| Root {
        path: r.dir.join("root"),
        layers: &r.layers,
        views: &views,
        defer: r.defer.as_deref(),
        binds: if r.plan.templates.is_empty() {
            vec![&r.module]
        } else {
            vec![&r.module, &r.rendered]
        },
    });
    if templates.is_none() && pieces_root.is_none() {
        // Nothing runs (a module of `requires` only): nothing changes.
        ran.diff = r.diff.as_ref().map(|_| Diffed::default());
        return Ok(());
    }
    run_module(
        setup,
        shared,
        r,
        (templates.as_ref(), pieces_root.as_ref()),
        &results,
    )?;
    let mut records = Records::open(&r.results).map_err(prep(&r.results))?;
    records.update();
    ran.pieces = std::mem::take(&mut records.pieces);
    let failed = |why: String| SandboxError::Exec {
        command: r.plan.module.clone(),
        source: std::io::Error::other(why),
    };
    if let Some(e) = records.failure {
        return Err(failed(e));
    }
    if ran.pieces.iter().any(|p| p.failure.is_some()) {
        ran.failed = true;
        return Ok(());
    }
    let rendered = ran
        .pieces
        .iter()
        .filter(|p| p.step.step == "template")
        .count();
    if rendered < r.plan.templates.len() {
        return Err(failed("the templates' runner ended early".into()));
    }
    let expected = if pieces_root.is_some() {
        r.plan.scripts.len() + usize::from(!r.plan.deliver.is_empty())
    } else {
        0
    };
    if ran.pieces.len() - rendered < expected {
        return Err(failed("the module's runner ended early".into()));
    }
    if r.diff.is_some() {
        ran.diff = Some(
            records
                .diff
                .ok_or_else(|| failed("the module's runner ended before its diff".into()))?,
        );
    }
    Ok(())
}

/// Forks the module's runner and waits for it (no longer than the plan's timeouts allow),
/// then cleans up after it. The runner gets a mount namespace of its own, where it mounts the
/// templates' root and renders them there (in a child of its own, confined to that root),
/// writes the rendered files, then mounts the module's root, enters it and runs the pieces,
/// each result on `results`. Every mount ends with the runner.
fn run_module(
    setup: &Setup,
    shared: &Shared,
    r: &ModuleRequest,
    roots: (Option<&Root<'_>>, Option<&Root<'_>>),
    results: &std::fs::File,
) -> Result<(), SandboxError> {
    let results = results.try_clone().map_err(prep(Path::new("results")))?;
    // The runner says it is done on this pipe before it exits: its exit (tearing down its
    // namespace, every mount of the module's roots) then overlaps with what follows.
    let (done_rx, done_tx) = std::io::pipe().map_err(prep(Path::new("pipe")))?;
    // SAFETY: the worker is single-threaded.
    let child = match unsafe { fork() }.map_err(sys("fork", "a module's runner"))? {
        ForkResult::Child => {
            drop(done_rx);
            let mut results = results;
            let ran = runner(setup, shared, r, roots, &mut results);
            let code = exit_code(ran, &mut results);
            let mut done_tx = done_tx;
            let _ = done_tx.write_all(b"done\n");
            std::process::exit(code);
        }
        ForkResult::Parent { child } => child,
    };
    drop(results);
    drop(done_tx);
    // Each piece has its own timeout inside; this bounds them all, with a margin.
    let count = r.plan.templates.len() + r.plan.scripts.len() + 1;
    let limit = r.plan.timeout * (count as u32 + 1) + Duration::from_secs(5);
    wait_bounded(child, &done_rx, limit);
    if !setup.noop {
        // Live there is no PID namespace to sweep: the runner goes first, then its leftovers.
        let _ = waitpid(child, None);
    }
    Ok(())
}

/// A child's exit status; a failure of the sandbox itself (not of a piece) goes to the
/// results, where the dance reads it.
fn exit_code(ran: Result<(), SandboxError>, results: &mut std::fs::File) -> i32 {
    match ran {
        Ok(()) => 0,
        Err(e) => {
            let _ = Record::Failed(e.to_string()).append(results);
            enter::EXIT_SANDBOX
        }
    }
}

/// The module's runner (see [`run_module`]).
fn runner(
    setup: &Setup,
    shared: &Shared,
    r: &ModuleRequest,
    (templates, pieces): (Option<&Root<'_>>, Option<&Root<'_>>),
    results: &mut std::fs::File,
) -> Result<(), SandboxError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("set", "PR_SET_PDEATHSIG"))?;
    // The module's processes see this one, which still sees the host: not through /proc.
    nix::sys::prctl::set_dumpable(false).map_err(sys("set", "PR_SET_DUMPABLE"))?;
    // Whatever the module leaves behind comes back here, and is ended.
    crate::sys::set_child_subreaper().map_err(prep(Path::new("PR_SET_CHILD_SUBREAPER")))?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(sys("unshare", "a mount namespace"))?;
    // What the confined children report, read as it comes.
    let mut records = Records::open(&r.results).map_err(prep(&r.results))?;
    // Every root stays until the runner ends, and goes with its namespace, all at once.
    if let Some(root) = templates {
        // Bound into the module's root before anything is rendered into it.
        std::fs::create_dir_all(&r.rendered.0).map_err(prep(&r.rendered.0))?;
        mount_root(setup, shared, root, &mut Kernel)?;
        let child = spawn_confined(shared, root, r, results, Part::Templates, setup.noop)?;
        // The module's root is mounted while the templates render (it shows the rendered
        // files through a bind of their folder, whatever is written there later).
        let mounted = pieces.map(|root| mount_root(setup, shared, root, &mut Kernel));
        if !finish_confined(child, r, &shared.proc, Part::Templates, &mut records) {
            return Ok(());
        }
        mounted.transpose()?;
        write_rendered(r, &records.pieces)?;
    } else if let Some(root) = pieces {
        mount_root(setup, shared, root, &mut Kernel)?;
    }
    if let Some(root) = pieces {
        let child = spawn_confined(shared, root, r, results, Part::Pieces, setup.noop)?;
        if !finish_confined(child, r, &shared.proc, Part::Pieces, &mut records) {
            return Ok(());
        }
    }
    let Some(job) = &r.diff else {
        return Ok(());
    };
    let diff = make_diff(setup, shared, job)?;
    Record::Diff(Box::new(diff))
        .append(results)
        .map_err(prep(&r.results))
}

/// What a confined child runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The templates: always as noop.
    Templates,
    /// The files and scripts.
    Pieces,
}

/// Starts `part` of the module in a child confined to `root` (chroot; as noop, without the
/// capabilities that would leave it).
fn spawn_confined(
    shared: &Shared,
    root: &Root<'_>,
    r: &ModuleRequest,
    results: &std::fs::File,
    part: Part,
    noop: bool,
) -> Result<Pid, SandboxError> {
    let noop = noop || part == Part::Templates;
    let shims = if noop { SHIM_DIR } else { DEFER_SHIM_DIR };
    let (path, real) = enter::sandbox_path(Some(shims), true);
    let results = results.try_clone().map_err(prep(Path::new("results")))?;
    // SAFETY: the runner is single-threaded.
    match unsafe { fork() }.map_err(sys("fork", "a confined child"))? {
        ForkResult::Child => {
            let mut results = results;
            let ran = confined(
                root,
                &r.plan,
                part,
                (noop, &shared.filter, &shared.supervisor),
                (&path, &real),
                &mut results,
            );
            let code = exit_code(ran, &mut results);
            std::process::exit(code);
        }
        ForkResult::Parent { child } => Ok(child),
    }
}

/// Waits for a confined child, ends what it left behind, and says whether every piece of
/// its part succeeded.
fn finish_confined(
    child: Pid,
    r: &ModuleRequest,
    proc: &Path,
    part: Part,
    records: &mut Records,
) -> bool {
    let _ = waitpid(child, None);
    kill_adopted(proc);
    let ran = records.update().len();
    let expected = match part {
        Part::Templates => r.plan.templates.len(),
        Part::Pieces => r.plan.scripts.len() + usize::from(!r.plan.deliver.is_empty()),
    };
    records.failure.is_none()
        && ran == expected
        && records.pieces.iter().all(|p| p.failure.is_none())
}

/// The confined child: into `root` for good, noop's limits, then the part.
fn confined(
    root: &Root<'_>,
    plan: &Plan,
    part: Part,
    (noop, filter, supervisor): (bool, &Program, &Supervisor),
    (path, real): (&std::ffi::OsStr, &std::ffi::OsStr),
    results: &mut std::fs::File,
) -> Result<(), SandboxError> {
    // A runner killed at its time limit takes its confined child along.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("set", "PR_SET_PDEATHSIG"))?;
    nix::unistd::chroot(&root.path).map_err(sys("chroot", root.path.display()))?;
    nix::unistd::chdir("/").map_err(sys("chdir", "/"))?;
    // SAFETY: single-threaded (a fresh fork of the single-threaded runner; the watcher's thread
    // starts below).
    unsafe { std::env::set_var("PATH", path) };
    // In noop, every connection a piece attempts is reported ("Would connect"); installed
    // while CAP_SYS_ADMIN is still held, and before any thread.
    let connects = match noop {
        true => filter.load()?.map(Watcher::start).transpose()?,
        false => None,
    };
    if noop {
        enter::drop_capabilities()?;
        // Without it, a second chroot would lead back out.
        let chroot = caps::Capability::CAP_SYS_CHROOT;
        caps::drop(None, caps::CapSet::Bounding, chroot)
            .and_then(|()| {
                for set in [
                    caps::CapSet::Effective,
                    caps::CapSet::Inheritable,
                    caps::CapSet::Permitted,
                ] {
                    caps::drop(None, set, chroot)?;
                }
                Ok(())
            })
            .map_err(SandboxError::Caps)?;
    }
    let mut report = |piece: PieceResult| Record::Piece(Box::new(piece)).append(results);
    let run = match part {
        Part::Templates => {
            pieces::run_templates(plan, &mut report, real, connects.as_ref(), supervisor)
        }
        Part::Pieces => pieces::run_pieces(plan, &mut report, real, connects.as_ref(), supervisor),
    };
    run.map_err(|source| SandboxError::Exec {
        command: plan.module.clone(),
        source,
    })
}

/// Waits until `child` says it is done on `done` (or ends), reaping anything else that ends
/// meanwhile; kills it past `limit`.
pub(super) fn wait_bounded(child: Pid, done: &std::io::PipeReader, limit: Duration) {
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + limit;
    loop {
        // Orphans that ended (the worker is their reaper); never the runner itself here.
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            match status {
                WaitStatus::StillAlive => break,
                WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _) if pid == child => {
                    return
                }
                _ => {}
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            return;
        }
        // Readable once the runner wrote its word, or ended (end of file).
        let ready = crate::sys::poll(
            &[(done.as_fd(), crate::sys::Interest::Read)],
            left.min(Duration::from_millis(100)),
        );
        if ready.is_ok_and(|r| r.iter().any(|r| r.readable || r.hangup)) {
            return;
        }
    }
}

/// Writes each rendered template (its output, from the results) into the module's folder,
/// with the template's mode.
fn write_rendered(r: &ModuleRequest, pieces: &[PieceResult]) -> Result<(), SandboxError> {
    std::fs::create_dir_all(&r.rendered.0).map_err(prep(&r.rendered.0))?;
    for p in pieces.iter().filter(|p| p.step.step == "template") {
        let (Some(item), Some(output)) = (&p.step.item, &p.output) else {
            continue;
        };
        let mode = r
            .modes
            .iter()
            .find(|(i, _)| i == item)
            .map_or(0o644, |(_, m)| *m);
        let out = r.rendered.0.join(item);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(out.parent().unwrap_or(&r.rendered.0))?;
            std::fs::write(&out, output)?;
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode))
        };
        write().map_err(prep(&out))?;
    }
    Ok(())
}
