//! One line per node: its last dance, how old it is, noop or live, how it ended, how many
//! changes, which modules failed; stale when older than two intervals.

use serde::Serialize;

use super::reports::NodeReports;

/// How one node stands.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    /// The node.
    pub node: String,
    /// Its last dance's id (`None`: no report reads).
    pub last: Option<String>,
    /// Seconds since that dance started.
    pub age_s: Option<u64>,
    /// Whether it was a noop dance.
    pub noop: Option<bool>,
    /// Whether it succeeded.
    pub ok: bool,
    /// Paths it changed (noop: would change).
    pub changes: usize,
    /// The modules that failed.
    pub failed_modules: Vec<String>,
    /// Older than two intervals, or no report at all.
    pub stale: bool,
}

/// Each node's status at `now_ms`, for dances expected every `interval_s` seconds; report files
/// that did not read are added to `skipped`.
pub fn fleet_status(
    nodes: &[NodeReports],
    now_ms: u64,
    interval_s: u64,
    skipped: &mut Vec<super::FleetError>,
) -> Vec<NodeStatus> {
    nodes
        .iter()
        .map(|n| match n.newest(false, skipped) {
            None => NodeStatus {
                node: n.node.clone(),
                last: None,
                age_s: None,
                noop: None,
                ok: false,
                changes: 0,
                failed_modules: Vec::new(),
                stale: true,
            },
            Some(r) => {
                let age_s = now_ms.saturating_sub(r.started_unix_ms) / 1000;
                NodeStatus {
                    node: n.node.clone(),
                    last: Some(r.id.clone()),
                    age_s: Some(age_s),
                    noop: Some(r.noop),
                    ok: r.ok,
                    changes: r.changes(),
                    failed_modules: r.failed().iter().map(|m| m.name.clone()).collect(),
                    stale: age_s > 2 * interval_s,
                }
            }
        })
        .collect()
}
