//! `disco remote`: the Survivor scheduler's "sr" exchange (protocol.md §8), byte for byte,
//! through a real sshd on loopback (`ssh HOST disco remote`), and on a plain pipe.
//!
//! The sshd test needs root and openssh-server/-client; without them it says why and passes,
//! except under CI.

mod servers;
mod util;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use protocol::{Document, FixResult, ReturnCode};
use servers::{can_run, Sshd};
use util::TempDir;

const DISCO: &str = env!("CARGO_BIN_EXE_disco");

fn module(path: &Path, body: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, format!("#!/bin/bash\nset -e\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A module directory with `fix/echo` (answers with its `service` option and host) and
/// `fix/slow` (sleeps past any short timeout), and `fix/plain` that is not executable.
fn module_dir(dir: &Path) {
    module(
        &dir.join("fix/echo"),
        "req=$(cat)\nsvc=$(printf '%s\\n' \"$req\" | sed -n '/OptionName=\"service\"/{n;s/.*<OptionValue>\\(.*\\)<\\/OptionValue>.*/\\1/p}')\n\
         printf '<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\\n<SurvivorFixResult Version=\"1.0\">\\n<ReturnCode>0</ReturnCode>\\n<Comment>restarted %s on %s</Comment>\\n</SurvivorFixResult>\\n' \"$svc\" \"$DISCO_HOST\"",
    );
    module(&dir.join("fix/slow"), "cat >/dev/null\nsleep 30");
    fs::write(dir.join("fix/plain"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(dir.join("fix/plain"), fs::Permissions::from_mode(0o644)).unwrap();
}

const REQUEST: &str = "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n\
<SurvivorFixData Version=\"1.0\">\n<Timeout>10</Timeout>\n<ModuleOption OptionName=\"service\">\n\
<OptionValue>sshd</OptionValue>\n</ModuleOption>\n</SurvivorFixData>\n";

const SLOW: &str = "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n\
<SurvivorFixData Version=\"1.0\">\n<Timeout>1</Timeout>\n</SurvivorFixData>\n";

/// The client's side of one session, CRs and all, as a scheduler would send it.
fn session() -> String {
    format!(
        "version\r\nfix\nfix ../etc/passwd\nfix nothere\nfix plain\nhello world\n\
         fix echo\nBEGIN DATA\n{REQUEST}END DATA\n\
         fix slow\nBEGIN DATA\n{SLOW}END DATA\n\
         fix echo\nBEGIN DATA\nthis is not xml\nEND DATA\n\
         exit\nversion\n"
    )
}

fn response(rc: ReturnCode, comment: &str) -> String {
    let xml = String::from_utf8(FixResult::new(rc, comment).to_xml().unwrap()).unwrap();
    format!("BEGIN RESPONSE\n{xml}END RESPONSE\n")
}

/// What the server must answer, exactly.
fn expected(mods: &Path) -> String {
    format!(
        "OK v2\nERROR sr not given module name\nERROR Module name may not include '/'\n\
         ERROR {m}/fix/nothere is not executable\nERROR {m}/fix/plain is not executable\n\
         ERROR Unknown command 'hello world'\n\
         OK send SurvivorFixData\n{}\
         OK send SurvivorFixData\n{}\
         OK send SurvivorFixData\n{}\
         OK Goodbye\n",
        response(ReturnCode::OK, "restarted sshd on testhost"),
        response(ReturnCode::TIMEDOUT, "Timed out"),
        response(ReturnCode::MISCONFIG, "Valid XML document not provided"),
        m = mods.display()
    )
}

fn exchange(mut cmd: Command) -> (String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(session().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_exact_exchange_on_a_pipe() {
    let tmp = TempDir::new("remote-pipe");
    let mods = tmp.path().join("mod");
    module_dir(&mods);
    let mut cmd = Command::new(DISCO);
    cmd.args(["remote", "--host", "testhost", "--module-dir"])
        .arg(&mods)
        .arg("--lock-dir")
        .arg(tmp.path().join("locks"));
    let (out, err) = exchange(cmd);
    assert_eq!(out, expected(&mods), "stderr: {err}");
}

#[test]
fn the_exact_exchange_through_sshd() {
    if !can_run(
        "the_exact_exchange_through_sshd",
        &["ssh", "ssh-keygen", "/usr/sbin/sshd"],
    ) {
        return;
    }
    let tmp = TempDir::new("remote-ssh");
    let mods = tmp.path().join("mod");
    module_dir(&mods);
    let sshd = Sshd::start(tmp.path());
    let rsh = sshd.rsh();
    let mut words = rsh.split_whitespace();
    let mut cmd = Command::new(words.next().unwrap());
    cmd.args(words).arg("root@127.0.0.1").arg(format!(
        "{DISCO} remote --host testhost --module-dir {} --lock-dir {}",
        mods.display(),
        tmp.path().join("locks").display()
    ));
    let (out, err) = exchange(cmd);
    assert_eq!(
        out,
        expected(&mods),
        "stderr: {err}\nsshd: {}",
        fs::read_to_string(&sshd.log).unwrap_or_default()
    );
}
