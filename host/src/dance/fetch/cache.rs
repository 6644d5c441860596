//! The cache under `STATE/cache`: what it holds, and dropping what the node no longer uses.

use std::fs::{self};
use std::path::Path;

use super::{valid_module_name, Fetcher};

/// The names in `dir` that could be modules (or nodes), sorted; none when it cannot be read.
pub(super) fn cached_dirs(dir: &Path) -> Vec<String> {
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
pub(super) fn remove_entry(path: &Path) {
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

impl Fetcher {
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
}
