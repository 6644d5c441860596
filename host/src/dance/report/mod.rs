//! The dance report: what every step of a dance cost and how it ended, kept under the state
//! directory and printed by `disco report` in the original's format (GNU time's four lines per
//! step, `report: MODULE: STEP`), plus each script's ReturnCode and violations.
//!
//! The dance fills a [`DanceReport`] as it goes: steps that run a process take their figures
//! from wait4(2) ([`Step::from_fix`], [`Usage::from_rusage`]); steps done in-process take a
//! [`SelfUsage`] snapshot before and call [`Usage::of_self_since`] after. [`save`] keeps the
//! newest [`KEEP`] reports as `STATE/reports/<id>.json`; [`load`] reads one back; [`render_text`]
//! and [`super::schema::dance_json`] are pure functions of the report, so they are tested without a dance.

mod model;
mod store;
mod text;
mod usage;

pub use model::{
    describe_failure, unix_ms, DanceReport, ModuleResult, ModuleStatus, Step, StepCgroup,
};
pub use store::{load, new_id, reports_dir, save, ReportError};
pub use text::render_text;
pub use usage::{SelfUsage, Usage};

/// How many reports [`save`] keeps (the newest).
pub const KEEP: usize = 20;

/// The module name of dance-wide steps (`fetch_params`, the final diff...), as in the original.
pub const INTERNAL: &str = "_internal";

#[cfg(test)]
mod tests {
    use super::store::id_key;
    use super::text::secs;
    use super::*;
    use crate::supervise::Rusage;
    use std::time::{Duration, UNIX_EPOCH};

    fn usage(real_cs: u64, user_cs: u64, sys_cs: u64, mem: u64, minor: u64) -> Usage {
        Usage {
            real: Duration::from_millis(real_cs * 10),
            user: Duration::from_millis(user_cs * 10),
            sys: Duration::from_millis(sys_cs * 10),
            mem_max_kb: mem,
            faults_minor: minor,
            ..Usage::default()
        }
    }

    fn report(steps: Vec<Step>, modules: Vec<ModuleResult>) -> DanceReport {
        DanceReport {
            id: "1795387035.799595-14937".into(),
            node: "localhost.localdomain".into(),
            noop: true,
            started_unix: 1_795_387_035,
            started_unix_ms: 0,
            duration: Duration::from_millis(1234),
            ok: modules.iter().all(|m| m.status == ModuleStatus::Ok),
            modules,
            steps,
        }
    }

    #[test]
    fn a_step_without_item_has_four_lines() {
        let r = report(
            vec![Step::new(
                INTERNAL,
                "fetch_params",
                None,
                usage(126, 2, 8, 11136, 1728),
                true,
            )],
            vec![],
        );
        assert_eq!(
            render_text(&r),
            "report: _internal: fetch_params\n\
             report:    time_real 1.26 : time_user 0.02 : time_sys 0.08\n\
             report:    mem_avg 0 : mem_max 11136 : mem_faults_major 0 : mem_faults_minor 1728\n\
             report:    io_fsin 0 : io_fsout 0 : io_sockin 0 : io_sockout 0 : io_signals 0\n\
             report:    exit: 0\n\
             report: result: ok (0 modules: 0 ok, 0 failed, 0 skipped) in 1.23 s\n"
        );
    }

    #[test]
    fn internal_first_then_modules_then_steps_items_in_run_order() {
        let s = |m: &str, st: &str, item: Option<&str>| {
            Step::new(m, st, item.map(str::to_owned), Usage::default(), true)
        };
        let r = report(
            vec![
                s("b", "fetch", None),
                s("a", "exec", Some("10-z.sh")),
                s("a", "exec", Some("00-y.sh")),
                s(INTERNAL, "fetch_params", None),
                s("a", "diff", None),
                s("A", "diff", None),
                s(INTERNAL, "diff", None),
            ],
            vec![],
        );
        let text = render_text(&r);
        let headers: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("report:  ") && !l.contains("result:"))
            .collect();
        assert_eq!(
            headers,
            [
                "report: _internal: diff",
                "report: _internal: fetch_params",
                "report: A: diff",
                "report: a: diff",
                "report: a: exec",
                "report: b: fetch",
            ]
        );
        let items: Vec<&str> = text.lines().filter(|l| l.ends_with(".sh :")).collect();
        assert_eq!(items, ["report:    10-z.sh :", "report:    00-y.sh :"]);
    }

    #[test]
    fn scripts_show_return_code_and_violations() {
        let mut step = Step::new(
            "m",
            "exec",
            Some("10-x.sh".into()),
            usage(1, 0, 0, 1, 1),
            false,
        );
        step.exit = Some(1);
        step.return_code = Some(1);
        step.return_code_name = Some("MODEXEC_PROBLEM".into());
        step.violations = vec!["leaked_file_handle: pid 7 (sleep 9)".into()];
        let mut custom = step.clone();
        custom.item = Some("20-y.sh".into());
        custom.return_code = Some(42);
        custom.return_code_name = None;
        custom.violations.clear();
        let text = render_text(&report(vec![step, custom], vec![]));
        assert!(text.contains(
            "report:        exit: 1\n\
             report:        return_code: 1 (MODEXEC_PROBLEM)\n\
             report:        violation: leaked_file_handle: pid 7 (sleep 9)\n\
             report:    20-y.sh :\n"
        ));
        assert!(text.contains("report:        return_code: 42\nreport: result:"));
    }

    #[test]
    fn failed_in_process_step_exits_1() {
        let step = Step::new("m", "diff", None, Usage::default(), false);
        assert!(render_text(&report(vec![step], vec![])).contains("report:    exit: 1\n"));
    }

    #[test]
    fn summary_names_failed_and_skipped_modules() {
        let m = |name: &str, status| ModuleResult {
            name: name.into(),
            status,
            changes: (0, 0, 0),
            paths: Vec::new(),
        };
        let r = report(
            vec![],
            vec![
                m("a", ModuleStatus::Ok),
                m(
                    "b",
                    ModuleStatus::Failed {
                        reason: "exec 10-x.sh: MODEXEC_PROBLEM".into(),
                    },
                ),
                m(
                    "c",
                    ModuleStatus::Skipped {
                        reason: "requires b, which failed".into(),
                    },
                ),
            ],
        );
        assert_eq!(
            render_text(&r),
            "report: result: failed (3 modules: 1 ok, 1 failed, 1 skipped) in 1.23 s\n\
             report:    b: failed: exec 10-x.sh: MODEXEC_PROBLEM\n\
             report:    c: skipped: requires b, which failed\n"
        );
    }

    #[test]
    fn times_round_to_two_decimals() {
        assert_eq!(secs(Duration::from_millis(1254)), "1.25");
        assert_eq!(secs(Duration::from_millis(1255)), "1.26");
        assert_eq!(secs(Duration::from_millis(1256)), "1.26");
        assert_eq!(secs(Duration::ZERO), "0.00");
        assert_eq!(secs(Duration::from_secs(12)), "12.00");
    }

    #[test]
    fn ids_sort_by_time_then_pid() {
        let mut ids = vec![
            "1795387035.799595-14937",
            "999999999.5-1",
            "1795387035.8-2",
            "1795387035.799595-200",
            "garbage",
        ];
        ids.sort_by(|a, b| id_key(a).cmp(&id_key(b)));
        assert_eq!(
            ids,
            [
                "garbage",
                "999999999.5-1",
                "1795387035.799595-200",
                "1795387035.799595-14937",
                "1795387035.8-2",
            ]
        );
    }

    #[test]
    fn new_ids_have_the_documented_shape() {
        let at = UNIX_EPOCH + Duration::new(1_795_387_035, 799_595_123);
        let id = new_id(at);
        assert_eq!(id, format!("1795387035.799595-{}", std::process::id()));
        assert_eq!(id_key(&id).0, 1_795_387_035);
    }

    #[test]
    fn rusage_converts() {
        let r = Rusage {
            user_ms: 30.0,
            system_ms: 180.0,
            max_rss_kib: 4672,
            minor_faults: 3783,
            major_faults: 32,
            blocks_in: 6640,
            blocks_out: 8,
            signals: 0,
            ..Rusage::default()
        };
        let u = Usage::from_rusage(&r, Duration::from_millis(270));
        assert_eq!(
            (secs(u.real), secs(u.user), secs(u.sys)),
            ("0.27".into(), "0.03".into(), "0.18".into())
        );
        assert_eq!(
            (
                u.mem_max_kb,
                u.faults_major,
                u.faults_minor,
                u.io_in,
                u.io_out
            ),
            (4672, 32, 3783, 6640, 8)
        );
    }
}
