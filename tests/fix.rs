//! `disco fix` end to end: the real binary against misbehaving bash and perl fix modules, one
//! per rule. Each test checks the decided ReturnCode, the violation kinds, that `disco fix`
//! returned within timeout + grace + leak timeout (plus a generous margin for a loaded machine:
//! the bound tells an enforced timeout from a module left to hang for 1000 s, it is no speed),
//! and that no process of the module is left.

mod util;

use std::time::Duration;

use util::{fix_cmd, marker, module, processes_of, run, Run, TempDir};

/// Slack for process start-up and a busy CI machine (load average 150 and more): generous,
/// since the bounds it pads only tell a timeout enforced from one ignored, and the fixtures
/// that hang do so for 1000 s.
const MARGIN: Duration = Duration::from_secs(10);

/// Runs fixture `name` for a unique service with short timeouts and checks the common promises.
fn fix(name: &str, extra: &[&str]) -> (Run, String) {
    let tmp = TempDir::new(name);
    let service = marker(name);
    let mut args = vec!["--grace", "300", "--leak-timeout", "300"];
    if !extra.contains(&"--timeout") {
        args.extend(["--timeout", "1"]);
    }
    args.extend_from_slice(extra);
    let r = run(fix_cmd(&module(name), &service, tmp.path(), &args));
    let timeout_ms = extra
        .iter()
        .position(|&a| a == "--timeout")
        .map_or(1000, |i| extra[i + 1].parse::<u64>().unwrap() * 1000);
    let bound = Duration::from_millis(timeout_ms + 300 + 300) + MARGIN;
    assert!(
        r.elapsed <= bound,
        "{name}: took {:?}, more than {bound:?}",
        r.elapsed
    );
    (r, service)
}

fn assert_gone(service: &str) {
    let left = processes_of(service);
    assert!(left.is_empty(), "processes of {service} left: {left:?}");
}

fn assert_outcome(r: &Run, code: u64, kinds: &[&str]) {
    assert_eq!(
        r.return_code(),
        code,
        "json: {}\nstderr: {}",
        r.json,
        r.stderr()
    );
    assert_eq!(r.status() as u64, code % 256);
    assert_eq!(r.kinds(), kinds, "json: {}", r.json);
}

#[test]
fn ok_bash_module() {
    let (r, s) = fix("ok", &[]);
    assert_outcome(&r, 0, &[]);
    assert_eq!(r.comment(), format!("fixed {s}"));
    assert_eq!(r.json["exit"]["code"], 0);
    assert_eq!(r.json["return_code_name"], "MODEXEC_OK");
    assert!(r.json["rusage"]["max_rss_kib"].as_i64().unwrap() > 0);
    assert_gone(&s);
}

#[test]
fn ok_perl_module_echoes_markup_and_non_ascii() {
    let value = "<&>\"' ünïcødé ✓ 日本";
    let (r, s) = fix("ok_perl", &["-o", &format!("msg={value}")]);
    assert_outcome(&r, 0, &[]);
    assert_eq!(r.comment(), value);
    assert_gone(&s);
}

#[test]
fn latin1_answer_is_decoded() {
    let (r, s) = fix("latin1", &[]);
    assert_outcome(&r, 0, &[]);
    assert_eq!(r.comment(), "café crème");
    assert_gone(&s);
}

#[test]
fn hang_times_out() {
    let (r, s) = fix("hang", &[]);
    assert_outcome(&r, 5, &["timeout"]);
    assert_eq!(r.json["timed_out"], true);
    assert!(r.json["exit"]["signal"].is_number());
    assert_gone(&s);
}

#[test]
fn ignoring_sigterm_gets_sigkill() {
    let (r, s) = fix("ignore_term", &[]);
    assert_outcome(&r, 5, &["timeout"]);
    assert_eq!(r.json["exit"]["signal"], 9);
    assert!(r.json["violations"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("SIGKILL"));
    assert_gone(&s);
}

#[test]
fn setsid_escapee_is_found_and_killed() {
    let (r, s) = fix("setsid_hang", &[]);
    assert_outcome(&r, 5, &["timeout", "process_group_changed"]);
    assert_gone(&s);
}

#[test]
fn perl_module_leaving_its_group_is_found_and_killed() {
    let (r, s) = fix("perl_setpgrp", &[]);
    assert_outcome(&r, 5, &["timeout", "process_group_changed"]);
    assert_gone(&s);
}

#[test]
fn many_children_are_all_killed() {
    let (r, s) = fix("many_children", &[]);
    assert_outcome(&r, 5, &["timeout"]);
    assert_gone(&s);
}

#[test]
fn background_child_holding_stdout_is_a_leak() {
    let (r, s) = fix("leak_stdout", &[]);
    assert_outcome(&r, 0, &["leaked_file_handle"]);
    let detail = r.json["violations"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("sleep 1000") && detail.contains("stdout"),
        "{detail}"
    );
    assert!(r.elapsed < Duration::from_secs(1) + MARGIN);
    assert_gone(&s);
}

#[test]
fn background_child_holding_stdin_is_a_leak() {
    let (r, s) = fix("leak_stdin", &[]);
    assert_outcome(&r, 0, &["leaked_file_handle"]);
    let detail = r.json["violations"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("stdin"), "{detail}");
    assert_gone(&s);
}

#[test]
fn proper_daemon_is_background_and_left_alone() {
    let (r, s) = fix("daemon", &[]);
    assert_outcome(&r, 0, &[]);
    let background = r.json["background"].as_array().unwrap();
    assert_eq!(background.len(), 1, "json: {}", r.json);
    let pid = background[0]["pid"].as_i64().unwrap() as i32;
    // It is still running, and it is the only process of the module left.
    assert_eq!(processes_of(&s), vec![pid]);
    util::kill(pid);
}

#[test]
fn flooding_stderr_is_bounded() {
    let (r, s) = fix("flood", &["--timeout", "10"]);
    assert_outcome(&r, 0, &["output_truncated"]);
    assert!(r.json["stderr_tail"].as_str().unwrap().len() <= 8192);
    assert_gone(&s);
}

#[test]
fn flooding_stdout_is_bounded_and_invalid() {
    let (r, s) = fix("flood_stdout", &["--timeout", "10"]);
    assert_outcome(&r, 1, &["invalid_result", "output_truncated"]);
    assert_gone(&s);
}

#[test]
fn writing_before_reading_a_large_request_does_not_deadlock() {
    let tmp = TempDir::new("big");
    let service = marker("write_before_read");
    // About 3 MiB of request, under the protocol's 4 MiB reading limit for --stdin validation.
    let big = "x".repeat(3 << 20);
    let doc = format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<SurvivorFixData Version=\"1.0\">\n\
         <Timeout>60</Timeout>\n<ModuleOption OptionName=\"big\">\n<OptionValue>{big}</OptionValue>\n\
         </ModuleOption>\n</SurvivorFixData>\n"
    );
    let path = tmp.path().join("req.xml");
    std::fs::write(&path, &doc).unwrap();
    let mut cmd = fix_cmd(
        &module("write_before_read"),
        &service,
        tmp.path(),
        &["--stdin"],
    );
    cmd.stdin(std::fs::File::open(&path).unwrap());
    let r = run(cmd);
    assert_outcome(&r, 0, &[]);
    assert_eq!(r.comment(), format!("read {} bytes", doc.len()));
    // A deadlock would last until the request's timeout, and answer 5 (checked above).
    assert!(r.elapsed < Duration::from_secs(60));
    assert_gone(&service);
}

#[test]
fn invalid_xml_is_a_problem() {
    let (r, s) = fix("invalid_xml", &[]);
    assert_outcome(&r, 1, &["invalid_result"]);
    assert!(r.comment().contains("malformed XML"), "{}", r.comment());
    assert_gone(&s);
}

#[test]
fn missing_return_code_is_a_problem() {
    let (r, s) = fix("missing_rc", &[]);
    assert_outcome(&r, 1, &["invalid_result"]);
    assert!(r.comment().contains("ReturnCode"), "{}", r.comment());
    assert_gone(&s);
}

#[test]
fn no_output_is_a_problem() {
    let (r, s) = fix("silent", &[]);
    assert_outcome(&r, 1, &["invalid_result"]);
    assert_gone(&s);
}

#[test]
fn return_code_out_of_range() {
    let (r, s) = fix("out_of_range", &[]);
    assert_outcome(&r, 1, &["return_code_out_of_range"]);
    assert!(r.comment().contains("1001"));
    assert_gone(&s);
}

#[test]
fn exit_status_mismatch_keeps_the_xml_code() {
    let (r, s) = fix("mismatch", &[]);
    assert_outcome(&r, 0, &["return_code_mismatch"]);
    assert_eq!(r.json["exit"]["code"], 3);
    assert_gone(&s);
}

#[test]
fn compiled_module_is_refused_unless_allowed() {
    let tmp = TempDir::new("elf");
    let elf = tmp.path().join("true");
    std::fs::copy("/bin/true", &elf).unwrap();
    let r = run(fix_cmd(&elf, &marker("elf"), tmp.path(), &[]));
    assert_outcome(&r, 4, &["compiled_module"]);
    assert!(r.json["exit"].is_null());
    let r = run(fix_cmd(
        &elf,
        &marker("elf2"),
        tmp.path(),
        &["--allow-compiled"],
    ));
    // /bin/true writes no result: it ran, and that is a problem of its own.
    assert_outcome(&r, 1, &["invalid_result"]);
    assert_eq!(r.json["exit"]["code"], 0);
}

#[test]
fn missing_module_is_a_misconfiguration() {
    let tmp = TempDir::new("missing");
    let r = run(fix_cmd(
        &tmp.path().join("nope"),
        &marker("missing"),
        tmp.path(),
        &[],
    ));
    assert_eq!(r.status(), 4);
    assert!(r.stderr().contains("error: module") && r.stderr().contains("not found"));
}

#[test]
fn non_executable_module_is_a_misconfiguration() {
    let tmp = TempDir::new("noexec");
    let path = tmp.path().join("ok");
    std::fs::copy(module("ok"), &path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = run(fix_cmd(&path, &marker("noexec"), tmp.path(), &[]));
    assert_eq!(r.status(), 4);
    assert!(r.stderr().contains("is not executable"), "{}", r.stderr());
}

#[test]
fn invalid_stdin_request_is_a_misconfiguration() {
    let tmp = TempDir::new("badreq");
    let mut cmd = fix_cmd(&module("ok"), &marker("badreq"), tmp.path(), &["--stdin"]);
    let path = tmp.path().join("req.xml");
    std::fs::write(&path, "<SurvivorFixData><oops/></SurvivorFixData>").unwrap();
    cmd.stdin(std::fs::File::open(&path).unwrap());
    let r = run(cmd);
    assert_eq!(r.status(), 4);
    assert!(r.stderr().contains("invalid request"), "{}", r.stderr());
}

#[test]
fn text_and_xml_formats() {
    let tmp = TempDir::new("formats");
    let mut cmd = fix_cmd(
        &module("mismatch"),
        &marker("fmt"),
        tmp.path(),
        &["--format", "text"],
    );
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("ok: fix "), "{stdout}");
    assert!(stdout.contains("ReturnCode 0 (MODEXEC_OK)"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: return_code_mismatch: "),
        "{stderr}"
    );
    let mut cmd = fix_cmd(
        &module("latin1"),
        &marker("fmt2"),
        tmp.path(),
        &["--format", "xml"],
    );
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.starts_with(b"<?xml"));
    assert!(out.stdout.windows(5).any(|w| w == b"caf\xe9 "));
}

/// Runs `n` fixes of `fixture` at once, the i-th for `service(i)`, each holding for `hold`
/// seconds; returns the (start, end) intervals the modules recorded.
fn concurrent(
    fixture: &str,
    n: usize,
    hold: &str,
    service: impl Fn(usize) -> String,
) -> Vec<(f64, f64)> {
    let tmp = TempDir::new(fixture);
    let record = tmp.path().join("intervals");
    let locks = tmp.path().join("locks");
    let children: Vec<_> = (0..n)
        .map(|i| {
            let mut cmd = fix_cmd(
                &module(fixture),
                &service(i),
                &locks,
                &[
                    "--timeout",
                    "20",
                    "-o",
                    &format!("file={}", record.display()),
                    "-o",
                    &format!("hold={hold}"),
                ],
            );
            cmd.stdout(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let text = std::fs::read_to_string(&record).unwrap();
    let mut intervals: Vec<(f64, f64)> = text
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    assert_eq!(intervals.len(), n);
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    intervals
}

fn assert_serial(intervals: &[(f64, f64)]) {
    for pair in intervals.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "runs overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn same_service_at_host_never_runs_twice_at_once() {
    let s = marker("lock-same");
    let intervals = concurrent("lockrec", 8, "0.1", |_| s.clone());
    assert_serial(&intervals);
}

#[test]
fn distinct_targets_run_in_parallel() {
    let s = marker("lock-distinct");
    let intervals = concurrent("lockrec", 8, "1", |i| format!("{s}-{i}"));
    let last_start = intervals.iter().map(|i| i.0).fold(f64::MIN, f64::max);
    let first_end = intervals.iter().map(|i| i.1).fold(f64::MAX, f64::min);
    assert!(
        last_start < first_end,
        "not all 8 ran at once: {intervals:?}"
    );
}

#[test]
fn header_host_lock_serialises_services_of_one_host() {
    let s = marker("lock-header");
    let intervals = concurrent("lockrec_host", 4, "0.1", |i| format!("{s}-{i}"));
    assert_serial(&intervals);
}

#[test]
fn waiting_too_long_for_the_lock_is_a_timeout() {
    let tmp = TempDir::new("lockwait");
    let service = marker("lockwait");
    let record = tmp.path().join("intervals");
    let file = format!("file={}", record.display());
    // The first fix holds the lock for 10 s: the waiter, whose timeout is 0.5 s, must give up
    // while it is still held (told by the holder's record, written once it lets go, not by a
    // clock: a loaded machine has 9.5 s of slack).
    let mut holder = fix_cmd(
        &module("lockrec"),
        &service,
        tmp.path(),
        &["--timeout", "20", "-o", &file, "-o", "hold=10"],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // Wait until it holds the lock: its module has started once the lock file is locked, which
    // a shared try-lock of our own tells without sleeping on a guess.
    let lock_file = tmp.path().join(format!("{service}@testhost"));
    let start = std::time::Instant::now();
    loop {
        if let Ok(f) = std::fs::File::open(&lock_file) {
            if matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)) {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "holder never locked"
        );
        std::thread::yield_now();
    }
    let r = run(fix_cmd(
        &module("ok"),
        &service,
        tmp.path(),
        &["--timeout", "0.5"],
    ));
    assert_outcome(&r, 5, &["timeout"]);
    assert!(r.json["violations"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("lock"));
    assert!(r.json["exit"].is_null());
    eprintln!("gave up on the lock after {:?}", r.elapsed);
    assert!(
        !record.exists(),
        "the waiter gave up only once the holder let go of the lock"
    );
    assert!(holder.wait().unwrap().success());
}

#[test]
fn a_shipped_module_runs_from_a_checkout_by_its_folder_with_env_passed() {
    let tmp = TempDir::new("checkout-fs-clean");
    let junk = tmp.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("old.log"), "x").unwrap();
    let conf = tmp.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("fs-clean.conf"),
        format!("{} 1m\n", junk.display()),
    )
    .unwrap();
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mod/fix/fs-clean");
    let env = format!("DISCO_CONF_DIR={}", conf.display());
    let r = run(fix_cmd(
        &folder,
        &marker("fs-clean"),
        &tmp.path().join("locks"),
        &["-e", &env, "-o", "dryrun=1"],
    ));
    // The module found disco (DISCO is the host's own path) and the configuration (-e).
    assert_eq!(r.return_code(), 0, "{} {}", r.comment(), r.stderr());
    assert!(!r.comment().contains("not found"), "{}", r.comment());
}

/// A descriptor the caller of `disco fix` left open (here 7, a live file) does not reach the
/// module, and the module runs without the caller's controlling terminal.
#[test]
fn the_callers_descriptors_and_terminal_do_not_reach_the_module() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let tmp = TempDir::new("fd7");
    let file = tmp.path().join("live.txt");
    std::fs::write(&file, "live\n").unwrap();
    let script = tmp.path().join("fdcheck");
    std::fs::write(
        &script,
        "#!/bin/bash\ncat >/dev/null\n\
         if [ -e /proc/self/fd/7 ]; then c=seen; else c=none; fi\n\
         if : 2>/dev/null </dev/tty; then t=tty; else t=notty; fi\n\
         printf '<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\\n<SurvivorFixResult Version=\"1.0\">\\n<ReturnCode>0</ReturnCode>\\n<Comment>fd7=%s %s</Comment>\\n</SurvivorFixResult>\\n' $c $t\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = std::fs::File::open(&file).unwrap();
    let raw = f.as_raw_fd();
    let mut cmd = fix_cmd(&script, &marker("fd7"), tmp.path(), &[]);
    // SAFETY: dup2 is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let r = run(cmd);
    drop(f);
    assert_eq!(r.comment(), "fd7=none notty", "{}", r.stderr());
}

// A cgroup per fix (issue 14). These need root (a cgroup v2 to make cgroups in), and perl.

/// The fix ran in a cgroup of its own: the record has the cgroup's figures.
fn assert_cgroup(r: &Run) {
    assert!(
        r.json["cgroup"].is_object(),
        "no cgroup (is a writable cgroup v2 mounted?): {}\nstderr: {}",
        r.json,
        r.stderr()
    );
}

/// Nothing with `hopper-SERVICE` in its command line is left, nor anything of the service.
fn assert_no_hopper(service: &str) {
    // A SIGKILLed process may take a moment to vanish from /proc.
    let marker = format!("hopper-{service}");
    let start = std::time::Instant::now();
    while !util::processes_with_arg(&marker).is_empty() && start.elapsed() < MARGIN {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = util::processes_with_arg(&marker);
    assert!(left.is_empty(), "the hopper is still running: {left:?}");
    assert_gone(service);
}

#[test]
fn fork_hopper_at_the_timeout_is_killed() {
    if !util::have_root("cgroup") {
        return;
    }
    let (r, s) = fix("hopper_hang", &["--timeout", "2"]);
    assert_cgroup(&r);
    let kinds = r.kinds();
    assert_eq!(kinds[0], "timeout", "json: {}", r.json);
    assert!(
        kinds.len() > 1 && kinds[1..].iter().all(|k| k == "process_group_changed"),
        "json: {}",
        r.json
    );
    assert!(r.json["violations"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("SIGKILL"));
    // The module, its sleep and at least one hopper.
    assert!(r.json["killed"].as_u64().unwrap() >= 3, "json: {}", r.json);
    assert_no_hopper(&s);
}

#[test]
fn fork_hopper_holding_stdout_is_a_leak_and_killed() {
    if !util::have_root("cgroup") {
        return;
    }
    let (r, s) = fix("hopper_leak", &[]);
    assert_cgroup(&r);
    // One process_group_changed per holder outside the group: the frozen look may catch a
    // hopper and the child it just forked.
    assert_eq!(r.return_code(), 0, "json: {}", r.json);
    let kinds = r.kinds();
    assert_eq!(kinds[0], "leaked_file_handle", "json: {}", r.json);
    assert!(
        kinds.len() > 1 && kinds[1..].iter().all(|k| k == "process_group_changed"),
        "json: {}",
        r.json
    );
    let detail = r.json["violations"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("hopper-{s}")) && detail.contains("stdout"),
        "{detail}"
    );
    assert!(r.json["background"].as_array().unwrap().is_empty());
    assert!(r.json["killed"].as_u64().unwrap() >= 1, "json: {}", r.json);
    assert_no_hopper(&s);
}

#[test]
fn fork_bomb_is_contained_by_pids_max() {
    if !util::have_root("cgroup") {
        return;
    }
    let (r, s) = fix("fork_bomb", &["--timeout", "10", "--pids-max", "64"]);
    assert_cgroup(&r);
    assert_outcome(&r, 1, &["pids_limit"]);
    assert!(
        r.comment().contains("limit of 64 processes"),
        "{}",
        r.comment()
    );
    if let Some(peak) = r.json["cgroup"]["pids_peak"].as_u64() {
        assert!(peak <= 64, "json: {}", r.json);
    }
    assert!(r.json["killed"].as_u64().unwrap() > 1, "json: {}", r.json);
    assert_gone(&s);
}

#[test]
fn memory_hog_is_contained_by_memory_max() {
    if !util::have_root("cgroup") {
        return;
    }
    let (r, s) = fix("memory_hog", &["--timeout", "10", "--memory-max", "64M"]);
    assert_cgroup(&r);
    assert_outcome(&r, 1, &["memory_limit", "invalid_result"]);
    assert_eq!(r.json["exit"]["signal"], 9);
    let peak = r.json["cgroup"]["memory_peak_bytes"].as_u64().unwrap();
    assert!(peak <= 64 << 20, "json: {}", r.json);
    assert_gone(&s);
}

#[test]
fn cpu_max_slows_a_spinning_module_down() {
    if !util::have_root("cgroup") {
        return;
    }
    let (r, s) = fix("spin", &["--timeout", "10", "--cpu-max", "10"]);
    assert_cgroup(&r);
    assert_outcome(&r, 0, &[]);
    // 10% of one CPU over the wall time (plus a period of slack); a loaded machine only gives
    // it less.
    let cpu = r.json["cgroup"]["cpu_user_ms"].as_f64().unwrap()
        + r.json["cgroup"]["cpu_system_ms"].as_f64().unwrap();
    let wall = r.json["duration_ms"].as_f64().unwrap();
    assert!(
        cpu <= wall * 0.1 + 100.0,
        "{cpu} ms of CPU in {wall} ms: {}",
        r.json
    );
    assert_gone(&s);
}

#[test]
fn limits_in_the_module_header_apply() {
    if !util::have_root("cgroup") {
        return;
    }
    let tmp = TempDir::new("header-limit");
    let script = tmp.path().join("bomb");
    let text = std::fs::read_to_string(module("fork_bomb"))
        .unwrap()
        .replacen("use strict;", "# survivor-pids-max: 32\nuse strict;", 1);
    std::fs::write(&script, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let service = marker("header-limit");
    let r = run(fix_cmd(&script, &service, tmp.path(), &["--timeout", "10"]));
    assert_outcome(&r, 1, &["pids_limit"]);
    assert!(
        r.comment().contains("limit of 32 processes"),
        "{}",
        r.comment()
    );
    assert_gone(&service);
}

#[test]
fn cgroup_accounting_counts_every_member() {
    if !util::have_root("cgroup") {
        return;
    }
    // The cgroup's own CPU time: every member's, whether the module waited for it or not.
    let (r, s) = fix("ok", &[]);
    assert_cgroup(&r);
    assert_eq!(r.json["killed"], 0);
    let cpu = r.json["cgroup"]["cpu_user_ms"].as_f64().unwrap()
        + r.json["cgroup"]["cpu_system_ms"].as_f64().unwrap();
    assert!(cpu > 0.0, "json: {}", r.json);
    assert_gone(&s);
}

/// The cgroup2 mount point, from /proc/self/mountinfo.
fn cgroup2_mount() -> std::path::PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("cgroup2 "))
        })
        .expect("no cgroup2 mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)");
    line.split(' ').nth(4).unwrap().into()
}

#[test]
fn without_a_writable_cgroup_the_tracking_still_works() {
    if !util::have_root("cgroup") {
        return;
    }
    // A cgroup that may have no children: unwritable for disco, even as root.
    let root = cgroup2_mount().join(format!("disco-test-{}", std::process::id()));
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("cgroup.max.descendants"), "0").unwrap();
    // And a folder that is no cgroup at all.
    let plain = TempDir::new("not-a-cgroup");
    for dir in [root.as_path(), plain.path()] {
        let (service, tmp) = (marker("fallback"), TempDir::new("fallback"));
        let mut cmd = fix_cmd(
            &module("setsid_hang"),
            &service,
            tmp.path(),
            &["--timeout", "1", "--grace", "300"],
        );
        cmd.env("DISCO_CGROUP_ROOT", dir);
        let r = run(cmd);
        assert_outcome(&r, 5, &["timeout", "process_group_changed"]);
        assert!(r.json["cgroup"].is_null(), "json: {}", r.json);
        let stderr = r.stderr();
        let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning:")).collect();
        assert_eq!(warnings.len(), 1, "{stderr}");
        assert!(
            warnings[0].contains("tracked through /proc only"),
            "{stderr}"
        );
        assert_gone(&service);
        // A limit that cannot be enforced is refused, not ignored.
        let mut cmd = fix_cmd(&module("ok"), &service, tmp.path(), &["--pids-max", "64"]);
        cmd.env("DISCO_CGROUP_ROOT", dir);
        let r = run(cmd);
        assert_ne!(r.output.status.code(), Some(0), "{}", r.stderr());
        assert!(r.stderr().contains("cgroup"), "{}", r.stderr());
    }
    std::fs::remove_dir(&root).unwrap();
}
