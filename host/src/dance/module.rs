//! One module's turn in a dance: laid out (`prepare`: its folders, plan and request, while the
//! module before it runs), sent to the dance's sandbox, its reply shown and recorded as it
//! came, piece by piece (`finish`); live, then merged (`live`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use protocol::Options;

use super::exec;
use super::layers::{Stack, DISCO_DIR};
use super::pieces::{Plan, Script, Template};
use super::progress::Printer;
use super::report::Step;
use super::run::DanceOptions;
use super::sandbox::{DiffJob, Diffed, ModuleRequest, Ran, Reply, Request, Worker, WorkerError};
use super::DanceError;
use crate::params::{KeyPath, Tree};
use crate::supervise::FixOutcome;

/// Why a module failed: its status in the report says it in these words.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    /// Its folders, layers or request could not be laid out.
    #[error("{0}")]
    Layout(#[source] Box<DanceError>),
    /// The dance's sandbox could not run it (shared with the earlier module's diff, which
    /// the same reply carried).
    #[error(transparent)]
    Worker(Arc<WorkerError>),
    /// A piece (a template, the delivery, a script, a deferred command) failed: its own words.
    #[error("{0}")]
    Piece(String),
    /// A piece failed, and said nothing more.
    #[error("a piece failed")]
    PieceFailed,
    /// The sandbox failed while it ran the module (not a piece).
    #[error("its sandbox failed: {0}")]
    Sandbox(String),
    /// A line of the deferred commands' record cannot be read.
    #[error("deferred command {line}: {source}")]
    DeferredRecord {
        /// The line.
        line: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The merge failed.
    #[error("merge failed: {0}")]
    Merge(#[source] crate::apply::ApplyError),
    /// A deferred command could not be run at all, or the journal could not be removed.
    #[error(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    /// The merge went through, but a deferred command failed.
    #[error("merged, but {0}")]
    Deferred(#[source] Box<ModuleError>),
}

impl ModuleError {
    fn layout(e: DanceError) -> ModuleError {
        ModuleError::Layout(Box::new(e))
    }
}

/// Why an earlier module's diff did not come back: its status in the report says it, after
/// "its diff failed: ".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EarlierDiffError {
    /// The sandbox could not make it.
    #[error(transparent)]
    Sandbox(#[from] super::sandbox::DiffFailed),
    /// The dance's sandbox failed before it replied.
    #[error(transparent)]
    Worker(Arc<WorkerError>),
    /// The reply carried no diff, though one was asked for.
    #[error("no diff came back")]
    NoneCameBack,
}

/// An earlier module's diff, if one was asked for, or why it did not come back.
pub(super) type EarlierDiff = Option<Result<Diffed, EarlierDiffError>>;

/// The earlier diff a reply carried, or why it did not come back; `reply` is the worker's
/// answer to a request that asked for one.
pub(super) fn earlier_of(reply: Result<Reply, WorkerError>) -> EarlierDiff {
    match reply {
        Ok(r) => r.earlier.map(|d| d.map_err(EarlierDiffError::from)),
        Err(e) => Some(Err(EarlierDiffError::Worker(Arc::new(e)))),
    }
}

/// The module's parameters (`MODULE/...` of the merged tree) as ModuleOptions: each value's
/// path below the module, with `.` for `/` (option names have no `/`). A value the protocol
/// cannot carry (a NUL byte, a character XML 1.0 forbids), or one that cannot be read, fails
/// the module with an error naming the parameter: never a request with options missing.
pub(super) fn module_options(tree: &Tree, module: &str) -> Result<Options, DanceError> {
    let mut options = Options::new();
    let Ok(key) = KeyPath::parse(module) else {
        return Ok(options);
    };
    let entries = match tree.dump(Some(&key)) {
        Ok(entries) => entries,
        Err(crate::params::ParamError::NotFound { .. }) => return Ok(options),
        Err(e) => {
            return Err(DanceError::ParameterUnreadable {
                key: module.to_owned(),
                source: e,
            })
        }
    };
    for (path, value) in entries {
        if let (Some(value), Some(rel)) = (value, path.strip_prefix(&format!("{module}/"))) {
            if let Some(bad) = value.chars().find(|c| !protocol::is_xml_char(*c)) {
                return Err(DanceError::Uncarriable {
                    key: path.clone(),
                    bad,
                });
            }
            options.push(rel.replace('/', "."), value);
        }
    }
    Ok(options)
}

/// Relative paths of the regular files under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(base, &path, out),
                Ok(t) if t.is_file() => {
                    if let Ok(rel) = path.strip_prefix(base) {
                        out.push(rel.to_path_buf());
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// One module's pieces, in order; returns why it failed, if it did.
pub(super) struct ModuleRun<'a> {
    pub(super) opts: &'a DanceOptions,
    pub(super) stack: &'a Stack,
    pub(super) k: usize,
    pub(super) name: &'a str,
    pub(super) fetched: &'a Path,
    pub(super) options: Options,
    pub(super) print: &'a Printer,
    /// `HOME` for the module's pieces.
    pub(super) home: &'a Path,
}

impl ModuleRun<'_> {
    pub(super) fn inside(&self, rel: &Path) -> PathBuf {
        Path::new(DISCO_DIR)
            .join("modules")
            .join(self.name)
            .join(rel)
    }

    /// Records what the host decided of a piece and prints what it printed.
    pub(super) fn record(
        &self,
        steps: &mut Vec<Step>,
        step: &str,
        item: Option<String>,
        outcome: FixOutcome,
        show_stdout: bool,
    ) -> Result<FixOutcome, ModuleError> {
        if show_stdout {
            self.print.raw(&outcome.stdout);
        }
        self.print.raw(outcome.stderr_tail.as_bytes());
        for v in &outcome.violations {
            self.print
                .warning(&format!("{}: {}: {}", self.name, v.kind, v.detail));
        }
        let recorded = Step::from_fix(self.name, step, item.clone(), &outcome);
        let ok = recorded.ok;
        steps.push(recorded);
        if ok {
            Ok(outcome)
        } else {
            Err(ModuleError::Piece(format!(
                "{step} {} failed: {}",
                item.unwrap_or_default(),
                super::report::describe_failure(&outcome)
            )))
        }
    }

    /// What the worker needs to run the module.
    pub(super) fn prepare(&self) -> Result<ModuleRequest, ModuleError> {
        // The module's scratch layers exist from here on, even when nothing runs in them.
        let layers = self
            .stack
            .module_layers(self.k, self.opts.noop)
            .map_err(ModuleError::layout)?;
        // The fetched module itself appears, read-only, at /var/disco/modules/NAME.
        let staged = self.fetched;
        let rendered = (
            self.stack.module_dir(self.k).join("rendered"),
            Path::new(DISCO_DIR).join("rendered").join(self.name),
        );
        // Templates render in a throwaway root that shows the module's files as if delivered;
        // their output keeps the template's mode.
        let mut templates = Vec::new();
        let mut modes = Vec::new();
        for rel in files_under(&staged.join("templates")) {
            use std::os::unix::fs::PermissionsExt;
            let item = rel.display().to_string();
            let mode = std::fs::metadata(staged.join("templates").join(&rel))
                .map(|m| m.permissions().mode())
                .unwrap_or(0o644);
            modes.push((item.clone(), mode));
            let file = self.inside(&Path::new("templates").join(&rel));
            templates.push(Template {
                item,
                argv: vec!["bash".into(), file.display().to_string()],
                file,
            });
        }
        let template_layers = if templates.is_empty() {
            None
        } else {
            Some(
                self.stack
                    .template_layers(self.k, &self.fetched.join("files"))
                    .map_err(ModuleError::layout)?,
            )
        };
        // Then the module's own root: files and rendered templates delivered, scripts run.
        // Anything in files/ is delivered: a lone symlink or an empty folder too.
        let has_files = std::fs::read_dir(staged.join("files"))
            .is_ok_and(|mut entries| entries.next().is_some());
        let mut deliver: Vec<PathBuf> = Vec::new();
        if has_files {
            deliver.push(self.inside(Path::new("files")));
        }
        if !templates.is_empty() {
            deliver.push(rendered.1.clone());
        }
        let scripts: Vec<Script> = files_under(&staged.join("scripts"))
            .into_iter()
            .map(|rel| {
                let file = self.inside(&Path::new("scripts").join(&rel));
                let argv = exec::script_argv(&staged.join("scripts").join(&rel), &file)
                    .into_iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                Script {
                    item: rel.display().to_string(),
                    file,
                    argv,
                }
            })
            .collect();
        Ok(ModuleRequest {
            plan: Plan {
                module: self.name.to_owned(),
                node: self.opts.node.clone(),
                noop: self.opts.noop,
                timeout: self.opts.timeout,
                request: exec::request(self.name, &self.options, self.opts.timeout)
                    .map_err(ModuleError::layout)?,
                templates,
                deliver,
                scripts,
                home: self.home.to_path_buf(),
            },
            dir: self.stack.module_dir(self.k),
            template_layers,
            rendered,
            module: (staged.to_path_buf(), self.inside(Path::new(""))),
            modes,
            results: self.stack.results(self.k),
            defer: (!self.opts.noop).then(|| self.stack.deferred(self.k)),
            // Live, the merge needs the diff at once; in noop it is made while the next
            // module runs.
            diff: (!self.opts.noop).then(|| self.stack.diff_job(self.k, self.opts.timeout)),
            layers,
        })
    }

    /// Sends the module to the dance's sandbox, with `earlier` (an earlier module's diff, made
    /// beside it); `prepared` is its layout, when it was made while the module before ran.
    /// A module that cannot be laid out is not sent: the earlier diff is asked for alone.
    pub(super) fn send(
        &self,
        worker: &mut Worker,
        earlier: Option<DiffJob>,
        prepared: Option<Result<ModuleRequest, ModuleError>>,
    ) -> Turn {
        let mut module = match prepared.unwrap_or_else(|| self.prepare()) {
            Ok(module) => module,
            Err(error) => {
                let reply = worker.run(&Request {
                    module: None,
                    earlier,
                });
                let earlier = earlier_of(reply);
                return Turn::NotSent {
                    earlier: Box::new(earlier),
                    error: Box::new(error),
                };
            }
        };
        // Laid out perhaps while the module before ran: stacked on what it left now.
        self.stack.restack(&mut module.layers);
        if let Some(t) = module.template_layers.as_mut() {
            self.stack.restack(t);
        }
        if module.diff.is_some() {
            module.diff = Some(self.stack.diff_job(self.k, self.opts.timeout));
        }
        let request = Request {
            module: Some(module),
            earlier,
        };
        let asked = request.earlier.is_some();
        match worker.send(&request) {
            Ok(limit) => Turn::Sent { limit, asked },
            Err(e) => {
                let e = Arc::new(e);
                Turn::NotSent {
                    earlier: Box::new(asked.then(|| Err(EarlierDiffError::Worker(e.clone())))),
                    error: Box::new(ModuleError::Worker(e)),
                }
            }
        }
    }

    /// Waits for the reply to [`ModuleRun::send`]: the earlier module's diff (to show before
    /// anything of this one), and how this one ran.
    pub(super) fn receive(
        &self,
        worker: &mut Worker,
        turn: Turn,
    ) -> (EarlierDiff, Result<Ran, ModuleError>) {
        match turn {
            Turn::NotSent { earlier, error } => (*earlier, Err(*error)),
            Turn::Sent { limit, asked } => match worker.receive(limit) {
                Ok(reply) => (
                    reply.earlier.map(|d| d.map_err(EarlierDiffError::from)),
                    Ok(reply.module.unwrap_or_default()),
                ),
                Err(e) => {
                    let e = Arc::new(e);
                    (
                        asked.then(|| Err(EarlierDiffError::Worker(e.clone()))),
                        Err(ModuleError::Worker(e)),
                    )
                }
            },
        }
    }

    /// Shows and records how the module ran, piece by piece as each reported; live, merges
    /// it. Returns its changes when its diff was made (live), `None` when it comes with a
    /// later request (noop).
    pub(super) fn finish(
        &self,
        ran: Ran,
        steps: &mut Vec<Step>,
    ) -> Result<Option<Diffed>, ModuleError> {
        // Each piece as it reported, in order; the first failure fails the module.
        for piece in ran.pieces {
            self.print.raw(piece.stdout.as_bytes());
            self.print.raw(piece.stderr.as_bytes());
            for w in &piece.warnings {
                self.print.warning(&format!("{}: {w}", self.name));
            }
            // With `--network outbound` the connections are made: said as such.
            let connects = if self.opts.network == Some(crate::sandbox::Network::Outbound) {
                "Connects"
            } else {
                "Would connect"
            };
            for address in &piece.step.would_connect {
                self.print.warning(&format!("{connects} : {address}"));
            }
            steps.push(piece.step);
            if let Some(failure) = piece.failure {
                return Err(ModuleError::Piece(failure));
            }
        }
        if let Some(e) = ran.error {
            return Err(ModuleError::Sandbox(e));
        }
        if ran.failed {
            return Err(ModuleError::PieceFailed);
        }
        let Some(diff) = ran.diff else {
            return Ok(None);
        };
        steps.push(Step::new(self.name, "diff", None, diff.usage, true));
        self.print.raw(diff.diff.as_bytes());
        if !self.opts.noop {
            self.merge(steps)?;
        }
        Ok(Some(diff))
    }
}

/// A module's turn in the dance's sandbox, between [`ModuleRun::send`] and
/// [`ModuleRun::receive`] (meanwhile the dance lays out the next module).
pub(super) enum Turn {
    /// The module runs: its reply may take `limit`; `asked` says an earlier diff comes with it.
    Sent {
        /// How long the reply may take.
        limit: Duration,
        /// Whether an earlier module's diff was asked for too.
        asked: bool,
    },
    /// The module could not be laid out or sent: the earlier diff, if any was asked for.
    NotSent {
        /// The earlier module's diff, or why it could not be made.
        earlier: Box<EarlierDiff>,
        /// Why the module fails.
        error: Box<ModuleError>,
    },
}

impl Turn {
    /// Whether the module is running in the sandbox now.
    pub(super) fn running(&self) -> bool {
        matches!(self, Turn::Sent { .. })
    }
}
