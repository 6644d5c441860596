//! Deferred service commands: recorded by a live module's shims, run for real after its merge,
//! and kept in the merge's journal until they ran, so that a crash between the merge and them
//! does not leave a service running on its old configuration.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::supervise::{self, FixOutcome, FixSpec, LockLevel};

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

/// Runs one deferred command through the fix-module host, as the module `module` of `node`.
pub fn run(
    root: &Path,
    node: &str,
    module: &str,
    words: &[String],
    timeout: Duration,
) -> Result<FixOutcome, String> {
    let shown = words.join(" ");
    let (program, argv) =
        argv(root, words).ok_or_else(|| format!("deferred command {shown}: not found"))?;
    let request =
        protocol::Document::to_xml(&protocol::FixData::default()).map_err(|e| e.to_string())?;
    let mut spec = FixSpec::new(program, request, node, module);
    spec.command = Some(argv);
    spec.plain_output = true;
    spec.allow_compiled = true;
    spec.lock = LockLevel::None;
    spec.timeout = timeout;
    supervise::run(&spec).map_err(|e| format!("deferred command {shown}: {e}"))
}
