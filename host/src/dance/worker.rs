//! The dance's sandbox: one set of namespaces for the whole dance, a root per module.
//!
//! Setting up namespaces, `/dev`, `/proc` and `/sys` is most of what a sandbox costs, and a
//! dance of small modules would pay it for every module and template. So the dance starts one
//! `disco __dance-sandbox` (new mount, UTS and IPC namespaces; a new PID namespace in noop),
//! whose worker (PID 1 there) prepares `/dev`, `/proc` and `/sys` once and then serves the
//! dance's modules one at a time, over a pipe. For each, it forks the module's runner, which
//! gets a mount namespace of its own, and there:
//!
//! 1. the templates: mounts a throwaway root (the module's files stacked on everything before
//!    it) and renders each template through the fix-module host in a child confined to it
//!    (chroot, without the capabilities noop drops nor `CAP_SYS_CHROOT`); writes each rendered
//!    file into the module's folder, which the next root shows read-only;
//! 2. the pieces: mounts the module's root (its own scratch layer on the ones before it), and
//!    in a child confined the same way (live: with every capability) delivers the files and
//!    runs the scripts through the host;
//! 3. the diff: the module's scratch layer against a read-only view of what lies beneath it.
//!
//! The runner says it is done, then exits, and its namespace takes every mount of the module
//! with it while the worker goes on. Between modules, nothing a module started survives: in
//! noop the worker, PID 1, kills every other process of its namespace; live, it kills whatever
//! was re-parented to it. The worker and the runners see the host's tree and are not dumpable,
//! so no script can reach it through `/proc/PID/root`; every mount dies with the namespaces when
//! the dance ends, however it ends.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use super::pieces::{self, PieceResult, Plan};
use super::report::{SelfUsage, Usage};
use crate::diff::{self, Change, DiffOptions, Layer};
use crate::sandbox::connect::Watcher;
use crate::sandbox::enter::{self, prep, sys, DEFERRED, SHIM_DIR};
use crate::sandbox::seccomp::Program;
use crate::sandbox::shims::ShimMode;
use crate::sandbox::{LayerInfo, Network, SandboxError, ShimConfig};

/// Where the shims that defer service commands appear inside a live dance's roots (the noop
/// ones, which templates always use, are at [`SHIM_DIR`]).
pub const DEFER_SHIM_DIR: &str = "/dev/.disco/defer";

/// What the dance's sandbox covers, for its whole life.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Setup {
    /// The dance's run folder: roots and views are mounted below it.
    pub run: PathBuf,
    /// Paths inside covered by an empty read-only tmpfs (the state directory).
    pub hide: Vec<PathBuf>,
    /// Noop: new PID namespace, dropped capabilities, shims that report.
    pub noop: bool,
    /// The shims.
    pub shims: ShimConfig,
    /// In noop, the network.
    #[serde(default)]
    pub network: Network,
    /// The disco executable, offered inside under [`crate::sandbox::enter::BIN_DIR`].
    pub tools: PathBuf,
    /// The host name inside: the node.
    pub hostname: Option<String>,
    /// The target root, whose user and group names the diff shows.
    pub root: PathBuf,
}

/// One module, as the worker runs it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModuleRequest {
    /// What runs.
    pub plan: Plan,
    /// The module's folder in the run (its roots are mounted there).
    pub dir: PathBuf,
    /// The module's scratch layers, one per filesystem, shallowest first.
    pub layers: Vec<LayerInfo>,
    /// The templates' throwaway layers, when the module has templates.
    pub template_layers: Option<Vec<LayerInfo>>,
    /// Where the rendered templates go (a host folder mirroring `/`), and where that folder
    /// appears, read-only, in the module's root.
    pub rendered: (PathBuf, PathBuf),
    /// The fetched module (host folder) and where it appears, read-only, inside.
    pub module: (PathBuf, PathBuf),
    /// The templates' modes, by item (the rendered files keep them).
    pub modes: Vec<(String, u32)>,
    /// The host file where the pieces report, one JSON line each.
    pub results: PathBuf,
    /// Live: the host file where the shims record deferred commands.
    pub defer: Option<PathBuf>,
    /// The module's diff, made by its runner before the reply (live: the merge needs it at
    /// once); `None` leaves it to a later request's `earlier` (noop).
    pub diff: Option<DiffJob>,
}

/// A module's diff, to make: its scratch layers against what lies beneath them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiffJob {
    /// The module's folder in the run (views are mounted there).
    pub dir: PathBuf,
    /// Its scratch layers, one per filesystem, shallowest first.
    pub layers: Vec<LayerInfo>,
    /// Per filesystem, what lies beneath the scratch layer apart from the live tree (the kept
    /// modules' layers, topmost first).
    pub beneath: Vec<Vec<PathBuf>>,
    /// How long the diff may take (the module's timeout); past it, it fails its module,
    /// naming the file it was reading.
    #[serde(default)]
    pub timeout: Option<Duration>,
}

/// One request: a module to run, and the diff of one that ran before it, made meanwhile (on
/// the other core: nothing the module does can change what that diff reads).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Request {
    /// The module to run.
    pub module: Option<ModuleRequest>,
    /// The diff of a module that ran before.
    pub earlier: Option<DiffJob>,
}

/// A module's changes, as `disco diff` shows them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Diffed {
    /// The changes, in the seed's format.
    pub diff: String,
    /// How many paths are created, modified and deleted.
    pub summary: (usize, usize, usize),
    /// Every change, for the report.
    pub changes: Vec<diff::Change>,
    /// What making the diff cost.
    pub usage: Usage,
}

/// How a request went, as the worker saw it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    /// The module, if one ran.
    pub module: Option<Ran>,
    /// The earlier module's diff, if one was asked for, or why it could not be made.
    pub earlier: Option<Result<Diffed, String>>,
}

/// How a module ran.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ran {
    /// The sandbox itself failed (not a piece): why.
    pub error: Option<String>,
    /// A piece failed (its result says why): no diff was made.
    pub failed: bool,
    /// Its diff, when its runner made it.
    pub diff: Option<Diffed>,
}

/// The dance's side of the sandbox: requests in, replies out.
#[derive(Debug)]
pub struct Worker {
    child: Child,
    to: Option<ChildStdin>,
    from: BufReader<ChildStdout>,
    /// `--network outbound`: the sandbox's way out, stopped after the worker (fields drop
    /// after [`Drop::drop`]).
    outbound: Option<crate::sandbox::outbound::Outbound>,
}

fn broken(what: &str) -> String {
    format!("the dance's sandbox {what} (see the error above)")
}

impl Worker {
    /// Starts `disco __dance-sandbox` for `setup` (saved at `path`).
    pub fn start(setup: &Setup, path: &Path) -> Result<Worker, String> {
        let json = serde_json::to_vec(setup).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut child = Command::new(&setup.tools)
            .arg("__dance-sandbox")
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the dance's sandbox: {e}"))?;
        let to = child.stdin.take();
        let from = BufReader::new(child.stdout.take().expect("piped"));
        let mut worker = Worker {
            child,
            to,
            from,
            outbound: None,
        };
        // The worker says it is ready once `/dev`, `/proc` and `/sys` are in place.
        let mut line = String::new();
        match worker.from.read_line(&mut line) {
            Ok(n) if n > 0 && line.trim() == "ready" => {}
            _ => return Err(broken("could not be set up")),
        }
        if setup.noop && setup.network == Network::Outbound {
            // The sandbox's network namespace is that of the process we started (it unshared
            // it before forking the worker); no module runs before it has its way out.
            worker.outbound = Some(
                crate::sandbox::outbound::Outbound::start(worker.child.id())
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(worker)
    }

    /// Runs one module.
    pub fn run(&mut self, request: &Request) -> Result<Reply, String> {
        let limit = self.send(request)?;
        self.receive(limit)
    }

    /// Sends a request; returns how long its reply may take.
    pub fn send(&mut self, request: &Request) -> Result<Duration, String> {
        let mut json = serde_json::to_string(request).map_err(|e| e.to_string())?;
        json.push('\n');
        let to = self.to.as_mut().ok_or_else(|| broken("has ended"))?;
        to.write_all(json.as_bytes())
            .and_then(|()| to.flush())
            .map_err(|_| broken("has ended"))?;
        // The worker bounds every piece; this bounds the worker, so the dance never hangs.
        // (A diff has the worker's own bound, `differ_limit`.)
        let diff = request
            .earlier
            .as_ref()
            .map_or(Duration::ZERO, differ_limit)
            + Duration::from_secs(30);
        Ok(match &request.module {
            Some(m) => {
                let pieces = m.plan.templates.len() + m.plan.scripts.len() + 2;
                m.plan.timeout * pieces as u32 + diff.max(Duration::from_secs(630))
            }
            None => diff.max(Duration::from_secs(630)),
        })
    }

    /// Waits (up to `limit`) for the reply to the request sent last.
    pub fn receive(&mut self, limit: Duration) -> Result<Reply, String> {
        let deadline = std::time::Instant::now() + limit;
        while self.from.buffer().is_empty() {
            use std::os::fd::AsFd;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                let _ = self.child.kill();
                return Err(format!(
                    "the dance's sandbox did not answer within {}s",
                    limit.as_secs()
                ));
            }
            let ready = crate::sys::poll(
                &[(self.from.get_ref().as_fd(), crate::sys::Interest::Read)],
                left,
            )
            .map_err(|e| format!("the dance's sandbox: {e}"))?;
            if ready.iter().any(|r| r.readable || r.hangup) {
                break;
            }
        }
        let mut line = String::new();
        match self.from.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line).map_err(|e| e.to_string()),
            _ => Err(broken("has ended")),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // End of input ends the worker, and with it every mount of the dance; one that does
        // not end soon is killed (its namespaces go with it).
        drop(self.to.take());
        if let Ok(fd) = crate::sys::pidfd_open(self.child.id() as i32) {
            use std::os::fd::AsFd;
            let _ = crate::sys::poll(
                &[(fd.as_fd(), crate::sys::Interest::Read)],
                Duration::from_secs(10),
            );
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `disco __dance-sandbox SETUP`: the namespaces, then the worker as their PID 1; returns the
/// exit status.
/// Its caller (`disco __dance-sandbox`) has closed every inherited descriptor but 0, 1 and 2,
/// and pinned the cgroups its fixes use.
pub fn sandbox_main(setup: &Setup) -> Result<i32, SandboxError> {
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
            let code = match worker_main(setup) {
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
struct Shared {
    /// Noop's seccomp filter, watching connections: compiled here once, loaded by each
    /// confined child.
    filter: Program,
    dev: PathBuf,
    proc: PathBuf,
    sys: PathBuf,
    empty: PathBuf,
}

fn worker_main(setup: &Setup) -> Result<(), SandboxError> {
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
    mount(
        Some("tmpfs"),
        &shared.empty,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=755"),
    )
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

/// A root to run a part of a module in.
struct Root<'a> {
    /// Where it is mounted.
    path: PathBuf,
    /// Its layers, one per filesystem.
    layers: &'a [LayerInfo],
    /// Where views of the live tree are mounted for it.
    views: &'a Path,
    /// Live: the module's deferred-commands record.
    defer: Option<&'a Path>,
    /// Host folders bound read-only inside (where): the fetched module, the rendered templates.
    binds: Vec<&'a (PathBuf, PathBuf)>,
}

/// Mounts `root`: an overlay per filesystem, the state directory hidden, the shared trees
/// bound in, and (live) the module's deferred-commands record.
fn mount_root(setup: &Setup, shared: &Shared, root: &Root<'_>) -> Result<(), SandboxError> {
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
fn live_base(
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
            let line = serde_json::json!({ "sandbox_error": e.to_string() });
            let _ = writeln!(results, "{line}");
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
    // Every root stays until the runner ends, and goes with its namespace, all at once.
    if let Some(root) = templates {
        // Bound into the module's root before anything is rendered into it.
        std::fs::create_dir_all(&r.rendered.0).map_err(prep(&r.rendered.0))?;
        mount_root(setup, shared, root)?;
        let child = spawn_confined(shared, root, r, results, Part::Templates, setup.noop)?;
        // The module's root is mounted while the templates render (it shows the rendered
        // files through a bind of their folder, whatever is written there later).
        let mounted = pieces.map(|root| mount_root(setup, shared, root));
        if !finish_confined(child, r, &shared.proc, Part::Templates) {
            return Ok(());
        }
        mounted.transpose()?;
        write_rendered(r)?;
    } else if let Some(root) = pieces {
        mount_root(setup, shared, root)?;
    }
    if let Some(root) = pieces {
        let child = spawn_confined(shared, root, r, results, Part::Pieces, setup.noop)?;
        if !finish_confined(child, r, &shared.proc, Part::Pieces) {
            return Ok(());
        }
    }
    let Some(job) = &r.diff else {
        return Ok(());
    };
    let diff = make_diff(setup, shared, job)?;
    let line = serde_json::to_string(&diff).map_err(|e| prep(&r.results)(e.into()))?;
    writeln!(results, "{line}").map_err(prep(&r.results))
}

/// Makes `job`'s diff (in a mount namespace of this process's own, where its views go).
fn make_diff(setup: &Setup, shared: &Shared, job: &DiffJob) -> Result<Diffed, SandboxError> {
    let start = SelfUsage::now();
    let changes = module_diff(setup, shared, job)?;
    Ok(Diffed {
        diff: diff::render_text(&changes),
        summary: diff::summary(&changes),
        changes,
        usage: Usage::of_self_since(start),
    })
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
                (noop, &shared.filter),
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
fn finish_confined(child: Pid, r: &ModuleRequest, proc: &Path, part: Part) -> bool {
    let _ = waitpid(child, None);
    kill_adopted(proc);
    let (pieces, error) = read_results(&r.results);
    let ran = pieces
        .iter()
        .filter(|p| (p.step.step == "template") == (part == Part::Templates));
    let expected = match part {
        Part::Templates => r.plan.templates.len(),
        Part::Pieces => r.plan.scripts.len() + usize::from(!r.plan.deliver.is_empty()),
    };
    error.is_none() && ran.count() == expected && pieces.iter().all(|p| p.failure.is_none())
}

/// The confined child: into `root` for good, noop's limits, then the part.
fn confined(
    root: &Root<'_>,
    plan: &Plan,
    part: Part,
    (noop, filter): (bool, &Program),
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
            .map_err(|e| SandboxError::Caps(e.to_string()))?;
    }
    let run = match part {
        Part::Templates => pieces::run_templates(plan, results, real, connects.as_ref()),
        Part::Pieces => pieces::run_pieces(plan, results, real, connects.as_ref()),
    };
    run.map_err(|e| SandboxError::Exec {
        command: plan.module.clone(),
        source: std::io::Error::other(e),
    })
}

/// Waits until `child` says it is done on `done` (or ends), reaping anything else that ends
/// meanwhile; kills it past `limit`.
fn wait_bounded(child: Pid, done: &std::io::PipeReader, limit: Duration) {
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
fn kill_adopted(proc: &Path) {
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
            let _ = crate::sys::kill(*pid, nix::libc::SIGKILL);
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

/// Writes each rendered template (its output, from the results) into the module's folder,
/// with the template's mode.
fn write_rendered(r: &ModuleRequest) -> Result<(), SandboxError> {
    std::fs::create_dir_all(&r.rendered.0).map_err(prep(&r.rendered.0))?;
    let (pieces, _) = read_results(&r.results);
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

/// Reads the results a child wrote: the pieces, and whether the sandbox itself failed.
fn read_results(path: &Path) -> (Vec<PieceResult>, Option<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut pieces = Vec::new();
    let mut error = None;
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Ok(p) = serde_json::from_str::<PieceResult>(line) {
            pieces.push(p);
        } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(e) = v.get("sandbox_error").and_then(|e| e.as_str()) {
                error = Some(e.to_owned());
            }
        }
    }
    (pieces, error)
}

/// One module: templates, pieces, diff.
/// One request: the module's runner and the earlier module's differ run side by side.
fn serve(setup: &Setup, shared: &Shared, request: &Request) -> Reply {
    let differ = request
        .earlier
        .as_ref()
        .map(|job| start_differ(setup, shared, job));
    let module = request.module.as_ref().map(|r| {
        module(setup, shared, r).unwrap_or_else(|e| Ran {
            error: Some(e.to_string()),
            ..Ran::default()
        })
    });
    let earlier = differ.map(|started| started.and_then(finish_differ));
    if module.is_some() || earlier.is_some() {
        clean_up(setup.noop, &shared.proc);
    }
    Reply { module, earlier }
}

/// A differ at work: its pid, its "done" pipe, where it writes the diff, how long it may take.
type Differ = (Pid, std::io::PipeReader, PathBuf, Duration);

/// How long a differ may take: its job's own bound (the module's timeout, which the diff
/// enforces itself, failing with the file it was reading), with a margin to say so; 600 s
/// for a job without one.
fn differ_limit(job: &DiffJob) -> Duration {
    job.timeout
        .map_or(Duration::from_secs(600), |t| t + Duration::from_secs(30))
}

/// Forks a child that makes `job`'s diff into `DIR/diff.json`.
fn start_differ(setup: &Setup, shared: &Shared, job: &DiffJob) -> Result<Differ, String> {
    let out = job.dir.join("diff.json");
    let (done_rx, done_tx) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the worker is single-threaded.
    match unsafe { fork() }.map_err(|e| format!("cannot fork the differ: {e}"))? {
        ForkResult::Child => {
            drop(done_rx);
            let made = unshare(CloneFlags::CLONE_NEWNS)
                .map_err(sys("unshare", "a mount namespace"))
                .and_then(|()| make_diff(setup, shared, job))
                .map_err(|e| e.to_string());
            let written = serde_json::to_vec(&made)
                .map_err(|e| e.to_string())
                .and_then(|json| std::fs::write(&out, json).map_err(|e| e.to_string()));
            let mut done_tx = done_tx;
            let _ = done_tx.write_all(b"done\n");
            std::process::exit(i32::from(written.is_err()));
        }
        ForkResult::Parent { child } => Ok((child, done_rx, out, differ_limit(job))),
    }
}

/// Waits for a differ (bounded) and reads what it made.
fn finish_differ((child, done, out, limit): Differ) -> Result<Diffed, String> {
    wait_bounded(child, &done, limit);
    let bytes = std::fs::read(&out).map_err(|e| format!("the diff: {}: {e}", out.display()))?;
    serde_json::from_slice::<Result<Diffed, String>>(&bytes)
        .map_err(|e| format!("the diff: {}: {e}", out.display()))?
}

fn module(setup: &Setup, shared: &Shared, r: &ModuleRequest) -> Result<Ran, SandboxError> {
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
    if templates.is_some() || pieces_root.is_some() {
        run_module(
            setup,
            shared,
            r,
            (templates.as_ref(), pieces_root.as_ref()),
            &results,
        )?;
        let (pieces, error) = read_results(&r.results);
        let ended_early = |what: &str| SandboxError::Exec {
            command: r.plan.module.clone(),
            source: std::io::Error::other(format!("{what} ended early")),
        };
        if let Some(e) = error {
            return Err(SandboxError::Exec {
                command: r.plan.module.clone(),
                source: std::io::Error::other(e),
            });
        }
        if pieces.iter().any(|p| p.failure.is_some()) {
            return Ok(Ran {
                failed: true,
                ..Ran::default()
            });
        }
        let rendered = pieces.iter().filter(|p| p.step.step == "template").count();
        if rendered < r.plan.templates.len() {
            return Err(ended_early("the templates' runner"));
        }
        let expected = if pieces_root.is_some() {
            r.plan.scripts.len() + usize::from(!r.plan.deliver.is_empty())
        } else {
            0
        };
        if pieces.len() - rendered < expected {
            return Err(ended_early("the module's runner"));
        }
    }
    if r.diff.is_none() {
        return Ok(Ran::default());
    }
    if templates.is_none() && pieces_root.is_none() {
        // Nothing ran (a module of `requires` only): nothing changed.
        return Ok(Ran {
            diff: Some(Diffed::default()),
            ..Ran::default()
        });
    }
    let diff = std::fs::read_to_string(&r.results)
        .unwrap_or_default()
        .lines()
        .find_map(|l| serde_json::from_str::<Diffed>(l).ok())
        .ok_or_else(|| SandboxError::Exec {
            command: r.plan.module.clone(),
            source: std::io::Error::other("the module's runner ended before its diff"),
        })?;
    Ok(Ran {
        diff: Some(diff),
        ..Ran::default()
    })
}

/// What a module's scratch layers change against everything beneath them: the live tree and
/// the layers of the modules kept before it, seen through read-only overlays.
fn module_diff(setup: &Setup, shared: &Shared, r: &DiffJob) -> Result<Vec<Change>, SandboxError> {
    let views = &r.dir.join("views");
    std::fs::create_dir_all(views).map_err(prep(views))?;
    let opts = DiffOptions {
        names_root: setup.root.clone(),
        // Counted from here: the views below are mounted within it too.
        deadline: r.timeout.map(|t| std::time::Instant::now() + t),
        ..DiffOptions::default()
    };
    let mut layers = Vec::new();
    for (i, layer) in r.layers.iter().enumerate() {
        // An empty scratch layer changes nothing: no view to mount for it.
        let untouched = std::fs::read_dir(&layer.upper).is_ok_and(|mut d| d.next().is_none());
        if untouched {
            continue;
        }
        let beneath = r.beneath.get(i).cloned().unwrap_or_default();
        let lower = if beneath.is_empty() {
            layer.lower.clone()
        } else {
            let probe = LayerInfo {
                lowers_above: beneath.clone(),
                ..layer.clone()
            };
            let live = live_base(&probe, &shared.empty, views, i)?;
            let view = views.join(format!("fs{i}"));
            std::fs::create_dir_all(&view).map_err(prep(&view))?;
            let lowers: Vec<&Path> = beneath
                .iter()
                .map(PathBuf::as_path)
                .chain(std::iter::once(live.as_path()))
                .collect();
            crate::sys::mount_overlay_readonly(&lowers, &view)
                .map_err(sys("mount the lower view", view.display()))?;
            view
        };
        layers.push(Layer {
            upper: layer.upper.clone(),
            lower,
            mount_point: layer.mount_point.clone(),
        });
    }
    // The views go with the runner's namespace.
    let mut changes = diff::compute(&layers, &opts)?;
    live_devices(&mut changes, &r.layers);
    Ok(changes)
}

/// The views are filesystems of their own; report the live filesystem's device, as an
/// unstacked diff does.
fn live_devices(changes: &mut [Change], layers: &[LayerInfo]) {
    use std::os::unix::fs::MetadataExt;
    let devices: Vec<(PathBuf, u64)> = layers
        .iter()
        .filter_map(|l| {
            Some((
                l.mount_point.clone(),
                std::fs::metadata(&l.lower).ok()?.dev(),
            ))
        })
        .collect();
    for change in changes {
        let dev = devices
            .iter()
            .filter(|(mp, _)| change.path.starts_with(mp))
            .max_by_key(|(mp, _)| mp.components().count())
            .map(|(_, dev)| *dev);
        for meta in [change.old.as_mut(), change.new.as_mut()]
            .into_iter()
            .flatten()
        {
            let node = matches!(
                meta.file_type,
                crate::diff::FileType::CharDevice | crate::diff::FileType::BlockDevice
            );
            if let (false, Some(dev)) = (node, dev) {
                meta.device = dev;
            }
        }
    }
}

/// Reads the set-up that `disco __dance-sandbox` is given (written by [`Worker::start`]).
pub fn read_setup(path: &Path) -> Result<Setup, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}
