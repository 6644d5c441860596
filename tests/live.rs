//! Live dances, always against a disposable root: an overlay of `/` mounted by the test in a
//! mount namespace of the test's own thread (children inherit it; nothing reaches the host).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod util;
use util::{disco, have_root, site, text, TempDir};

/// An overlay of `/` at `tmp/root`, visible only to this test's thread and its children, and
/// unmounted (with whatever the test mounted inside it) when dropped: before the temp dir goes,
/// or its removal would walk the whole overlaid system.
struct Disposable {
    root: PathBuf,
    scratch: PathBuf,
}

impl Drop for Disposable {
    fn drop(&mut self) {
        use nix::mount::{umount2, MntFlags};
        let _ = umount2(&self.root, MntFlags::MNT_DETACH);
        let _ = umount2(&self.scratch, MntFlags::MNT_DETACH);
    }
}

/// `upper_size` puts the overlay's writes on a tmpfs of that size (to run out of space).
fn disposable_root(tmp: &Path, upper_size: Option<&str>) -> Disposable {
    use nix::mount::{mount, MsFlags};
    host::sys::private_mount_namespace().expect("private mount namespace");
    let scratch = tmp.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    if let Some(size) = upper_size {
        mount(
            Some("tmpfs"),
            &scratch,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap();
    }
    let (u, w, root) = (scratch.join("u"), scratch.join("w"), tmp.join("root"));
    for d in [&u, &w, &root] {
        std::fs::create_dir_all(d).unwrap();
    }
    let data = format!(
        "lowerdir=/,upperdir={},workdir={}",
        u.display(),
        w.display()
    );
    mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .expect("mount the disposable root");
    Disposable { root, scratch }
}

fn live(state: &Path, source: &Path, root: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "dance",
        "--node",
        "n1",
        "--source",
        source.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    disco(state, &args)
}

/// What the tests compare of a path: type, mode, owner, content digest, link target, xattrs.
type Snapshot = BTreeMap<PathBuf, String>;

fn snapshot(root: &Path, under: &Path) -> Snapshot {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mut desc = format!("mode={:o} uid={} gid={}", m.mode(), m.uid(), m.gid());
            if m.is_file() {
                desc.push_str(&format!(" data={:?}", std::fs::read(&p).unwrap()));
            } else if m.file_type().is_symlink() {
                desc.push_str(&format!(" target={:?}", std::fs::read_link(&p).unwrap()));
            }
            if !m.file_type().is_symlink() {
                if let Ok(names) = xattr::list(&p) {
                    for n in names {
                        desc.push_str(&format!(" {n:?}={:?}", xattr::get(&p, &n).ok().flatten()));
                    }
                }
            }
            out.insert(Path::new("/").join(p.strip_prefix(root).unwrap()), desc);
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Snapshot::new();
    walk(root, &root.join(under.strip_prefix("/").unwrap()), &mut out);
    out
}

/// The changes between two snapshots, as the diff reports them: a deleted folder is one entry.
fn changes(before: &Snapshot, after: &Snapshot) -> Vec<(PathBuf, &'static str)> {
    let mut out: Vec<(PathBuf, &'static str)> = Vec::new();
    for (p, d) in after {
        match before.get(p) {
            None => out.push((p.clone(), "Created")),
            Some(old) if old != d => out.push((p.clone(), "Modified")),
            _ => {}
        }
    }
    for p in before.keys() {
        let under_deleted = out.iter().any(|(q, k)| *k == "Deleted" && p.starts_with(q));
        if !after.contains_key(p) && !under_deleted {
            out.push((p.clone(), "Deleted"));
        }
    }
    out.sort();
    out
}

/// `(path, kind)` of each `info: File:` header of a diff, within `under`.
fn reported(stdout: &str, under: &str) -> Vec<(PathBuf, &'static str)> {
    let mut out: Vec<(PathBuf, &'static str)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("info: File: "))
        .filter_map(|l| {
            let (_, rest) = l.split_once(": ")?;
            let mut parts = rest.split(" : ");
            let path = PathBuf::from(parts.next()?);
            let kind = match parts.next()? {
                "Created" => "Created",
                "Modified" => "Modified",
                "Deleted" => "Deleted",
                _ => return None,
            };
            path.starts_with(under).then_some((path, kind))
        })
        .collect();
    out.sort();
    out
}

/// Mounts a fresh filesystem of type `kind` at `at` (in the test's own mount namespace).
fn mount_fs(kind: &str, at: &Path) {
    std::fs::create_dir_all(at).unwrap();
    nix::mount::mount(
        Some(kind),
        at,
        Some(kind),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
}

/// A stand-in `service` in the disposable root that records what it was asked in `log`.
fn stand_in_service(root: &Path, log: &str) {
    let service = root.join("usr/sbin/service");
    std::fs::write(&service, format!("#!/bin/sh\necho \"$@\" >> {log}\n")).unwrap();
    std::fs::set_permissions(&service, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_seeds_example_live_merges_and_runs_the_deferred_service_command() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-example");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    stand_in_service(&root, "/tmp/disco-service-called");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/example-site");
    let state = tmp.path().join("state");
    let out = disco(
        &state,
        &[
            "dance",
            "--source",
            example.to_str().unwrap(),
            "--node",
            "localhost.localdomain",
            "--root",
            root.to_str().unwrap(),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/othermodule/stuff.cfg")).unwrap(),
        "HOST=localhost.localdomain\nKEY_VALUE=LOLTHISKEYMEANSNOTHING\n"
    );
    // Recorded while the module ran, run for real after its merge.
    assert!(
        stdout.contains("info: Deferred : service postgresql stop"),
        "{stdout}"
    );
    let merged = stdout.find("info: Merged testmodule-1.0").unwrap();
    let executed = stdout
        .find("info: Executing deferred : service postgresql stop")
        .unwrap();
    assert!(merged < executed);
    assert_eq!(
        std::fs::read_to_string(root.join("tmp/disco-service-called")).unwrap(),
        "postgresql stop\n"
    );
    assert!(
        !Path::new("/etc/othermodule").exists(),
        "the live dance escaped its root"
    );
    // Converged: a noop dance now reports no change, and --exit-code says so.
    let again = disco(
        &state,
        &[
            "dance",
            "--noop",
            "--exit-code",
            "--source",
            example.to_str().unwrap(),
            "--node",
            "localhost.localdomain",
            "--root",
            root.to_str().unwrap(),
        ],
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
    assert!(!text(&again.stdout).contains("info: File:"));
}

#[test]
fn the_noop_diff_equals_what_the_live_dance_does() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-corpus");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let area = format!("/srv/disco-corpus-{}", std::process::id());
    let live_area = root.join(area.trim_start_matches('/'));
    for (rel, content) in [
        ("keep.txt", "unchanged\n"),
        ("edit.txt", "one\ntwo\nthree\n"),
        ("gone.txt", "bye\n"),
        ("chmod.txt", "mode\n"),
        ("chown.txt", "owner\n"),
        ("old-dir/a", "a\n"),
        ("old-dir/sub/b", "b\n"),
        ("opaque/x", "x\n"),
        ("opaque/y", "y\n"),
        ("file-to-dir", "f\n"),
        ("linked", "target\n"),
    ] {
        let p = live_area.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    std::os::unix::fs::symlink("keep.txt", live_area.join("link")).unwrap();
    let script = format!(
        "#!/bin/bash\nset -e\ncd {area}\n\
         printf 'one\\nTWO\\nthree\\nfour\\n' > edit.txt\n\
         rm gone.txt\nchmod 600 chmod.txt\nchown 1:1 chown.txt\n\
         rm -rf old-dir\nrm -rf opaque && mkdir opaque && echo z > opaque/z\n\
         rm file-to-dir && mkdir file-to-dir && echo in > file-to-dir/in\n\
         ln -sfn edit.txt link\nln linked hard\nmkdir -p new/deeper && echo n > new/deeper/n\n\
         echo 'with space' > 'a file'\nmkfifo fifo\nsetfattr -n user.disco -v yes keep.txt\n\
         echo conf > /etc/disco-corpus-{pid}.conf\n",
        pid = std::process::id()
    );
    let src = TempDir::new("live-corpus-site");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/corpus", ""),
            ("modules/corpus/scripts/00-change", &script),
            ("modules/corpus/files/srv/delivered.txt", "from files/\n"),
        ],
    );
    let state = tmp.path().join("state");
    let noop = live(&state, src.path(), &root, &["--noop"]);
    let noop_out = text(&noop.stdout);
    assert!(noop.status.success(), "{noop_out}\n{}", text(&noop.stderr));
    let before = snapshot(&root, Path::new(&area));
    let run = live(&state, src.path(), &root, &[]);
    assert!(
        run.status.success(),
        "{}\n{}",
        text(&run.stdout),
        text(&run.stderr)
    );
    let after = snapshot(&root, Path::new(&area));
    let expected = changes(&before, &after);
    assert!(expected.len() >= 12, "{expected:?}");
    assert_eq!(
        reported(&noop_out, &area),
        expected,
        "noop said:\n{noop_out}"
    );
    // Field by field: every created or modified file's md5 in the noop matches the result.
    for (path, kind) in &expected {
        let live_path = root.join(path.strip_prefix("/").unwrap());
        let m = std::fs::symlink_metadata(&live_path);
        if *kind == "Deleted" || !m.as_ref().is_ok_and(|m| m.is_file()) {
            continue;
        }
        let md5 = Command::new("md5sum").arg(&live_path).output().unwrap();
        let md5 = text(&md5.stdout).split(' ').next().unwrap().to_owned();
        let header = noop_out
            .lines()
            .find(|l| l.contains(&format!(": {} : ", path.display())))
            .unwrap();
        // A Modified line lists only what differs; where it names an md5, it is the new one.
        if header.contains("md5=") {
            assert!(header.contains(&format!("{md5}]")), "{header} vs {md5}");
        }
        let mode = format!("{:o}", m.unwrap().mode() & 0o7777);
        if *kind == "Created" {
            assert!(header.ends_with(&format!(" {mode}]")), "{header} vs {mode}");
        }
    }
    assert!(root.join("srv/delivered.txt").is_file());
    assert!(root
        .join(format!("etc/disco-corpus-{}.conf", std::process::id()))
        .is_file());
}

#[test]
fn a_failing_module_leaves_the_root_byte_identical_and_skips_its_dependents() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-fail");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let area = format!("/srv/disco-fail-{}", std::process::id());
    std::fs::create_dir_all(root.join(area.trim_start_matches('/'))).unwrap();
    std::fs::write(root.join(area.trim_start_matches('/')).join("f"), "old\n").unwrap();
    let src = TempDir::new("live-fail-site");
    let bad = format!("#!/bin/sh\necho new > {area}/f\necho more > {area}/g\nexit 1\n");
    let dependent = format!("#!/bin/sh\necho ran > {area}/dependent\n");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/bad", ""),
            ("parameters/n1/modules/after-bad", ""),
            ("modules/bad/scripts/00-bad", &bad),
            ("modules/after-bad/requires", "bad\n"),
            ("modules/after-bad/scripts/00-x", &dependent),
        ],
    );
    let before = snapshot(&root, Path::new(&area));
    let state = tmp.path().join("state");
    let out = live(&state, src.path(), &root, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("warning: after-bad: skipped"));
    assert_eq!(snapshot(&root, Path::new(&area)), before);
    // Its layer is kept: `disco diff RUN` shows what it would have done.
    let report = disco(&state, &["report", "--format", "json"]);
    let id = serde_json::from_slice::<serde_json::Value>(&report.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let diff = disco(&state, &["diff", &id]);
    assert!(
        text(&diff.stdout).contains(&format!("info: File: file: {area}/g : Created")),
        "{}",
        text(&diff.stdout)
    );
}

#[test]
fn sigkill_during_merges_leaves_every_file_entirely_old_or_new() {
    if !have_root("live") {
        return;
    }
    const FILES: usize = 5_000;
    let tmp = TempDir::new("live-crash");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let area = root.join("srv/disco-crash");
    // Its own filesystem under the root: copy-up from a nested overlay would be ten times
    // slower, and a second filesystem is merged like the first.
    mount_fs("tmpfs", &area);
    let reset = || {
        std::fs::create_dir_all(&area).unwrap();
        for i in 0..FILES {
            std::fs::write(area.join(format!("f{i}")), format!("old {i}\n")).unwrap();
        }
    };
    reset();
    let src = TempDir::new("live-crash-site");
    let script = format!(
        "#!/bin/bash\ncd /srv/disco-crash\nfor i in $(seq 0 {}); do echo \"new $i\" > f$i; done\n",
        FILES - 1
    );
    site(
        src.path(),
        &[
            ("parameters/n1/modules/many", ""),
            ("modules/many/scripts/00-rewrite", &script),
        ],
    );
    let state = tmp.path().join("state");
    let dance = |state: &Path| {
        Command::new(env!("CARGO_BIN_EXE_disco"))
            .arg("--state-dir")
            .arg(state)
            .args(["dance", "-q", "--node", "n1", "--source"])
            .arg(src.path())
            .arg("--root")
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long one whole dance takes, to spread the kills over it.
    let start = Instant::now();
    assert!(dance(&state).wait().unwrap().success());
    let whole = start.elapsed();
    // Aim the kills at the merge: it ends the dance, and the report says how long it took.
    let report = disco(&state, &["report", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let merge = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "merge")
        .map(|s| {
            Duration::new(
                s["usage"]["real"]["secs"].as_u64().unwrap(),
                s["usage"]["real"]["nanos"].as_u64().unwrap() as u32,
            )
        })
        .unwrap();
    let window = (merge * 3).min(whole);
    let mut seed = std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut outcomes = BTreeMap::new();
    for _ in 0..20 {
        reset();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = whole - window + window.mul_f64(((seed >> 33) % 1000) as f64 / 1000.0);
        let mut child = dance(&state);
        std::thread::sleep(at);
        let _ = child.kill();
        child.wait().unwrap();
        // The next command finishes whatever merge was under way.
        let next = disco(&state, &["report"]);
        let said = text(&next.stderr);
        let (mut old, mut new) = (0, 0);
        for i in 0..FILES {
            let content = std::fs::read_to_string(area.join(format!("f{i}"))).unwrap();
            if content == format!("old {i}\n") {
                old += 1;
            } else if content == format!("new {i}\n") {
                new += 1;
            } else {
                panic!("f{i} is neither old nor new: {content:?}");
            }
        }
        assert!(
            old == FILES || new == FILES,
            "old {old}, new {new} ({said})"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".disco-staging")
            })
            .collect();
        assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
        assert!(
            std::fs::read_dir(state.join("journal")).map_or(true, |mut d| d.all(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')))
        );
        *outcomes
            .entry(if new == FILES { "new" } else { "old" })
            .or_insert(0) += 1;
    }
    eprintln!("outcomes over 20 kills: {outcomes:?} (dance {whole:?}, merge {merge:?})");
}

#[test]
fn running_out_of_space_stops_the_merge_cleanly() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-enospc");
    let disposable = disposable_root(tmp.path(), Some("2m"));
    let root = disposable.root.clone();
    let src = TempDir::new("live-enospc-site");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/big", ""),
            (
                "modules/big/scripts/00-big",
                "#!/bin/sh\nhead -c 8000000 /dev/zero > /srv/disco-big\necho small > /srv/disco-small\n",
            ),
        ],
    );
    let state = tmp.path().join("state");
    let before = snapshot(&root, Path::new("/srv"));
    let out = live(&state, src.path(), &root, &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("merge stopped before changing anything"),
        "{stdout}"
    );
    assert!(stdout.contains("No space left on device"), "{stdout}");
    assert_eq!(snapshot(&root, Path::new("/srv")), before);
    assert!(!std::fs::read_dir(&root).unwrap().flatten().any(|e| e
        .file_name()
        .to_string_lossy()
        .starts_with(".disco-staging")));
    let _ = Duration::ZERO;
}

#[test]
fn a_mount_point_the_sandbox_did_not_cover_is_never_merged_into() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-mount");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    // An mqueue filesystem is not overlaid (it holds no files of the system): the sandbox shows
    // its mount point as an empty folder, and a script may replace it.
    let point = root.join("srv/disco-mq");
    mount_fs("mqueue", &point);
    let src = TempDir::new("live-mount-site");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            (
                "modules/m/scripts/00-replace",
                "#!/bin/sh\nrm -rf /srv/disco-mq && mkdir /srv/disco-mq && echo x > /srv/disco-mq/x\n",
            ),
        ],
    );
    let state = tmp.path().join("state");
    let out = live(&state, src.path(), &root, &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("is on another filesystem than its layer"),
        "{stdout}"
    );
    assert!(!point.join("x").exists());
    assert!(std::fs::read_dir(state.join("journal")).map_or(true, |mut d| d.next().is_none()));
}

#[test]
fn deferred_commands_of_a_merge_cut_short_run_at_the_next_command() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-deferred");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    stand_in_service(&root, "/tmp/disco-deferred-ran");
    // What a dance killed between its merge and its deferred commands leaves behind.
    let state = tmp.path().join("state");
    let journal = host::apply::Journal {
        run: "1.000001-1".into(),
        module: "web".into(),
        staging: Vec::new(),
        ops: Vec::new(),
        committed: true,
        root: root.clone(),
        node: "n1".into(),
        deferred: vec![vec!["service".into(), "nginx".into(), "reload".into()]],
    };
    journal.write(&state, "1.000001-1.m0").unwrap();
    let out = disco(&state, &["report"]);
    assert!(
        text(&out.stderr).contains("ran the deferred command of web: service nginx reload"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(root.join("tmp/disco-deferred-ran")).unwrap(),
        "nginx reload\n"
    );
    assert!(host::apply::pending(&state).is_none());
}

#[test]
fn a_folder_swapped_for_a_symlink_during_a_merge_is_never_followed() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-swap");
    let live = tmp.path().join("live");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&live).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    // The plan was made when live/home/bob was a folder; since, bob made it a symlink.
    std::fs::create_dir_all(live.join("home")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, live.join("home/bob")).unwrap();
    let staging = live.join(".disco-staging-test");
    let source = tmp.path().join("authorized_keys");
    std::fs::write(&source, "ssh-ed25519 AAAA disco\n").unwrap();
    let attrs = host::apply::Attrs {
        mode: 0o600,
        uid: 0,
        gid: 0,
        xattrs: Vec::new(),
        mtime: (0, 0),
    };
    let state = tmp.path().join("state");
    host::apply::Journal {
        run: "1.000002-1".into(),
        module: "keys".into(),
        staging: vec![staging.clone()],
        ops: vec![host::apply::Op::File {
            path: live.join("home/bob/authorized_keys"),
            source,
            staged: staging.join("0"),
            attrs,
        }],
        committed: false,
        root: live.clone(),
        node: "n1".into(),
        deferred: Vec::new(),
    }
    .write(&state, "1.000002-1.m0")
    .unwrap();
    let out = disco(&state, &["report"]);
    assert!(
        text(&out.stderr).contains("resolve without symlinks"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !elsewhere.join("authorized_keys").exists(),
        "the write followed the symlink"
    );
}

#[test]
fn a_module_of_requires_only_succeeds_live() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-meta");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let area = format!("/srv/disco-meta-{}", std::process::id());
    let src = TempDir::new("live-meta-site");
    let script = format!("#!/bin/sh\nmkdir -p {area}\necho base > {area}/f\n");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/meta", ""),
            ("modules/meta/requires", "base\n"),
            ("modules/base/scripts/00-base", &script),
        ],
    );
    let out = live(&tmp.path().join("state"), src.path(), &root, &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(root.join(area.trim_start_matches('/')).join("f")).unwrap(),
        "base\n"
    );
}

/// `systemctl enable` of a unit the module delivers only changes files: it runs (offline) in
/// the sandbox, so its `.wants` symlink is in the noop diff and, live, merges with the module;
/// it is neither reported as "Would execute" nor deferred.
#[test]
fn systemctl_enable_shows_its_wants_link_in_noop_and_merges_it_live() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-enable");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let src = tmp.path().join("site");
    let unit = format!("disco-test-{}.service", std::process::id());
    let link = format!("etc/systemd/system/multi-user.target.wants/{unit}");
    site(
        &src,
        &[
            ("parameters/n1/modules/m", ""),
            (
                &format!("modules/m/files/etc/systemd/system/{unit}"),
                "[Unit]\nDescription=disco test\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
            ),
            (
                "modules/m/scripts/00-enable",
                &format!("#!/bin/bash\nset -e\nsystemctl enable {unit}\n"),
            ),
        ],
    );
    let state = tmp.path().join("state");
    let noop = live(&state, &src, &root, &["--noop"]);
    let stdout = text(&noop.stdout);
    assert!(noop.status.success(), "{stdout}\n{}", text(&noop.stderr));
    assert!(
        stdout.contains(&format!("info: File: symlink: /{link} : Created")),
        "{stdout}"
    );
    assert!(!stdout.contains("Would execute"), "{stdout}");
    assert!(!root.join(&link).exists());
    let out = live(&state, &src, &root, &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(!stdout.contains("Deferred"), "{stdout}");
    assert_eq!(
        std::fs::read_link(root.join(&link)).unwrap(),
        Path::new("/etc/systemd/system").join(&unit)
    );
    assert!(!Path::new("/").join(&link).exists(), "escaped its root");
}
