//! `disco validate`: checks a fix module or a disco ball against the Survivor fix module
//! specification, rule by rule, for module authors.
//!
//! [`target`] decides what a path is (a fix module's script, its source directory, or a disco
//! ball); [`statics`] reads a fix module without running it (rules 1, 3, 4); [`ball`] checks a
//! ball's layout, `requires` and pieces; [`dynamic`] runs a fix module through the fix-module
//! host in a noop sandbox (rules 1, 2, 7, 8, 9). Every check yields [`Finding`]s.

pub mod ball;
pub mod dynamic;
mod finding;
pub mod statics;
pub mod target;

pub use dynamic::RunOptions;
pub use finding::Finding;
pub use target::Target;

/// Validates `target`: the static checks always, the dynamic ones when `run` is given (for a
/// fix module; a ball's pieces are scripts, not fix modules).
pub fn validate(
    target: &Target,
    source: Option<&std::path::Path>,
    run: Option<&RunOptions>,
) -> Vec<Finding> {
    match target {
        Target::Module(m) => {
            let mut findings = statics::check(m);
            // A module that cannot even be started says so statically; running it adds noise.
            let startable = !findings.iter().any(|f| f.rule == "3");
            if let (Some(opts), true) = (run, startable) {
                findings.extend(dynamic::check(m, opts));
            }
            findings
        }
        Target::Ball(dir) => ball::check(dir, source),
    }
}
