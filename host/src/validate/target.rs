//! What a path given to `disco validate` is: a fix module (its script, or its source directory
//! `mod/fix/NAME/` holding the script `NAME` and a `Makefile.in`), or a disco ball (a module
//! folder with `requires`, `parameters/`, `files/`, `scripts/`, `templates/`).

use std::path::{Path, PathBuf};

/// The parts of a disco ball's folder.
pub const BALL_PARTS: &[&str] = &["requires", "parameters", "files", "scripts", "templates"];

/// A fix module as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The module's name (its script's file name).
    pub name: String,
    /// The script (it may not exist: then that is a finding).
    pub script: PathBuf,
    /// The source directory `.../NAME/`, when the module is in its source form (rule 4);
    /// `None` for an installed module (`PREFIX/mod/fix/NAME`), which has no `Makefile.in`.
    pub source_dir: Option<PathBuf>,
}

/// What is validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A fix module.
    Module(Module),
    /// A disco ball's folder.
    Ball(PathBuf),
}

impl Target {
    /// Decides what `path` is; `None` when it does not exist.
    pub fn of(path: &Path) -> Option<Target> {
        let meta = std::fs::metadata(path).ok()?;
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        if meta.is_dir() {
            let dir = path.canonicalize().unwrap_or_else(|_| path.to_owned());
            let is_ball = BALL_PARTS.iter().any(|p| dir.join(p).exists())
                && !dir.join("Makefile.in").exists();
            if is_ball {
                return Some(Target::Ball(dir));
            }
            let n = name(&dir);
            return Some(Target::Module(Module {
                script: dir.join(&n),
                name: n,
                source_dir: Some(dir),
            }));
        }
        let script = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let n = name(&script);
        // mod/fix/NAME/NAME is the source form; anything else is an installed script.
        let source_dir = script
            .parent()
            .filter(|dir| name(dir) == n || dir.join("Makefile.in").exists())
            .map(Path::to_path_buf);
        Some(Target::Module(Module {
            name: n,
            script,
            source_dir,
        }))
    }
}
