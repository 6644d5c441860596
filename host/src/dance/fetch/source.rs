//! Where a dance fetches from: a local folder, a bare rsync base (each module an rsync module
//! of its own) or a site (a base naming one rsync module, laid out like a local folder); and
//! which module names may reach a URI or a path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::FetchError;

/// Where parameters and modules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local directory with `parameters/` and `modules/NAME/`, used in place (absolute).
    Local(PathBuf),
    /// An rsync base that `parameters/` or `NAME/` is appended to: `[user@]host::[prefix/]` or
    /// `rsync://[user@]host[:port]/[prefix/]`.
    Rsync(String),
}

impl Source {
    /// Whether the base names an rsync module (`host::site/`, `rsync://host/site/`), whose
    /// tree is laid out like a local source, so everything comes in one session.
    pub fn is_site(&self) -> bool {
        match self {
            Source::Local(_) => false,
            Source::Rsync(base) => match base.strip_prefix("rsync://") {
                Some(rest) => rest.split_once('/').is_some_and(|(_, p)| !p.is_empty()),
                None => base.split_once("::").is_some_and(|(_, p)| !p.is_empty()),
            },
        }
    }

    /// The rsync source argument for `name` (`parameters` or a module) under this base.
    pub(super) fn rsync_arg(base: &str, name: &str) -> String {
        // The trailing slash makes rsync copy the directory's contents, not the directory.
        format!("{base}{name}/")
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Local(path) => write!(f, "{}", path.display()),
            Source::Rsync(base) => f.write_str(base),
        }
    }
}

impl FromStr for Source {
    type Err = FetchError;

    /// Parses a `--source` or `disco/server/uri` value. In order: `rsync://...`; a path (`/`,
    /// `./`, `../`) or an existing directory; anything with `::` (rsync daemon syntax); then
    /// `user@host`, which means `user@host::`. Anything else is an error naming the text.
    fn from_str(text: &str) -> Result<Source, FetchError> {
        let bad = |why: &str| FetchError::BadSource {
            text: text.to_owned(),
            why: why.to_owned(),
        };
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        if text.chars().any(char::is_control) {
            return Err(bad("it holds a control character"));
        }
        if let Some(rest) = text.strip_prefix("rsync://") {
            let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let host_port = match authority.rsplit_once('@') {
                Some((user, host)) if valid_user(user) => host,
                Some(_) => return Err(bad("the user before '@' is not valid")),
                None => authority,
            };
            // `[v6::addr]:port` keeps its colons inside the brackets.
            let (host, port) = match host_port.rsplit_once(':') {
                Some((host, port)) if !host_port.ends_with(']') => (host, Some(port)),
                _ => (host_port, None),
            };
            if !valid_host(host) {
                return Err(bad("expected rsync://[user@]host[:port]/[prefix]"));
            }
            if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
                return Err(bad("the port is not a number"));
            }
            return Ok(Source::Rsync(format!(
                "rsync://{authority}/{}",
                with_slash(prefix)
            )));
        }
        let path = Path::new(text);
        let pathlike = text.starts_with('/') || text.starts_with("./") || text.starts_with("../");
        if pathlike || text == "." || text == ".." || path.is_dir() {
            if !path.is_dir() {
                return Err(bad("no such directory"));
            }
            // Absolute, so that a later change of directory cannot move the source.
            let abs = std::path::absolute(path).map_err(|e| bad(&e.to_string()))?;
            return Ok(Source::Local(abs));
        }
        if let Some((user_host, prefix)) = text.split_once("::") {
            let host = match user_host.rsplit_once('@') {
                Some((user, host)) if valid_user(user) => host,
                Some(_) => return Err(bad("the user before '@' is not valid")),
                None => user_host,
            };
            if !valid_host(host) {
                return Err(bad("expected [user@]host::[prefix]"));
            }
            return Ok(Source::Rsync(format!(
                "{user_host}::{}",
                with_slash(prefix)
            )));
        }
        if let Some((user, host)) = text.split_once('@') {
            if valid_user(user) && valid_host(host) {
                return Ok(Source::Rsync(format!("{text}::")));
            }
        }
        Err(bad(
            "neither an existing directory nor an rsync source (user@host, host::, rsync://host[:port]/)",
        ))
    }
}

/// `prefix` with one trailing slash, or empty when it is empty.
pub(super) fn with_slash(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    }
}

/// A host name or address rsync and ssh will take as such, and never as an option.
pub(super) fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && !host.starts_with('-')
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

/// A user name (remote-shell or rsync user); it must not start with `-` (ssh would take
/// `-oProxyCommand=...` as an option).
pub(super) fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Whether `name` may name a module: `[A-Za-z0-9_.-]+` with no leading `.`, so it is one
/// harmless path component and one rsync module name.
pub fn valid_module_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}
