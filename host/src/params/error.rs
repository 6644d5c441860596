//! The errors of the parameter tree: one line each, lowercase, naming the key and the tree (or
//! the file) at fault.

use std::path::PathBuf;

/// Why a parameter operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// A key path that is not allowed (`..`, absolute, empty component, bad character).
    #[error("invalid parameter path '{path}': {why}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The key does not exist.
    #[error("no parameter '{key}' in {}", tree.display())]
    NotFound {
        /// The key.
        key: String,
        /// The tree's root directory.
        tree: PathBuf,
    },
    /// The key (or one of its parents) is a value where a directory is needed.
    #[error("parameter '{key}' in {} is a value, not a directory", tree.display())]
    NotADirectory {
        /// The key that is a value.
        key: String,
        /// The tree's root directory.
        tree: PathBuf,
    },
    /// A value was set on a key that is a directory.
    #[error("parameter '{key}' in {} is a directory; delete it first to make it a value", tree.display())]
    IsADirectory {
        /// The key that is a directory.
        key: String,
        /// The tree's root directory.
        tree: PathBuf,
    },
    /// A non-recursive delete of a directory that has keys in it.
    #[error("parameter '{key}' in {} is a directory that is not empty; delete it recursively", tree.display())]
    NotEmpty {
        /// The directory's key.
        key: String,
        /// The tree's root directory.
        tree: PathBuf,
    },
    /// The root of a tree cannot be deleted or replaced by a value.
    #[error("the root of {} is not a parameter that can be {action}", tree.display())]
    Root {
        /// What was attempted (`deleted`, `set`).
        action: &'static str,
        /// The tree's root directory.
        tree: PathBuf,
    },
    /// A tree's root (or a layer given to [`merge`](super::merge)) that exists but is not a
    /// directory.
    #[error("parameter tree {} is not a directory", path.display())]
    NotATree {
        /// The path.
        path: PathBuf,
    },
    /// A value file whose content is not UTF-8.
    #[error("parameter file {} is not utf-8 text", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// A symbolic link in the tree that leads out of it.
    #[error("parameter {} is a symbolic link out of its tree (to {}): refusing to read it", path.display(), target.display())]
    OutsideTree {
        /// The link.
        path: PathBuf,
        /// Where it leads.
        target: PathBuf,
    },
    /// A file name in the tree that is not valid UTF-8, so it cannot be a key.
    #[error("file name {} in the parameter tree is not utf-8", path.display())]
    BadFileName {
        /// The file.
        path: PathBuf,
    },
    /// A line of `set -` input that is not `PATH=VALUE`.
    #[error("line {line} of the input: expected PATH=VALUE, found '{text}'")]
    BadLine {
        /// The line number, from 1.
        line: usize,
        /// The line.
        text: String,
    },
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was attempted (`read`, `write`, `list`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ParamError {
    /// An [`ParamError::Io`] for `action` on `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ParamError {
        let path = path.into();
        move |source| ParamError::Io {
            action,
            path,
            source,
        }
    }
}
