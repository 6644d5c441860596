//! `dance::fetch` against real servers started here on loopback: an rsync daemon over TCP, and
//! rsync's daemon over a real sshd, both serving the seed's example site; and a local source.
//!
//! The server tests need root (sshd, and the daemon's drop to `nobody`) and the packages rsync,
//! openssh-server and openssh-client; without them they say why and pass, except under CI.

mod servers;
mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use host::dance::fetch::{FetchError, Fetched, Fetcher, Source};
use servers::{can_run, RsyncDaemon, Sshd};
use util::TempDir;

const RSYNC_TOOLS: &[&str] = &["rsync"];
const SSH_TOOLS: &[&str] = &["rsync", "ssh", "ssh-keygen", "/usr/sbin/sshd"];

/// Writes `text` to `root/rel` with `mode`, creating parents.
fn put(root: &Path, rel: &str, text: &str, mode: u32) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The seed's server home: `parameters/` and `modules/{testmodule-1.0,othermodule-3.2}` with
/// their empty `files/`, `scripts/` and `templates/` folders.
fn seed_site(home: &Path) {
    let node = "parameters/localhost.localdomain";
    put(
        home,
        &format!("{node}/parameters/something"),
        "LOLTHISKEYMEANSNOTHING\n",
        0o644,
    );
    put(home, &format!("{node}/modules/othermodule-3.2"), "", 0o644);
    put(home, &format!("{node}/modules/testmodule-1.0"), "", 0o644);
    put(
        home,
        "parameters/disco/client/cmds/rsync",
        "rsync -a\n",
        0o644,
    );
    let t = "modules/testmodule-1.0";
    put(home, &format!("{t}/requires"), "", 0o644);
    put(home, &format!("{t}/parameters/testmodule-1.0"), "", 0o644);
    put(
        home,
        &format!("{t}/scripts/00-hello.sh"),
        "#!/bin/bash\n\necho \"Hello, disco\"\n",
        0o755,
    );
    put(
        home,
        &format!("{t}/scripts/10-service_stop.sh"),
        "#!/bin/bash\n\nservice postgresql stop\n",
        0o750,
    );
    let o = "modules/othermodule-3.2";
    put(home, &format!("{o}/requires"), "testmodule-1.0\n", 0o644);
    put(home, &format!("{o}/parameters/othermodule-3.2"), "", 0o644);
    put(
        home,
        &format!("{o}/templates/etc/othermodule/stuff.cfg"),
        "echo HOST=$(hostname)\necho KEY_VALUE=$(cat /var/disco/parameters/$(hostname)/parameters/something)\n",
        0o644,
    );
    for dir in [
        format!("{t}/templates"),
        format!("{t}/files"),
        format!("{o}/scripts"),
        format!("{o}/files"),
    ] {
        fs::create_dir_all(home.join(dir)).unwrap();
    }
}

/// The rsync modules of the seed's `rsyncd.conf` for a server home, plus `extra` modules.
fn seed_modules<'a>(home: &Path, extra: &[&'a str]) -> Vec<(&'a str, PathBuf)> {
    let mut modules = vec![
        ("parameters", home.join("parameters")),
        ("testmodule-1.0", home.join("modules/testmodule-1.0")),
        ("othermodule-3.2", home.join("modules/othermodule-3.2")),
    ];
    modules.extend(extra.iter().map(|m| (*m, home.join("modules").join(m))));
    modules
}

fn as_refs<'a>(modules: &'a [(&'a str, PathBuf)]) -> Vec<(&'a str, &'a Path)> {
    modules.iter().map(|(n, p)| (*n, p.as_path())).collect()
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The checks every server test makes: the seed's parameters and both modules arrived in the
/// cache with their contents, modes and empty folders, and each fetch was measured.
fn assert_seed_fetched(fetcher: &Fetcher, cache: &Path) {
    let params = fetcher.fetch_params().unwrap();
    assert_eq!(params.path, cache.join("parameters"));
    assert_measured(&params);
    assert_eq!(
        fs::read_to_string(
            params
                .path
                .join("localhost.localdomain/parameters/something")
        )
        .unwrap(),
        "LOLTHISKEYMEANSNOTHING\n"
    );
    assert!(params
        .path
        .join("localhost.localdomain/modules/testmodule-1.0")
        .is_file());

    let results = fetcher.fetch_modules(&names(&["testmodule-1.0", "othermodule-3.2"]));
    let [test, other] = <[_; 2]>::try_from(results).unwrap();
    let (test, other) = (test.unwrap(), other.unwrap());
    assert_eq!(test.path, cache.join("modules/testmodule-1.0"));
    assert_eq!(other.path, cache.join("modules/othermodule-3.2"));
    assert_measured(&test);
    assert_eq!(mode(&test.path.join("scripts/00-hello.sh")), 0o755);
    assert_eq!(mode(&test.path.join("scripts/10-service_stop.sh")), 0o750);
    assert_eq!(
        fs::read_to_string(test.path.join("scripts/00-hello.sh")).unwrap(),
        "#!/bin/bash\n\necho \"Hello, disco\"\n"
    );
    assert!(test.path.join("templates").is_dir() && test.path.join("files").is_dir());
    assert_eq!(
        mode(&other.path.join("templates/etc/othermodule/stuff.cfg")),
        0o644
    );
    assert_eq!(
        fs::read_to_string(other.path.join("requires")).unwrap(),
        "testmodule-1.0\n"
    );
    assert!(other.path.join("scripts").is_dir() && other.path.join("files").is_dir());
}

fn assert_measured(fetched: &Fetched) {
    let usage = fetched.rusage.expect("an rsync fetch is measured");
    assert!(usage.mem_max_kb > 0, "{usage:?}");
    assert!(
        usage.user + usage.sys > std::time::Duration::ZERO,
        "{usage:?}"
    );
    assert!(fetched.elapsed > std::time::Duration::ZERO);
}

/// The error of a failed fetch, as the dance would print it.
fn failure(result: &Result<Fetched, FetchError>) -> String {
    match result {
        Ok(f) => panic!("fetched {}", f.path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn daemon_serves_the_seed_site() {
    if !can_run("daemon_serves_the_seed_site", RSYNC_TOOLS) {
        return;
    }
    let tmp = TempDir::new("fetch-daemon");
    let home = tmp.path().join("home");
    seed_site(&home);
    let modules = seed_modules(&home, &[]);
    let daemon = RsyncDaemon::start(tmp.path(), &as_refs(&modules));
    let cache = tmp.path().join("state/cache");
    let source: Source = daemon.uri().parse().unwrap();
    let fetcher = Fetcher::new(source, None, cache.clone(), 2).unwrap();
    assert_seed_fetched(&fetcher, &cache);
}

#[test]
fn daemon_missing_module_fails_alone_with_rsyncs_message() {
    if !can_run("daemon_missing_module_fails_alone", RSYNC_TOOLS) {
        return;
    }
    let tmp = TempDir::new("fetch-missing");
    let home = tmp.path().join("home");
    seed_site(&home);
    // `ghost-1.0` is configured, but its directory is missing on the server.
    let modules = seed_modules(&home, &["ghost-1.0"]);
    let daemon = RsyncDaemon::start(tmp.path(), &as_refs(&modules));
    let cache = tmp.path().join("cache");
    let fetcher = Fetcher::new(daemon.uri().parse().unwrap(), None, cache.clone(), 2).unwrap();
    let results = fetcher.fetch_modules(&names(&[
        "testmodule-1.0",
        "nosuch-1.0",
        "ghost-1.0",
        "othermodule-3.2",
    ]));
    assert!(results[0].is_ok() && results[3].is_ok(), "{results:?}");
    let nosuch = failure(&results[1]);
    assert!(
        nosuch.starts_with(&format!(
            "fetch nosuch-1.0 from {}: @ERROR: Unknown module 'nosuch-1.0'",
            daemon.uri()
        )),
        "{nosuch}"
    );
    assert!(!nosuch.contains('\n'), "{nosuch}");
    let ghost = failure(&results[2]);
    eprintln!("{nosuch}\n{ghost}");
    assert!(
        ghost.starts_with("fetch ghost-1.0 from rsync://"),
        "{ghost}"
    );
    assert!(ghost.contains("chdir failed"), "{ghost}");
    let Err(FetchError::Rsync { status, rusage, .. }) = &results[1] else {
        panic!("{:?}", results[1]);
    };
    assert_eq!(
        *status, 5,
        "rsync's 'error starting client-server protocol'"
    );
    assert!(rusage.mem_max_kb > 0);
}

#[test]
fn daemon_fetches_many_modules_two_at_a_time() {
    if !can_run("daemon_fetches_many_modules", RSYNC_TOOLS) {
        return;
    }
    let tmp = TempDir::new("fetch-parallel");
    let home = tmp.path().join("home");
    seed_site(&home);
    let many: Vec<String> = (0..12).map(|i| format!("mod{i:02}-1.0")).collect();
    for name in &many {
        for f in 0..10 {
            put(
                &home,
                &format!("modules/{name}/files/etc/{name}/f{f}"),
                &format!("{name} {f}\n"),
                0o640,
            );
        }
        put(
            &home,
            &format!("modules/{name}/scripts/00-run.sh"),
            "#!/bin/bash\ntrue\n",
            0o755,
        );
    }
    let extra: Vec<&str> = many.iter().map(String::as_str).collect();
    let modules = seed_modules(&home, &extra);
    let daemon = RsyncDaemon::start(tmp.path(), &as_refs(&modules));
    let cache = tmp.path().join("cache");
    let fetcher = Fetcher::new(daemon.uri().parse().unwrap(), None, cache.clone(), 2).unwrap();
    let mut wanted = many.clone();
    wanted.reverse();
    let start = std::time::Instant::now();
    let results = fetcher.fetch_modules(&wanted);
    eprintln!(
        "fetched {} modules, 2 at a time, in {:?}",
        wanted.len(),
        start.elapsed()
    );
    for (name, result) in wanted.iter().zip(&results) {
        let fetched = result.as_ref().unwrap();
        assert_eq!(
            fetched.path,
            cache.join("modules").join(name),
            "input order"
        );
        let f3 = fetched.path.join(format!("files/etc/{name}/f3"));
        assert_eq!(fs::read_to_string(&f3).unwrap(), format!("{name} 3\n"));
        assert_eq!(mode(&f3), 0o640);
    }
}

#[test]
fn daemon_mirror_deletes_what_the_server_deleted() {
    if !can_run("daemon_mirror_deletes", RSYNC_TOOLS) {
        return;
    }
    let tmp = TempDir::new("fetch-delete");
    let home = tmp.path().join("home");
    seed_site(&home);
    put(
        &home,
        "modules/testmodule-1.0/scripts/20-old.sh",
        "#!/bin/bash\n",
        0o755,
    );
    put(
        &home,
        "parameters/localhost.localdomain/parameters/old",
        "x\n",
        0o644,
    );
    let modules = seed_modules(&home, &[]);
    let daemon = RsyncDaemon::start(tmp.path(), &as_refs(&modules));
    let cache = tmp.path().join("cache");
    // Without --delete in the command: disco appends it.
    let fetcher = Fetcher::new(
        daemon.uri().parse().unwrap(),
        Some("rsync -a"),
        cache.clone(),
        2,
    )
    .unwrap();
    let wanted = names(&["testmodule-1.0"]);
    let module = fetcher.fetch_modules(&wanted).remove(0).unwrap().path;
    let params = fetcher.fetch_params().unwrap().path;
    assert!(module.join("scripts/20-old.sh").is_file());
    assert!(params
        .join("localhost.localdomain/parameters/old")
        .is_file());
    // Something of ours beside the module's folder must survive its mirror.
    fs::write(cache.join("modules/keep"), "mine").unwrap();

    fs::remove_file(home.join("modules/testmodule-1.0/scripts/20-old.sh")).unwrap();
    fs::remove_file(home.join("parameters/localhost.localdomain/parameters/old")).unwrap();
    put(
        &home,
        "modules/testmodule-1.0/scripts/30-new.sh",
        "#!/bin/bash\n",
        0o700,
    );
    fetcher.fetch_modules(&wanted).remove(0).unwrap();
    fetcher.fetch_params().unwrap();
    assert!(!module.join("scripts/20-old.sh").exists());
    assert!(!params.join("localhost.localdomain/parameters/old").exists());
    assert_eq!(mode(&module.join("scripts/30-new.sh")), 0o700);
    assert!(module.join("scripts/00-hello.sh").is_file());
    assert_eq!(
        fs::read_to_string(cache.join("modules/keep")).unwrap(),
        "mine"
    );

    // A symlink where a module's folder goes is refused, and its target left alone.
    let elsewhere = tmp.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("precious"), "x").unwrap();
    std::os::unix::fs::symlink(&elsewhere, cache.join("modules/othermodule-3.2")).unwrap();
    let message = failure(&fetcher.fetch_modules(&names(&["othermodule-3.2"]))[0]);
    assert!(
        message.ends_with("is a symlink: not mirroring into it"),
        "{message}"
    );
    assert!(elsewhere.join("precious").is_file());
}

#[test]
fn daemon_over_ssh_serves_the_seed_site() {
    if !can_run("daemon_over_ssh_serves_the_seed_site", SSH_TOOLS) {
        return;
    }
    let tmp = TempDir::new("fetch-ssh");
    let home = tmp.path().join("home");
    seed_site(&home);
    let modules = seed_modules(&home, &[]);
    // What the server's `~/rsyncd.conf` would be; the test points rsync at it with
    // --rsync-path instead of writing into root's home.
    let conf = tmp.path().join("rsyncd.conf");
    fs::write(
        &conf,
        servers::rsyncd_conf(&tmp.path().join("rsyncd.log"), &as_refs(&modules)),
    )
    .unwrap();
    let sshd = Sshd::start(tmp.path());
    let command = shell_words::join([
        "rsync",
        "-a",
        "--rsh",
        &sshd.rsh(),
        "--rsync-path",
        &format!("rsync --config={}", conf.display()),
    ]);
    let cache = tmp.path().join("cache");
    let source: Source = "root@127.0.0.1::".parse().unwrap();
    assert_eq!(source, Source::Rsync("root@127.0.0.1::".into()));
    let fetcher = Fetcher::new(source, Some(&command), cache.clone(), 2).unwrap();
    let log = || fs::read_to_string(&sshd.log).unwrap_or_default();
    let params = fetcher.fetch_params();
    assert!(params.is_ok(), "{params:?}\nsshd said:\n{}", log());
    assert_seed_fetched(&fetcher, &cache);

    let missing = fetcher.fetch_modules(&names(&["nosuch-1.0"]));
    let message = failure(&missing[0]);
    assert!(
        message.starts_with(
            "fetch nosuch-1.0 from root@127.0.0.1::: @ERROR: Unknown module 'nosuch-1.0'"
        ),
        "{message}"
    );
}

#[test]
fn ssh_refusal_is_one_line_naming_the_source() {
    if !can_run("ssh_refusal_is_one_line", SSH_TOOLS) {
        return;
    }
    let tmp = TempDir::new("fetch-ssh-refused");
    let sshd = Sshd::start(tmp.path());
    // A key sshd does not know: ssh gives up (BatchMode), and rsync says why.
    let stranger = tmp.path().join("stranger");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(status.success());
    let rsh = sshd.rsh().replace(
        &sshd.key.display().to_string(),
        &stranger.display().to_string(),
    );
    let command = shell_words::join(["rsync", "-a", "-e", &rsh]);
    let fetcher = Fetcher::new(
        "root@127.0.0.1::".parse().unwrap(),
        Some(&command),
        tmp.path().join("cache"),
        1,
    )
    .unwrap();
    let message = failure(&fetcher.fetch_params());
    eprintln!("{message}");
    assert!(
        message.starts_with("fetch parameters from root@127.0.0.1::: "),
        "{message}"
    );
    assert!(message.contains("Permission denied"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn local_source_is_used_in_place() {
    let tmp = TempDir::new("fetch-local");
    let home = tmp.path().join("site");
    seed_site(&home);
    let cache = tmp.path().join("cache");
    let source: Source = home.to_str().unwrap().parse().unwrap();
    assert_eq!(source, Source::Local(home.clone()));
    let fetcher = Fetcher::new(source, None, cache.clone(), 4).unwrap();
    let params = fetcher.fetch_params().unwrap();
    assert_eq!(params.path, home.join("parameters"));
    assert_eq!(params.rusage, None);
    let results =
        fetcher.fetch_modules(&names(&["othermodule-3.2", "nosuch-1.0", "testmodule-1.0"]));
    assert_eq!(
        results[0].as_ref().unwrap().path,
        home.join("modules/othermodule-3.2")
    );
    assert_eq!(
        results[2].as_ref().unwrap().path,
        home.join("modules/testmodule-1.0")
    );
    assert_eq!(
        failure(&results[1]),
        format!(
            "fetch nosuch-1.0 from {}: no such directory {}",
            home.display(),
            home.join("modules/nosuch-1.0").display()
        )
    );
    assert!(!cache.exists(), "a local source copies nothing");

    // A site without parameters/ is an error naming the folder.
    fs::remove_dir_all(home.join("parameters")).unwrap();
    let message = failure(&fetcher.fetch_params());
    assert!(
        message.contains("no such directory") && message.contains("parameters"),
        "{message}"
    );
}

#[test]
fn relative_local_source_and_bad_words() {
    let tmp = TempDir::new("fetch-parse");
    let here = std::env::current_dir().unwrap();
    let rel = pathdiff(tmp.path(), &here);
    let source: Source = rel.parse().unwrap();
    assert_eq!(source, Source::Local(std::path::absolute(&rel).unwrap()));
    let err = "nosuchserver".parse::<Source>().unwrap_err().to_string();
    assert!(
        err.starts_with("source \"nosuchserver\": neither an existing directory"),
        "{err}"
    );
}

/// `path` relative to `base` as `./..`-style text (both absolute).
fn pathdiff(path: &Path, base: &Path) -> String {
    let ups = base.components().count() - 1;
    let mut text = String::from(".");
    for _ in 0..ups {
        text.push_str("/..");
    }
    text.push_str(path.to_str().unwrap());
    text
}

/// Lines of the daemon's log that hold `needle`.
fn log_count(log: &Path, needle: &str) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn site_source_fetches_a_dance_in_one_session_and_only_its_node() {
    if !can_run("site_source_fetches_a_dance_in_one_session", RSYNC_TOOLS) {
        return;
    }
    let tmp = TempDir::new("fetch-site");
    let home = tmp.path().join("home");
    seed_site(&home);
    put(&home, "parameters/other.node/secret", "theirs\n", 0o600);
    let daemon = RsyncDaemon::start(tmp.path(), &[("site", home.as_path())]);
    let cache = tmp.path().join("cache");
    // What an earlier layout left: another node's parameters, which must not reach the tree.
    put(&cache, "parameters/other.node/old", "x\n", 0o644);
    let source: Source = format!("{}site", daemon.uri()).parse().unwrap();
    assert!(source.is_site());
    let node = "localhost.localdomain";
    let dance = |wanted: &[&str]| {
        let fetcher = Fetcher::new(source.clone(), None, cache.clone(), 2)
            .unwrap()
            .for_node(node)
            .unwrap();
        let params = fetcher.fetch_params().unwrap();
        assert_measured(&params);
        let results = fetcher.fetch_modules(&names(wanted));
        fetcher.prune();
        (params, results)
    };
    // One line per session that asked for a module (the start-up probe asked for none).
    let sessions = || log_count(&daemon.log, "rsync on site/");

    // The first dance: the parameters, then the modules, in one session each.
    let (params, results) = dance(&["testmodule-1.0", "othermodule-3.2"]);
    assert_eq!(sessions(), 2);
    assert_eq!(params.path, cache.join("parameters"));
    let mut listed: Vec<String> = fs::read_dir(&params.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, ["disco", node], "only this node's parameters");
    let test = results[0].as_ref().unwrap();
    assert_eq!(test.path, cache.join("modules/testmodule-1.0"));
    assert_eq!(mode(&test.path.join("scripts/10-service_stop.sh")), 0o750);
    assert!(results[1].as_ref().unwrap().path.join("requires").is_file());

    // The next dance: one session, and nothing unchanged is sent again.
    let sent = log_count(&daemon.log, " send ");
    assert!(sent > 0, "the daemon logs what it sends");
    let (_, results) = dance(&["testmodule-1.0", "othermodule-3.2"]);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(sessions(), 3, "one session per dance");
    assert_eq!(log_count(&daemon.log, " send "), sent, "nothing sent again");

    // A changed file is all that is sent; a module no longer listed leaves the cache; one
    // the server lacks fails alone.
    put(
        &home,
        "modules/testmodule-1.0/scripts/00-hello.sh",
        "#!/bin/bash\necho changed\n",
        0o755,
    );
    let (_, results) = dance(&["testmodule-1.0", "nosuch-1.0"]);
    assert_eq!(
        sessions(),
        5,
        "the parameters' session, then the new module's"
    );
    assert_eq!(log_count(&daemon.log, " send "), sent + 1);
    assert_eq!(
        fs::read_to_string(cache.join("modules/testmodule-1.0/scripts/00-hello.sh")).unwrap(),
        "#!/bin/bash\necho changed\n"
    );
    let nosuch = failure(&results[1]);
    assert_eq!(
        nosuch,
        format!("fetch nosuch-1.0 from {source}: not on the server (or not for this node)")
    );
    assert!(!cache.join("modules/othermodule-3.2").exists(), "pruned");
    assert!(!cache.join("modules/nosuch-1.0").exists());

    // A node the server does not know gets a clear error.
    let stranger = Fetcher::new(source.clone(), None, tmp.path().join("c2"), 1)
        .unwrap()
        .for_node("stranger.node")
        .unwrap();
    let err = stranger.fetch_params().unwrap_err().to_string();
    assert_eq!(
        err,
        format!("fetch parameters/stranger.node from {source}: not on the server (or not for this node)")
    );
    assert!(Fetcher::new(source.clone(), None, cache.clone(), 1)
        .unwrap()
        .for_node("../x")
        .is_err());
}
