//! What is wrong with a rules file, a target's name, or a rule's plan for one alert.

use std::path::PathBuf;

use crate::supervise::{BadLockLevel, CgroupError};

/// What is wrong with a rules file; one line, naming the rule.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// Not TOML, or not the rules file's shape.
    #[error("line {line}: {message}")]
    Toml {
        /// The line.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// No rule at all.
    #[error("no [[rule]]: nothing would ever run")]
    NoRules,
    /// A time that is no number of seconds.
    #[error("{what} = {value} is not a number of seconds")]
    Seconds {
        /// The field.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// A module named neither by NAME nor by an absolute path.
    #[error("module '{name}' must be a NAME (looked up as {}/fix/NAME) or an absolute path", .dir.display())]
    ModuleName {
        /// The name as given.
        name: String,
        /// The module directory.
        dir: PathBuf,
    },
    /// The module cannot be found or resolved.
    #[error("module {}: {source}", .path.display())]
    Module {
        /// The module.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The module is no executable file.
    #[error("module {} is not executable", .path.display())]
    NotExecutable {
        /// The module.
        path: PathBuf,
    },
    /// An option name the protocol does not allow.
    #[error(
        "option name '{0}' is not allowed (letters, digits, '_', '-', '.'; not 'module' or '_...')"
    )]
    OptionName(String),
    /// A lock level that is none of the four.
    #[error(transparent)]
    Lock(#[from] BadLockLevel),
    /// A resource limit that cannot be read.
    #[error(transparent)]
    Limit(#[from] CgroupError),
    /// What is wrong with one rule.
    #[error("rule '{rule}': {source}")]
    InRule {
        /// The rule's name.
        rule: String,
        /// What is wrong.
        #[source]
        source: Box<RuleError>,
    },
}

/// A host or service name refused as a lock and fixhistory name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} '{}' is refused: {why}", .name.escape_debug())]
pub struct BadTargetName {
    /// `host` or `service`.
    pub what: &'static str,
    /// The name.
    pub name: String,
    /// Why.
    pub why: &'static str,
}

/// Why a rule cannot make a fix of an alert (recorded as the alert's `rejected` reason).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The alert lacks what names the host or the service.
    #[error("no {what}: the alert has no {from}")]
    Missing {
        /// `host` or `service`.
        what: &'static str,
        /// Where it was to come from.
        from: String,
    },
    /// The host or service cannot be a lock name.
    #[error(transparent)]
    Target(#[from] BadTargetName),
    /// The request document cannot be written (a value XML cannot carry).
    #[error("cannot write the request: {0}")]
    Request(#[from] protocol::WriteError),
}
