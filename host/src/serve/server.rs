//! `disco serve`: the listener, the routes, and an orderly stop.
//!
//! One thread accepts (polling, so a SIGTERM is seen within a fifth of a second), one thread
//! per connection (bounded; beyond the bound a connection gets 503 at once), and
//! `max_concurrent` fix workers and one recorder in the [`Dispatcher`]. On SIGTERM or SIGINT
//! the server stops accepting, lets the requests in flight finish, cancels fixes that have not
//! started, waits for running fixes (their host bounds their time) and their records, and
//! returns.

use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::alertmanager::Payload;
use super::dispatch::{Dispatcher, Recorder};
use super::history::{self, Journal, Query, Record, RequestRecord};
use super::http::{self, Head, HeadError, Response};
use super::metrics::Metrics;
use super::rules::Rules;
use super::runner::Runner;
use super::sinks::{Plugin, Sinks, Textfile};
use super::ServeError;
use crate::output;

/// The largest request body accepted (Alertmanager's payloads are a few KiB).
pub const MAX_BODY: usize = 1 << 20;
/// How long a keep-alive connection may sit idle.
const IDLE: Duration = Duration::from_secs(30);
/// How long a stop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(30);

/// Everything `disco serve` is told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (`127.0.0.1:9099`; port 0 picks one).
    pub listen: String,
    /// The rules file.
    pub rules: PathBuf,
    /// Where rule module NAMEs are looked up (`DIR/fix/NAME`).
    pub module_dir: PathBuf,
    /// The state directory (the history is `STATE/history`).
    pub state_dir: PathBuf,
    /// The host's lock directory.
    pub lock_dir: PathBuf,
    /// Fixes running at once at most.
    pub max_concurrent: usize,
    /// Fixes waiting at most; beyond, requests get 503.
    pub max_queue: usize,
    /// Connections served at once at most.
    pub max_connections: usize,
    /// A file holding the bearer token every request but `/healthz` and `/metrics` must carry.
    pub token_file: Option<PathBuf>,
    /// node_exporter's textfile directory.
    pub textfile: Option<PathBuf>,
    /// Native sink plugins.
    pub sink_plugins: Vec<PathBuf>,
    /// The `disco` binary the fix workers run (`disco __serve-fix`).
    pub exe: PathBuf,
}

struct App {
    rules: Rules,
    token: Option<String>,
    journal: Arc<Journal>,
    history_dir: PathBuf,
    metrics: Arc<Metrics>,
    dispatcher: Arc<Dispatcher>,
    prefix: String,
    requests: AtomicU64,
    stop: Arc<AtomicBool>,
    sinks: usize,
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl App {
    fn authorised(&self, head: &Head) -> Result<(), Response> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = head
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(g) if same(g.as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(unauthorised("wrong bearer token")),
            None => Err(unauthorised(
                "missing bearer token (Authorization: Bearer ...)",
            )),
        }
    }

    /// Answers one request; `body` reads the body once the head has passed every check.
    fn handle(
        &self,
        head: &Head,
        r: &mut BufReader<TcpStream>,
        remote: &SocketAddr,
    ) -> (Response, usize) {
        let allow = |methods: &str| {
            let mut resp = Response::error(405, &format!("use {methods}"));
            resp.headers.push(("Allow", methods.to_owned()));
            resp
        };
        match (head.method.as_str(), head.path.as_str()) {
            ("GET", "/healthz") => (self.healthz(), 0),
            ("GET", "/metrics") => (
                Response::text(
                    200,
                    "text/plain; version=0.0.4",
                    self.metrics.render(self.dispatcher.gauges()),
                ),
                0,
            ),
            ("GET", "/fixes") => match self.authorised(head) {
                Err(resp) => (resp, 0),
                Ok(()) => (self.fixes(head), 0),
            },
            ("POST", "/alertmanager") => match self.authorised(head) {
                Err(resp) => (resp, 0),
                Ok(()) => self.alerts(head, r, remote),
            },
            (_, "/healthz" | "/metrics" | "/fixes") => (allow("GET"), 0),
            (_, "/alertmanager") => (allow("POST"), 0),
            _ => (
                Response::error(404, &format!("no such path {}", head.path)),
                0,
            ),
        }
    }

    fn healthz(&self) -> Response {
        let g = self.dispatcher.gauges();
        let stopping = self.stop.load(Ordering::Relaxed);
        Response::json(
            if stopping { 503 } else { 200 },
            &serde_json::json!({
                "status": if stopping { "stopping" } else { "ok" },
                "rules": self.rules.rules.len(),
                "queued": g.queued,
                "running": g.running,
                "max_concurrent": g.max_concurrent,
                "sinks": self.sinks,
            }),
        )
    }

    fn fixes(&self, head: &Head) -> Response {
        let since = match head.param("since").filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => match history::parse_since(s, history::now()) {
                Ok(t) => Some(t),
                Err(why) => return Response::error(400, &why),
            },
        };
        let q = Query {
            host: head
                .param("host")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            service: head
                .param("service")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            since,
        };
        match history::read(&self.history_dir) {
            Ok((records, _)) => Response::json(
                200,
                &serde_json::to_value(history::fixes(&records, &q)).unwrap_or_default(),
            ),
            Err(e) => Response::error(500, &e.to_string()),
        }
    }

    fn alerts(
        &self,
        head: &Head,
        r: &mut BufReader<TcpStream>,
        remote: &SocketAddr,
    ) -> (Response, usize) {
        let closing = |status, why: &str| {
            let mut resp = Response::error(status, why);
            resp.close = true;
            (resp, 0)
        };
        let ctype = head.header("content-type").unwrap_or("");
        let media = ctype.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return closing(
                415,
                &format!("content type '{ctype}' is not application/json"),
            );
        }
        if head.header("transfer-encoding").is_some() {
            return closing(411, "send the body with a Content-Length");
        }
        let len = match head.header("content-length").map(str::parse::<u64>) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return closing(400, "malformed Content-Length"),
        };
        if len > MAX_BODY as u64 {
            return closing(
                413,
                &format!("the body is {len} bytes, over the bound of {MAX_BODY}"),
            );
        }
        if head
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            let _ = std::io::Write::write_all(r.get_mut(), b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let body = match http::read_body(r, len as usize) {
            Ok(b) => b,
            Err(e) => return closing(400, &format!("cannot read the body: {e}")),
        };
        let payload: Payload = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => {
                return (
                    Response::error(400, &format!("malformed Alertmanager payload: {e}")),
                    0,
                )
            }
        };
        let request = format!(
            "{}-r{}",
            self.prefix,
            self.requests.fetch_add(1, Ordering::Relaxed) + 1
        );
        let now = history::now();
        let n = payload.alerts.len();
        let ticket = match self.dispatcher.decide(&request, &payload, &self.rules, now) {
            Ok(t) => t,
            Err(busy) => {
                let mut resp = Response::error(503, &busy.0);
                resp.headers.push(("Retry-After", "5".to_owned()));
                return (resp, n);
            }
        };
        let mut records: Vec<Record> = ticket.records.iter().cloned().map(Record::Fix).collect();
        records.push(Record::Request(RequestRecord {
            time: now,
            request: request.clone(),
            remote: remote.to_string(),
            method: head.method.clone(),
            path: head.path.clone(),
            status: 200,
            alerts: n,
            reason: None,
        }));
        if let Err(e) = self.journal.append(&records) {
            self.dispatcher.abandon(ticket);
            return (Response::error(500, &e.to_string()), n);
        }
        let fixes: Vec<_> = ticket
            .records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "fingerprint": r.fingerprint, "decision": r.decision,
                    "host": r.host, "service": r.service, "reason": r.reason,
                })
            })
            .collect();
        self.dispatcher.enqueue(ticket);
        let resp = Response::json(
            200,
            &serde_json::json!({ "request": request, "fixes": fixes }),
        );
        // Already journaled with its fixes: mark so the caller does not record it again.
        let mut resp = resp;
        resp.headers.push(("X-Disco-Request", request));
        (resp, n)
    }

    /// Logs and journals what deserves it: every refusal, and every webhook.
    fn record(&self, head: Option<&Head>, resp: &Response, remote: &SocketAddr, alerts: usize) {
        self.metrics.request(resp.status);
        let (method, path) = head.map_or(("?", "?"), |h| (h.method.as_str(), h.path.as_str()));
        let journaled = resp.headers.iter().any(|(n, _)| *n == "X-Disco-Request");
        if resp.status < 400 {
            return;
        }
        let why = serde_json::from_slice::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        output::warning(&format!("{remote} {method} {path}: {} {why}", resp.status));
        if journaled {
            return;
        }
        let rec = Record::Request(RequestRecord {
            time: history::now(),
            request: format!(
                "{}-r{}",
                self.prefix,
                self.requests.fetch_add(1, Ordering::Relaxed) + 1
            ),
            remote: remote.to_string(),
            method: method.to_owned(),
            path: path.to_owned(),
            status: resp.status,
            alerts,
            reason: Some(why),
        });
        if let Err(e) = self.journal.append(&[rec]) {
            output::error(&e.to_string());
        }
    }
}

fn unauthorised(why: &str) -> Response {
    let mut resp = Response::error(401, why);
    resp.headers
        .push(("WWW-Authenticate", "Bearer realm=\"disco\"".to_owned()));
    resp
}

fn connection(app: &App, stream: TcpStream, remote: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut r = BufReader::new(stream);
    let stop = || app.stop.load(Ordering::Relaxed);
    loop {
        let head = match http::read_head(&mut r, IDLE, &stop) {
            Ok(h) => h,
            Err(HeadError::Closed) => return,
            Err(HeadError::Bad(resp)) => {
                app.record(None, &resp, &remote, 0);
                let _ = http::write_response(r.get_mut(), &resp);
                http::drain(&mut r);
                return;
            }
        };
        let (resp, alerts) = app.handle(&head, &mut r, &remote);
        app.record(Some(&head), &resp, &remote, alerts);
        if http::write_response(r.get_mut(), &resp).is_err() {
            return;
        }
        if resp.close {
            http::drain(&mut r);
            return;
        }
        if !head.keep_alive || stop() {
            return;
        }
    }
}

fn read_token(path: &Path) -> Result<String, ServeError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServeError::Read {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(ServeError::EmptyToken {
            path: path.to_owned(),
        });
    }
    Ok(token)
}

/// Runs the server until SIGTERM or SIGINT; `ready` is told the bound address once it listens.
pub fn serve(config: Config, ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    let rules = Rules::load(&config.rules, &config.module_dir)?;
    let token = config.token_file.as_deref().map(read_token).transpose()?;
    let history_dir = config.state_dir.join("history");
    let journal = Arc::new(Journal::open(&history_dir)?);
    let (past, torn) = history::read(&history_dir)?;
    if torn > 0 {
        output::warning(&format!(
            "history {}: {torn} unreadable lines skipped (torn by a crash?)",
            journal.path().display()
        ));
    }
    let metrics = Arc::new(Metrics::default());
    let mut sinks = Sinks::new(Arc::clone(&metrics));
    for path in &config.sink_plugins {
        match Plugin::load(path) {
            Ok(p) => sinks.push(Box::new(p)),
            // A broken plugin is reported and left out: it must never keep fixes from running.
            Err(why) => output::warning(&format!("{why}; left out")),
        }
    }
    let start = history::now();
    let prefix = format!("{:x}{:x}", start as u64, std::process::id());
    let recorder_sinks_textfile = config.textfile.clone();
    let n_sinks = sinks.len() + usize::from(recorder_sinks_textfile.is_some());
    // The textfile needs the dispatcher's gauges, and the dispatcher owns the sinks: the
    // textfile reads them through a slot filled once the dispatcher exists.
    let slot: Arc<std::sync::OnceLock<std::sync::Weak<Dispatcher>>> = Arc::default();
    if let Some(dir) = &recorder_sinks_textfile {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::History {
            path: dir.clone(),
            source,
        })?;
        let slot = Arc::clone(&slot);
        sinks.push(Box::new(Textfile::new(
            dir,
            Arc::clone(&metrics),
            Box::new(move || {
                slot.get()
                    .and_then(std::sync::Weak::upgrade)
                    .map(|d| d.gauges())
                    .unwrap_or_default()
            }),
        )));
    }
    let dispatcher = Arc::new(Dispatcher::new(
        config.max_concurrent,
        config.max_queue,
        prefix.clone(),
        Recorder {
            journal: Arc::clone(&journal),
            history_dir: history_dir.clone(),
            metrics: Arc::clone(&metrics),
            sinks,
            runner: Runner::new(&config.exe, &config.lock_dir),
        },
    ));
    let _ = slot.set(Arc::downgrade(&dispatcher));
    dispatcher.seed(&past, &rules, start);
    drop(past);
    journal.append(&[Record::Start {
        time: start,
        pid: std::process::id(),
    }])?;

    let listener = TcpListener::bind(&config.listen).map_err(|source| ServeError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|source| ServeError::Io {
            what: "install the SIGTERM handler",
            source,
        })?;
    }
    let workers = dispatcher.start();
    let app = Arc::new(App {
        rules,
        token,
        journal,
        history_dir,
        metrics,
        dispatcher: Arc::clone(&dispatcher),
        prefix,
        requests: AtomicU64::new(0),
        stop: Arc::clone(&stop),
        sinks: n_sinks,
    });
    ready(addr);
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        // Poll, so that a signal (which sets `stop`) is seen within one tick.
        let mut fds = [nix::poll::PollFd::new(
            listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(ServeError::Io {
                    what: "poll the listener",
                    source: e.into(),
                })
            }
        }
        let (stream, remote) = match listener.accept() {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: keep serving.
                tracing::warn!("accept: {e}");
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= config.max_connections {
            let mut s = stream;
            let mut resp = Response::error(503, "too many connections");
            resp.close = true;
            app.record(None, &resp, &remote, 0);
            let _ = http::write_response(&mut s, &resp);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (app, active) = (Arc::clone(&app), Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name("http".to_owned())
            .spawn(move || {
                connection(&app, stream, remote);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            output::warning(&format!("cannot start a connection thread: {e}"));
        }
    }
    drop(listener);
    output::info("stopping: no new connections; finishing the requests in flight");
    let until = Instant::now() + DRAIN;
    while active.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let g = dispatcher.gauges();
    if g.running > 0 {
        output::info(&format!("waiting for {} running fixes", g.running));
    }
    dispatcher.stop(workers);
    output::info("stopped");
    Ok(())
}
