//! Just enough HTTP/1.1 for a webhook receiver, on std's `TcpStream`: a request head bounded in
//! size, a body only with `Content-Length` and bounded before a byte of it is read,
//! `Expect: 100-continue`, keep-alive, and responses with a length. No TLS (put a proxy in
//! front, or keep the default loopback address).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 16 * 1024;

/// A request's head.
#[derive(Debug, Clone)]
pub struct Head {
    /// `GET`, `POST`...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query's pairs, percent-decoded.
    pub query: Vec<(String, String)>,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// `HTTP/1.1` keeps the connection unless told otherwise; `HTTP/1.0` does not.
    pub keep_alive: bool,
}

impl Head {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query value named `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The content type.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Close the connection after it (set for errors that leave the body unread).
    pub close: bool,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec(value).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body,
            close: false,
        }
    }

    /// An error: `{"error": why}`.
    pub fn error(status: u16, why: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": why }))
    }

    /// A plain text response.
    pub fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into_bytes(),
            close: false,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes `r`.
pub fn write_response(w: &mut impl Write, r: &Response) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    for (n, v) in &r.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if r.close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut all = head.into_bytes();
    all.extend_from_slice(&r.body);
    w.write_all(&all)?;
    w.flush()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes a query component (`+` is a space).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed or went quiet between requests: just close.
    Closed,
    /// A malformed or oversized head: answer this and close.
    Bad(Response),
}

/// Reads one request head. `idle` bounds the wait for its first byte (keep-alive), and
/// `stop` is polled meanwhile so that a stopping server closes idle connections.
pub fn read_head(
    r: &mut BufReader<TcpStream>,
    idle: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<Head, HeadError> {
    // Wait for the first byte in short slices, so a stop is seen within one slice.
    let slice = Duration::from_millis(200);
    let waited = Instant::now();
    loop {
        let _ = r.get_ref().set_read_timeout(Some(slice));
        match r.fill_buf() {
            Ok([]) => return Err(HeadError::Closed),
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop() || waited.elapsed() >= idle {
                    return Err(HeadError::Closed);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(HeadError::Closed),
        }
    }
    // The rest of the head must come promptly.
    let _ = r.get_ref().set_read_timeout(Some(Duration::from_secs(10)));
    let mut raw = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r
            .by_ref()
            .take((MAX_HEAD - raw.len()) as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        raw.extend_from_slice(&line);
        if raw.len() > MAX_HEAD {
            let mut resp = Response::error(431, "the request head is over 16 KiB");
            resp.close = true;
            return Err(HeadError::Bad(resp));
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let bad = |why: &str| {
        let mut resp = Response::error(400, why);
        resp.close = true;
        HeadError::Bad(resp)
    };
    let text = std::str::from_utf8(&raw).map_err(|_| bad("the request head is not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad("only HTTP/1.x is spoken here"));
    }
    let mut headers = Vec::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let Some((n, v)) = l.split_once(':') else {
            return Err(bad("malformed header line"));
        };
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let mut head = Head {
        method: method.to_owned(),
        path: path.to_owned(),
        query,
        headers,
        keep_alive: version == "HTTP/1.1",
    };
    if head
        .header("connection")
        .is_some_and(|c| c.eq_ignore_ascii_case("close"))
    {
        head.keep_alive = false;
    }
    Ok(head)
}

/// Reads a body of exactly `len` bytes (already checked against the bound).
pub fn read_body(r: &mut BufReader<TcpStream>, len: usize) -> std::io::Result<Vec<u8>> {
    let _ = r.get_ref().set_read_timeout(Some(Duration::from_secs(30)));
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// After refusing a body without reading it: read and drop what the client still sends (for a
/// moment, within a bound), so that closing does not reset the connection before the client
/// has read the answer.
pub fn drain(r: &mut BufReader<TcpStream>) {
    let _ = r.get_ref().shutdown(std::net::Shutdown::Write);
    let _ = r
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)));
    let until = Instant::now() + Duration::from_secs(2);
    let mut left: usize = 64 << 20;
    let mut buf = [0u8; 64 * 1024];
    while Instant::now() < until && left > 0 {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(
            percent_decode("2024-01-01T00%3A00%3A00Z"),
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
