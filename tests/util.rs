//! Helpers for the end-to-end tests of `disco fix`: a fresh temp dir, the fixture modules, a
//! command builder that runs the real binary, and a look at `/proc` for leftover processes.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty, uniquely named directory.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("disco-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fixture module by name.
pub fn module(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/modules")
        .join(name)
}

/// A service name unique to this test process and `tag`: it reaches every process of the
/// module as `DISCO_SERVICE=...` in its environment, which is how leftovers are found.
pub fn marker(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

/// `disco fix MODULE --service SERVICE --host testhost --lock-dir LOCKS ARGS...`, with
/// `--format json` unless `args` name a format.
pub fn fix_cmd(module: &Path, service: &str, locks: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_disco"));
    cmd.arg("fix")
        .arg(module)
        .args(["--service", service, "--host", "testhost"])
        .arg("--lock-dir")
        .arg(locks)
        .args(args)
        .stdin(Stdio::null());
    if !args.contains(&"--format") {
        cmd.args(["--format", "json"]);
    }
    cmd
}

/// What one run of `disco fix` gave.
pub struct Run {
    /// The process output.
    pub output: Output,
    /// The JSON object it printed (Null when it printed none).
    pub json: serde_json::Value,
    /// How long it took.
    pub elapsed: Duration,
}

impl Run {
    /// The exit status.
    pub fn status(&self) -> i32 {
        self.output.status.code().expect("disco exited normally")
    }

    /// The decided ReturnCode.
    pub fn return_code(&self) -> u64 {
        self.json["return_code"].as_u64().expect("return_code")
    }

    /// The violation kinds, in order.
    pub fn kinds(&self) -> Vec<String> {
        self.json["violations"]
            .as_array()
            .expect("violations")
            .iter()
            .map(|v| v["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The comment.
    pub fn comment(&self) -> &str {
        self.json["comment"].as_str().expect("comment")
    }

    /// Stderr, lossily.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// Runs `cmd` and parses its JSON.
pub fn run(mut cmd: Command) -> Run {
    let start = Instant::now();
    let output = cmd.output().expect("disco runs");
    let elapsed = start.elapsed();
    let json = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    Run {
        output,
        json,
        elapsed,
    }
}

/// Pids of live processes whose `/proc/PID/FILE` (`environ`, `cmdline`) holds `needle`.
fn processes_whose(file: &str, needle: &[u8]) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(bytes) = std::fs::read(entry.path().join(file)) else {
            continue;
        };
        if bytes.windows(needle.len()).any(|w| w == needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Pids of live processes whose environment holds `DISCO_SERVICE=<service>`.
pub fn processes_of(service: &str) -> Vec<i32> {
    processes_whose("environ", format!("DISCO_SERVICE={service}\0").as_bytes())
}

/// Kills a process the test is responsible for (a proper daemon the module left).
pub fn kill(pid: i32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

/// Privileged tests run as root (CI and developer machines are root); without root they say
/// why and pass, except under CI, where a skip would hide a broken setup.
pub fn have_root(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} tests need root, and CI must run them"
    );
    eprintln!("skipped: {what} tests need root");
    false
}

/// `disco --state-dir STATE ARGS...`, without colours or stdin, run to the end.
pub fn disco(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_disco"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run disco")
}

/// Bytes as text, for messages and matching.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes a dance site: `(path, content)`; paths under `scripts/` are made executable.
pub fn site(dir: &Path, files: &[(&str, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        if path.contains("/scripts/") {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

/// Runs `script` with bash in a real pseudo-terminal, as its controlling terminal (a user's
/// shell, as it were), and returns what appeared on that terminal.
pub fn in_terminal(script: &str) -> String {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = || Stdio::from(pty.slave.try_clone().unwrap());
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script])
        .env("NO_COLOR", "1")
        .stdin(slave())
        .stdout(slave())
        .stderr(slave());
    // SAFETY: setsid and ioctl are async-signal-safe; they touch no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if nix::libc::setsid() < 0 || nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("bash in a terminal");
    drop(cmd);
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the terminal's last user is gone (EIO).
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let _ = child.wait();
    String::from_utf8_lossy(&seen).into_owned()
}

/// A perl one-liner that pushes `line` into every terminal it can reach (its controlling
/// terminal as `/dev/tty`, and descriptors 0 to 2) with TIOCSTI, saying what it managed.
pub fn tiocsti(line: &str) -> String {
    format!(
        "perl -e 'my @t; if (open(my $t, \"+<\", \"/dev/tty\")) {{ push @t, [\"tty\", $t] }} \
         for my $fd (0..2) {{ if (open(my $d, \"+<&=\", $fd)) {{ push @t, [\"fd$fd\", $d] }} }} \
         for my $p (@t) {{ my ($n, $h) = @$p; my $ok = 1; \
         for my $c (split //, \"{line}\\n\") {{ ioctl($h, 0x5412, $c) or $ok = 0 }} \
         print STDERR \"$n: \", ($ok ? \"sti went through\" : \"sti refused: $!\"), \"\\n\" }} \
         print STDERR \"sti tried\\n\"'"
    )
}

/// Checks `doc` against the report schema (`doc/report.schema.json`), failing with every
/// finding.
pub fn assert_report_schema(doc: &serde_json::Value) {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../doc/report.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let findings: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(findings.is_empty(), "{}\n{doc:#}", findings.join("\n"));
}

/// Pids of live processes whose command line holds `marker`.
pub fn processes_with_arg(marker: &str) -> Vec<i32> {
    processes_whose("cmdline", marker.as_bytes())
}
