//! Runs under the state directory: one folder per sandbox run, holding its scratch layers.
//!
//! ```text
//! STATE/runs/<id>/run.json        what was overlaid where (RunInfo)
//! STATE/runs/<id>/lock            held while the run is active, so pruning never touches it
//! STATE/runs/<id>/layers/<n>/{upper,work}
//! STATE/runs/<id>/merged          the mount point of the root overlay (inside the sandbox only)
//! STATE/latest                    the id of the latest finished run
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::SandboxError;

/// One overlaid filesystem of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Where it appears inside the sandbox (`/`, `/var`...).
    pub mount_point: PathBuf,
    /// The live directory underneath (the lower layer).
    pub lower: PathBuf,
    /// The scratch layer that received every write.
    pub upper: PathBuf,
    /// overlayfs's work directory.
    pub work: PathBuf,
    /// Read-only layers stacked between the scratch layer and the live directory, topmost
    /// first: the scratch layers of the modules that ran before, and disco's own files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lowers_above: Vec<PathBuf>,
}

/// What a run was, for `disco diff` and for the merge that follows a live run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The run's id (sortable: creation time, then pid).
    pub id: String,
    /// The target root.
    pub root: PathBuf,
    /// Whether it was a noop run.
    pub noop: bool,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The overlays, shallowest first.
    pub layers: Vec<LayerInfo>,
}

/// A run's folder, locked while it is in use.
#[derive(Debug)]
pub struct RunDir {
    /// The run's id.
    pub id: String,
    /// Its folder.
    pub path: PathBuf,
    _lock: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError + '_ {
    move |source| SandboxError::State {
        path: path.to_owned(),
        source,
    }
}

fn runs(state_dir: &Path) -> PathBuf {
    state_dir.join("runs")
}

impl RunDir {
    /// Creates a new run folder and holds its lock.
    pub fn create(state_dir: &Path) -> Result<RunDir, SandboxError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!(
            "{}.{:06}-{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id()
        );
        // Runs hold the merged parameters (secrets among them) and every changed file:
        // root's alone, however the state directory was made.
        let all = runs(state_dir);
        crate::sys::private_dir(&all).map_err(io(&all))?;
        let path = all.join(&id);
        crate::sys::private_dir(&path).map_err(io(&path))?;
        let lock_path = path.join("lock");
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        Ok(RunDir {
            id,
            path,
            _lock: lock,
        })
    }

    /// Creates the upper and work folders of layer `n`.
    pub fn new_layer(&self, n: usize) -> Result<(PathBuf, PathBuf), SandboxError> {
        let base = self.path.join("layers").join(n.to_string());
        let (upper, work) = (base.join("upper"), base.join("work"));
        for dir in [&upper, &work] {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        Ok((upper, work))
    }

    /// Writes `run.json`.
    pub fn save(&self, info: &RunInfo) -> Result<(), SandboxError> {
        let path = self.path.join("run.json");
        let json = serde_json::to_vec_pretty(info).map_err(|e| SandboxError::State {
            path: path.clone(),
            source: e.into(),
        })?;
        std::fs::write(&path, json).map_err(io(&path))
    }
}

/// Records `id` as the latest run (atomically: write beside, rename).
pub fn set_latest(state_dir: &Path, id: &str) -> Result<(), SandboxError> {
    let tmp = state_dir.join(".latest.tmp");
    std::fs::write(&tmp, id).map_err(io(&tmp))?;
    let latest = state_dir.join("latest");
    std::fs::rename(&tmp, &latest).map_err(io(&latest))
}

/// Loads run `id`, or the latest run when `id` is `None`.
pub fn load(state_dir: &Path, id: Option<&str>) -> Result<RunInfo, SandboxError> {
    let id = match id {
        Some(id) => id.to_owned(),
        None => {
            let latest = state_dir.join("latest");
            std::fs::read_to_string(&latest)
                .map_err(|_| SandboxError::NoRun(state_dir.to_owned()))?
                .trim()
                .to_owned()
        }
    };
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return Err(SandboxError::UnknownRun(id));
    }
    let path = runs(state_dir).join(&id).join("run.json");
    let bytes = std::fs::read(&path).map_err(|_| SandboxError::UnknownRun(id.clone()))?;
    serde_json::from_slice(&bytes).map_err(|e| SandboxError::State {
        path,
        source: e.into(),
    })
}

/// Deletes all but the newest `keep` runs, never one whose lock is held or the latest.
pub fn prune(state_dir: &Path, keep: usize) -> Result<usize, SandboxError> {
    let dir = runs(state_dir);
    let latest = std::fs::read_to_string(state_dir.join("latest")).unwrap_or_default();
    let mut ids: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect(),
        Err(_) => return Ok(0),
    };
    ids.sort();
    let mut removed = 0;
    let excess = ids.len().saturating_sub(keep);
    for id in ids.into_iter().take(excess) {
        if id == latest.trim() {
            continue;
        }
        let path = dir.join(&id);
        let in_use = File::open(path.join("lock")).is_ok_and(|f| f.try_lock().is_err());
        // A merge that did not finish still needs the run's layers.
        if in_use || crate::apply::Journal::pending_for(state_dir, &id) {
            continue;
        }
        std::fs::remove_dir_all(&path).map_err(io(&path))?;
        removed += 1;
    }
    Ok(removed)
}
