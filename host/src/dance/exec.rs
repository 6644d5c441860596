//! What every piece of a module (a script, a template, a delivery of files, a deferred
//! command) runs with: its request, its environment, and the command line of a script.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use protocol::{Document, FixData, Options};

use super::DanceError;
use crate::sandbox::paths::DISCO_DIR;

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

/// The environment every piece of a module gets (and its deferred commands, live).
pub fn environment(module: &str, node: &str, noop: bool) -> Vec<(OsString, OsString)> {
    vec![
        ("DISCO_MODULE".into(), module.into()),
        ("DISCO_NODE".into(), node.into()),
        (
            "DISCO_PARAMETERS".into(),
            format!("{DISCO_DIR}/parameters").into(),
        ),
        ("NOOP".into(), if noop { "true" } else { "false" }.into()),
    ]
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
