//! What stops a dance before or while it runs. Failures of a module's own pieces are not
//! errors: they fail that module, and the dance goes on with the modules that do not need it.

use std::path::PathBuf;

/// Why a dance could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DanceError {
    /// A client parameter has a value disco does not know.
    #[error("parameter {key}: unknown value {value:?}")]
    BadParameter {
        /// The parameter.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// No source given and none configured.
    #[error("no source: give --source DIR|URI, or set disco/server/uri in {0}")]
    NoSource(PathBuf),
    /// Fetching parameters failed, or the source is not usable.
    #[error(transparent)]
    Fetch(#[from] super::fetch::FetchError),
    /// The parameter tree could not be read or merged.
    #[error(transparent)]
    Params(#[from] crate::params::ParamError),
    /// The node has no module list.
    #[error("node '{node}' has no modules: {from} has no parameters/{node}/modules")]
    NoModules {
        /// The node.
        node: String,
        /// Where the parameters came from.
        from: String,
    },
    /// A cycle, a missing module or a malformed `requires`.
    #[error(transparent)]
    Order(#[from] super::order::OrderError),
    /// The sandbox could not be planned.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// A file of the run could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The request for a piece of a module could not be written.
    #[error("module {module}: cannot write its request: {source}")]
    Request {
        /// The module.
        module: String,
        /// Why.
        #[source]
        source: protocol::WriteError,
    },
    /// The fix-module host could not run a piece at all.
    #[error("module {module}: {source}")]
    Host {
        /// The module.
        module: String,
        /// Why.
        #[source]
        source: crate::supervise::SuperviseError,
    },
    /// The dance's sandbox could not be started or stopped serving.
    #[error(transparent)]
    Worker(#[from] super::sandbox::WorkerError),
    /// The run folder of a noop dance could not be kept in memory.
    #[error("cannot {what} for {path}: {source}")]
    RunFolder {
        /// What could not be done.
        what: &'static str,
        /// The run folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::errno::Errno,
    },
    /// A module's layers could not be compared.
    #[error(transparent)]
    Diff(#[from] crate::diff::DiffError),
    /// The report could not be saved.
    #[error(transparent)]
    Report(#[from] super::report::ReportError),
    /// An interrupted merge could not be finished.
    #[error(transparent)]
    Apply(crate::apply::ApplyError),
    /// A module's parameters cannot be read.
    #[error("parameter {key}: {source}")]
    ParameterUnreadable {
        /// The module's key.
        key: String,
        /// Why.
        #[source]
        source: crate::params::ParamError,
    },
    /// A module's parameter holds a character a SurvivorFixData request cannot carry.
    #[error(
        "parameter {key}: its value holds U+{:04X}, which a SurvivorFixData request cannot carry",
        u32::from(*.bad)
    )]
    Uncarriable {
        /// The parameter's key.
        key: String,
        /// The character.
        bad: char,
    },
    /// Another dance holds the dance lock.
    #[error("another dance is running (it holds {0})")]
    Busy(PathBuf),
}
