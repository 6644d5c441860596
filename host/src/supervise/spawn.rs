//! Starting the module: no arguments (rule 5), a clean environment, a process group of its own,
//! and three pipes that the poll loop drives without blocking.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::cgroup::FixCgroup;
use super::{FixSpec, SuperviseError};
use crate::sys;

/// PATH for the module when the host has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A started module: its pid (also its process group) and the host's ends of its pipes.
#[derive(Debug)]
pub struct Spawned {
    /// The module's pid, and the id of the process group it leads.
    pub pid: i32,
    /// Readable when the module exits.
    pub pidfd: OwnedFd,
    /// Where the request goes.
    pub stdin: OwnedFd,
    /// The module's stdout.
    pub stdout: OwnedFd,
    /// The module's stderr.
    pub stderr: OwnedFd,
    /// The inodes of the three pipes, to recognise them in other processes' fd tables.
    pub inodes: [u64; 3],
    /// The module's start time (clock ticks since boot), to tell its descendants from older
    /// processes.
    pub start_time: u64,
}

fn io_error(spec: &FixSpec, what: &'static str) -> impl Fn(std::io::Error) -> SuperviseError {
    let module = spec.module.clone();
    move |source| SuperviseError::Io {
        module: module.clone(),
        what,
        source,
    }
}

/// Starts `spec.module`, a member of `cgroup` from before its exec when there is one.
pub fn spawn(spec: &FixSpec, cgroup: Option<&FixCgroup>) -> Result<Spawned, SuperviseError> {
    // Absolute, because the module starts in `/` and a relative path would be taken from there.
    let program = std::path::absolute(&spec.module).map_err(|source| SuperviseError::Spawn {
        module: spec.module.clone(),
        source,
    })?;
    let mut cmd = match &spec.command {
        Some(argv) if !argv.is_empty() => {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            cmd
        }
        _ => Command::new(program),
    };
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        )
        .env("DISCO_HOST", &spec.host)
        .env("DISCO_SERVICE", &spec.service)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        // A fixed working directory: the host's may be anything, even deleted.
        .current_dir("/")
        // Its own group, so one killpg reaches everything it starts that stays in line.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cg) = cgroup {
        let procs = cg
            .procs_files()
            .map_err(io_error(spec, "open cgroup.procs"))?;
        sys::enter_cgroups_before_exec(&mut cmd, procs);
    }
    // ETXTBSY: another thread of this process may have forked while a module file was open for
    // writing (a test that just copied it); the fork's copy of the fd closes at its exec.
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(source) => {
                return Err(SuperviseError::Spawn {
                    module: spec.module.clone(),
                    source,
                })
            }
            Ok(child) => break child,
        }
    };
    let pid = child.id() as i32;
    super::track::register_module(pid);
    // The child is not reaped until we say so, so its pid cannot be reused before this.
    let pidfd = sys::pidfd_open(pid).map_err(io_error(spec, "pidfd_open"))?;
    let take = |o: Option<OwnedFd>| o.expect("piped at spawn");
    let stdin = take(child.stdin.take().map(OwnedFd::from));
    let stdout = take(child.stdout.take().map(OwnedFd::from));
    let stderr = take(child.stderr.take().map(OwnedFd::from));
    let mut inodes = [0; 3];
    for (i, fd) in [&stdin, &stdout, &stderr].into_iter().enumerate() {
        sys::set_nonblocking(fd.as_fd()).map_err(io_error(spec, "set O_NONBLOCK"))?;
        inodes[i] = sys::inode(fd.as_fd()).map_err(io_error(spec, "fstat pipe"))?;
    }
    let start_time = sys::proc_stat(pid).map_or(0, |s| s.start_time);
    // `child` is dropped without waiting: the supervisor reaps it with wait4 for its rusage.
    Ok(Spawned {
        pid,
        pidfd,
        stdin,
        stdout,
        stderr,
        inodes,
        start_time,
    })
}
