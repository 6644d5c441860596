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
    /// The reports folder holds no node folder.
    #[error("no node's reports in {0} (expected DIR/NODE/ID.json)")]
    Empty(PathBuf),
}
