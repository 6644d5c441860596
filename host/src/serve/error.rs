//! What keeps `disco serve` (or `disco remote`, `disco history`) from starting or going on.

use std::io;
use std::path::PathBuf;

/// Why the server cannot start or serve. One line, lowercase, naming the file or address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The rules file is wrong.
    #[error("rules {path}: {source}")]
    Rules {
        /// The rules file.
        path: PathBuf,
        /// What is wrong, with the rule's name.
        #[source]
        source: super::rules::RuleError,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The history could not be opened or written.
    #[error("history {path}: {source}")]
    History {
        /// The history file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The history failed an earlier write: nothing is appended after it.
    #[error("history {path}: {source}")]
    HistoryBroken {
        /// The history file.
        path: PathBuf,
        /// The write that failed.
        #[source]
        source: std::sync::Arc<io::Error>,
    },
    /// The token file is empty.
    #[error("token file {path} is empty")]
    EmptyToken {
        /// The token file.
        path: PathBuf,
    },
    /// TLS cannot be set up from the files given.
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
    /// A system call the server needs failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What the server was doing.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}
