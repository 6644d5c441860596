//! A site (a base that names one rsync module, laid out like a local folder): the node's
//! parameters together with every module the cache holds from the last dance, in ONE session
//! (`--relative`, `--delete-missing-args`), then only the modules new to the node.

use std::fs::{self};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{cached_dirs, remove_entry, FetchError, Fetched, Fetcher, ModuleFetch, Source};

impl Fetcher {
    /// A site source's parameters: `parameters/disco` and `parameters/NODE`, in one session
    /// with the modules the cache holds (they are handed out by [`Fetcher::fetch_modules`]).
    pub(super) fn fetch_site_params(&self, node: &str) -> Result<Fetched, FetchError> {
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
    pub(super) fn fetch_site(
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
}
