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

/// The command line that runs a script inside: by its `#!` line when it has one (through
/// the interpreter it names, when the file is not executable: modules are run from their
/// source as fetched, read-only, whatever their modes), else with bash (disco scripts are
/// bash).
pub fn script_argv(host_file: &Path, inside: &Path) -> Vec<OsString> {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    let mut first = Vec::new();
    let read = std::fs::File::open(host_file)
        .map(std::io::BufReader::new)
        .and_then(|mut f| f.read_until(b'\n', &mut first));
    if read.is_err() || !first.starts_with(b"#!") {
        return vec!["bash".into(), inside.into()];
    }
    let executable =
        std::fs::metadata(host_file).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
    if executable {
        return vec![inside.into()];
    }
    // As the kernel reads it: the interpreter, then at most one argument, the rest of the line.
    let line = String::from_utf8_lossy(&first[2..]);
    let line = line.trim();
    let (interpreter, arg) = match line.split_once([' ', '\t']) {
        Some((i, a)) => (i, Some(a.trim())),
        None => (line, None),
    };
    if interpreter.is_empty() {
        return vec!["bash".into(), inside.into()];
    }
    let mut argv: Vec<OsString> = vec![interpreter.into()];
    argv.extend(arg.filter(|a| !a.is_empty()).map(OsString::from));
    argv.push(inside.into());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn scripts_run_by_their_interpreter_line_whatever_their_mode() {
        let dir = std::env::temp_dir().join(format!("disco-argv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s");
        let inside = Path::new("/var/disco/modules/m/scripts/s");
        let argv = |text: &str, mode: u32| {
            std::fs::write(&file, text).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            script_argv(&file, inside)
                .into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        let s = inside.display().to_string();
        assert_eq!(argv("#!/bin/sh\necho\n", 0o755), [s.as_str()]);
        assert_eq!(argv("#!/bin/sh\necho\n", 0o644), ["/bin/sh", &s]);
        assert_eq!(
            argv("#! /usr/bin/env perl -w\n", 0o644),
            ["/usr/bin/env", "perl -w", &s]
        );
        assert_eq!(argv("echo plain\n", 0o755), ["bash", &s]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
