//! A module's pieces, run by the fix-module host inside the module's root in the dance's
//! sandbox (see `worker`): its templates in a throwaway root, then its files and rendered
//! templates delivered and each script in name order in the module's own root.
//!
//! Each piece's result goes to `report` as soon as it is known, in the order the pieces ran;
//! the runner sends it on (`sandbox::wire::Record::Piece`) to a file of the host's, on a
//! descriptor opened before the process entered the root and closed on exec: scripts neither
//! inherit it nor can reach the file, so they cannot forge or erase results.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::report::{SelfUsage, Step, Usage};
use crate::sandbox::connect::Watcher;
use crate::supervise::{FixSpec, LockLevel, Supervisor};

/// One script of the plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Script {
    /// Its name (`00-hello.sh`).
    pub item: String,
    /// Its path inside the sandbox.
    pub file: PathBuf,
    /// The command line that runs it inside.
    pub argv: Vec<String>,
}

/// One template of the plan: run like a script, its stdout becomes the file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Template {
    /// Its path relative to `templates/` (and the rendered file's, relative to `/`).
    pub item: String,
    /// Its path inside the sandbox.
    pub file: PathBuf,
    /// The command line that runs it inside.
    pub argv: Vec<String>,
}

/// What the runner inside a module's sandbox does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// The module.
    pub module: String,
    /// The node.
    pub node: String,
    /// Whether this is a noop dance.
    pub noop: bool,
    /// How long one script may take.
    pub timeout: Duration,
    /// The SurvivorFixData each script gets.
    pub request: Vec<u8>,
    /// The templates, in order (rendered first, in their own throwaway root).
    #[serde(default)]
    pub templates: Vec<Template>,
    /// Trees to deliver onto `/`, in order.
    pub deliver: Vec<PathBuf>,
    /// The scripts, in order.
    pub scripts: Vec<Script>,
    /// `HOME` for every piece: root's home in the target's user database (left unset, bash
    /// would look it up in that database at every start).
    #[serde(default)]
    pub home: PathBuf,
}

/// What one piece did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PieceResult {
    /// The measured step.
    pub step: Step,
    /// What it printed on stdout (a plain script's output).
    pub stdout: String,
    /// The end of what it printed on stderr.
    pub stderr: String,
    /// The rules it broke, one `kind: detail` each.
    pub warnings: Vec<String>,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// A template's rendered output (its whole stdout, bytes as they came).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Vec<u8>>,
}

/// Where each piece's result goes, as soon as it is known.
pub type Report<'a> = dyn FnMut(PieceResult) -> std::io::Result<()> + 'a;

/// The environment every piece of `plan` gets from the host (on top of `PATH` and the
/// host's own), `noop` as the piece runs.
fn piece_env(plan: &Plan, noop: bool, real_path: &OsStr) -> Vec<(OsString, OsString)> {
    vec![
        ("DISCO_MODULE".into(), plan.module.clone().into()),
        ("DISCO_NODE".into(), plan.node.clone().into()),
        (
            "DISCO_PARAMETERS".into(),
            format!("{}/parameters", crate::sandbox::paths::DISCO_DIR).into(),
        ),
        ("NOOP".into(), if noop { "true" } else { "false" }.into()),
        ("DISCO_REAL_PATH".into(), real_path.to_owned()),
        ("HOME".into(), plan.home.clone().into()),
    ]
}

/// Root's home folder in `root`'s `/etc/passwd`, `/` when it says nothing.
pub fn root_home(root: &Path) -> PathBuf {
    std::fs::read_to_string(root.join("etc/passwd"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.len() >= 6 && fields[2] == "0").then(|| PathBuf::from(fields[5]))
            })
        })
        .filter(|home| home.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Runs one script or template through the host and describes how it went.
fn run_piece(
    (plan, supervisor): (&Plan, &Supervisor),
    step: &str,
    item: &str,
    file: &Path,
    argv: &[String],
    env: Vec<(OsString, OsString)>,
    keep_output: bool,
) -> PieceResult {
    let mut spec = FixSpec::new(file, plan.request.clone(), &plan.node, &plan.module);
    spec.command = Some(argv.iter().map(Into::into).collect());
    spec.plain_output = true;
    spec.timeout = plan.timeout;
    spec.lock = LockLevel::None;
    spec.lock_dir = PathBuf::from(crate::sandbox::paths::LOCK_DIR);
    spec.env = env;
    match supervisor.run(&spec) {
        Ok(outcome) => {
            let step = Step::from_fix(&plan.module, step, Some(item.to_owned()), &outcome);
            let failure = (!step.ok).then(|| {
                format!(
                    "{} {item} failed: {}",
                    step.step,
                    super::report::describe_failure(&outcome)
                )
            });
            // A template's output is the file, bytes as they came; the user is not shown it.
            let output = (keep_output && failure.is_none()).then(|| outcome.stdout.clone());
            PieceResult {
                step,
                stdout: if keep_output {
                    String::new()
                } else {
                    String::from_utf8_lossy(&outcome.stdout).into_owned()
                },
                stderr: outcome.stderr_tail.clone(),
                warnings: outcome
                    .violations
                    .iter()
                    .map(|v| format!("{}: {}", v.kind, v.detail))
                    .collect(),
                failure,
                output,
            }
        }
        Err(e) => PieceResult {
            step: Step::new(
                &plan.module,
                step,
                Some(item.to_owned()),
                Usage::default(),
                false,
            ),
            stdout: String::new(),
            stderr: String::new(),
            warnings: Vec::new(),
            failure: Some(format!("{step} {item} failed: {e}")),
            output: None,
        },
    }
}

/// Renders the plan's templates (always in noop), each result with its output to
/// `report`; stops at the first that fails.
pub fn run_templates(
    plan: &Plan,
    report: &mut Report<'_>,
    real_path: &OsStr,
    connects: Option<&Watcher>,
    supervisor: &Supervisor,
) -> std::io::Result<()> {
    for t in &plan.templates {
        let mut r = run_piece(
            (plan, supervisor),
            "template",
            &t.item,
            &t.file,
            &t.argv,
            piece_env(plan, true, real_path),
            true,
        );
        r.step.would_connect = connects.map(Watcher::take).unwrap_or_default();
        let stop = r.failure.is_some();
        report(r)?;
        if stop {
            break;
        }
    }
    Ok(())
}

/// Delivers the plan's files and runs its scripts, each result to `report`; stops at the
/// first piece that fails. In noop, `connects` says which connections each piece attempted.
pub fn run_pieces(
    plan: &Plan,
    report: &mut Report<'_>,
    real_path: &OsStr,
    connects: Option<&Watcher>,
    supervisor: &Supervisor,
) -> std::io::Result<()> {
    let sources: Vec<&PathBuf> = plan.deliver.iter().filter(|p| p.is_dir()).collect();
    if !sources.is_empty() {
        let start = SelfUsage::now();
        let mut failure = None;
        for src in &sources {
            if let Err(e) = super::deliver::deliver(src, Path::new("/")) {
                failure = Some(format!("files failed: {e}"));
                break;
            }
        }
        let item = sources
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(",");
        let step = Step::new(
            &plan.module,
            "files",
            Some(item),
            Usage::of_self_since(start),
            failure.is_none(),
        );
        let stop = failure.is_some();
        report(PieceResult {
            step,
            stdout: String::new(),
            stderr: String::new(),
            warnings: Vec::new(),
            failure,
            output: None,
        })?;
        if stop {
            return Ok(());
        }
    }
    for script in &plan.scripts {
        let mut result = run_piece(
            (plan, supervisor),
            "exec",
            &script.item,
            &script.file,
            &script.argv,
            piece_env(plan, plan.noop, real_path),
            false,
        );
        result.step.would_connect = connects.map(Watcher::take).unwrap_or_default();
        let stop = result.failure.is_some();
        report(result)?;
        if stop {
            break;
        }
    }
    Ok(())
}
