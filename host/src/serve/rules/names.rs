//! Names a rule deals in: a target's host and service (checked like lock names), an
//! instance's port, a fix module found in the module folder.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{BadTargetName, RuleError};

/// The module directory when none is given: `PREFIX/mod`, as the original's `-m`. `PREFIX` is
/// `/usr/local` unless the build sets `DISCO_PREFIX` (the autotools build does).
pub fn default_module_dir() -> PathBuf {
    PathBuf::from(option_env!("DISCO_PREFIX").unwrap_or("/usr/local")).join("mod")
}

/// `db1:9100` → `db1`, `[::1]:9100` → `::1`, `db1` → `db1`; a bare IPv6 address is left alone.
pub fn strip_port(instance: &str) -> &str {
    if let Some(rest) = instance.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match instance.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => instance,
    }
}

/// Checks that `name` can name a lock file and a fixhistory folder: the host's own rules
/// (no `/`, NUL or leading `.`, no `@` in a host), plus no control characters.
pub fn check_target_name(what: &'static str, name: &str) -> Result<(), BadTargetName> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.contains('/') || name.contains('\0') {
        "it holds '/' or NUL"
    } else if name.starts_with('.') {
        "it starts with '.'"
    } else if what == "host" && name.contains('@') {
        "it holds '@'"
    } else if name.chars().any(char::is_control) {
        "it holds a control character"
    } else if name.len() > 255 {
        "it is longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(BadTargetName {
        what,
        name: name.to_owned(),
        why,
    })
}

/// Resolves a rule's module: an absolute path, or a NAME looked up as `DIR/fix/NAME` only.
pub fn resolve_module(module_dir: &Path, name: &str) -> Result<PathBuf, RuleError> {
    let path = if Path::new(name).is_absolute() {
        PathBuf::from(name)
    } else if name.contains('/') || name.is_empty() || name.starts_with('.') {
        return Err(RuleError::ModuleName {
            name: name.to_owned(),
            dir: module_dir.to_owned(),
        });
    } else {
        module_dir.join("fix").join(name)
    };
    let gone = |e: std::io::Error| RuleError::Module {
        path: path.clone(),
        // The kind alone ("entity not found"), as the path says the rest.
        source: std::io::Error::from(e.kind()),
    };
    let meta = std::fs::metadata(&path).map_err(gone)?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(RuleError::NotExecutable { path });
    }
    // Absolute, so that history and fixes name it the same whatever the working directory.
    std::path::absolute(&path).map_err(|source| RuleError::Module {
        path: path.clone(),
        source,
    })
}
