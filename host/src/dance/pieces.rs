//! A module's pieces run inside one sandbox: its files and rendered templates delivered, then
//! each script in name order through the fix-module host, which runs inside the sandbox too
//! (`disco __pieces PLAN`). One sandbox per module instead of one per piece: the set-up and
//! tear-down of namespaces and mounts is most of what a small script costs.
//!
//! The plan comes in through the disco layer; each piece's result goes out as one JSON line to
//! a file of the host's, on the descriptor named by [`RESULTS_FD`], in the order the pieces
//! ran (a descriptor that scripts do not inherit, so they cannot forge or erase results).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::report::{SelfUsage, Step, Usage};
use crate::supervise::{self, FixSpec, LockLevel};

pub use crate::sandbox::enter::RESULTS_FD;

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
    /// Trees to deliver onto `/`, in order.
    pub deliver: Vec<PathBuf>,
    /// The scripts, in order.
    pub scripts: Vec<Script>,
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
}

fn emit(results: &mut std::fs::File, r: &PieceResult) -> Result<(), String> {
    let line = serde_json::to_string(r).map_err(|e| e.to_string())?;
    writeln!(results, "{line}").map_err(|e| format!("results: {e}"))
}

/// Runs a plan inside the sandbox; stops at the first piece that fails.
pub fn run_inside(plan: &Plan) -> Result<(), String> {
    let fd: i32 = std::env::var(RESULTS_FD)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{RESULTS_FD} is not set: run by the dance only"))?;
    let mut results =
        crate::sys::inherited_file(fd).map_err(|e| format!("{RESULTS_FD}={fd}: {e}"))?;
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
        emit(
            &mut results,
            &PieceResult {
                step,
                stdout: String::new(),
                stderr: String::new(),
                warnings: Vec::new(),
                failure,
            },
        )?;
        if stop {
            return Ok(());
        }
    }
    for script in &plan.scripts {
        let mut spec = FixSpec::new(&script.file, plan.request.clone(), &plan.node, &plan.module);
        spec.command = Some(script.argv.iter().map(Into::into).collect());
        spec.plain_output = true;
        spec.timeout = plan.timeout;
        spec.lock = LockLevel::None;
        spec.lock_dir = PathBuf::from("/dev/.disco/locks");
        spec.env = vec![
            ("DISCO_MODULE".into(), plan.module.clone().into()),
            ("DISCO_NODE".into(), plan.node.clone().into()),
            (
                "DISCO_PARAMETERS".into(),
                format!("{}/parameters", super::layers::DISCO_DIR).into(),
            ),
            (
                "NOOP".into(),
                if plan.noop { "true" } else { "false" }.into(),
            ),
        ];
        let result = match supervise::run(&spec) {
            Ok(outcome) => {
                let step =
                    Step::from_fix(&plan.module, "exec", Some(script.item.clone()), &outcome);
                let failure = (!step.ok).then(|| {
                    let mut s = format!(
                        "exec {} failed: ReturnCode {}",
                        script.item, outcome.return_code
                    );
                    if !outcome.comment.is_empty() {
                        s.push_str(&format!(": {}", outcome.comment));
                    }
                    s
                });
                PieceResult {
                    step,
                    stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
                    stderr: outcome.stderr_tail.clone(),
                    warnings: outcome
                        .violations
                        .iter()
                        .map(|v| format!("{}: {}", v.kind, v.detail))
                        .collect(),
                    failure,
                }
            }
            Err(e) => PieceResult {
                step: Step::new(
                    &plan.module,
                    "exec",
                    Some(script.item.clone()),
                    Usage::default(),
                    false,
                ),
                stdout: String::new(),
                stderr: String::new(),
                warnings: Vec::new(),
                failure: Some(format!("exec {} failed: {e}", script.item)),
            },
        };
        let stop = result.failure.is_some();
        emit(&mut results, &result)?;
        if stop {
            break;
        }
    }
    Ok(())
}
