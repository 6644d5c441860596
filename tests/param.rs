//! `disco param` and `disco-param` end to end against temporary trees, and `params::merge`.

mod util;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use util::TempDir;

/// `disco param --tree TREE ARGS...` with `stdin` fed in.
fn param(tree: &Path, args: &[&str], stdin: &str) -> Output {
    run(
        Command::new(env!("CARGO_BIN_EXE_disco"))
            .arg("param")
            .arg("--tree")
            .arg(tree)
            // Whatever the test's environment holds, --tree is the tree.
            .env_remove("DISCO_PARAMETERS"),
        args,
        stdin,
    )
}

fn run(cmd: &mut Command, args: &[&str], stdin: &str) -> Output {
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("disco starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs and expects success; returns stdout.
fn ok(tree: &Path, args: &[&str], stdin: &str) -> String {
    let out = param(tree, args, stdin);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and expects failure with exactly one `error: ` line on stderr; returns that line.
fn fails(tree: &Path, args: &[&str], stdin: &str) -> String {
    let out = param(tree, args, stdin);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("error: "), "{err:?}");
    err.trim_end().to_owned()
}

const SEED_LINES: &str = "\
disco={}
disco/client/cmds/rsync=rsync -qaWHe \"ssh -i /home/disco/.ssh/id_rsa_disco\"
disco/server/uri=disco@aklabs.net
";

const SEED_DUMP: &str = "\
disco = {}
disco/client = {}
disco/client/cmds = {}
disco/client/cmds/rsync = rsync -qaWHe \"ssh -i /home/disco/.ssh/id_rsa_disco\"
disco/server = {}
disco/server/uri = disco@aklabs.net
";

#[test]
fn seed_dump_example_exactly() {
    let dir = TempDir::new("param-seed");
    let tree = dir.path().join("parameters");
    ok(&tree, &["set", "-"], SEED_LINES);
    assert_eq!(ok(&tree, &["dump"], ""), SEED_DUMP);
    assert_eq!(
        ok(&tree, &["dump", "disco/server"], ""),
        "disco/server = {}\ndisco/server/uri = disco@aklabs.net\n"
    );
    assert_eq!(
        ok(&tree, &["dump", "disco/server/uri"], ""),
        "disco/server/uri = disco@aklabs.net\n"
    );
    // The files are the tree: one value a file, one trailing newline.
    assert_eq!(
        std::fs::read_to_string(tree.join("disco/server/uri")).unwrap(),
        "disco@aklabs.net\n"
    );
}

#[test]
fn dump_output_fed_to_set_dash_copies_the_tree() {
    let dir = TempDir::new("param-copy");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ok(&a, &["set", "-"], SEED_LINES);
    ok(&b, &["set", "-"], &ok(&a, &["dump"], ""));
    assert_eq!(ok(&b, &["dump"], ""), SEED_DUMP);
}

#[test]
fn json_is_the_whole_tree() {
    let dir = TempDir::new("param-json");
    let tree = dir.path().join("parameters");
    assert_eq!(ok(&tree, &["json"], "").trim(), "{}");
    ok(&tree, &["set", "-"], SEED_LINES);
    ok(&tree, &["set", "empty", "{}"], "");
    let json: serde_json::Value = serde_json::from_str(&ok(&tree, &["json"], "")).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "disco": {
                "client": {"cmds": {"rsync": "rsync -qaWHe \"ssh -i /home/disco/.ssh/id_rsa_disco\""}},
                "server": {"uri": "disco@aklabs.net"}
            },
            "empty": {}
        })
    );
}

#[test]
fn get_set_with_value_and_from_stdin() {
    let dir = TempDir::new("param-get");
    let tree = dir.path().join("parameters");
    ok(
        &tree,
        &["set", "node/parameters/something", "LOLTHISKEYMEANSNOTHING"],
        "",
    );
    assert_eq!(
        ok(&tree, &["get", "node/parameters/something"], ""),
        "LOLTHISKEYMEANSNOTHING\n"
    );
    // From stdin, the trailing newline `echo` adds is not part of the value.
    ok(&tree, &["set", "node/from-stdin"], "piped value\n");
    assert_eq!(ok(&tree, &["get", "node/from-stdin"], ""), "piped value\n");
    // A value that looks like an option is a value.
    ok(&tree, &["set", "node/flag", "-x"], "");
    assert_eq!(ok(&tree, &["get", "node/flag"], ""), "-x\n");
    // Overwriting a value.
    ok(&tree, &["set", "node/flag", "-y"], "");
    assert_eq!(ok(&tree, &["get", "node/flag"], ""), "-y\n");
}

#[test]
fn set_dir_then_get_prints_braces() {
    let dir = TempDir::new("param-dir");
    let tree = dir.path().join("parameters");
    ok(&tree, &["set", "a/b", "{}"], "");
    assert!(tree.join("a/b").is_dir());
    assert_eq!(ok(&tree, &["get", "a/b"], ""), "{}\n");
    assert_eq!(ok(&tree, &["get", "a"], ""), "{}\n");
    // Making an existing directory again is fine; making a value a directory is not.
    ok(&tree, &["set", "a/b", "{}"], "");
    ok(&tree, &["set", "a/v", "x"], "");
    let err = fails(&tree, &["set", "a/v", "{}"], "");
    assert!(
        err.contains("parameter 'a/v'") && err.contains("is a value, not a directory"),
        "{err}"
    );
    let err = fails(&tree, &["set", "a/b", "x"], "");
    assert!(
        err.contains("parameter 'a/b'") && err.contains("is a directory"),
        "{err}"
    );
    let err = fails(&tree, &["set", "a/v/below", "x"], "");
    assert!(err.contains("parameter 'a/v'"), "{err}");
}

#[test]
fn keys_lists_names_sorted() {
    let dir = TempDir::new("param-keys");
    let tree = dir.path().join("parameters");
    assert_eq!(ok(&tree, &["keys"], ""), "");
    ok(
        &tree,
        &["set", "-"],
        "n/modules/testmodule-1.0={}\nn/modules/othermodule-3.2={}\nn/x=1\n",
    );
    assert_eq!(
        ok(&tree, &["keys", "n/modules"], ""),
        "othermodule-3.2\ntestmodule-1.0\n"
    );
    assert_eq!(ok(&tree, &["keys", "n"], ""), "modules\nx\n");
    assert_eq!(ok(&tree, &["keys"], ""), "n\n");
    let err = fails(&tree, &["keys", "n/x"], "");
    assert!(err.ends_with("is a value, not a directory"), "{err}");
}

#[test]
fn delete_value_and_dirs() {
    let dir = TempDir::new("param-delete");
    let tree = dir.path().join("parameters");
    ok(&tree, &["set", "-"], SEED_LINES);
    ok(&tree, &["set", "empty", "{}"], "");
    ok(&tree, &["delete", "disco/server/uri"], "");
    fails(&tree, &["get", "disco/server/uri"], "");
    ok(&tree, &["delete", "empty"], "");
    let err = fails(&tree, &["delete", "disco"], "");
    assert_eq!(
        err,
        format!(
            "error: parameter 'disco' in {} is a directory that is not empty; delete it recursively",
            tree.display()
        )
    );
    assert!(
        tree.join("disco/client/cmds/rsync").is_file(),
        "nothing deleted"
    );
    ok(&tree, &["delete", "disco", "-r"], "");
    assert_eq!(ok(&tree, &["dump"], ""), "");
    let err = fails(&tree, &["delete", "disco"], "");
    assert!(err.starts_with("error: no parameter 'disco' in "), "{err}");
}

#[test]
fn values_keep_inner_spaces_and_newlines() {
    let dir = TempDir::new("param-values");
    let tree = dir.path().join("parameters");
    ok(&tree, &["set", "v", "  two  spaces  "], "");
    assert_eq!(ok(&tree, &["get", "v"], ""), "  two  spaces  \n");
    // Only one trailing newline is trimmed, by `set` from stdin and again by every read.
    ok(&tree, &["set", "lines"], "one\n\ntwo\n\n");
    assert_eq!(
        std::fs::read_to_string(tree.join("lines")).unwrap(),
        "one\n\ntwo\n\n"
    );
    assert_eq!(ok(&tree, &["get", "lines"], ""), "one\n\ntwo\n\n");
    let json: serde_json::Value = serde_json::from_str(&ok(&tree, &["json"], "")).unwrap();
    assert_eq!(json["lines"], "one\n\ntwo\n");
    // A file written by hand without a newline reads the same.
    std::fs::write(tree.join("bare"), "no newline").unwrap();
    assert_eq!(ok(&tree, &["get", "bare"], ""), "no newline\n");
    ok(&tree, &["set", "empty-value", ""], "");
    assert_eq!(ok(&tree, &["get", "empty-value"], ""), "\n");
}

#[test]
fn escaping_paths_are_refused_in_one_line() {
    let dir = TempDir::new("param-escape");
    let tree = dir.path().join("parameters");
    ok(&tree, &["set", "a", "1"], "");
    for (args, path) in [
        (&["get", "../etc/passwd"][..], "../etc/passwd"),
        (&["get", "/etc/passwd"][..], "/etc/passwd"),
        (&["set", "a/../../x", "1"][..], "a/../../x"),
        (&["delete", "..", "-r"][..], ".."),
        (&["keys", "a//b"][..], "a//b"),
        (&["dump", "./a"][..], "./a"),
    ] {
        let err = fails(&tree, args, "");
        assert!(
            err.starts_with(&format!("error: invalid parameter path '{path}': ")),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        fails(&tree, &["get", "/etc/passwd"], ""),
        "error: invalid parameter path '/etc/passwd': absolute paths are not allowed"
    );
    // `set -` checks every line before changing anything.
    let err = fails(&tree, &["set", "-"], "b=2\n../c=3\n");
    assert!(
        err.starts_with("error: invalid parameter path '../c'"),
        "{err}"
    );
    assert_eq!(
        fails(&tree, &["set", "-"], "b=2\nno equals sign\n"),
        "error: line 2 of the input: expected PATH=VALUE, found 'no equals sign'"
    );
    fails(&tree, &["get", "b"], "");
    assert!(!dir.path().join("x").exists() && !dir.path().join("c").exists());
}

#[test]
fn missing_key_is_an_error_naming_key_and_tree() {
    let dir = TempDir::new("param-missing");
    let tree = dir.path().join("parameters");
    ok(&tree, &["set", "a/v", "1"], "");
    assert_eq!(
        fails(&tree, &["get", "a/b"], ""),
        format!("error: no parameter 'a/b' in {}", tree.display())
    );
    // Below a value is missing too, not an I/O error.
    assert!(fails(&tree, &["get", "a/v/w"], "").starts_with("error: no parameter 'a/v/w' in "));
    assert!(fails(&tree, &["dump", "nope"], "").starts_with("error: no parameter 'nope' in "));
}

#[test]
fn default_tree_is_state_dir_parameters_and_env_overrides_it() {
    let dir = TempDir::new("param-default");
    let state = dir.path().join("state");
    let disco = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_disco"));
        cmd.arg("--state-dir")
            .arg(&state)
            .env_remove("DISCO_PARAMETERS");
        cmd
    };
    let out = run(disco().args(["param", "set", "k", "state"]), &[], "");
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(state.join("parameters/k")).unwrap(),
        "state\n"
    );

    let other = dir.path().join("other");
    let out = run(
        disco()
            .env("DISCO_PARAMETERS", &other)
            .args(["param", "set", "k", "env"]),
        &[],
        "",
    );
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(other.join("k")).unwrap(), "env\n");
}

#[test]
fn disco_param_alias_through_a_symlink() {
    let dir = TempDir::new("param-alias");
    let tree = dir.path().join("parameters");
    let link = dir.path().join("disco-param");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_disco"), &link).unwrap();
    ok(&tree, &["set", "-"], SEED_LINES);

    let out = run(Command::new(&link).arg("--tree").arg(&tree), &["dump"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), SEED_DUMP);

    // As templates call it inside a dance: the tree comes from DISCO_PARAMETERS.
    let out = Command::new(&link)
        .args(["get", "disco/server/uri"])
        .env("DISCO_PARAMETERS", &tree)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "disco@aklabs.net\n");

    let out = Command::new(&link)
        .args(["get", "disco/nope"])
        .env("DISCO_PARAMETERS", &tree)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .starts_with("error: no parameter 'disco/nope'"));
}

#[test]
fn merge_later_layers_win() {
    let dir = TempDir::new("param-merge");
    let module_a = dir.path().join("modules/a/parameters");
    let module_b = dir.path().join("modules/b/parameters");
    let source = dir.path().join("source/parameters");
    let missing = dir.path().join("modules/c/parameters");
    ok(
        &module_a,
        &["set", "-"],
        "a/port=80\na/name=default\nshared=from a\nbecomes-dir=value\nbecomes-value/x=1\n",
    );
    ok(&module_b, &["set", "-"], "b/x=1\nshared=from b\n");
    ok(
        &source,
        &["set", "-"],
        "a/port=8080\nbecomes-dir/now=dir\nbecomes-value=value\nnode/parameters/something=LOL\n",
    );
    let merged = dir.path().join("merged");
    host::params::merge(&[&module_a, &missing, &module_b, &source], &merged).unwrap();
    assert_eq!(
        ok(&merged, &["dump"], ""),
        "\
a = {}
a/name = default
a/port = 8080
b = {}
b/x = 1
becomes-dir = {}
becomes-dir/now = dir
becomes-value = value
node = {}
node/parameters = {}
node/parameters/something = LOL
shared = from b
"
    );
    // The layers themselves are untouched.
    assert_eq!(ok(&module_a, &["get", "a/port"], ""), "80\n");
}

#[test]
fn library_api_round_trip() {
    use host::params::{KeyPath, Tree, Value};
    let dir = TempDir::new("param-lib");
    let tree = Tree::open(dir.path().join("t")).unwrap();
    let key = KeyPath::parse("x/y").unwrap();
    tree.set(&key, "v").unwrap();
    assert_eq!(tree.get(&key).unwrap(), Value::Text("v".into()));
    assert_eq!(tree.get(&KeyPath::parse("x").unwrap()).unwrap(), Value::Dir);
    assert_eq!(tree.keys(&KeyPath::root()).unwrap(), vec!["x".to_owned()]);
    assert_eq!(
        tree.dump(None).unwrap(),
        vec![
            ("x".to_owned(), None),
            ("x/y".to_owned(), Some("v".to_owned()))
        ]
    );
    // No temporary file is left beside a written value.
    assert_eq!(
        std::fs::read_dir(dir.path().join("t/x")).unwrap().count(),
        1
    );
    assert!(tree.delete(&KeyPath::root(), true).is_err());
    assert!(Tree::open(dir.path().join("t/x/y")).is_err());
}
