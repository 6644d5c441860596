//! Sources: where a dance gets its parameters and modules from, and the fetch that brings them
//! into the state directory's cache.
//!
//! A [`Source`] is either a local directory laid out like the server's home (`parameters/` and
//! `modules/NAME/`), used in place, or an rsync base (`user@host::` daemon syntax, or
//! `rsync://host[:port]/`), mirrored into `STATE/cache/` by the command in the parameter
//! `disco/client/cmds/rsync`. With `--rsh ssh...` in that command, `user@host::` becomes "rsync
//! daemon over a remote shell": the server runs a one-shot `rsync --server --daemon` per
//! connection that reads `~/rsyncd.conf`, so only sshd listens (see `contrib/README.md`).
//!
//! Rules that keep a fetch safe:
//! - the rsync argv comes only from the parameter (split by shell-words rules) plus the source
//!   and destination disco appends; nothing is ever handed to a local shell;
//! - module names are checked ([`valid_module_name`]) before they reach a URI or a path, and a
//!   source can never look like an option (nothing starts with `-`);
//! - every destination is `cache/parameters/` or `cache/modules/NAME/`, and `--delete` is always
//!   on (appended when the command lacks it), so a file removed on the server disappears from the
//!   cache, and nothing outside `cache/` is ever deleted.
//!
//! Two server layouts. A bare base (`host::`, `rsync://host/`) is the seed's: `parameters` and
//! every module are rsync modules of their own, one rsync session each (an rsync session reaches
//! one rsync module). A base that names an rsync module (`host::site`, `rsync://host/site/`) is
//! laid out like a local source (`parameters/`, `modules/NAME/`), and a fetcher told its node
//! ([`Fetcher::for_node`]) fetches only `parameters/disco`, `parameters/NODE` and modules, in
//! ONE session per dance: the parameters together with every module the cache holds from the
//! last dance (`--relative`, `--delete-missing-args`), then, only when the node's list changed,
//! the modules still missing in one more session. Unchanged files transfer nothing: the cache
//! is the basis.
//!
//! Every rsync is measured: it is reaped with wait4(2), whose rusage covers rsync and the
//! children it waited for (its ssh, its receiver fork).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sys::{self, Ended};

/// The rsync command used when the parameter `disco/client/cmds/rsync` is not set.
pub const DEFAULT_RSYNC: &str = "rsync -aHAX --delete";

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
    fn rsync_arg(base: &str, name: &str) -> String {
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
fn with_slash(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    }
}

/// A host name or address rsync and ssh will take as such, and never as an option.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && !host.starts_with('-')
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

/// A user name (remote-shell or rsync user); it must not start with `-` (ssh would take
/// `-oProxyCommand=...` as an option).
fn valid_user(user: &str) -> bool {
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

/// Resource usage of one rsync (and the children it waited for), as the dance reports it.
pub use super::report::Usage;

/// A fetched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Where it is now: in the cache, or in the local source itself.
    pub path: PathBuf,
    /// The rsync's resource usage; `None` for a local source (nothing ran).
    pub rusage: Option<Usage>,
    /// Wall time of the fetch.
    pub elapsed: Duration,
}

/// Why a source could not be parsed or a fetch failed. Fetch errors name what was fetched
/// (`parameters` or the module) and the source.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The source text is neither a local directory nor an rsync source.
    #[error("source {text:?}: {why}")]
    BadSource {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: String,
    },
    /// The rsync command parameter cannot be used.
    #[error("disco/client/cmds/rsync {command:?}: {why}")]
    BadCommand {
        /// The parameter's value.
        command: String,
        /// What is wrong with it.
        why: String,
    },
    /// A module name that cannot be put in a URI or a path.
    #[error(
        "fetch {module:?}: not a module name (letters, digits, '_', '-', '.', no leading '.')"
    )]
    BadModuleName {
        /// The name.
        module: String,
    },
    /// The same module was asked for twice in one [`Fetcher::fetch_modules`] call.
    #[error("fetch {module}: asked for twice")]
    Duplicate {
        /// The module.
        module: String,
    },
    /// A local source lacks the directory.
    #[error("fetch {what} from {from}: no such directory {}", path.display())]
    Missing {
        /// `parameters` or the module.
        what: String,
        /// The source.
        from: String,
        /// The missing directory.
        path: PathBuf,
    },
    /// A directory in the cache is a symlink, which `--delete` could follow out of the cache.
    #[error("fetch {what} from {from}: {} is a symlink: not mirroring into it", path.display())]
    Symlink {
        /// `parameters` or the module.
        what: String,
        /// The source.
        from: String,
        /// The symlink.
        path: PathBuf,
    },
    /// A cache directory or rsync's stderr file could not be set up, or rsync not run or reaped.
    #[error("fetch {what} from {from}: {action} {}: {source}", path.display())]
    Io {
        /// `parameters` or the module.
        what: String,
        /// The source.
        from: String,
        /// What failed (`create`, `run`, `wait for`...).
        action: &'static str,
        /// The path or program it failed on.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The node's name cannot be one path component of the server's tree.
    #[error("node {node:?}: not a node name (letters, digits, '_', '-', '.', no leading '.')")]
    BadNodeName {
        /// The name.
        node: String,
    },
    /// The server has no such folder, or does not show it to this node.
    #[error("fetch {what} from {from}: not on the server (or not for this node)")]
    NotOnServer {
        /// `parameters/NODE` or the module.
        what: String,
        /// The source.
        from: String,
    },
    /// rsync ran and failed; `message` is its own stderr, trimmed.
    #[error("fetch {what} from {from}: {message}")]
    Rsync {
        /// `parameters` or the module.
        what: String,
        /// The source.
        from: String,
        /// rsync's message.
        message: String,
        /// Its exit status (128 + N when signal N killed it).
        status: i32,
        /// Its resource usage, for the report (boxed: it would double the size of every
        /// `Result` that carries this error).
        rusage: Box<Usage>,
        /// Wall time until it failed.
        elapsed: Duration,
    },
}

impl FetchError {
    /// The measured resource usage and wall time of an rsync that ran and failed, for the
    /// report's `fetch` step; `None` when nothing ran.
    pub fn usage(&self) -> Option<(Usage, Duration)> {
        match self {
            FetchError::Rsync {
                rusage, elapsed, ..
            } => Some((**rusage, *elapsed)),
            _ => None,
        }
    }
}

/// One module's name and the outcome of its fetch.
type ModuleFetch = (String, Result<Fetched, FetchError>);

/// Fetches parameters and modules from one [`Source`] into one cache.
#[derive(Debug)]
pub struct Fetcher {
    source: Source,
    rsync_cmd: Vec<String>,
    cache: PathBuf,
    jobs: usize,
    /// With a site source: the node, whose parameters alone are fetched, in one session.
    node: Option<String>,
    /// Modules the parameters' session brought along, until they are asked for.
    prefetched: Mutex<Vec<ModuleFetch>>,
    /// Every module asked for, so the cache can drop the others ([`Fetcher::prune`]).
    asked: Mutex<Vec<String>>,
}

impl Fetcher {
    /// A fetcher from `source` into `cache` (`STATE/cache`), running at most `jobs` rsyncs at
    /// once (0 means 1). `rsync_cmd` is the parameter `disco/client/cmds/rsync` (default
    /// [`DEFAULT_RSYNC`]), split by shell-words rules; `--delete` is appended when it has no
    /// `--del*` option, because the cache must mirror the server. A local source ignores it.
    pub fn new(
        source: Source,
        rsync_cmd: Option<&str>,
        cache: PathBuf,
        jobs: usize,
    ) -> Result<Fetcher, FetchError> {
        // A local source runs no rsync, so its command does not matter and cannot fail it.
        let text = match source {
            Source::Local(_) => DEFAULT_RSYNC,
            Source::Rsync(_) => rsync_cmd.unwrap_or(DEFAULT_RSYNC),
        };
        let bad = |why: String| FetchError::BadCommand {
            command: text.to_owned(),
            why,
        };
        let mut argv = shell_words::split(text).map_err(|e| bad(e.to_string()))?;
        if argv.is_empty() {
            return Err(bad("it is empty".to_owned()));
        }
        // `--del`, `--delete`, `--delete-after`, `--delete-delay`...: any of them deletes.
        if !argv.iter().skip(1).any(|a| a.starts_with("--del")) {
            argv.push("--delete".to_owned());
        }
        // Absolute, so the destination argument can never look like an option to rsync.
        let cache = std::path::absolute(&cache).map_err(|e| FetchError::Io {
            what: "cache".to_owned(),
            from: source.to_string(),
            action: "resolve",
            path: cache.clone(),
            source: e,
        })?;
        Ok(Fetcher {
            source,
            rsync_cmd: argv,
            cache,
            jobs: jobs.max(1),
            node: None,
            prefetched: Mutex::new(Vec::new()),
            asked: Mutex::new(Vec::new()),
        })
    }

    /// The fetcher of `node`'s dance. With a site source ([`Source::is_site`]) it fetches
    /// `parameters/disco` and `parameters/NODE` only (and drops any other node's parameters
    /// from the cache), together with the modules the cache holds, in one rsync session.
    pub fn for_node(mut self, node: &str) -> Result<Fetcher, FetchError> {
        if self.source.is_site() {
            // It becomes a path below the site: one harmless component.
            if !valid_module_name(node) {
                return Err(FetchError::BadNodeName {
                    node: node.to_owned(),
                });
            }
            self.node = Some(node.to_owned());
        }
        Ok(self)
    }

    /// The source.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The rsync argv, before the source and destination disco appends.
    pub fn rsync_argv(&self) -> &[String] {
        &self.rsync_cmd
    }

    /// The parameters: for a local source its `parameters/` in place (no copy); for rsync,
    /// `BASE/parameters/` mirrored into `cache/parameters/`.
    pub fn fetch_params(&self) -> Result<Fetched, FetchError> {
        if let Some(node) = &self.node {
            return self.fetch_site_params(node);
        }
        self.fetch(
            "parameters",
            Path::new("parameters"),
            self.cache.join("parameters"),
        )
    }

    /// Modules by name, at most `jobs` rsyncs at once, each into `cache/modules/NAME/` (a local
    /// source's `modules/NAME/` in place). One result per name, in the input order; a failed
    /// fetch fails only its own module.
    pub fn fetch_modules(&self, names: &[String]) -> Vec<Result<Fetched, FetchError>> {
        let mut results: Vec<Mutex<Option<Result<Fetched, FetchError>>>> =
            names.iter().map(|_| Mutex::new(None)).collect();
        // Bad and repeated names fail at once; two rsyncs into one directory would race.
        let mut todo = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let early = if !valid_module_name(name) {
                Some(FetchError::BadModuleName {
                    module: name.clone(),
                })
            } else if names[..i].contains(name) {
                Some(FetchError::Duplicate {
                    module: name.clone(),
                })
            } else {
                None
            };
            match early {
                Some(err) => *results[i].lock().unwrap() = Some(Err(err)),
                None => todo.push(i),
            }
        }
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(todo.iter().map(|&i| names[i].clone()));
        if self.node.is_some() {
            let mut rest = Vec::new();
            let mut prefetched = self.prefetched.lock().unwrap_or_else(|e| e.into_inner());
            for i in todo {
                match prefetched.iter().position(|(n, _)| *n == names[i]) {
                    Some(at) => *results[i].get_mut().unwrap() = Some(prefetched.remove(at).1),
                    None => rest.push(i),
                }
            }
            drop(prefetched);
            let wanted: Vec<String> = rest.iter().map(|&i| names[i].clone()).collect();
            if !wanted.is_empty() {
                let (_, got) = self.fetch_site(&[], &wanted);
                for (i, (_, r)) in rest.into_iter().zip(got) {
                    *results[i].get_mut().unwrap() = Some(r);
                }
            }
            return results
                .into_iter()
                .map(|slot| slot.into_inner().unwrap().expect("every name has a result"))
                .collect();
        }
        let next = AtomicUsize::new(0);
        let worker = || {
            while let Some(&i) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                let name = &names[i];
                let dest = self.cache.join("modules").join(name);
                let fetched = self.fetch(name, &Path::new("modules").join(name), dest);
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(fetched);
            }
        };
        let workers = self.jobs.min(todo.len());
        if workers <= 1 {
            worker();
        } else {
            std::thread::scope(|scope| {
                for _ in 0..workers {
                    scope.spawn(worker);
                }
            });
        }
        results
            .into_iter()
            .map(|slot| {
                slot.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("every name has a result")
            })
            .collect()
    }

    /// Removes from the cache every module this fetcher was not asked for (with a site source:
    /// the parameters' session fetched what the last dance used, which may be more than this
    /// one uses). Errors are ignored: it is a cache.
    pub fn prune(&self) {
        if self.node.is_none() {
            return;
        }
        let asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.cache.join("modules");
        for name in cached_dirs(&dir) {
            if !asked.contains(&name) {
                remove_entry(&dir.join(name));
            }
        }
    }

    /// A site source's parameters: `parameters/disco` and `parameters/NODE`, in one session
    /// with the modules the cache holds (they are handed out by [`Fetcher::fetch_modules`]).
    fn fetch_site_params(&self, node: &str) -> Result<Fetched, FetchError> {
        // Only this node's parameters may be in the merged tree: drop whatever else the cache
        // holds (an earlier layout's full tree).
        let params = self.cache.join("parameters");
        for entry in fs::read_dir(&params).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name != "disco" && name != node {
                remove_entry(&entry.path());
            }
        }
        let cached = cached_dirs(&self.cache.join("modules"));
        let paths = ["parameters/disco".to_owned(), format!("parameters/{node}")];
        let (params, modules) = self.fetch_site(&paths, &cached);
        let params = Fetched {
            path: self.cache.join("parameters"),
            ..params?
        };
        *self.prefetched.lock().unwrap_or_else(|e| e.into_inner()) = modules;
        if !self.cache.join("parameters").join(node).is_dir() {
            return Err(FetchError::NotOnServer {
                what: format!("parameters/{node}"),
                from: self.source.to_string(),
            });
        }
        Ok(params)
    }

    /// One rsync session from a site source: the folders `paths` (below the site) and the
    /// `modules`, each mirrored to the same place below the cache (`--relative`); a folder the
    /// server lacks (or hides from this node) is deleted from the cache
    /// (`--delete-missing-args`) and its module fails with [`FetchError::NotOnServer`]. The
    /// session's usage goes to the first result; the modules' own results carry none.
    fn fetch_site(
        &self,
        paths: &[String],
        modules: &[String],
    ) -> (Result<Fetched, FetchError>, Vec<ModuleFetch>) {
        let Source::Rsync(base) = &self.source else {
            unreachable!("only a site source fetches in one session")
        };
        let what = if paths.is_empty() {
            "modules".to_owned()
        } else {
            "parameters".to_owned()
        };
        let rels: Vec<String> = paths
            .iter()
            .cloned()
            .chain(modules.iter().map(|m| format!("modules/{m}")))
            .collect();
        let from: Vec<String> = rels.iter().map(|r| format!("{base}./{r}")).collect();
        let dests: Vec<PathBuf> = rels.iter().map(|r| self.cache.join(r)).collect();
        let extra = ["--relative", "--delete-missing-args"];
        let session = self.rsync(
            &what,
            &extra,
            &from,
            &dests,
            self.cache.clone(),
            Instant::now(),
        );
        let results = modules
            .iter()
            .map(|m| {
                let path = self.cache.join("modules").join(m);
                let r = match &session {
                    Err(e) => Err(e.for_module(m, &self.source.to_string())),
                    Ok(_) if !path.is_dir() => Err(FetchError::NotOnServer {
                        what: m.clone(),
                        from: self.source.to_string(),
                    }),
                    Ok(_) => Ok(Fetched {
                        path,
                        rusage: None,
                        elapsed: Duration::ZERO,
                    }),
                };
                (m.clone(), r)
            })
            .collect();
        (session, results)
    }

    /// Fetches `what` (`parameters` or a module name), found at `rel` under a local source, or
    /// as rsync module/directory `what` under an rsync base, into `dest`.
    fn fetch(&self, what: &str, rel: &Path, dest: PathBuf) -> Result<Fetched, FetchError> {
        let start = Instant::now();
        match &self.source {
            Source::Local(root) => {
                let path = root.join(rel);
                if !path.is_dir() {
                    return Err(FetchError::Missing {
                        what: what.to_owned(),
                        from: self.source.to_string(),
                        path,
                    });
                }
                Ok(Fetched {
                    path,
                    rusage: None,
                    elapsed: start.elapsed(),
                })
            }
            Source::Rsync(base) => self.rsync(
                what,
                &[],
                &[Source::rsync_arg(base, what)],
                std::slice::from_ref(&dest),
                dest.clone(),
                start,
            ),
        }
    }

    /// Runs the rsync command with `extra` options, the sources `from` and `dest/`, and reaps
    /// it with wait4 for its usage. `writes` are the folders it may write (none may be or lie
    /// below a symlink within the cache).
    fn rsync(
        &self,
        what: &str,
        extra: &[&str],
        from: &[String],
        writes: &[PathBuf],
        dest: PathBuf,
        start: Instant,
    ) -> Result<Fetched, FetchError> {
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| FetchError::Io {
                what: what.to_owned(),
                from: self.source.to_string(),
                action,
                path,
                source,
            }
        };
        // A symlink here would let --delete reach outside the cache.
        // (The cache itself may be a symlink: the user put it there.)
        let below_cache = writes
            .iter()
            .flat_map(|w| w.ancestors().take_while(|dir| *dir != self.cache));
        for dir in below_cache {
            if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(FetchError::Symlink {
                    what: what.to_owned(),
                    from: self.source.to_string(),
                    path: dir.to_path_buf(),
                });
            }
        }
        fs::create_dir_all(&dest).map_err(io_err("create", &dest))?;
        let mut stderr =
            stderr_file(&self.cache).map_err(io_err("create a file in", &self.cache))?;
        let program = Path::new(&self.rsync_cmd[0]);
        let child = Command::new(program)
            .args(&self.rsync_cmd[1..])
            .args(extra)
            .args(from)
            // rsync reads `DIR/` as "into DIR"; the path is ours and absolute or cache-relative.
            .arg(format!("{}/", dest.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.try_clone().map_err(io_err("dup", &self.cache))?)
            .spawn()
            .map_err(io_err("run", program))?;
        // std's Child is dropped unreaped on purpose: wait4 on its pid reaps it and gives the
        // rusage of rsync and of the children it waited for (ssh), per fetch even when several
        // run at once (getrusage(RUSAGE_CHILDREN) deltas would mix parallel fetches up).
        let pid = child.id() as i32;
        drop(child);
        let (ended, raw) = sys::wait4(pid, false)
            .map_err(io_err("wait for", program))?
            .expect("a blocking wait4 returns the process");
        let elapsed = start.elapsed();
        let status = match ended {
            Ended::Exited(0) => {
                return Ok(Fetched {
                    path: dest,
                    rusage: Some(Usage::from_raw(&raw, elapsed)),
                    elapsed,
                })
            }
            Ended::Exited(code) => code,
            Ended::Signaled(sig) => 128 + sig,
        };
        // stderr is a file, not a pipe: a process rsync leaves behind (an ssh control master)
        // cannot keep us waiting for an end of file.
        let mut text = String::new();
        let _ = stderr.rewind();
        let _ = stderr.read_to_string(&mut text);
        Err(FetchError::Rsync {
            what: what.to_owned(),
            from: self.source.to_string(),
            message: rsync_message(&text, ended),
            status,
            rusage: Box::new(Usage::from_raw(&raw, elapsed)),
            elapsed,
        })
    }
}

impl FetchError {
    /// The same failure of a shared session, told for one module of it.
    fn for_module(&self, module: &str, source: &str) -> FetchError {
        match self {
            FetchError::Rsync {
                from,
                message,
                status,
                rusage,
                elapsed,
                ..
            } => FetchError::Rsync {
                what: module.to_owned(),
                from: from.clone(),
                message: message.clone(),
                status: *status,
                rusage: rusage.clone(),
                elapsed: *elapsed,
            },
            other => FetchError::Rsync {
                what: module.to_owned(),
                from: source.to_owned(),
                message: other.to_string(),
                status: 0,
                rusage: Box::default(),
                elapsed: Duration::ZERO,
            },
        }
    }
}

/// The names in `dir` that could be modules (or nodes), sorted; none when it cannot be read.
fn cached_dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| valid_module_name(n))
        .collect();
    names.sort();
    names
}

/// Removes a cache entry, never following a symlink (removes the link itself).
fn remove_entry(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// A fresh, already unlinked file in `dir` for one rsync's stderr.
fn stderr_file(dir: &Path) -> io::Result<File> {
    static N: AtomicU64 = AtomicU64::new(0);
    fs::create_dir_all(dir)?;
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".rsync-stderr-{}-{n}", std::process::id()));
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    fs::remove_file(&path)?;
    Ok(file)
}

/// rsync's stderr as one line: its own messages, without the generic `rsync error: ... (code
/// N)` summary when something more specific precedes it, joined by `; `.
pub fn rsync_message(stderr: &str, ended: Ended) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let specific: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with("rsync error:"))
        .collect();
    let chosen = if specific.is_empty() { lines } else { specific };
    if !chosen.is_empty() {
        return chosen.join("; ");
    }
    match ended {
        Ended::Exited(code) => format!("rsync exited with status {code} and said nothing"),
        Ended::Signaled(sig) => format!("rsync was killed by signal {sig}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsync(text: &str) -> String {
        match text.parse::<Source>().unwrap() {
            Source::Rsync(base) => base,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn rsync_forms_become_bases() {
        assert_eq!(rsync("disco@server"), "disco@server::");
        assert_eq!(
            rsync("disco@server.example.com::"),
            "disco@server.example.com::"
        );
        assert_eq!(rsync("server::"), "server::");
        assert_eq!(rsync("server::site"), "server::site/");
        assert_eq!(rsync("rsync://127.0.0.1:8873/"), "rsync://127.0.0.1:8873/");
        assert_eq!(rsync("rsync://127.0.0.1:8873"), "rsync://127.0.0.1:8873/");
        assert_eq!(rsync("rsync://host/site"), "rsync://host/site/");
        assert_eq!(rsync("rsync://u@host:1/a/b/"), "rsync://u@host:1/a/b/");
        assert_eq!(rsync("rsync://[::1]:873/"), "rsync://[::1]:873/");
        assert_eq!(rsync("rsync://[::1]"), "rsync://[::1]/");
        assert_eq!(
            Source::rsync_arg(&rsync("disco@server"), "testmodule-1.0"),
            "disco@server::testmodule-1.0/"
        );
    }

    #[test]
    fn a_base_naming_an_rsync_module_is_a_site() {
        for site in [
            "h::site",
            "u@h::site/sub",
            "rsync://h/site",
            "rsync://u@h:873/s/",
        ] {
            assert!(site.parse::<Source>().unwrap().is_site(), "{site}");
        }
        for bare in ["h::", "u@h", "rsync://h/", "rsync://h:873", "."] {
            assert!(!bare.parse::<Source>().unwrap().is_site(), "{bare}");
        }
    }

    #[test]
    fn directories_are_local_and_absolute() {
        let here = std::env::current_dir().unwrap();
        assert_eq!(
            ".".parse::<Source>().unwrap(),
            Source::Local(here.join("."))
        );
        let tmp = std::env::temp_dir();
        assert_eq!(
            tmp.to_str().unwrap().parse::<Source>().unwrap(),
            Source::Local(tmp)
        );
    }

    #[test]
    fn bad_sources_are_named() {
        for text in [
            "server",
            "",
            "/no/such/dir/disco",
            "./no-such-dir",
            "-oProxyCommand=x@host",
            "user@-oProxyCommand=x",
            "::",
            "rsync://",
            "rsync://host:port/",
            "a b@host",
            "x@host\n",
        ] {
            let err = text.parse::<Source>().unwrap_err();
            assert!(
                matches!(err, FetchError::BadSource { .. }),
                "{text:?}: {err}"
            );
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
        }
    }

    #[test]
    fn module_names() {
        for ok in ["testmodule-1.0", "a", "A_b.c-9"] {
            assert!(valid_module_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "é", "a::b"] {
            assert!(!valid_module_name(bad), "{bad}");
        }
    }

    #[test]
    fn command_gets_delete_once() {
        let f = |cmd| {
            Fetcher::new(Source::Rsync("h::".into()), cmd, "/c".into(), 1)
                .unwrap()
                .rsync_cmd
        };
        assert_eq!(f(None), ["rsync", "-aHAX", "--delete"]);
        assert_eq!(
            f(Some(
                r#"rsync -qaWHe "ssh -i /home/disco/.ssh/id_rsa_disco""#
            )),
            [
                "rsync",
                "-qaWHe",
                "ssh -i /home/disco/.ssh/id_rsa_disco",
                "--delete"
            ]
        );
        assert_eq!(
            f(Some("rsync -a --delete-after")),
            ["rsync", "-a", "--delete-after"]
        );
        for bad in ["", "  ", "rsync 'unclosed"] {
            let err =
                Fetcher::new(Source::Rsync("h::".into()), Some(bad), "/c".into(), 1).unwrap_err();
            assert!(
                matches!(err, FetchError::BadCommand { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn messages_keep_rsyncs_own_words() {
        let text = "rsync: [sender] link_stat \"/x\" (in m) failed: No such file or directory (2)\n\
                    rsync error: some files/attrs were not transferred (see previous errors) (code 23)\n";
        assert_eq!(
            rsync_message(text, Ended::Exited(23)),
            "rsync: [sender] link_stat \"/x\" (in m) failed: No such file or directory (2)"
        );
        assert_eq!(
            rsync_message("rsync error: x (code 5)\n", Ended::Exited(5)),
            "rsync error: x (code 5)"
        );
        assert_eq!(
            rsync_message("", Ended::Exited(12)),
            "rsync exited with status 12 and said nothing"
        );
    }

    #[test]
    fn bad_and_repeated_module_names_fail_alone() {
        let fetcher =
            Fetcher::new(Source::Local("/nonexistent".into()), None, "/c".into(), 2).unwrap();
        let names: Vec<String> = ["../etc", "a", "a"].map(String::from).to_vec();
        let results = fetcher.fetch_modules(&names);
        assert!(matches!(results[0], Err(FetchError::BadModuleName { .. })));
        assert!(matches!(results[1], Err(FetchError::Missing { .. })));
        assert!(matches!(results[2], Err(FetchError::Duplicate { .. })));
    }
}
