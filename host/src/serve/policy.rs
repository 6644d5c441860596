//! The dispatcher's policy as pure functions of its state, with no threads, clocks or I/O
//! (`dispatch.rs` is its executor):
//! - [`Admissions::decide`]: for each alert of one request, whether its fix is queued,
//!   coalesced with the same alert accepted earlier (`deduplicated`: the same fingerprint for
//!   the same target within the rule's cool-down, or earlier in this very request),
//!   `suppressed` (the target already had `storm_limit` fixes accepted in the storm window), or
//!   nothing at all (resolved, unmatched, rejected); and whether the whole request is refused
//!   because its fixes do not fit the bounded queue (a partial accept would make
//!   Alertmanager's retry look like duplicates).
//! - [`Schedule`]: which queued fix runs next and which waits: one fix per target at a time,
//!   each target's fixes in arrival order, targets in the order they became ready.

use std::collections::{HashMap, HashSet, VecDeque};

use super::rules::Limits;

/// `service@host`, as (host, service).
pub type Target = (String, String);

/// One alert of a request, as the policy sees it.
#[derive(Debug, Clone)]
pub enum Ask<'a> {
    /// The alert is resolved.
    Resolved,
    /// No rule matches it.
    Unmatched,
    /// The matching rule cannot make a fix of it, and why.
    Rejected(String),
    /// A fix for `target`.
    Fix {
        /// The alert's fingerprint.
        fingerprint: &'a str,
        /// Its target.
        target: Target,
        /// The rule's dedup and storm settings.
        limits: Limits,
    },
}

/// What the policy decided for one alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Resolved: nothing runs.
    Resolved,
    /// No rule matched.
    Unmatched,
    /// The rule could not plan a fix, and why.
    Rejected(String),
    /// Coalesced with an earlier acceptance, and why.
    Deduplicated(String),
    /// Over the storm limit, and why.
    Suppressed(String),
    /// Queued: it will run.
    Queued,
}

/// The whole request is refused: its fixes do not fit the queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the queue is full ({queued} queued, {asked} more asked, bound {bound})")]
pub struct QueueFull {
    /// Fixes queued now.
    pub queued: usize,
    /// Fixes this request would queue.
    pub asked: usize,
    /// The bound.
    pub bound: usize,
}

/// What the policy remembers of earlier acceptances: the last of each fingerprint for each
/// target, and each target's acceptances within the longest window.
#[derive(Debug, Default)]
pub struct Admissions {
    seen: HashMap<(String, Target), f64>,
    accepted: HashMap<Target, VecDeque<f64>>,
}

impl Admissions {
    /// Decides every alert of one request arriving at `now`, with `queued` fixes waiting and
    /// room for `max_queue`. Changes nothing: [`Admissions::admit`] records the queued ones.
    pub fn decide(
        &self,
        asks: &[Ask<'_>],
        now: f64,
        queued: usize,
        max_queue: usize,
    ) -> Result<Vec<Verdict>, QueueFull> {
        let mut seen_here: HashSet<(&str, &Target)> = HashSet::new();
        let mut accepted_here: HashMap<&Target, usize> = HashMap::new();
        let mut verdicts = Vec::with_capacity(asks.len());
        for ask in asks {
            let (fingerprint, target, limits) = match ask {
                Ask::Resolved => {
                    verdicts.push(Verdict::Resolved);
                    continue;
                }
                Ask::Unmatched => {
                    verdicts.push(Verdict::Unmatched);
                    continue;
                }
                Ask::Rejected(why) => {
                    verdicts.push(Verdict::Rejected(why.clone()));
                    continue;
                }
                Ask::Fix {
                    fingerprint,
                    target,
                    limits,
                } => (*fingerprint, target, limits),
            };
            let cooldown = limits.cooldown.as_secs_f64();
            let window_start = now - limits.storm_window.as_secs_f64();
            let last = self
                .seen
                .get(&(fingerprint.to_owned(), target.clone()))
                .copied();
            let in_window = self
                .accepted
                .get(target)
                .map_or(0, |a| a.iter().filter(|&&at| at >= window_start).count())
                + accepted_here.get(target).copied().unwrap_or(0);
            let (service, host) = (&target.1, &target.0);
            let verdict = if seen_here.contains(&(fingerprint, target)) {
                Verdict::Deduplicated(
                    "the same alert for the same target came earlier in this request".to_owned(),
                )
            } else if let Some(at) = last.filter(|&at| now - at < cooldown) {
                Verdict::Deduplicated(format!(
                    "the same alert for {service}@{host} was accepted {:.1} s ago (cool-down {cooldown} s)",
                    now - at,
                ))
            } else if in_window >= limits.storm_limit as usize {
                Verdict::Suppressed(format!(
                    "{in_window} fixes for {service}@{host} in the last {} s (storm limit {})",
                    limits.storm_window.as_secs_f64(),
                    limits.storm_limit
                ))
            } else {
                seen_here.insert((fingerprint, target));
                *accepted_here.entry(target).or_default() += 1;
                Verdict::Queued
            };
            verdicts.push(verdict);
        }
        let asked = verdicts.iter().filter(|v| **v == Verdict::Queued).count();
        if queued + asked > max_queue {
            return Err(QueueFull {
                queued,
                asked,
                bound: max_queue,
            });
        }
        Ok(verdicts)
    }

    /// Records that a fix for `target` was accepted at `at`; forgets acceptances of it older
    /// than `horizon` seconds (the longest cool-down or storm window).
    pub fn admit(&mut self, fingerprint: &str, target: &Target, at: f64, horizon: f64) {
        self.seen
            .insert((fingerprint.to_owned(), target.clone()), at);
        let accepted = self.accepted.entry(target.clone()).or_default();
        accepted.push_back(at);
        while accepted.front().is_some_and(|&t| t < at - horizon) {
            accepted.pop_front();
        }
    }

    /// Forgets acceptances older than `horizon`, once the maps have grown (a fleet's worth of
    /// targets stays; a month of them does not).
    pub fn prune(&mut self, now: f64, horizon: f64) {
        let from = now - horizon;
        if self.seen.len() > 4096 {
            self.seen.retain(|_, at| *at >= from);
        }
        if self.accepted.len() > 4096 {
            self.accepted.retain(|_, a| {
                while a.front().is_some_and(|&at| at < from) {
                    a.pop_front();
                }
                !a.is_empty()
            });
        }
    }
}

#[derive(Debug)]
struct Lane<J> {
    queue: VecDeque<J>,
    running: bool,
}

/// Which queued fix runs next: a target with a running fix is never ready, so two fixes never
/// run for one target at once, and its fixes run in arrival order.
#[derive(Debug)]
pub struct Schedule<J> {
    lanes: HashMap<Target, Lane<J>>,
    ready: VecDeque<Target>,
}

impl<J> Default for Schedule<J> {
    fn default() -> Self {
        Schedule {
            lanes: HashMap::new(),
            ready: VecDeque::new(),
        }
    }
}

impl<J> Schedule<J> {
    /// Queues `job` for `target`; the target becomes ready if it was idle.
    pub fn push(&mut self, target: Target, job: J) {
        let lane = self.lanes.entry(target.clone()).or_insert_with(|| Lane {
            queue: VecDeque::new(),
            running: false,
        });
        let was_idle = !lane.running && lane.queue.is_empty();
        lane.queue.push_back(job);
        if was_idle {
            self.ready.push_back(target);
        }
    }

    /// The next fix to run, its target now busy; `None` when every queued fix waits.
    pub fn start(&mut self) -> Option<(Target, J)> {
        let target = self.ready.pop_front()?;
        let lane = self.lanes.get_mut(&target)?;
        let job = lane.queue.pop_front()?;
        lane.running = true;
        Some((target, job))
    }

    /// `target`'s fix is done (recorded): its next fix, if any, becomes ready unless `stopping`.
    /// Says whether one became ready.
    pub fn done(&mut self, target: &Target, stopping: bool) -> bool {
        let Some(lane) = self.lanes.get_mut(target) else {
            return false;
        };
        lane.running = false;
        if lane.queue.is_empty() {
            self.lanes.remove(target);
            false
        } else if stopping {
            false
        } else {
            self.ready.push_back(target.clone());
            true
        }
    }

    /// Takes every fix that has not started (the server is stopping).
    pub fn cancel_all(&mut self) -> Vec<J> {
        self.ready.clear();
        self.lanes
            .values_mut()
            .flat_map(|l| l.queue.drain(..))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(host: &str) -> Target {
        (host.to_owned(), "svc".to_owned())
    }

    fn limits(cooldown: u64, storm_limit: u32, storm_window: u64) -> Limits {
        Limits {
            cooldown: Duration::from_secs(cooldown),
            storm_limit,
            storm_window: Duration::from_secs(storm_window),
        }
    }

    fn fix<'a>(fp: &'a str, host: &str, l: Limits) -> Ask<'a> {
        Ask::Fix {
            fingerprint: fp,
            target: t(host),
            limits: l,
        }
    }

    fn kinds(v: &[Verdict]) -> Vec<&'static str> {
        v.iter()
            .map(|v| match v {
                Verdict::Resolved => "resolved",
                Verdict::Unmatched => "unmatched",
                Verdict::Rejected(_) => "rejected",
                Verdict::Deduplicated(_) => "deduplicated",
                Verdict::Suppressed(_) => "suppressed",
                Verdict::Queued => "queued",
            })
            .collect()
    }

    #[test]
    fn duplicates_coalesce_within_a_request_and_within_the_cooldown() {
        let l = limits(300, 10, 600);
        let mut a = Admissions::default();
        let asks = [
            fix("f1", "h1", l),
            fix("f1", "h1", l),
            fix("f1", "h2", l),
            Ask::Resolved,
            Ask::Unmatched,
            Ask::Rejected("no host".into()),
        ];
        let v = a.decide(&asks, 1000.0, 0, 100).unwrap();
        assert_eq!(
            kinds(&v),
            [
                "queued",
                "deduplicated",
                "queued",
                "resolved",
                "unmatched",
                "rejected"
            ]
        );
        a.admit("f1", &t("h1"), 1000.0, 600.0);
        // Within the cool-down: coalesced; after it: queued again.
        let v = a.decide(&[fix("f1", "h1", l)], 1299.0, 0, 100).unwrap();
        assert_eq!(kinds(&v), ["deduplicated"]);
        assert!(matches!(&v[0], Verdict::Deduplicated(why) if why.contains("299.0 s ago")));
        let v = a.decide(&[fix("f1", "h1", l)], 1301.0, 0, 100).unwrap();
        assert_eq!(kinds(&v), ["queued"]);
    }

    #[test]
    fn a_storm_on_one_target_is_suppressed_and_others_are_not() {
        let l = limits(0, 2, 60);
        let mut a = Admissions::default();
        a.admit("a", &t("h1"), 10.0, 60.0);
        let asks = [fix("b", "h1", l), fix("c", "h1", l), fix("d", "h2", l)];
        let v = a.decide(&asks, 20.0, 0, 100).unwrap();
        assert_eq!(kinds(&v), ["queued", "suppressed", "queued"]);
        // Once the window has passed, the target is open again.
        let v = a.decide(&[fix("e", "h1", l)], 71.0, 0, 100).unwrap();
        assert_eq!(kinds(&v), ["queued"]);
    }

    #[test]
    fn a_request_that_does_not_fit_is_refused_whole() {
        let l = limits(0, 100, 60);
        let a = Admissions::default();
        let asks = [fix("a", "h1", l), fix("b", "h2", l), Ask::Resolved];
        assert_eq!(
            a.decide(&asks, 0.0, 9, 10),
            Err(QueueFull {
                queued: 9,
                asked: 2,
                bound: 10
            })
        );
        assert!(a.decide(&asks, 0.0, 8, 10).is_ok());
    }

    #[test]
    fn one_fix_per_target_at_a_time_in_arrival_order() {
        let mut s = Schedule::default();
        s.push(t("h1"), 1);
        s.push(t("h1"), 2);
        s.push(t("h2"), 3);
        assert_eq!(s.start(), Some((t("h1"), 1)));
        // h1 is busy: its second fix waits, h2 runs.
        assert_eq!(s.start(), Some((t("h2"), 3)));
        assert_eq!(s.start(), None);
        assert!(s.done(&t("h1"), false));
        assert_eq!(s.start(), Some((t("h1"), 2)));
        assert!(!s.done(&t("h1"), false));
        assert!(!s.done(&t("h2"), false));
        assert_eq!(s.start(), None);
        // Stopping: what waits is cancelled, nothing more becomes ready.
        s.push(t("h3"), 4);
        s.push(t("h3"), 5);
        assert_eq!(s.start(), Some((t("h3"), 4)));
        assert_eq!(s.cancel_all(), vec![5]);
        assert!(!s.done(&t("h3"), true));
        assert_eq!(s.start(), None);
    }
}
