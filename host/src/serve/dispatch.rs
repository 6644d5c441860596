//! From alerts to fixes, the executor of `policy.rs`: the state under one lock, the worker
//! threads (`max_concurrent`), the recorder thread, and the order of journal and queue.
//!
//! [`Dispatcher::decide`] takes a whole webhook at once, under one lock, and asks the policy
//! (`Admissions::decide`) what each alert amounts to; a request whose fixes do not fit the
//! bounded queue is refused whole (503, nothing recorded as accepted) so that Alertmanager
//! retries it. The caller journals the decisions and then hands the ticket back
//! ([`Dispatcher::enqueue`]): no fix can end (and journal its outcome) before its decision is
//! on disk.
//!
//! Workers take the next fix the policy's `Schedule` gives (one per target at a time, in
//! arrival order).
//!
//! A worker hands each ended fix to one recorder thread and takes the next fix at once: the
//! outcome's `fdatasync` and the `fixhistory` file need not hold a slot that a module could use.
//! The recorder takes every ended fix waiting at that moment, journals their outcomes with one
//! sync, then writes their `fixhistory` lines, metrics and sinks. A target stays busy until its
//! outcome is recorded, so its fixes are still recorded in order and never overlap.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::alertmanager::Payload;
use super::history::{self, Decision, FixRecord, Journal, OutcomeRecord, Record};
use super::metrics::{Gauges, Metrics};
use super::policy::{Admissions, Ask, Schedule, Verdict};
use super::rotate::Retention;
use super::rules::{Planned, Rules};
use super::runner::{Ran, Runner};
use super::sinks::Sinks;
use crate::output;

pub use super::policy::Target;

/// One accepted fix, waiting or running.
#[derive(Debug, Clone)]
pub struct Job {
    /// The fix's id in the history.
    pub id: String,
    /// When its request arrived.
    pub received: f64,
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// What to run.
    pub plan: Planned,
}

impl Job {
    fn target(&self) -> Target {
        (self.plan.host.clone(), self.plan.service.clone())
    }
}

/// A fix that ended, waiting for the recorder.
#[derive(Debug)]
struct Ended {
    job: Job,
    ran: Ran,
    /// When its runner started and when it ended (epoch seconds).
    started: f64,
    finished: f64,
}

#[derive(Debug, Default)]
struct State {
    /// What the policy remembers of acceptances.
    admissions: Admissions,
    /// Queued fixes and busy targets.
    schedule: Schedule<Job>,
    /// Accepted and not started (reserved by a ticket, or in the schedule).
    queued: usize,
    running: usize,
    /// Fixes that ended and are not recorded yet (their targets are still busy).
    ended: Vec<Ended>,
    /// Fixes the recorder is recording now.
    recording: usize,
    stopping: bool,
}

/// Decisions taken for one request, with the fixes to queue once they are journaled.
#[derive(Debug)]
pub struct Ticket {
    /// One record per alert.
    pub records: Vec<FixRecord>,
    jobs: Vec<Job>,
}

/// The request was refused: the queue is full, or the server is stopping.
#[derive(Debug, Clone)]
pub struct Busy(pub String);

/// Everything a worker needs to run a fix and record it.
pub struct Recorder {
    /// The journal.
    pub journal: Arc<Journal>,
    /// The history folder (for the fixhistory files).
    pub history_dir: PathBuf,
    /// How long fixhistory lines are kept.
    pub retention: Retention,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// The sinks beyond the history.
    pub sinks: Sinks,
    /// Runs each fix.
    pub runner: Runner,
}

/// The dispatcher.
pub struct Dispatcher {
    state: Mutex<State>,
    work: Condvar,
    idle: Condvar,
    /// Wakes the recorder.
    record: Condvar,
    max_concurrent: usize,
    max_queue: usize,
    prefix: String,
    seq: AtomicU64,
    recorder: Recorder,
}

impl Dispatcher {
    /// A dispatcher running at most `max_concurrent` fixes at once with at most `max_queue`
    /// waiting. Fix ids are `PREFIX-N`.
    pub fn new(
        max_concurrent: usize,
        max_queue: usize,
        prefix: String,
        recorder: Recorder,
    ) -> Dispatcher {
        Dispatcher {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            idle: Condvar::new(),
            record: Condvar::new(),
            max_concurrent: max_concurrent.max(1),
            max_queue,
            prefix,
            seq: AtomicU64::new(0),
            recorder,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rebuilds cool-down and storm state from the history, so a restart does not re-run
    /// what ran a minute ago.
    pub fn seed(&self, records: &[FixRecord], rules: &Rules, now: f64) {
        let horizon = rules.horizon.as_secs_f64();
        let from = now - horizon;
        let mut st = self.lock();
        for f in records {
            if f.decision != Decision::Queued || f.time < from {
                continue;
            }
            let (Some(h), Some(s)) = (&f.host, &f.service) else {
                continue;
            };
            st.admissions
                .admit(&f.fingerprint, &(h.clone(), s.clone()), f.time, horizon);
        }
    }

    /// Counts for `/metrics` and `/healthz`.
    pub fn gauges(&self) -> Gauges {
        let st = self.lock();
        Gauges {
            queued: st.queued,
            running: st.running,
            max_concurrent: self.max_concurrent,
        }
    }

    fn next_id(&self) -> String {
        format!(
            "{}-{}",
            self.prefix,
            self.seq.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    /// Decides every alert of `payload` (request `request`, arrived at `now`) and reserves
    /// queue room for the fixes to run; nothing runs until the ticket is enqueued.
    pub fn decide(
        &self,
        request: &str,
        payload: &Payload,
        rules: &Rules,
        now: f64,
    ) -> Result<Ticket, Busy> {
        // Rules are pure: plan outside the lock.
        let planned: Vec<_> = payload
            .alerts
            .iter()
            .map(|a| {
                let rule = if a.is_resolved() { None } else { rules.find(a) };
                (a, a.fingerprint(), rule.map(|r| r.plan(a)))
            })
            .collect();
        let asks: Vec<Ask<'_>> = planned
            .iter()
            .map(|(alert, fingerprint, plan)| match plan {
                None if alert.is_resolved() => Ask::Resolved,
                None => Ask::Unmatched,
                Some(Err(why)) => Ask::Rejected(why.to_string()),
                Some(Ok(p)) => Ask::Fix {
                    fingerprint,
                    target: (p.host.clone(), p.service.clone()),
                    limits: p.limits,
                },
            })
            .collect();
        let mut st = self.lock();
        if st.stopping {
            return Err(Busy("the server is stopping".to_owned()));
        }
        let verdicts = st
            .admissions
            .decide(&asks, now, st.queued, self.max_queue)
            .map_err(|full| Busy(full.to_string()))?;
        let mut records = Vec::new();
        let mut jobs = Vec::new();
        for ((alert, fingerprint, plan), verdict) in planned.into_iter().zip(verdicts) {
            let mut rec = FixRecord {
                time: now,
                id: self.next_id(),
                request: request.to_owned(),
                fingerprint,
                alertname: alert.labels.get("alertname").cloned().unwrap_or_default(),
                rule: None,
                host: None,
                service: None,
                module: None,
                options: Default::default(),
                decision: Decision::Resolved,
                reason: None,
            };
            if let Some(Ok(plan)) = &plan {
                rec.rule = Some(plan.rule.clone());
                rec.host = Some(plan.host.clone());
                rec.service = Some(plan.service.clone());
                rec.module = Some(plan.module.clone());
                rec.options = plan.options.clone();
            }
            (rec.decision, rec.reason) = match verdict {
                Verdict::Resolved => (
                    Decision::Resolved,
                    Some("the alert is resolved; nothing runs".to_owned()),
                ),
                Verdict::Unmatched => (
                    Decision::Unmatched,
                    Some("no rule matches the alert's labels".to_owned()),
                ),
                Verdict::Rejected(why) => (Decision::Rejected, Some(why)),
                Verdict::Deduplicated(why) => (Decision::Deduplicated, Some(why)),
                Verdict::Suppressed(why) => (Decision::Suppressed, Some(why)),
                Verdict::Queued => (Decision::Queued, None),
            };
            if let (Decision::Queued, Some(Ok(plan))) = (rec.decision, plan) {
                jobs.push(Job {
                    id: rec.id.clone(),
                    received: now,
                    fingerprint: rec.fingerprint.clone(),
                    plan,
                });
            }
            records.push(rec);
        }
        // Commit: reserve the room and remember the acceptances.
        st.queued += jobs.len();
        let horizon = rules.horizon.as_secs_f64();
        for j in &jobs {
            st.admissions
                .admit(&j.fingerprint, &j.target(), now, horizon);
        }
        st.admissions.prune(now, horizon);
        drop(st);
        for r in &records {
            self.recorder.metrics.decision(r.decision.as_str());
            if r.decision == Decision::Suppressed {
                output::warning(&format!(
                    "storm control: {} (alert {} {}) suppressed: {}",
                    r.id,
                    r.alertname,
                    r.fingerprint,
                    r.reason.as_deref().unwrap_or_default()
                ));
            }
        }
        Ok(Ticket { records, jobs })
    }

    /// Queues a ticket's fixes, once its records are journaled.
    pub fn enqueue(&self, ticket: Ticket) {
        let mut st = self.lock();
        for job in ticket.jobs {
            st.schedule.push(job.target(), job);
        }
        drop(st);
        self.work.notify_all();
    }

    /// Gives back a ticket's room when its records could not be journaled.
    pub fn abandon(&self, ticket: Ticket) {
        let mut st = self.lock();
        st.queued -= ticket.jobs.len();
    }

    /// Starts the workers and the recorder.
    pub fn start(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let mut threads: Vec<JoinHandle<()>> = (0..self.max_concurrent)
            .map(|i| {
                let me = Arc::clone(self);
                std::thread::Builder::new()
                    .name(format!("fix-{i}"))
                    .spawn(move || me.work_loop())
                    .expect("spawn a worker thread")
            })
            .collect();
        let me = Arc::clone(self);
        threads.push(
            std::thread::Builder::new()
                .name("record".to_owned())
                .spawn(move || me.record_loop())
                .expect("spawn the recorder thread"),
        );
        threads
    }

    fn work_loop(&self) {
        loop {
            let mut st = self.lock();
            let job = loop {
                if st.stopping {
                    return;
                }
                if let Some((_, job)) = st.schedule.start() {
                    st.queued -= 1;
                    st.running += 1;
                    break job;
                }
                st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
            };
            drop(st);
            let started = history::now();
            let ran = self.recorder.runner.run(&job.plan);
            let finished = history::now();
            let mut st = self.lock();
            st.running -= 1;
            // The target stays busy until the recorder has recorded the outcome.
            st.ended.push(Ended {
                job,
                ran,
                started,
                finished,
            });
            drop(st);
            self.record.notify_one();
        }
    }

    /// Records ended fixes, a batch at a time, until the dispatcher stops and nothing is left.
    fn record_loop(&self) {
        loop {
            let mut st = self.lock();
            while st.ended.is_empty() {
                if st.stopping && st.running == 0 {
                    return;
                }
                st = self.record.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            let batch = std::mem::take(&mut st.ended);
            st.recording = batch.len();
            drop(st);
            let targets = self.record_batch(batch);
            let mut st = self.lock();
            st.recording = 0;
            for t in targets {
                let stopping = st.stopping;
                if st.schedule.done(&t, stopping) {
                    self.work.notify_one();
                }
            }
            drop(st);
            self.idle.notify_all();
        }
    }

    /// Journals the outcomes of `batch` (one sync for all), then each one's `fixhistory` line,
    /// metrics and sinks; returns the targets of the batch, in order.
    fn record_batch(&self, mut batch: Vec<Ended>) -> Vec<Target> {
        let r = &self.recorder;
        let recs: Vec<OutcomeRecord> = batch
            .iter_mut()
            .map(|e| OutcomeRecord {
                time: e.finished,
                id: e.job.id.clone(),
                started: e.started,
                return_code: e.ran.return_code,
                comment: e.ran.comment.clone(),
                outcome: std::mem::take(&mut e.ran.outcome),
            })
            .collect();
        let jsons: Vec<String> = recs
            .iter()
            .map(|rec| serde_json::to_string(rec).unwrap_or_default())
            .collect();
        let records: Vec<Record> = recs.into_iter().map(Record::Outcome).collect();
        if let Err(e) = r.journal.append(&records) {
            for x in &batch {
                output::error(&format!("fix {}: {e}", x.job.id));
            }
        }
        for (e, json) in batch.iter().zip(&jsons) {
            let line = history::fixhistory_line(
                e.started,
                e.ran.duration_ms,
                e.ran.return_code,
                "disco-serve",
                &e.ran.comment,
            );
            let plan = &e.job.plan;
            if let Err(err) = history::append_fixhistory(
                &r.history_dir,
                &plan.host,
                &plan.service,
                &line,
                &r.retention.for_fixhistory(),
            ) {
                output::error(&format!("fix {}: {err}", e.job.id));
            }
            r.metrics.fix(
                e.ran.return_code,
                e.finished - e.started,
                (e.started - e.job.received).max(0.0),
                e.ran.cgroup.as_ref(),
            );
            r.sinks.fix_result(json);
        }
        batch.iter().map(|e| e.job.target()).collect()
    }

    /// Stops: no new requests, queued fixes that have not started are cancelled (journaled),
    /// running ones are waited for (the host bounds their time) and recorded. `workers` are the
    /// threads [`Dispatcher::start`] returned.
    pub fn stop(&self, workers: Vec<JoinHandle<()>>) {
        let mut st = self.lock();
        st.stopping = true;
        let cancelled = st.schedule.cancel_all();
        st.queued -= cancelled.len();
        self.work.notify_all();
        self.record.notify_all();
        while st.running > 0 || !st.ended.is_empty() || st.recording > 0 {
            st = self.idle.wait(st).unwrap_or_else(|e| e.into_inner());
            // The last running fix may have ended: the recorder must see that and stop.
            self.record.notify_all();
        }
        drop(st);
        self.record.notify_all();
        for w in workers {
            let _ = w.join();
        }
        self.recorder.runner.close();
        if !cancelled.is_empty() {
            let now = history::now();
            output::warning(&format!(
                "stopping: {} queued fixes were not started and are recorded as cancelled",
                cancelled.len()
            ));
            let recs: Vec<_> = cancelled
                .iter()
                .map(|j| Record::Cancelled {
                    time: now,
                    id: j.id.clone(),
                })
                .collect();
            if let Err(e) = self.recorder.journal.append(&recs) {
                output::error(&e.to_string());
            }
        }
    }
}
