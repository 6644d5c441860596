//! Starting the module: no arguments (rule 5), a clean environment, a process group of its own,
//! and three pipes that the poll loop drives without blocking.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::cgroup::FixCgroup;
use super::track::Registry;
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

/// `ENOENT` from exec says only "no such file": when the file is there, what is missing is
/// the interpreter its `#!` line names (a root without bash); when a bare name was run, it is
/// not on `PATH`. Says which.
fn name_what_is_missing(exec: &Path, source: std::io::Error) -> std::io::Error {
    use std::io::BufRead;
    if source.kind() != std::io::ErrorKind::NotFound {
        return source;
    }
    if exec.components().count() == 1 {
        return std::io::Error::new(source.kind(), format!("{} is not on PATH", exec.display()));
    }
    let mut first = Vec::new();
    let read = std::fs::File::open(exec)
        .map(std::io::BufReader::new)
        .and_then(|mut f| f.read_until(b'\n', &mut first));
    if read.is_err() || !first.starts_with(b"#!") {
        return source;
    }
    let line = String::from_utf8_lossy(&first[2..]);
    let interpreter = line
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    std::io::Error::new(
        source.kind(),
        format!("its interpreter {interpreter} (from its #! line) is not there"),
    )
}

/// The argument vector (`argv[0]` first) and the whole environment of the module, in the
/// order a later variable of the same name overrides an earlier one.
fn argv_env(spec: &FixSpec, program: PathBuf) -> (Vec<OsString>, Vec<(OsString, OsString)>) {
    let argv = match &spec.command {
        Some(argv) if !argv.is_empty() => argv.clone(),
        _ => vec![program.into_os_string()],
    };
    let mut env: Vec<(OsString, OsString)> = vec![
        (
            "PATH".into(),
            std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        ),
        ("DISCO_HOST".into(), spec.host.clone().into()),
        ("DISCO_SERVICE".into(), spec.service.clone().into()),
    ];
    for (k, v) in &spec.env {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    (argv, env)
}

/// `name` looked up in `path` as execvp(3) would (a name with a `/` is used as it is).
fn lookup(name: &OsStr, path: Option<&OsStr>) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    if name.as_bytes().contains(&b'/') {
        return PathBuf::from(name);
    }
    path.into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file() && sys::executable(p))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The clone3 plan for the module, with nothing left to allocate in the child.
fn plan(
    argv: &[OsString],
    env: &[(OsString, OsString)],
    cg: &FixCgroup,
) -> std::io::Result<sys::SpawnPlan> {
    use std::os::unix::ffi::OsStrExt;
    let c = |b: &[u8]| {
        CString::new(b).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    let program = lookup(&argv[0], path);
    Ok(sys::SpawnPlan {
        program: c(program.as_os_str().as_bytes())?,
        argv: argv
            .iter()
            .map(|a| c(a.as_bytes()))
            .collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|(k, v)| c(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<Result<_, _>>()?,
        cgroup: cg.dir()?,
        also_into: cg.procs_files(false)?,
    })
}

/// Starts `spec.module`, a member of `cgroup` from its start when there is one: clone3 with
/// `CLONE_INTO_CGROUP` (no migration, so no wait for the kernel's cgroup lock), or on a kernel
/// without it, a move into the cgroup between fork and exec.
pub fn spawn(
    spec: &FixSpec,
    cgroup: Option<&FixCgroup>,
    registry: &Registry,
) -> Result<Spawned, SuperviseError> {
    let failed = |source| SuperviseError::Spawn {
        module: spec.module.clone(),
        source,
    };
    // Absolute, because the module starts in `/` and a relative path would be taken from there.
    let program = std::path::absolute(&spec.module).map_err(failed)?;
    let (argv, env) = argv_env(spec, program);
    let mut tries = 0;
    // ETXTBSY: another thread of this process may have forked while a module file was open for
    // writing (a test that just copied it); the fork's copy of the fd closes at its exec.
    let mut retry = |e: &std::io::Error| {
        tries += 1;
        let again = e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 20;
        if again {
            std::thread::sleep(Duration::from_millis(5));
        }
        again
    };
    if let Some(cg) = cgroup {
        let plan = plan(&argv, &env, cg).map_err(io_error(spec, "prepare the module's start"))?;
        loop {
            match sys::spawn_in_cgroup(&plan) {
                Ok(child) => {
                    return finish(
                        spec,
                        registry,
                        child.pid,
                        child.pidfd,
                        child.stdin,
                        child.stdout,
                        child.stderr,
                    )
                }
                Err(e) if e.unsupported() => break,
                Err(sys::SpawnError::Start(e)) if retry(&e) => {}
                Err(sys::SpawnError::Start(e) | sys::SpawnError::Clone(e)) => {
                    return Err(failed(name_what_is_missing(Path::new(&argv[0]), e)))
                }
            }
        }
    }
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        // A fixed working directory: the host's may be anything, even deleted.
        .current_dir("/")
        // Its own group, so one killpg reaches everything it starts that stays in line.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cg) = cgroup {
        let procs = cg
            .procs_files(true)
            .map_err(io_error(spec, "open cgroup.procs"))?;
        sys::enter_cgroups_before_exec(&mut cmd, procs);
    }
    // SAFETY: `prepare_exec` makes system calls only and touches no memory of the parent:
    // async-signal-safe, as a pre_exec hook must be.
    unsafe {
        // Without the caller's controlling terminal: a module cannot push keystrokes into it
        // (TIOCSTI). Only 0, 1 and 2 cross the exec: no descriptor of the host, nor of
        // whoever started it (a plugin of `disco serve` may open some without close-on-exec).
        cmd.pre_exec(sys::prepare_exec);
    }
    let mut child = loop {
        match cmd.spawn() {
            Err(e) if retry(&e) => {}
            Err(source) => return Err(failed(name_what_is_missing(Path::new(&argv[0]), source))),
            Ok(child) => break child,
        }
    };
    let pid = child.id() as i32;
    // The child is not reaped until we say so, so its pid cannot be reused before this.
    let pidfd = sys::pidfd_open(pid).map_err(io_error(spec, "pidfd_open"))?;
    let take = |o: Option<OwnedFd>| o.expect("piped at spawn");
    let stdin = take(child.stdin.take().map(OwnedFd::from));
    let stdout = take(child.stdout.take().map(OwnedFd::from));
    let stderr = take(child.stderr.take().map(OwnedFd::from));
    // `child` is dropped without waiting: the supervisor reaps it with wait4 for its rusage.
    finish(spec, registry, pid, pidfd, stdin, stdout, stderr)
}

/// The started module, its pipes non-blocking and their inodes noted.
fn finish(
    spec: &FixSpec,
    registry: &Registry,
    pid: i32,
    pidfd: OwnedFd,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<Spawned, SuperviseError> {
    registry.register_module(pid);
    let mut inodes = [0; 3];
    for (i, fd) in [&stdin, &stdout, &stderr].into_iter().enumerate() {
        sys::set_nonblocking(fd.as_fd()).map_err(io_error(spec, "set O_NONBLOCK"))?;
        inodes[i] = sys::inode(fd.as_fd()).map_err(io_error(spec, "fstat pipe"))?;
    }
    let start_time = sys::proc_stat(pid).map_or(0, |s| s.start_time);
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
