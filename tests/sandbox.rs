//! The noop sandbox against the real machine: scripts run for real inside, yet nothing they do
//! reaches outside. Every test here proves the live system unchanged afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod util;
use util::{disco, have_root, text, TempDir};

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
        let backing = dir.path().join("disk.img");
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
    if !have_root("sandbox") {
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
    let null_before = std::fs::metadata("/dev/null").unwrap();

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
         chmod 600 /dev/null; chown 65534 /dev/null
         reboot
         /usr/sbin/reboot -f
         echo done",
        pid = victim.id()
    );
    let out = disco(state.path(), &["shell", "-c", &script]);
    let stderr = text(&out.stderr);
    assert!(text(&out.stdout).contains("done"), "{stderr}");

    // The process outside is alive, and nothing of the machine changed.
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the victim was killed"
    );
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
    assert_eq!(
        md5sum(&loopdev.backing),
        disk_before,
        "the loop device was written"
    );
    // The sandbox's /dev/null is the host's, bound read-only: its mode and owner held.
    let null_after = std::fs::metadata("/dev/null").unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (null_after.mode(), null_after.uid()),
            (null_before.mode(), null_before.uid())
        );
    }
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
    assert!(
        stderr.contains("warning: Would execute : systemctl stop cron"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: Would execute : reboot\n"),
        "{stderr}"
    );
    // The device node was created in the scratch layer only, where it cannot be opened.
    assert!(!Path::new("/tmp/disco-blk").exists());
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[test]
fn processes_started_inside_do_not_survive_the_sandbox() {
    if !have_root("sandbox") {
        return;
    }
    let state = TempDir::new("state");
    let marker = format!("disco-orphan-{}", std::process::id());
    let out = disco(
        state.path(),
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
    let out = disco(
        state.path(),
        &["shell", "--root", "/nonexistent/root", "-c", "true"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: root /nonexistent/root is not a directory\n"
    );
}

/// Runs `script` with `sh` in a private mount namespace (nothing it mounts reaches the host).
fn in_private_mount_ns(script: &str) -> Output {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec", script])
        .env("NO_COLOR", "1")
        .env("DISCO", env!("CARGO_BIN_EXE_disco"))
        .stdin(Stdio::null())
        .output()
        .expect("unshare")
}

/// The `info: File:` header lines of a diff.
fn headers(diff: &str) -> Vec<&str> {
    diff.lines()
        .filter(|l| l.starts_with("info: File: "))
        .collect()
}

fn fingerprint(paths: &[&Path]) -> Vec<(PathBuf, Option<String>)> {
    paths
        .iter()
        .map(|p| (p.to_path_buf(), p.exists().then(|| md5sum(p))))
        .collect()
}

#[test]
fn noop_changes_on_every_filesystem_are_reported_and_none_reaches_the_live_system() {
    if !have_root("sandbox") {
        return;
    }
    let state = TempDir::new("state");
    let second = TempDir::new("second-fs");
    let id = format!("{}", std::process::id());
    let created_etc = PathBuf::from(format!("/etc/disco-test-{id}"));
    let created_var = PathBuf::from(format!("/var/lib/disco-test-{id}"));
    let created_tmp = PathBuf::from(format!("/tmp/disco-test-{id}.txt"));
    let watched = [
        Path::new("/etc/hosts"),
        Path::new("/etc/issue.net"),
        &created_etc,
        &created_var,
        &created_tmp,
    ];
    let before = fingerprint(&watched);
    let fs = second.path().display();
    // The second filesystem exists only in this test's mount namespace.
    let script = format!(
        r#"mount -t tmpfs disco-second {fs}
printf 'one\ntwo\n' > {fs}/existing
printf 'gone\n' > {fs}/doomed
"$DISCO" --state-dir {state} shell -c '
  echo new > {etc}
  echo 127.0.0.9 disco-test >> /etc/hosts
  rm /etc/issue.net
  echo var > {var}
  echo tmp > {tmp}
  printf "one\nTWO\n" > {fs}/existing
  rm {fs}/doomed
  echo fresh > {fs}/fresh'
"$DISCO" --state-dir {state} diff
cat {fs}/existing {fs}/doomed"#,
        state = state.path().display(),
        etc = created_etc.display(),
        var = created_var.display(),
        tmp = created_tmp.display(),
    );
    let out = in_private_mount_ns(&script);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    let fs = second.path();
    let want = [
        format!("info: File: file: {} : Created", created_etc.display()),
        "info: File: file: /etc/hosts : Modified".to_owned(),
        "info: File: file: /etc/issue.net : Deleted".to_owned(),
        format!("info: File: file: {} : Created", created_tmp.display()),
        format!("info: File: file: {} : Created", created_var.display()),
        format!("info: File: file: {}/doomed : Deleted", fs.display()),
        format!("info: File: file: {}/existing : Modified", fs.display()),
        format!("info: File: file: {}/fresh : Created", fs.display()),
    ];
    let got = headers(&stdout);
    let mut got_prefixes: Vec<String> = got
        .iter()
        .map(|h| {
            let kind = [" : Created", " : Modified", " : Deleted"]
                .into_iter()
                .find(|k| h.contains(k))
                .unwrap_or("");
            format!("{}{kind}", h.split(kind).next().unwrap())
        })
        .collect();
    got_prefixes.sort();
    let mut want_sorted = want.to_vec();
    want_sorted.sort();
    assert_eq!(got_prefixes, want_sorted, "{stdout}");
    assert!(stdout.contains("> 127.0.0.9 disco-test"), "{stdout}");
    assert!(stdout.contains("2c2\n< two\n---\n> TWO\n"), "{stdout}");
    // The second filesystem's live files, printed after the sandbox ended, are untouched.
    assert!(stdout.ends_with("one\ntwo\ngone\n"), "{stdout}");
    assert_eq!(fingerprint(&watched), before);
}

#[test]
fn the_seeds_shell_session_against_a_disposable_root_reports_exactly_four_paths() {
    if !have_root("sandbox") {
        return;
    }
    let state = TempDir::new("state");
    let scratch = TempDir::new("disposable");
    let d = scratch.path().display();
    // The disposable root is an overlay of / in this test's own mount namespace.
    let script = format!(
        r#"mkdir -p {d}/u {d}/w {d}/root
mount -t overlay overlay -o lowerdir=/,upperdir={d}/u,workdir={d}/w {d}/root
"$DISCO" --state-dir {state} shell --root {d}/root -c '
  rm -f /etc/passwd
  grep -v root /etc/shadow | tee tmpfile >/dev/null
  mv tmpfile /etc/shadow
  echo LOL | tee /var/lib/p0wnt
  touch /bin/myhotbash'
"$DISCO" --state-dir {state} diff
test -e {d}/root/etc/passwd && test ! -e {d}/root/var/lib/p0wnt && echo root-intact"#,
        state = state.path().display()
    );
    let out = in_private_mount_ns(&script);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    let bin = if Path::new("/bin").is_symlink() {
        "/usr/bin"
    } else {
        "/bin"
    };
    let got = headers(&stdout);
    let paths: Vec<&str> = got
        .iter()
        .map(|h| {
            h.split(" : ")
                .next()
                .unwrap()
                .trim_start_matches("info: File: file: ")
        })
        .collect();
    let mut want = vec![
        "/etc/passwd".to_owned(),
        "/etc/shadow".to_owned(),
        format!("{bin}/myhotbash"),
        "/var/lib/p0wnt".to_owned(),
    ];
    want.sort();
    assert_eq!(paths, want, "{stdout}");
    assert!(got[0].ends_with(": Deleted"), "{stdout}");
    assert!(stdout.contains("info: File: file: /var/lib/p0wnt : Created : type=[regular file]"));
    assert!(
        stdout
            .contains("md5=[5732edd7e4e1240b868e15bc95d36339] perms=[root:root 644]\n0a1\n> LOL\n"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("root-intact"), "{stdout}");
}

#[test]
fn opaque_dirs_links_odd_names_a_sparse_gibibyte_and_ten_thousand_files() {
    if !have_root("sandbox") {
        return;
    }
    let state = TempDir::new("state");
    let live = TempDir::new("live");
    let l = live.path();
    std::fs::create_dir_all(l.join("d/sub")).unwrap();
    std::fs::write(l.join("d/old"), "old\n").unwrap();
    std::fs::write(l.join("d/sub/deep"), "deep\n").unwrap();
    std::fs::write(l.join("target"), "t\n").unwrap();
    let before = Command::new("find").arg(l).output().unwrap().stdout;
    let script = format!(
        "cd {l}
         rm -rf d; mkdir d; touch d/x
         ln -s target link; ln target hard
         echo s > 'with space'; echo n > \"$(printf 'new\\nline')\"
         truncate -s 1G sparse
         mkdir many; cd many; i=0; while [ $i -lt 10000 ]; do : > f$i; i=$((i+1)); done",
        l = l.display()
    );
    let out = disco(state.path(), &["shell", "-c", &script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let diff = disco(state.path(), &["diff"]);
    let stdout = text(&diff.stdout);
    let h = headers(&stdout);
    let p = |rel: &str| format!("{}/{rel}", l.display());
    let has = |line: String| assert!(h.iter().any(|x| x.starts_with(&line)), "{line} missing");
    // The opaque directory: its old children are gone, each named once, the new one created.
    has(format!("info: File: file: {} : Deleted", p("d/old")));
    has(format!("info: File: directory: {} : Deleted", p("d/sub")));
    assert!(
        !h.iter().any(|x| x.contains("d/sub/deep")),
        "a deleted directory is one entry"
    );
    has(format!("info: File: file: {} : Created", p("d/x")));
    has(format!("info: File: symlink: {} : Created", p("link")));
    has(format!("info: File: file: {} : Created", p("hard")));
    has(format!("info: File: file: {} : Created", p("with space")));
    has(format!("info: File: file: {} : Created", p("new\\nline")));
    has(format!("info: File: file: {} : Created", p("sparse")));
    let many = h.iter().filter(|x| x.contains("/many/f")).count();
    assert_eq!(many, 10_000);
    // Nothing of it reached the live tree.
    assert_eq!(Command::new("find").arg(l).output().unwrap().stdout, before);
}

#[test]
fn without_root_the_sandbox_is_one_clear_error() {
    if !have_root("sandbox") {
        return;
    }
    let state = TempDir::new("state-nobody");
    std::fs::set_permissions(
        state.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_disco"))
        .arg("--state-dir")
        .arg(state.path().join("s"))
        .args(["shell", "-c", "true"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: sandbox: cannot unshare namespaces: EPERM"),
        "{stderr}"
    );
    assert!(stderr.contains("the sandbox needs root"), "{stderr}");
}

/// `disco shell -c` has a network of its own with only loopback: a listener of the host's on
/// 127.0.0.1 receives nothing, and the sandbox's own loopback works.
#[test]
fn a_noop_shell_reaches_no_host_service_on_loopback() {
    if !have_root("sandbox") {
        return;
    }
    let state = TempDir::new("state");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let port = tcp.local_addr().unwrap().port();
    let script = format!(
        "if echo data 2>/dev/null > /dev/tcp/127.0.0.1/{port}; then echo tcp reached; else echo tcp refused; fi
         ip -o addr show lo | grep -q 'inet 127.0.0.1' && echo own loopback up"
    );
    let out = disco(state.path(), &["shell", "-c", &script]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("tcp refused"),
        "{stdout}{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("own loopback up"), "{stdout}");
    assert!(
        tcp.accept()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the TCP listener got a connection"
    );
}

/// A live file passed to `disco shell -c` as descriptor 7: the payload sees no descriptor 7,
/// and the file is unchanged.
#[test]
fn a_descriptor_the_caller_left_open_does_not_reach_a_noop_shell() {
    if !have_root("sandbox") {
        return;
    }
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let state = TempDir::new("state");
    let live = TempDir::new("live-fd");
    let file = live.path().join("live.txt");
    std::fs::write(&file, "live\n").unwrap();
    let f = std::fs::File::open(&file).unwrap();
    let raw = f.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_disco"));
    cmd.arg("--state-dir")
        .arg(state.path())
        .args([
            "shell",
            "-c",
            "if [ -e /proc/self/fd/7 ]; then echo fd7 seen; else echo no fd7; fi
             echo written 2>/dev/null > /proc/self/fd/7; true",
        ])
        .stdin(Stdio::null());
    // SAFETY: dup2 is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    drop(f);
    let all = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("no fd7"), "{all}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "live\n", "{all}");
}

/// TIOCSTI from `disco shell -c`, run from a shell in a real terminal, injects nothing into
/// that shell: the payload has no controlling terminal, and without CAP_SYS_ADMIN no other
/// terminal takes input from it.
#[test]
fn keystrokes_pushed_from_a_noop_shell_reach_no_terminal() {
    if !have_root("sandbox") {
        return;
    }
    let state = TempDir::new("state");
    let script = format!(
        "{disco} --state-dir {state} shell -c {payload}; read -t 2 -r line; echo \"READ:[$line]\"",
        disco = env!("CARGO_BIN_EXE_disco"),
        state = state.path().display(),
        payload = shell_words::quote(&util::tiocsti("echo disco-injected")),
    );
    let seen = util::in_terminal(&script);
    assert!(seen.contains("sti tried"), "{seen}");
    assert!(seen.contains("READ:["), "{seen}");
    assert!(!seen.contains("READ:[echo disco-injected"), "{seen}");
}

/// An interactive `disco shell` gets a terminal of its own: the shell there is a session
/// leader with a controlling terminal, its exit status comes back, and keystrokes it pushes
/// (TIOCSTI) land in its own terminal, not in the shell that started disco.
#[test]
fn an_interactive_shell_has_a_terminal_of_its_own() {
    if !have_root("sandbox") {
        return;
    }
    let state = TempDir::new("state");
    let input = format!(
        "test -t 0 && echo \"own tty: sid=$(ps -o sid= -p $$ | tr -d ' ') pid=$$\"\n{}\nexit 7\n",
        util::tiocsti("echo disco-injected")
    );
    let script = format!(
        "printf '%s' {input} | {disco} --state-dir {state} shell; echo \"shell exit $?\"; \
         read -t 2 -r line; echo \"READ:[$line]\"",
        input = shell_words::quote(&input),
        disco = env!("CARGO_BIN_EXE_disco"),
        state = state.path().display(),
    );
    let seen = util::in_terminal(&script);
    assert!(seen.contains("own tty: sid=2 pid=2"), "{seen}");
    assert!(seen.contains("sti tried"), "{seen}");
    assert!(seen.contains("shell exit 7"), "{seen}");
    assert!(!seen.contains("READ:[echo disco-injected"), "{seen}");
}
