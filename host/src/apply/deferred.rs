//! Deferred service commands: recorded by a live module's shims, run for real after its merge,
//! and kept in the merge's journal until they ran, so that a crash between the merge and them
//! does not leave a service running on its old configuration.
//!
//! One path runs them, after an uninterrupted dance and after a replay alike: the same
//! request (the module's parameters as ModuleOptions), the same environment as the module's
//! scripts (`DISCO_*`, `NOOP=false`), and the dance's own timeout, all kept in the journal.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::Options;
use serde::{Deserialize, Serialize};

use super::ApplyError;
use crate::supervise::{self, FixOutcome, FixSpec, LockLevel};

/// A module's deferred commands and what they run with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferred {
    /// The commands, in order, each as words.
    pub commands: Vec<Vec<String>>,
    /// The module's parameters, as name and values.
    pub options: Vec<(String, Vec<String>)>,
    /// How long each may take, in milliseconds: the dance's `--timeout`.
    pub timeout_ms: u64,
}

impl Deferred {
    /// `commands` with the module's `options` and the dance's `timeout`.
    pub fn new(commands: Vec<Vec<String>>, options: &Options, timeout: Duration) -> Deferred {
        Deferred {
            commands,
            options: options
                .iter()
                .map(|o| (o.name.clone(), o.values.clone()))
                .collect(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn options(&self) -> Options {
        let mut options = Options::new();
        for (name, values) in &self.options {
            for v in values {
                options.push(name.clone(), v.clone());
            }
        }
        options
    }

    /// How long each command may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1000))
    }
}

/// The command line that runs a deferred command for real in `root` (chrooted when the root
/// is not `/`), and the file the host inspects: the program as found in the root's `PATH`.
pub fn argv(root: &Path, words: &[String]) -> Option<(PathBuf, Vec<OsString>)> {
    let program = words.first()?;
    let found = if program.contains('/') {
        Some(root.join(program.trim_start_matches('/')))
    } else {
        [
            "usr/local/sbin",
            "usr/local/bin",
            "usr/sbin",
            "usr/bin",
            "sbin",
            "bin",
        ]
        .iter()
        .map(|dir| root.join(dir).join(program))
        .find(|p| p.is_file())
    }?;
    let mut argv: Vec<OsString> = Vec::new();
    if root != Path::new("/") {
        argv.push("chroot".into());
        argv.push(root.into());
    }
    argv.extend(words.iter().map(OsString::from));
    Some((found, argv))
}

/// Who runs a deferred command: the module `module` of `node`, on `root`.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    /// The target root.
    pub root: &'a Path,
    /// The node.
    pub node: &'a str,
    /// The module.
    pub module: &'a str,
}

/// Runs one deferred command through the fix-module host.
pub fn run(
    owner: Owner<'_>,
    deferred: &Deferred,
    words: &[String],
    lock_dir: &Path,
) -> Result<FixOutcome, ApplyError> {
    let shown = words.join(" ");
    let (program, argv) = argv(owner.root, words).ok_or_else(|| ApplyError::DeferredNotFound {
        command: shown.clone(),
    })?;
    let timeout = deferred.timeout();
    let request =
        crate::dance::exec::request(owner.module, &deferred.options(), timeout).map_err(|e| {
            ApplyError::DeferredRequest {
                command: shown.clone(),
                source: Box::new(e),
            }
        })?;
    let mut spec = FixSpec::new(program, request, owner.node, owner.module);
    spec.command = Some(argv);
    spec.plain_output = true;
    spec.allow_compiled = true;
    spec.lock = LockLevel::None;
    spec.lock_dir = lock_dir.to_owned();
    spec.timeout = timeout;
    spec.env = crate::dance::exec::environment(owner.module, owner.node, false);
    supervise::run(&spec).map_err(|source| ApplyError::Deferred {
        command: shown,
        source,
    })
}
