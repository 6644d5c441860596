//! The copy-on-write sandbox: an overlay of every real filesystem under the target root, in
//! private namespaces, so scripts run for real while every write lands in a scratch layer.
//!
//! [`Sandbox::prepare`] plans a run (which filesystems, which layers) in the caller's process;
//! [`Sandbox::command`] returns the command that re-executes `disco __sandbox`, which performs
//! [`enter::enter`] (the namespace and mount recipe) in a fresh process and then runs the
//! payload. Nothing the sandbox mounts is ever visible outside it, and it all disappears when
//! its last process exits.

pub mod capabilities;
pub mod connect;
pub mod enter;
pub mod mountinfo;
pub mod mounts;
pub mod outbound;
pub mod paths;
pub mod pseudofs;
pub mod run;
pub mod seccomp;
pub mod shims;
pub mod signals;
pub mod terminal;

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
    /// A sandbox's set-up, written by the process that starts it, cannot be read.
    #[error("cannot read the sandbox's set-up {path}: {source}")]
    Setup {
        /// The set-up file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Inherited descriptors could not be closed before the sandbox was entered.
    #[error("cannot close inherited descriptors: {0}")]
    Descriptors(#[source] std::io::Error),
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
    Caps(#[from] caps::errors::CapsError),
    /// Noop's seccomp filter could not be compiled (an unknown architecture) or installed.
    #[error("cannot {what} the seccomp filter: {source}")]
    Seccomp {
        /// `compile` or `install`.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--network outbound`: slirp4netns could not be started or did not configure the
    /// network.
    #[error("cannot {what} slirp4netns: {source}")]
    Outbound {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A module's diff could not be made (it names the file at fault).
    #[error(transparent)]
    Diff(#[from] crate::diff::DiffError),
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

/// What a noop sandbox's network is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// A network namespace of its own with only loopback, up: nothing of the host's network
    /// is reachable (TCP and UDP on any address, abstract unix sockets, netlink to the host's
    /// stack), so a dry run calls no service.
    #[default]
    Loopback,
    /// Loopback, and outbound connections through a user-mode network stack
    /// (`slirp4netns`, see [`outbound`]), with the host's loopback unreachable. A script can
    /// then change a remote service: for sites whose scripts must download.
    Outbound,
    /// The host's network namespace, as before namespaces: no dry run for the network. Not
    /// offered in `--help`; it exists to measure what the namespace costs (`bench/dance.sh`).
    #[value(hide = true)]
    Host,
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
    /// In noop, the network.
    #[serde(default)]
    pub network: Network,
    /// The payload gets the terminal on its stdin as its controlling terminal (an interactive
    /// `disco shell`, whose terminal is a pseudo-terminal of its own); else it has none.
    #[serde(default)]
    pub terminal: bool,
    /// The disco executable, offered inside as `/dev/.disco/bin/disco-param` and
    /// `/dev/.disco/bin/disco`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<PathBuf>,
}

impl Spec {
    /// Writes the plan where `disco __sandbox` reads it.
    pub fn save(&self, path: &Path) -> Result<(), SandboxError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| SandboxError::State {
            path: path.to_owned(),
            source: e.into(),
        })?;
        std::fs::write(path, json).map_err(|source| SandboxError::State {
            path: path.to_owned(),
            source,
        })
    }
}

/// The command that runs `argv` in the sandbox that `spec_path` describes: `disco __sandbox
/// SPEC -- ARGV`. The caller sets its environment, stdio and working directory.
pub fn command(spec_path: &Path, argv: &[OsString]) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("disco"));
    let mut cmd = Command::new(exe);
    cmd.arg("__sandbox").arg(spec_path).arg("--").args(argv);
    cmd
}

/// The machine a sandbox covers: the canonical root and state directory, and every real
/// filesystem under the root (relative to it, the root itself first).
#[derive(Clone, Debug)]
pub struct Target {
    /// The target root.
    pub root: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Mount points of the filesystems to overlay, relative to the root, shallowest first.
    pub filesystems: Vec<PathBuf>,
}

impl Target {
    /// Finds the filesystems under `root`, leaving out the state directory.
    pub fn discover(root: &Path, state_dir: &Path) -> Result<Target, SandboxError> {
        let root = root
            .canonicalize()
            .ok()
            .filter(|r| r.is_dir())
            .ok_or_else(|| SandboxError::BadRoot(root.to_owned()))?;
        std::fs::create_dir_all(state_dir).map_err(|source| SandboxError::State {
            path: state_dir.to_owned(),
            source,
        })?;
        let state_dir = state_dir
            .canonicalize()
            .map_err(|source| SandboxError::State {
                path: state_dir.to_owned(),
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
        )
        .into_iter()
        // A file bind-mounted over a file (a container's /etc/hosts) cannot take an overlay.
        .filter(|fs| root.join(fs).is_dir())
        .collect();
        Ok(Target {
            root,
            state_dir,
            filesystems,
        })
    }

    /// What the sandbox hides: the state directory, when it lies under the root.
    pub fn hide(&self) -> Vec<PathBuf> {
        self.state_dir
            .strip_prefix(&self.root)
            .map(|rel| vec![Path::new("/").join(rel)])
            .unwrap_or_default()
    }

    /// The index of the filesystem that holds `path` (a path inside the sandbox), and `path`
    /// relative to that filesystem's mount point.
    pub fn filesystem_of(&self, path: &Path) -> (usize, PathBuf) {
        let rel = path.strip_prefix("/").unwrap_or(path);
        self.filesystems
            .iter()
            .enumerate()
            .filter_map(|(i, fs)| Some((i, rel.strip_prefix(fs).ok()?.to_path_buf())))
            .max_by_key(|(i, _)| self.filesystems[*i].components().count())
            .unwrap_or((0, rel.to_path_buf()))
    }
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
    /// The payload gets the terminal on its stdin as its controlling terminal (see
    /// [`Spec::terminal`]).
    pub terminal: bool,
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
        let Target {
            root,
            state_dir,
            filesystems,
        } = Target::discover(&opts.root, &opts.state_dir)?;
        let run = RunDir::create(&state_dir)?;
        let mut layers = Vec::new();
        for (n, rel) in filesystems.iter().enumerate() {
            let (upper, work) = run.new_layer(n)?;
            layers.push(LayerInfo {
                mount_point: Path::new("/").join(rel),
                lower: root.join(rel),
                upper,
                work,
                lowers_above: Vec::new(),
            });
        }
        let hide = Target {
            root: root.clone(),
            state_dir: state_dir.clone(),
            filesystems: Vec::new(),
        }
        .hide();
        let spec = Spec {
            merged: run.path.join("merged"),
            layers: layers.clone(),
            hide,
            noop: opts.noop,
            shims: opts.shims.clone(),
            network: Network::default(),
            terminal: opts.terminal,
            tools: None,
        };
        let spec_path = run.path.join("spec.json");
        spec.save(&spec_path)?;
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
