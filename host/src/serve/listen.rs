//! The front door: accept, bound, (TLS,) and hand each connection to hyper.
//!
//! Every dimension a peer controls is bounded here or by hyper:
//! - connections: at most `max_connections` at once, at most `max_per_client` from one IP
//!   address; beyond either, a connection gets a canned 503 (written without waiting) and is
//!   closed at once, so a crowd of slow peers costs a socket each, never a slot the next
//!   webhook needs;
//! - time: the TLS handshake and each request head must be complete within `head_timeout`
//!   (hyper's header read timeout, which starts when the connection waits for a request, so
//!   it bounds an idle keep-alive connection too); a connection with no request in flight
//!   that reads nothing for `idle_timeout` is closed (a watchdog here, for an idle bound
//!   shorter than the head's); the body has its own deadline (`server.rs`);
//! - size: a head is at most [`MAX_HEAD`] bytes (hyper answers 431), a body at most
//!   [`super::MAX_BODY`] (`server.rs`).
//!
//! hyper does the framing (Content-Length or chunked, never both, keep-alive, a body left
//! unread is drained or the connection closed), so a request cannot be smuggled inside
//! another. `framing.rs` follows the same bytes to refuse (400, close) a head with more than
//! one `Content-Length`, which hyper accepts when the values are equal.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::framing::{Heads, Scanner};
use super::http::escape_control;
use super::server::App;

/// The largest request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;

/// How the front door is bounded.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Connections at once, in all.
    pub max_connections: usize,
    /// Connections at once from one IP address.
    pub max_per_client: usize,
    /// The deadline for the TLS handshake and for each request head (and so for an idle
    /// keep-alive connection).
    pub head_timeout: Duration,
    /// How long a connection with no request in flight may read nothing.
    pub idle_timeout: Duration,
}

#[derive(Debug, Default)]
struct Table {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Counts the connections open, in all and per address.
#[derive(Debug, Clone, Default)]
struct Slots(Arc<Mutex<Table>>);

/// One connection's place in [`Slots`], given back on drop.
struct Slot {
    slots: Slots,
    ip: IpAddr,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, ip: IpAddr, b: &Bounds) -> Result<Slot, &'static str> {
        let mut t = self.lock();
        if t.total >= b.max_connections {
            return Err("too many connections");
        }
        let mine = t.per_client.entry(ip).or_default();
        if *mine >= b.max_per_client {
            return Err("too many connections from this address");
        }
        *mine += 1;
        t.total += 1;
        Ok(Slot {
            slots: self.clone(),
            ip,
        })
    }

    fn total(&self) -> usize {
        self.lock().total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.lock();
        t.total -= 1;
        if let Some(n) = t.per_client.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.per_client.remove(&self.ip);
            }
        }
    }
}

/// Accepts until `stop` turns true, then lets the connections finish their requests (hyper's
/// graceful shutdown: idle ones close at once) for at most `drain`.
pub async fn accept(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    bounds: Bounds,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let slots = Slots::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stopped(&mut stop) => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, or a connection reset before accept: keep serving,
                    // after a breath so that a full descriptor table does not spin.
                    app.refusals.warn(&format!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match slots.take(peer.ip(), &bounds) {
            Ok(s) => s,
            Err(why) => {
                app.metrics.connection_refused(why);
                app.refusals.warn(&format!("{peer}: 503 {why}"));
                refuse(&stream, why);
                continue;
            }
        };
        let (app, tls, stop) = (Arc::clone(&app), tls.clone(), stop.clone());
        tokio::spawn(async move {
            connection(stream, peer, &app, tls, bounds, stop).await;
            drop(slot);
        });
    }
    drop(listener);
    let until = tokio::time::Instant::now() + drain;
    while slots.total() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Returns once the server stops (or whoever said so is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Answers 503 without waiting: what the socket buffer takes now, or nothing.
fn refuse(stream: &TcpStream, why: &str) {
    let body = format!("{{\"error\":\"{why}\"}}\n");
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(resp.as_bytes());
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: &Arc<App>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    bounds: Bounds,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let head_timeout = bounds.head_timeout;
    let Some(tls) = tls else {
        return http(stream, peer, app, bounds, stop).await;
    };
    match tokio::time::timeout(head_timeout, tls.accept(stream)).await {
        Ok(Ok(s)) => http(s, peer, app, bounds, stop).await,
        Ok(Err(e)) => {
            app.metrics.connection_refused("tls handshake failed");
            app.refusals.warn(&format!(
                "{peer}: TLS handshake failed: {}",
                escape_control(&e.to_string())
            ));
        }
        Err(_) => {
            app.metrics.connection_refused("tls handshake timed out");
            app.refusals.warn(&format!(
                "{peer}: TLS handshake not done in {head_timeout:?}"
            ));
        }
    }
}

/// What a connection is doing, for the idle watchdog.
#[derive(Debug)]
struct Activity {
    since: tokio::time::Instant,
    /// Milliseconds from `since` to the last read that brought bytes, or the last answer.
    last: AtomicU64,
    /// Requests being answered.
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }
}

/// Counts a request in flight until dropped, then marks the connection active.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(a))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's I/O, noting when a read brings bytes, and framing what it reads.
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
    scanner: Scanner,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
            self.scanner.feed(&buf.filled()[before..]);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

async fn http<I>(
    io: I,
    peer: SocketAddr,
    app: &Arc<App>,
    bounds: Bounds,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        since: tokio::time::Instant::now(),
        last: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let heads = Heads::default();
    let service = {
        let (app, activity, heads) = (Arc::clone(app), Arc::clone(&activity), heads.clone());
        service_fn(move |req| {
            let app = Arc::clone(&app);
            let busy = InFlight::new(&activity);
            // Taken now, in request order: hyper hands the service its requests in order.
            let repeated = heads.next();
            async move {
                let resp = if repeated {
                    app.repeated_length(peer)
                } else {
                    app.handle(req, peer).await
                };
                drop(busy);
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    };
    let io = Watched {
        io,
        activity: Arc::clone(&activity),
        scanner: Scanner::new(heads),
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.head_timeout)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    // The watchdog looks a few times per idle period; a connection closes within about a
    // quarter of it past the bound.
    let mut tick = tokio::time::interval((bounds.idle_timeout / 4).max(Duration::from_millis(10)));
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = stopped(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
            _ = tick.tick() => {
                if activity.in_flight.load(Ordering::Relaxed) == 0
                    && activity.idle_for() >= bounds.idle_timeout
                {
                    // Idle: hyper closes at once; half a head keeps its own deadline.
                    conn.as_mut().graceful_shutdown();
                    break conn.await;
                }
            }
        }
    };
    if let Err(e) = result {
        // A head that timed out or did not parse: hyper has answered (408, 400, 431) or
        // closed; say so, at a bounded rate.
        if e.is_timeout() || e.is_parse() || e.is_parse_too_large() {
            app.metrics.request(if e.is_timeout() {
                408
            } else if e.is_parse_too_large() {
                431
            } else {
                400
            });
            app.refusals
                .warn(&format!("{peer}: {}", escape_control(&e.to_string())));
        }
    }
}
