//! `dance::order`: requires files, pulled-in modules, ties by name, cycles and missing modules.

mod util;

use std::collections::BTreeMap;
use std::path::Path;

use host::dance::order::{modules_dir_lookup, order, Order, OrderError, Requirement, Requires};

/// Orders `wanted` over a site given as `(module, requires text)`.
fn order_site(site: &[(&str, &str)], wanted: &[&str]) -> Result<Order, OrderError> {
    let site: BTreeMap<&str, &str> = site.iter().copied().collect();
    let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
    order("node.example", &wanted, |name| {
        site.get(name)
            .map(|text| Requires::parse(text, &Path::new("modules").join(name).join("requires")))
            .transpose()
    })
}

fn names(site: &[(&str, &str)], wanted: &[&str]) -> Vec<String> {
    order_site(site, wanted).unwrap().modules
}

#[test]
fn seed_example_runs_testmodule_first() {
    let site = [
        ("othermodule-3.2", "testmodule-1.0\n"),
        ("testmodule-1.0", ""),
    ];
    assert_eq!(
        names(&site, &["othermodule-3.2", "testmodule-1.0"]),
        ["testmodule-1.0", "othermodule-3.2"]
    );
}

#[test]
fn after_before_and_comment_forms() {
    let text = "# a comment\n\n  base  \nafter lib # trailing comment\nbefore app\n\t\n";
    let requires = Requires::parse(text, Path::new("r")).unwrap();
    assert_eq!(
        requires.entries,
        [
            Requirement::After("base".into()),
            Requirement::After("lib".into()),
            Requirement::Before("app".into()),
        ]
    );
    let site = [("mid", text), ("base", ""), ("lib", ""), ("app", "")];
    // `mid` pulls in all three; base and lib before it, app after it.
    let order = order_site(&site, &["mid"]).unwrap();
    assert_eq!(order.modules, ["base", "lib", "mid", "app"]);
    assert_eq!(
        order.after["mid"].iter().collect::<Vec<_>>(),
        ["base", "lib"]
    );
    assert_eq!(order.after["app"].iter().collect::<Vec<_>>(), ["mid"]);
    assert!(order.after["base"].is_empty());
}

#[test]
fn required_modules_are_pulled_in_transitively() {
    let site = [
        ("web", "php\n"),
        ("php", "after libc\n"),
        ("libc", ""),
        ("unused", ""),
    ];
    assert_eq!(names(&site, &["web"]), ["libc", "php", "web"]);
}

#[test]
fn ties_are_broken_by_name() {
    let site = [("d", ""), ("c", ""), ("b", "a"), ("a", ""), ("z", "")];
    assert_eq!(
        names(&site, &["z", "d", "c", "b"]),
        ["a", "b", "c", "d", "z"]
    );
    // Not just alphabetical: a ready module with a small name goes before a later big one.
    let site = [("a", "y"), ("y", ""), ("b", "")];
    assert_eq!(names(&site, &["a", "b"]), ["b", "y", "a"]);
}

#[test]
fn empty_requires_does_not_drop_a_module() {
    // The original lost modules whose `requires` was empty (or only comments).
    let site = [
        ("alone", ""),
        ("commented", "# nothing\n\n"),
        ("x", "alone"),
    ];
    assert_eq!(
        names(&site, &["commented", "x", "alone"]),
        ["alone", "commented", "x"]
    );
    assert_eq!(names(&[("solo", "")], &["solo"]), ["solo"]);
}

#[test]
fn duplicates_are_harmless() {
    let site = [("a", "b\nafter b\nb\n"), ("b", "before a\n")];
    let order = order_site(&site, &["a", "a", "b"]).unwrap();
    assert_eq!(order.modules, ["b", "a"]);
}

#[test]
fn three_cycle_is_printed() {
    let site = [("b", "c\n"), ("a", "b\n"), ("c", "a\n"), ("z", "")];
    let err = order_site(&site, &["z", "a"]).unwrap_err();
    assert_eq!(err.to_string(), "module dependency cycle: a -> b -> c -> a");
    // The same cycle made with `before`.
    // (`X before Y` reads "Y requires X", so each arrow is one `before` line read backwards.)
    let site = [
        ("a", "before c\n"),
        ("b", "before a\n"),
        ("c", "before b\n"),
    ];
    assert_eq!(
        order_site(&site, &["c"]).unwrap_err().to_string(),
        "module dependency cycle: a -> b -> c -> a"
    );
}

#[test]
fn cycle_downstream_modules_are_not_reported_as_the_cycle() {
    // `a` waits on the cycle but is not part of it.
    let site = [("a", "m\n"), ("m", "n\n"), ("n", "m\n")];
    assert_eq!(
        order_site(&site, &["a"]).unwrap_err().to_string(),
        "module dependency cycle: m -> n -> m"
    );
}

#[test]
fn self_require_is_a_cycle() {
    let site = [("a", "a\n")];
    let err = order_site(&site, &["a"]).unwrap_err();
    assert_eq!(err.to_string(), "module dependency cycle: a -> a");
    assert!(matches!(err, OrderError::Cycle { cycle } if cycle == ["a", "a"]));
}

#[test]
fn missing_module_names_who_wanted_it() {
    let site = [("a", "b\n"), ("b", "after ghost\n")];
    assert_eq!(
        order_site(&site, &["a"]).unwrap_err().to_string(),
        "module 'ghost' required by 'b' not found"
    );
    assert_eq!(
        order_site(&site, &["nope"]).unwrap_err().to_string(),
        "module 'nope' listed for node node.example not found"
    );
}

#[test]
fn malformed_lines_name_file_and_line() {
    for (text, line, why) in [
        ("ok\nafter\n", 2, "expected a module name after it"),
        ("a b c\n", 1, "expected NAME, 'after NAME' or 'before NAME'"),
        (
            "# c\n\nbefore x y\n",
            3,
            "expected NAME, 'after NAME' or 'before NAME'",
        ),
        (
            "../etc\n",
            1,
            "a module name may hold only letters, digits, '_', '-' and '.'",
        ),
    ] {
        let err = Requires::parse(text, Path::new("modules/m/requires")).unwrap_err();
        let bad = text.lines().nth(line - 1).unwrap().trim();
        assert_eq!(
            err.to_string(),
            format!("modules/m/requires:{line}: malformed requires line '{bad}': {why}")
        );
    }
    // Through `order`, the error stops everything just the same.
    let site = [("a", "after\n")];
    assert!(matches!(
        order_site(&site, &["a"]),
        Err(OrderError::Malformed { line: 1, .. })
    ));
}

#[test]
fn modules_dir_lookup_reads_a_local_source() {
    let dir = util::TempDir::new("order-dir");
    let modules = dir.path().join("modules");
    for (name, requires) in [
        ("othermodule-3.2", Some("testmodule-1.0\n")),
        ("testmodule-1.0", None),
        ("empty-1.0", Some("")),
    ] {
        std::fs::create_dir_all(modules.join(name)).unwrap();
        if let Some(text) = requires {
            std::fs::write(modules.join(name).join("requires"), text).unwrap();
        }
    }
    let wanted = ["othermodule-3.2".to_owned(), "empty-1.0".to_owned()];
    let got = order("localhost", &wanted, modules_dir_lookup(&modules)).unwrap();
    assert_eq!(
        got.modules,
        ["empty-1.0", "testmodule-1.0", "othermodule-3.2"]
    );
    let err = order(
        "localhost",
        &["../modules".to_owned()],
        modules_dir_lookup(&modules),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "module '../modules' listed for node localhost not found"
    );
}
