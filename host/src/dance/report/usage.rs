//! What a step cost: GNU time's figures, from wait4(2) for a process or from a snapshot of
//! disco's own usage for a step done in-process.

use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use serde::{Deserialize, Serialize};

use crate::supervise::Rusage;

/// Resource usage of one step: GNU time's figures, from rusage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall time.
    pub real: Duration,
    /// User CPU time.
    pub user: Duration,
    /// System CPU time.
    pub sys: Duration,
    /// Peak resident set size, KiB.
    pub mem_max_kb: u64,
    /// Page faults that needed I/O.
    pub faults_major: u64,
    /// Page faults served without I/O.
    pub faults_minor: u64,
    /// File system input, in 512-byte blocks.
    pub io_in: u64,
    /// File system output, in 512-byte blocks.
    pub io_out: u64,
    /// Signals received.
    pub signals: u64,
}

/// A count from rusage (a `long`, never negative in practice) as a `u64`.
pub(super) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Usage {
    /// The usage of a process reaped by the supervisor; `real` is its wall time, which wait4(2)
    /// does not report.
    pub fn from_rusage(r: &Rusage, real: Duration) -> Usage {
        let ms = |ms: f64| Duration::try_from_secs_f64(ms / 1000.0).unwrap_or_default();
        Usage {
            real,
            user: ms(r.user_ms),
            sys: ms(r.system_ms),
            mem_max_kb: count(r.max_rss_kib),
            faults_major: count(r.major_faults),
            faults_minor: count(r.minor_faults),
            io_in: count(r.blocks_in),
            io_out: count(r.blocks_out),
            signals: count(r.signals),
        }
    }

    /// The usage of a process reaped with wait4 (`raw`) that ran for `real`.
    pub fn from_raw(raw: &crate::sys::RawRusage, real: Duration) -> Usage {
        Usage {
            real,
            user: raw.user,
            sys: raw.system,
            mem_max_kb: count(raw.max_rss_kib),
            faults_major: count(raw.major_faults),
            faults_minor: count(raw.minor_faults),
            io_in: count(raw.blocks_in),
            io_out: count(raw.blocks_out),
            signals: count(raw.signals),
        }
    }

    /// The usage of in-process work on this thread since `start` was taken: CPU time, faults,
    /// I/O and signals as differences, and the process's peak RSS so far (a peak cannot be
    /// differenced).
    pub fn of_self_since(start: SelfUsage) -> Usage {
        let now = SelfUsage::now();
        Usage {
            real: now.at.saturating_duration_since(start.at),
            user: now.user.saturating_sub(start.user),
            sys: now.sys.saturating_sub(start.sys),
            mem_max_kb: now.mem_max_kb,
            faults_major: now.faults_major.saturating_sub(start.faults_major),
            faults_minor: now.faults_minor.saturating_sub(start.faults_minor),
            io_in: now.io_in.saturating_sub(start.io_in),
            io_out: now.io_out.saturating_sub(start.io_out),
            signals: now.signals.saturating_sub(start.signals),
        }
    }
}

/// A snapshot of this thread's resource usage and the time, to measure an in-process step with
/// [`Usage::of_self_since`]. Take it and finish the step on the same thread.
#[derive(Clone, Copy, Debug)]
pub struct SelfUsage {
    pub(super) at: Instant,
    pub(super) user: Duration,
    pub(super) sys: Duration,
    pub(super) mem_max_kb: u64,
    pub(super) faults_major: u64,
    pub(super) faults_minor: u64,
    pub(super) io_in: u64,
    pub(super) io_out: u64,
    pub(super) signals: u64,
}

impl SelfUsage {
    /// This thread's usage now. RUSAGE_THREAD rather than RUSAGE_SELF: the dance runs steps on
    /// several threads at once (fetches with `--jobs`), and a step must not be charged for its
    /// neighbours. See getrusage(2).
    pub fn now() -> SelfUsage {
        let at = Instant::now();
        let tv = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(count(t.tv_sec())) + Duration::from_micros(count(t.tv_usec()))
        };
        match getrusage(UsageWho::RUSAGE_THREAD) {
            Ok(ru) => SelfUsage {
                at,
                user: tv(ru.user_time()),
                sys: tv(ru.system_time()),
                mem_max_kb: count(ru.max_rss()),
                faults_major: count(ru.major_page_faults()),
                faults_minor: count(ru.minor_page_faults()),
                io_in: count(ru.block_reads()),
                io_out: count(ru.block_writes()),
                signals: count(ru.signals()),
            },
            // getrusage fails only for a bad `who` or pointer (EINVAL, EFAULT), neither possible
            // here; a measurement is not worth failing a dance for, so it reads as zero.
            Err(e) => {
                tracing::debug!("getrusage(RUSAGE_THREAD): {e}");
                SelfUsage {
                    at,
                    user: Duration::ZERO,
                    sys: Duration::ZERO,
                    mem_max_kb: 0,
                    faults_major: 0,
                    faults_minor: 0,
                    io_in: 0,
                    io_out: 0,
                    signals: 0,
                }
            }
        }
    }
}
