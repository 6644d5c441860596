//! The fetcher: what a dance asks for (the parameters, then its node's modules) and how each
//! layout brings it into the cache, in parallel sessions (`--jobs`) or one session per dance
//! (a site).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::{valid_module_name, FetchError, Fetched, ModuleFetch, Source, DEFAULT_RSYNC};

/// Fetches parameters and modules from one [`Source`] into one cache.
#[derive(Debug)]
pub struct Fetcher {
    pub(super) source: Source,
    pub(super) rsync_cmd: Vec<String>,
    pub(super) cache: PathBuf,
    pub(super) jobs: usize,
    /// With a site source: the node, whose parameters alone are fetched, in one session.
    pub(super) node: Option<String>,
    /// Modules the parameters' session brought along, until they are asked for.
    pub(super) prefetched: Mutex<Vec<ModuleFetch>>,
    /// Every module asked for, so the cache can drop the others ([`Fetcher::prune`]).
    pub(super) asked: Mutex<Vec<String>>,
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

    /// Fetches `what` (`parameters` or a module name), found at `rel` under a local source, or
    /// as rsync module/directory `what` under an rsync base, into `dest`.
    pub(super) fn fetch(
        &self,
        what: &str,
        rel: &Path,
        dest: PathBuf,
    ) -> Result<Fetched, FetchError> {
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
}
