//! `ate-probe-minimal`: a probe with only what upstream's own probe serves,
//! `GET /whoami` and `GET /healthz` on port 80 (CONTRACT.md II). The
//! harness runs its suites with it to prove what it promises for a probe it
//! does not own: a trial that needs more of the probe is skipped with the
//! reason, never counted as passed.
//!
//! Blocking std I/O, one thread per connection, Content-Length on every
//! response; everything else answers 404.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn whoami() -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim_end().to_owned())
        .unwrap_or_default();
    match std::fs::read("/run/ate/actor-id") {
        Ok(b) => format!(
            "{{\"file\":{},\"hostname\":{}}}",
            json_string(&String::from_utf8_lossy(&b)),
            json_string(&hostname)
        ),
        Err(e) => format!(
            "{{\"file\":\"\",\"hostname\":{},\"error\":{}}}",
            json_string(&hostname),
            json_string(&e.to_string())
        ),
    }
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mut close = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let lower = h.to_ascii_lowercase();
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
        }
        let (status, ctype, body) = match (method, path) {
            ("GET", "/whoami") => ("200 OK", "application/json", whoami()),
            ("GET", "/healthz") => ("200 OK", "text/plain", "ok".to_owned()),
            _ => (
                "404 Not Found",
                "text/plain",
                "404 page not found\n".to_owned(),
            ),
        };
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        out.flush()?;
        if close {
            return Ok(());
        }
    }
}

fn main() {
    let listener = TcpListener::bind(("0.0.0.0", 80)).expect("cannot listen on port 80");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = serve(stream);
        });
    }
}
