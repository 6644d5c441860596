//! The `disco` command line as a user meets it: help, version, errors, and the protocol tools.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn disco(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_disco"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn disco");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_every_subcommand_and_the_exit_codes() {
    let out = disco(&["--help"], b"");
    assert!(out.status.success());
    let text = stdout(&out);
    for sub in ["request", "check-result", "completions", "man"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing from:\n{text}"
        );
    }
    assert!(text.contains("Exit status:"));
    assert!(text.contains("--state-dir"));
}

#[test]
fn version_is_the_crates() {
    let out = disco(&["--version"], b"");
    assert_eq!(
        stdout(&out).trim(),
        format!("disco {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn request_then_check_result_is_a_valid_round_trip() {
    let req = disco(
        &[
            "request",
            "--timeout",
            "30",
            "-o",
            "service=sshd",
            "-o",
            "note=<&>\"' é",
        ],
        b"",
    );
    assert!(req.status.success(), "{}", stderr(&req));
    // Latin-1 on the wire: é is the single byte 0xE9.
    assert!(req.stdout.windows(2).any(|w| w == b" \xE9"));
    assert!(req
        .stdout
        .starts_with(b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n"));
    let check = disco(&["check-result"], &req.stdout);
    assert!(check.status.success(), "{}", stdout(&check));
    assert_eq!(
        stdout(&check).trim(),
        "valid SurvivorFixData: 2 option(s), timeout 30s"
    );
}

#[test]
fn check_result_reports_each_finding_with_its_place() {
    let doc = b"<?xml version=\"1.0\"?>\n<SurvivorFixResult>\n <Comment>x</Comment>\n <ReturnCode>0</ReturnCode>\n</SurvivorFixResult>\n";
    let out = disco(&["check-result", "-"], doc);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        [
            "2:1: <SurvivorFixResult> has no Version attribute",
            "4:2: <ReturnCode> is out of order in <SurvivorFixResult> (expected ReturnCode, Comment)"
        ]
    );
}

#[test]
fn check_result_checks_rule_9_with_exit_status() {
    let doc = b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<SurvivorFixResult Version=\"1.0\">\n <ReturnCode>1000</ReturnCode>\n <Comment></Comment>\n</SurvivorFixResult>\n";
    let ok = disco(&["check-result", "--exit-status", "232"], doc);
    assert!(ok.status.success(), "{}", stdout(&ok));
    let bad = disco(&["check-result", "--exit-status", "0"], doc);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stdout(&bad).contains("rule 9: exit status 0 differs from ReturnCode 1000 mod 256 = 232")
    );
}

#[test]
fn check_result_refuses_out_of_range_and_malformed_documents() {
    let doc = b"<?xml version=\"1.0\"?>\n<SurvivorFixResult Version=\"1.0\">\n <ReturnCode>1001</ReturnCode>\n <Comment></Comment>\n</SurvivorFixResult>\n";
    let out = disco(&["check-result"], doc);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out).trim(),
        "3:2: ReturnCode 1001 is out of range (0..=7 or 20..=1000)"
    );
    let out = disco(
        &["check-result"],
        b"<SurvivorFixResult Version=\"1.0\"><ReturnCode>0",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("malformed XML") || stdout(&out).contains("document ends inside")
    );
}

#[test]
fn errors_are_one_line_and_name_the_culprit() {
    let out = disco(&["request", "-o", "bad name=1"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: option 'bad name=1': the name may hold only letters, digits, '_', '-' and '.'\n"
    );
    let out = disco(&["request", "-o", "module=x"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("reserved"));
    let out = disco(&["check-result", "/nonexistent/result.xml"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1);
    assert!(stderr(&out).starts_with("error: cannot read /nonexistent/result.xml: "));
}

#[test]
fn completions_and_man_page_are_generated() {
    let out = disco(&["completions", "bash"], b"");
    assert!(out.status.success());
    assert!(stdout(&out).contains("check-result"));
    let out = disco(&["man"], b"");
    assert!(out.status.success());
    assert!(stdout(&out).starts_with(".ie"));
    assert!(stdout(&out).contains("disco"));
}
