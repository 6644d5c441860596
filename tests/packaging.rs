//! The autotools install end to end: `autoreconf -i`, `configure`, `make`, `make install` into a
//! temporary prefix, once with `DESTDIR` (as a distribution packager does) and once as root
//! with `--with-inst-user=nobody --with-inst-group=nogroup`; then every installed file's owner,
//! group and mode, the installed `disco validate` on every installed module, and one installed
//! module run through the installed `disco fix`. The cargo build inside `make` uses the
//! workspace's `target/`, so it reuses what `cargo test` already built.

mod util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use util::TempDir;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Fails with a hint when a tool is missing (`tests/run` installs them); skips (with the
/// reason) without root, except under CI.
fn can_run(needs_root: bool) -> bool {
    let missing: Vec<&str> = ["autoreconf", "perl", "make", "cargo"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .unwrap()
                .status
                .success()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "packaging test needs {}: run tests/run (as root it installs them), or apt-get install autoconf automake make perl",
        missing.join(", ")
    );
    if !needs_root || nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "packaging test needs root under CI"
    );
    println!("skipped: needs root");
    false
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    sh(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// The autotools inputs copied to `tmp/src` and configured in `tmp/build` (a VPATH build, so
/// the working tree is left alone), with `configure_args`; returns the build folder.
fn configure(tmp: &Path, configure_args: &[String]) -> PathBuf {
    let src = tmp.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for part in [
        "configure.ac",
        "Makefile.in",
        "mod",
        "doc",
        "contrib/systemd",
    ] {
        copy_tree(&repo().join(part), &src.join(part));
    }
    sh(Command::new("autoreconf").arg("-i").current_dir(&src));
    let build = tmp.join("build");
    std::fs::create_dir_all(&build).unwrap();
    sh(Command::new(src.join("configure"))
        .args(configure_args)
        .current_dir(&build));
    build
}

/// `make TARGET...` in `build`, building the real workspace into its own target/.
fn make(build: &Path, args: &[String]) -> String {
    sh(Command::new("make")
        .arg(format!("CARGO_MANIFEST={}/Cargo.toml", repo().display()))
        .args(args)
        .env("CARGO_TARGET_DIR", repo().join("target"))
        .current_dir(build))
}

const MODULES: &[&str] = &["service-restart", "fs-clean", "log-truncate", "dance"];

/// Every installed module: present, mode 555, owned by `uid:gid`; the library read-only.
fn check_installed(prefix: &Path, uid: u32, gid: u32) {
    let bin = prefix.join("bin/disco");
    assert!(bin.metadata().unwrap().permissions().mode() & 0o111 != 0);
    assert_eq!(
        std::fs::read_link(prefix.join("bin/disco-param")).unwrap(),
        Path::new("disco")
    );
    for m in MODULES {
        let meta = std::fs::metadata(prefix.join("mod/fix").join(m)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o555, "{m}");
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{m}");
        assert!(
            prefix
                .join(format!("share/doc/disco/fm-{m}.html"))
                .is_file(),
            "{m} doc"
        );
    }
    let lib = prefix.join("mod/fix/lib/Disco/Fix.pm");
    let meta = std::fs::metadata(&lib).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    assert!(prefix.join("share/doc/disco/modules.html").is_file());
}

#[test]
fn install_with_destdir() {
    if !can_run(false) {
        return;
    }
    let tmp = TempDir::new("pkg-destdir");
    let build = configure(tmp.path(), &["--prefix=/opt/disco".into()]);
    let dest = tmp.path().join("dest");
    make(&build, &[]);
    let out = make(
        &build,
        &["install".into(), format!("DESTDIR={}", dest.display())],
    );
    let prefix = dest.join("opt/disco");
    let (uid, gid) = if nix::unistd::geteuid().is_root() {
        (0, 0)
    } else {
        assert!(out.contains("left to the packager"), "{out}");
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    check_installed(&prefix, uid, gid);
    // install-remote is install (rule 4.2), and installing twice works.
    make(
        &build,
        &[
            "install-remote".into(),
            format!("DESTDIR={}", dest.display()),
        ],
    );
    // The installed modules know where the configuration is: PREFIX/etc/disco.
    let text = std::fs::read_to_string(prefix.join("mod/fix/service-restart")).unwrap();
    assert!(
        text.contains("DISCO_CONF_DIR:=/opt/disco/etc/disco}"),
        "sysconfdir not set"
    );
    // veryclean removes what configure made.
    make(&build, &["veryclean".into()]);
    for generated in [
        "Makefile",
        "config.status",
        "mod/fix/fs-clean/Makefile",
        "build",
    ] {
        assert!(!build.join(generated).exists(), "{generated} left");
    }
}

#[test]
fn install_as_root_for_another_user() {
    if !can_run(true) {
        return;
    }
    let tmp = TempDir::new("pkg-root");
    let prefix = tmp.path().join("prefix");
    let etc = tmp.path().join("etc");
    let build = configure(
        tmp.path(),
        &[
            format!("--prefix={}", prefix.display()),
            format!("--sysconfdir={}", etc.display()),
            "--with-inst-user=nobody".into(),
            "--with-inst-group=nogroup".into(),
        ],
    );
    make(&build, &["install".into()]);
    let uid = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let gid = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    check_installed(&prefix, uid, gid);

    // The dance's timer and service, pointing at the installed disco, as systemd reads them.
    let units = prefix.join("lib/systemd/system");
    let service = std::fs::read_to_string(units.join("disco-dance.service")).unwrap();
    assert!(
        service.contains(&format!(
            "ExecStart={}/disco ",
            prefix.join("bin").display()
        )),
        "{service}"
    );
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(units.join("disco-dance.service"))
        .arg(units.join("disco-dance.timer"))
        .output()
        .expect("systemd-analyze is missing: apt-get install systemd");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // The installed disco validates every installed module.
    let disco = prefix.join("bin/disco");
    for m in MODULES {
        let out = Command::new(&disco)
            .arg("validate")
            .arg(prefix.join("mod/fix").join(m))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{m}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // One installed module through the installed disco fix, for real, on a temporary folder;
    // PATH has no disco, so the module finds the one installed beside it.
    let clean = tmp.path().join("clean");
    std::fs::create_dir_all(etc.join("disco")).unwrap();
    std::fs::create_dir_all(&clean).unwrap();
    std::fs::write(
        etc.join("disco/fs-clean.conf"),
        format!("{} 1d *.log\n", clean.display()),
    )
    .unwrap();
    let (old, new) = (clean.join("old.log"), clean.join("new.log"));
    std::fs::write(&old, "old").unwrap();
    std::fs::write(&new, "new").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400))
        .unwrap();
    let out = Command::new(&disco)
        .arg("fix")
        .arg(prefix.join("mod/fix/fs-clean"))
        .args(["--host", "testhost", "--format", "json", "--lock-dir"])
        .arg(tmp.path().join("locks"))
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        json["return_code"],
        0,
        "{json} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json["violations"], serde_json::json!([]), "{json}");
    assert_eq!(json["comment"], "removed 1 files (3 bytes)");
    assert!(!old.exists() && new.exists());
}
