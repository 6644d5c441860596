//! `disco serve`: the routes, who may use them, and an orderly stop.
//!
//! HTTP runs on a small tokio runtime (`listen.rs`: hyper, bounded connections); the fixes run
//! on threads of their own, `max_concurrent` workers and one recorder in the [`Dispatcher`].
//! What blocks (the journal's `fdatasync`, reading the history) runs on tokio's blocking
//! threads, so a slow disk never stalls the accept loop. On SIGTERM or SIGINT the server stops
//! accepting, lets the requests in flight finish, cancels fixes that have not started, waits
//! for running fixes (their host bounds their time) and their records, and returns.
//!
//! Nothing a peer sends without the token (when `--token-file` is set) reaches the journal:
//! only webhooks that passed the token are journaled, refused or not. The rest is counted in
//! `/metrics` and logged at a bounded rate ([`RefusalLog`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header;

use super::alertmanager::Payload;
use super::auth::Token;
use super::dispatch::{Dispatcher, Recorder};
use super::history::{self, Journal, Query, Record, RequestRecord};
use super::http::{escape_control, param, query_pairs, RefusalLog, Response};
use super::listen::{self, Bounds};
use super::metrics::Metrics;
use super::page::{self, Cursor};
use super::rotate::Retention;
use super::rules::Rules;
use super::runner::Runner;
use super::sinks::{Plugin, Sinks, Textfile};
use super::tls::{self, TlsFiles};
use super::ServeError;
use crate::output;

/// The largest request body accepted (Alertmanager's payloads are a few KiB).
pub const MAX_BODY: usize = 1 << 20;
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
    /// Connections from one IP address at once at most.
    pub max_connections_per_client: usize,
    /// The deadline for a request head (and a TLS handshake, and an idle keep-alive).
    pub head_timeout: Duration,
    /// How long a connection with no request in flight may read nothing.
    pub idle_timeout: Duration,
    /// The deadline for a request body.
    pub body_timeout: Duration,
    /// How much history is kept.
    pub retention: Retention,
    /// TLS (and mutual TLS), when given.
    pub tls: Option<TlsFiles>,
    /// A file holding the bearer token every request but `/healthz` and `/metrics` must carry.
    pub token_file: Option<PathBuf>,
    /// node_exporter's textfile directory.
    pub textfile: Option<PathBuf>,
    /// Native sink plugins.
    pub sink_plugins: Vec<PathBuf>,
    /// The `disco` binary the fix workers run (`disco __serve-fix`).
    pub exe: PathBuf,
}

/// The routes' shared state.
pub struct App {
    rules: Rules,
    token: Option<Token>,
    journal: Arc<Journal>,
    history_dir: PathBuf,
    /// The counters.
    pub(super) metrics: Arc<Metrics>,
    dispatcher: Arc<Dispatcher>,
    prefix: String,
    requests: AtomicU64,
    stop: Arc<AtomicBool>,
    sinks: usize,
    body_timeout: Duration,
    /// Refusals said in the log, at a bounded rate.
    pub(super) refusals: RefusalLog,
}

/// What the handlers need of a request's head, owned (so it can go to a blocking thread).
struct Head {
    method: String,
    path: String,
    query: Vec<(String, String)>,
}

impl App {
    fn authorised(&self, req: &hyper::Request<Incoming>) -> Result<(), Response> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        token.check(given).map_err(|why| {
            self.metrics.unauthenticated();
            let mut resp = Response::closing(401, &why.to_string());
            resp.headers
                .push(("WWW-Authenticate", "Bearer realm=\"disco\"".to_owned()));
            resp
        })
    }

    /// Answers one request; counts it, and logs it (at a bounded rate) when refused.
    pub(super) async fn handle(
        self: Arc<Self>,
        req: hyper::Request<Incoming>,
        remote: SocketAddr,
    ) -> hyper::Response<Full<Bytes>> {
        let head = Head {
            method: req.method().as_str().to_owned(),
            path: req.uri().path().to_owned(),
            query: query_pairs(req.uri().query().unwrap_or("")),
        };
        let resp = self.route(&head, req, remote).await;
        self.metrics.request(resp.status);
        if resp.status >= 400 {
            self.refusals.warn(&format!(
                "{remote} {} {}: {} {}",
                escape_control(&head.method),
                escape_control(&head.path),
                resp.status,
                escape_control(&resp.why())
            ));
        }
        resp.into_hyper()
    }

    /// The answer to a request whose head repeated `Content-Length` (hyper takes equal values
    /// as one; disco refuses the request and closes the connection, `framing.rs`).
    pub(super) fn repeated_length(&self, remote: SocketAddr) -> hyper::Response<Full<Bytes>> {
        let why = "more than one Content-Length field";
        self.metrics.request(400);
        self.refusals.warn(&format!("{remote}: 400 {why}"));
        Response::closing(400, why).into_hyper()
    }

    async fn route(
        self: &Arc<Self>,
        head: &Head,
        req: hyper::Request<Incoming>,
        remote: SocketAddr,
    ) -> Response {
        let allow = |methods: &str| {
            let mut resp = Response::closing(405, &format!("use {methods}"));
            resp.headers.push(("Allow", methods.to_owned()));
            resp
        };
        match (head.method.as_str(), head.path.as_str()) {
            ("GET", "/healthz") => self.healthz(),
            ("GET", "/metrics") => Response::text(
                200,
                crate::prom::CONTENT_TYPE,
                self.metrics.render(self.dispatcher.gauges()),
            ),
            ("GET", "/fixes") => match self.authorised(&req) {
                Err(resp) => resp,
                Ok(()) => {
                    let (app, query) = (Arc::clone(self), head.query.clone());
                    tokio::task::spawn_blocking(move || app.fixes(&query))
                        .await
                        .unwrap_or_else(|e| Response::error(500, &e.to_string()))
                }
            },
            ("POST", "/alertmanager") => match self.authorised(&req) {
                Err(resp) => resp,
                Ok(()) => self.alerts(head, req, remote).await,
            },
            (_, "/healthz" | "/metrics" | "/fixes") => allow("GET"),
            (_, "/alertmanager") => allow("POST"),
            _ => Response::closing(404, &format!("no such path {}", head.path)),
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

    fn fixes(&self, query: &[(String, String)]) -> Response {
        let since = match param(query, "since") {
            None => None,
            Some(s) => match history::parse_since(s, history::now()) {
                Ok(t) => Some(t),
                Err(why) => return Response::error(400, &why.to_string()),
            },
        };
        let q = Query {
            host: param(query, "host").map(str::to_owned),
            service: param(query, "service").map(str::to_owned),
            since,
        };
        let limit = match param(query, "limit").map(str::parse::<usize>) {
            None => page::DEFAULT_LIMIT,
            Some(Ok(n)) if (1..=page::MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                return Response::error(400, &format!("limit must be 1 to {}", page::MAX_LIMIT))
            }
        };
        let cursor = match param(query, "cursor").map(str::parse::<Cursor>) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => return Response::error(400, &e.to_string()),
        };
        match page::page(&self.history_dir, &q, cursor, limit) {
            Ok(p) => {
                let mut resp =
                    Response::json(200, &serde_json::to_value(&p.fixes).unwrap_or_default());
                if let Some(next) = p.next {
                    resp.headers.push(("X-Disco-Next-Cursor", next.to_string()));
                }
                resp
            }
            Err(e) => Response::error(500, &e.to_string()),
        }
    }

    /// A webhook that passed the token: its head checked before a byte of the body is read,
    /// the body read within its deadline and bound, then decided and journaled. A refusal is
    /// journaled too (the peer is known).
    async fn alerts(
        self: &Arc<Self>,
        head: &Head,
        req: hyper::Request<Incoming>,
        remote: SocketAddr,
    ) -> Response {
        let resp = match self.check_webhook(&req) {
            Err(resp) => resp,
            Ok(()) => {
                let body = Limited::new(req.into_body(), MAX_BODY);
                match tokio::time::timeout(self.body_timeout, body.collect()).await {
                    Err(_) => Response::closing(
                        408,
                        &format!("the body did not come within {:?}", self.body_timeout),
                    ),
                    Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                        Response::closing(413, &format!("the body is over {MAX_BODY} bytes"))
                    }
                    Ok(Err(e)) => Response::closing(400, &format!("cannot read the body: {e}")),
                    Ok(Ok(body)) => {
                        let (app, body) = (Arc::clone(self), body.to_bytes());
                        let method = head.method.clone();
                        return tokio::task::spawn_blocking(move || {
                            app.webhook(&method, &body, remote)
                        })
                        .await
                        .unwrap_or_else(|e| Response::error(500, &e.to_string()));
                    }
                }
            }
        };
        let app = Arc::clone(self);
        let (method, path) = (head.method.clone(), head.path.clone());
        tokio::task::spawn_blocking(move || app.journal_refusal(&method, &path, &resp, remote))
            .await
            .unwrap_or_else(|e| Response::error(500, &e.to_string()))
    }

    /// What a webhook's head must be: JSON, one length no larger than the bound.
    fn check_webhook(&self, req: &hyper::Request<Incoming>) -> Result<(), Response> {
        let headers = req.headers();
        let ctype = headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let media = ctype.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return Err(Response::closing(
                415,
                &format!("content type '{ctype}' is not application/json"),
            ));
        }
        // hyper refuses two different lengths and keeps one of two equal ones (RFC 9112
        // 6.3); a list in one header ("13, 13") it takes as one too, and it is refused here.
        let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
        let first = lengths.next();
        if lengths.next().is_some()
            || first.is_some_and(|v| !v.as_bytes().iter().all(u8::is_ascii_digit))
        {
            return Err(Response::closing(400, "more than one Content-Length"));
        }
        let len = hyper::body::Body::size_hint(req.body()).exact();
        if let Some(len) = len.filter(|&n| n > MAX_BODY as u64) {
            return Err(Response::closing(
                413,
                &format!("the body is {len} bytes, over the bound of {MAX_BODY}"),
            ));
        }
        Ok(())
    }

    /// Decides a webhook's alerts and journals them with the request, before answering.
    fn webhook(&self, method: &str, body: &[u8], remote: SocketAddr) -> Response {
        let payload: Payload = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => {
                let resp = Response::error(400, &format!("malformed Alertmanager payload: {e}"));
                return self.journal_refusal(method, "/alertmanager", &resp, remote);
            }
        };
        let request = self.next_request();
        let now = history::now();
        let n = payload.alerts.len();
        let ticket = match self.dispatcher.decide(&request, &payload, &self.rules, now) {
            Ok(t) => t,
            Err(busy) => {
                let mut resp = Response::error(503, &busy.0);
                resp.headers.push(("Retry-After", "5".to_owned()));
                return self.journal_request(&request, method, "/alertmanager", resp, remote, n);
            }
        };
        let mut records: Vec<Record> = ticket.records.iter().cloned().map(Record::Fix).collect();
        records.push(Record::Request(RequestRecord {
            time: now,
            request: request.clone(),
            remote: remote.to_string(),
            method: method.to_owned(),
            path: "/alertmanager".to_owned(),
            status: 200,
            alerts: n,
            reason: None,
        }));
        if let Err(e) = self.journal.append(&records) {
            self.dispatcher.abandon(ticket);
            output::error(&e.to_string());
            return Response::error(500, &e.to_string());
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
        let mut resp = Response::json(
            200,
            &serde_json::json!({ "request": request, "fixes": fixes }),
        );
        resp.headers.push(("X-Disco-Request", request));
        resp
    }

    fn next_request(&self) -> String {
        format!(
            "{}-r{}",
            self.prefix,
            self.requests.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    /// Journals an authenticated webhook that was refused; returns `resp`.
    fn journal_refusal(
        &self,
        method: &str,
        path: &str,
        resp: &Response,
        remote: SocketAddr,
    ) -> Response {
        let request = self.next_request();
        self.journal_request(&request, method, path, resp.clone(), remote, 0)
    }

    fn journal_request(
        &self,
        request: &str,
        method: &str,
        path: &str,
        resp: Response,
        remote: SocketAddr,
        alerts: usize,
    ) -> Response {
        let rec = Record::Request(RequestRecord {
            time: history::now(),
            request: request.to_owned(),
            remote: remote.to_string(),
            method: method.to_owned(),
            path: path.to_owned(),
            status: resp.status,
            alerts,
            reason: Some(resp.why()),
        });
        if let Err(e) = self.journal.append(&[rec]) {
            output::error(&e.to_string());
        }
        resp
    }
}

/// Lets the process hold a descriptor per connection (the soft limit is often 1024): up to
/// the hard limit, as much as the connection bound and the fixes' pipes need.
fn raise_descriptor_limit(max_connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let want = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(1024);
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
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
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let history_dir = config.state_dir.join("history");
    let journal = Arc::new(Journal::open(&history_dir, config.retention)?);
    // Only the tail the cool-downs and storm windows look at: start-up costs the same
    // whatever the history's size.
    let past = page::recent_fixes(&history_dir, history::now() - rules.horizon.as_secs_f64())?;
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
            retention: config.retention,
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

    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Two threads carry every connection (they only parse and wait); blocking work goes
        // to tokio's blocking pool.
        .worker_threads(2)
        .thread_name("http")
        .enable_all()
        .build()
        .map_err(|source| ServeError::Io {
            what: "start the HTTP runtime",
            source,
        })?;
    let entered = runtime.enter();
    let listener = std::net::TcpListener::bind(&config.listen)
        .and_then(|l| {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        })
        .map_err(|source| ServeError::Listen {
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
    raise_descriptor_limit(config.max_connections);
    let workers = dispatcher.start();
    let app = Arc::new(App {
        rules,
        token: token.as_deref().map(Token::new),
        journal,
        history_dir,
        metrics,
        dispatcher: Arc::clone(&dispatcher),
        prefix,
        requests: AtomicU64::new(0),
        stop: Arc::clone(&stop),
        sinks: n_sinks,
        body_timeout: config.body_timeout,
        refusals: RefusalLog::default(),
    });
    let bounds = Bounds {
        max_connections: config.max_connections,
        max_per_client: config.max_connections_per_client,
        head_timeout: config.head_timeout,
        idle_timeout: config.idle_timeout,
    };
    ready(addr);
    runtime.block_on(async {
        let (tell, stopped) = tokio::sync::watch::channel(false);
        // The signal handler only sets a flag; look at it five times a second.
        let flag = Arc::clone(&stop);
        tokio::spawn(async move {
            while !flag.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            output::info("stopping: no new connections; finishing the requests in flight");
            let _ = tell.send(true);
        });
        listen::accept(listener, app, tls, bounds, stopped, DRAIN).await;
    });
    drop(entered);
    runtime.shutdown_timeout(Duration::from_secs(1));
    let g = dispatcher.gauges();
    if g.running > 0 {
        output::info(&format!("waiting for {} running fixes", g.running));
    }
    dispatcher.stop(workers);
    output::info("stopped");
    Ok(())
}
