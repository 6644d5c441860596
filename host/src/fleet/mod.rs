//! A fleet seen from its server: the dance reports nodes push back (one folder per node, one
//! JSON file per dance in the report schema, the newest sorting last), read into one line per
//! node (`status`) and one line per changed path across the nodes (`diff`). Nothing here talks
//! to a node: reports arrive by rsync (or a parallel-ssh tool's collected output), and these
//! are pure functions of what arrived.
//!
//! - `reports`: finding and reading each node's reports;
//! - `status`: freshness and outcome per node;
//! - `diff`: noop reports aggregated path by path, failed modules grouped the same way.

mod diff;
mod error;
mod reports;
mod status;

pub use diff::{fleet_diff, FleetDiff, PathGroup};
pub use error::FleetError;
pub use reports::{read_nodes, NodeReports, Report};
pub use status::{fleet_status, NodeStatus};
