//! The probe as a real process, over real HTTP: a blocking std client with
//! keep-alive and Content-Length framing (what works inside gVisor), plus raw
//! bytes for the HTTP framing cases.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running probe; killed (by its own PID) when dropped.
struct Probe {
    child: Child,
    port: u16,
}

impl Probe {
    fn start(identity_dir: &Path) -> Probe {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ate-probe"))
            .args(["--port", "0", "--identity-dir"])
            .arg(identity_dir)
            .env_remove("ATE_PROBE_PORT")
            .env("ATE_PROBE_TEST_MARKER", "marker-value")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ate-probe");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        // Build the guard first, so a failure below still kills the child.
        let mut probe = Probe { child, port: 0 };
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("listening line {line:?}: {e}"));
        let addr = v["listening"].as_str().expect("listening address");
        assert!(addr.starts_with("0.0.0.0:"), "binds all addresses: {addr}");
        probe.port = addr.rsplit(':').next().unwrap().parse().unwrap();
        probe
    }

    fn connect(&self) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    /// One request on a fresh connection.
    fn call(&self, method: &str, path: &str) -> Response {
        self.connect().call(method, path)
    }

    fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Client {
    fn call(&mut self, method: &str, path: &str) -> Response {
        self.send(&format!(
            "{method} {path} HTTP/1.1\r\nHost: probe\r\nContent-Length: 0\r\n\r\n"
        ));
        self.response()
    }

    fn send(&mut self, raw: &str) {
        self.stream.write_all(raw.as_bytes()).expect("send request");
    }

    /// Reads one response, framed by its Content-Length.
    fn response(&mut self) -> Response {
        self.response_framed(true)
    }

    fn response_framed(&mut self, with_body: bool) -> Response {
        let mut status_line = String::new();
        self.reader
            .read_line(&mut status_line)
            .expect("status line");
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line:?}");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("header line");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').expect("header has a colon");
            headers.push((k.to_string(), v.trim().to_string()));
        }
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        assert!(
            resp.header("transfer-encoding").is_none(),
            "never chunked: {resp:?}"
        );
        assert!(resp.header("content-type").is_some(), "{resp:?}");
        let len: usize = resp
            .header("content-length")
            .expect("Content-Length")
            .parse()
            .unwrap();
        if with_body {
            resp.body = vec![0; len];
            self.reader.read_exact(&mut resp.body).expect("body");
        }
        resp
    }

    /// Whether the server has closed the connection: EOF, with nothing
    /// more to read.
    fn closed_by_server(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => panic!("waiting for EOF: {e}"),
        }
    }
}

fn dir_with_id(content: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("actor-id"), content).unwrap();
    dir
}

#[test]
fn healthz_and_whoami_exact_bytes() {
    let dir = dir_with_id(b"probe-alpha");
    let probe = Probe::start(dir.path());
    let mut c = probe.connect();

    let r = c.call("GET", "/healthz");
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));

    // Same connection, second and third request (keep-alive).
    let w = c.call("GET", "/whoami").json();
    assert_eq!(w["file"], "probe-alpha");
    assert_eq!(w["file_hex"], "70726f62652d616c706861");
    assert_eq!(w["file_len"], 11);
    assert!(w["hostname"].is_string());
    assert!(w.get("error").is_none(), "{w}");

    std::fs::write(dir.path().join("actor-id"), b"probe-beta\n").unwrap();
    let w = c.call("GET", "/whoami").json();
    assert_eq!(w["file"], "probe-beta\n", "never trimmed");
    assert!(w["file_hex"].as_str().unwrap().ends_with("0a"));
    assert_eq!(w["file_len"], 11);
}

#[test]
fn whoami_missing_file_reports_error() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::start(dir.path());
    let w = probe.call("GET", "/whoami").json();
    assert_eq!(w["file"], "");
    assert_eq!(w["file_hex"], "");
    assert_eq!(w["file_len"], 0);
    let err = w["error"].as_str().expect("error present");
    assert!(
        err.contains("actor-id") && err.contains("No such file"),
        "{err}"
    );

    let s = probe.call("GET", "/snapshot").json();
    assert_eq!(s["identity_at_start"], "");
    assert!(s["identity_at_start_error"]
        .as_str()
        .unwrap()
        .contains("No such file"));
}

#[test]
fn snapshot_is_fixed_at_start() {
    let dir = dir_with_id(b"golden");
    let probe = Probe::start(dir.path());
    let mut c = probe.connect();
    let first = c.call("GET", "/snapshot").json();
    let nonce = first["nonce"].as_str().unwrap();
    assert_eq!(nonce.len(), 32);
    assert!(nonce
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(first["identity_at_start"], "golden");
    assert!(first.get("identity_at_start_error").is_none());
    assert_eq!(first["pid"], probe.child.id());
    assert!(first["started_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);

    std::fs::write(dir.path().join("actor-id"), b"restored").unwrap();
    let second = c.call("GET", "/snapshot").json();
    assert_eq!(first, second);
    assert_eq!(c.call("GET", "/whoami").json()["file"], "restored");

    // Another process has another nonce.
    let other = Probe::start(dir.path());
    assert_ne!(
        other.call("GET", "/snapshot").json()["nonce"],
        first["nonce"]
    );
}

#[test]
fn counter_increments() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::start(dir.path());
    let mut c = probe.connect();
    assert_eq!(c.call("GET", "/counter").json()["counter"], 0);
    assert_eq!(c.call("POST", "/counter").json()["counter"], 1);
    assert_eq!(c.call("POST", "/counter").json()["counter"], 2);
    assert_eq!(probe.call("GET", "/counter").json()["counter"], 2);
}

#[test]
fn env_is_reported_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::start(dir.path());
    let r = probe.call("GET", "/env");
    assert_eq!(r.json()["env"]["ATE_PROBE_TEST_MARKER"], "marker-value");
    let body = String::from_utf8(r.body).unwrap();
    let keys: Vec<_> = env_keys_in_text_order(&body);
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

/// The keys of the "env" object in the order they appear in the text.
fn env_keys_in_text_order(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap();
    let mut keys: Vec<(usize, String)> = v["env"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| {
            (
                body.find(&format!("{}:", serde_json::to_string(k).unwrap()))
                    .unwrap(),
                k.clone(),
            )
        })
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

#[test]
fn identity_dir_lists_entries() {
    let dir = dir_with_id(b"probe-alpha");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("actor-id", dir.path().join("link")).unwrap();
    let probe = Probe::start(dir.path());
    let v = probe.call("GET", "/identity-dir").json();
    assert_eq!(v["path"], dir.path().to_str().unwrap());
    assert!(v.get("entries_error").is_none(), "{v}");
    assert!(v.get("mountinfo_error").is_none(), "{v}");
    assert!(
        v["mounts"].as_array().unwrap().is_empty(),
        "no mount under a fresh temp dir: {v}"
    );
    let entries = v["entries"].as_array().unwrap();
    let names: Vec<_> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["actor-id", "link", "sub"]);
    assert_eq!(entries[0]["kind"], "file");
    assert_eq!(entries[0]["size"], 11);
    assert_eq!(entries[1]["kind"], "symlink");
    assert_eq!(entries[2]["kind"], "dir");
    let mode = entries[0]["mode"].as_str().unwrap();
    assert!(mode.len() == 4 && mode.starts_with('0'), "{mode}");

    let gone = Probe::start(&dir.path().join("missing"));
    let v = gone.call("GET", "/identity-dir").json();
    assert!(
        v["entries_error"]
            .as_str()
            .unwrap()
            .contains("No such file"),
        "{v}"
    );
}

#[test]
fn identity_dir_reports_real_mounts() {
    // The parser against this machine's own /proc/self/mountinfo.
    let probe = Probe::start(Path::new("/proc"));
    let v = probe.call("GET", "/identity-dir").json();
    assert!(v.get("mountinfo_error").is_none(), "{v}");
    let proc_mount = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mount_point"] == "/proc");
    let proc_mount = proc_mount.unwrap_or_else(|| panic!("no /proc mount: {v}"));
    assert_eq!(proc_mount["fs_type"], "proc");
    for key in ["mount_options", "super_options", "source", "root"] {
        assert!(proc_mount[key].is_string(), "{key}: {proc_mount}");
    }
}

#[test]
fn try_write_on_a_writable_dir() {
    let dir = dir_with_id(b"probe-alpha");
    let probe = Probe::start(dir.path());
    let v = probe.call("POST", "/identity-dir/try-write").json();
    let attempts = v["attempts"].as_array().unwrap();
    let ops: Vec<_> = attempts.iter().map(|a| a["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        ["write-actor-id", "create", "unlink", "rename", "mkdir"]
    );
    for a in attempts {
        if a["op"] == "rename" {
            // actor-id was unlinked just before.
            assert_eq!(
                (&a["ok"], &a["errno"]),
                (&Value::Bool(false), &Value::from(libc::ENOENT)),
                "{a}"
            );
            assert_eq!(a["error"], "No such file or directory");
        } else {
            assert_eq!(a["ok"], true, "{a}");
            assert!(a["errno"].is_null() && a["error"].is_null(), "{a}");
        }
    }
    assert!(dir.path().join("probe-write-test").is_file());
    assert!(dir.path().join("probe-mkdir-test").is_dir());
    assert!(!dir.path().join("actor-id").exists());
}

#[test]
fn try_write_really_writes_the_id() {
    // actor-id is unlinked by a later op; a hard link keeps the inode to look at.
    let dir = dir_with_id(b"probe-alpha");
    let keep = dir.path().join("keep");
    std::fs::hard_link(dir.path().join("actor-id"), &keep).unwrap();
    let probe = Probe::start(dir.path());
    probe.call("POST", "/identity-dir/try-write");
    assert_eq!(
        std::fs::read(&keep).unwrap(),
        b"xrobe-alpha",
        "pwrite at offset 0, no truncation"
    );
}

#[test]
fn identity_watch_counts_reads() {
    let dir = dir_with_id(b"probe-alpha");
    let probe = Probe::start(dir.path());
    let mut c = probe.connect();
    let v = c.call("GET", "/identity-watch?ms=200").json();
    let reads = v["reads"].as_u64().unwrap();
    assert!(reads > 10, "{v}");
    assert_eq!(v["errors"], 0);
    assert_eq!(v["empty_reads"], 0);
    assert!(v["first_error"].is_null());
    let distinct = v["distinct"].as_array().unwrap();
    assert_eq!(distinct.len(), 1, "{v}");
    assert_eq!(distinct[0]["value_hex"], "70726f62652d616c706861");
    assert_eq!(distinct[0]["count"], reads);

    // Missing file: every read is an error.
    std::fs::remove_file(dir.path().join("actor-id")).unwrap();
    let v = c.call("GET", "/identity-watch?ms=20").json();
    assert_eq!(v["errors"], v["reads"]);
    assert!(v["first_error"].as_str().unwrap().contains("No such file"));
}

#[test]
fn identity_watch_does_not_block_other_requests() {
    let dir = dir_with_id(b"probe-alpha");
    let probe = Probe::start(dir.path());
    let mut watcher = probe.connect();
    let req = "GET /identity-watch?ms=1500 HTTP/1.1\r\nHost: probe\r\n\r\n";
    watcher.stream.write_all(req.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(probe.call("GET", "/healthz").status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "healthz waited for the watch"
    );
}

#[test]
fn errors_404_405_400() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::start(dir.path());
    let mut c = probe.connect();

    let r = c.call("GET", "/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no such endpoint: GET /nope");

    let r = c.call("POST", "/whoami");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    assert!(r.json()["error"].is_string());
    let r = c.call("GET", "/identity-dir/try-write");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    assert_eq!(c.call("DELETE", "/counter").status, 405);

    for (query, needle) in [
        ("ms=0", "\"0\""),
        ("ms=10001", "\"10001\""),
        ("ms=abc", "\"abc\""),
        ("", "missing"),
    ] {
        let r = c.call("GET", &format!("/identity-watch?{query}"));
        assert_eq!(r.status, 400, "{query}");
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(
            msg.contains(needle) && msg.contains("1..=10000"),
            "{query}: {msg}"
        );
    }
    // The connection is still usable after all the errors.
    assert_eq!(c.call("GET", "/healthz").status, 200);
}

#[test]
fn sigterm_and_sigint_exit_0_at_once() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let mut probe = Probe::start(dir.path());
        let mut idle = probe.connect();
        assert_eq!(idle.call("GET", "/healthz").status, 200);
        let mut busy = probe.connect();
        busy.send("GET /identity-watch?ms=10000 HTTP/1.1\r\nHost: probe\r\n\r\n");
        std::thread::sleep(Duration::from_millis(100));
        let pid = i32::try_from(probe.child.id()).unwrap();
        let sent = Instant::now();
        // SAFETY: kill(2) on our own child's PID.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let status = probe
            .wait_exit(Duration::from_secs(5))
            .expect("exits after the signal");
        assert!(status.success(), "signal {signal}: {status:?}");
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "did not wait for the 10 s request in flight"
        );
        assert!(idle.closed_by_server() && busy.closed_by_server());
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let dir = dir_with_id(b"probe-alpha");
    let probe = Probe::start(dir.path());
    let mut c = probe.connect();
    c.send(concat!(
        "POST /counter HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n\r\nabc",
        "GET /whoami HTTP/1.1\r\nHost: p\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: p\r\n\r\n",
    ));
    assert_eq!(c.response().json()["counter"], 1);
    assert_eq!(c.response().json()["file"], "probe-alpha");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    // Still open.
    assert_eq!(c.call("GET", "/counter").json()["counter"], 1);
}

#[test]
fn connection_close_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::start(dir.path());
    let mut c = probe.connect();
    c.send("GET /healthz HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_by_server());
}

#[test]
fn http_1_0_is_answered_then_closed() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::start(dir.path());
    let mut c = probe.connect();
    c.send("GET /healthz HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_by_server());

    // Unless it asks for keep-alive.
    let mut c = probe.connect();
    c.send("GET /counter HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.response().header("connection"), Some("keep-alive"));
    assert_eq!(c.call("GET", "/healthz").status, 200);
}

#[test]
fn post_body_is_read_and_ignored() {
    let dir = dir_with_id(b"probe-alpha");
    let probe = Probe::start(dir.path());
    let mut c = probe.connect();
    // A body that looks like a request must not be taken for one.
    let body = "GET /counter HTTP/1.1\r\n\r\n".repeat(1000);
    c.send(&format!(
        "POST /counter HTTP/1.1\r\nHost: p\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    let r = c.response();
    assert_eq!((r.status, r.json()["counter"].as_u64()), (200, Some(1)));
    assert_eq!(c.call("GET", "/counter").json()["counter"], 1);

    // Expect: 100-continue gets its interim response before the body is sent.
    c.send(
        "POST /counter HTTP/1.1\r\nHost: p\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    );
    let mut interim = String::new();
    c.reader.read_line(&mut interim).unwrap();
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n");
    c.reader.read_line(&mut interim).unwrap();
    c.send("hi");
    assert_eq!(c.response().json()["counter"], 2);
}

#[test]
fn framing_errors_are_rejected_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::start(dir.path());
    let big = "x".repeat(20 * 1024);
    for (raw, status) in [
        (
            format!("GET /healthz HTTP/1.1\r\nX-Big: {big}\r\n\r\n"),
            431,
        ),
        (format!("GET /healthz HTTP/1.1\r\nX-Big: {big}"), 431),
        ("GET /healthz\r\n\r\n".to_string(), 400),
        ("hello\r\n\r\n".to_string(), 400),
        ("GET /healthz HTTP/1.1\r\nno colon\r\n\r\n".to_string(), 400),
        (
            "POST /counter HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n".to_string(),
            413,
        ),
        (
            "POST /counter HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string(),
            501,
        ),
        ("GET /healthz HTTP/2.0\r\n\r\n".to_string(), 505),
    ] {
        let mut c = probe.connect();
        c.send(&raw);
        let r = c.response();
        assert_eq!(r.status, status, "{:.60}", raw);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(r.json()["error"].is_string());
        assert!(c.closed_by_server(), "{:.60}", raw);
    }
    // The body limit is 1 MiB exactly.
    let mut c = probe.connect();
    let body = "x".repeat(1024 * 1024);
    c.send(&format!(
        "POST /counter HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    assert_eq!(c.response().status, 200);
}

#[test]
fn head_gets_headers_only() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::start(dir.path());
    let mut c = probe.connect();
    c.send("HEAD /healthz HTTP/1.1\r\nHost: p\r\n\r\n");
    let r = c.response_framed(false);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    assert!(r.header("content-length").unwrap() != "0");
    // The next response starts right after the head.
    assert_eq!(c.call("GET", "/healthz").status, 200);
}

#[test]
fn bad_flag_exits_2_naming_it() {
    for (args, needle) in [
        (&["--bogus"][..], "--bogus"),
        (&["--port", "http"][..], "--port"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ate-probe"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ate-probe"))
        .env("ATE_PROBE_PORT", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ATE_PROBE_PORT"));
}
