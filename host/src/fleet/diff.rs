//! The noop reports of many nodes, aggregated: every changed path with how many nodes change it
//! identically (the same kind, the same md5, mode, owner and link target before and after) and
//! which nodes do otherwise; failed modules grouped the same way, by reason.

use std::collections::BTreeMap;

use serde::Serialize;

use super::reports::{NodeReports, PathChange, Side};

/// One way a path changes, and the nodes that change it so.
#[derive(Clone, Debug, Serialize)]
pub struct Variant {
    /// `created`, `modified` or `deleted`.
    pub kind: String,
    /// What distinguishes it: `md5 a => b`, `mode 0644 => 0600`...
    pub what: String,
    /// The nodes, sorted.
    pub nodes: Vec<String>,
}

/// A path and every way nodes change it, the most common first.
#[derive(Clone, Debug, Serialize)]
pub struct PathGroup {
    /// The path.
    pub path: String,
    /// The ways, most nodes first.
    pub variants: Vec<Variant>,
}

/// A module that failed, with its reason and nodes.
#[derive(Clone, Debug, Serialize)]
pub struct FailedGroup {
    /// The module.
    pub module: String,
    /// Why it failed.
    pub reason: String,
    /// Where.
    pub nodes: Vec<String>,
}

/// The fleet's noop diff.
#[derive(Clone, Debug, Serialize)]
pub struct FleetDiff {
    /// Nodes whose newest noop report was read.
    pub nodes: Vec<String>,
    /// Nodes without a noop report.
    pub without_noop: Vec<String>,
    /// Every changed path, sorted.
    pub paths: Vec<PathGroup>,
    /// Failed modules, grouped by module and reason.
    pub failed: Vec<FailedGroup>,
}

fn side(s: &Option<Side>) -> String {
    match s {
        None => "-".into(),
        Some(s) => format!(
            "{} {} {}:{}{}",
            s.md5.as_deref().unwrap_or("-"),
            s.mode,
            s.owner,
            s.group,
            s.link_target
                .as_deref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default()
        ),
    }
}

/// What tells one way a path changes from another, shown shortest: the md5s when they differ.
fn describe(c: &PathChange) -> String {
    let md5 = |s: &Option<Side>| {
        s.as_ref()
            .and_then(|s| s.md5.clone())
            .unwrap_or_else(|| "-".into())
    };
    let mut parts = vec![format!("md5 {} => {}", md5(&c.before), md5(&c.after))];
    let attrs = |s: &Option<Side>| {
        s.as_ref()
            .map(|s| format!("{} {}:{}", s.mode, s.owner, s.group))
    };
    if attrs(&c.before) != attrs(&c.after) {
        parts.push(format!(
            "perms {} => {}",
            attrs(&c.before).unwrap_or_else(|| "-".into()),
            attrs(&c.after).unwrap_or_else(|| "-".into())
        ));
    }
    let target = |s: &Option<Side>| s.as_ref().and_then(|s| s.link_target.clone());
    if target(&c.after).is_some() || target(&c.before).is_some() {
        parts.push(format!(
            "target {} => {}",
            target(&c.before).unwrap_or_else(|| "-".into()),
            target(&c.after).unwrap_or_else(|| "-".into())
        ));
    }
    parts.join(", ")
}

/// The ways nodes change one path: (kind, both sides in full) → (shown, nodes).
type Ways = BTreeMap<(String, String), (String, Vec<String>)>;

/// Aggregates the newest noop report of each node.
pub fn fleet_diff(nodes: &[NodeReports], skipped: &mut Vec<super::FleetError>) -> FleetDiff {
    let mut by_path: BTreeMap<String, Ways> = BTreeMap::new();
    let mut failed: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut read = Vec::new();
    let mut without = Vec::new();
    for n in nodes {
        let Some(r) = n.newest(true, skipped) else {
            without.push(n.node.clone());
            continue;
        };
        read.push(n.node.clone());
        for m in &r.modules {
            if m.status == "failed" {
                failed
                    .entry((m.name.clone(), m.reason.clone().unwrap_or_default()))
                    .or_default()
                    .push(n.node.clone());
            }
            for c in &m.paths {
                let identity = format!("{} | {}", side(&c.before), side(&c.after));
                by_path
                    .entry(c.path.clone())
                    .or_default()
                    .entry((c.kind.clone(), identity))
                    .or_insert_with(|| (describe(c), Vec::new()))
                    .1
                    .push(n.node.clone());
            }
        }
    }
    let paths = by_path
        .into_iter()
        .map(|(path, ways)| {
            let mut variants: Vec<Variant> = ways
                .into_iter()
                .map(|((kind, _), (what, mut nodes))| {
                    nodes.sort();
                    Variant { kind, what, nodes }
                })
                .collect();
            // The nodes whose noop leaves the path alone differ from the others too.
            let mut untouched: Vec<String> = read
                .iter()
                .filter(|n| !variants.iter().any(|v| v.nodes.contains(n)))
                .cloned()
                .collect();
            if !untouched.is_empty() {
                untouched.sort();
                variants.push(Variant {
                    kind: "unchanged".into(),
                    what: "no change".into(),
                    nodes: untouched,
                });
            }
            variants.sort_by(|a, b| {
                b.nodes
                    .len()
                    .cmp(&a.nodes.len())
                    .then(a.nodes.cmp(&b.nodes))
            });
            PathGroup { path, variants }
        })
        .collect();
    FleetDiff {
        nodes: read,
        without_noop: without,
        paths,
        failed: failed
            .into_iter()
            .map(|((module, reason), mut nodes)| {
                nodes.sort();
                FailedGroup {
                    module,
                    reason,
                    nodes,
                }
            })
            .collect(),
    }
}

fn capitalised(kind: &str) -> String {
    let mut c = kind.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

impl FleetDiff {
    /// One line per path (`/etc/ntp.conf : Modified on 180 nodes (md5 a => b); on 3 nodes
    /// otherwise: n1, n2, n3`), then one per failed module.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for p in &self.paths {
            let Some((first, rest)) = p.variants.split_first() else {
                continue;
            };
            out.push_str(&format!(
                "{} : {} on {} node{} ({})",
                p.path,
                capitalised(&first.kind),
                first.nodes.len(),
                if first.nodes.len() == 1 { "" } else { "s" },
                first.what
            ));
            let others: Vec<&String> = rest.iter().flat_map(|v| &v.nodes).collect();
            if !others.is_empty() {
                out.push_str(&format!(
                    "; on {} node{} otherwise: {}",
                    others.len(),
                    if others.len() == 1 { "" } else { "s" },
                    others
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            out.push('\n');
        }
        for f in &self.failed {
            out.push_str(&format!(
                "module {} failed on {} node{}: {} ({})\n",
                f.module,
                f.nodes.len(),
                if f.nodes.len() == 1 { "" } else { "s" },
                f.nodes.join(", "),
                f.reason
            ));
        }
        if !self.without_noop.is_empty() {
            out.push_str(&format!(
                "no noop report from: {}\n",
                self.without_noop.join(", ")
            ));
        }
        out
    }
}
