//! The intent journal: a merge's plan, made durable before the live system is touched, and
//! replayed by the next `disco` command when the merge did not finish.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{merge, ApplyError, Op};

/// A merge in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The dance run it belongs to.
    pub run: String,
    /// The module being merged.
    pub module: String,
    /// The staging folders (one per filesystem).
    pub staging: Vec<PathBuf>,
    /// The plan.
    pub ops: Vec<Op>,
    /// The plan is in place; only the deferred commands remain.
    #[serde(default)]
    pub committed: bool,
    /// The target root, for the deferred commands.
    #[serde(default)]
    pub root: PathBuf,
    /// The node, for the deferred commands.
    #[serde(default)]
    pub node: String,
    /// Service commands to run after the merge, in order.
    #[serde(default)]
    pub deferred: Vec<Vec<String>>,
}

/// Where journals live.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("journal")
}

fn fsync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

impl Journal {
    /// Writes the journal durably (write beside, fsync, rename, fsync the folder) and returns
    /// its path.
    pub fn write(&self, state_dir: &Path, name: &str) -> Result<PathBuf, ApplyError> {
        let dir = dir(state_dir);
        std::fs::create_dir_all(&dir).map_err(|e| ApplyError::io("create", &dir, e))?;
        let path = dir.join(format!("{name}.json"));
        let tmp = dir.join(format!(".{name}.json.tmp"));
        let json = serde_json::to_vec(self).map_err(|e| ApplyError::Journal {
            path: path.clone(),
            why: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            fsync_dir(&dir)
        };
        write().map_err(|e| ApplyError::io("write", &path, e))?;
        Ok(path)
    }

    /// Reads a journal.
    pub fn read(path: &Path) -> Result<Journal, ApplyError> {
        let bytes = std::fs::read(path).map_err(|e| ApplyError::io("read", path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| ApplyError::Journal {
            path: path.to_owned(),
            why: e.to_string(),
        })
    }

    /// Whether a journal of run `run` is pending (its scratch layers must be kept).
    pub fn pending_for(state_dir: &Path, run: &str) -> bool {
        std::fs::read_dir(dir(state_dir)).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(run) && n.ends_with(".json"))
            })
        })
    }
}

/// Removes a finished journal, durably.
pub fn remove(path: &Path) -> Result<(), ApplyError> {
    std::fs::remove_file(path).map_err(|e| ApplyError::io("remove", path, e))?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir).map_err(|e| ApplyError::io("sync", dir, e))?;
    }
    Ok(())
}

/// Whether a merge is pending (a journal not yet finished).
pub fn pending(state_dir: &Path) -> Option<PathBuf> {
    pending_paths(&dir(state_dir)).into_iter().next()
}

fn pending_paths(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    paths
}

/// Finishes every merge that a killed disco left half done (roll forward), unless a dance is
/// running (it holds the dance lock, and may be committing that very merge); returns one line a
/// merge finished, for the user.
pub fn recover(state_dir: &Path) -> Result<Vec<String>, ApplyError> {
    if pending(state_dir).is_none() {
        return Ok(Vec::new());
    }
    let lock_path = state_dir.join("dance.lock");
    let Ok(lock) = std::fs::File::create(&lock_path) else {
        return Ok(Vec::new());
    };
    if lock.try_lock().is_err() {
        return Ok(Vec::new());
    }
    replay_pending(state_dir)
}

/// Replays every pending journal; the caller holds the dance lock.
pub fn replay_pending(state_dir: &Path) -> Result<Vec<String>, ApplyError> {
    let dir = dir(state_dir);
    let entries = pending_paths(&dir);
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut done = Vec::new();
    for path in entries {
        let mut journal = Journal::read(&path)?;
        if !journal.committed {
            let applied = merge::execute(&journal)?;
            merge::clean_staging(&journal);
            done.push(format!(
                "finished the interrupted merge of {} (run {}): {} path(s)",
                journal.module, journal.run, applied.paths
            ));
            journal.committed = true;
        }
        for words in &journal.deferred {
            let outcome = super::deferred::run(
                &journal.root,
                &journal.node,
                &journal.module,
                words,
                std::time::Duration::from_secs(600),
            );
            done.push(match outcome {
                Ok(o) => format!(
                    "ran the deferred command of {}: {}: ReturnCode {}",
                    journal.module,
                    words.join(" "),
                    o.return_code
                ),
                Err(e) => format!("the deferred command of {} failed: {e}", journal.module),
            });
        }
        remove(&path)?;
    }
    Ok(done)
}
