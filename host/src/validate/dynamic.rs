//! The checks that run the module: through the fix-module host ([`crate::supervise::run`]), in
//! a noop sandbox (as a dance runs its scripts, `disco __sandbox SPEC -- MODULE`) unless told
//! otherwise. The host's violations become findings (rule 2 process group, rule 7 handles,
//! rule 8 result, rule 9 exit status); the result is also validated strictly (rule 8); and two
//! runs for different services at once must both end as a run alone does (rule 1).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::{Document, FixData, FixResult, Options};

use super::target::Module;
use super::Finding;
use crate::sandbox::{Sandbox, SandboxOptions, ShimConfig, Spec};
use crate::supervise::{self, FixOutcome, FixSpec, ViolationKind};

/// The services of the runs: one alone, then both at once.
const SERVICES: [&str; 2] = ["disco-validate-a", "disco-validate-b"];

/// How to run a module.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The sample ModuleOptions.
    pub options: Options,
    /// Environment variables for the module (e.g. `DISCO_CONF_DIR` for a sample configuration).
    pub env: Vec<(OsString, OsString)>,
    /// Run in a noop sandbox (needs root); without, the module runs on the live system.
    pub sandbox: bool,
    /// How long one run may take.
    pub timeout: Duration,
    /// A scratch folder for the sandboxes' layers and the lock files; removed by the caller.
    pub work_dir: PathBuf,
    /// The host the runs are for.
    pub host: String,
}

/// Why a run of the module could not be attempted; its finding says it after "cannot run it: ".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The sample request could not be written.
    #[error("cannot write the request: {0}")]
    Request(#[source] protocol::WriteError),
    /// The running disco's own path could not be found (bash modules call it).
    #[error("cannot find disco itself: {0}")]
    Exe(#[source] std::io::Error),
    /// The noop sandbox could not be prepared.
    #[error("cannot prepare the noop sandbox: {0}")]
    Sandbox(#[source] crate::sandbox::SandboxError),
    /// The sandbox's plan, just written, cannot be read back.
    #[error("cannot read the sandbox plan {}", .0.display())]
    Plan(PathBuf),
    /// The sandbox's plan could not be saved.
    #[error(transparent)]
    SavePlan(crate::sandbox::SandboxError),
    /// The script that gives the module its environment could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Wrapper {
        /// The script.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The fix-module host could not run it.
    #[error(transparent)]
    Supervise(#[from] supervise::SuperviseError),
    /// The host inside the sandbox wrote no verdict; what it said on stderr is kept.
    #[error("the host inside the sandbox did not report ({source}): {stderr}")]
    Inner {
        /// Why its output is no verdict.
        #[source]
        source: serde_json::Error,
        /// The end of its stderr, trimmed.
        stderr: String,
    },
    /// The run's thread panicked.
    #[error("the run panicked")]
    Panicked,
}

/// What one run amounted to, as the checks need it.
#[derive(Debug)]
struct Ran {
    /// The host's verdict on the outermost process.
    outcome: FixOutcome,
    /// In a sandbox with `nested`: the verdict of the host inside, which sees the module's
    /// process group and handles (the sandbox's PID 1 kills leftovers when the module exits, so
    /// the host outside cannot).
    inner: Option<Inner>,
}

/// The verdict of `disco fix --format json` run inside the sandbox.
#[derive(Debug, serde::Deserialize)]
struct Inner {
    return_code: u16,
    comment: String,
    violations: Vec<InnerViolation>,
}

#[derive(Debug, serde::Deserialize)]
struct InnerViolation {
    kind: String,
    detail: String,
}

impl Ran {
    fn return_code(&self) -> u16 {
        self.inner
            .as_ref()
            .map_or(self.outcome.return_code.value(), |i| i.return_code)
    }

    fn comment(&self) -> &str {
        self.inner
            .as_ref()
            .map_or(&self.outcome.comment, |i| &i.comment)
    }

    /// Violations as (rule, kind, detail).
    fn violations(&self) -> Vec<(&'static str, String, String)> {
        let mut all: Vec<_> = self
            .outcome
            .violations
            .iter()
            .filter(|v| self.inner.is_none() || v.kind == ViolationKind::Timeout)
            .map(|v| (rule_of(v.kind), v.kind.to_string(), v.detail.clone()))
            .collect();
        if let Some(inner) = &self.inner {
            all.extend(inner.violations.iter().map(|v| {
                let rule = match v.kind.as_str() {
                    "process_group_changed" => "2",
                    "leaked_file_handle" => "7",
                    "return_code_mismatch" => "9",
                    "compiled_module" => "3",
                    _ => "8",
                };
                (rule, v.kind.clone(), v.detail.clone())
            }));
        }
        all
    }
}

/// A script, in the scratch folder, that sets the module's environment and execs it: the host
/// inside the sandbox gives a module only `PATH` and `DISCO_*`.
fn wrapper(m: &Module, opts: &RunOptions) -> Result<PathBuf, RunError> {
    use std::os::unix::ffi::OsStrExt;
    let quote = |b: &[u8]| format!("'{}'", String::from_utf8_lossy(b).replace('\'', r"'\''"));
    let mut text = String::from(
        "#!/bin/sh
# disco validate: the module with its sample environment.
",
    );
    for (k, v) in &opts.env {
        text.push_str(&format!(
            "export {}={}\n",
            String::from_utf8_lossy(k.as_bytes()),
            quote(v.as_bytes())
        ));
    }
    text.push_str(&format!(
        "exec {}\n",
        quote(m.script.as_os_str().as_bytes())
    ));
    let path = opts.work_dir.join("module-wrapper");
    std::fs::write(&path, text)
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        })
        .map_err(|source| RunError::Wrapper {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

/// One run of the module, and what the host made of it; `Err` when it could not be attempted.
/// `nested`: in a sandbox, run `disco fix` inside around the module (for rules 2 and 7).
fn run_once(m: &Module, opts: &RunOptions, service: &str, nested: bool) -> Result<Ran, RunError> {
    let request = FixData {
        timeout: Some(opts.timeout.as_secs().max(1)),
        options: opts.options.clone(),
    }
    .to_xml()
    .map_err(RunError::Request)?;
    let exe = std::env::current_exe().map_err(RunError::Exe)?;
    let mut spec = FixSpec::new(&m.script, request, &opts.host, service);
    spec.timeout = opts.timeout;
    spec.grace = Duration::from_millis(500);
    spec.leak_timeout = Duration::from_millis(500);
    spec.lock_dir = opts.work_dir.join("locks");
    spec.env = opts.env.clone();
    // Bash modules call `disco args` and `disco result`: this disco, wherever it is installed.
    spec.env.push(("DISCO".into(), exe.clone().into()));
    let sandbox = if opts.sandbox {
        let state_dir = opts.work_dir.join(format!("state-{service}"));
        let sandbox = Sandbox::prepare(&SandboxOptions {
            root: "/".into(),
            state_dir,
            noop: true,
            shims: ShimConfig::default(),
            terminal: false,
        })
        .map_err(RunError::Sandbox)?;
        let spec_path = sandbox.run.path.join("spec.json");
        // Offer disco inside (`/dev/.disco/bin/disco`, first on PATH), as a dance does.
        let mut plan: Spec = std::fs::read(&spec_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| RunError::Plan(spec_path.clone()))?;
        plan.tools = Some(exe.clone());
        plan.save(&spec_path).map_err(RunError::SavePlan)?;
        let mut command: Vec<OsString> = vec![
            exe.clone().into(),
            "__sandbox".into(),
            spec_path.into(),
            "--".into(),
        ];
        if nested {
            let secs = opts.timeout.as_secs().max(1).to_string();
            command.extend(
                [
                    "fix",
                    "--stdin",
                    "--format",
                    "json",
                    "--lock",
                    "none",
                    "--lock-dir",
                    "/tmp/disco-validate-locks",
                    "--host",
                    &opts.host,
                    "--service",
                    service,
                    "--timeout",
                    &secs,
                    "--grace",
                    "500",
                    "--leak-timeout",
                    "500",
                ]
                .map(OsString::from),
            );
            command.insert(4, exe.into());
            command.push(wrapper(m, opts)?.into());
            // The inner host's JSON, not a SurvivorFixResult, is what comes out.
            spec.plain_output = true;
        } else {
            command.push(m.script.clone().into());
        }
        spec.command = Some(command);
        Some(sandbox)
    } else {
        None
    };
    let nested = nested && sandbox.is_some();
    let outcome = supervise::run(&spec);
    if let Some(sandbox) = sandbox {
        // Nothing of a validation run is kept: not the latest run for `disco diff`.
        let path = sandbox.run.path.clone();
        drop(sandbox);
        let _ = std::fs::remove_dir_all(path);
    }
    let outcome = outcome?;
    let inner = if nested && !outcome.timed_out {
        Some(
            serde_json::from_slice(&outcome.stdout).map_err(|source| RunError::Inner {
                source,
                stderr: outcome.stderr_tail.trim().to_owned(),
            })?,
        )
    } else {
        None
    };
    Ok(Ran { outcome, inner })
}

/// The rule each host violation breaks.
fn rule_of(kind: ViolationKind) -> &'static str {
    match kind {
        ViolationKind::ProcessGroupChanged => "2",
        ViolationKind::CompiledModule => "3",
        ViolationKind::LeakedFileHandle => "7",
        ViolationKind::ReturnCodeMismatch => "9",
        // No result in time, an unreadable one, one out of range, or one buried in output.
        _ => "8",
    }
}

/// Findings of one run.
fn findings_of(outcome: &FixOutcome, place: &Path) -> Vec<Finding> {
    let mut findings: Vec<Finding> = outcome
        .violations
        .iter()
        .map(|v| {
            Finding::new(
                rule_of(v.kind),
                format!("{}: {}", v.kind, v.detail),
                place.display(),
            )
        })
        .collect();
    let unreadable = outcome.has(ViolationKind::InvalidResult) || outcome.timed_out;
    if !unreadable {
        // The host reads leniently; authors get the strict verdict.
        match FixResult::validate(&outcome.stdout) {
            Ok(result) if !result.return_code.fix_module_may_return() => {
                findings.push(Finding::new(
                    "8",
                    format!(
                        "ReturnCode {} is not a fix module's to return (0, 1, 4 or 20..=1000)",
                        result.return_code.value()
                    ),
                    place.display(),
                ))
            }
            Ok(_) => {}
            Err(invalid) => findings.extend(invalid.lines().into_iter().map(|line| {
                Finding::new("8", format!("SurvivorFixResult: {line}"), place.display())
            })),
        }
    }
    findings
}

/// Runs the module alone, then twice at once for different services, and says what is wrong.
pub fn check(m: &Module, opts: &RunOptions) -> Vec<Finding> {
    let place = m.script.as_path();
    let alone = match run_once(m, opts, SERVICES[0], false) {
        Ok(r) => r.outcome,
        Err(why) => {
            return vec![Finding::new(
                "8",
                format!("cannot run it: {why}"),
                place.display(),
            )]
        }
    };
    crate::output::info(&format!(
        "run: ReturnCode {} ({}) in {} ms: {}",
        alone.return_code.value(),
        alone.return_code.name().unwrap_or("custom"),
        alone.duration.as_millis(),
        alone.comment.replace('\n', " ")
    ));
    // Rules 8 and 9 from the module's own stdout and exit status.
    let mut findings = findings_of(&alone, place);
    let seen: Vec<String> = alone
        .violations
        .iter()
        .map(|v| v.kind.to_string())
        .collect();

    // Rule 1: reentrant for different services on one host (or declares the lock it needs,
    // which the host then holds, so the runs take turns). In a sandbox these runs have a host
    // inside, which also sees rules 2 and 7.
    let both = std::thread::scope(|s| {
        let runs: Vec<_> = SERVICES
            .iter()
            .map(|service| s.spawn(move || run_once(m, opts, service, true)))
            .collect();
        runs.into_iter()
            .map(|h| h.join().unwrap_or(Err(RunError::Panicked)))
            .collect::<Vec<_>>()
    });
    let mut reported: Vec<String> = Vec::new();
    for (service, ran) in SERVICES.iter().zip(both) {
        let ran = match ran {
            Ok(r) => r,
            Err(why) => {
                findings.push(Finding::new(
                    "1",
                    format!("cannot run it twice at once: {why}"),
                    place.display(),
                ));
                continue;
            }
        };
        for (rule, kind, detail) in ran.violations() {
            if rule != "8" && rule != "9" && !seen.contains(&kind) && !reported.contains(&kind) {
                findings.push(Finding::new(
                    rule,
                    format!("{kind}: {detail}"),
                    place.display(),
                ));
                reported.push(kind);
            }
        }
        if ran.return_code() != alone.return_code.value() {
            findings.push(Finding::new(
                "1",
                format!(
                    "not reentrant: the run for {service}, at the same time as another service's, \
                     ended with ReturnCode {} ({}) where a run alone gave {}; declare \
                     '# survivor-lock: host' or 'service' if it needs a lock",
                    ran.return_code(),
                    ran.comment().replace('\n', " "),
                    alone.return_code.value()
                ),
                place.display(),
            ));
        }
    }
    findings
}
