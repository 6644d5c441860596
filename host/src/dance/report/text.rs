//! The report as text, in the original's format (GNU time's four lines per step,
//! `report: MODULE: STEP`), plus each script's ReturnCode and violations.

use std::fmt::Write as _;
use std::time::Duration;

use super::{DanceReport, ModuleStatus, Step, INTERNAL};

/// The report as `disco report` prints it: the original's format, steps sorted by module
/// (`_internal` first, then by name), then by step name, a step's items in run order under one
/// header; then a summary line and one line per module that failed or was skipped.
pub fn render_text(report: &DanceReport) -> String {
    let mut steps: Vec<&Step> = report.steps.iter().collect();
    // A stable sort: items of one step keep their run order.
    steps.sort_by(|a, b| {
        module_key(&a.module)
            .cmp(&module_key(&b.module))
            .then_with(|| a.step.cmp(&b.step))
    });
    let mut out = String::new();
    let mut header: Option<(&str, &str)> = None;
    for step in steps {
        let this = (step.module.as_str(), step.step.as_str());
        if header != Some(this) {
            let _ = writeln!(out, "report: {}: {}", step.module, step.step);
            header = Some(this);
        }
        match &step.item {
            Some(item) => {
                let _ = writeln!(out, "report:    {item} :");
                step_body(&mut out, step, "        ");
            }
            None => step_body(&mut out, step, "    "),
        }
    }
    let (ok, failed, skipped) = report.counts();
    let _ = writeln!(
        out,
        "report: result: {} ({} modules: {ok} ok, {failed} failed, {skipped} skipped) in {} s",
        if report.ok { "ok" } else { "failed" },
        report.modules.len(),
        secs(report.duration),
    );
    for module in &report.modules {
        let (what, reason) = match &module.status {
            ModuleStatus::Ok => continue,
            ModuleStatus::Failed { reason } => ("failed", reason),
            ModuleStatus::Skipped { reason } => ("skipped", reason),
        };
        let _ = writeln!(out, "report:    {}: {what}: {reason}", module.name);
    }
    out
}

/// The sort key of a module name: `_internal` before every module, then by name.
pub(super) fn module_key(module: &str) -> (bool, &str) {
    (module != INTERNAL, module)
}

/// Seconds with two decimals, as GNU time prints them, rounded half up in integers (through
/// `f64`, 1.255 would print as 1.25 or 1.26 depending on its binary expansion).
pub(super) fn secs(d: Duration) -> String {
    let centis = (d.as_nanos() + 5_000_000) / 10_000_000;
    format!("{}.{:02}", centis / 100, centis % 100)
}

/// One step's lines, each `report:` then `indent`.
pub(super) fn step_body(out: &mut String, step: &Step, indent: &str) {
    let u = &step.usage;
    let _ = writeln!(
        out,
        "report:{indent}time_real {} : time_user {} : time_sys {}",
        secs(u.real),
        secs(u.user),
        secs(u.sys)
    );
    // mem_avg and io_sock* stay 0, as in the original: Linux's rusage does not fill the
    // integral memory sizes (ru_ixrss, ru_idrss, ru_isrss) nor the message counts (ru_msgsnd,
    // ru_msgrcv) that GNU time derives them from.
    let _ = writeln!(
        out,
        "report:{indent}mem_avg 0 : mem_max {} : mem_faults_major {} : mem_faults_minor {}",
        u.mem_max_kb, u.faults_major, u.faults_minor
    );
    let _ = writeln!(
        out,
        "report:{indent}io_fsin {} : io_fsout {} : io_sockin 0 : io_sockout 0 : io_signals {}",
        u.io_in, u.io_out, u.signals
    );
    // An in-process step has no exit status: it reads like a command that exited 0 when it
    // succeeded and 1 when it failed.
    let exit = step.exit.unwrap_or(if step.ok { 0 } else { 1 });
    let _ = writeln!(out, "report:{indent}exit: {exit}");
    if let Some(code) = step.return_code {
        match &step.return_code_name {
            Some(name) => {
                let _ = writeln!(out, "report:{indent}return_code: {code} ({name})");
            }
            None => {
                let _ = writeln!(out, "report:{indent}return_code: {code}");
            }
        }
    }
    for violation in &step.violations {
        let _ = writeln!(out, "report:{indent}violation: {violation}");
    }
    for address in &step.would_connect {
        let _ = writeln!(out, "report:{indent}would connect: {address}");
    }
}
