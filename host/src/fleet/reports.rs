//! `DIR/NODE/*.json`: each node's dance reports, in the report schema, named so that the newest
//! sorts last (a dance's id: seconds.microseconds-pid).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::FleetError;

/// A changed path, as far as the fleet commands read it.
#[derive(Clone, Debug, Deserialize)]
pub struct PathChange {
    /// The path.
    pub path: String,
    /// `created`, `modified` or `deleted`.
    pub kind: String,
    /// Before.
    pub before: Option<Side>,
    /// After.
    pub after: Option<Side>,
}

/// One side of a change.
#[derive(Clone, Debug, Deserialize)]
pub struct Side {
    /// Content digest, for regular files.
    pub md5: Option<String>,
    /// Permission bits, octal.
    pub mode: String,
    /// Owner.
    pub owner: String,
    /// Group.
    pub group: String,
    /// Where a link points.
    pub link_target: Option<String>,
}

/// A module of a report.
#[derive(Clone, Debug, Deserialize)]
pub struct Module {
    /// Its name.
    pub name: String,
    /// `ok`, `failed` or `skipped`.
    pub status: String,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
    /// Its changes.
    pub paths: Vec<PathChange>,
}

/// A dance report, as far as the fleet commands read it.
#[derive(Clone, Debug, Deserialize)]
pub struct Report {
    /// The dance's id.
    pub id: String,
    /// The node.
    pub node: String,
    /// Noop or live.
    pub noop: bool,
    /// Whether every module succeeded.
    pub ok: bool,
    /// When it started.
    pub started_unix_ms: u64,
    /// Its modules.
    pub modules: Vec<Module>,
}

impl Report {
    /// Paths it changed (or, in noop, would change).
    pub fn changes(&self) -> usize {
        self.modules.iter().map(|m| m.paths.len()).sum()
    }

    /// The modules that failed.
    pub fn failed(&self) -> Vec<&Module> {
        self.modules
            .iter()
            .filter(|m| m.status == "failed")
            .collect()
    }
}

/// One node's reports: the folder's name is the node.
#[derive(Clone, Debug)]
pub struct NodeReports {
    /// The node (its folder's name).
    pub node: String,
    /// Its report files, oldest first.
    pub files: Vec<PathBuf>,
}

impl NodeReports {
    /// The newest report that reads as a dance report (with the file it came from), optionally
    /// only noop ones; a file that does not read is passed over, and named in `skipped`.
    pub fn newest(&self, noop_only: bool, skipped: &mut Vec<FleetError>) -> Option<Report> {
        for file in self.files.iter().rev() {
            let parsed = std::fs::read(file)
                .map_err(|source| FleetError::ReportUnreadable {
                    path: file.clone(),
                    source,
                })
                .and_then(|b| {
                    serde_json::from_slice::<Report>(&b).map_err(|source| FleetError::NotAReport {
                        path: file.clone(),
                        source,
                    })
                });
            match parsed {
                Ok(r) if !noop_only || r.noop => return Some(r),
                Ok(_) => {}
                Err(e) => skipped.push(e),
            }
        }
        None
    }
}

/// Every node folder of `dir`, sorted by node, each with its `*.json` files sorted by name.
pub fn read_nodes(dir: &Path) -> Result<Vec<NodeReports>, FleetError> {
    let read = |path: &Path| {
        std::fs::read_dir(path).map_err(|source| FleetError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let mut nodes = Vec::new();
    for entry in read(dir)?.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(node) = entry.file_name().into_string() else {
            continue;
        };
        let mut files: Vec<PathBuf> = read(&entry.path())?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        nodes.push(NodeReports { node, files });
    }
    if nodes.is_empty() {
        return Err(FleetError::Empty(dir.to_owned()));
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(nodes)
}
