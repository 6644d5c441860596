//! `disco dance --noop` end to end, from local sources: the seed's complete example against
//! the real `/` (which must stay unchanged), ordering, failures, parameters and templates.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod servers;
mod util;
use servers::{RsyncDaemon, Sshd};
use util::{have_root, site, text, TempDir};

fn example_site() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/example-site")
}

fn dance(state: &Path, source: &Path, node: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_disco"))
        .arg("--state-dir")
        .arg(state)
        .args(["dance", "--noop", "--node", node, "--source"])
        .arg(source)
        .args(extra)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run disco dance")
}

fn md5_hex(data: &[u8]) -> String {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), data).unwrap();
    let out = child.wait_with_output().unwrap();
    text(&out.stdout).split(' ').next().unwrap().to_owned()
}

#[test]
fn the_seeds_complete_example_in_noop_against_the_real_root() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    assert!(!Path::new("/etc/othermodule").exists());
    let out = dance(state.path(), &example_site(), "localhost.localdomain", &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let rendered = "HOST=localhost.localdomain\nKEY_VALUE=LOLTHISKEYMEANSNOTHING\n";
    let created =
        "info: File: file: /etc/othermodule/stuff.cfg : Created : type=[regular file] device=[";
    let wanted = [
        "info: Processing testmodule-1.0",
        "Hello, disco",
        "warning: Would execute : service postgresql stop",
        "info: Processing othermodule-3.2",
        created,
        "> HOST=localhost.localdomain",
        "> KEY_VALUE=LOLTHISKEYMEANSNOTHING",
    ];
    let mut at = 0;
    for want in wanted {
        let found = stdout[at..]
            .find(want)
            .unwrap_or_else(|| panic!("{want:?} missing or out of order in:\n{stdout}"));
        at += found + want.len();
    }
    assert!(
        stdout.contains(&format!(
            "md5=[{}] perms=[root:root 644]\n0a1,2\n",
            md5_hex(rendered.as_bytes())
        )),
        "{stdout}"
    );
    // The seed's md5, for the seed's content.
    assert_eq!(
        md5_hex(rendered.as_bytes()),
        "77b20e4840b1be13a577e152edc6b443"
    );
    assert!(
        !Path::new("/etc/othermodule").exists(),
        "noop reached the live system"
    );

    // Every step was measured, and the report says so.
    let report = Command::new(env!("CARGO_BIN_EXE_disco"))
        .arg("--state-dir")
        .arg(state.path())
        .arg("report")
        .output()
        .unwrap();
    let report = text(&report.stdout);
    for want in [
        "report: _internal: fetch_params",
        "report: othermodule-3.2: template\nreport:    etc/othermodule/stuff.cfg :",
        "report: testmodule-1.0: exec\nreport:    00-hello.sh :",
        "report:    10-service_stop.sh :",
        "report:        return_code: 0 (MODEXEC_OK)",
        "report: testmodule-1.0: diff",
        "report: result: ok",
    ] {
        assert!(report.contains(want), "{want:?} missing from:\n{report}");
    }
}

#[test]
fn dance_scripts_run_in_cgroups_and_a_limit_header_contains_them() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-cgroup");
    // A script that forks up to 100 sleepers (bounded) under its header's limit of 16.
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            (
                "modules/m/scripts/00-forks.sh",
                "#!/usr/bin/perl\n# survivor-pids-max: 16\nopen STDIN, '<', '/dev/null';\n\
                 open STDOUT, '>', '/dev/null';\nopen STDERR, '>', '/dev/null';\n\
                 for (1 .. 100) { my $p = fork // last; if (!$p) { sleep 5; exit } }\n",
            ),
            ("modules/m/scripts/10-ok.sh", "#!/bin/bash\necho fine\n"),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("warning: no writable cgroup"),
        "{}",
        text(&out.stderr)
    );
    let report = Command::new(env!("CARGO_BIN_EXE_disco"))
        .arg("--state-dir")
        .arg(state.path())
        .args(["report", "--format", "json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let steps = json["steps"].as_array().expect("steps");
    let exec: Vec<&serde_json::Value> = steps.iter().filter(|s| s["step"] == "exec").collect();
    assert!(!exec.is_empty(), "{json}");
    let forks = exec
        .iter()
        .find(|s| s["item"] == "00-forks.sh")
        .expect("00-forks.sh");
    assert!(forks["cgroup"].is_object(), "{forks}");
    assert_eq!(forks["ok"], false, "{forks}");
    let violations: Vec<&str> = forks["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(violations.len(), 1, "{forks}");
    assert!(violations[0].starts_with("pids_limit:"), "{forks}");
    assert!(
        forks["cgroup"]["pids_peak"].as_u64().unwrap() <= 16,
        "{forks}"
    );
}

#[test]
fn a_cycle_stops_the_dance_before_anything_runs_and_prints_it() {
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-cycle");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/a", ""),
            ("modules/a/requires", "b\n"),
            ("modules/a/scripts/00-a", "#!/bin/sh\necho ran-a\n"),
            ("modules/b/requires", "after a\n"),
            ("modules/b/scripts/00-b", "#!/bin/sh\necho ran-b\n"),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: module dependency cycle: a -> b -> a\n"
    );
    assert!(!text(&out.stdout).contains("ran-"));
}

#[test]
fn a_missing_module_names_who_required_it() {
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-missing");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/a", ""),
            ("modules/a/requires", "# needs ghost\nghost\n"),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: module 'ghost' required by 'a' not found\n"
    );
}

#[test]
fn a_failing_script_fails_its_module_and_skips_its_dependents_only() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-fail");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/bad", ""),
            ("parameters/n1/modules/needs-bad", ""),
            ("parameters/n1/modules/fine", ""),
            (
                "modules/bad/scripts/00-fail",
                "#!/bin/sh\necho about to fail\nexit 3\n",
            ),
            (
                "modules/bad/scripts/10-never",
                "#!/bin/sh\necho never-runs\n",
            ),
            ("modules/needs-bad/requires", "bad\n"),
            (
                "modules/needs-bad/scripts/00-x",
                "#!/bin/sh\necho dependent-ran\n",
            ),
            ("modules/fine/scripts/00-ok", "#!/bin/sh\necho fine-ran\n"),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("about to fail"));
    assert!(
        stdout.contains("error: bad: exec 00-fail failed: ReturnCode 3"),
        "{stdout}"
    );
    assert!(!stdout.contains("never-runs"));
    assert!(stdout.contains("warning: needs-bad: skipped: requires bad, which did not succeed"));
    assert!(!stdout.contains("dependent-ran"));
    assert!(stdout.contains("fine-ran"), "independent modules still run");
    assert!(text(&out.stderr).contains("1 ok, 1 failed, 1 skipped"));
}

#[test]
fn a_failing_template_fails_its_module() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-template");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/t", ""),
            (
                "modules/t/templates/etc/disco-never.conf",
                "echo partial\nexit 1\n",
            ),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("error: t: template etc/disco-never.conf failed"),
        "{stdout}"
    );
    assert!(!stdout.contains("disco-never.conf : Created"));
}

#[test]
fn parameters_merge_in_order_and_templates_read_them_with_disco_param() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-params");
    let conf = format!("/etc/disco-test-{}.conf", std::process::id());
    let template = format!("modules/web/templates{conf}");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/web", ""),
            // The node's parameters win over the module's defaults.
            ("parameters/web/port", "8080\n"),
            ("modules/web/parameters/web/port", "80\n"),
            ("modules/web/parameters/web/name", "default-name\n"),
            (
                template.as_str(),
                "echo port=$(disco-param get web/port)\necho name=$(disco-param get web/name)\necho module=$(disco-param get n1/current_module)\n",
            ),
            ("modules/web/scripts/00-opts", "#!/bin/sh\ncat\n"),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("0a1,3\n> port=8080\n> name=default-name\n> module=web\n"),
        "{stdout}"
    );
    // The script got the module's parameters as ModuleOptions on stdin.
    assert!(
        stdout.contains("<ModuleOption OptionName=\"port\">\n  <OptionValue>8080</OptionValue>"),
        "{stdout}"
    );
    assert!(!Path::new(&conf).exists());
}

/// The example site's rsync modules, as the seed's rsyncd.conf lists them.
fn example_modules() -> Vec<(&'static str, PathBuf)> {
    let site = example_site();
    vec![
        ("parameters", site.join("parameters")),
        ("testmodule-1.0", site.join("modules/testmodule-1.0")),
        ("othermodule-3.2", site.join("modules/othermodule-3.2")),
    ]
}

fn assert_example_output(out: &Output) {
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let mut at = 0;
    for want in [
        "info: Processing testmodule-1.0",
        "Hello, disco",
        "warning: Would execute : service postgresql stop",
        "info: Processing othermodule-3.2",
        "info: File: file: /etc/othermodule/stuff.cfg : Created",
        "md5=[77b20e4840b1be13a577e152edc6b443]",
        "> KEY_VALUE=LOLTHISKEYMEANSNOTHING",
    ] {
        at += stdout[at..]
            .find(want)
            .unwrap_or_else(|| panic!("{want:?} missing or out of order in:\n{stdout}"))
            + want.len();
    }
    assert!(!Path::new("/etc/othermodule").exists());
}

/// Writes the client's own parameters (`STATE/parameters`), as `disco param set` would.
fn client_params(state: &Path, values: &[(&str, &str)]) {
    for (key, value) in values {
        let p = state.join("parameters").join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{value}\n")).unwrap();
    }
}

#[test]
fn the_example_served_by_a_real_rsync_daemon() {
    if !servers::can_run("the_example_served_by_a_real_rsync_daemon", &["rsync"]) {
        return;
    }
    let tmp = TempDir::new("dance-rsyncd");
    let modules = example_modules();
    let refs: Vec<(&str, &Path)> = modules.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let daemon = RsyncDaemon::start(tmp.path(), &refs);
    let state = tmp.path().join("state");
    // No --source: the URI comes from the client's disco/server/uri, as in the seed.
    client_params(&state, &[("disco/server/uri", &daemon.uri())]);
    let out = Command::new(env!("CARGO_BIN_EXE_disco"))
        .arg("--state-dir")
        .arg(&state)
        .args(["dance", "--noop", "--node", "localhost.localdomain"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_example_output(&out);
    assert!(state
        .join("cache/modules/testmodule-1.0/scripts/00-hello.sh")
        .is_file());
}

#[test]
fn the_example_served_over_ssh_by_a_real_sshd() {
    if !servers::can_run(
        "the_example_served_over_ssh_by_a_real_sshd",
        &["rsync", "ssh", "ssh-keygen", "/usr/sbin/sshd"],
    ) {
        return;
    }
    let tmp = TempDir::new("dance-ssh");
    let modules = example_modules();
    let refs: Vec<(&str, &Path)> = modules.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let conf = tmp.path().join("rsyncd.conf");
    std::fs::write(
        &conf,
        servers::rsyncd_conf(&tmp.path().join("rsyncd.log"), &refs),
    )
    .unwrap();
    let sshd = Sshd::start(tmp.path());
    let state = tmp.path().join("state");
    let rsync = shell_words::join([
        "rsync",
        "-a",
        "--rsh",
        &sshd.rsh(),
        "--rsync-path",
        &format!("rsync --config={}", conf.display()),
    ]);
    client_params(&state, &[("disco/client/cmds/rsync", &rsync)]);
    let out = dance(
        &state,
        Path::new("root@127.0.0.1::"),
        "localhost.localdomain",
        &[],
    );
    assert_example_output(&out);
}

#[test]
fn exit_code_says_drift_when_a_noop_dance_would_change_something() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let out = dance(
        state.path(),
        &example_site(),
        "localhost.localdomain",
        &["--exit-code"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(!Path::new("/etc/othermodule").exists());
}

#[test]
fn a_second_dance_waits_or_with_no_wait_says_who_holds_the_lock() {
    let state = TempDir::new("dance-state");
    // Another dance holds the dance lock.
    let lock_path = state.path().join("dance.lock");
    let held = std::fs::File::create(&lock_path).unwrap();
    held.lock().unwrap();
    let out = dance(
        state.path(),
        &example_site(),
        "localhost.localdomain",
        &["--no-wait"],
    );
    // EX_TEMPFAIL: a timer's dance that found another one running, not a failed dance.
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: another dance is running (it holds {})\n",
            lock_path.display()
        )
    );
    drop(held);
}

#[test]
fn the_dance_outcome_goes_to_a_node_exporter_textfile() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let dir = TempDir::new("textfile");
    let out = dance(
        state.path(),
        &example_site(),
        "localhost.localdomain",
        &["--textfile", dir.path().to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let prom = std::fs::read_to_string(dir.path().join("disco_dance.prom")).unwrap();
    let labels = "node=\"localhost.localdomain\",noop=\"true\"";
    for want in [
        format!("disco_dance_last_success{{{labels}}} 1\n"),
        format!("disco_dance_last_modules{{{labels},status=\"ok\"}} 2\n"),
        format!("disco_dance_last_changes{{{labels},kind=\"created\"}} 2\n"),
        "# TYPE disco_dance_last_duration_seconds gauge\n".to_owned(),
    ] {
        assert!(prom.contains(&want), "{want:?} missing from:\n{prom}");
    }
}

#[test]
fn scripts_cannot_reach_the_results_of_their_module() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-sealed");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            (
                "modules/m/scripts/00-forge",
                "#!/bin/bash\nfor fd in 3 4 5 6 7 8 9; do echo 'not json' >&$fd; done 2>/dev/null\n\
                 test ! -e /dev/.disco/results && test -z \"$DISCO_RESULTS_FD\" && echo sealed\n",
            ),
            ("modules/m/scripts/10-after", "#!/bin/sh\necho after\n"),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &[]);
    let stdout = text(&out.stdout);
    // A forged line on an inherited descriptor would make the dance fail to read its results.
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("sealed\n"), "{stdout}");
    assert!(stdout.contains("after\n"), "{stdout}");
}

#[test]
fn each_module_sees_what_the_ones_before_it_changed_and_diffs_only_its_own() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-chain");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m1", ""),
            ("parameters/n1/modules/m2", ""),
            ("parameters/n1/modules/m3", ""),
            ("modules/m2/requires", "m1\n"),
            ("modules/m3/requires", "m2\n"),
            (
                "modules/m1/scripts/00-make",
                "#!/bin/bash\nset -e\nmkdir -p /etc/disco-chain/d/sub\necho one > /etc/disco-chain/a\n\
                 echo bee > /etc/disco-chain/b\necho x > /etc/disco-chain/d/sub/x\n",
            ),
            (
                "modules/m2/scripts/00-change",
                "#!/bin/bash\nset -e\necho two >> /etc/disco-chain/a\nrm /etc/disco-chain/b\n\
                 rm -r /etc/disco-chain/d\necho now-a-file > /etc/disco-chain/d\n",
            ),
            (
                "modules/m3/scripts/00-check",
                "#!/bin/bash\nset -e\ntest \"$(cat /etc/disco-chain/a)\" = \"$(printf 'one\\ntwo')\"\n\
                 test ! -e /etc/disco-chain/b\ntest -f /etc/disco-chain/d\n\
                 test \"$(cat /etc/disco-chain/d)\" = now-a-file\necho chain ok\n\
                 echo three > /etc/disco-chain/c\n",
            ),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("chain ok\n"), "{stdout}");
    // Each module's diff is its own: m2 modifies a and deletes b (m1's), m3 only creates c.
    let section = |name: &str| -> String {
        let start = stdout.find(&format!("Processing {name}")).unwrap();
        let rest = &stdout[start..];
        let end = rest[1..]
            .find("info: Processing")
            .map_or(rest.len(), |e| e + 1);
        rest[..end].to_owned()
    };
    let (m2, m3) = (section("m2"), section("m3"));
    assert!(m2.contains("/etc/disco-chain/a : Modified"), "{m2}");
    assert!(m2.contains("/etc/disco-chain/b : Deleted"), "{m2}");
    assert!(!m2.contains("/etc/disco-chain/c"), "{m2}");
    assert!(m3.contains("/etc/disco-chain/c : Created"), "{m3}");
    assert!(!m3.contains("/etc/disco-chain/a "), "{m3}");
    assert!(!m3.contains("/etc/disco-chain/b "), "{m3}");
    assert!(!Path::new("/etc/disco-chain").exists());
}

#[test]
fn a_noop_script_cannot_reach_the_host_through_other_processes() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-escape");
    let marker = TempDir::new("escape-marker");
    let target = marker.path().join("escaped");
    let script = format!(
        "#!/bin/bash\nfor p in /proc/[0-9]*; do\n  echo x > \"$p/root{}\" 2>/dev/null\n  \
         echo x > \"$p/cwd/escaped-$$\" 2>/dev/null\ndone\necho tried\n",
        target.display()
    );
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/scripts/00-escape", &script),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &[]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("tried\n"),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(!target.exists(), "a noop script wrote {}", target.display());
    // The dance's working folder is the host's too.
    let cwd = std::env::current_dir().unwrap();
    let leaked: Vec<_> = std::fs::read_dir(&cwd)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("escaped-"))
        .collect();
    assert!(
        leaked.is_empty(),
        "a noop script wrote into {}",
        cwd.display()
    );
}

#[test]
fn a_hanging_script_or_daemon_does_not_hold_up_the_dance_or_outlive_its_module() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-hang");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/daemon", ""),
            ("parameters/n1/modules/hang", ""),
            ("parameters/n1/modules/next", ""),
            // A daemon that escapes its process group; a script that never ends.
            (
                "modules/daemon/scripts/00-daemon",
                "#!/bin/bash\nsetsid sleep 300 </dev/null >/dev/null 2>&1 &\necho started\n",
            ),
            ("modules/hang/scripts/10-hang", "#!/bin/bash\nsleep 300\n"),
            // The next module must find nothing of it left running.
            (
                "modules/next/scripts/00-look",
                "#!/bin/bash\nif pgrep -x sleep >/dev/null; then echo leftover; else echo clean; fi\n",
            ),
        ],
    );
    let started = std::time::Instant::now();
    let out = dance(state.path(), src.path(), "n1", &["--timeout", "1"]);
    let stdout = text(&out.stdout);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{stdout}"
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("error: hang:"), "{stdout}");
    assert!(
        stdout.contains("clean\n"),
        "{stdout}\n{}",
        text(&out.stderr)
    );
}

#[test]
fn delivered_files_keep_their_mode_setuid_included_and_replace_what_was_there() {
    if !have_root("dance") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-modes");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/files/etc/disco-modes/tool", "#!/bin/sh\n"),
            ("modules/m/files/etc/hostname", "replaced\n"),
            (
                "modules/m/scripts/00-look",
                "#!/bin/bash\necho mode=$(stat -c %a /etc/disco-modes/tool)\n\
                 echo hostname=$(cat /etc/hostname)\n",
            ),
        ],
    );
    let tool = src.path().join("modules/m/files/etc/disco-modes/tool");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let before = std::fs::read("/etc/hostname").ok();
    let out = dance(state.path(), src.path(), "n1", &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("mode=4755\n"), "{stdout}");
    assert!(stdout.contains("hostname=replaced\n"), "{stdout}");
    assert_eq!(
        std::fs::read("/etc/hostname").ok(),
        before,
        "noop changed the host"
    );
}

#[test]
fn a_folder_deleted_then_made_again_stays_empty_for_the_modules_after() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-refold");
    let area = TempDir::new("refold-area");
    std::fs::create_dir_all(area.path().join("sub")).unwrap();
    std::fs::write(area.path().join("sub/old"), "old\n").unwrap();
    let a = area.path().display();
    site(
        src.path(),
        &[
            ("parameters/n1/modules/a", ""),
            ("parameters/n1/modules/b", ""),
            ("parameters/n1/modules/c", ""),
            ("parameters/n1/modules/d", ""),
            ("modules/b/requires", "a\n"),
            ("modules/c/requires", "b\n"),
            ("modules/d/requires", "c\n"),
            (
                "modules/a/scripts/00",
                &format!("#!/bin/sh\nrm -rf {a}/sub\n"),
            ),
            (
                "modules/b/scripts/00",
                &format!("#!/bin/sh\nmkdir {a}/sub\n"),
            ),
            (
                "modules/c/scripts/00",
                &format!("#!/bin/sh\necho c sees: $(ls {a}/sub)\n"),
            ),
            (
                "modules/d/scripts/00",
                &format!("#!/bin/sh\necho d sees: $(ls {a}/sub)\n"),
            ),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    // c stacks on b's own layer; d on the layer b was folded into.
    assert!(stdout.contains("c sees:\n"), "{stdout}");
    assert!(stdout.contains("d sees:\n"), "{stdout}");
    assert!(
        area.path().join("sub/old").exists(),
        "noop changed the host"
    );
}

#[test]
fn noop_scripts_cannot_open_devices_file_handles_or_the_terminal() {
    if !have_root("dance") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-devices");
    // Through the module's own folder (bound in read-only), a device node must not open; a file
    // handle must not reach past the binds; the dance's terminal must not be reachable.
    let look = "#!/bin/bash\n\
        if echo x 2>/dev/null > /var/disco/modules/m/null-copy; then echo device opened; else echo device refused; fi\n\
        if : 2>/dev/null < /dev/tty; then echo tty opened; else echo tty refused; fi\n\
        python3 /var/disco/modules/m/handle.py\n";
    let handle = "import ctypes, os\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        buf = ctypes.create_string_buffer(8 + 128)\n\
        ctypes.c_uint.from_buffer(buf).value = 128\n\
        mid = ctypes.c_int()\n\
        path = b'/var/disco/modules/m'\n\
        assert libc.name_to_handle_at(-100, path, buf, ctypes.byref(mid), 0) == 0, ctypes.get_errno()\n\
        fd = os.open(path, os.O_RDONLY)\n\
        r = libc.open_by_handle_at(fd, buf, os.O_RDONLY)\n\
        print('handle opened' if r >= 0 else 'handle refused')\n";
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/scripts/00-look", look),
            ("modules/m/handle.py", handle),
        ],
    );
    let node = src.path().join("modules/m/null-copy");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o666)).unwrap();
    // Under a terminal of its own (script(1)), as a user would run it.
    let cmd = format!(
        "{} --state-dir {} dance --noop --node n1 --source {}",
        env!("CARGO_BIN_EXE_disco"),
        state.path().display(),
        src.path().display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run script(1)");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("device refused"), "{stdout}");
    assert!(stdout.contains("tty refused"), "{stdout}");
    assert!(stdout.contains("handle refused"), "{stdout}");
}

#[test]
fn a_fifo_among_the_files_fails_its_module_at_once() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-fifo");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/files/etc/disco-fifo/plain", "x\n"),
        ],
    );
    nix::unistd::mkfifo(
        &src.path().join("modules/m/files/etc/disco-fifo/pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = dance(state.path(), src.path(), "n1", &["--timeout", "300"]);
    let stdout = text(&out.stdout);
    // Well before the module's timeout: the FIFO was refused, not waited on.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "{stdout}"
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("not a file, folder or symbolic link"),
        "{stdout}"
    );
}

#[test]
fn noop_scripts_cannot_touch_the_kernels_keyrings() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-keys");
    // add_key("user", "disco-noop-test", "x", 1, KEY_SPEC_USER_KEYRING); invalidated at once
    // should it ever get through.
    let script = format!(
        "import ctypes\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         libc.syscall.restype = ctypes.c_long\n\
         r = libc.syscall({add_key}, b'user', b'disco-noop-test', b'x', 1, -4)\n\
         if r >= 0:\n    libc.syscall({keyctl}, 21, r)\n\
         print('key added' if r >= 0 else 'key refused %d' % ctypes.get_errno())\n",
        add_key = nix::libc::SYS_add_key,
        keyctl = nix::libc::SYS_keyctl,
    );
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/keys.py", &script),
            (
                "modules/m/scripts/00-keys",
                "#!/bin/sh\npython3 /var/disco/modules/m/keys.py\n",
            ),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &[]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("key refused 1\n"),
        "{stdout}\n{}",
        text(&out.stderr)
    );
}

#[test]
fn a_template_whose_output_is_over_the_bound_fails_naming_the_bound() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("dance-bigtemplate");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/big", ""),
            (
                "modules/big/templates/etc/disco-big.conf",
                "head -c 5000000 /dev/zero | tr '\\0' a\n",
            ),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("output_truncated: stdout had 5000000 bytes, over the bound of 4194304"),
        "{stdout}"
    );
}

/// A TCP listener on 127.0.0.1 and an abstract unix socket of the live system, started by the
/// test: a noop script's attempts to reach them fail, and neither receives anything.
#[test]
fn noop_scripts_reach_no_loopback_service_nor_abstract_socket() {
    if !have_root("dance") {
        return;
    }
    use std::os::linux::net::SocketAddrExt;
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-net");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let port = tcp.local_addr().unwrap().port();
    let name = format!("disco-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let unix = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    unix.set_nonblocking(true).unwrap();
    let script = format!(
        "#!/bin/bash\n\
         if echo data 2>/dev/null > /dev/tcp/127.0.0.1/{port}; then echo tcp reached; else echo tcp refused; fi\n\
         perl -MSocket -e 'socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die; \
           if (connect($s, pack_sockaddr_un(\"\\0{name}\"))) {{ print $s \"data\"; print \"unix reached\\n\" }} \
           else {{ print \"unix refused\\n\" }}'\n\
         ip -o link show | cut -d: -f2 | tr -d ' ' | sed 's/^/link=/'\n"
    );
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/scripts/00-net", &script),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &[]);
    let stdout = text(&out.stdout);
    let all = format!("{stdout}\n{}", text(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(stdout.contains("tcp refused"), "{all}");
    assert!(stdout.contains("unix refused"), "{all}");
    // Each attempt is reported, with its address.
    assert!(
        stdout.contains(&format!("warning: Would connect : tcp 127.0.0.1:{port}\n")),
        "{all}"
    );
    assert!(
        stdout.contains(&format!("warning: Would connect : unix @{name}\n")),
        "{all}"
    );
    let report = util::disco(state.path(), &["report"]);
    assert!(
        text(&report.stdout).contains(&format!("would connect: tcp 127.0.0.1:{port}")),
        "{}",
        text(&report.stdout)
    );
    let json = util::disco(state.path(), &["report", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        json.to_string()
            .contains(&format!("\"would_connect\":[\"tcp 127.0.0.1:{port}\"")),
        "{json}"
    );
    // Only the loopback of a namespace of its own.
    assert!(stdout.contains("link=lo"), "{all}");
    assert_eq!(stdout.matches("link=").count(), 1, "{all}");
    assert!(
        tcp.accept()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the TCP listener got a connection"
    );
    assert!(
        unix.accept()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the abstract socket got a connection"
    );
}

/// Runs `cmd` with `file` open (read-only) as its descriptor 7, as a careless caller would.
pub fn with_fd7(cmd: &mut Command, file: &Path) -> Output {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let f = std::fs::File::open(file).unwrap();
    let raw = f.as_raw_fd();
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
    out
}

/// A live file passed to `disco dance --noop` as descriptor 7: the script sees no descriptor 7,
/// and the file is unchanged (through `/proc/self/fd/7` even a read-only one opens for writing).
#[test]
fn a_descriptor_the_caller_left_open_does_not_reach_noop_scripts() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-fd");
    let live = TempDir::new("live-fd");
    let file = live.path().join("live.txt");
    std::fs::write(&file, "live\n").unwrap();
    let script = "#!/bin/bash\n\
        if [ -e /proc/self/fd/7 ]; then echo fd7 seen; else echo no fd7; fi\n\
        echo written 2>/dev/null > /proc/self/fd/7\n\
        ls /proc/self/fd | tr '\\n' ' ' | sed 's/^/fds: /'; echo\n";
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/scripts/00-fd", script),
        ],
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_disco"));
    cmd.arg("--state-dir")
        .arg(state.path())
        .args(["dance", "--noop", "--node", "n1", "--source"])
        .arg(src.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    let out = with_fd7(&mut cmd, &file);
    let all = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(all.contains("no fd7"), "{all}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "live\n", "{all}");
}

/// A unix socket on a read-only filesystem, with a listener behind it: a noop script cannot
/// connect to it, and the listener accepts nothing. (The filesystem is mounted in a private
/// mount namespace the test makes, so nothing of it reaches the host's.)
#[test]
fn a_socket_on_a_read_only_filesystem_is_unreachable_from_noop() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-rosock");
    let ro = TempDir::new("ro-fs");
    let sock = ro.path().join("sock");
    let script = format!(
        "#!/bin/bash\n\
         perl -MSocket -e 'socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die; \
           if (connect($s, pack_sockaddr_un(\"{sock}\"))) {{ print \"ro socket reached\\n\" }} \
           else {{ print \"ro socket refused: $!\\n\" }}'\n",
        sock = sock.display()
    );
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/scripts/00-rosock", &script),
        ],
    );
    let outer = format!(
        "mount -t tmpfs -o size=1m disco-ro {ro}
         perl -MSocket -e '$| = 1; socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die; \
           bind($s, pack_sockaddr_un(\"{sock}\")) or die \"bind: $!\"; listen($s, 5) or die; \
           print \"listening\\n\"; accept(my $c, $s) and print \"listener accepted\\n\"' &
         listener=$!
         while [ ! -S {sock} ]; do sleep 0.05; done
         mount -o remount,ro {ro}
         $DISCO --state-dir {state} dance --noop --node n1 --source {src} || echo dance failed
         kill $listener; wait $listener || true",
        ro = ro.path().display(),
        sock = sock.display(),
        state = state.path().display(),
        src = src.path().display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec", &outer])
        .env("NO_COLOR", "1")
        .env("DISCO", env!("CARGO_BIN_EXE_disco"))
        .stdin(Stdio::null())
        .output()
        .expect("unshare");
    let all = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("listening"), "{all}");
    assert!(all.contains("ro socket refused"), "{all}");
    assert!(!all.contains("listener accepted"), "{all}");
    assert!(!all.contains("dance failed"), "{all}");
}

/// Noop keeps no capability that reaches outside its namespaces: a raw socket (which would
/// see traffic), real-time scheduling, memory locked beyond the limit and io_uring are refused.
#[test]
fn noop_scripts_open_no_raw_socket_nor_take_the_cpu_memory_or_io_uring() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-caps");
    let script = format!(
        "#!/bin/bash\n\
         perl -MSocket -e 'print socket(my $s, PF_INET, SOCK_RAW, 255) ? \"raw opened\\n\" : \"raw refused: $!\\n\"'\n\
         perl -MSocket -e 'print socket(my $s, PF_PACKET, SOCK_RAW, 0) ? \"packet opened\\n\" : \"packet refused: $!\\n\"'\n\
         if chrt -f 10 true 2>/dev/null; then echo fifo granted; else echo fifo refused; fi\n\
         ulimit -l 1024\n\
         perl -e 'my $b = \"x\" x (64 << 20); \
           print syscall({mlock}, unpack(\"J\", pack(\"p\", $b)), length $b) == 0 ? \"mlock granted\\n\" : \"mlock refused: $!\\n\"'\n\
         perl -e 'my $p = \"\\0\" x 120; my $fd = syscall({uring}, 8, $p); \
           print $fd >= 0 ? \"io_uring opened\\n\" : \"io_uring refused: $!\\n\"'\n",
        mlock = nix::libc::SYS_mlock,
        uring = nix::libc::SYS_io_uring_setup,
    );
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/scripts/00-caps", &script),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &[]);
    let stdout = text(&out.stdout);
    let all = format!("{stdout}\n{}", text(&out.stderr));
    assert!(out.status.success(), "{all}");
    for refused in [
        "raw refused",
        "packet refused",
        "fifo refused",
        "mlock refused",
        "io_uring refused",
    ] {
        assert!(stdout.contains(refused), "{refused}: {all}");
    }
}

/// A noop script that makes a sparse 1 TB file gets its diff well within its timeout: the
/// differ hashes the data, skipping the holes.
#[test]
fn a_sparse_terabyte_file_diffs_within_the_modules_timeout() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-tera");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            (
                "modules/m/scripts/00-tera",
                "#!/bin/bash\ntruncate -s 1T /var/tmp/disco-tera.img\n\
                 echo middle | dd of=/var/tmp/disco-tera.img bs=1 seek=549755813888 conv=notrunc status=none\n",
            ),
        ],
    );
    // The module's timeout bounds its diff too: a diff that read the terabyte would fail it.
    let out = dance(state.path(), src.path(), "n1", &["--timeout", "10"]);
    let all = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(all.contains("/var/tmp/disco-tera.img : Created"), "{all}");
    assert!(
        all.contains("Contents not compared: 1099511627776 bytes"),
        "{all}"
    );
    assert!(!Path::new("/var/tmp/disco-tera.img").exists());
}

/// A diff that cannot finish within the module's timeout fails its module, naming the file.
#[test]
fn a_diff_that_cannot_finish_in_time_fails_its_module_naming_the_file() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-slowdiff");
    // 80 MB of data under 60 names (hard links): seconds of hashing for the differ, a fraction
    // of a second of work for the script.
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            (
                "modules/m/scripts/00-big",
                "#!/bin/bash\nmkdir /var/tmp/disco-slow\nyes disco | head -c 80M > /var/tmp/disco-slow/data\n\
                 for i in $(seq 1 60); do ln /var/tmp/disco-slow/data /var/tmp/disco-slow/link$i; done\n",
            ),
        ],
    );
    let started = std::time::Instant::now();
    let out = dance(state.path(), src.path(), "n1", &["--timeout", "4"]);
    let took = started.elapsed();
    let all = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("did not finish in time"), "{all}");
    assert!(all.contains("/var/tmp/disco-slow/"), "{all}");
    assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
    assert!(!Path::new("/var/tmp/disco-slow").exists());
}

/// A network namespace the test makes, joined to the host by a veth pair on a /30 of the
/// benchmarking range 198.18.0.0/15 (`.1` on the host's side, `.2` inside; one the host does
/// not use): a server there is outside the host without being anywhere else. Removed
/// on drop (the peer goes with the namespace, and the host's side with its peer).
struct TestNetns {
    name: String,
    host_side: String,
    /// The server's address inside.
    inside: String,
}

impl TestNetns {
    fn new() -> TestNetns {
        let id = std::process::id() % 100_000;
        let routes = Command::new("ip")
            .args(["-o", "addr"])
            .output()
            .expect("ip (apt-get install iproute2)");
        let table = Command::new("ip").arg("route").output().unwrap();
        let used = format!("{}{}", text(&routes.stdout), text(&table.stdout));
        // A /30 no interface or route of the host's uses (another checkout's test may hold
        // one at the same time), starting from one of this process's own.
        let net = (0..250)
            .map(|n| format!("198.18.{}", (id + n) % 250))
            .find(|net| !used.contains(&format!("{net}.")))
            .expect("a free /30 in 198.18.0.0/16");
        let name = format!("disco-out-{id}");
        let (host, peer) = (format!("vdo{id}"), format!("vdp{id}"));
        let ns = TestNetns {
            name: name.clone(),
            host_side: host.clone(),
            inside: format!("{net}.2"),
        };
        let (host_addr, inside_addr) = (format!("{net}.1/30"), format!("{net}.2/30"));
        for args in [
            vec!["netns", "add", &name],
            vec![
                "link", "add", &host, "type", "veth", "peer", "name", &peer, "netns", &name,
            ],
            vec!["addr", "add", &host_addr, "dev", &host],
            vec!["link", "set", &host, "up"],
            vec!["-n", &name, "addr", "add", &inside_addr, "dev", &peer],
            vec!["-n", &name, "link", "set", &peer, "up"],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let out = Command::new("ip").args(&args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
        }
        ns
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // The host's side first: the namespace may outlive its removal a moment (a process
        // still in it), the address on the host must not.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_side])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `--network outbound`: a noop script reaches a server outside the host's loopback (in a
/// namespace of the test's), and still not the host's loopback, directly or through the
/// user-mode stack's gateway.
#[test]
fn network_outbound_reaches_out_but_not_the_hosts_loopback() {
    if !have_root("dance") {
        return;
    }
    assert!(
        Command::new("slirp4netns")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "slirp4netns missing: apt-get install slirp4netns"
    );
    use std::io::BufRead;
    let ns = TestNetns::new();
    let port = 20_000 + std::process::id() % 10_000;
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "perl",
            "-MIO::Socket::INET",
            "-e",
        ])
        .arg(format!(
            "$| = 1; my $s = IO::Socket::INET->new(LocalAddr => '{inside}', LocalPort => {port}, \
             Listen => 5, ReuseAddr => 1) or die $!; print \"listening\\n\"; alarm 60; \
             my $c = $s->accept or die; print 'got: ', scalar <$c>;",
            inside = ns.inside
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut from_server = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    from_server.read_line(&mut line).unwrap();
    assert_eq!(line, "listening\n");
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let hport = host.local_addr().unwrap().port();
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-outbound");
    let script = format!(
        "#!/bin/bash\n\
         if echo hello-outbound 2>/dev/null > /dev/tcp/{inside}/{port}; then echo outbound reached; else echo outbound refused; fi\n\
         if echo x 2>/dev/null > /dev/tcp/127.0.0.1/{hport}; then echo loopback reached; else echo loopback refused; fi\n\
         if echo x 2>/dev/null > /dev/tcp/10.0.2.2/{hport}; then echo gateway reached; else echo gateway refused; fi\n",
        inside = ns.inside
    );
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            ("modules/m/scripts/00-out", &script),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &["--network", "outbound"]);
    let stdout = text(&out.stdout);
    let all = format!("{stdout}\n{}", text(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(stdout.contains("outbound reached"), "{all}");
    assert!(stdout.contains("loopback refused"), "{all}");
    assert!(stdout.contains("gateway refused"), "{all}");
    assert!(
        stdout.contains(&format!("warning: Connects : tcp {}:{port}", ns.inside)),
        "{all}"
    );
    line.clear();
    from_server.read_line(&mut line).unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(line, "got: hello-outbound\n");
    assert!(
        host.accept()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the host's loopback listener got a connection"
    );
}

/// The client parameter `disco/client/network` chooses the network when `--network` is not
/// given; a value disco does not know stops the dance, naming it.
#[test]
fn the_client_parameter_network_is_read_and_checked() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("site-netparam");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/m", ""),
            (
                "modules/m/scripts/00-ip",
                "#!/bin/bash\nip -o link | cut -d: -f2 | tr -d ' ' | sed 's/^/link=/'\n",
            ),
        ],
    );
    client_params(state.path(), &[("disco/client/network", "everywhere")]);
    let out = dance(state.path(), src.path(), "n1", &[]);
    let all = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("disco/client/network: unknown value \"everywhere\""),
        "{all}"
    );
    client_params(state.path(), &[("disco/client/network", "outbound")]);
    let out = dance(state.path(), src.path(), "n1", &[]);
    let all = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(all.contains("link=tap0"), "{all}");
    // The command line wins.
    let out = dance(state.path(), src.path(), "n1", &["--network", "loopback"]);
    let all = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && !all.contains("link=tap0"), "{all}");
}

#[test]
fn the_json_report_names_every_change_and_trapped_command_in_the_schema() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let out = dance(
        state.path(),
        &example_site(),
        "localhost.localdomain",
        &["--format", "json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    util::assert_report_schema(&doc);
    assert_eq!(doc["kind"], "dance");
    let module = |name: &str| {
        doc["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no module {name} in {doc:#}"))
            .clone()
    };
    let other = module("othermodule-3.2");
    let cfg = other["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == "/etc/othermodule/stuff.cfg")
        .expect("the templated file is named");
    assert_eq!(cfg["kind"], "created");
    assert_eq!(cfg["after"]["mode"], "0644");
    assert!(cfg["content"]["diff"]
        .as_str()
        .unwrap()
        .contains("> KEY_VALUE=LOLTHISKEYMEANSNOTHING"));
    assert_eq!(
        module("testmodule-1.0")["would_execute"],
        serde_json::json!(["service postgresql stop"])
    );
    assert_eq!(doc["totals"]["would_execute"], 1);
    // Steps on one time axis, in milliseconds from the dance's start.
    for s in doc["steps"].as_array().unwrap() {
        assert!(
            s["start_ms"].as_u64().unwrap() <= doc["duration_ms"].as_u64().unwrap() + 1,
            "{s}"
        );
    }
    // The same document from the saved report, and the dance's diff from disco diff.
    let saved = util::disco(state.path(), &["report", "--format", "json"]);
    let saved: serde_json::Value = serde_json::from_slice(&saved.stdout).unwrap();
    assert_eq!(saved, doc);
    let diff = util::disco(state.path(), &["diff", "--format", "json"]);
    assert!(diff.status.success(), "{}", text(&diff.stderr));
    let diff: serde_json::Value = serde_json::from_slice(&diff.stdout).unwrap();
    util::assert_report_schema(&diff);
    assert_eq!(diff["kind"], "diff");
    assert_eq!(diff["run"], doc["id"]);
    assert!(diff["paths"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["path"] == "/etc/othermodule/stuff.cfg"));
    let text_diff = util::disco(state.path(), &["diff"]);
    assert!(
        text(&text_diff.stdout).contains("File: file: /etc/othermodule/stuff.cfg : Created"),
        "{}",
        text(&text_diff.stdout)
    );
}

#[test]
fn a_failing_module_is_in_the_json_report_with_its_reason() {
    if !have_root("dance") {
        return;
    }
    let state = TempDir::new("dance-state");
    let src = TempDir::new("dance-json-fail");
    site(
        src.path(),
        &[
            ("parameters/n1/modules/bad", ""),
            ("modules/bad/scripts/00-fail", "#!/bin/sh\nexit 3\n"),
        ],
    );
    let out = dance(state.path(), src.path(), "n1", &["--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    util::assert_report_schema(&doc);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["modules"][0]["status"], "failed");
    assert!(doc["modules"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("exec 00-fail failed"));
    let step = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "exec")
        .unwrap();
    assert_eq!(step["ok"], false);
    assert_eq!(step["exit"], 3);
}

#[test]
fn the_html_timeline_draws_one_bar_per_step_in_a_real_browser() {
    if !have_root("dance") {
        return;
    }
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium is missing: run tests/run as root, or apt-get install chromium");
    let state = TempDir::new("dance-state");
    let out = dance(state.path(), &example_site(), "localhost.localdomain", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = state.path().join("timeline.html");
    let json = util::disco(
        state.path(),
        &[
            "report",
            "--format",
            "json",
            "--html",
            page.to_str().unwrap(),
        ],
    );
    assert!(json.status.success(), "{}", text(&json.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let steps = doc["steps"].as_array().unwrap();
    // The page as the browser built it.
    let profile = TempDir::new("chromium-profile");
    let dom = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run chromium");
    let dom = text(&dom.stdout);
    assert!(dom.contains("<svg"), "chromium rendered nothing:\n{dom}");
    assert_eq!(
        dom.matches("<rect class=\"bar ").count(),
        steps.len(),
        "{dom}"
    );
    for s in steps {
        let step = s["step"].as_str().unwrap();
        assert!(dom.contains(&format!("data-step=\"{step}\"")), "{step}");
    }
    assert!(dom.contains("/etc/othermodule/stuff.cfg"));
}
