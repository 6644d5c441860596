//! A disco ball (a module folder of the dance): its layout (`requires`, `parameters/`,
//! `files/`, `scripts/`, `templates/`, nothing else), every `requires` entry resolvable from
//! the source, and scripts and templates the dance can run. Findings carry the rule `ball`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::target::BALL_PARTS;
use super::Finding;
use crate::dance::order::Requires;

/// Every finding for the ball in `dir`. Required modules are looked up as
/// `SOURCE/modules/NAME/` when a source is given, else beside the ball.
pub fn check(dir: &Path, source: Option<&Path>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            return vec![Finding::new(
                "ball",
                format!("cannot read it: {e}"),
                dir.display(),
            )]
        }
    };
    for entry in entries.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if !BALL_PARTS.contains(&n.as_str()) && !n.starts_with("README") && !n.starts_with('.') {
            findings.push(Finding::new(
                "ball",
                format!(
                    "unknown entry '{n}': the dance reads only {}",
                    BALL_PARTS.join(", ")
                ),
                entry.path().display(),
            ));
        }
    }
    for part in ["parameters", "files", "scripts", "templates"] {
        let p = dir.join(part);
        if p.exists() && !p.is_dir() {
            findings.push(Finding::new(
                "ball",
                format!("{part} must be a folder"),
                p.display(),
            ));
        }
    }
    if !["files", "scripts", "templates"]
        .iter()
        .any(|p| dir.join(p).is_dir())
    {
        findings.push(Finding::new(
            "ball",
            "nothing to do: no files/, scripts/ or templates/ folder",
            dir.display(),
        ));
    }
    let params = dir.join("parameters");
    if params.is_dir() && !params.join(&name).exists() {
        findings.push(Finding::new(
            "ball",
            format!("parameters/ has no parameters/{name} (the module's default parameters)"),
            params.display(),
        ));
    }
    findings.extend(requires(dir, source));
    findings.extend(pieces(&dir.join("scripts"), true));
    findings.extend(pieces(&dir.join("templates"), false));
    findings
}

/// Every `requires` entry must name a module the source has.
fn requires(dir: &Path, source: Option<&Path>) -> Vec<Finding> {
    let file = dir.join("requires");
    if !file.exists() {
        return Vec::new();
    }
    let req = match Requires::read(&file) {
        Ok(req) => req,
        Err(e) => return vec![Finding::new("ball", e.to_string(), file.display())],
    };
    let modules = match source {
        Some(src) => src.join("modules"),
        None => dir.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    req.entries
        .iter()
        .filter(|r| !modules.join(r.module()).is_dir())
        .map(|r| {
            Finding::new(
                "ball",
                format!(
                    "requires '{}', which {} does not have",
                    r.module(),
                    modules.display()
                ),
                file.display(),
            )
        })
        .collect()
}

/// Scripts must be executable (they run in lexical order as they are); a template must be
/// executable when it names its interpreter with `#!` (without one, the dance runs it with bash).
fn pieces(dir: &Path, scripts: bool) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let shebang = std::fs::read(&path).is_ok_and(|b| b.starts_with(b"#!"));
            let executable = meta.permissions().mode() & 0o111 != 0;
            if !executable && (scripts || shebang) {
                let what = if scripts {
                    "script"
                } else {
                    "template with a #! line"
                };
                findings.push(Finding::new(
                    "ball",
                    format!("{what} is not executable (chmod 755)"),
                    path.display(),
                ));
            }
            if std::fs::read(&path).is_ok_and(|b| b.starts_with(b"\x7fELF")) {
                findings.push(Finding::new(
                    "3",
                    "a compiled (ELF) executable; scripts must be scripts",
                    path.display(),
                ));
            }
        }
    }
    findings
}
