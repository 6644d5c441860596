//! `disco report` end to end: reports saved through the library and printed by the real binary
//! in the seed's format and as JSON, kept to the newest 20, picked by id; and the in-process
//! measurement the dance takes for its own steps.

mod util;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use host::dance::report::{
    self, DanceReport, ModuleResult, ModuleStatus, SelfUsage, Step, Usage, INTERNAL,
};
use util::TempDir;

/// `disco --state-dir STATE report ARGS...`.
fn disco_report(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_disco"))
        .arg("--state-dir")
        .arg(state)
        .arg("report")
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("disco runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "disco report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

/// A usage in the seed's figures: times in hundredths of a second.
fn usage(real: u64, user: u64, sys: u64, figures: [u64; 5]) -> Usage {
    let [mem_max_kb, faults_major, faults_minor, io_in, io_out] = figures;
    Usage {
        real: Duration::from_millis(real * 10),
        user: Duration::from_millis(user * 10),
        sys: Duration::from_millis(sys * 10),
        mem_max_kb,
        faults_major,
        faults_minor,
        io_in,
        io_out,
        signals: 0,
    }
}

/// A process step that exited `exit`.
fn process(module: &str, step: &str, item: Option<&str>, u: Usage, exit: i32) -> Step {
    let mut s = Step::new(module, step, item.map(str::to_owned), u, exit == 0);
    s.exit = Some(exit);
    s
}

/// A script step with its ReturnCode.
fn script(item: &str, u: Usage, exit: i32, code: u16, name: &str) -> Step {
    let mut s = process("testmodule-1.0", "exec", Some(item), u, exit);
    s.return_code = Some(code);
    s.return_code_name = Some(name.to_owned());
    s
}

/// The seed's complete example as a dance would record it, steps in run order, with the
/// second script failing as it does in the seed (exit 1), here with its ReturnCode and a
/// violation.
fn seed_report(id: &str) -> DanceReport {
    let mut stop = script(
        "10-service_stop.sh",
        usage(58, 3, 41, [4960, 122, 5462, 25656, 8]),
        1,
        1,
        "MODEXEC_PROBLEM",
    );
    stop.violations = vec!["leaked_file_handle: pid 4242 (sleep 60) holds stdout".to_owned()];
    let steps = vec![
        // The parameter fetch is in-process: no exit status of its own.
        Step::new(
            INTERNAL,
            "fetch_params",
            None,
            usage(126, 2, 8, [11136, 0, 1728, 0, 0]),
            true,
        ),
        process(
            "testmodule-1.0",
            "fetch",
            None,
            usage(272, 6, 15, [11152, 0, 2996, 0, 24]),
            0,
        ),
        process(
            "othermodule-3.2",
            "fetch",
            None,
            usage(228, 5, 14, [11152, 0, 2843, 0, 24]),
            0,
        ),
        script(
            "00-hello.sh",
            usage(27, 3, 18, [4672, 32, 3783, 6640, 8]),
            0,
            0,
            "MODEXEC_OK",
        ),
        stop,
        process(
            "testmodule-1.0",
            "diff",
            None,
            usage(256, 42, 210, [5184, 0, 57661, 0, 32]),
            0,
        ),
        process(
            "othermodule-3.2",
            "template",
            Some("etc/othermodule/stuff.cfg"),
            usage(56, 4, 37, [4592, 122, 4885, 25536, 16]),
            0,
        ),
        process(
            "othermodule-3.2",
            "diff",
            None,
            usage(80, 13, 65, [4816, 0, 16448, 0, 8]),
            0,
        ),
        process(
            INTERNAL,
            "diff",
            None,
            usage(82, 14, 66, [5184, 0, 18218, 0, 8]),
            0,
        ),
    ];
    DanceReport {
        id: id.to_owned(),
        node: "localhost.localdomain".to_owned(),
        noop: true,
        started_unix: 1_795_387_035,
        started_unix_ms: 0,
        duration: Duration::from_millis(13_021),
        modules: vec![
            ModuleResult {
                name: "testmodule-1.0".to_owned(),
                status: ModuleStatus::Failed {
                    reason: "exec 10-service_stop.sh: MODEXEC_PROBLEM".to_owned(),
                },
                changes: (0, 0, 0),
                paths: Vec::new(),
            },
            ModuleResult {
                name: "othermodule-3.2".to_owned(),
                status: ModuleStatus::Ok,
                changes: (2, 0, 0),
                paths: Vec::new(),
            },
        ],
        steps,
        ok: false,
    }
}

/// The seed's `disco report`, plus the ReturnCodes, the violation and the summary.
const SEED_TEXT: &str = "\
report: _internal: diff
report:    time_real 0.82 : time_user 0.14 : time_sys 0.66
report:    mem_avg 0 : mem_max 5184 : mem_faults_major 0 : mem_faults_minor 18218
report:    io_fsin 0 : io_fsout 8 : io_sockin 0 : io_sockout 0 : io_signals 0
report:    exit: 0
report: _internal: fetch_params
report:    time_real 1.26 : time_user 0.02 : time_sys 0.08
report:    mem_avg 0 : mem_max 11136 : mem_faults_major 0 : mem_faults_minor 1728
report:    io_fsin 0 : io_fsout 0 : io_sockin 0 : io_sockout 0 : io_signals 0
report:    exit: 0
report: othermodule-3.2: diff
report:    time_real 0.80 : time_user 0.13 : time_sys 0.65
report:    mem_avg 0 : mem_max 4816 : mem_faults_major 0 : mem_faults_minor 16448
report:    io_fsin 0 : io_fsout 8 : io_sockin 0 : io_sockout 0 : io_signals 0
report:    exit: 0
report: othermodule-3.2: fetch
report:    time_real 2.28 : time_user 0.05 : time_sys 0.14
report:    mem_avg 0 : mem_max 11152 : mem_faults_major 0 : mem_faults_minor 2843
report:    io_fsin 0 : io_fsout 24 : io_sockin 0 : io_sockout 0 : io_signals 0
report:    exit: 0
report: othermodule-3.2: template
report:    etc/othermodule/stuff.cfg :
report:        time_real 0.56 : time_user 0.04 : time_sys 0.37
report:        mem_avg 0 : mem_max 4592 : mem_faults_major 122 : mem_faults_minor 4885
report:        io_fsin 25536 : io_fsout 16 : io_sockin 0 : io_sockout 0 : io_signals 0
report:        exit: 0
report: testmodule-1.0: diff
report:    time_real 2.56 : time_user 0.42 : time_sys 2.10
report:    mem_avg 0 : mem_max 5184 : mem_faults_major 0 : mem_faults_minor 57661
report:    io_fsin 0 : io_fsout 32 : io_sockin 0 : io_sockout 0 : io_signals 0
report:    exit: 0
report: testmodule-1.0: exec
report:    00-hello.sh :
report:        time_real 0.27 : time_user 0.03 : time_sys 0.18
report:        mem_avg 0 : mem_max 4672 : mem_faults_major 32 : mem_faults_minor 3783
report:        io_fsin 6640 : io_fsout 8 : io_sockin 0 : io_sockout 0 : io_signals 0
report:        exit: 0
report:        return_code: 0 (MODEXEC_OK)
report:    10-service_stop.sh :
report:        time_real 0.58 : time_user 0.03 : time_sys 0.41
report:        mem_avg 0 : mem_max 4960 : mem_faults_major 122 : mem_faults_minor 5462
report:        io_fsin 25656 : io_fsout 8 : io_sockin 0 : io_sockout 0 : io_signals 0
report:        exit: 1
report:        return_code: 1 (MODEXEC_PROBLEM)
report:        violation: leaked_file_handle: pid 4242 (sleep 60) holds stdout
report: testmodule-1.0: fetch
report:    time_real 2.72 : time_user 0.06 : time_sys 0.15
report:    mem_avg 0 : mem_max 11152 : mem_faults_major 0 : mem_faults_minor 2996
report:    io_fsin 0 : io_fsout 24 : io_sockin 0 : io_sockout 0 : io_signals 0
report:    exit: 0
report: result: failed (2 modules: 1 ok, 1 failed, 0 skipped) in 13.02 s
report:    testmodule-1.0: failed: exec 10-service_stop.sh: MODEXEC_PROBLEM
";

const ID: &str = "1795387035.799595-14937";

#[test]
fn text_is_the_seeds_format() {
    let state = TempDir::new("report-text");
    report::save(state.path(), &seed_report(ID)).unwrap();
    assert_eq!(stdout(&disco_report(state.path(), &[])), SEED_TEXT);
}

#[test]
fn json_follows_the_report_schema() {
    let state = TempDir::new("report-json");
    let saved = seed_report(ID);
    report::save(state.path(), &saved).unwrap();
    let text = stdout(&disco_report(state.path(), &["--format", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&text).expect("one JSON document");
    util::assert_report_schema(&doc);
    assert_eq!(doc["id"], ID);
    assert_eq!(doc["steps"].as_array().unwrap().len(), saved.steps.len());
    assert_eq!(doc["totals"]["failed"], 1);
    assert_eq!(doc["modules"][0]["status"], "failed");
    assert_eq!(doc["totals"]["created"], 2);
    // Every step's duration in milliseconds, as the report measured it.
    for (json, step) in doc["steps"].as_array().unwrap().iter().zip(&saved.steps) {
        assert_eq!(
            json["duration_ms"].as_u64().unwrap(),
            step.usage.real.as_millis() as u64
        );
    }
}

#[test]
fn keeps_the_newest_twenty() {
    let state = TempDir::new("report-keep");
    // Seconds 1..=25 with pids of varying width: a string sort would misorder both.
    let ids: Vec<String> = (1..=25)
        .map(|n| format!("{}.5-{}", 1_795_387_000 + n, 7 + n))
        .collect();
    for id in &ids {
        report::save(state.path(), &seed_report(id)).unwrap();
    }
    let mut kept: Vec<String> = std::fs::read_dir(state.path().join("reports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    let mut want: Vec<String> = ids[5..].iter().map(|id| format!("{id}.json")).collect();
    want.sort();
    assert_eq!(kept, want, "only the newest 20, and no temporary files");
    let latest = report::load(state.path(), None).unwrap();
    assert_eq!(latest.id, ids[24]);
}

#[test]
fn latest_is_by_time_then_pid_numerically() {
    let state = TempDir::new("report-latest");
    for id in ["1795387035.5-9", "1795387035.5-10", "999999999.9-99"] {
        report::save(state.path(), &seed_report(id)).unwrap();
    }
    let json = stdout(&disco_report(state.path(), &["--format", "json"]));
    let latest: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(latest["id"], "1795387035.5-10");
}

#[test]
fn named_id_picks_that_report() {
    let state = TempDir::new("report-named");
    let mut old = seed_report("1795387000.000001-1");
    old.node = "old.example".to_owned();
    report::save(state.path(), &old).unwrap();
    report::save(state.path(), &seed_report(ID)).unwrap();
    let json = stdout(&disco_report(
        state.path(),
        &["1795387000.000001-1", "--format", "json"],
    ));
    let got: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(got["id"], "1795387000.000001-1");
    assert_eq!(got["node"], "old.example");

    let out = disco_report(state.path(), &["1795387000.000002-1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no dance report '1795387000.000002-1' in"),
        "{err}"
    );
}

#[test]
fn no_report_yet_is_a_one_line_error() {
    let state = TempDir::new("report-none");
    let out = disco_report(state.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    let want = format!(
        "error: no dance report in {} yet (run 'disco dance --noop' first)\n",
        state.path().join("reports").display()
    );
    assert_eq!(err, want);
}

#[test]
fn of_self_since_measures_a_busy_loop() {
    let start = SelfUsage::now();
    let began = Instant::now();
    let mut x = 0u64;
    while began.elapsed() < Duration::from_millis(50) {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    let used = Usage::of_self_since(start);
    assert!(used.real >= Duration::from_millis(50), "{used:?}");
    assert!(used.user + used.sys > Duration::ZERO, "{used:?}");
    assert!(used.mem_max_kb > 0, "{used:?}");
}
