//! Fixes on alert: `disco serve` (Alertmanager webhooks → rules → dedup, storm control,
//! per-target serialisation, a bounded queue → the fix-module host), its durable history and
//! metrics, the sinks results go to, and `disco remote` (the Survivor scheduler's line
//! protocol).
//!
//! The path of one alert: `listen` (connections bounded, TLS, hyper) → `server` (routes,
//! `auth`, body bounds) → `alertmanager` (the payload) →
//! `rules` (which fix, for which target, with which options) → `dispatch` (deduplicated,
//! suppressed or queued; journaled by `history` before anything runs) → `runner` (a pool of
//! `disco __serve-fix` workers, one fix at a time each, each with one
//! [`crate::supervise::Supervisor`]) → the recorder in `dispatch`: `history` (outcome, Survivor
//! fixhistory line), `metrics`, `sinks`.

mod alertmanager;
mod auth;
mod dispatch;
mod error;
mod framing;
mod history;
mod http;
mod listen;
mod metrics;
mod page;
mod policy;
mod remote;
mod rotate;
mod rules;
mod runner;
mod server;
mod sinks;
mod tls;

pub use alertmanager::{Alert, Payload};
pub use auth::{Refused, Token};
pub use dispatch::{Busy, Dispatcher, Job, Recorder, Target, Ticket};
pub use error::ServeError;
pub use history::{
    fixhistory_line, local_time, now, parse_since, BadSince, Decision, FixRecord, FixView, Journal,
    OutcomeRecord, Query, Record, RequestRecord, JOURNAL,
};
pub use http::{escape_control, RefusalLog, Response};
pub use listen::{Bounds, MAX_HEAD};
pub use metrics::{Gauges, Metrics};
pub use page::{page, recent_fixes, BadCursor, Cursor, Page, DEFAULT_LIMIT, MAX_LIMIT};
pub use policy::{Admissions, Ask, QueueFull, Schedule, Verdict};
pub use remote::Remote;
pub use rotate::Retention;
pub use rules::{
    check_target_name, default_module_dir, resolve_module, strip_port, BadTargetName, Limits,
    PlanError, Planned, Rule, RuleError, Rules, Source,
};
pub use runner::{serve_fixes, Answer, ChildSpec, Ran, Runner};
pub use server::{serve, App, Config, MAX_BODY};
pub use sinks::{Plugin, Sink, SinkError, Sinks, Textfile, ABI_VERSION, TEXTFILE};
pub use tls::{TlsError, TlsFiles};
