//! Finishing, or setting aside, the merges a killed dance left: what `disco dance` does before
//! its first module and what `disco recover` does on demand. No other command waits for it:
//! `disco fix`, `serve`, `remote` never touch a dance's journal.
//!
//! Each journal is replayed under its root's lock and only onto the root it names (see
//! [`super::journal::Identity`]); its deferred commands then run, each bounded by the dance's
//! own timeout. A journal whose merge cannot be finished from what remains (its scratch layer
//! or staged copies were lost) is set aside with a message saying what was and was not
//! applied, so that it never wedges the node.

use std::path::Path;

use super::deferred::{self, Owner};
use super::journal::{self, Journal, Phase};
use super::merge::{self, Replayed};
use super::ApplyError;

/// What recovery does with a journal it cannot finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Finish every merge that can be finished.
    Finish,
    /// Set every pending journal aside, applying nothing more (`disco recover --discard`).
    Discard,
}

/// Replays (or, with [`Mode::Discard`], sets aside) every pending journal of `state_dir`; the
/// caller holds the state directory's dance lock, and the root lock of `held` if any (other
/// roots' locks are taken here, without waiting: a root where a dance runs is left for later).
/// Returns one line per thing done, for the user.
pub fn recover(
    state_dir: &Path,
    lock_dir: &Path,
    held: Option<&Path>,
    mode: Mode,
    only: Option<&str>,
) -> Result<Vec<String>, ApplyError> {
    let mut lines = Vec::new();
    for path in journal::pending_paths(&journal::dir(state_dir)) {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if only.is_some_and(|o| o != stem && Path::new(o) != path) {
            continue;
        }
        // One journal that cannot be finished stops nothing else: it is said, and kept.
        match one(state_dir, lock_dir, held, mode, &path) {
            Ok(done) => lines.extend(done),
            Err(e) => lines.push(format!(
                "cannot finish {}: {e}; kept (`disco recover --discard {stem}` sets it aside)",
                path.display()
            )),
        }
    }
    Ok(lines)
}

/// Replays (or sets aside) the journal at `path`.
fn one(
    state_dir: &Path,
    lock_dir: &Path,
    held: Option<&Path>,
    mode: Mode,
    path: &Path,
) -> Result<Vec<String>, ApplyError> {
    let mut lines = Vec::new();
    {
        let path = path.to_owned();
        let mut j = match Journal::read(&path) {
            Ok(j) => j,
            Err(e) if mode == Mode::Discard => {
                let to = journal::set_aside(state_dir, &path)?;
                lines.push(format!("set aside {} ({e})", to.display()));
                return Ok(lines);
            }
            Err(e) => return Err(e),
        };
        let _lock = if held == Some(j.root.as_path()) {
            None
        } else {
            match super::lock::lock_root_path(&j.root, false) {
                Ok(l) => Some(l),
                Err(ApplyError::Busy { .. }) => {
                    lines.push(format!(
                        "left {} for later: a dance is running on {}",
                        path.display(),
                        j.root.display()
                    ));
                    return Ok(lines);
                }
                // The root is gone or is no folder: the replay below says so, precisely.
                Err(_) => None,
            }
        };
        if mode == Mode::Discard {
            let what = match j.phase {
                Phase::Planned => "nothing of its merge was applied".to_owned(),
                Phase::Staged { .. } => "its merge was staged and may be partly applied".to_owned(),
                Phase::Committed => format!(
                    "its merge was applied; its deferred commands did not run: {}",
                    shown_commands(&j)
                ),
            };
            merge::clean_staging(&j);
            let to = journal::set_aside(state_dir, &path)?;
            lines.push(format!(
                "set aside the journal of {} (run {}): {what}; kept as {}",
                j.module,
                j.run,
                to.display()
            ));
            return Ok(lines);
        }
        match merge::replay(state_dir, &path, &mut j)? {
            Replayed::Finished { paths } => {
                if paths > 0 {
                    lines.push(format!(
                        "finished the interrupted merge of {} (run {}): {paths} path(s)",
                        j.module, j.run
                    ));
                }
            }
            Replayed::Unfinishable(why) => {
                merge::clean_staging(&j);
                let to = journal::set_aside(state_dir, &path)?;
                lines.push(format!(
                    "cannot finish the interrupted merge of {} (run {}): {why}; journal set aside as {}",
                    j.module,
                    j.run,
                    to.display()
                ));
                return Ok(lines);
            }
        }
        lines.extend(run_deferred(&j, lock_dir));
        journal::remove(&path)?;
    }
    Ok(lines)
}

fn shown_commands(j: &Journal) -> String {
    let all: Vec<String> = j.deferred.commands.iter().map(|w| w.join(" ")).collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join("; ")
    }
}

/// Runs a finished journal's deferred commands, each through the fix-module host with the
/// module's request and environment and the dance's timeout.
fn run_deferred(j: &Journal, lock_dir: &Path) -> Vec<String> {
    let owner = Owner {
        root: &j.root,
        node: &j.node,
        module: &j.module,
    };
    j.deferred
        .commands
        .iter()
        .map(
            |words| match deferred::run(owner, &j.deferred, words, lock_dir) {
                Ok(o) => format!(
                    "ran the deferred command of {}: {}: ReturnCode {}",
                    j.module,
                    words.join(" "),
                    o.return_code
                ),
                Err(e) => format!("the deferred command of {} failed: {e}", j.module),
            },
        )
        .collect()
}
