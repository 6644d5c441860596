//! The order a node's modules run in: each module's `requires` file adds edges, required
//! modules are pulled in transitively, and the result is a topological order with ties broken
//! by name, so the same site always runs the same way.
//!
//! A `requires` file holds one requirement a line:
//! - `NAME` or `after NAME`: NAME runs first (and is pulled in);
//! - `before NAME`: this module runs first, and NAME is pulled in;
//! - blank lines and `#` comments (whole-line or trailing) are ignored.
//!
//! Every error here (a malformed line, a module that cannot be found, a cycle) comes out of
//! [`order`] before any module has run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::params::is_valid_component;

/// One line of a `requires` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `NAME` or `after NAME`: NAME runs before this module.
    After(String),
    /// `before NAME`: this module runs before NAME, and NAME is pulled in.
    Before(String),
}

impl Requirement {
    /// The module this requirement names.
    pub fn module(&self) -> &str {
        match self {
            Requirement::After(name) | Requirement::Before(name) => name,
        }
    }
}

/// A module's parsed `requires` file (empty when the module has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requires {
    /// The requirements, in file order.
    pub entries: Vec<Requirement>,
}

impl Requires {
    /// Parses the text of a `requires` file; `file` only names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Requires, OrderError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
            if line.is_empty() {
                continue;
            }
            let malformed = |why| OrderError::Malformed {
                file: file.to_path_buf(),
                line: i + 1,
                text: raw.trim().to_owned(),
                why,
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            let entry = match words.as_slice() {
                ["after" | "before"] => return Err(malformed("expected a module name after it")),
                ["after", name] => Requirement::After((*name).to_owned()),
                ["before", name] => Requirement::Before((*name).to_owned()),
                [name] => Requirement::After((*name).to_owned()),
                _ => return Err(malformed("expected NAME, 'after NAME' or 'before NAME'")),
            };
            // A module name becomes a directory name: nothing that could climb out of one.
            if !is_valid_component(entry.module()) {
                return Err(malformed(
                    "a module name may hold only letters, digits, '_', '-' and '.'",
                ));
            }
            entries.push(entry);
        }
        Ok(Requires { entries })
    }

    /// Reads and parses a `requires` file; a missing file is an empty one (the file is optional).
    pub fn read(file: &Path) -> Result<Requires, OrderError> {
        match std::fs::read_to_string(file) {
            Ok(text) => Requires::parse(&text, file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Requires::default()),
            Err(source) => Err(OrderError::Read {
                path: file.to_path_buf(),
                source,
            }),
        }
    }
}

/// Why no order could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// A `requires` line that is none of the accepted forms.
    #[error("{}:{line}: malformed requires line '{text}': {why}", file.display())]
    Malformed {
        /// The `requires` file.
        file: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// The line, trimmed.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A `requires` file that exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A module listed for the node that does not exist in the source.
    #[error("module '{module}' listed for node {node} not found")]
    NotListed {
        /// The module.
        module: String,
        /// The node whose list names it.
        node: String,
    },
    /// A module that another module requires and that does not exist in the source.
    #[error("module '{module}' required by '{required_by}' not found")]
    NotFound {
        /// The module.
        module: String,
        /// The module whose `requires` names it.
        required_by: String,
    },
    /// The requirements form a cycle; each arrow reads "requires" (runs after).
    #[error("module dependency cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// The modules of the cycle, the first repeated at the end (`a -> b -> a`).
        cycle: Vec<String>,
    },
    /// The lookup function failed for another reason (a fetch, say).
    #[error("cannot look up module '{module}': {source}")]
    Lookup {
        /// The module.
        module: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The modules in the order they run, and what each one waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Every module to run, the node's list and everything pulled in, in order.
    pub modules: Vec<String>,
    /// For each module, the modules that must run (and succeed) before it: those it names with
    /// `NAME`/`after NAME`, and those that name it with `before`.
    pub after: BTreeMap<String, BTreeSet<String>>,
}

/// Orders `wanted` (the node's module list) and every module they pull in, transitively.
///
/// `requires_of(name)` returns the module's requirements (`Requires::default()` for a module
/// without a `requires` file) or `None` when no such module exists; it is called once per
/// module. `node` only names the node in errors. Ties are broken by name.
pub fn order(
    node: &str,
    wanted: &[String],
    mut requires_of: impl FnMut(&str) -> Result<Option<Requires>, OrderError>,
) -> Result<Order, OrderError> {
    // Discover every module first (breadth-first, so the error names the nearest requirer).
    let mut queue: VecDeque<(String, Option<String>)> = VecDeque::new();
    let mut queued = HashSet::new();
    for name in wanted {
        if queued.insert(name.clone()) {
            queue.push_back((name.clone(), None));
        }
    }
    let mut found: Vec<(String, Requires)> = Vec::new();
    while let Some((name, required_by)) = queue.pop_front() {
        let Some(requires) = requires_of(&name)? else {
            return Err(match required_by {
                Some(required_by) => OrderError::NotFound {
                    module: name,
                    required_by,
                },
                None => OrderError::NotListed {
                    module: name,
                    node: node.to_owned(),
                },
            });
        };
        for entry in &requires.entries {
            if queued.insert(entry.module().to_owned()) {
                queue.push_back((entry.module().to_owned(), Some(name.clone())));
            }
        }
        found.push((name, requires));
    }

    // Every module is a node, whether or not it has requirements (the original lost modules
    // with an empty `requires`); an edge u -> v means u runs before v.
    let mut graph: DiGraph<String, ()> = DiGraph::new();
    let mut index: HashMap<String, NodeIndex> = HashMap::new();
    for (name, _) in &found {
        index.insert(name.clone(), graph.add_node(name.clone()));
    }
    for (name, requires) in &found {
        let this = index[name];
        for entry in &requires.entries {
            let other = index[entry.module()];
            match entry {
                Requirement::After(_) => graph.update_edge(other, this, ()),
                Requirement::Before(_) => graph.update_edge(this, other, ()),
            };
        }
    }

    // Kahn's algorithm with the ready set ordered by name: deterministic, ties by name.
    let mut waiting: HashMap<NodeIndex, usize> = graph
        .node_indices()
        .map(|n| (n, graph.neighbors_directed(n, Direction::Incoming).count()))
        .collect();
    let mut ready: BTreeSet<(&str, NodeIndex)> = waiting
        .iter()
        .filter(|(_, &count)| count == 0)
        .map(|(&n, _)| (graph[n].as_str(), n))
        .collect();
    let mut modules = Vec::with_capacity(graph.node_count());
    while let Some((name, n)) = ready.pop_first() {
        modules.push(name.to_owned());
        for next in graph.neighbors_directed(n, Direction::Outgoing) {
            let count = waiting.get_mut(&next).expect("every node has a count");
            *count -= 1;
            if *count == 0 {
                ready.insert((graph[next].as_str(), next));
            }
        }
    }
    if modules.len() < graph.node_count() {
        return Err(OrderError::Cycle {
            cycle: find_cycle(&graph),
        });
    }

    let after = graph
        .node_indices()
        .map(|n| {
            let before = graph
                .neighbors_directed(n, Direction::Incoming)
                .map(|p| graph[p].clone())
                .collect();
            (graph[n].clone(), before)
        })
        .collect();
    Ok(Order { modules, after })
}

/// A lookup for [`order`] over a local source's `modules/` directory: a module exists when
/// `DIR/NAME` is a directory, and its requirements are in `DIR/NAME/requires`.
pub fn modules_dir_lookup(
    dir: &Path,
) -> impl FnMut(&str) -> Result<Option<Requires>, OrderError> + '_ {
    move |name| {
        if !is_valid_component(name) {
            return Ok(None);
        }
        let module = dir.join(name);
        if !module.is_dir() {
            return Ok(None);
        }
        Requires::read(&module.join("requires")).map(Some)
    }
}

/// A cycle of a graph that has one, in "requires" direction (against the edges), starting and
/// ending at the smallest name that lies on a cycle; the shortest such cycle, ties by name.
fn find_cycle(graph: &DiGraph<String, ()>) -> Vec<String> {
    let start = petgraph::algo::tarjan_scc(graph)
        .into_iter()
        .filter(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
        .flat_map(|scc| {
            scc.into_iter()
                .map(|n| (graph[n].clone(), n))
                .collect::<Vec<_>>()
        })
        .min()
        .map(|(_, n)| n)
        .expect("a graph Kahn's algorithm could not finish has a cycle");
    // Breadth-first from `start` along "requires" (incoming edges) back to `start`.
    let requires = |n: NodeIndex| {
        let mut next: Vec<NodeIndex> = graph.neighbors_directed(n, Direction::Incoming).collect();
        next.sort_by(|a, b| graph[*a].cmp(&graph[*b]));
        next
    };
    let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for next in requires(n) {
            if next == start {
                // `n` requires `start`: the cycle is start -> ... -> n -> start.
                let mut back = vec![n];
                let mut at = n;
                while at != start {
                    at = parent[&at];
                    back.push(at);
                }
                back.reverse();
                back.push(start);
                return back.into_iter().map(|n| graph[n].clone()).collect();
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(next) {
                e.insert(n);
                queue.push_back(next);
            }
        }
    }
    unreachable!("the start of a strongly connected cycle reaches itself")
}
