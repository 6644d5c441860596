//! Request heads as hyper reads them, looked at once more for what hyper lets through: a
//! request with more than one `Content-Length` field.
//!
//! hyper answers 400 to two different `Content-Length`s but takes two equal ones as one
//! (RFC 9112 §6.3 allows it), and the service never sees that there were two. disco refuses
//! them all (issue 16): a peer that repeats the field is broken or probing. hyper still parses
//! and frames every request; [`Scanner`] follows the bytes hyper reads on a connection (an I/O
//! wrapper feeds it every read, before hyper parses them) and frames them as hyper does: each
//! head with `httparse` (the parser hyper uses), then its body by the same rules (a chunked
//! `Transfer-Encoding` wins over `Content-Length`, else `Content-Length`, else no body), a
//! chunked body chunk by chunk up to its trailers. It notes, per head and in order, whether the
//! head had more than one `Content-Length`; the service takes one note per request
//! ([`Heads::next`]), so pipelined requests stay in step, and bytes inside a body are skipped
//! by count, never parsed as a head.
//!
//! Where the scanner cannot frame what follows as surely as hyper (a head or chunk line it
//! cannot parse, which hyper refuses too and then closes; `CONNECT` or `Upgrade`; a
//! `Transfer-Encoding` without chunked, which hyper refuses) it stops looking for the rest of
//! the connection: it never flags a request it has not framed, and an unflagged duplicate is
//! only what hyper alone would accept.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// The most a head, a chunk-size line or a trailer section may take before the scanner stops
/// looking (hyper refuses a head over [`super::MAX_HEAD`] itself).
const MAX_LINE: usize = super::MAX_HEAD + 1024;
/// The most header fields parsed in one head (hyper's default is 100; a head with more is
/// refused by hyper, and one the scanner cannot parse is not flagged).
const MAX_HEADERS: usize = 128;

/// One connection's notes, one per request head in order: whether it had more than one
/// `Content-Length` field.
#[derive(Debug, Clone, Default)]
pub struct Heads(Arc<Mutex<VecDeque<bool>>>);

impl Heads {
    fn push(&self, duplicate: bool) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(duplicate);
    }

    /// The note of the next request hyper hands the service: whether its head repeated
    /// `Content-Length` (false when the scanner did not frame it).
    pub fn next(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .unwrap_or(false)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a head, a line at a time.
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping this many chunk bytes.
    ChunkData(u64),
    /// Reading the line break after a chunk's data.
    ChunkEnd,
    /// Reading trailer lines until an empty one.
    Trailers,
    /// No longer framing this connection.
    Lost,
}

/// Frames the bytes of one connection as hyper does, noting each head into [`Heads`].
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// The line (or head) read so far.
    buf: Vec<u8>,
    /// Trailer bytes read so far.
    trailers: usize,
    heads: Heads,
}

impl Scanner {
    /// A scanner at the start of a connection, noting into `heads`.
    pub fn new(heads: Heads) -> Scanner {
        Scanner {
            state: State::Head,
            buf: Vec::new(),
            trailers: 0,
            heads,
        }
    }

    /// Takes the next bytes read from the connection.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Lost => return,
                State::Body(n) | State::ChunkData(n) => {
                    let k = usize::try_from(n).unwrap_or(usize::MAX).min(data.len());
                    data = &data[k..];
                    let left = n - k as u64;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), l) => State::Body(l),
                        (_, 0) => State::ChunkEnd,
                        (_, l) => State::ChunkData(l),
                    };
                }
                State::Head | State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    // Line by line: nothing past a line's end is taken before it is framed.
                    let end = data
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(data.len(), |i| i + 1);
                    self.buf.extend_from_slice(&data[..end]);
                    data = &data[end..];
                    if self.buf.len() > MAX_LINE {
                        self.state = State::Lost;
                    } else if self.buf.ends_with(b"\n") {
                        self.line();
                    }
                }
            }
        }
    }

    /// A whole line is in `buf`.
    fn line(&mut self) {
        let line = std::mem::take(&mut self.buf);
        let blank = line == b"\r\n" || line == b"\n";
        match self.state {
            State::Head => self.head(line),
            State::ChunkSize => {
                self.state = match httparse::parse_chunk_size(&line) {
                    Ok(httparse::Status::Complete((_, 0))) => {
                        self.trailers = 0;
                        State::Trailers
                    }
                    Ok(httparse::Status::Complete((_, n))) => State::ChunkData(n),
                    _ => State::Lost,
                };
            }
            State::ChunkEnd => {
                self.state = if blank { State::ChunkSize } else { State::Lost };
            }
            State::Trailers => {
                self.trailers += line.len();
                if blank {
                    self.state = State::Head;
                } else if self.trailers > MAX_LINE {
                    self.state = State::Lost;
                }
            }
            State::Body(_) | State::ChunkData(_) | State::Lost => {}
        }
    }

    /// `head` holds a head up to a line's end: parse it if it is whole, else keep it.
    fn head(&mut self, head: Vec<u8>) {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut fields);
        match req.parse(&head) {
            Ok(httparse::Status::Partial) => self.buf = head,
            Err(_) => self.state = State::Lost,
            Ok(httparse::Status::Complete(_)) => {
                let mut lengths = 0;
                let mut length = None;
                let mut chunked = None;
                let mut upgrade = req.method == Some("CONNECT");
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        lengths += 1;
                        length = length.or(Some(digits(h.value)));
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        // As hyper: the last field's last coding decides.
                        chunked = Some(
                            std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.rsplit(',').next())
                                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked")),
                        );
                    } else if h.name.eq_ignore_ascii_case("upgrade") {
                        upgrade = true;
                    }
                }
                self.heads.push(lengths > 1);
                self.state = match (chunked, length) {
                    _ if upgrade => State::Lost,
                    // hyper refuses these and closes.
                    (Some(_), _) if req.version != Some(1) => State::Lost,
                    (Some(false), _) => State::Lost,
                    (Some(true), _) => State::ChunkSize,
                    (None, Some(Some(0)) | None) => State::Head,
                    (None, Some(Some(n))) => State::Body(n),
                    (None, Some(None)) => State::Lost,
                };
            }
        }
    }
}

/// A `Content-Length` value as hyper reads it: ASCII digits only.
fn digits(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The notes for `bytes` fed in pieces of `step` bytes.
    fn notes(bytes: &[u8], step: usize) -> Vec<bool> {
        let heads = Heads::default();
        let mut s = Scanner::new(heads.clone());
        for piece in bytes.chunks(step) {
            s.feed(piece);
        }
        let mut v = Vec::new();
        while let Some(n) = heads.0.lock().unwrap().pop_front() {
            v.push(n);
        }
        v
    }

    #[test]
    fn a_repeated_content_length_is_noted_and_others_are_not() {
        let req =
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc";
        for step in [1, 2, 7, req.len()] {
            assert_eq!(notes(req, step), [true], "step {step}");
        }
        let ok = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(notes(ok, 1), [false]);
    }

    #[test]
    fn pipelined_requests_stay_in_step_and_a_body_is_never_a_head() {
        // The first body looks like a head with two Content-Lengths: it is skipped by count.
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        let mut bytes =
            format!("POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(b"GET /healthz HTTP/1.1\r\n\r\n");
        bytes.extend_from_slice(
            b"POST /b HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        );
        for step in [1, 3, 64, bytes.len()] {
            assert_eq!(notes(&bytes, step), [false, false, true], "step {step}");
        }
    }

    #[test]
    fn a_chunked_body_with_a_content_length_line_is_not_a_head() {
        let data = "Content-Length: 5\r\nContent-Length: 5\r\n\r\n";
        let mut bytes = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        bytes.extend_from_slice(format!("{:x};ext=1\r\n{data}\r\n", data.len()).as_bytes());
        bytes.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
        bytes.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        for step in [1, 5, bytes.len()] {
            assert_eq!(notes(&bytes, step), [false, false], "step {step}");
        }
    }

    #[test]
    fn what_cannot_be_framed_stops_the_scanner() {
        // Not a head: hyper refuses it and closes; nothing after it is noted.
        let bytes = b"\x01\x02 garbage\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(notes(bytes, 4), Vec::<bool>::new());
        // A bad length: hyper refuses it; the scanner does not guess the body.
        let bytes = b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(notes(bytes, 4), [false]);
    }
}
