//! `disco fleet status` and `disco fleet diff` on reports of real noop dances of several nodes,
//! laid out as nodes push them to the server (`DIR/NODE/ID.json`).

use std::path::Path;
use std::process::{Command, Stdio};

mod servers;
mod util;
use util::{disco, have_root, site, text, TempDir};

/// A noop dance of `node` in JSON, saved as that node would push it.
fn dance_into(reports: &Path, state: &Path, source: &Path, node: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_disco"))
        .arg("--state-dir")
        .arg(state)
        .args([
            "dance", "--noop", "--format", "json", "--node", node, "--source",
        ])
        .arg(source)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    let dir = reports.join(node);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{}.json", doc["id"].as_str().unwrap())),
        serde_json::to_vec(&doc).unwrap(),
    )
    .unwrap();
    doc
}

#[test]
fn status_and_diff_of_four_nodes_name_the_odd_one_out() {
    if !have_root("fleet") {
        return;
    }
    let tmp = TempDir::new("fleet");
    let src = tmp.path().join("site");
    let mut files = vec![(
        "modules/ntp/templates/etc/disco-fleet/ntp.conf".to_owned(),
        "echo server=$(disco-param get $(hostname)/ntp_server)\n".to_owned(),
    )];
    files.push((
        "modules/bad/scripts/00-fail".to_owned(),
        "#!/bin/sh\necho no >&2\nexit 3\n".to_owned(),
    ));
    for (node, server) in [("n1", "a"), ("n2", "a"), ("n3", "a"), ("n4", "b")] {
        files.push((format!("parameters/{node}/modules/ntp"), String::new()));
        files.push((format!("parameters/{node}/ntp_server"), server.to_owned()));
    }
    files.push(("parameters/n3/modules/bad".to_owned(), String::new()));
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    site(&src, &borrowed);
    let reports = tmp.path().join("reports");
    for node in ["n1", "n2", "n3", "n4"] {
        dance_into(
            &reports,
            &tmp.path().join(format!("state-{node}")),
            &src,
            node,
        );
    }

    let diff = disco(
        tmp.path(),
        &["fleet", "diff", "--reports", reports.to_str().unwrap()],
    );
    let out = text(&diff.stdout);
    assert!(diff.status.success(), "{out}{}", text(&diff.stderr));
    let line = out
        .lines()
        .find(|l| l.starts_with("/etc/disco-fleet/ntp.conf : "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(": Created on 3 nodes (md5 - => "), "{line}");
    assert!(line.ends_with("; on 1 node otherwise: n4"), "{line}");
    assert!(out.contains("module bad failed on 1 node: n3 ("), "{out}");
    let json = disco(
        tmp.path(),
        &[
            "fleet",
            "diff",
            "--reports",
            reports.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["diff"]["nodes"].as_array().unwrap().len(), 4);

    // n3's module failed: the fleet is not all ok.
    let status = disco(
        tmp.path(),
        &["fleet", "status", "--reports", reports.to_str().unwrap()],
    );
    let out = text(&status.stdout);
    assert_eq!(status.status.code(), Some(1), "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("n3: ")
            && l.contains(", noop, failed, ")
            && l.ends_with("failed: bad")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("n1: ") && l.contains(", noop, ok, 2 change(s)")),
        "{out}"
    );
    assert!(!out.contains("STALE"), "{out}");

    // A node whose last report is older than two intervals is stale.
    let n1 = std::fs::read_dir(reports.join("n1"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut old: serde_json::Value = serde_json::from_slice(&std::fs::read(&n1).unwrap()).unwrap();
    let hours_ago = old["started_unix_ms"].as_u64().unwrap() - 3 * 3600 * 1000;
    old["started_unix_ms"] = hours_ago.into();
    old["node"] = "n5".into();
    std::fs::create_dir_all(reports.join("n5")).unwrap();
    std::fs::write(
        reports.join("n5/1000000000.000001-1.json"),
        serde_json::to_vec(&old).unwrap(),
    )
    .unwrap();
    let status = disco(
        tmp.path(),
        &[
            "fleet",
            "status",
            "--reports",
            reports.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let n5 = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "n5")
        .unwrap();
    assert_eq!(n5["stale"], true);
    assert!(n5["age_s"].as_u64().unwrap() >= 3 * 3600);
}

#[test]
fn a_reports_folder_without_nodes_is_one_clear_error() {
    let tmp = TempDir::new("fleet-empty");
    let out = disco(
        tmp.path(),
        &["fleet", "status", "--reports", tmp.path().to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no node's reports in"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_alerting_rules_pass_promtool() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/prometheus");
    let out = Command::new("promtool")
        .args(["test", "rules", "disco-rules.test.yml"])
        .current_dir(&dir)
        .output()
        .expect("promtool is missing: run tests/run as root, or apt-get install prometheus");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The rules name the metrics the dance really writes, and promtool reads what it writes.
    if !have_root("fleet") {
        return;
    }
    let tmp = TempDir::new("fleet-textfile");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/example-site");
    let out = disco(
        &tmp.path().join("state"),
        &[
            "dance",
            "--noop",
            "-q",
            "--node",
            "localhost.localdomain",
            "--source",
            example.to_str().unwrap(),
            "--textfile",
            tmp.path().to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read(tmp.path().join("disco_dance.prom")).unwrap();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check.stdin.take().unwrap().write_all(&written).unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        text(&checked.stdout),
        text(&checked.stderr)
    );
    let written = text(&written);
    let rules = std::fs::read_to_string(dir.join("disco-rules.yml")).unwrap();
    for metric in [
        "disco_dance_last_success{",
        "disco_dance_last_changes{",
        "disco_dance_last_timestamp_seconds{",
        "disco_dance_last_duration_seconds{",
    ] {
        let name = metric.trim_end_matches('{');
        assert!(rules.contains(name), "{name} not in the rules");
        assert!(written.contains(metric), "{name} not written:\n{written}");
    }
}

#[test]
fn a_dance_pushes_its_report_where_fleet_status_reads_it() {
    if !have_root("fleet") {
        return;
    }
    let tmp = TempDir::new("fleet-push");
    let src = tmp.path().join("site");
    site(
        &src,
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/files/etc/disco-push", "x\n"),
        ],
    );
    let reports = tmp.path().join("server/reports");
    std::fs::create_dir_all(&reports).unwrap();
    let state = tmp.path().join("state");
    let dance = |to: &Path| {
        disco(
            &state,
            &[
                "dance",
                "--noop",
                "--node",
                "n1",
                "--source",
                src.to_str().unwrap(),
                "--report-to",
                to.to_str().unwrap(),
            ],
        )
    };
    let out = dance(&reports);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("cannot push"),
        "{}",
        text(&out.stderr)
    );
    let pushed: Vec<_> = std::fs::read_dir(reports.join("n1"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(pushed.len(), 1);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pushed[0].path()).unwrap()).unwrap();
    util::assert_report_schema(&doc);
    // The pushed copy leaves the text diff out (a fresh node's would carry every file it
    // creates) but keeps what `fleet diff` compares.
    let created = |doc: &serde_json::Value| {
        doc["modules"][0]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["path"] == "/etc/disco-push")
            .cloned()
            .unwrap_or_else(|| panic!("/etc/disco-push not in {doc}"))
    };
    let path = created(&doc);
    // size: the left-out diff's length, of "0a1\n> x\n".
    assert_eq!(
        path["content"],
        serde_json::json!({"kind": "omitted", "size": 8})
    );
    assert_eq!(path["after"]["md5"], "401b30e3b8b5d629635a5c613cdb7919");
    let status = disco(
        tmp.path(),
        &["fleet", "status", "--reports", reports.to_str().unwrap()],
    );
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
    assert!(text(&status.stdout).starts_with("n1: "));
    // The client parameter keeps the diffs in what it pushes.
    let set = disco(
        &state,
        &["param", "set", "disco/client/reports_diffs", "yes"],
    );
    assert!(set.status.success(), "{}", text(&set.stderr));
    std::fs::remove_dir_all(reports.join("n1")).unwrap();
    let again = dance(&reports);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let pushed = std::fs::read_dir(reports.join("n1"))
        .unwrap()
        .flatten()
        .next()
        .unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pushed.path()).unwrap()).unwrap();
    util::assert_report_schema(&doc);
    let path = created(&doc);
    assert_eq!(path["content"]["kind"], "text", "{path}");
    assert!(
        path["content"]["diff"].as_str().unwrap().contains("> x"),
        "{path}"
    );
    // A push that fails is a warning in rsync's own words, naming the target, on one line;
    // the dance itself is done and says so.
    let blocked = tmp.path().join("server/blocked");
    std::fs::write(&blocked, "a file where the reports' folder should be").unwrap();
    let out = dance(&blocked);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let warning = stderr
        .lines()
        .find(|l| l.contains("cannot push the report: "))
        .unwrap_or_else(|| panic!("no warning in {stderr}"));
    assert!(
        warning.contains(&format!("{}/n1/", blocked.display()))
            && warning.contains("Not a directory")
            && !stderr.contains("rsync error:"),
        "{warning}"
    );
}

/// A real rsync daemon with config `conf` on loopback, and a client that connects and says
/// nothing for up to `wait`: what the daemon sent, and after how long it closed (None: still
/// open at the end).
fn silent_client(
    dir: &Path,
    conf: &str,
    wait: std::time::Duration,
) -> (String, Option<std::time::Duration>) {
    use std::io::Read;
    use std::time::Instant;
    let daemon = servers::RsyncDaemon::with_config(dir, conf, "/dev/null".into());
    let mut client = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    let connected = Instant::now();
    client.set_read_timeout(Some(wait)).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    let closed = loop {
        match client.read(&mut buf) {
            Ok(0) => break Some(connected.elapsed()),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => break None,
        }
    };
    // The client goes first, so that the daemon's process for it ends before the daemon.
    drop(client);
    drop(daemon);
    (String::from_utf8_lossy(&seen).into_owned(), closed)
}

/// The shipped `contrib/fleet/rsyncd.conf` drops a connection that says nothing, before it
/// authenticates: a real daemon with that config (its timeout shortened to 2 s, its address
/// and port this test's) greets a silent client and closes its connection after the timeout;
/// without the line, the connection is still open twice as long after.
#[test]
fn the_fleet_daemon_drops_a_silent_client() {
    use std::time::Duration;
    let tmp = TempDir::new("fleet-silent");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/fleet/rsyncd.conf"),
    )
    .unwrap();
    let line = shipped
        .lines()
        .find(|l| l.starts_with("timeout = "))
        .expect("contrib/fleet/rsyncd.conf sets no timeout");
    let seconds: u64 = line["timeout = ".len()..].trim().parse().unwrap();
    assert!((60..=3600).contains(&seconds), "{line}");
    let greeting_only = |seen: &str| seen.starts_with("@RSYNCD: ") && seen.lines().count() == 1;
    // Generous: this proves that it ends, and by the timeout, not how fast.
    let (seen, closed) = silent_client(
        tmp.path(),
        &shipped.replace(line, "timeout = 2"),
        Duration::from_secs(30),
    );
    assert!(greeting_only(&seen), "{seen}");
    let closed = closed.expect("a silent client still held its connection after 30 s");
    assert!(
        closed >= Duration::from_millis(1500),
        "closed after {closed:?}"
    );
    let (seen, closed) = silent_client(
        tmp.path(),
        &shipped.replace(line, ""),
        Duration::from_secs(4),
    );
    assert!(greeting_only(&seen), "{seen}");
    assert_eq!(closed, None, "without the timeout the daemon closed anyway");
}

/// `bench/fleet.sh 20 --check` with a smaller site: 20 nodes, each in network, UTS and mount
/// namespaces of its own, with a veth to the server's bridge, a third of them each way in: a
/// real rsync daemon over TCP and behind TLS (haproxy, rsync-ssl), both through the shipped
/// `contrib/fleet/rsyncd.conf` and `haproxy.cfg` with a password of each node's own, and sshd
/// (a key and a certificate of each node's own); every node's report reaches the server; no
/// node reads another's parameters, authenticates as another, runs another command than its
/// certificate's, or writes another's reports; a TLS node refuses a server whose certificate
/// its fleet's CA did not sign; fleet status and fleet diff are right on two nodes with another
/// parameter; a candidate previews through clush and through the client parameter; and
/// nothing the script made is left behind.
#[test]
fn a_fleet_of_twenty_nodes_in_namespaces() {
    if !have_root("fleet simulation") {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/fleet.sh");
    let out = Command::new("timeout")
        .args(["-k", "30", "1500", "bash"])
        .arg(&script)
        .args(["20", "--check"])
        .env("DISCO", env!("CARGO_BIN_EXE_disco"))
        .env("MODULES", "5")
        .env("FILES", "4")
        .env("WINDOW", "10")
        .env("PAD", "1000")
        .env("TRANSPORT", "mixed")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    let all = format!("{stdout}{}", text(&out.stderr));
    eprintln!("{all}");
    assert!(out.status.success(), "{all}");
    for line in [
        "reports: 40 on the server from 20 nodes",
        "check: a scheduled dance with disco/client/candidate is a noop against the candidate",
        "check: n002.fleet reads its own parameters",
        "check: n002.fleet cannot read n004.fleet's parameters",
        "check: n002.fleet cannot authenticate as n004.fleet",
        "check: n002.fleet cannot write n004.fleet's reports",
        "check: n002.fleet cannot read its reports back",
        "check: n003.fleet reads its own parameters",
        "check: n003.fleet cannot read n005.fleet's parameters",
        "check: n003.fleet runs only its certificate's command",
        "check: n003.fleet cannot write n005.fleet's reports",
        "check: n004.fleet refuses a server its fleet's CA did not sign",
        "check: n004.fleet refuses a certificate for another name",
        "check: n004.fleet reads its own parameters",
        "check: n004.fleet cannot read n006.fleet's parameters",
        "check: n004.fleet cannot authenticate as n006.fleet",
        "check: n004.fleet cannot write n006.fleet's reports",
        "check: fleet diff names the two odd nodes",
        "check: fleet status lists every node, all fresh and ok",
    ] {
        assert!(stdout.lines().any(|l| l == line), "no {line:?} in\n{all}");
    }
    assert!(!stdout.contains("check failed"), "{all}");
    // Each way's daemons served their third of the fleet (their own cgroup's CPU).
    let spread = stdout
        .lines()
        .find(|l| l.starts_with("round spread: 20 dances, 0 errors"))
        .unwrap_or_else(|| panic!("{all}"));
    for way in ["rsyncd ", "tls ", "sshd "] {
        let ms: f64 = spread
            .split(way)
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {way}figure in {spread}"));
        assert!(ms > 0.0, "{spread}");
    }
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("fleet: 20 nodes, 0 errors, server ")
            && last.contains(" ms CPU per node-dance, node p50 ")
            && last.ends_with(" nodes at 30 min"),
        "{all}"
    );
    // Every namespace (and with them the veths and the bridge) and the cgroup are gone.
    let tag = stdout
        .lines()
        .find_map(|l| l.strip_prefix("namespaces: "))
        .and_then(|l| l.split_once("-*, cgroup: "))
        .unwrap_or_else(|| panic!("{all}"));
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !text(&netns.stdout).contains(&format!("{}-", tag.0)),
        "{}",
        text(&netns.stdout)
    );
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        assert!(!Path::new(root).join(tag.1).exists(), "{root}/{}", tag.1);
    }
}
