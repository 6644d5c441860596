//! Every name disco gives a path inside its sandboxes, in one place: what a script sees of
//! disco is under `/dev/.disco` (the sandbox's private `/dev`, so none of it lands in a scratch
//! layer or a diff) and, in a dance, under `/var/disco` (the disco layer, read-only).

/// Where disco's files appear inside every sandbox of a dance: the merged parameters, the
/// fetched modules, the rendered templates.
pub const DISCO_DIR: &str = "/var/disco";
/// Where the shims that report (or, for templates, always report) service commands appear.
pub const SHIM_DIR: &str = "/dev/.disco/shims";
/// Where the shims that defer service commands appear inside a live dance's roots.
pub const DEFER_SHIM_DIR: &str = "/dev/.disco/defer";
/// Where disco's tools (`disco-param`) appear.
pub const BIN_DIR: &str = "/dev/.disco/bin";
/// Where a live sandbox's shims record the commands they defer.
pub const DEFERRED: &str = "/dev/.disco/deferred";
/// Where the fix-module host keeps its locks for the pieces of a dance.
pub const LOCK_DIR: &str = "/dev/.disco/locks";
