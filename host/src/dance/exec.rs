//! Running one piece of a module (a script, a template, a delivery of files) in the module's
//! sandbox through the fix-module host, so every piece gets the same timeout, output bounds,
//! leak detection and resource accounting as a fix.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::{Document, FixData, Options};

use crate::supervise::{self, FixOutcome, FixSpec, LockLevel};

use super::layers::DISCO_DIR;
use super::DanceError;

/// One piece of work for the host.
#[derive(Debug)]
pub struct Job<'a> {
    /// The module it belongs to (the fix's service).
    pub module: &'a str,
    /// The node (the fix's host).
    pub node: &'a str,
    /// The sandbox to run it in; `None` runs it on the live system (a deferred command).
    pub spec: Option<&'a Path>,
    /// The file on the host side, which the host inspects (rule 3, lock header).
    pub file: PathBuf,
    /// The command line inside the sandbox.
    pub argv: Vec<OsString>,
    /// The module's parameters, passed as ModuleOptions.
    pub options: &'a Options,
    /// Whether this is a noop dance.
    pub noop: bool,
    /// How long it may take.
    pub timeout: Duration,
    /// disco's own executable (a delivery), not a module's script.
    pub internal: bool,
}

/// The SurvivorFixData a module's pieces get: its parameters as ModuleOptions.
pub fn request(module: &str, options: &Options, timeout: Duration) -> Result<Vec<u8>, DanceError> {
    FixData {
        timeout: Some(timeout.as_secs().max(1)),
        options: options.clone(),
    }
    .to_xml()
    .map_err(|e| DanceError::Request {
        module: module.to_owned(),
        source: e,
    })
}

/// Runs `job` and returns what the host decided.
pub fn run(job: Job<'_>, state_dir: &Path) -> Result<FixOutcome, DanceError> {
    let request = request(job.module, job.options, job.timeout)?;
    let exe = std::env::current_exe().map_err(|source| DanceError::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    let mut command: Vec<OsString> = match job.spec {
        Some(spec) => vec![exe.into(), "__sandbox".into(), spec.into(), "--".into()],
        None => Vec::new(),
    };
    command.extend(job.argv);
    let mut spec = FixSpec::new(job.file, request, job.node, job.module);
    spec.command = Some(command);
    spec.plain_output = true;
    spec.allow_compiled = job.internal;
    spec.timeout = job.timeout;
    // The dance lock already keeps dances apart; module pieces run one at a time.
    spec.lock = LockLevel::None;
    spec.lock_dir = state_dir.join("locks");
    spec.env = vec![
        ("DISCO_MODULE".into(), job.module.into()),
        ("DISCO_NODE".into(), job.node.into()),
        (
            "DISCO_PARAMETERS".into(),
            format!("{DISCO_DIR}/parameters").into(),
        ),
        (
            "NOOP".into(),
            if job.noop { "true" } else { "false" }.into(),
        ),
    ];
    supervise::run(&spec).map_err(|e| DanceError::Host {
        module: job.module.to_owned(),
        source: e,
    })
}

/// The command line that runs a script inside: by its `#!` line when it has one, else with
/// bash (disco scripts are bash).
pub fn script_argv(host_file: &Path, inside: &Path) -> Vec<OsString> {
    let shebang = std::fs::File::open(host_file)
        .and_then(|mut f| {
            let mut head = [0u8; 2];
            std::io::Read::read_exact(&mut f, &mut head).map(|_| head == *b"#!")
        })
        .unwrap_or(false);
    if shebang {
        vec![inside.into()]
    } else {
        vec!["bash".into(), inside.into()]
    }
}
