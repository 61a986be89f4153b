//! A small HTTP/1.1 server for one connection, on plain blocking reads and
//! writes of a `std::net::TcpStream` (no epoll: see main.rs for why).
//!
//! - Requests: the request line and headers may take up to 16 KiB (else 431);
//!   the target must be origin-form (`/path?query`, not percent-decoded).
//! - Bodies: by `Content-Length` only, up to 1 MiB (else 413), read and
//!   dropped (no endpoint takes one); `Expect: 100-continue` is honoured.
//!   `Transfer-Encoding` (chunked) is answered with 501, since no client of
//!   the probe sends it.
//! - Keep-alive is the default for HTTP/1.1, opt-in (`Connection: keep-alive`)
//!   for HTTP/1.0; `Connection: close` is honoured. Pipelined requests are
//!   answered in order.
//! - Responses always carry Content-Type and Content-Length, never chunked;
//!   a HEAD response has the headers only.
//! - A malformed request gets a 4xx/5xx JSON `{"error": ...}` and the
//!   connection is closed. A client silent for 60 s is dropped.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Limit of the request line plus headers.
const MAX_HEAD: usize = 16 * 1024;
/// Limit of a request body.
const MAX_BODY: u64 = 1024 * 1024;
/// Reads and writes that make no progress for this long end the connection.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A request as the endpoints see it.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// What follows the first `?`, or empty.
    pub query: String,
}

/// A response; Content-Length and Connection are added when it is written.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra headers, e.g. `Allow`.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// `body` as one line of JSON.
    pub fn json(status: u16, body: &impl Serialize) -> Response {
        // Our bodies have string keys only, so this cannot fail; say so if it does.
        let mut bytes = serde_json::to_vec(body)
            .unwrap_or_else(|_| br#"{"error":"serializing response failed"}"#.to_vec());
        bytes.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: bytes,
        }
    }

    /// `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(status, &serde_json::json!({ "error": message.into() }))
    }

    pub fn text(status: u16, body: &[u8]) -> Response {
        Response {
            status,
            content_type: "text/plain",
            headers: Vec::new(),
            body: body.to_vec(),
        }
    }
}

/// Why a connection ends before a request reached the handler.
#[derive(Debug, PartialEq)]
enum Stop {
    /// EOF, a reset or a timeout: nobody to answer.
    Gone,
    /// Answer this, then close.
    Reject(u16, String),
}

/// The parsed request line and headers.
#[derive(Debug, PartialEq)]
struct Head {
    request: Request,
    content_length: u64,
    keep_alive: bool,
    expect_continue: bool,
}

/// Serves requests on `stream`, one after another, until the client closes
/// it, asks for close, goes silent, or sends something rejected.
pub fn serve(mut stream: TcpStream, handler: impl Fn(&Request) -> Response) {
    let _ = stream.set_nodelay(true);
    if stream.set_read_timeout(Some(IDLE_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(IDLE_TIMEOUT)).is_err()
    {
        return;
    }
    // Bytes read but not yet used: the start of a pipelined next request.
    let mut buf = Vec::new();
    loop {
        let head = match read_request(&mut stream, &mut buf) {
            Ok(head) => head,
            Err(Stop::Gone) => return,
            Err(Stop::Reject(status, message)) => {
                let _ =
                    write_response(&mut stream, &Response::error(status, message), false, false);
                return linger_close(stream);
            }
        };
        let response = handler(&head.request);
        let head_only = head.request.method == "HEAD";
        if write_response(&mut stream, &response, head_only, head.keep_alive).is_err() {
            return;
        }
        if !head.keep_alive {
            return linger_close(stream);
        }
    }
}

/// Reads one request's head and body, leaving whatever follows in `buf`.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Head, Stop> {
    let head_len = loop {
        // Empty lines before a request line are allowed (RFC 9112 section 2.2).
        let blank = buf
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        buf.drain(..blank);
        if let Some(end) = head_end(buf) {
            break end;
        }
        if buf.len() >= MAX_HEAD {
            break MAX_HEAD + 1;
        }
        fill(stream, buf)?;
    };
    if head_len > MAX_HEAD {
        return Err(Stop::Reject(
            431,
            format!("request line and headers exceed {MAX_HEAD} bytes"),
        ));
    }
    let text = std::str::from_utf8(&buf[..head_len])
        .map_err(|_| Stop::Reject(400, "request head is not UTF-8".into()))?;
    let head = parse_head(text)?;
    if head.content_length > MAX_BODY {
        return Err(Stop::Reject(
            413,
            format!("request body exceeds {MAX_BODY} bytes"),
        ));
    }
    // At most 1 MiB + 16 KiB, so this fits.
    let end = head_len + head.content_length as usize;
    if head.expect_continue && buf.len() < end {
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|_| Stop::Gone)?;
    }
    while buf.len() < end {
        fill(stream, buf)?;
    }
    buf.drain(..end);
    Ok(head)
}

/// The length of the head (through its empty line), once `buf` holds it.
/// Lines end in CRLF or, leniently, a bare LF.
fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len())
        .filter(|&i| buf[i] == b'\n')
        .find_map(|i| match &buf[i + 1..] {
            [b'\n', ..] => Some(i + 2),
            [b'\r', b'\n', ..] => Some(i + 3),
            _ => None,
        })
}

/// Parses the request line and the headers this server acts on.
fn parse_head(text: &str) -> Result<Head, Stop> {
    let bad = |msg: String| Stop::Reject(400, msg);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = line.split(' ').collect();
    let &[method, target, version] = parts.as_slice() else {
        return Err(bad(format!("bad request line {line:?}")));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(bad(format!("bad method {method:?}")));
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        v if v.starts_with("HTTP/") => {
            return Err(Stop::Reject(505, format!("unsupported version {v:?}")))
        }
        v => return Err(bad(format!("bad version {v:?}"))),
    };
    if !target.starts_with('/') {
        return Err(bad(format!(
            "request target {target:?} does not start with /"
        )));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let mut content_length = None;
    let (mut close, mut keep_alive, mut expect_continue) = (false, false, false);
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(format!("header line without a colon: {line:?}")));
        };
        // Also rejects obsolete line folding (a line starting with white space).
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(bad(format!("bad header name {name:?}")));
        }
        let value = value.trim_matches([' ', '\t']);
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(format!("bad Content-Length {value:?}")));
                }
                // All digits: only too large a number fails to parse.
                let n = value.parse::<u64>().unwrap_or(u64::MAX);
                if content_length.is_some_and(|m| m != n) {
                    return Err(bad("conflicting Content-Length headers".into()));
                }
                content_length = Some(n);
            }
            "transfer-encoding" => {
                return Err(Stop::Reject(
                    501,
                    format!("Transfer-Encoding {value:?} not supported; send Content-Length"),
                ))
            }
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    close |= token.eq_ignore_ascii_case("close");
                    keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            }
            "expect" => expect_continue = http11 && value.eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }
    Ok(Head {
        request: Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
        },
        content_length: content_length.unwrap_or(0),
        keep_alive: !close && (http11 || keep_alive),
        expect_continue,
    })
}

/// A character allowed in a method or header name (RFC 9110 `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends at least one byte from `stream` to `buf`.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Stop> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(Stop::Gone),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Stop::Gone),
        }
    }
}

fn write_response(
    stream: &mut TcpStream,
    response: &Response,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (name, value) in &response.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    // One write, so that head and body leave in one segment.
    let mut bytes = head.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&response.body);
    }
    stream.write_all(&bytes)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Closes without a reset. close(2) with unread input makes TCP send RST,
/// which may destroy the response before the client reads it; so stop
/// sending, then drop what the client still sends, for about a second.
fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(1);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut sink = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Head, Stop> {
        parse_head(text)
    }

    fn status(text: &str) -> u16 {
        match parse(text) {
            Err(Stop::Reject(status, _)) => status,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn head_end_finds_the_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\nrest"), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_end(b""), None);
    }

    #[test]
    fn parses_request_and_framing_headers() {
        let h = parse("GET /identity-watch?ms=5&x HTTP/1.1\r\nHost: p\r\n\r\n").unwrap();
        assert_eq!(
            h.request,
            Request {
                method: "GET".into(),
                path: "/identity-watch".into(),
                query: "ms=5&x".into()
            }
        );
        assert_eq!((h.content_length, h.keep_alive), (0, true));

        let h = parse("POST /c HTTP/1.1\r\ncontent-LENGTH:  12 \r\nConnection: foo, Close\r\n\r\n")
            .unwrap();
        assert_eq!((h.content_length, h.keep_alive), (12, false));
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            parse("PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n")
                .unwrap()
                .expect_continue
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n")
                .unwrap()
                .content_length,
            u64::MAX
        );
    }

    #[test]
    fn rejects_what_it_cannot_frame() {
        for bad in [
            "GET /\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET / FTP/1.1\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: b\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{bad:?}");
        }
        assert_eq!(status("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(
            status("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
    }
}
