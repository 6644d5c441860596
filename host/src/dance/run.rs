//! One dance from start to end: fetch the parameters, list and order the node's modules, fetch
//! them, merge the parameter trees, then for each module in order: deliver its files, render
//! its templates, run its scripts, report its diff. Everything is measured for `disco report`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::fetch::Fetched;
use super::gather::{client_value, gather, FetchResults, Gathered};
use super::layers::Stack;
use super::module::{
    earlier_of, module_options, EarlierDiff, EarlierDiffError, ModuleError, ModuleRun,
};
use super::order;
use super::progress::Printer;
use super::report::{self, DanceReport, ModuleResult, ModuleStatus, Step, Usage};
use super::sandbox::{DiffJob, ModuleRequest, Request, Setup, Worker};
use super::DanceError;
use crate::params::{KeyPath, Tree};
use crate::sandbox::{RunDir, Target};

/// The client parameter that chooses a noop dance's network when `--network` is not given.
pub const NETWORK_PARAMETER: &str = "disco/client/network";

/// What a dance is asked to do.
#[derive(Clone, Debug)]
pub struct DanceOptions {
    /// `--source`; `None` reads `disco/server/uri` from the client's parameters.
    pub source: Option<String>,
    /// The node whose modules run.
    pub node: String,
    /// Set the sandboxes' host name to the node (when the node is not this machine's name).
    pub hostname: Option<String>,
    /// The target root.
    pub root: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Noop: nothing reaches the live system.
    pub noop: bool,
    /// Parallel fetches.
    pub jobs: usize,
    /// How long one script or template may take.
    pub timeout: Duration,
    /// Print progress (text format); the JSON format prints only the report.
    pub progress: bool,
    /// Wait for a running dance to finish (else fail at once).
    pub wait: bool,
    /// Live with a root other than `/`: run the deferred service commands anyway (chrooted,
    /// but as processes of this host); by default they are reported and not run.
    pub run_deferred: bool,
    /// In noop, the sandbox's network; `None` reads `disco/client/network` from the client's
    /// parameters (`loopback`, the default, or `outbound`).
    pub network: Option<crate::sandbox::Network>,
    /// Live: how many dances' undo records to keep onto the root (for `disco rollback`).
    pub keep_undo: usize,
    /// Live: how many bytes of replaced content the kept undo records may hold.
    pub keep_undo_bytes: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DanceError + '_ {
    move |source| DanceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A module that succeeded whose diff is being made.
struct Pending {
    /// Its place in the dance's results.
    index: usize,
    /// Its name.
    name: String,
    /// Its diff.
    job: DiffJob,
}

/// Prints a pending module's diff and counts its changes (or fails it, when its diff could not
/// be made).
fn record_diff(
    p: Pending,
    diffed: EarlierDiff,
    results: &mut [ModuleResult],
    steps: &mut Vec<Step>,
    print: &Printer,
) {
    match diffed.unwrap_or(Err(EarlierDiffError::NoneCameBack)) {
        Ok(d) => {
            steps.push(Step::new(&p.name, "diff", None, d.usage, true));
            print.raw(d.diff.as_bytes());
            if let Some(m) = results.get_mut(p.index) {
                m.changes = d.summary;
                m.paths = d.changes;
            }
        }
        Err(e) => {
            steps.push(Step::new(&p.name, "diff", None, Usage::default(), false));
            let reason = format!("its diff failed: {e}");
            print.error(&format!("{}: {reason}", p.name));
            if let Some(m) = results.get_mut(p.index) {
                m.status = ModuleStatus::Failed { reason };
            }
        }
    }
}

/// Asks for a pending module's diff alone (when no module runs beside it) and records it.
fn flush(
    worker: &mut Worker,
    pending: Option<Pending>,
    results: &mut [ModuleResult],
    steps: &mut Vec<Step>,
    print: &Printer,
) {
    let Some(p) = pending else {
        return;
    };
    let reply = worker.run(&Request {
        module: None,
        earlier: Some(p.job.clone()),
    });
    record_diff(p, earlier_of(reply), results, steps, print);
}

/// A noop dance's layers are thrown away at its end: they live in memory, in a tmpfs that
/// only this process's own mount namespace (and its sandbox's) sees, and that vanishes with
/// it, however it ends: nothing to delete afterwards, no churn of the disk's inodes.
fn in_memory(run: &Path) -> Result<(), DanceError> {
    let fail = |what: &'static str, source: nix::errno::Errno| DanceError::RunFolder {
        what,
        path: run.to_owned(),
        source,
    };
    crate::sys::private_mount_namespace().map_err(|e| fail("unshare a mount namespace", e))?;
    nix::mount::mount(
        Some("tmpfs"),
        run,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("mode=700"),
    )
    .map_err(|e| fail("mount a tmpfs", e))
}

/// Takes the dance lock of a state directory (its journals and runs): waits for it when
/// `wait`, else fails at once.
pub fn state_lock(state_dir: &Path, wait: bool) -> Result<std::fs::File, DanceError> {
    let lock_path = state_dir.join("dance.lock");
    let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
    if wait {
        lock.lock().map_err(io(&lock_path))?;
    } else if lock.try_lock().is_err() {
        return Err(DanceError::Busy(lock_path));
    }
    Ok(lock)
}

/// What a dance holds from its start: its locks, its root, and its options with the network
/// settled.
struct Begun {
    lock: std::fs::File,
    root_lock: Option<crate::apply::lock::RootLock>,
    root: PathBuf,
    opts: DanceOptions,
}

/// The state directory 0700, the dance's locks, what a killed dance left finished (live) or
/// named (noop), and the network from the command line or else the client's parameters.
fn begin(opts: &DanceOptions) -> Result<Begun, DanceError> {
    crate::apply::journal::private_dir(&opts.state_dir).map_err(DanceError::Apply)?;
    let lock = state_lock(&opts.state_dir, opts.wait)?;
    // One dance per root, whatever its state directory.
    let root = opts.root.canonicalize().map_err(|_| {
        DanceError::Sandbox(crate::sandbox::SandboxError::BadRoot(opts.root.clone()))
    })?;
    // One live dance per root, whatever its state directory. A noop dance changes nothing
    // there, so it neither takes nor waits for the root's lock.
    let root_lock = if opts.noop {
        None
    } else {
        Some(crate::apply::lock::lock_root_path(&root, opts.wait).map_err(DanceError::Apply)?)
    };
    // A merge a killed dance left half done is finished before anything else changes, by a
    // live dance only (it holds the root's lock; a noop dance changes nothing live).
    let print_early = Printer::new(opts.progress, 0);
    if opts.noop {
        if let Some(journal) = crate::apply::pending(&opts.state_dir) {
            print_early.warning(&format!(
                "an interrupted merge is pending ({}): this noop dance shows the system as it is; `disco recover` finishes it",
                journal.display()
            ));
        }
    } else {
        // A rollback cut short is finished first, by `disco rollback`: dancing on a half
        // undone system would record that state as the one to go back to.
        if let Some(dance) = crate::apply::undo::rolling_back(&opts.state_dir, &root) {
            return Err(DanceError::Apply(
                crate::apply::ApplyError::RollbackPending { dance },
            ));
        }
        for line in crate::apply::recover(
            &opts.state_dir,
            &opts.state_dir.join("locks"),
            Some(&root),
            crate::apply::RecoverMode::Finish,
            None,
        )
        .map_err(DanceError::Apply)?
        {
            print_early.info(&line);
        }
    }

    // The client's own parameters say where the server is and how to reach it.
    let client = opts.state_dir.join("parameters");
    // The network, from the command line or else the client's parameters, settled once for
    // everything below.
    let resolved = DanceOptions {
        network: Some(match opts.network {
            Some(network) => network,
            None => match client_value(&client, NETWORK_PARAMETER) {
                None => crate::sandbox::Network::default(),
                Some(value) => {
                    <crate::sandbox::Network as clap::ValueEnum>::from_str(value.trim(), false)
                        .map_err(|_| DanceError::BadParameter {
                            key: NETWORK_PARAMETER,
                            value,
                        })?
                }
            },
        }),
        ..opts.clone()
    };
    Ok(Begun {
        lock,
        root_lock,
        root,
        opts: resolved,
    })
}

/// The run's layers, and the disco layer with the merged parameters and a folder per module;
/// returns them and the merged parameter tree.
fn lay_out(
    opts: &DanceOptions,
    order: &order::Order,
    fetched: &FetchResults,
    params: &Fetched,
) -> Result<(Stack, Tree), DanceError> {
    // The run's layers, and the disco layer with the merged parameters and the modules.
    let target = Target::discover(&opts.root, &opts.state_dir)?;
    let run = RunDir::create(&target.state_dir)?;
    if opts.noop {
        in_memory(&run.path)?;
    }
    let stack = Stack::new(target, run, opts.hostname.clone())?;
    let merged = stack.disco_host().join("parameters");
    let mut layers: Vec<PathBuf> = order
        .modules
        .iter()
        .filter_map(|m| fetched.get(m)?.as_ref().ok())
        .map(|f| f.path.join("parameters"))
        .collect();
    layers.push(params.path.clone());
    let layer_refs: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
    crate::params::merge(&layer_refs, &merged)?;
    let tree = Tree::open(&merged)?;
    for m in &order.modules {
        // Where the module is bound in, and where its templates' output goes.
        for dir in ["modules", "rendered"] {
            let path = stack.disco_host().join(dir).join(m);
            std::fs::create_dir_all(&path).map_err(io(&path))?;
        }
    }
    Ok((stack, tree))
}

/// Keeps the layer of live module `k`, which failed, as the run's, for `disco diff RUN`.
fn keep_failed_layer(stack: &Stack, k: usize, report: &DanceReport) -> Result<(), DanceError> {
    let info = crate::sandbox::RunInfo {
        id: report.id.clone(),
        root: stack.target.root.clone(),
        noop: false,
        created: report.started_unix,
        layers: stack
            .merge_layers(k)
            .into_iter()
            .map(|(upper, fs)| crate::sandbox::LayerInfo {
                mount_point: Path::new("/").join(&fs),
                work: upper.with_file_name("work"),
                upper,
                lower: stack.target.root.join(&fs),
                lowers_above: Vec::new(),
            })
            .collect(),
    };
    stack.run.save(&info)?;
    Ok(())
}

/// Runs a dance and returns its report (also saved under the state directory).
pub fn dance(opts: &DanceOptions) -> Result<DanceReport, DanceError> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let Begun {
        lock,
        root_lock,
        root,
        opts,
    } = begin(opts)?;
    let opts = &opts;
    let mut steps = Vec::new();
    let Gathered {
        params,
        fetched,
        order,
    } = gather(opts, &mut steps)?;
    let (mut stack, tree) = lay_out(opts, &order, &fetched, &params)?;
    let id = stack.run.id.clone();

    let print = Printer::new(opts.progress, order.modules.len());
    // One sandbox for the whole dance; each module gets its own root in it.
    let setup = Setup {
        run: stack.run.path.clone(),
        hide: stack.target.hide(),
        noop: opts.noop,
        shims: crate::sandbox::ShimConfig::default(),
        network: opts.network.unwrap_or_default(),
        tools: std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?,
        hostname: stack.hostname().map(str::to_owned),
        root: stack.target.root.clone(),
    };
    let mut worker = Worker::start(&setup, &stack.run.path.join("sandbox.json"))?;
    let home = super::pieces::root_home(&stack.target.root);
    let mut results: Vec<ModuleResult> = Vec::new();
    let mut failed_live = None;
    // In noop, a module's diff is made while the next module runs (see `worker`); it is
    // printed, and its changes counted, when that module's reply comes, before anything of it.
    let mut pending: Option<Pending> = None;
    // The next module, laid out while the one before runs.
    let mut prepared: Option<(usize, Result<ModuleRequest, ModuleError>)> = None;
    let fetched_path = |name: &str| match fetched.get(name) {
        Some(Ok(f)) => f.path.clone(),
        _ => PathBuf::new(),
    };
    for (k, name) in order.modules.iter().enumerate() {
        // A merge left unfinished (a commit that failed) stops a live dance: what runs next
        // would run on a half-merged system.
        if let Some(journal) = (!opts.noop)
            .then(|| crate::apply::journal::pending_for_root(&opts.state_dir, &root))
            .flatten()
        {
            let reason = format!("an unfinished merge is pending ({})", journal.display());
            print.warning(&format!("{name}: skipped: {reason}"));
            results.push(ModuleResult {
                name: name.clone(),
                status: ModuleStatus::Skipped { reason },
                changes: (0, 0, 0),
                paths: Vec::new(),
            });
            continue;
        }
        let blocked = order.after.get(name).and_then(|reqs| {
            reqs.iter().find(|r| {
                results
                    .iter()
                    .any(|m| &m.name == *r && m.status != ModuleStatus::Ok)
            })
        });
        if !matches!(fetched.get(name), Some(Ok(_))) || blocked.is_some() {
            // Nothing runs: the earlier diff comes first.
            flush(
                &mut worker,
                pending.take(),
                &mut results,
                &mut steps,
                &print,
            );
            stack.settle()?;
        }
        let options = module_options(&tree, name);
        // Live, what the module changed (in noop its diff comes with the next module's reply).
        let mut live_paths = Vec::new();
        let status = if let Some(Err(e)) = fetched.get(name) {
            let reason = e.to_string();
            print.error(&format!("{name}: {reason}"));
            (ModuleStatus::Failed { reason }, (0, 0, 0))
        } else if let Some(req) = blocked {
            let reason = format!("requires {req}, which did not succeed");
            print.warning(&format!("{name}: skipped: {reason}"));
            (ModuleStatus::Skipped { reason }, (0, 0, 0))
        } else if let Err(e) = &options {
            let reason = e.to_string();
            print.error(&format!("{name}: {reason}"));
            (ModuleStatus::Failed { reason }, (0, 0, 0))
        } else {
            tree.set(
                &KeyPath::parse(&format!("{}/current_module", opts.node))?,
                name,
            )?;
            let this_fetched = fetched_path(name);
            let module = ModuleRun {
                opts,
                stack: &stack,
                k,
                name,
                fetched: &this_fetched,
                options: options.unwrap_or_default(),
                print: &print,
                home: &home,
            };
            let earlier = pending.take();
            let job = earlier.as_ref().map(|p| p.job.clone());
            let ahead = prepared.take().filter(|(j, _)| *j == k).map(|(_, m)| m);
            let turn = module.send(&mut worker, job, ahead);
            if turn.running() {
                // While the worker runs it, the dance lays out the next module; one whose
                // parameters cannot travel is failed when its turn comes.
                let next = order
                    .modules
                    .get(k + 1)
                    .filter(|n| matches!(fetched.get(*n), Some(Ok(_))))
                    .and_then(|n| Some((n, module_options(&tree, n).ok()?)));
                if let Some((next_name, options)) = next {
                    let next_fetched = fetched_path(next_name);
                    let next_run = ModuleRun {
                        opts,
                        stack: &stack,
                        k: k + 1,
                        name: next_name,
                        fetched: &next_fetched,
                        options,
                        print: &print,
                        home: &home,
                    };
                    prepared = Some((k + 1, next_run.prepare()));
                }
            }
            let (diffed, ran) = module.receive(&mut worker, turn);
            // The earlier module's diff is shown before anything of this one.
            if let Some(p) = earlier {
                record_diff(p, diffed, &mut results, &mut steps, &print);
            }
            print.info(&format!("Processing {name}"));
            print.module(name);
            let outcome = ran.and_then(|ran| module.finish(ran, &mut steps));
            // The earlier module's layer is free now: no root stacks on it, its diff is made.
            stack.settle()?;
            match outcome {
                // Live, the layer is merged already: the next module runs on the system.
                Ok(diffed) if !opts.noop => {
                    let diffed = diffed.unwrap_or_default();
                    live_paths = diffed.changes;
                    (ModuleStatus::Ok, diffed.summary)
                }
                Ok(_) => match stack.keep(k) {
                    Ok(()) => {
                        pending = Some(Pending {
                            index: results.len(),
                            name: name.clone(),
                            job: stack.diff_job(k, opts.timeout),
                        });
                        (ModuleStatus::Ok, (0, 0, 0))
                    }
                    Err(e) => {
                        let reason = format!("cannot keep its layer: {e}");
                        print.error(&format!("{name}: {reason}"));
                        (ModuleStatus::Failed { reason }, (0, 0, 0))
                    }
                },
                Err(e) => {
                    let reason = e.to_string();
                    print.error(&format!("{name}: {reason}"));
                    if !opts.noop && failed_live.is_none() {
                        failed_live = Some(k);
                    }
                    (ModuleStatus::Failed { reason }, (0, 0, 0))
                }
            }
        };
        print.module_done();
        results.push(ModuleResult {
            name: name.clone(),
            status: status.0,
            changes: status.1,
            paths: std::mem::take(&mut live_paths),
        });
    }

    flush(
        &mut worker,
        pending.take(),
        &mut results,
        &mut steps,
        &print,
    );
    if let Some(bar) = &print.bar {
        bar.finish_and_clear();
    }
    let ok = results.iter().all(|m| m.status == ModuleStatus::Ok);
    let report = DanceReport {
        id,
        node: opts.node.clone(),
        noop: opts.noop,
        started_unix: started_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        started_unix_ms: started_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0)),
        duration: started.elapsed(),
        modules: results,
        steps,
        ok,
    };
    // A failed live module's layer stays for `disco diff RUN`.
    if let Some(k) = failed_live {
        keep_failed_layer(&stack, k, &report)?;
    }
    report::save(&opts.state_dir, &report)?;
    if !opts.noop {
        for line in
            crate::apply::undo::prune(&opts.state_dir, &root, opts.keep_undo, opts.keep_undo_bytes)
        {
            print.info(&line);
        }
    }
    drop(worker);
    drop(stack);
    drop((lock, root_lock));
    crate::sandbox::run::prune(&opts.state_dir, crate::sandbox::KEEP_RUNS)?;
    Ok(report)
}
