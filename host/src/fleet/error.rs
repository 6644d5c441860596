//! What can stop a fleet command.

use std::path::PathBuf;

/// Why the reports could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The reports folder (or a node's folder) could not be listed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A node's report file cannot be read (it is passed over).
    #[error("{path}: {source}")]
    ReportUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A node's report file is no dance report (it is passed over).
    #[error("{path}: {source}")]
    NotAReport {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The reports folder holds no node folder.
    #[error("no node's reports in {0} (expected DIR/NODE/ID.json)")]
    Empty(PathBuf),
}
