//! `disco rollback`: live dances undone file for file, always against a disposable root (an
//! overlay of `/` in the test thread's own mount namespace).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

mod util;
use util::{disco, have_root, site, text, TempDir};
mod disposable;
use disposable::{disposable_root, live, reported, stand_in_service};

/// Every path under `dirs` of `root` (and each dir itself): type, mode, owner, content md5,
/// link target, extended attributes.
fn manifest(root: &Path, dirs: &[&str]) -> BTreeMap<PathBuf, String> {
    fn one(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return;
        };
        let mut desc = format!("mode={:o} uid={} gid={}", m.mode(), m.uid(), m.gid());
        if m.is_file() {
            let data = std::fs::read(p).unwrap();
            let digest: String = Md5::digest(&data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            desc.push_str(&format!(" md5={digest}"));
        } else if m.file_type().is_symlink() {
            desc.push_str(&format!(" target={:?}", std::fs::read_link(p).unwrap()));
        }
        if !m.file_type().is_symlink() {
            let mut names: Vec<_> = xattr::list(p).map(|n| n.collect()).unwrap_or_default();
            names.sort();
            for n in names {
                desc.push_str(&format!(" {n:?}={:?}", xattr::get(p, &n).ok().flatten()));
            }
        }
        out.insert(Path::new("/").join(p.strip_prefix(root).unwrap()), desc);
        if m.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            names.sort();
            for q in names {
                one(root, &q, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    for d in dirs {
        one(root, &root.join(d.trim_start_matches('/')), &mut out);
    }
    out
}

/// The paths the disposable root's own writes reached (its overlay's upper folder): only there
/// can the dance or the rollback have changed anything; elsewhere the host's `/` shows through.
fn written(scratch: &Path) -> BTreeSet<PathBuf> {
    let upper = scratch.join("u");
    let mut out = BTreeSet::new();
    let mut stack = vec![upper.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            out.insert(Path::new("/").join(e.path().strip_prefix(&upper).unwrap()));
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Paths whose manifest entry differs, among those the root's writes reached.
fn differences(
    before: &BTreeMap<PathBuf, String>,
    after: &BTreeMap<PathBuf, String>,
    reached: &BTreeSet<PathBuf>,
) -> Vec<String> {
    let paths: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    paths
        .into_iter()
        .filter(|p| reached.contains(*p))
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| format!("{}: {:?} => {:?}", p.display(), before.get(p), after.get(p)))
        .collect()
}

/// A Debian package `rbtest` built by the test, at `at` in the root.
fn build_package(root: &Path, tmp: &Path, at: &str) {
    let pkg = tmp.join("pkg");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/share/rbtest")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/bin")).unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: rbtest\nVersion: 1.0\nArchitecture: all\nMaintainer: disco tests <root@localhost>\nDescription: disco rollback test package\n",
    )
    .unwrap();
    std::fs::write(pkg.join("usr/share/rbtest/hello.txt"), "hello\n").unwrap();
    std::fs::write(pkg.join("usr/bin/rbtest-hello"), "#!/bin/sh\necho hello\n").unwrap();
    std::fs::set_permissions(
        pkg.join("usr/bin/rbtest-hello"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&pkg)
        .arg(root.join(at.trim_start_matches('/')))
        .output()
        .expect("dpkg-deb (Debian's dpkg package) builds the test package");
    assert!(out.status.success(), "dpkg-deb: {}", text(&out.stderr));
}

/// The files a corpus dance starts from, under `area` of the root.
fn corpus_area(root: &Path, area: &str) {
    let live_area = root.join(area.trim_start_matches('/'));
    for (rel, content) in [
        ("edit.txt", "one\ntwo\nthree\n"),
        ("gone.txt", "bye\n"),
        ("chmod.txt", "mode\n"),
        ("chown.txt", "owner\n"),
        ("xattr.txt", "x\n"),
        ("dir-to-file/a", "a\n"),
        ("dir-to-file/sub/b", "b\n"),
        ("file-to-dir", "f\n"),
        ("keep.txt", "same\n"),
    ] {
        let p = live_area.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    std::os::unix::fs::symlink("keep.txt", live_area.join("link")).unwrap();
}

/// The corpus module: creates, modifies, deletes, chmods, chowns, replaces a folder by a file
/// and a file by a folder, sets an xattr, repoints a link, adds a user, installs a package.
fn corpus_site(dir: &Path, area: &str, user: &str, deb: &str) {
    let script = format!(
        "#!/bin/bash\nset -e\ncd {area}\n\
         echo created > created.txt\nprintf 'one\\nTWO\\nthree\\n' > edit.txt\nrm gone.txt\n\
         chmod 600 chmod.txt\nchown 1:1 chown.txt\nsetfattr -n user.disco -v yes xattr.txt\n\
         rm -rf dir-to-file && echo now-a-file > dir-to-file\n\
         rm file-to-dir && mkdir file-to-dir && echo in > file-to-dir/in\n\
         ln -sfn edit.txt link\nmkdir -p new/deeper && echo n > new/deeper/n\n\
         useradd --no-create-home --shell /usr/sbin/nologin {user}\n\
         dpkg -i {deb} >/dev/null\n"
    );
    site(
        dir,
        &[
            ("parameters/n1/modules/corpus", ""),
            ("modules/corpus/scripts/00-change", &script),
        ],
    );
}

/// What the manifest covers: the corpus, and what adding a user and a package touch.
fn covered(area: &str) -> Vec<&str> {
    vec![
        area,
        "/etc",
        "/var/lib/dpkg",
        "/usr/share/rbtest",
        "/usr/bin",
        "/var/log/dpkg.log",
    ]
}

fn ok(out: &std::process::Output, what: &str) -> String {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    stdout
}

#[test]
fn a_rolled_back_dance_leaves_the_root_as_it_was_and_its_noop_is_the_reverse_diff() {
    if !have_root("rollback") {
        return;
    }
    let tmp = TempDir::new("rollback-corpus");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let pid = std::process::id();
    let area = format!("/srv/disco-rollback-{pid}");
    let user = format!("rb{pid}");
    corpus_area(&root, &area);
    build_package(&root, tmp.path(), "/opt/rbtest.deb");
    let src = TempDir::new("rollback-corpus-site");
    corpus_site(src.path(), &area, &user, "/opt/rbtest.deb");
    let state = tmp.path().join("state");
    let dirs = covered(&area);
    let before = manifest(&root, &dirs);

    let noop = ok(
        &live(&state, src.path(), &root, &["--noop"]),
        "the noop dance",
    );
    let dance = ok(&live(&state, src.path(), &root, &[]), "the live dance");
    let after_dance = manifest(&root, &dirs);
    assert!(
        text(&std::fs::read(root.join("etc/passwd")).unwrap()).contains(&format!("{user}:")),
        "the dance added no user:\n{dance}"
    );
    assert!(root.join("usr/share/rbtest/hello.txt").is_file());
    assert!(root.join(format!("{}/dir-to-file", &area[1..])).is_file());

    // The report says the dance can be undone.
    let report = disco(&state, &["report", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    util::assert_report_schema(&doc);
    assert_eq!(doc["rollback"]["possible"], true, "{doc}");
    let id = doc["id"].as_str().unwrap().to_owned();
    assert_eq!(doc["rollback"]["dances"][0], id.as_str());

    // The rollback's noop is the dance's diff reversed, path for path.
    let rb_noop = ok(
        &disco(
            &state,
            &["rollback", "--root", root.to_str().unwrap(), "--noop"],
        ),
        "rollback --noop",
    );
    fn reverse(kind: &str) -> &str {
        match kind {
            "Created" => "Deleted",
            "Deleted" => "Created",
            k => k,
        }
    }
    let danced: Vec<(PathBuf, &str)> = reported(&noop, "/")
        .into_iter()
        .map(|(p, k)| (p, reverse(k)))
        .collect();
    assert!(danced.len() >= 12, "{noop}");
    assert_eq!(
        reported(&rb_noop, "/"),
        danced,
        "rollback --noop said:\n{rb_noop}"
    );
    // A modified file's md5 goes back: the dance's `[a => b]` is the rollback's `[b => a]`.
    let edit = format!("{area}/edit.txt : Modified");
    let md5s = |out: &str| -> String {
        let line = out.lines().find(|l| l.contains(&edit)).unwrap().to_owned();
        let at = line.find("md5=[").unwrap();
        line[at..].split(']').next().unwrap().to_owned()
    };
    let (a, b) = md5s(&noop)
        .trim_start_matches("md5=[")
        .split_once(" => ")
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    assert_eq!(md5s(&rb_noop), format!("md5=[{b} => {a}"));
    assert_eq!(
        manifest(&root, &dirs),
        after_dance,
        "the noop changed something"
    );

    let rolled = ok(
        &disco(&state, &["rollback", "--root", root.to_str().unwrap()]),
        "rollback",
    );
    let now = manifest(&root, &dirs);
    let diff = differences(&before, &now, &written(&disposable.scratch));
    assert!(
        diff.is_empty(),
        "not as before:\n{}\n{rolled}",
        diff.join("\n")
    );
    // Nothing of the undo folders stays at the top of the root.
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".disco-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let report = disco(&state, &["report", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(doc["rollback"]["possible"], false, "{doc}");
    // Once undone, there is nothing more to undo.
    let again = disco(&state, &["rollback", "--root", root.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("can be rolled back"),
        "{}",
        text(&again.stderr)
    );
}

/// A site whose one module rewrites `n` files, creates `n` and deletes `n` under `area`.
fn many_site(dir: &Path, area: &str, n: usize) {
    let script = format!(
        "#!/bin/bash\nset -e\ncd {area}\n\
         for i in $(seq 1 {n}); do echo new-$i > mod-$i; echo c-$i > new-$i; rm del-$i; done\n\
         rm -rf tree && echo file > tree\n"
    );
    site(
        dir,
        &[
            ("parameters/n1/modules/many", ""),
            ("modules/many/scripts/00-change", &script),
        ],
    );
}

fn many_area(root: &Path, area: &str, n: usize) {
    let dir = root.join(area.trim_start_matches('/'));
    std::fs::create_dir_all(dir.join("tree/sub")).unwrap();
    std::fs::write(dir.join("tree/sub/x"), "x\n").unwrap();
    for i in 1..=n {
        std::fs::write(dir.join(format!("mod-{i}")), format!("old-{i}\n")).unwrap();
        std::fs::write(dir.join(format!("del-{i}")), format!("d-{i}\n")).unwrap();
    }
}

#[test]
fn a_rollback_killed_at_random_moments_is_finished_by_the_next_one_and_loses_nothing() {
    if !have_root("rollback") {
        return;
    }
    let tmp = TempDir::new("rollback-kill");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let area = format!("/srv/disco-rollback-kill-{}", std::process::id());
    let n = 300;
    many_area(&root, &area, n);
    let src = TempDir::new("rollback-kill-site");
    many_site(src.path(), &area, n);
    let state = tmp.path().join("state");
    let dirs = [area.as_str()];
    let before = manifest(&root, &dirs);
    let root_arg = root.to_str().unwrap().to_owned();
    let rollback = |state: &Path| {
        Command::new(env!("CARGO_BIN_EXE_disco"))
            .arg("--state-dir")
            .arg(state)
            .args(["rollback", "--root", &root_arg])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long one uninterrupted rollback takes here, to aim the kills inside it.
    ok(&live(&state, src.path(), &root, &[]), "the first dance");
    let after = manifest(&root, &dirs);
    let start = Instant::now();
    assert!(rollback(&state).wait().unwrap().success());
    let span = start.elapsed().max(Duration::from_millis(5));
    assert_eq!(manifest(&root, &dirs), before, "the uninterrupted rollback");
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let mut killed_mid = 0;
    for round in 0..20 {
        ok(&live(&state, src.path(), &root, &[]), "a dance");
        assert_eq!(manifest(&root, &dirs), after);
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = span.mul_f64((seed >> 33) as f64 / f64::from(1u32 << 31) * 1.2);
        let mut child = rollback(&state);
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        // Every file is whole: its content before the dance or after it, never a mix.
        let now = manifest(&root, &dirs);
        let mixed: Vec<_> = now
            .iter()
            .filter(|(p, d)| before.get(*p) != Some(*d) && after.get(*p) != Some(*d))
            .collect();
        assert!(
            mixed.is_empty(),
            "round {round} (after {delay:?}): {mixed:?}"
        );
        if now != before && now != after {
            killed_mid += 1;
        }
        // The next command finishes what the killed one began (or, when the killed one had
        // finished, finds nothing left to undo).
        let next = disco(&state, &["rollback", "--root", &root_arg]);
        assert!(
            next.status.success() || text(&next.stderr).contains("can be rolled back"),
            "round {round}: {}",
            text(&next.stderr)
        );
        assert_eq!(
            manifest(&root, &dirs),
            before,
            "round {round} (killed after {delay:?}): {}",
            text(&next.stderr)
        );
    }
    eprintln!("{killed_mid} of 20 kills landed in the middle of a rollback (span {span:?})");
    assert!(
        killed_mid > 0,
        "no kill landed inside a rollback (span {span:?})"
    );
}

#[test]
fn a_file_edited_after_the_dance_stops_the_rollback_until_forced_and_keeps_the_edit() {
    if !have_root("rollback") {
        return;
    }
    let tmp = TempDir::new("rollback-edited");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let area = format!("/srv/disco-rollback-edit-{}", std::process::id());
    many_area(&root, &area, 3);
    let src = TempDir::new("rollback-edited-site");
    many_site(src.path(), &area, 3);
    let state = tmp.path().join("state");
    let dirs = [area.as_str()];
    let before = manifest(&root, &dirs);
    ok(&live(&state, src.path(), &root, &[]), "the dance");
    // Someone appends to a file the dance wrote (same inode, new content).
    let edited = root.join(format!("{}/mod-2", &area[1..]));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&edited)
            .unwrap();
        f.write_all(b"local edit\n").unwrap();
    }
    let after_edit = manifest(&root, &dirs);
    let root_arg = root.to_str().unwrap();
    let refused = disco(&state, &["rollback", "--root", root_arg]);
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(
        err.contains(&format!("{area}/mod-2")) && err.contains("changed since the dance"),
        "{err}"
    );
    assert_eq!(
        manifest(&root, &dirs),
        after_edit,
        "a refused rollback changed something"
    );
    // The noop names it too.
    let noop = disco(&state, &["rollback", "--root", root_arg, "--noop"]);
    assert!(text(&noop.stderr).contains(&format!("{area}/mod-2")));

    let forced = ok(
        &disco(&state, &["rollback", "--root", root_arg, "--force"]),
        "rollback --force",
    );
    let now = manifest(&root, &dirs);
    let kept: Vec<&PathBuf> = now
        .keys()
        .filter(|p| p.to_string_lossy().contains("mod-2.disco-newer-"))
        .collect();
    assert_eq!(kept.len(), 1, "{now:?}");
    let newer = std::fs::read_to_string(root.join(kept[0].strip_prefix("/").unwrap())).unwrap();
    assert_eq!(newer, "new-2\nlocal edit\n");
    let mut without = now.clone();
    without.remove(kept[0]);
    assert_eq!(without, before, "{forced}");
}

#[test]
fn an_older_dance_is_rolled_back_only_after_the_newer_one() {
    if !have_root("rollback") {
        return;
    }
    let tmp = TempDir::new("rollback-order");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let area = format!("/srv/disco-rollback-order-{}", std::process::id());
    std::fs::create_dir_all(root.join(&area[1..])).unwrap();
    std::fs::write(root.join(format!("{}/f", &area[1..])), "0\n").unwrap();
    let state = tmp.path().join("state");
    let dirs = [area.as_str()];
    let mut manifests = vec![manifest(&root, &dirs)];
    let mut ids = Vec::new();
    for v in 1..=2 {
        let src = TempDir::new("rollback-order-site");
        site(
            src.path(),
            &[
                ("parameters/n1/modules/m", ""),
                (
                    "modules/m/scripts/00",
                    &format!("#!/bin/sh\necho {v} > {area}/f\necho {v} > {area}/g{v}\n"),
                ),
            ],
        );
        ok(&live(&state, src.path(), &root, &[]), "a dance");
        manifests.push(manifest(&root, &dirs));
        let report = disco(&state, &["report", "--format", "json"]);
        let doc: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
        ids.push(doc["id"].as_str().unwrap().to_owned());
    }
    let root_arg = root.to_str().unwrap();
    let refused = disco(&state, &["rollback", &ids[0], "--root", root_arg]);
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(
        err.contains(&ids[1]) && err.contains("roll it back first"),
        "{err}"
    );
    assert_eq!(manifest(&root, &dirs), manifests[2]);
    ok(
        &disco(&state, &["rollback", &ids[1], "--root", root_arg]),
        "the newer",
    );
    assert_eq!(manifest(&root, &dirs), manifests[1]);
    ok(
        &disco(&state, &["rollback", &ids[0], "--root", root_arg]),
        "the older",
    );
    assert_eq!(manifest(&root, &dirs), manifests[0]);
}

#[test]
fn a_rollback_runs_the_modules_deferred_commands_again_and_old_records_are_pruned() {
    if !have_root("rollback") {
        return;
    }
    let tmp = TempDir::new("rollback-deferred");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let log = format!("/var/tmp/disco-rollback-service-{}", std::process::id());
    stand_in_service(&root, &log);
    let area = format!("/srv/disco-rollback-svc-{}", std::process::id());
    std::fs::create_dir_all(root.join(&area[1..])).unwrap();
    std::fs::write(root.join(format!("{}/app.conf", &area[1..])), "v0\n").unwrap();
    let state = tmp.path().join("state");
    let mut ids = Vec::new();
    for v in 1..=3 {
        let src = TempDir::new("rollback-deferred-site");
        site(
            src.path(),
            &[
                ("parameters/n1/modules/app", ""),
                (
                    "modules/app/scripts/00",
                    &format!("#!/bin/sh\necho v{v} > {area}/app.conf\nservice app restart\n"),
                ),
            ],
        );
        ok(
            &live(
                &state,
                src.path(),
                &root,
                &["--run-deferred", "--keep-undo", "2"],
            ),
            "a dance",
        );
        let report = disco(&state, &["report", "--format", "json"]);
        let doc: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
        ids.push(doc["id"].as_str().unwrap().to_owned());
    }
    // Two dances are kept; the first can no longer be undone.
    let report = disco(&state, &["report", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(
        doc["rollback"]["dances"],
        serde_json::json!([ids[2], ids[1]]),
        "{doc}"
    );
    let logged = |root: &Path| {
        std::fs::read_to_string(root.join(&log[1..]))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(logged(&root), 3);
    let root_arg = root.to_str().unwrap();
    let out = ok(
        &disco(&state, &["rollback", "--root", root_arg, "--run-deferred"]),
        "rollback",
    );
    assert_eq!(
        std::fs::read_to_string(root.join(format!("{}/app.conf", &area[1..]))).unwrap(),
        "v2\n"
    );
    // The service restarted after the configuration was restored.
    assert_eq!(logged(&root), 4, "{out}");
    let last = std::fs::read_to_string(root.join(&log[1..])).unwrap();
    assert!(
        last.lines().last().unwrap().contains("app restart"),
        "{last}"
    );
    ok(
        &disco(&state, &["rollback", "--root", root_arg, "--run-deferred"]),
        "rollback",
    );
    assert_eq!(
        std::fs::read_to_string(root.join(format!("{}/app.conf", &area[1..]))).unwrap(),
        "v1\n"
    );
    let none = disco(&state, &["rollback", "--root", root_arg]);
    assert!(!none.status.success());
    assert!(
        text(&none.stderr).contains("can be rolled back"),
        "{}",
        text(&none.stderr)
    );
}

#[test]
fn a_dance_killed_during_its_merge_is_finished_and_then_undone_exactly() {
    if !have_root("rollback") {
        return;
    }
    let tmp = TempDir::new("rollback-killed-merge");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let area = format!("/srv/disco-rollback-merge-{}", std::process::id());
    let n = 300;
    many_area(&root, &area, n);
    let src = TempDir::new("rollback-killed-merge-site");
    many_site(src.path(), &area, n);
    let state = tmp.path().join("state");
    let dirs = [area.as_str()];
    let before = manifest(&root, &dirs);
    let root_arg = root.to_str().unwrap().to_owned();
    let dance = |state: &Path| {
        Command::new(env!("CARGO_BIN_EXE_disco"))
            .arg("--state-dir")
            .arg(state)
            .args(["dance", "--node", "n1", "--source"])
            .arg(src.path())
            .args(["--root", &root_arg])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    assert!(dance(&state).wait().unwrap().success());
    ok(
        &disco(&state, &["rollback", "--root", &root_arg]),
        "rollback",
    );
    assert_eq!(manifest(&root, &dirs), before);
    let journaled = |state: &Path| {
        std::fs::read_dir(state.join("journal"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .unwrap_or(false)
    };
    let mut interrupted = 0;
    for round in 0..8 {
        // The moment its merge writes its journal, then a little later each round.
        let mut child = dance(&state);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !journaled(&state) && child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the dance never merged");
            std::thread::sleep(Duration::from_micros(200));
        }
        let delay = Duration::from_millis(3 * round);
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        if journaled(&state) {
            interrupted += 1;
        }
        // The rollback first finishes the interrupted merge, then undoes all of it.
        let out = disco(&state, &["rollback", "--root", &root_arg]);
        assert!(
            out.status.success() || text(&out.stderr).contains("can be rolled back"),
            "round {round}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            manifest(&root, &dirs),
            before,
            "round {round} (killed {delay:?} into its merge): {}",
            text(&out.stderr)
        );
    }
    eprintln!("{interrupted} of 8 kills interrupted a merge");
    assert!(interrupted > 0, "no kill landed inside a merge");
}

#[test]
fn undo_records_over_the_size_bound_are_pruned_with_their_folders() {
    if !have_root("rollback") {
        return;
    }
    let tmp = TempDir::new("rollback-size");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let area = format!("/srv/disco-rollback-size-{}", std::process::id());
    many_area(&root, &area, 3);
    let src = TempDir::new("rollback-size-site");
    many_site(src.path(), &area, 3);
    let state = tmp.path().join("state");
    let undo_folders = |root: &Path| {
        std::fs::read_dir(root.join("srv"))
            .unwrap()
            .chain(std::fs::read_dir(root).unwrap())
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".disco-undo-"))
            .count()
    };
    let out = ok(
        &live(&state, src.path(), &root, &["--keep-undo-size", "0"]),
        "a dance",
    );
    assert!(out.contains("can no longer be rolled back"), "{out}");
    assert_eq!(undo_folders(&root), 0);
    let none = disco(&state, &["rollback", "--root", root.to_str().unwrap()]);
    assert!(!none.status.success());
    // With the default bounds the next dance's record stays, and its folder with it.
    std::fs::remove_file(root.join(format!("{}/tree", &area[1..]))).unwrap();
    many_area(&root, &area, 3);
    ok(&live(&state, src.path(), &root, &[]), "a dance");
    assert_eq!(undo_folders(&root), 1);
}

#[test]
fn a_dance_that_kept_nothing_cannot_be_rolled_back_and_nothing_is_deleted() {
    if !have_root("rollback") {
        return;
    }
    let tmp = TempDir::new("rollback-keep-none");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let area = format!("/srv/disco-rollback-none-{}", std::process::id());
    many_area(&root, &area, 3);
    let src = TempDir::new("rollback-keep-none-site");
    many_site(src.path(), &area, 3);
    let state = tmp.path().join("state");
    let dirs = [area.as_str()];
    ok(
        &live(&state, src.path(), &root, &["--keep-undo", "0"]),
        "a dance",
    );
    let after = manifest(&root, &dirs);
    assert!(
        !state.join("undo").exists()
            || std::fs::read_dir(state.join("undo"))
                .unwrap()
                .next()
                .is_none()
    );
    let out = disco(&state, &["rollback", "--root", root.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("can be rolled back"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(manifest(&root, &dirs), after);
}

#[test]
fn a_lost_undo_folder_or_a_lost_parent_folder_stops_the_rollback_before_anything_changes() {
    if !have_root("rollback") {
        return;
    }
    let tmp = TempDir::new("rollback-lost");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let area = format!("/srv/disco-rollback-lost-{}", std::process::id());
    many_area(&root, &area, 3);
    std::fs::create_dir_all(root.join(format!("{}/sub", &area[1..]))).unwrap();
    std::fs::write(root.join(format!("{}/sub/gone", &area[1..])), "g\n").unwrap();
    let src = TempDir::new("rollback-lost-site");
    let script = format!(
        "#!/bin/bash\nset -e\ncd {area}\nfor i in 1 2 3; do echo new-$i > mod-$i; done\nrm sub/gone\n"
    );
    site(
        src.path(),
        &[
            ("parameters/n1/modules/lost", ""),
            ("modules/lost/scripts/00", &script),
        ],
    );
    let state = tmp.path().join("state");
    let dirs = [area.as_str()];
    ok(&live(&state, src.path(), &root, &[]), "a dance");
    // Someone removes the folder of a path the dance deleted: it cannot be put back.
    std::fs::remove_dir(root.join(format!("{}/sub", &area[1..]))).unwrap();
    let after = manifest(&root, &dirs);
    let root_arg = root.to_str().unwrap();
    let out = disco(&state, &["rollback", "--root", root_arg]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{area}/sub/gone")) && err.contains("lost its folder"),
        "{err}"
    );
    assert_eq!(manifest(&root, &dirs), after);
    // Someone removes the undo folder the dance's record names: nothing can be put back, so
    // nothing is removed either.
    for e in std::fs::read_dir(&root).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(".disco-undo-") {
            std::fs::remove_dir_all(e.path()).unwrap();
        }
    }
    let out = disco(&state, &["rollback", "--root", root_arg, "--force"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("is gone from its undo folder"), "{err}");
    assert_eq!(manifest(&root, &dirs), after);
}

#[test]
fn a_folder_a_module_made_and_a_later_module_chowned_is_checked_for_what_others_put_in() {
    if !have_root("rollback") {
        return;
    }
    let tmp = TempDir::new("rollback-made");
    let disposable = disposable_root(tmp.path(), None);
    let root = disposable.root.clone();
    let area = format!("/srv/disco-rollback-made-{}", std::process::id());
    std::fs::create_dir_all(root.join(&area[1..])).unwrap();
    let src = TempDir::new("rollback-made-site");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/a", ""),
            ("parameters/n1/modules/b", ""),
            (
                "modules/a/scripts/00",
                &format!("#!/bin/sh\nmkdir {area}/app\n"),
            ),
            ("modules/b/requires", "a\n"),
            (
                "modules/b/scripts/00",
                &format!("#!/bin/sh\nchown 1:1 {area}/app\n"),
            ),
        ],
    );
    let state = tmp.path().join("state");
    let dirs = [area.as_str()];
    let before = manifest(&root, &dirs);
    ok(&live(&state, src.path(), &root, &[]), "a dance");
    // A service writes its state into the folder the dance made.
    std::fs::write(root.join(format!("{}/app/state.db", &area[1..])), "db\n").unwrap();
    let after = manifest(&root, &dirs);
    let root_arg = root.to_str().unwrap();
    let out = disco(&state, &["rollback", "--root", root_arg]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("state.db"), "{err}");
    assert_eq!(
        manifest(&root, &dirs),
        after,
        "a refused rollback changed something"
    );
    ok(
        &disco(&state, &["rollback", "--root", root_arg, "--force"]),
        "--force",
    );
    let now = manifest(&root, &dirs);
    let kept: Vec<_> = now
        .keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("app.disco-newer-"))
        })
        .cloned()
        .collect();
    assert_eq!(kept.len(), 1, "{now:?}");
    let mut without: BTreeMap<PathBuf, String> = now
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&kept[0]))
        .collect();
    without.retain(|p, _| !p.starts_with(&kept[0]));
    assert_eq!(without, before);
}
