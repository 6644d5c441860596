//! The checks that need no run: the script itself (rule 3: executable, a `#!` interpreter that
//! exists, not compiled), what its text gives away (rule 1: a lock header the host can read, no
//! fixed shared paths without one; rule 2: no `setsid`), and its source layout (rule 4.1: the
//! directory is named after the module; 4.2: a `Makefile.in` with the five targets that installs
//! as the spec says; 4.3: `doc/fm-NAME.html`).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::target::Module;
use super::Finding;
use crate::supervise::header_lock;

/// The directives rule 4.2 asks every module's `Makefile.in` for.
pub const MAKE_TARGETS: &[&str] = &["clean", "veryclean", "all", "install", "install-remote"];
/// How much of the script is read (the whole of any reasonable script).
const MAX_SCRIPT: u64 = 1 << 20;
/// The host reads a `# survivor-lock:` header only among the first lines (supervise::inspect).
const HEADER_LINES: usize = 20;

/// Every static finding for `m`.
pub fn check(m: &Module) -> Vec<Finding> {
    let mut findings = script(m);
    if let Some(dir) = &m.source_dir {
        findings.extend(makefile(m, dir));
    }
    if doc_page(m).is_none() {
        let place = m
            .source_dir
            .as_deref()
            .unwrap_or(&m.script)
            .display()
            .to_string();
        findings.push(Finding::new(
            "4.3",
            format!("no documentation doc/fm-{}.html", m.name),
            place,
        ));
    }
    findings
}

/// Rules 1, 2 and 3 on the script file.
fn script(m: &Module) -> Vec<Finding> {
    let place = m.script.display();
    let meta = match std::fs::metadata(&m.script) {
        Ok(meta) if meta.is_file() => meta,
        _ if m.source_dir.is_some() => {
            return vec![Finding::new(
                "4.1",
                format!(
                    "no script named {0} in the module's directory (fix/{0}/{0})",
                    m.name
                ),
                place,
            )]
        }
        _ => return vec![Finding::new("3", "not a file", place)],
    };
    let mut findings = Vec::new();
    if meta.permissions().mode() & 0o111 == 0 {
        findings.push(Finding::new(
            "3",
            "not executable (the runner executes the module itself; chmod 755)",
            &place,
        ));
    }
    let mut bytes = Vec::new();
    if let Err(e) =
        std::fs::File::open(&m.script).and_then(|f| f.take(MAX_SCRIPT).read_to_end(&mut bytes))
    {
        findings.push(Finding::new("3", format!("cannot read it: {e}"), &place));
        return findings;
    }
    if bytes.starts_with(b"\x7fELF") {
        findings.push(Finding::new(
            "3",
            "a compiled (ELF) executable; fix modules must be scripts",
            &place,
        ));
        return findings;
    }
    if !bytes.starts_with(b"#!") {
        let what = if bytes.iter().take(4096).any(|&b| b == 0) {
            "not a script (binary content, no #! line)"
        } else {
            "no #! line naming the interpreter (the runner executes the module directly)"
        };
        findings.push(Finding::new("3", what, &place));
    } else if let Some(why) = interpreter_problem(&bytes) {
        findings.push(Finding::new("3", why, format!("{place}:1")));
    }
    let text = String::from_utf8_lossy(&bytes);
    findings.extend(text_checks(&text, &m.script));
    findings
}

/// Why the `#!` line's interpreter cannot run, if it cannot.
fn interpreter_problem(bytes: &[u8]) -> Option<String> {
    let line = bytes[2..].split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let Some(interp) = words.next() else {
        return Some("the #! line names no interpreter".to_owned());
    };
    if !Path::new(interp).is_absolute() {
        return Some(format!(
            "the #! interpreter '{interp}' is not an absolute path"
        ));
    }
    if !is_executable(Path::new(interp)) {
        return Some(format!("the #! interpreter {interp} does not exist here"));
    }
    if Path::new(interp).file_name().is_some_and(|n| n == "env") {
        // `#!/usr/bin/env [-S] perl`: the program is looked up on PATH.
        let program = words.find(|w| !w.starts_with('-'))?;
        if !on_path(program) {
            return Some(format!("the #! program '{program}' is not on PATH"));
        }
    }
    None
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
}

/// The code of a line without a trailing `#` comment (good enough for shell and perl: a `#`
/// inside quotes only shortens what is searched).
fn code(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') {
        return "";
    }
    match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Rules 1 and 2 from the script's text.
fn text_checks(text: &str, script: &Path) -> Vec<Finding> {
    let mut findings = Vec::new();
    let at = |n: usize| format!("{}:{}", script.display(), n + 1);
    let mut header = None;
    for (n, line) in text.lines().enumerate() {
        let rest = line.trim_start().strip_prefix('#').map(str::trim_start);
        if let Some(level) = rest.and_then(|r| r.strip_prefix("survivor-lock:")) {
            if n >= HEADER_LINES {
                findings.push(Finding::new(
                    "1",
                    format!("the survivor-lock header is past line {HEADER_LINES}, where the host does not look"),
                    at(n),
                ));
            } else if header_lock(line.as_bytes()).is_none() {
                findings.push(Finding::new(
                    "1",
                    format!(
                        "unknown lock level '{}' (service@host, host, service or none)",
                        level.trim()
                    ),
                    at(n),
                ));
            } else {
                header = Some(n);
            }
        }
        let code = code(line);
        for call in ["setsid", "setpgid", "setpgrp", "daemon("] {
            if contains_word(code, call) {
                findings.push(Finding::new(
                    "2",
                    format!(
                        "calls {}: fix modules must not change their process group",
                        call.trim_end_matches('(')
                    ),
                    at(n),
                ));
            }
        }
    }
    let locks_itself = text.contains("flock");
    if header.is_none() && !locks_itself {
        if let Some((n, path)) = text
            .lines()
            .enumerate()
            .find_map(|(n, line)| fixed_shared_path(code(line)).map(|p| (n, p)))
        {
            findings.push(Finding::new(
                "1",
                format!(
                    "uses the fixed path {path} and declares no lock: two runs at once share it \
                     (use mktemp, or declare '# survivor-lock: host')"
                ),
                at(n),
            ));
        }
    }
    findings
}

fn contains_word(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && (word.ends_with('(') || !ident(after))
    })
}

/// A literal path under `/tmp` or `/var/tmp` that is the same for every run (no `$`, no
/// `XXXXXX` template).
fn fixed_shared_path(code: &str) -> Option<String> {
    for start in ["/var/tmp/", "/tmp/"] {
        for (i, _) in code.match_indices(start) {
            if start == "/tmp/" && code[..i].ends_with("/var") {
                continue;
            }
            let rest = &code[i..];
            let end = rest
                .find(|c: char| c.is_whitespace() || "\"';)|&<>`".contains(c))
                .unwrap_or(rest.len());
            let path = &rest[..end];
            let name = &path[start.len()..];
            if !name.is_empty()
                && !name.contains('$')
                && !name.contains("XXX")
                && !name.contains('{')
            {
                return Some(path.to_owned());
            }
        }
    }
    None
}

/// Rule 4.1 and 4.2: the directory's name and its `Makefile.in`.
fn makefile(m: &Module, dir: &Path) -> Vec<Finding> {
    let mut findings = Vec::new();
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    if dir_name.as_deref() != Some(m.name.as_str()) {
        findings.push(Finding::new(
            "4.1",
            format!(
                "the module's directory must be named after it (fix/{})",
                m.name
            ),
            dir.display(),
        ));
    }
    let path = dir.join("Makefile.in");
    let Ok(text) = std::fs::read_to_string(&path) else {
        findings.push(Finding::new(
            "4.2",
            format!("no Makefile.in (with {})", MAKE_TARGETS.join(", ")),
            dir.display(),
        ));
        return findings;
    };
    let targets = make_targets(&text);
    for t in MAKE_TARGETS {
        if !targets.iter().any(|have| have == t) {
            findings.push(Finding::new(
                "4.2",
                format!("Makefile.in has no '{t}' target"),
                path.display(),
            ));
        }
    }
    for (needle, why) in [
        ("mod/fix", "does not install into @prefix@/mod/fix"),
        ("@INST_USER@", "does not give the module to @INST_USER@"),
        ("@INST_GROUP@", "does not give the module to @INST_GROUP@"),
        ("555", "does not install the module with mode 555"),
    ] {
        if !text.contains(needle) {
            findings.push(Finding::new(
                "4.2",
                format!("Makefile.in {why}"),
                path.display(),
            ));
        }
    }
    findings
}

/// The targets a makefile defines (rule lines: `a b: deps`, not variable assignments).
pub fn make_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in text.lines() {
        if line.starts_with(['\t', ' ', '#']) {
            continue;
        }
        let Some(colon) = line.find(':') else {
            continue;
        };
        let head = &line[..colon];
        if head.contains('=') || line[colon..].starts_with(":=") {
            continue;
        }
        targets.extend(head.split_whitespace().map(str::to_owned));
    }
    targets
}

/// Where the module's documentation page is, if anywhere: `doc/fm-NAME.html` beside or above
/// its source directory, or, for an installed module (`PREFIX/mod/fix/NAME`), in
/// `PREFIX/share/doc/disco/`.
pub fn doc_page(m: &Module) -> Option<PathBuf> {
    let file = format!("fm-{}.html", m.name);
    let mut candidates = Vec::new();
    let start = m
        .source_dir
        .clone()
        .or_else(|| m.script.parent().map(Path::to_path_buf));
    if let Some(start) = &start {
        for dir in start.ancestors().take(5) {
            candidates.push(dir.join("doc").join(&file));
        }
    }
    if let Some(prefix) = m
        .script
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
    {
        candidates.push(prefix.join("share/doc/disco").join(&file));
    }
    candidates.into_iter().find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_of_a_makefile() {
        let text = "X = 1\nall:\nclean veryclean: x\n\techo a:b\ninstall-remote: install\nY := 2\n";
        assert_eq!(
            make_targets(text),
            ["all", "clean", "veryclean", "install-remote"]
        );
    }

    #[test]
    fn fixed_paths_are_found() {
        assert_eq!(
            fixed_shared_path("echo x > /tmp/state.txt"),
            Some("/tmp/state.txt".into())
        );
        assert_eq!(fixed_shared_path("t=$(mktemp /tmp/x.XXXXXX)"), None);
        assert_eq!(fixed_shared_path("cat /tmp/$DISCO_SERVICE"), None);
        assert_eq!(
            fixed_shared_path("mktemp \"${TMPDIR:-/tmp}/a.XXXXXX\""),
            None
        );
    }

    #[test]
    fn setsid_is_a_word() {
        assert!(contains_word("exec setsid sleep 9", "setsid"));
        assert!(contains_word("POSIX::setsid();", "setsid"));
        assert!(!contains_word("my_setsid_flag=1", "setsid"));
    }
}
