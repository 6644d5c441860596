//! `disco report --html FILE`: one self-contained page (no script, no outside resource) that
//! draws a dance as a timeline: one bar per step on a time axis, coloured by outcome, with its
//! duration, memory and ReturnCode on hover (an SVG `<title>`), and the dance's changes below.

use std::fmt::Write as _;

use super::report::{DanceReport, ModuleStatus};

/// Escapes text for HTML and SVG element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

const ROW: u64 = 22;
const LABEL: u64 = 420;
const PLOT: u64 = 760;

/// The page for `report`.
pub fn render(report: &DanceReport) -> String {
    let start = report.started_unix_ms();
    let total_ms = u64::try_from(report.duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    // Steps may end a little after the dance's own clock stopped (rounding): the axis covers both.
    let end_ms = report
        .steps
        .iter()
        .map(|s| {
            s.start_unix_ms.saturating_sub(start)
                + u64::try_from(s.usage.real.as_millis()).unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
        .max(total_ms);
    let x = |ms: u64| LABEL + ms * PLOT / end_ms;
    let height = ROW * (report.steps.len() as u64 + 2);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" role="img" aria-label="timeline">"#,
        LABEL + PLOT + 20
    );
    // The axis: ten ticks.
    for i in 0..=10 {
        let ms = end_ms * i / 10;
        let _ = write!(
            svg,
            r#"<line class="tick" x1="{0}" x2="{0}" y1="0" y2="{1}"/><text class="tick" x="{0}" y="{2}">{3} ms</text>"#,
            x(ms),
            height - ROW,
            height - 6,
            ms
        );
    }
    for (i, s) in report.steps.iter().enumerate() {
        let y = ROW * i as u64;
        let from = s.start_unix_ms.saturating_sub(start);
        let dur = u64::try_from(s.usage.real.as_millis()).unwrap_or(0);
        let width = (dur * PLOT / end_ms).max(2);
        let label = match &s.item {
            Some(item) => format!("{} {} {item}", s.module, s.step),
            None => format!("{} {}", s.module, s.step),
        };
        let mut hover = format!(
            "{label}: {dur} ms, {} KiB max RSS, user {} ms, sys {} ms",
            s.usage.mem_max_kb,
            s.usage.user.as_millis(),
            s.usage.sys.as_millis()
        );
        if let Some(code) = s.return_code {
            let _ = write!(hover, ", ReturnCode {code}");
            if let Some(name) = &s.return_code_name {
                let _ = write!(hover, " ({name})");
            }
        }
        for v in &s.violations {
            let _ = write!(hover, "; {v}");
        }
        let outcome = if s.ok { "ok" } else { "failed" };
        let _ = write!(
            svg,
            r#"<text class="label" x="4" y="{ty}">{label}</text><rect class="bar {outcome} step-{step}" data-step="{step}" x="{bx}" y="{by}" width="{width}" height="{bh}"><title>{hover}</title></rect>"#,
            ty = y + 15,
            label = esc(&label),
            step = esc(&s.step),
            bx = x(from),
            by = y + 3,
            bh = ROW - 6,
            hover = esc(&hover),
        );
    }
    svg.push_str("</svg>");

    let mut changes = String::new();
    for m in &report.modules {
        let status = match &m.status {
            ModuleStatus::Ok => "ok".to_owned(),
            ModuleStatus::Failed { reason } => format!("failed: {reason}"),
            ModuleStatus::Skipped { reason } => format!("skipped: {reason}"),
        };
        let _ = write!(
            changes,
            "<h3>{} <small>{}</small></h3>",
            esc(&m.name),
            esc(&status)
        );
        if m.paths.is_empty() {
            changes.push_str("<p class=\"none\">no change</p>");
            continue;
        }
        changes.push_str("<table><tr><th>path</th><th>change</th><th>md5</th></tr>");
        for p in &m.paths {
            let md5 = |side: &Option<crate::diff::Meta>| {
                side.as_ref()
                    .and_then(|m| m.md5.clone())
                    .unwrap_or_else(|| "-".into())
            };
            let _ = write!(
                changes,
                "<tr><td>{}</td><td>{}</td><td>{} &rarr; {}</td></tr>",
                esc(&p.path.to_string_lossy()),
                p.kind.as_str(),
                esc(&md5(&p.old)),
                esc(&md5(&p.new))
            );
        }
        changes.push_str("</table>");
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>disco dance {id}</title>
<style>
body {{ font: 13px sans-serif; margin: 1em; }}
text.label {{ font: 12px monospace; }}
text.tick {{ font: 10px sans-serif; fill: #666; }}
line.tick {{ stroke: #ddd; }}
rect.bar.ok {{ fill: #3a9a4a; }}
rect.bar.failed {{ fill: #c8372d; }}
rect.bar:hover {{ stroke: #000; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; font: 12px monospace; text-align: left; }}
</style></head>
<body>
<h1>disco dance {id} <small>{node}, {mode}, {outcome}, {ms} ms</small></h1>
<h2>Timeline</h2>
{svg}
<h2>Changes</h2>
{changes}
</body></html>
"#,
        id = esc(&report.id),
        node = esc(&report.node),
        mode = if report.noop { "noop" } else { "live" },
        outcome = if report.ok { "ok" } else { "failed" },
        ms = total_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_modules_cannot_break_out_of_the_page() {
        assert_eq!(
            esc("<script>alert('x')</script>&\u{1b}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;\u{FFFD}"
        );
    }
}
