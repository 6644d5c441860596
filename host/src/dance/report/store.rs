//! Reports kept under `STATE/reports`: their IDs, saving (the newest [`super::KEEP`]), loading.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{DanceReport, KEEP};

/// A new report id for a dance started at `at`: seconds and microseconds since the epoch and
/// this process's pid, so ids sort by time and two dances in the same microsecond differ.
pub fn new_id(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "{}.{:06}-{}",
        since.as_secs(),
        since.subsec_micros(),
        std::process::id()
    )
}

/// Why a report could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// No dance has left a report yet.
    #[error("no dance report in {} yet (run 'disco dance --noop' first)", .0.display())]
    NoReport(PathBuf),
    /// The report asked for is not there.
    #[error("no dance report '{id}' in {}", .dir.display())]
    UnknownReport {
        /// The id asked for.
        id: String,
        /// The reports folder.
        dir: PathBuf,
    },
    /// A report file could not be read, written or removed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A report file is not a report.
    #[error("{}: not a dance report: {source}", .path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The folder reports are kept in: `STATE/reports`.
pub fn reports_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("reports")
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether `id` can name a report file: not empty, no `/`, not hidden (the temporary files
/// [`save`] writes start with a dot).
pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.contains('/') && !id.starts_with('.')
}

/// The order of ids: by time, then pid, numerically, so that ids from before 2001 or with a
/// shorter pid still sort right. An id of another shape sorts before all others (and is pruned
/// first).
pub(super) fn id_key(id: &str) -> (u64, u32, u64, &str) {
    let parse = || -> Option<(u64, u32, u64)> {
        let (time, pid) = id.split_once('-')?;
        let (secs, frac) = time.split_once('.')?;
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // "5" means .5 s: scale the fraction to nanoseconds.
        let nanos = frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32);
        Some((secs.parse().ok()?, nanos, pid.parse().ok()?))
    };
    let (secs, nanos, pid) = parse().unwrap_or((0, 0, 0));
    (secs, nanos, pid, id)
}

/// The ids of the reports in `dir`, oldest first.
pub(super) fn list(dir: &Path) -> Result<Vec<String>, ReportError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if valid_id(id) {
            ids.push(id.to_owned());
        }
    }
    ids.sort_by(|a, b| id_key(a).cmp(&id_key(b)));
    Ok(ids)
}

/// Saves `report` as `STATE/reports/<id>.json` and deletes all but the newest [`KEEP`]
/// reports. The file is written beside and renamed into place, so a reader never sees half a
/// report.
pub fn save(state_dir: &Path, report: &DanceReport) -> Result<PathBuf, ReportError> {
    let dir = reports_dir(state_dir);
    if !valid_id(&report.id) {
        return Err(ReportError::UnknownReport {
            id: report.id.clone(),
            dir,
        });
    }
    // Reports name every changed path and carry content diffs: root's alone.
    crate::sys::private_dir(&dir).map_err(io_err(&dir))?;
    let path = dir.join(format!("{}.json", report.id));
    let tmp = dir.join(format!(".{}.json.tmp", report.id));
    let json = serde_json::to_vec_pretty(report).map_err(|source| ReportError::Json {
        path: path.clone(),
        source,
    })?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&json))
            .map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    prune(&dir, &report.id)?;
    Ok(path)
}

/// Deletes all but the newest [`KEEP`] reports in `dir`, never `just_saved` (even if the clock
/// went back and it is not among the newest).
pub(super) fn prune(dir: &Path, just_saved: &str) -> Result<(), ReportError> {
    let ids = list(dir)?;
    let excess = ids.len().saturating_sub(KEEP);
    for id in ids.iter().take(excess).filter(|id| *id != just_saved) {
        let path = dir.join(format!("{id}.json"));
        match std::fs::remove_file(&path) {
            // Another dance pruning at the same time got there first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(io_err(&path))?,
        }
    }
    Ok(())
}

/// Loads report `id`, or the latest report (the greatest id) when `id` is `None`.
pub fn load(state_dir: &Path, id: Option<&str>) -> Result<DanceReport, ReportError> {
    let dir = reports_dir(state_dir);
    let id = match id {
        Some(id) if valid_id(id) => id.to_owned(),
        Some(id) => {
            return Err(ReportError::UnknownReport {
                id: id.to_owned(),
                dir,
            })
        }
        None => match list(&dir)?.pop() {
            Some(latest) => latest,
            None => return Err(ReportError::NoReport(dir)),
        },
    };
    let path = dir.join(format!("{id}.json"));
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReportError::UnknownReport { id, dir })
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    serde_json::from_slice(&bytes).map_err(|source| ReportError::Json { path, source })
}
