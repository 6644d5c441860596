//! What a dance runs, gathered: the source's parameters and the node's modules fetched
//! (`fetch`), then whatever they pull in, each fetch a step, in the order of their `requires`
//! (`order`).

use std::collections::BTreeMap;
use std::path::Path;

use super::fetch::{FetchError, Fetched, Fetcher, Source};
use super::order::{self, Requires};
use super::report::{self, Step, Usage};
use super::run::DanceOptions;
use super::DanceError;
use crate::params::{KeyPath, Tree, Value};

/// A client parameter's value (`client` is `STATE/parameters`), if it is set and readable.
pub fn client_value(client: &Path, key: &str) -> Option<String> {
    let tree = Tree::open(client).ok()?;
    match tree.get(&KeyPath::parse(key).ok()?).ok()? {
        Value::Text(t) => Some(t),
        Value::Dir => None,
    }
}

fn usage_of(f: &Fetched) -> Usage {
    // A local source ran nothing: only the wall time.
    let mut usage = f.rusage.unwrap_or_default();
    usage.real = f.elapsed;
    usage
}

/// Each module's fetch, by name: what was fetched, or why it failed (which fails the module).
pub(super) type FetchResults = BTreeMap<String, Result<Fetched, FetchError>>;

/// Records a module's fetch as a step and keeps its result.
fn record(
    fetched: &mut FetchResults,
    steps: &mut Vec<Step>,
    name: &str,
    r: Result<Fetched, FetchError>,
) {
    let step = match &r {
        Ok(f) => Step::new(name, "fetch", None, usage_of(f), true),
        Err(e) => {
            // A failed rsync was measured too.
            let usage = e.usage().map_or(Usage::default(), |(u, _)| u);
            Step::new(name, "fetch", None, usage, false)
        }
    };
    steps.push(step);
    fetched.insert(name.to_owned(), r);
}

/// The parameters and the modules fetched, in order.
pub(super) struct Gathered {
    pub(super) params: Fetched,
    pub(super) fetched: FetchResults,
    pub(super) order: order::Order,
}

/// Fetches the source's parameters and the node's modules (then whatever they pull in), each
/// fetch a step, and orders them by their `requires`.
pub(super) fn gather(opts: &DanceOptions, steps: &mut Vec<Step>) -> Result<Gathered, DanceError> {
    let client = opts.state_dir.join("parameters");
    let source_text = opts
        .source
        .clone()
        .or_else(|| client_value(&client, "disco/server/uri"))
        .ok_or_else(|| DanceError::NoSource(client.clone()))?;
    let source: Source = source_text.parse()?;
    let fetcher = Fetcher::new(
        source.clone(),
        client_value(&client, "disco/client/cmds/rsync").as_deref(),
        opts.state_dir.join("cache"),
        opts.jobs,
    )?
    .for_node(&opts.node)?;

    let params = fetcher.fetch_params()?;
    steps.push(Step::new(
        report::INTERNAL,
        "fetch_params",
        None,
        usage_of(&params),
        true,
    ));
    let source_tree = Tree::open(&params.path)?;
    let node_modules = KeyPath::parse(&format!("{}/modules", opts.node))?;
    let wanted = source_tree
        .keys(&node_modules)
        .map_err(|_| DanceError::NoModules {
            node: opts.node.clone(),
            from: source.to_string(),
        })?;

    // Fetch the listed modules in parallel, then whatever they pull in, one by one.
    let mut fetched = FetchResults::new();
    for (name, r) in wanted.iter().zip(fetcher.fetch_modules(&wanted)) {
        record(&mut fetched, steps, name, r);
    }
    let local = matches!(source, Source::Local(_));
    let order = {
        let mut lookup = |name: &str| -> Result<Option<Requires>, order::OrderError> {
            if !fetched.contains_key(name) {
                if local {
                    if let Source::Local(dir) = &source {
                        if !dir.join("modules").join(name).is_dir() {
                            return Ok(None);
                        }
                    }
                }
                let r = fetcher
                    .fetch_modules(&[name.to_owned()])
                    .pop()
                    .expect("one result per module");
                record(&mut fetched, steps, name, r);
            }
            match &fetched[name] {
                Ok(f) => Requires::read(&f.path.join("requires")).map(Some),
                // For a local source, a module that is not there cannot be found.
                Err(_) if local => Ok(None),
                // A failed fetch fails that module, when its turn comes.
                Err(_) => Ok(Some(Requires::default())),
            }
        };
        order::order(&opts.node, &wanted, &mut lookup)?
    };
    fetcher.prune();
    Ok(Gathered {
        params,
        fetched,
        order,
    })
}
