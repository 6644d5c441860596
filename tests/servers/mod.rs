//! Real servers for the fetch tests, started on loopback by the test and stopped on drop: an
//! rsync daemon (`rsync --daemon --no-detach`) and an sshd with its own host key and one
//! authorized test key, through which rsync runs its daemon over ssh, as disco's servers do.

#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Whether the test may run: root and the named tools are needed. A missing tool fails the
/// test with a hint (`tests/run` installs them all); without root it says why and passes,
/// except under CI, where a skip would hide a broken setup.
pub fn can_run(test: &str, tools: &[&str]) -> bool {
    let found = |tool: &str| {
        let path = Path::new(tool);
        if path.is_absolute() {
            return path.is_file();
        }
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
    };
    let missing: Vec<&str> = tools.iter().copied().filter(|tool| !found(tool)).collect();
    assert!(
        missing.is_empty(),
        "{test} needs {}: run tests/run (as root it installs them), or apt-get install rsync openssh-server openssh-client prometheus-alertmanager",
        missing.join(", ")
    );
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let why = format!("{test} needs root");
    assert!(
        std::env::var_os("CI").is_none(),
        "{why}, and CI must run it"
    );
    eprintln!("skipped: {why}");
    false
}

/// A TCP port on 127.0.0.1 that was free a moment ago: bind port 0, read it, let it go.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// One rsync daemon module: `[name]` served from `path`.
pub fn rsyncd_conf(log: &Path, modules: &[(&str, &Path)]) -> String {
    // A daemon started by root drops to `nobody` by default. The seed's daemon runs as the
    // `disco` user who owns the served files; here that owner is root, so it serves as root
    // (and a 0750 script is served like any other).
    let mut conf = format!(
        "use chroot = false\nuid = root\ngid = root\ntransfer logging = yes\nlog file = {}\n",
        log.display()
    );
    for (name, path) in modules {
        conf.push_str(&format!(
            "\n[{name}]\npath = {}\nread only = true\ncomment = {name}\nlist = yes\nuse chroot = false\n",
            path.display()
        ));
    }
    conf
}

/// A child process killed (SIGTERM, then SIGKILL after a grace period) and reaped on drop.
struct Guard {
    child: Child,
    name: &'static str,
}

impl Guard {
    /// Waits until `port` accepts a connection; panics with `log` if the child dies first or
    /// it takes more than ten seconds. `false` when the child exited (the port was taken).
    fn wait_for_port(&mut self, port: u16, log: &Path) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return true;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                eprintln!(
                    "{} exited with {status} before listening on {port}: {}",
                    self.name,
                    fs::read_to_string(log).unwrap_or_default()
                );
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "{} does not listen on {port}: {}",
                self.name,
                fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether any process's parent is `pid` (from `/proc/*/stat`, field 4).
fn has_children(pid: u32) -> bool {
    let Ok(dir) = fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|entry| {
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The command name may hold spaces: the fields after it start past the last ')'.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .is_some_and(|ppid| ppid == pid.to_string())
    })
}

impl Drop for Guard {
    fn drop(&mut self) {
        // A server forks one process per connection, which may still be closing down when the
        // test is done. Give those a moment to end and be reaped by the server, so none is
        // orphaned (and left for init to reap) by stopping the server under it.
        let deadline = Instant::now() + Duration::from_secs(2);
        while has_children(self.child.id()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server with `start(port)` on a free port, retrying when another process took the
/// port between our probe and the server's bind.
fn start_on_free_port(
    name: &'static str,
    log: &Path,
    start: impl Fn(u16) -> Child,
) -> (Guard, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut guard = Guard {
            child: start(port),
            name,
        };
        if guard.wait_for_port(port, log) {
            return (guard, port);
        }
    }
    panic!("{name} could not start on a free port");
}

/// A real `rsync --daemon` on 127.0.0.1, serving modules from a config in `dir`.
pub struct RsyncDaemon {
    _guard: Guard,
    /// Its TCP port.
    pub port: u16,
    /// Its log file.
    pub log: PathBuf,
}

impl RsyncDaemon {
    /// Starts the daemon with `modules`, writing `rsyncd.conf` and its log into `dir`.
    pub fn start(dir: &Path, modules: &[(&str, &Path)]) -> RsyncDaemon {
        let log = dir.join("rsyncd.log");
        RsyncDaemon::with_config(dir, &rsyncd_conf(&log, modules), log)
    }

    /// Starts the daemon with the config `text`, written to `dir/rsyncd.conf`; `log` is the
    /// log file it names (shown when the daemon fails to start).
    pub fn with_config(dir: &Path, text: &str, log: PathBuf) -> RsyncDaemon {
        let conf = dir.join("rsyncd.conf");
        fs::write(&conf, text).unwrap();
        let (guard, port) = start_on_free_port("rsync --daemon", &log, |port| {
            Command::new("rsync")
                .arg("--daemon")
                .arg("--no-detach")
                .arg("--address=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(format!("--config={}", conf.display()))
                .stdin(Stdio::null())
                .spawn()
                .expect("run rsync --daemon")
        });
        RsyncDaemon {
            _guard: guard,
            port,
            log,
        }
    }

    /// The source URI for it.
    pub fn uri(&self) -> String {
        format!("rsync://127.0.0.1:{}/", self.port)
    }
}

/// A real sshd on 127.0.0.1 that lets root in with one test key, everything under `dir`.
pub struct Sshd {
    _guard: Guard,
    /// Its TCP port.
    pub port: u16,
    /// The client's private key.
    pub key: PathBuf,
    /// sshd's stderr (`-e`): why it refused a connection.
    pub log: PathBuf,
}

impl Sshd {
    /// Generates a host key and a client key in `dir` and starts sshd.
    pub fn start(dir: &Path) -> Sshd {
        let host_key = dir.join("ssh_host_ed25519_key");
        let key = dir.join("client_key");
        for path in [&host_key, &key] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path)
                .stdin(Stdio::null())
                .status()
                .expect("run ssh-keygen");
            assert!(status.success(), "ssh-keygen {}", path.display());
        }
        let authorized = dir.join("authorized_keys");
        fs::copy(key.with_extension("pub"), &authorized).unwrap();
        // sshd's privilege separation directory; the package creates it only at boot.
        fs::create_dir_all("/run/sshd").unwrap();
        let log = dir.join("sshd.log");
        let conf = dir.join("sshd_config");
        let (guard, port) = start_on_free_port("sshd", &log, |port| {
            fs::write(
                &conf,
                format!(
                    "Port {port}\n\
                     ListenAddress 127.0.0.1\n\
                     HostKey {}\n\
                     PidFile {}\n\
                     AuthorizedKeysFile {}\n\
                     PermitRootLogin prohibit-password\n\
                     PubkeyAuthentication yes\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     UsePAM no\n\
                     StrictModes no\n\
                     LogLevel VERBOSE\n",
                    host_key.display(),
                    dir.join("sshd.pid").display(),
                    authorized.display(),
                ),
            )
            .unwrap();
            Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(&conf)
                .stdin(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .expect("run /usr/sbin/sshd")
        });
        Sshd {
            _guard: guard,
            port,
            key,
            log,
        }
    }

    /// The `--rsh` value that reaches this sshd as root with the test key, trusting its
    /// throwaway host key and ignoring the user's own ssh config.
    pub fn rsh(&self) -> String {
        format!(
            "ssh -F /dev/null -p {} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            self.port,
            self.key.display()
        )
    }
}
