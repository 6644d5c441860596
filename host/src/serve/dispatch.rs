//! From alerts to fixes: dedup, cool-down, storm control, one fix at a time per target, a
//! global concurrency limit and a bounded queue.
//!
//! [`Dispatcher::decide`] takes a whole webhook at once, under one lock: each firing alert that
//! a rule turns into a fix is `deduplicated` (the same fingerprint for the same target was
//! accepted within the rule's cool-down, or earlier in this very request), `suppressed` (the
//! target already had `storm_limit` fixes accepted in the storm window) or `queued`. When the
//! queued fixes do not fit in the bounded queue the whole request is refused (503, nothing
//! recorded as accepted) so that Alertmanager retries it; a partial accept would make its retry
//! look like duplicates. The caller journals the decisions and then hands the ticket back
//! ([`Dispatcher::enqueue`]): no fix can end (and journal its outcome) before its decision is
//! on disk.
//!
//! Workers (`max_concurrent` threads) take targets from a ready queue; a target with a running
//! fix is never ready, so two fixes never run for one target at once, and its fixes run in
//! arrival order.
//!
//! A worker hands each ended fix to one recorder thread and takes the next fix at once: the
//! outcome's `fdatasync` and the `fixhistory` file need not hold a slot that a module could use.
//! The recorder takes every ended fix waiting at that moment, journals their outcomes with one
//! sync, then writes their `fixhistory` lines, metrics and sinks. A target stays busy until its
//! outcome is recorded, so its fixes are still recorded in order and never overlap.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::alertmanager::Payload;
use super::history::{self, Decision, FixRecord, Journal, OutcomeRecord, Record};
use super::metrics::{Gauges, Metrics};
use super::rotate::Retention;
use super::rules::{Planned, Rules};
use super::runner::{Ran, Runner};
use super::sinks::Sinks;
use crate::output;

/// `service@host`.
pub type Target = (String, String);

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

#[derive(Debug, Default)]
struct TargetState {
    queue: VecDeque<Job>,
    running: bool,
    /// When fixes were accepted for it, within the storm window.
    accepted: VecDeque<f64>,
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
    targets: HashMap<Target, TargetState>,
    ready: VecDeque<Target>,
    /// Accepted and not started (reserved by a ticket, or in a target's queue).
    queued: usize,
    running: usize,
    /// Fixes that ended and are not recorded yet (their targets are still busy).
    ended: Vec<Ended>,
    /// Fixes the recorder is recording now.
    recording: usize,
    /// The last acceptance of each fingerprint for each target.
    seen: HashMap<(String, Target), f64>,
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
        let from = now - rules.horizon.as_secs_f64();
        let mut st = self.lock();
        for f in records {
            if f.decision != Decision::Queued || f.time < from {
                continue;
            }
            let (Some(h), Some(s)) = (&f.host, &f.service) else {
                continue;
            };
            let t = (h.clone(), s.clone());
            st.seen.insert((f.fingerprint.clone(), t.clone()), f.time);
            st.targets.entry(t).or_default().accepted.push_back(f.time);
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
                (a, rule.map(|r| r.plan(a)))
            })
            .collect();
        let mut st = self.lock();
        if st.stopping {
            return Err(Busy("the server is stopping".to_owned()));
        }
        // Decide against the state plus what this request already decided.
        let mut seen_here: HashSet<(String, Target)> = HashSet::new();
        let mut accepted_here: HashMap<Target, u32> = HashMap::new();
        let mut records = Vec::new();
        let mut jobs = Vec::new();
        for (alert, plan) in planned {
            let fingerprint = alert.fingerprint();
            let mut rec = FixRecord {
                time: now,
                id: self.next_id(),
                request: request.to_owned(),
                fingerprint: fingerprint.clone(),
                alertname: alert.labels.get("alertname").cloned().unwrap_or_default(),
                rule: None,
                host: None,
                service: None,
                module: None,
                options: Default::default(),
                decision: Decision::Resolved,
                reason: None,
            };
            let plan = match plan {
                None if alert.is_resolved() => {
                    rec.reason = Some("the alert is resolved; nothing runs".to_owned());
                    records.push(rec);
                    continue;
                }
                None => {
                    rec.decision = Decision::Unmatched;
                    rec.reason = Some("no rule matches the alert's labels".to_owned());
                    records.push(rec);
                    continue;
                }
                Some(Err(why)) => {
                    rec.decision = Decision::Rejected;
                    rec.reason = Some(why);
                    records.push(rec);
                    continue;
                }
                Some(Ok(p)) => p,
            };
            rec.rule = Some(plan.rule.clone());
            rec.host = Some(plan.host.clone());
            rec.service = Some(plan.service.clone());
            rec.module = Some(plan.module.clone());
            rec.options = plan.options.clone();
            let target = (plan.host.clone(), plan.service.clone());
            let key = (fingerprint, target.clone());
            let cooldown = plan.limits.cooldown.as_secs_f64();
            let window_start = now - plan.limits.storm_window.as_secs_f64();
            let last = st.seen.get(&key).copied();
            let in_window = st.targets.get(&target).map_or(0, |t| {
                t.accepted.iter().filter(|&&at| at >= window_start).count()
            }) + *accepted_here.get(&target).unwrap_or(&0) as usize;
            if seen_here.contains(&key) {
                rec.decision = Decision::Deduplicated;
                rec.reason = Some(
                    "the same alert for the same target came earlier in this request".to_owned(),
                );
            } else if let Some(at) = last.filter(|&at| now - at < cooldown) {
                rec.decision = Decision::Deduplicated;
                rec.reason = Some(format!(
                    "the same alert for {}@{} was accepted {:.1} s ago (cool-down {} s)",
                    plan.service,
                    plan.host,
                    now - at,
                    cooldown
                ));
            } else if in_window >= plan.limits.storm_limit as usize {
                rec.decision = Decision::Suppressed;
                rec.reason = Some(format!(
                    "{in_window} fixes for {}@{} in the last {} s (storm limit {})",
                    plan.service,
                    plan.host,
                    plan.limits.storm_window.as_secs_f64(),
                    plan.limits.storm_limit
                ));
            } else {
                rec.decision = Decision::Queued;
                seen_here.insert(key);
                *accepted_here.entry(target).or_default() += 1;
                jobs.push(Job {
                    id: rec.id.clone(),
                    received: now,
                    fingerprint: rec.fingerprint.clone(),
                    plan,
                });
            }
            records.push(rec);
        }
        if st.queued + jobs.len() > self.max_queue {
            return Err(Busy(format!(
                "the queue is full ({} queued, {} more asked, bound {})",
                st.queued,
                jobs.len(),
                self.max_queue
            )));
        }
        // Commit: reserve the room and remember the acceptances.
        st.queued += jobs.len();
        for j in &jobs {
            let t = j.target();
            st.seen.insert((j.fingerprint.clone(), t.clone()), now);
            let accepted = &mut st.targets.entry(t).or_default().accepted;
            accepted.push_back(now);
            let from = now - rules.horizon.as_secs_f64();
            while accepted.front().is_some_and(|&at| at < from) {
                accepted.pop_front();
            }
        }
        prune(&mut st, now, rules.horizon.as_secs_f64());
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
            let t = job.target();
            let ts = st.targets.entry(t.clone()).or_default();
            let was_idle = !ts.running && ts.queue.is_empty();
            ts.queue.push_back(job);
            if was_idle {
                st.ready.push_back(t);
            }
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
                if let Some(t) = st.ready.pop_front() {
                    let ts = st.targets.get_mut(&t).expect("a ready target exists");
                    let job = ts.queue.pop_front().expect("a ready target has a fix");
                    ts.running = true;
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
            // The target stays busy (`ts.running`) until the recorder has recorded the outcome.
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
                let ts = st.targets.get_mut(&t).expect("a running target exists");
                ts.running = false;
                if !ts.queue.is_empty() && !st.stopping {
                    st.ready.push_back(t);
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
        let mut cancelled = Vec::new();
        let targets: Vec<Target> = st.targets.keys().cloned().collect();
        for t in targets {
            if let Some(ts) = st.targets.get_mut(&t) {
                cancelled.extend(ts.queue.drain(..));
            }
        }
        st.queued -= cancelled.len();
        st.ready.clear();
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

/// Forgets acceptances older than the longest cool-down or storm window, and idle targets,
/// once the maps have grown (a fleet's worth of targets stays; a month of them does not).
fn prune(st: &mut State, now: f64, horizon: f64) {
    let from = now - horizon;
    if st.seen.len() > 4096 {
        st.seen.retain(|_, at| *at >= from);
    }
    if st.targets.len() > 4096 {
        st.targets.retain(|_, t| {
            while t.accepted.front().is_some_and(|&at| at < from) {
                t.accepted.pop_front();
            }
            t.running || !t.queue.is_empty() || !t.accepted.is_empty()
        });
    }
}
