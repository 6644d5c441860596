//! The copy-on-write sandbox: an overlay of every real filesystem under the target root, in
//! private namespaces, so scripts run for real while every write lands in a scratch layer.
//!
//! [`Sandbox::prepare`] plans a run (which filesystems, which layers) in the caller's process;
//! [`Sandbox::command`] returns the command that re-executes `disco __sandbox`, which performs
//! [`enter::enter`] (the namespace and mount recipe) in a fresh process and then runs the
//! payload. Nothing the sandbox mounts is ever visible outside it, and it all disappears when
//! its last process exits.

pub mod enter;
pub mod mountinfo;
pub mod run;
pub mod shims;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

pub use run::{LayerInfo, RunDir, RunInfo};
pub use shims::ShimConfig;

/// What can go wrong preparing or entering a sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The state directory could not be used.
    #[error("state directory: {path}: {source}")]
    State {
        /// The file or folder at fault.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The target root is not a directory.
    #[error("root {0} is not a directory")]
    BadRoot(PathBuf),
    /// No run has finished yet.
    #[error("no sandbox run in {0} yet (run 'disco shell' or 'disco dance --noop' first)")]
    NoRun(PathBuf),
    /// No run of that id.
    #[error("no sandbox run '{0}'")]
    UnknownRun(String),
    /// A system call of the recipe failed.
    #[error("cannot {call} {detail}: {errno}{}", hint(*.errno))]
    Syscall {
        /// What was being done (`mount overlay`, `unshare`...).
        call: &'static str,
        /// On what.
        detail: String,
        /// The error.
        errno: nix::errno::Errno,
    },
    /// Setting up `/dev` or the shims failed.
    #[error("cannot prepare {path} inside the sandbox: {source}")]
    Prepare {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Dropping capabilities failed.
    #[error("cannot drop capabilities: {0}")]
    Caps(String),
    /// The payload command could not be executed.
    #[error("cannot execute {command}: {source}")]
    Exec {
        /// The command.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What is missing when the kernel refuses: said once, plainly.
fn hint(errno: nix::errno::Errno) -> &'static str {
    match errno {
        nix::errno::Errno::EPERM => {
            " (the sandbox needs root: CAP_SYS_ADMIN for namespaces and overlay mounts)"
        }
        nix::errno::Errno::ENODEV => " (the kernel has no overlay filesystem: modprobe overlay)",
        nix::errno::Errno::EINVAL => " (the kernel refused these overlay options or this layer)",
        _ => "",
    }
}

/// The plan `disco __sandbox` carries out, written to the run's `spec.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    /// Mount point of the root overlay.
    pub merged: PathBuf,
    /// The overlays, shallowest first.
    pub layers: Vec<LayerInfo>,
    /// Paths inside the sandbox covered by an empty read-only tmpfs (the state directory).
    pub hide: Vec<PathBuf>,
    /// Noop: new PID namespace, dropped capabilities, shims on `PATH`.
    pub noop: bool,
    /// The shims, in noop.
    pub shims: ShimConfig,
}

/// How to set a sandbox up.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// The target root (`/`, or a disposable tree).
    pub root: PathBuf,
    /// Where runs and layers are kept.
    pub state_dir: PathBuf,
    /// Whether this is a noop run.
    pub noop: bool,
    /// The shims for noop.
    pub shims: ShimConfig,
}

/// A prepared run: its folder (locked) and its plan.
#[derive(Debug)]
pub struct Sandbox {
    /// The run's folder.
    pub run: RunDir,
    /// What it overlays.
    pub info: RunInfo,
    state_dir: PathBuf,
    spec_path: PathBuf,
}

/// How many finished runs are kept.
pub const KEEP_RUNS: usize = 5;

impl Sandbox {
    /// Plans a run: finds the filesystems under the root, makes a scratch layer for each, and
    /// writes the plan. Nothing is mounted yet.
    pub fn prepare(opts: &SandboxOptions) -> Result<Sandbox, SandboxError> {
        let root = opts
            .root
            .canonicalize()
            .ok()
            .filter(|r| r.is_dir())
            .ok_or_else(|| SandboxError::BadRoot(opts.root.clone()))?;
        std::fs::create_dir_all(&opts.state_dir).map_err(|source| SandboxError::State {
            path: opts.state_dir.clone(),
            source,
        })?;
        let state_dir = opts
            .state_dir
            .canonicalize()
            .map_err(|source| SandboxError::State {
                path: opts.state_dir.clone(),
                source,
            })?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| {
            SandboxError::State {
                path: "/proc/self/mountinfo".into(),
                source,
            }
        })?;
        let filesystems = mountinfo::filesystems_under(
            &mountinfo::parse(&mountinfo),
            &root,
            std::slice::from_ref(&state_dir),
        );
        let run = RunDir::create(&state_dir)?;
        let mut layers = Vec::new();
        for (n, rel) in filesystems.iter().enumerate() {
            let (upper, work) = run.new_layer(n)?;
            layers.push(LayerInfo {
                mount_point: Path::new("/").join(rel),
                lower: root.join(rel),
                upper,
                work,
            });
        }
        let hide = state_dir
            .strip_prefix(&root)
            .map(|rel| vec![Path::new("/").join(rel)])
            .unwrap_or_default();
        let spec = Spec {
            merged: run.path.join("merged"),
            layers: layers.clone(),
            hide,
            noop: opts.noop,
            shims: opts.shims.clone(),
        };
        let spec_path = run.path.join("spec.json");
        let json = serde_json::to_vec_pretty(&spec).map_err(|e| SandboxError::State {
            path: spec_path.clone(),
            source: e.into(),
        })?;
        std::fs::write(&spec_path, json).map_err(|source| SandboxError::State {
            path: spec_path.clone(),
            source,
        })?;
        let info = RunInfo {
            id: run.id.clone(),
            root,
            noop: opts.noop,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            layers,
        };
        run.save(&info)?;
        Ok(Sandbox {
            run,
            info,
            state_dir,
            spec_path,
        })
    }

    /// The command that runs `argv` inside this sandbox. The caller sets its environment,
    /// working directory (a path inside the sandbox) and stdio.
    pub fn command(&self, argv: &[OsString]) -> Command {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("disco"));
        let mut cmd = Command::new(exe);
        cmd.arg("__sandbox")
            .arg(&self.spec_path)
            .arg("--")
            .args(argv);
        cmd
    }

    /// Marks this run as the latest, releases it, and prunes old runs.
    pub fn finish(self) -> Result<RunInfo, SandboxError> {
        run::set_latest(&self.state_dir, &self.run.id)?;
        let Sandbox {
            run,
            info,
            state_dir,
            ..
        } = self;
        drop(run);
        run::prune(&state_dir, KEEP_RUNS)?;
        Ok(info)
    }
}
