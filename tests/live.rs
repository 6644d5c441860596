//! Live dances, always against a disposable root: an overlay of `/` mounted by the test in a
//! mount namespace of the test's own thread (children inherit it; nothing reaches the host).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod util;
use util::{disco, have_root, site, text, TempDir};
mod disposable;
use disposable::{changes, disposable_root, live, mount_fs, reported, snapshot, stand_in_service};

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
            "--run-deferred",
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
    // The JSON report of a live dance: what was merged, and what was deferred.
    let json = disco(&state, &["report", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    util::assert_report_schema(&doc);
    let module = |name: &str| {
        doc["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        module("testmodule-1.0")["deferred"],
        serde_json::json!(["service postgresql stop"])
    );
    assert!(module("othermodule-3.2")["paths"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["path"] == "/etc/othermodule/stuff.cfg" && p["kind"] == "created"));
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
        .map(|s| Duration::from_millis(s["duration_ms"].as_u64().unwrap()))
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
        // The next command that touches dances finishes whatever merge was under way.
        let next = disco(&state, &["recover"]);
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
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".disco-staging"))
        .collect();
    assert!(left.is_empty(), "{left:?}\n{stdout}\n{}", text(&out.stderr));
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

/// A journal of one merge onto `root` (a folder on one filesystem), as a dance killed at
/// `phase` leaves it.
fn journal_for(
    root: &Path,
    ops: Vec<host::apply::Op>,
    staging: Option<&str>,
    phase: host::apply::journal::Phase,
) -> host::apply::Journal {
    let fd = std::fs::File::open(root).unwrap();
    let id = host::apply::journal::Identity::of(std::os::fd::AsFd::as_fd(&fd), root).unwrap();
    host::apply::Journal {
        version: host::apply::journal::VERSION,
        run: "1.000002-1".into(),
        module: "keys".into(),
        node: "n1".into(),
        root: root.to_owned(),
        root_id: id.clone(),
        filesystems: vec![host::apply::journal::FsRecord {
            rel: PathBuf::new(),
            id,
            staging: staging.map(str::to_owned),
            undo: None,
        }],
        ops,
        phase,
        deferred: Default::default(),
    }
}

fn key_file(source: &Path, path: &str) -> host::apply::Op {
    std::fs::write(source, "ssh-ed25519 AAAA disco\n").unwrap();
    host::apply::Op::File {
        fs: 0,
        path: path.into(),
        source: source.to_owned(),
        staged: 1,
        attrs: host::apply::Attrs {
            mode: 0o600,
            uid: 0,
            gid: 0,
            xattrs: Vec::new(),
            mtime: (0, 0),
        },
    }
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
    let state = tmp.path().join("state");
    let op = key_file(
        &tmp.path().join("authorized_keys"),
        "home/bob/authorized_keys",
    );
    journal_for(
        &live,
        vec![op],
        Some(".disco-staging-test"),
        host::apply::journal::Phase::Planned,
    )
    .write(&state, "1.000002-1.m0")
    .unwrap();
    let out = disco(&state, &["recover"]);
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
fn a_journal_replayed_after_its_root_was_unmounted_refuses_and_writes_nothing() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-unmounted");
    let root = tmp.path().join("root");
    mount_fs("tmpfs", &root);
    let state = tmp.path().join("state");
    let op = key_file(&tmp.path().join("authorized_keys"), "authorized_keys");
    journal_for(
        &root,
        vec![op],
        Some(".disco-staging-test"),
        host::apply::journal::Phase::Planned,
    )
    .write(&state, "1.000002-1.m0")
    .unwrap();
    nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH).unwrap();
    // What is left is the bare mount point on the disk beneath.
    let out = disco(&state, &["recover"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not the folder the journal was written for"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "the replay wrote into the bare mount point"
    );
    assert!(
        host::apply::pending(&state).is_some(),
        "the journal is kept"
    );
    // The documented way out sets it aside, saying nothing of it was applied.
    let out = disco(&state, &["recover", "--discard"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing of its merge was applied"),
        "{}",
        text(&out.stderr)
    );
    assert!(host::apply::pending(&state).is_none());
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}

#[test]
fn a_lost_staging_folder_never_wedges_the_node_and_says_what_was_not_applied() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-lost-staging");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let state = tmp.path().join("state");
    let op = key_file(&tmp.path().join("source"), "authorized_keys");
    // Staged and recorded, then the staging folder was deleted before the commit.
    journal_for(
        &root,
        vec![op],
        Some(".disco-staging-deleted"),
        host::apply::journal::Phase::Staged {
            inodes: [(1, 4_242_424_242)].into_iter().collect(),
        },
    )
    .write(&state, "1.000002-1.m0")
    .unwrap();
    let out = disco(&state, &["recover"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("0 of its 1 operations were applied; 1 path(s) were not"),
        "{stderr}"
    );
    assert!(stderr.contains("authorized_keys"), "{stderr}");
    assert!(host::apply::pending(&state).is_none(), "set aside");
    // The node dances again.
    let src = TempDir::new("live-lost-staging-site");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/files/srv/ok", "ok\n"),
        ],
    );
    let out = live(&state, src.path(), &root, &[]);
    assert!(
        !text(&out.stdout).contains("pending"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_lost_scratch_layer_never_wedges_the_node() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-lost");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let state = tmp.path().join("state");
    let source = tmp.path().join("gone");
    let op = key_file(&source, "authorized_keys");
    std::fs::remove_file(&source).unwrap();
    journal_for(
        &root,
        vec![op],
        Some(".disco-staging-lost"),
        host::apply::journal::Phase::Planned,
    )
    .write(&state, "1.000002-1.m0")
    .unwrap();
    let out = disco(&state, &["recover"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("nothing of it was applied: its scratch layer is gone"),
        "{stderr}"
    );
    assert!(host::apply::pending(&state).is_none(), "set aside");
    assert_eq!(
        std::fs::read_dir(state.join("journal/aside"))
            .unwrap()
            .count(),
        1
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

/// Runs `script` (bash) as the unprivileged user `nobody`, in the background.
fn as_nobody(script: &str) -> std::process::Child {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("setpriv is missing: apt-get install util-linux");
    Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["bash", "-c", script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn objects_planted_at_staging_names_by_a_local_user_change_nothing() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-planted");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    // A world-writable filesystem under the root, as /tmp is.
    let public = root.join("srv/disco-pub");
    mount_fs("tmpfs", &public);
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep"), "victim\n").unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let victim_before = snapshot(tmp.path(), Path::new("/victim"));
    let victim_mode = std::fs::metadata(&victim).unwrap().mode();
    let src = TempDir::new("live-planted-site");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            (
                "modules/m/scripts/00-write",
                "#!/bin/sh\nset -e\nprintf module > /srv/disco-pub/out\nchmod 4755 /srv/disco-pub/out\nmkdir -p /opt/disco-planted\necho ok > /opt/disco-planted/f\n",
            ),
        ],
    );
    // Before the dance, names of the old scheme and of the new prefix, planted by the user.
    let planted = format!(
        "cd {pub_} && ln -s {v} .disco-staging-planted-link && mkdir .disco-staging-planted-dir && chmod 777 .disco-staging-planted-dir && echo x > .disco-staging-planted-file",
        pub_ = public.display(),
        v = victim.display()
    );
    assert!(as_nobody(&planted).wait().unwrap().success());
    // During it, the old scheme's names for whatever run id `ps` shows.
    let racer = as_nobody(&format!(
        "end=$((SECONDS+30)); cd {pub_}; while [ $SECONDS -lt $end ]; do \
           for id in $(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -o 'runs/[0-9.]*-[0-9]*' | cut -d/ -f2 | sort -u); do \
             for k in 0 1 2; do ln -s {v} .disco-staging-$id.m$k 2>/dev/null; done; \
           done; done",
        pub_ = public.display(),
        v = victim.display()
    ));
    let state = tmp.path().join("state");
    let out = live(&state, src.path(), &root, &[]);
    let mut racer = racer;
    let _ = racer.kill();
    let _ = racer.wait();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(
        snapshot(tmp.path(), Path::new("/victim")),
        victim_before,
        "the dance wrote outside its root"
    );
    assert_eq!(std::fs::metadata(&victim).unwrap().mode(), victim_mode);
    let out_file = std::fs::symlink_metadata(public.join("out")).unwrap();
    assert!(out_file.is_file());
    assert_eq!(std::fs::read(public.join("out")).unwrap(), b"module");
    assert_eq!((out_file.uid(), out_file.gid()), (0, 0));
    assert_eq!(out_file.mode() & 0o7777, 0o4755);
    for name in ["link", "dir", "file"] {
        assert!(
            stdout.contains(&format!(".disco-staging-planted-{name} (")),
            "{name} not reported:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("is not a staging folder of this merge"),
        "{stdout}"
    );
}

#[test]
fn a_read_only_mount_the_module_does_not_touch_does_not_stop_its_merge() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-ro");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let ro = root.join("srv/disco-ro");
    std::fs::create_dir_all(&ro).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &ro,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .unwrap();
    let src = TempDir::new("live-ro-site");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            (
                "modules/m/scripts/00-opt",
                "#!/bin/sh\nmkdir -p /opt/disco-ro-test && echo ok > /opt/disco-ro-test/f\n",
            ),
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
        std::fs::read_to_string(root.join("opt/disco-ro-test/f")).unwrap(),
        "ok\n"
    );
}

#[test]
fn a_secret_parameter_stays_unreadable_by_other_users_after_a_live_dance() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-secret");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let secret = format!("SECRET-{}", std::process::id());
    let src = TempDir::new("live-secret-site");
    std::fs::set_permissions(src.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("parameters/m/password", &secret),
            (
                "modules/m/scripts/00-use",
                "#!/bin/sh\ndisco-param get m/password > /dev/null\n",
            ),
        ],
    );
    let password = src.path().join("parameters/m/password");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let state = tmp.path().join("state");
    let out = live(&state, src.path(), &root, &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Nothing of the state directory gives the secret to another user.
    let found = Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["grep", "-rl", "--", &secret])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "readable by nobody: {}",
        text(&found.stdout)
    );
    assert_eq!(
        std::fs::metadata(&state).unwrap().mode() & 0o077,
        0,
        "the state directory is root's alone"
    );
    // Every copy disco made keeps the source's 0600.
    let copies = Command::new("grep")
        .args(["-rl", "--", &secret])
        .arg(&state)
        .output()
        .unwrap();
    for copy in text(&copies.stdout).lines() {
        let mode = std::fs::metadata(copy).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{copy} has mode {mode:o}");
    }
}

#[test]
fn a_parameter_that_links_out_of_its_tree_is_refused_by_name() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-paramlink");
    let outside = tmp.path().join("shadow");
    let secret = format!("TOPSECRET-{}", std::process::id());
    std::fs::write(&outside, &secret).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).unwrap();
    let src = TempDir::new("live-paramlink-site");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/scripts/00-true", "#!/bin/sh\ntrue\n"),
        ],
    );
    std::os::unix::fs::symlink(&outside, src.path().join("parameters/n1/linked")).unwrap();
    let state = tmp.path().join("state");
    let out = disco(
        &state,
        &[
            "dance",
            "--noop",
            "--node",
            "n1",
            "--source",
            src.path().to_str().unwrap(),
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("parameters/n1/linked is a symbolic link out of its tree"),
        "{stderr}"
    );
    let copies = Command::new("grep")
        .args(["-rl", "--", &secret])
        .arg(&state)
        .output()
        .unwrap();
    assert!(copies.stdout.is_empty(), "{}", text(&copies.stdout));
}

#[test]
fn a_dance_killed_in_a_hanging_deferred_command_never_blocks_a_fix_and_replays_it_the_same() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-hang");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let module = format!("web{}", std::process::id());
    // A stand-in service that logs what it was given (words, environment, request) and hangs
    // while /tmp/disco-hang exists.
    let service = root.join("usr/sbin/service");
    std::fs::write(
        &service,
        "#!/bin/sh\n{ echo \"args=$*\"; env | grep -E '^(DISCO_[A-Z]*|NOOP)=' | grep -v DISCO_SERVICE | sort; cat; echo; } >> /tmp/disco-deferred-log\n[ -e /tmp/disco-hang ] && exec sleep 300\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&service, std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = TempDir::new("live-hang-site");
    site(
        src.path(),
        &[
            (&format!("parameters/n1/modules/{module}"), ""),
            (&format!("parameters/{module}/port"), "8080"),
            (
                &format!("modules/{module}/scripts/00-reload"),
                "#!/bin/sh\necho conf > /etc/disco-web.conf\nservice web reload\n",
            ),
        ],
    );
    let log = root.join("tmp/disco-deferred-log");
    let hang = root.join("tmp/disco-hang");
    // Uninterrupted, as the reference.
    let out = live(
        &tmp.path().join("state-a"),
        src.path(),
        &root,
        &["--run-deferred"],
    );
    assert!(out.status.success(), "{}", text(&out.stdout));
    let reference = std::fs::read_to_string(&log).unwrap();
    assert!(reference.contains("OptionName=\"port\""), "{reference}");
    assert!(reference.contains("NOOP=false"), "{reference}");
    std::fs::remove_file(&log).unwrap();
    // Killed while its deferred command hangs.
    std::fs::write(&hang, "").unwrap();
    let state = tmp.path().join("state-b");
    let mut dance = Command::new(env!("CARGO_BIN_EXE_disco"))
        .arg("--state-dir")
        .arg(&state)
        .args(["dance", "-q", "--node", "n1", "--source"])
        .arg(src.path())
        .arg("--root")
        .arg(&root)
        .arg("--run-deferred")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !log.exists() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(log.exists(), "the deferred command never started");
    dance.kill().unwrap();
    dance.wait().unwrap();
    // A monitoring system's fix runs within its own timeout meanwhile.
    let locks = tmp.path().join("locks");
    let start = Instant::now();
    let fix = util::run(util::fix_cmd(
        &util::module("ok"),
        &util::marker("hang"),
        &locks,
        &["--timeout", "2"],
    ));
    let took = start.elapsed();
    assert_eq!(fix.status(), 0, "{}", fix.stderr());
    assert!(
        took < Duration::from_secs(60),
        "disco fix waited {took:?} for a dance's recovery"
    );
    // Whatever the killed dance left running is the test's to end.
    for pid in util::processes_of(&module) {
        util::kill(pid);
    }
    std::fs::remove_file(&hang).unwrap();
    std::fs::remove_file(&log).unwrap();
    let out = disco(&state, &["recover"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("ran the deferred command"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        reference,
        "the replayed command ran with another request or environment than\n{reference}"
    );
}

#[test]
fn two_dances_with_different_state_dirs_onto_one_root_lose_nothing() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-two");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let shared = format!("srv/disco-two-{}", std::process::id());
    std::fs::create_dir_all(root.join(&shared)).unwrap();
    std::fs::write(root.join(&shared).join("log"), "base\n").unwrap();
    let sources: Vec<TempDir> = ["a", "b"]
        .iter()
        .map(|tag| {
            let src = TempDir::new(&format!("live-two-{tag}"));
            let script = format!(
                "#!/bin/bash\nfor i in $(seq 100); do echo \"{tag} $i\" >> /{shared}/log; done\n"
            );
            site(
                src.path(),
                &[
                    ("parameters/n1/modules/app", ""),
                    ("modules/app/scripts/00-append", &script),
                ],
            );
            src
        })
        .collect();
    let dances: Vec<_> = sources
        .iter()
        .enumerate()
        .map(|(i, src)| {
            Command::new(env!("CARGO_BIN_EXE_disco"))
                .arg("--state-dir")
                .arg(tmp.path().join(format!("state-{i}")))
                .args(["dance", "--node", "n1", "--source"])
                .arg(src.path())
                .arg("--root")
                .arg(&root)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut said = String::new();
    for d in dances {
        let out = d.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        said.push_str(&text(&out.stderr));
        said.push_str(&text(&out.stdout));
    }
    let log = std::fs::read_to_string(root.join(&shared).join("log")).unwrap();
    for tag in ["a", "b"] {
        let n = log
            .lines()
            .filter(|l| l.starts_with(&format!("{tag} ")))
            .count();
        assert_eq!(n, 100, "lines of {tag} lost:\n{said}\n{log}");
    }
    assert_eq!(log.lines().count(), 201);
}

#[test]
fn a_second_dance_onto_a_busy_root_says_so_with_its_own_status() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-busy");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let src = TempDir::new("live-busy-site");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/slow", ""),
            ("modules/slow/scripts/00-sleep", "#!/bin/sh\nsleep 3\n"),
        ],
    );
    let mut first = Command::new(env!("CARGO_BIN_EXE_disco"))
        .arg("--state-dir")
        .arg(tmp.path().join("state-1"))
        .args(["dance", "-q", "--node", "n1", "--source"])
        .arg(src.path())
        .arg("--root")
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let second = live(
        &tmp.path().join("state-2"),
        src.path(),
        &root,
        &["--no-wait"],
    );
    first.wait().unwrap();
    assert_eq!(second.status.code(), Some(75), "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("another dance is running on"),
        "{}",
        text(&second.stderr)
    );
}

#[test]
fn delivery_keeps_symlinks_empty_folders_hard_links_capabilities_and_byte_names() {
    use std::os::unix::ffi::OsStrExt;
    if !have_root("live") {
        return;
    }
    let setcap = ["/usr/sbin/setcap", "/sbin/setcap"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("setcap is missing: apt-get install libcap2-bin");
    let tmp = TempDir::new("live-deliver");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let area = format!("srv/disco-deliver-{}", std::process::id());
    let src = TempDir::new("live-deliver-site");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/lone", ""),
            ("parameters/n1/modules/empty", ""),
            ("parameters/n1/modules/rich", ""),
        ],
    );
    let files = |m: &str| src.path().join("modules").join(m).join("files").join(&area);
    // A files/ tree holding only a symlink; one holding only an empty folder.
    std::fs::create_dir_all(files("lone")).unwrap();
    std::os::unix::fs::symlink("target-elsewhere", files("lone").join("link")).unwrap();
    std::fs::create_dir_all(files("empty").join("nothing-inside")).unwrap();
    // A hard-link pair, a file with a capability and a user xattr, a name that is not UTF-8.
    let rich = files("rich");
    std::fs::create_dir_all(&rich).unwrap();
    std::fs::write(rich.join("h1"), "linked\n").unwrap();
    std::fs::hard_link(rich.join("h1"), rich.join("h2")).unwrap();
    std::fs::write(rich.join("ping"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(rich.join("ping"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = Command::new(setcap)
        .arg("cap_net_raw+ep")
        .arg(rich.join("ping"))
        .status()
        .unwrap();
    assert!(status.success());
    xattr::set(rich.join("ping"), "user.disco", b"kept").unwrap();
    let capability = xattr::get(rich.join("ping"), "security.capability")
        .unwrap()
        .expect("setcap set it");
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9");
    std::fs::write(rich.join(odd), "latin-1 name\n").unwrap();

    let out = live(&tmp.path().join("state"), src.path(), &root, &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let live_area = root.join(&area);
    assert_eq!(
        std::fs::read_link(live_area.join("link")).unwrap(),
        Path::new("target-elsewhere")
    );
    assert!(live_area.join("nothing-inside").is_dir());
    let (h1, h2) = (
        std::fs::metadata(live_area.join("h1")).unwrap(),
        std::fs::metadata(live_area.join("h2")).unwrap(),
    );
    assert_eq!(
        h1.ino(),
        h2.ino(),
        "the hard-link pair arrived as two files"
    );
    assert_eq!(
        xattr::get(live_area.join("ping"), "security.capability")
            .unwrap()
            .as_deref(),
        Some(capability.as_slice()),
        "the file capability was lost"
    );
    assert_eq!(
        xattr::get(live_area.join("ping"), "user.disco")
            .unwrap()
            .as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        std::fs::read_to_string(live_area.join(odd)).unwrap(),
        "latin-1 name\n"
    );
}

#[test]
fn a_parameter_the_protocol_cannot_carry_fails_its_module_by_name() {
    if !have_root("dance") {
        return;
    }
    let tmp = TempDir::new("live-nul");
    let src = TempDir::new("live-nul-site");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/bad", ""),
            ("parameters/n1/modules/good", ""),
            ("parameters/bad/value", "a\0b"),
            ("parameters/good/value", "fine"),
            ("modules/bad/scripts/00-run", "#!/bin/sh\necho bad ran\n"),
            (
                "modules/good/scripts/00-run",
                "#!/bin/sh\ngrep -q '<OptionValue>fine</OptionValue>' && echo good got its option\n",
            ),
        ],
    );
    let out = disco(
        &tmp.path().join("state"),
        &[
            "dance",
            "--noop",
            "--node",
            "n1",
            "--source",
            src.path().to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("bad: parameter bad/value: its value holds U+0000"),
        "{stdout}"
    );
    assert!(!stdout.contains("bad ran"), "{stdout}");
    assert!(stdout.contains("good got its option"), "{stdout}");
}

/// `(inode, mtime)` of every path under `dir`.
fn stamps(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            out.insert(e.path(), (m.ino(), m.mtime(), m.mtime_nsec()));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

#[test]
fn a_second_live_dance_with_nothing_changed_rewrites_nothing() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-idem");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    stand_in_service(&root, "/tmp/disco-idem-service");
    let site = tmp.path().join("site");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/example-site"))
        .arg(&site)
        .status()
        .unwrap();
    assert!(copied.success());
    let state = tmp.path().join("state");
    let dance = |extra: &[&str]| {
        let mut args = vec![
            "dance",
            "--exit-code",
            "--source",
            site.to_str().unwrap(),
            "--node",
            "localhost.localdomain",
            "--root",
            root.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        disco(&state, &args)
    };
    let first = dance(&[]);
    assert_eq!(first.status.code(), Some(2), "{}", text(&first.stdout));
    // Another root than /: the deferred command is said, not run on this host.
    assert!(
        text(&first.stdout).contains(
            "warning: testmodule-1.0: Not executing deferred (the root is not /; --run-deferred runs it): service postgresql stop"
        ),
        "{}",
        text(&first.stdout)
    );
    assert!(!root.join("tmp/disco-idem-service").exists());
    let conf = root.join("etc/othermodule");
    let before = stamps(&conf);
    assert!(!before.is_empty());
    let second = dance(&[]);
    let stdout = text(&second.stdout);
    assert_eq!(second.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("Merged othermodule-3.2: 0 path(s)"),
        "{stdout}"
    );
    assert_eq!(stamps(&conf), before, "an unchanged file was rewritten");
    // A changed parameter rewrites exactly the templated file.
    std::fs::write(
        site.join("parameters/localhost.localdomain/parameters/something"),
        "changed\n",
    )
    .unwrap();
    let third = dance(&[]);
    let stdout = text(&third.stdout);
    assert_eq!(third.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("Merged othermodule-3.2: 1 path(s)"),
        "{stdout}"
    );
    let after = stamps(&conf);
    let rewritten: Vec<_> = after
        .iter()
        .filter(|(p, s)| before.get(*p) != Some(*s))
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(rewritten, vec![conf.join("stuff.cfg")]);
    assert_eq!(
        std::fs::read_to_string(conf.join("stuff.cfg")).unwrap(),
        "HOST=localhost.localdomain\nKEY_VALUE=changed\n"
    );
}

#[test]
fn a_root_without_the_scripts_interpreter_says_which_is_missing() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-empty-root");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let src = TempDir::new("live-empty-root-site");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/scripts/00-hello.sh", "#!/bin/bash\necho hello\n"),
        ],
    );
    let out = live(&tmp.path().join("state"), src.path(), &root, &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("its interpreter /bin/bash (from its #! line) is not there"),
        "{stdout}"
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

#[test]
fn delivery_never_writes_through_a_link_a_local_user_planted() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-deliver-link");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let pid = std::process::id();
    // Root's precious folder, and a user's home the user may change.
    let precious = root.join(format!("srv/disco-precious-{pid}"));
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("authorized_keys"), "root's key\n").unwrap();
    let home = root.join(format!("home/disco-victim-{pid}"));
    std::fs::create_dir_all(&home).unwrap();
    nix::unistd::chown(&home, Some(65534.into()), Some(65534.into())).unwrap();
    let plant = format!("ln -s /srv/disco-precious-{pid} {}/.ssh", home.display());
    assert!(as_nobody(&plant).wait().unwrap().success());
    let src = TempDir::new("live-deliver-link-site");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            (
                &format!("modules/m/files/home/disco-victim-{pid}/.ssh/authorized_keys"),
                "the victim's key\n",
            ),
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
        std::fs::read_to_string(precious.join("authorized_keys")).unwrap(),
        "root's key\n",
        "the delivery wrote through the user's link"
    );
    let ssh = home.join(".ssh");
    assert!(
        std::fs::symlink_metadata(&ssh).unwrap().is_dir(),
        "the link stays"
    );
    assert_eq!(
        std::fs::read_to_string(ssh.join("authorized_keys")).unwrap(),
        "the victim's key\n"
    );
}

#[test]
fn a_replayed_staged_journal_never_deletes_what_it_already_put_in_place() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-replay-delete");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    // A folder became a file: the dance was killed after the file was in place.
    std::fs::write(root.join("x"), "NEW\n").unwrap();
    let ino = std::fs::metadata(root.join("x")).unwrap().ino();
    let state = tmp.path().join("state");
    let file = key_file(&tmp.path().join("source"), "x");
    journal_for(
        &root,
        vec![
            host::apply::Op::Delete {
                fs: 0,
                path: "x".into(),
            },
            file,
        ],
        Some(".disco-staging-emptied"),
        host::apply::journal::Phase::Staged {
            inodes: [(1, ino)].into_iter().collect(),
        },
    )
    .write(&state, "1.000002-1.m0")
    .unwrap();
    // The staging folder is there, emptied by the commit.
    std::fs::create_dir(root.join(".disco-staging-emptied")).unwrap();
    std::fs::set_permissions(
        root.join(".disco-staging-emptied"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let out = disco(&state, &["recover"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(root.join("x")).unwrap(), "NEW\n");
    assert!(host::apply::pending(&state).is_none());
}

/// A journal that deletes `srv/data`, replayed after a filesystem was mounted at `mounted`
/// (below the root): the replay refuses and what is mounted keeps its file. `undo` gives the
/// merge an undo folder, into which it would otherwise move the folder, mount and all.
fn a_replayed_deletion_refuses_a_mount(tag: &str, mounted: &str, undo: bool) {
    let tmp = TempDir::new(tag);
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("srv/data")).unwrap();
    let state = tmp.path().join("state");
    let mut j = journal_for(
        &root,
        vec![host::apply::Op::Delete {
            fs: 0,
            path: "srv/data".into(),
        }],
        None,
        host::apply::journal::Phase::Planned,
    );
    if undo {
        j.filesystems[0].undo = Some(".disco-undo-planned".into());
    }
    j.write(&state, "1.000002-1.m0").unwrap();
    let at = root.join(mounted);
    mount_fs("tmpfs", &at);
    std::fs::write(at.join("important"), "keep\n").unwrap();
    let out = disco(&state, &["recover"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is on another filesystem"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(at.join("important")).unwrap(),
        "keep\n"
    );
    let _ = nix::mount::umount2(&at, nix::mount::MntFlags::MNT_DETACH);
}

#[test]
fn a_filesystem_mounted_where_a_merge_deletes_is_never_emptied() {
    if !have_root("live") {
        return;
    }
    // Since the plan, a filesystem was mounted there.
    a_replayed_deletion_refuses_a_mount("live-mounted-later", "srv/data", false);
}

#[test]
fn a_folder_with_a_filesystem_mounted_beneath_is_never_moved_into_an_undo_folder() {
    if !have_root("live") {
        return;
    }
    a_replayed_deletion_refuses_a_mount("live-mounted-beneath", "srv/data/inner", true);
}

#[test]
fn a_journal_that_cannot_finish_stops_no_noop_dance_and_no_other_root() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-stuck-journal");
    let gone = tmp.path().join("gone");
    mount_fs("tmpfs", &gone);
    let state = tmp.path().join("state");
    let op = key_file(&tmp.path().join("source"), "authorized_keys");
    let mut j = journal_for(
        &gone,
        vec![op],
        None,
        host::apply::journal::Phase::Committed,
    );
    j.deferred.commands = vec![vec!["service".into(), "web".into(), "restart".into()]];
    j.write(&state, "1.000002-1.m0").unwrap();
    nix::mount::umount2(&gone, nix::mount::MntFlags::MNT_DETACH).unwrap();
    let src = TempDir::new("live-stuck-site");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/files/srv/disco-other-root", "ok\n"),
        ],
    );
    // A noop dance replays nothing (its deferred command would run for real) and says why.
    let noop = disco(
        &state,
        &[
            "dance",
            "--noop",
            "--node",
            "n1",
            "--source",
            src.path().to_str().unwrap(),
        ],
    );
    assert!(noop.status.success(), "{}", text(&noop.stderr));
    assert!(
        text(&noop.stdout).contains("an interrupted merge is pending"),
        "{}",
        text(&noop.stdout)
    );
    assert!(!text(&noop.stdout).contains("ran the deferred command"));
    // A live dance onto another root goes on, and says what it could not finish.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let out = live(&state, src.path(), &other, &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("is not the folder the journal was written for"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(other.join("srv/disco-other-root")).unwrap(),
        "ok\n"
    );
    assert!(
        host::apply::pending(&state).is_some(),
        "kept for its own root"
    );
}

#[test]
fn a_file_other_users_may_not_read_is_never_shown_in_a_diff_or_a_report() {
    if !have_root("live") {
        return;
    }
    let tmp = TempDir::new("live-private");
    let secret = format!("SECRET-{}", std::process::id());
    let src = TempDir::new("live-private-site");
    let script = format!(
        "#!/bin/sh\numask 077\nmkdir -p /srv/disco-private\necho {secret} > /srv/disco-private/key\n"
    );
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/scripts/00-key", &script),
        ],
    );
    let state = tmp.path().join("state");
    let out = disco(
        &state,
        &[
            "dance",
            "--noop",
            "--node",
            "n1",
            "--source",
            src.path().to_str().unwrap(),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains(&secret), "{stdout}");
    assert!(
        stdout.contains("Contents not shown: other users may not read it (mode 600)"),
        "{stdout}"
    );
    let reports = state.join("reports");
    assert_eq!(std::fs::metadata(&reports).unwrap().mode() & 0o777, 0o700);
    for r in std::fs::read_dir(&reports).unwrap().flatten() {
        assert_eq!(r.metadata().unwrap().mode() & 0o777, 0o600);
        assert!(!std::fs::read_to_string(r.path()).unwrap().contains(&secret));
    }
}
