//! What `disco serve` says over HTTP, and how it talks about what it heard: responses, query
//! parameters, and log lines about refusals (control characters escaped, at a bounded rate).
//!
//! Parsing, framing, keep-alive and timeouts are hyper's (`serve/listen.rs`); nothing here
//! reads from a socket.

use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;

/// A response, before it becomes hyper's.
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
    /// Close the connection after it (set when the request's body is left unread, so that
    /// nothing of it can be taken for the next request even by a lenient peer).
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

    /// An error after which the connection closes.
    pub fn closing(status: u16, why: &str) -> Response {
        Response {
            close: true,
            ..Response::error(status, why)
        }
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

    /// The `error` of a JSON error body, for the log.
    pub fn why(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// hyper's response.
    pub fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let mut b = hyper::Response::builder()
            .status(self.status)
            .header(hyper::header::CONTENT_TYPE, self.content_type);
        for (n, v) in &self.headers {
            b = b.header(*n, v.as_str());
        }
        if self.close {
            b = b.header(hyper::header::CONNECTION, "close");
        }
        b.body(Full::new(Bytes::from(self.body)))
            .unwrap_or_else(|_| {
                // Only a header value we made could be invalid; answer without it.
                let mut r = hyper::Response::new(Full::new(Bytes::new()));
                *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                r
            })
    }
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

/// A query string's pairs, percent-decoded.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The first value named `name` in `pairs`, when not empty.
pub fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// `s` with every control character (and backslash) written as an escape, cut at 200
/// characters: what a peer sends must not forge log lines or move a terminal's cursor.
pub fn escape_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(256));
    for (i, c) in s.chars().enumerate() {
        if i == 200 {
            out.push('…');
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&c.escape_default().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// Log lines about refusals, at most [`RefusalLog::BURST`] at once and
/// [`RefusalLog::PER_SECOND`] a second after that; what is held back is counted and said in
/// the next line that goes out. A flood of bad requests costs the log a few lines a second.
#[derive(Debug)]
pub struct RefusalLog {
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    held: u64,
}

impl Default for RefusalLog {
    fn default() -> RefusalLog {
        RefusalLog {
            bucket: Mutex::new(Bucket {
                tokens: RefusalLog::BURST,
                at: Instant::now(),
                held: 0,
            }),
        }
    }
}

impl RefusalLog {
    /// Lines that may go out at once.
    pub const BURST: f64 = 20.0;
    /// Lines a second after the burst.
    pub const PER_SECOND: f64 = 5.0;

    /// The line to write for `line` now (with the count held back since the last one), or
    /// `None` when it is held back. `line` is escaped by the caller.
    pub fn admit(&self, line: &str) -> Option<String> {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.at).as_secs_f64() * Self::PER_SECOND;
        b.tokens = (b.tokens + refill).min(Self::BURST);
        b.at = now;
        if b.tokens < 1.0 {
            b.held += 1;
            return None;
        }
        b.tokens -= 1.0;
        let held = std::mem::take(&mut b.held);
        Some(if held > 0 {
            format!("{line} ({held} similar lines held back)")
        } else {
            line.to_owned()
        })
    }

    /// Writes `line` as a warning, when admitted.
    pub fn warn(&self, line: &str) {
        if let Some(l) = self.admit(line) {
            crate::output::warning(&l);
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
        let q = query_pairs("host=a&limit=&x");
        assert_eq!(param(&q, "host"), Some("a"));
        assert_eq!(param(&q, "limit"), None);
    }

    #[test]
    fn escapes_control_characters() {
        assert_eq!(
            escape_control("/a\nwarning: b\x1b[2J"),
            "/a\\nwarning: b\\u{1b}[2J"
        );
        assert_eq!(escape_control("a\\b"), "a\\\\b");
        assert_eq!(escape_control(&"x".repeat(300)).chars().count(), 201);
    }

    #[test]
    fn refusal_log_is_bounded() {
        let log = RefusalLog::default();
        let admitted = (0..1000).filter(|_| log.admit("x").is_some()).count();
        assert_eq!(admitted, RefusalLog::BURST as usize);
        std::thread::sleep(std::time::Duration::from_millis(250));
        let line = log.admit("y").expect("a token came back");
        assert!(line.contains("980 similar lines held back"), "{line}");
    }
}
