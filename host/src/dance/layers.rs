//! The layers of one dance: for each module, one scratch layer per filesystem, stacked on the
//! scratch layers of the modules that succeeded before it (overlayfs takes several lower
//! layers), so each module's diff is its own and a later module sees earlier changes; and the
//! disco layer, a read-only lower layer holding what disco offers scripts: the parameter tree
//! at `/var/disco/parameters` and the module's scripts and templates under
//! `/var/disco/modules/NAME`. Being a lower layer, none of it lands in a scratch layer or a diff.
//!
//! ```text
//! RUN/disco/<path of /var/disco within its filesystem>/{parameters,modules/NAME/...}
//! RUN/m<K>/fs<I>/{upper,work}         module K's scratch layer on filesystem I
//! RUN/m<K>/spec.json                   module K's sandbox
//! RUN/m<K>/t<J>/...                    template J's throwaway layers and sandbox
//! ```

use std::path::{Path, PathBuf};

use crate::diff::{self, Change, DiffOptions, Layer};
use crate::sandbox::{LayerInfo, RunDir, ShimConfig, Spec, Target};

use super::DanceError;

/// Where disco's files appear inside every sandbox of a dance.
pub const DISCO_DIR: &str = "/var/disco";

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
    /// Scratch layers (one per filesystem) of the modules that succeeded, oldest first.
    done: Vec<Vec<PathBuf>>,
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
            done: Vec::new(),
            hostname,
        })
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
            lowers_above.extend(self.done.iter().rev().map(|uppers| uppers[i].clone()));
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

    fn save_spec(
        &self,
        path: &Path,
        layers: Vec<LayerInfo>,
        noop: bool,
        defer: Option<PathBuf>,
        results: Option<PathBuf>,
    ) -> Result<(), DanceError> {
        let spec = Spec {
            merged: path.with_extension("merged"),
            layers,
            hide: self.target.hide(),
            noop,
            shims: ShimConfig::default(),
            tools: std::env::current_exe().ok(),
            hostname: self.hostname.clone(),
            defer,
            results,
        };
        spec.save(path).map_err(DanceError::Sandbox)
    }

    /// Module `k`'s folder.
    pub fn module_dir(&self, k: usize) -> PathBuf {
        self.run.path.join(format!("m{k}"))
    }

    /// Writes module `k`'s sandbox (its own scratch layers on the stack) and returns the
    /// spec's path.
    pub fn module_spec(&self, k: usize, noop: bool) -> Result<PathBuf, DanceError> {
        let dir = self.module_dir(k);
        let layers = self.layers(&dir, true, &[])?;
        let path = dir.join("spec.json");
        // Live, service commands are recorded here by the shims, to run after the merge.
        let defer = (!noop).then(|| self.deferred(k));
        if let Some(file) = &defer {
            std::fs::write(file, "").map_err(io(file))?;
        }
        let results = self.results(k);
        std::fs::write(&results, "").map_err(io(&results))?;
        self.save_spec(&path, layers, noop, defer, Some(results))?;
        Ok(path)
    }

    /// Where module `k`'s pieces report, one JSON line each.
    pub fn results(&self, k: usize) -> PathBuf {
        self.module_dir(k).join("results.jsonl")
    }

    /// Where module `k`'s deferred service commands are recorded (live only).
    pub fn deferred(&self, k: usize) -> PathBuf {
        self.module_dir(k).join("deferred.jsonl")
    }

    /// Module `k`'s scratch layers with the live folder beneath each and the top of its
    /// filesystem (where a merge stages), for the merge.
    pub fn merge_layers(&self, k: usize) -> Vec<(PathBuf, PathBuf, PathBuf)> {
        self.module_uppers(k)
            .into_iter()
            .zip(&self.target.filesystems)
            .map(|(upper, fs)| (upper, self.target.root.join(fs), self.target.root.join(fs)))
            .collect()
    }

    /// Module `k`'s scratch layers, one per filesystem.
    pub fn module_uppers(&self, k: usize) -> Vec<PathBuf> {
        (0..self.target.filesystems.len())
            .map(|i| self.module_dir(k).join(format!("fs{i}/upper")))
            .collect()
    }

    /// A throwaway noop sandbox for template `j` of module `k`, `files` (the module's files
    /// tree, which mirrors `/`) stacked on top so the template sees them delivered: templates
    /// always render in noop, and whatever they write is discarded.
    pub fn template_spec(&self, k: usize, j: usize, files: &Path) -> Result<PathBuf, DanceError> {
        let dir = self.module_dir(k).join(format!("t{j}"));
        // Each filesystem gets the part of the files tree that lies on it.
        let extra: Vec<Option<PathBuf>> = self
            .target
            .filesystems
            .iter()
            .map(|fs| Some(files.join(fs)).filter(|p| p.is_dir()))
            .collect();
        let layers = self.layers(&dir, true, &extra)?;
        let path = dir.join("spec.json");
        self.save_spec(&path, layers, true, None, None)?;
        Ok(path)
    }

    /// Module `k` succeeded: later modules stack on its layer.
    pub fn keep(&mut self, k: usize) {
        let uppers = self.module_uppers(k);
        self.done.push(uppers);
    }

    /// What module `k`'s scratch layers change against everything beneath them (the live
    /// system and the layers of the modules kept before it).
    ///
    /// Where modules were kept before, the lower side is a read-only overlay of their layers
    /// and the live directory, mounted in a private mount namespace of a thread of our own, so
    /// that it is never visible to anyone else and vanishes with the thread.
    pub fn diff(&self, k: usize) -> Result<Vec<Change>, DanceError> {
        let uppers = self.module_uppers(k);
        let opts = DiffOptions {
            names_root: self.target.root.clone(),
            ..DiffOptions::default()
        };
        let stacked = !self.done.is_empty();
        let views = self.module_dir(k).join("views");
        let layers: Vec<Layer> = self
            .target
            .filesystems
            .iter()
            .enumerate()
            .map(|(i, fs)| Layer {
                upper: uppers[i].clone(),
                lower: if stacked {
                    views.join(format!("fs{i}"))
                } else {
                    self.target.root.join(fs)
                },
                mount_point: Path::new("/").join(fs),
            })
            .collect();
        if !stacked {
            return diff::compute(&layers, &opts).map_err(DanceError::Diff);
        }
        let done = &self.done;
        let root = &self.target.root;
        let filesystems = &self.target.filesystems;
        let changes = std::thread::scope(|s| {
            s.spawn(|| {
                crate::sys::private_mount_namespace().map_err(|e| DanceError::View {
                    what: "unshare a mount namespace".into(),
                    errno: e,
                })?;
                let empty = views.join("empty");
                for (i, fs) in filesystems.iter().enumerate() {
                    let view = views.join(format!("fs{i}"));
                    let mut live = root.join(fs);
                    let mut lowers: Vec<&Path> =
                        done.iter().rev().map(|u| u[i].as_path()).collect();
                    // As in the sandbox: only layers nested in the live folder need its view.
                    if lowers.iter().any(|l| l.starts_with(&live)) {
                        let own = views.join(format!("live{i}"));
                        crate::sys::mount_live_view(&live, &empty, &own).map_err(|e| {
                            DanceError::View {
                                what: format!("mount a read-only view of {}", live.display()),
                                errno: e,
                            }
                        })?;
                        live = own;
                    }
                    std::fs::create_dir_all(&view).map_err(io(&view))?;
                    lowers.push(&live);
                    crate::sys::mount_overlay_readonly(&lowers, &view).map_err(|e| {
                        DanceError::View {
                            what: format!("mount the lower view {}", view.display()),
                            errno: e,
                        }
                    })?;
                }
                diff::compute(&layers, &opts).map_err(DanceError::Diff)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(DanceError::View {
                    what: "diff the layers".into(),
                    errno: nix::errno::Errno::EIO,
                })
            })
        });
        // The views are filesystems of their own; report the live filesystem's device, as an
        // unstacked diff does.
        let mut changes = changes?;
        use std::os::unix::fs::MetadataExt;
        let devices: Vec<(PathBuf, u64)> = filesystems
            .iter()
            .filter_map(|fs| {
                let dev = std::fs::metadata(root.join(fs)).ok()?.dev();
                Some((Path::new("/").join(fs), dev))
            })
            .collect();
        for change in &mut changes {
            let dev = devices
                .iter()
                .filter(|(mp, _)| change.path.starts_with(mp))
                .max_by_key(|(mp, _)| mp.components().count())
                .map(|(_, dev)| *dev);
            for meta in [change.old.as_mut(), change.new.as_mut()]
                .into_iter()
                .flatten()
            {
                let node = matches!(
                    meta.file_type,
                    crate::diff::FileType::CharDevice | crate::diff::FileType::BlockDevice
                );
                if let (false, Some(dev)) = (node, dev) {
                    meta.device = dev;
                }
            }
        }
        Ok(changes)
    }
}
