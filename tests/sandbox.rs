//! The noop sandbox against the real machine: scripts run for real inside, yet nothing they do
//! reaches outside. Every test here proves the live system unchanged afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Privileged tests run as root (CI and developer machines are root); without root they say
/// why and pass, except under CI, where a skip would hide a broken setup.
fn have_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "sandbox tests need root, and CI must run them"
    );
    eprintln!("skipped: sandbox tests need root");
    false
}

/// A fresh folder under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "disco-test-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ).replace(['{', '}', ' ', ':', ','], ""));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn disco(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_disco"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run disco")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap()
}

fn md5sum(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().unwrap();
    text(&out.stdout).split(' ').next().unwrap().to_owned()
}

/// A loop device over a scratch file, detached on drop: the block device a script will try to
/// reach, whose numbers are never a real disk's.
struct Loop {
    device: String,
    _file: TempDir,
    backing: PathBuf,
}

impl Loop {
    fn new() -> Loop {
        let dir = TempDir::new("loop");
        let backing = dir.0.join("disk.img");
        std::fs::write(&backing, vec![0xA5u8; 1 << 20]).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&backing)
            .output()
            .expect("losetup");
        assert!(out.status.success(), "losetup: {}", text(&out.stderr));
        Loop {
            device: text(&out.stdout).trim().to_owned(),
            _file: dir,
            backing,
        }
    }

    fn numbers(&self) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.device).unwrap().rdev();
        (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

#[test]
fn escape_attempts_fail_or_are_captured() {
    if !have_root() {
        return;
    }
    let state = TempDir::new("state");
    let mut victim = Command::new("sleep").arg("1000").spawn().unwrap();
    let loopdev = Loop::new();
    let (major, minor) = loopdev.numbers();
    let disk_before = md5sum(&loopdev.backing);
    let host_before = hostname();
    let domain_before = std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap();
    let modules_before = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let clock_before = std::time::SystemTime::now();

    let script = format!(
        "kill -9 {pid}; /bin/kill -9 {pid}
         hostname disco-escaped
         echo escaped > /proc/sys/kernel/domainname
         mount -t tmpfs none /mnt
         mknod /tmp/disco-blk b {major} {minor} && dd if=/dev/zero of=/tmp/disco-blk bs=4096 count=4 conv=notrunc
         insmod /tmp/disco-none.ko
         date -s '2001-01-01 00:00:00'
         ip link add disco-esc0 type dummy
         systemctl stop cron
         reboot
         /usr/sbin/reboot -f
         echo done",
        pid = victim.id()
    );
    let out = disco(&state.0, &["shell", "-c", &script]);
    let stderr = text(&out.stderr);
    assert!(text(&out.stdout).contains("done"), "{stderr}");

    // The process outside is alive, and nothing of the machine changed.
    assert!(victim.try_wait().unwrap().is_none(), "the victim was killed");
    assert_eq!(hostname(), host_before);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap(),
        domain_before
    );
    assert_eq!(
        std::fs::read_to_string("/proc/modules").unwrap_or_default(),
        modules_before
    );
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
        mounts_before
    );
    assert_eq!(md5sum(&loopdev.backing), disk_before, "the loop device was written");
    let drift = std::time::SystemTime::now()
        .duration_since(clock_before)
        .expect("the clock went backwards");
    assert!(drift.as_secs() < 60, "the clock moved by {drift:?}");
    let link = Command::new("ip")
        .args(["link", "show", "disco-esc0"])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(!link.success(), "the dummy link was created");
    // The shims reported what would have run.
    assert!(stderr.contains("warning: Would execute : systemctl stop cron"), "{stderr}");
    assert!(stderr.contains("warning: Would execute : reboot\n"), "{stderr}");
    // The device node was created in the scratch layer only, where it cannot be opened.
    assert!(!Path::new("/tmp/disco-blk").exists());
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[test]
fn processes_started_inside_do_not_survive_the_sandbox() {
    if !have_root() {
        return;
    }
    let state = TempDir::new("state");
    let marker = format!("disco-orphan-{}", std::process::id());
    let out = disco(
        &state.0,
        &[
            "shell",
            "-c",
            &format!("setsid sh -c 'exec -a {marker} sleep 1000' </dev/null >/dev/null 2>&1 & echo started"),
        ],
    );
    assert!(text(&out.stdout).contains("started"));
    // The PID namespace ended with its init, and took the daemon with it.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| text(&c))
        .filter(|c| c.contains(&marker))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn a_root_that_is_not_a_directory_is_one_clear_error() {
    let state = TempDir::new("state");
    let out = disco(&state.0, &["shell", "--root", "/nonexistent/root", "-c", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: root /nonexistent/root is not a directory\n"
    );
}
