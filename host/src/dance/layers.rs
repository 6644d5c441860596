//! The layers of one dance: for each module, one scratch layer per filesystem, stacked on what
//! the modules that succeeded before it left (the last one's own scratch layer while its diff
//! is made, then all of them folded into one layer), so each module's diff is its own and a
//! later module sees earlier changes; and the disco layer, a read-only lower layer holding what
//! disco offers scripts: the parameter tree at `/var/disco/parameters` and the rendered
//! templates under `/var/disco/rendered/NAME` (the module itself is bound at
//! `/var/disco/modules/NAME`). Being a lower layer, none of it lands in a scratch layer or a
//! diff.
//!
//! ```text
//! RUN/disco/<path of /var/disco within its filesystem>/{parameters,modules/NAME,rendered/NAME}
//! RUN/done/fs<I>                       the kept modules' layer, folded, on filesystem I
//! RUN/m<K>/fs<I>/{upper,work}         module K's scratch layer on filesystem I
//! RUN/m<K>/rendered/...                its rendered templates, bound into its root
//! RUN/m<K>/templates/fs<I>/...         its templates' throwaway layers
//! RUN/m<K>/{root,templates.root,views} where the dance's sandbox mounts them
//! RUN/sandbox/{dev,proc,sys,empty}     what the dance's sandbox binds into every root
//! ```

use std::path::{Path, PathBuf};

use crate::sandbox::{LayerInfo, RunDir, Target};

use super::DanceError;

pub use crate::sandbox::paths::DISCO_DIR;

/// The layout of one dance's layers.
#[derive(Debug)]
pub struct Stack {
    /// What is overlaid.
    pub target: Target,
    /// The dance's run folder.
    pub run: RunDir,
    /// The filesystem that holds `/var/disco`, and the host folder that appears there.
    disco_fs: usize,
    disco_host: PathBuf,
    disco_layer: PathBuf,
    /// The layer (one per filesystem) of everything the modules that succeeded changed, once
    /// one did: their scratch layers folded into one (see [`fold`]).
    done: Option<Vec<PathBuf>>,
    /// A module that succeeded whose layer is not folded yet (its diff is being made): the
    /// next module stacks on its scratch layers, then on the folded layer.
    pending: Option<usize>,
    /// The node, as the sandboxes' host name.
    hostname: Option<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DanceError + '_ {
    move |source| DanceError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Stack {
    /// Lays out a dance under a new run folder.
    pub fn new(target: Target, run: RunDir, hostname: Option<String>) -> Result<Stack, DanceError> {
        let (disco_fs, rel) = target.filesystem_of(Path::new(DISCO_DIR));
        let disco_layer = run.path.join("disco");
        let disco_host = disco_layer.join(rel);
        std::fs::create_dir_all(&disco_host).map_err(io(&disco_host))?;
        Ok(Stack {
            target,
            run,
            disco_fs,
            disco_host,
            disco_layer,
            done: None,
            pending: None,
            hostname,
        })
    }

    /// The node, as the sandboxes' host name.
    pub fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref()
    }

    /// The host folder that appears as `/var/disco` inside.
    pub fn disco_host(&self) -> &Path {
        &self.disco_host
    }

    fn layers(
        &self,
        base: &Path,
        with_disco: bool,
        extra_top: &[Option<PathBuf>],
    ) -> Result<Vec<LayerInfo>, DanceError> {
        let mut layers = Vec::new();
        for (i, fs) in self.target.filesystems.iter().enumerate() {
            let dir = base.join(format!("fs{i}"));
            let (upper, work) = (dir.join("upper"), dir.join("work"));
            for d in [&upper, &work] {
                std::fs::create_dir_all(d).map_err(io(d))?;
            }
            let mut lowers_above = Vec::new();
            if with_disco && i == self.disco_fs {
                lowers_above.push(self.disco_layer.clone());
            }
            if let Some(Some(top)) = extra_top.get(i) {
                lowers_above.push(top.clone());
            }
            // What the modules before left comes with `restack`, just before the run.
            layers.push(LayerInfo {
                mount_point: Path::new("/").join(fs),
                lower: self.target.root.join(fs),
                upper,
                work,
                lowers_above,
            });
        }
        Ok(layers)
    }

    /// Stacks `layers` (laid out by [`Stack::module_layers`] or [`Stack::template_layers`],
    /// perhaps while an earlier module ran) on what the modules that succeeded left: the
    /// pending module's scratch layer, then the kept modules' folded layer.
    pub fn restack(&self, layers: &mut [LayerInfo]) {
        for (i, layer) in layers.iter_mut().enumerate() {
            if let Some(p) = self.pending {
                layer.lowers_above.push(self.module_uppers(p)[i].clone());
            }
            layer
                .lowers_above
                .extend(self.done.iter().map(|done| done[i].clone()));
        }
    }

    /// Module `k`'s folder.
    pub fn module_dir(&self, k: usize) -> PathBuf {
        self.run.path.join(format!("m{k}"))
    }

    /// Module `k`'s scratch layers, on the disco layer (see [`Stack::restack`] for the rest);
    /// the folders exist afterwards, as do its (empty) results and, live, deferred record.
    pub fn module_layers(&self, k: usize, noop: bool) -> Result<Vec<LayerInfo>, DanceError> {
        let layers = self.layers(&self.module_dir(k), true, &[])?;
        let mut files = vec![self.results(k)];
        if !noop {
            // Live, service commands are recorded here by the shims, to run after the merge.
            files.push(self.deferred(k));
        }
        for file in files {
            std::fs::write(&file, "").map_err(io(&file))?;
        }
        Ok(layers)
    }

    /// Where module `k`'s pieces report, one JSON line each.
    pub fn results(&self, k: usize) -> PathBuf {
        self.module_dir(k).join("results.jsonl")
    }

    /// Where module `k`'s deferred service commands are recorded (live only).
    pub fn deferred(&self, k: usize) -> PathBuf {
        self.module_dir(k).join("deferred.jsonl")
    }

    /// Module `k`'s scratch layers, each with the top of its filesystem relative to the root,
    /// for the merge.
    pub fn merge_layers(&self, k: usize) -> Vec<(PathBuf, PathBuf)> {
        self.module_uppers(k)
            .into_iter()
            .zip(self.target.filesystems.iter().cloned())
            .collect()
    }

    /// Module `k`'s scratch layers, one per filesystem.
    pub fn module_uppers(&self, k: usize) -> Vec<PathBuf> {
        (0..self.target.filesystems.len())
            .map(|i| self.module_dir(k).join(format!("fs{i}/upper")))
            .collect()
    }

    /// Throwaway layers for module `k`'s templates, `files` (the module's files tree, which
    /// mirrors `/`) stacked on top so the templates see them delivered: templates always
    /// render in noop, and whatever they write is discarded.
    pub fn template_layers(&self, k: usize, files: &Path) -> Result<Vec<LayerInfo>, DanceError> {
        let dir = self.module_dir(k).join("templates");
        // Each filesystem gets the part of the files tree that lies on it.
        let extra: Vec<Option<PathBuf>> = self
            .target
            .filesystems
            .iter()
            .map(|fs| Some(files.join(fs)).filter(|p| p.is_dir()))
            .collect();
        self.layers(&dir, true, &extra)
    }

    /// Per filesystem, the kept modules' folded layer, if any: what lies beneath the pending
    /// module's layer (and beneath a new module's, once settled).
    pub fn beneath(&self) -> Vec<Vec<PathBuf>> {
        (0..self.target.filesystems.len())
            .map(|i| self.done.iter().map(|done| done[i].clone()).collect())
            .collect()
    }

    /// Module `k`'s diff, as the worker makes it: its scratch layers against what lies
    /// beneath them now, within `timeout` (the module's).
    pub fn diff_job(&self, k: usize, timeout: std::time::Duration) -> super::sandbox::DiffJob {
        let layers = self
            .module_uppers(k)
            .into_iter()
            .zip(&self.target.filesystems)
            .map(|(upper, fs)| LayerInfo {
                mount_point: Path::new("/").join(fs),
                lower: self.target.root.join(fs),
                work: upper.with_file_name("work"),
                upper,
                lowers_above: Vec::new(),
            })
            .collect();
        super::sandbox::DiffJob {
            dir: self.module_dir(k),
            layers,
            beneath: self.beneath(),
            timeout: Some(timeout),
        }
    }

    /// Module `k` succeeded (noop): later modules see its changes, first stacked on its own
    /// (its diff, made meanwhile, reads what lies beneath, which must not change), then, once
    /// [`Stack::settle`]d, folded into the kept modules' layer.
    pub fn keep(&mut self, k: usize) -> Result<(), DanceError> {
        self.settle()?;
        self.pending = Some(k);
        Ok(())
    }

    /// Folds the pending module's scratch layer into the kept modules' layer, so that every
    /// module stacks on four layers at most, however many ran before it (each layer costs
    /// every lookup, and overlayfs takes 500). Nothing may read through a root stacked on
    /// these layers, nor a diff read them, meanwhile (a runner whose namespace is still being
    /// torn down, after it said it was done, reads nothing).
    pub fn settle(&mut self) -> Result<(), DanceError> {
        let Some(k) = self.pending.take() else {
            return Ok(());
        };
        let uppers = self.module_uppers(k);
        let done = match &self.done {
            Some(done) => done.clone(),
            None => {
                let dirs: Vec<PathBuf> = (0..uppers.len())
                    .map(|i| self.run.path.join(format!("done/fs{i}")))
                    .collect();
                for d in &dirs {
                    std::fs::create_dir_all(d).map_err(io(d))?;
                }
                self.done = Some(dirs.clone());
                dirs
            }
        };
        for (upper, into) in uppers.iter().zip(&done) {
            fold(upper, into).map_err(io(upper))?;
        }
        Ok(())
    }
}

/// Whether `dir` is an opaque directory of an overlay layer: it hides what lies beneath.
fn is_opaque(dir: &Path) -> bool {
    xattr::get(dir, "trusted.overlay.opaque").is_ok_and(|v| v.as_deref() == Some(b"y"))
}

/// Moves the scratch layer `upper` into `into`, the layer beneath it, so that `into` alone
/// shows what the two stacked showed, by the rules overlayfs reads layers with (no redirects,
/// no metacopy: the sandbox mounts with both off): an entry of `upper` replaces the one in
/// `into`, whiteouts and opaque directories included, except that a plain directory over a
/// directory merges into it, taking its attributes. Both must be on one filesystem.
pub fn fold(upper: &Path, into: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(upper)? {
        let entry = entry?;
        let from = entry.path();
        let to = into.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from)?;
        let existing = std::fs::symlink_metadata(&to).ok();
        if let Some(old) = &existing {
            if meta.is_dir() && old.is_dir() && !is_opaque(&from) {
                fold(&from, &to)?;
                dir_attrs(&meta, &from, &to)?;
                continue;
            }
            if old.is_dir() {
                std::fs::remove_dir_all(&to)?;
            } else {
                std::fs::remove_file(&to)?;
                if meta.is_dir() {
                    // A folder made where a whiteout (or a file) hid the live one: overlayfs
                    // marks it opaque only when that whiteout is in its own layer; folded over
                    // it, it must hide the live folder itself.
                    xattr::set(&from, "trusted.overlay.opaque", b"y")?;
                }
            }
        }
        std::fs::rename(&from, &to)?;
    }
    Ok(())
}

/// Gives directory `to` the attributes of `from` (a copy-up of it, which is what the module
/// left): owner, mode, times and the extended attributes that are not overlayfs's own.
fn dir_attrs(meta: &std::fs::Metadata, from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    for name in xattr::list(from)? {
        if name.to_string_lossy().starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(value) = xattr::get(from, &name)? {
            xattr::set(to, &name, &value)?;
        }
    }
    let times = std::fs::FileTimes::new()
        .set_accessed(meta.accessed()?)
        .set_modified(meta.modified()?);
    std::fs::File::open(to)?.set_times(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_or_skip() -> bool {
        let root = nix::unistd::geteuid().is_root();
        assert!(root || std::env::var_os("CI").is_none(), "CI runs as root");
        root
    }

    fn whiteout(path: &Path) {
        use nix::sys::stat::{mknod, Mode, SFlag};
        mknod(path, SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    }

    fn is_whiteout(path: &Path) -> bool {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        std::fs::symlink_metadata(path)
            .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
    }

    #[test]
    fn folding_keeps_what_the_two_layers_showed_stacked() {
        if !root_or_skip() {
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("disco-fold-{}", std::process::id()));
        let (lower, upper) = (base.join("lower"), base.join("upper"));
        for d in [
            "lower/etc/keep",
            "lower/etc/gone",
            "lower/opaque/old",
            "upper/etc/keep",
        ] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::write(lower.join("etc/a"), "old a").unwrap();
        std::fs::write(lower.join("etc/keep/k"), "k").unwrap();
        std::fs::write(lower.join("etc/gone/g"), "g").unwrap();
        std::fs::write(lower.join("opaque/old/o"), "o").unwrap();
        // The upper layer: a new a, a whiteout over a folder, a file added in a merged folder
        // that also changed mode, an opaque folder replacing one beneath.
        std::fs::write(upper.join("etc/a"), "new a").unwrap();
        whiteout(&upper.join("etc/gone"));
        std::fs::write(upper.join("etc/keep/new"), "n").unwrap();
        std::fs::set_permissions(
            upper.join("etc/keep"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::create_dir_all(upper.join("opaque")).unwrap();
        xattr::set(upper.join("opaque"), "trusted.overlay.opaque", b"y").unwrap();
        std::fs::write(upper.join("opaque/fresh"), "f").unwrap();

        fold(&upper, &lower).unwrap();
        let read = |p: &str| std::fs::read_to_string(lower.join(p)).ok();
        assert_eq!(read("etc/a").as_deref(), Some("new a"));
        assert!(
            is_whiteout(&lower.join("etc/gone")),
            "the whiteout replaces the folder"
        );
        assert_eq!(
            read("etc/keep/k").as_deref(),
            Some("k"),
            "merged, not replaced"
        );
        assert_eq!(read("etc/keep/new").as_deref(), Some("n"));
        let mode = std::fs::metadata(lower.join("etc/keep"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o7777,
            0o700,
            "the folder takes the upper layer's attributes"
        );
        assert!(
            !lower.join("opaque/old").exists(),
            "an opaque folder hides what was beneath"
        );
        assert_eq!(read("opaque/fresh").as_deref(), Some("f"));
        assert!(is_opaque(&lower.join("opaque")));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
