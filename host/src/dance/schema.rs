//! The report as JSON, in the one documented, versioned schema (`doc/report.schema.json`) that
//! `disco dance --format json`, `disco report --format json` and `disco diff --format json`
//! share: every change with its path, kind and both sides, every trapped and deferred command,
//! every step with its start offset, duration, rusage, ReturnCode and violations, and named
//! totals. Times are milliseconds. The text output (the seed's format) is not this.

use serde::Serialize;

use super::report::{DanceReport, ModuleStatus, Step};
use crate::diff::{Change, ChangeKind, Content, Meta};

/// The schema's version: a consumer checks `schema_version` before reading anything else.
pub const VERSION: u32 = 1;

/// Whole milliseconds of a duration.
fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One side of a change: what the path was (`before`) or is (`after`).
#[derive(Serialize)]
struct Side<'a> {
    #[serde(rename = "type")]
    file_type: &'a str,
    mode: String,
    uid: u32,
    gid: u32,
    owner: &'a str,
    group: &'a str,
    size: u64,
    md5: Option<&'a str>,
    selinux: Option<&'a str>,
    link_target: Option<&'a str>,
    xattrs: &'a std::collections::BTreeMap<String, String>,
}

impl<'a> Side<'a> {
    fn of(m: &'a Meta) -> Side<'a> {
        Side {
            file_type: m.file_type.stat_name(),
            mode: format!("{:04o}", m.mode & 0o7777),
            uid: m.uid,
            gid: m.gid,
            owner: &m.owner,
            group: &m.group,
            size: m.size,
            md5: m.md5.as_deref(),
            selinux: m.selinux.as_deref(),
            link_target: m.target.as_deref(),
            xattrs: &m.xattrs,
        }
    }
}

/// A content change: a bounded text diff, or why there is none.
#[derive(Serialize)]
struct ContentJson<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
}

/// One changed path.
#[derive(Serialize)]
struct PathJson<'a> {
    path: String,
    kind: &'static str,
    before: Option<Side<'a>>,
    after: Option<Side<'a>>,
    content: ContentJson<'a>,
}

impl<'a> PathJson<'a> {
    /// `c` as the schema gives it; without `texts`, a text diff is left out (kind `omitted`,
    /// its length in bytes as `size`): the sides' md5s still say what changed.
    fn of(c: &'a Change, texts: bool) -> PathJson<'a> {
        PathJson {
            path: c.path.to_string_lossy().into_owned(),
            kind: match c.kind {
                ChangeKind::Created => "created",
                ChangeKind::Modified => "modified",
                ChangeKind::Deleted => "deleted",
            },
            before: c.old.as_ref().map(Side::of),
            after: c.new.as_ref().map(Side::of),
            content: match &c.content {
                Content::None => ContentJson {
                    kind: "none",
                    diff: None,
                    size: None,
                },
                Content::Text(t) if texts => ContentJson {
                    kind: "text",
                    diff: Some(t),
                    size: None,
                },
                Content::Text(t) => ContentJson {
                    kind: "omitted",
                    diff: None,
                    size: Some(t.len() as u64),
                },
                Content::Binary => ContentJson {
                    kind: "binary",
                    diff: None,
                    size: None,
                },
                Content::TooLarge(n) => ContentJson {
                    kind: "too_large",
                    diff: None,
                    size: Some(*n),
                },
                Content::Private(_) => ContentJson {
                    kind: "private",
                    diff: None,
                    size: None,
                },
            },
        }
    }
}

/// Created, modified and deleted paths.
#[derive(Serialize, Default, Clone, Copy)]
struct Counts {
    created: usize,
    modified: usize,
    deleted: usize,
}

impl Counts {
    fn of(c: (usize, usize, usize)) -> Counts {
        Counts {
            created: c.0,
            modified: c.1,
            deleted: c.2,
        }
    }
}

#[derive(Serialize)]
struct Rusage {
    user_ms: u64,
    sys_ms: u64,
    mem_max_kb: u64,
    faults_major: u64,
    faults_minor: u64,
    io_in: u64,
    io_out: u64,
    signals: u64,
}

#[derive(Serialize)]
struct StepJson<'a> {
    module: &'a str,
    step: &'a str,
    item: Option<&'a str>,
    start_ms: u64,
    duration_ms: u64,
    ok: bool,
    exit: Option<i32>,
    return_code: Option<u16>,
    return_code_name: Option<&'a str>,
    violations: &'a [String],
    would_connect: &'a [String],
    trapped: &'a [String],
    rusage: Rusage,
    cgroup: Option<&'a super::report::StepCgroup>,
}

impl<'a> StepJson<'a> {
    fn of(s: &'a Step, dance_start_ms: u64) -> StepJson<'a> {
        let u = &s.usage;
        StepJson {
            module: &s.module,
            step: &s.step,
            item: s.item.as_deref(),
            start_ms: s.start_unix_ms.saturating_sub(dance_start_ms),
            duration_ms: ms(u.real),
            ok: s.ok,
            exit: s.exit,
            return_code: s.return_code,
            return_code_name: s.return_code_name.as_deref(),
            violations: &s.violations,
            would_connect: &s.would_connect,
            trapped: &s.trapped,
            cgroup: s.cgroup.as_ref(),
            rusage: Rusage {
                user_ms: ms(u.user),
                sys_ms: ms(u.sys),
                mem_max_kb: u.mem_max_kb,
                faults_major: u.faults_major,
                faults_minor: u.faults_minor,
                io_in: u.io_in,
                io_out: u.io_out,
                signals: u.signals,
            },
        }
    }
}

#[derive(Serialize)]
struct ModuleJson<'a> {
    name: &'a str,
    status: &'static str,
    reason: Option<&'a str>,
    changes: Counts,
    paths: Vec<PathJson<'a>>,
    would_execute: Vec<&'a str>,
    deferred: Vec<&'a str>,
}

#[derive(Serialize, Default)]
struct Totals {
    modules: usize,
    ok: usize,
    failed: usize,
    skipped: usize,
    created: usize,
    modified: usize,
    deleted: usize,
    would_execute: usize,
    deferred: usize,
    violations: usize,
    steps: usize,
}

#[derive(Serialize)]
struct DanceJson<'a> {
    schema_version: u32,
    kind: &'static str,
    id: &'a str,
    node: &'a str,
    noop: bool,
    ok: bool,
    started_unix_ms: u64,
    duration_ms: u64,
    totals: Totals,
    modules: Vec<ModuleJson<'a>>,
    steps: Vec<StepJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback: Option<RollbackJson<'a>>,
}

#[derive(Serialize)]
struct RollbackJson<'a> {
    possible: bool,
    dances: &'a [String],
}

/// A dance's report as one JSON document of the schema (with a final newline).
pub fn dance_json(report: &DanceReport) -> String {
    dance_json_with(report, None)
}

/// A dance's report as [`dance_json`] does it, but every text diff left out (content kind
/// `omitted`): the copy a node pushes to its server, where a fresh node's report would
/// otherwise carry every file it creates (megabytes per node), while `disco fleet` reads only
/// the md5s, modes and owners.
pub fn dance_json_without_texts(report: &DanceReport) -> String {
    render(report, None, false)
}

/// A dance's report as [`dance_json`] does it, saying which dances `disco rollback` can undo
/// (`rollbackable`, newest first) when given.
pub fn dance_json_with(report: &DanceReport, rollbackable: Option<&[String]>) -> String {
    render(report, rollbackable, true)
}

fn render(report: &DanceReport, rollbackable: Option<&[String]>, texts: bool) -> String {
    let start = report.started_unix_ms();
    let mut totals = Totals {
        steps: report.steps.len(),
        ..Totals::default()
    };
    let modules: Vec<ModuleJson> = report
        .modules
        .iter()
        .map(|m| {
            let (status, reason) = match &m.status {
                ModuleStatus::Ok => ("ok", None),
                ModuleStatus::Failed { reason } => ("failed", Some(reason.as_str())),
                ModuleStatus::Skipped { reason } => ("skipped", Some(reason.as_str())),
            };
            let trapped: Vec<&str> = report
                .steps
                .iter()
                .filter(|s| s.module == m.name)
                .flat_map(|s| s.trapped.iter().map(String::as_str))
                .collect();
            let (would_execute, deferred) = if report.noop {
                (trapped, Vec::new())
            } else {
                (Vec::new(), trapped)
            };
            totals.modules += 1;
            match status {
                "ok" => totals.ok += 1,
                "failed" => totals.failed += 1,
                _ => totals.skipped += 1,
            }
            totals.created += m.changes.0;
            totals.modified += m.changes.1;
            totals.deleted += m.changes.2;
            totals.would_execute += would_execute.len();
            totals.deferred += deferred.len();
            ModuleJson {
                name: &m.name,
                status,
                reason,
                changes: Counts::of(m.changes),
                paths: m.paths.iter().map(|c| PathJson::of(c, texts)).collect(),
                would_execute,
                deferred,
            }
        })
        .collect();
    totals.violations = report.steps.iter().map(|s| s.violations.len()).sum();
    let doc = DanceJson {
        schema_version: VERSION,
        kind: "dance",
        id: &report.id,
        node: &report.node,
        noop: report.noop,
        ok: report.ok,
        started_unix_ms: start,
        duration_ms: ms(report.duration),
        totals,
        modules,
        steps: report
            .steps
            .iter()
            .map(|s| StepJson::of(s, start))
            .collect(),
        rollback: rollbackable.map(|dances| RollbackJson {
            possible: dances.contains(&report.id),
            dances,
        }),
    };
    to_text(&doc)
}

#[derive(Serialize)]
struct DiffJson<'a> {
    schema_version: u32,
    kind: &'static str,
    run: &'a str,
    totals: Counts,
    paths: Vec<PathJson<'a>>,
}

/// A sandbox run's changes (`disco diff`) as one JSON document of the schema.
pub fn diff_json(run: &str, changes: &[Change]) -> String {
    to_text(&DiffJson {
        schema_version: VERSION,
        kind: "diff",
        run,
        totals: Counts::of(crate::diff::summary(changes)),
        paths: changes.iter().map(|c| PathJson::of(c, true)).collect(),
    })
}

fn to_text<T: Serialize>(doc: &T) -> String {
    // Plain structs of strings and numbers: serialising cannot fail.
    let mut json = serde_json::to_string_pretty(doc).unwrap_or_default();
    json.push('\n');
    json
}
