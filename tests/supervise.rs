//! Several fixes at once in one process, through the library: with a cgroup per fix, each
//! fix's record names its own leftovers and only those, and one fix's timeout kills nothing of
//! another's. A test binary of its own, because the supervisor makes its process a child
//! subreaper.

mod util;

use std::time::Duration;

use host::supervise::{FixSpec, LockLevel, Supervisor};
use util::{marker, module, processes_of, TempDir};

/// The DISCO_SERVICE in the environment of `pid`.
fn service_of(pid: i32) -> String {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    env.split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"DISCO_SERVICE="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// Kills what is left of `services` when dropped, even when an assertion failed.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for service in &self.0 {
            for pid in processes_of(service) {
                util::kill(pid);
            }
        }
    }
}

#[test]
fn concurrent_fixes_in_one_supervisor_keep_to_their_own_processes() {
    if !util::have_root("cgroup") {
        return;
    }
    let tmp = TempDir::new("one-process");
    let supervisor = Supervisor::new();
    // Eight fixes leave a daemon each; four others hang until their timeout, while the daemons
    // of the first eight (orphans re-parented to this very process) are around.
    let fixes: Vec<(&str, String)> = (0..12)
        .map(|i| {
            let fixture = if i < 8 { "daemon" } else { "hang" };
            (fixture, marker(&format!("together-{i}")))
        })
        .collect();
    let _cleanup = Cleanup(fixes.iter().map(|(_, s)| s.clone()).collect());
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let running: Vec<_> = fixes
            .iter()
            .map(|(fixture, service)| {
                let supervisor = &supervisor;
                let locks = tmp.path().to_owned();
                s.spawn(move || {
                    let mut spec = FixSpec::new(module(fixture), Vec::new(), "testhost", service);
                    spec.lock = LockLevel::None;
                    spec.lock_dir = locks;
                    spec.timeout = Duration::from_secs(if *fixture == "hang" { 2 } else { 20 });
                    spec.grace = Duration::from_millis(300);
                    spec.leak_timeout = Duration::from_millis(300);
                    supervisor.run(&spec).expect("the fix runs")
                })
            })
            .collect();
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for ((fixture, service), o) in fixes.iter().zip(&outcomes) {
        assert!(o.cgroup.is_some(), "{service}: no cgroup");
        if *fixture == "hang" {
            assert!(o.timed_out, "{service}: {:?}", o.violations);
            assert!(o.background.is_empty(), "{service}: {:?}", o.background);
            assert!(processes_of(service).is_empty(), "{service} left processes");
            continue;
        }
        assert!(o.violations.is_empty(), "{service}: {:?}", o.violations);
        assert_eq!(o.background.len(), 1, "{service}: {:?}", o.background);
        let pid = o.background[0].pid;
        assert_eq!(&service_of(pid), service, "{service} claims pid {pid}");
    }
    // The daemons outlived the other fixes' timeouts (`_cleanup` ends them).
    for (_, service) in fixes.iter().take(8) {
        assert_eq!(processes_of(service).len(), 1, "{service}'s daemon is gone");
    }
}
