//! The endpoints. Everything except `/snapshot` is read fresh on each
//! request, and every read error is reported in the response, never hidden.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::json;

use crate::http::{Request, Response};
use crate::mountinfo::{self, Mount};

/// The file inside the identity directory that holds the actor's ID.
const ACTOR_ID: &str = "actor-id";
/// Bounds of `/identity-watch?ms=N`.
const WATCH_MS: std::ops::RangeInclusive<u64> = 1..=10_000;
/// At most this many distinct values are listed by `/identity-watch`.
const WATCH_MAX_DISTINCT: usize = 1024;

/// What the probe keeps between requests.
pub struct State {
    identity_dir: PathBuf,
    snapshot: Snapshot,
    counter: AtomicU64,
}

/// Values captured once, at process start. A restored actor shows its golden
/// process's values: the nonce proves a restore rather than a cold boot.
#[derive(Serialize)]
struct Snapshot {
    nonce: String,
    identity_at_start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity_at_start_error: Option<String>,
    started_unix_ms: u64,
    pid: u32,
}

impl State {
    /// Captures the start-time snapshot.
    pub fn capture(identity_dir: PathBuf) -> Result<State, getrandom::Error> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce)?;
        let (identity_at_start, identity_at_start_error) = match read_identity(&identity_dir) {
            Ok(bytes) => (String::from_utf8_lossy(&bytes).into_owned(), None),
            Err(e) => (String::new(), Some(e)),
        };
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let snapshot = Snapshot {
            nonce: hex(&nonce),
            identity_at_start,
            identity_at_start_error,
            started_unix_ms,
            pid: std::process::id(),
        };
        Ok(State {
            identity_dir,
            snapshot,
            counter: AtomicU64::new(0),
        })
    }
}

/// Answers one request: dispatches on path, then method. Request bodies
/// are ignored (the server reads and drops them).
pub fn handle(state: &State, req: &Request) -> Response {
    let (method, path) = (req.method.as_str(), req.path.as_str());
    let allowed: &[&str] = match path {
        "/healthz" | "/whoami" | "/snapshot" | "/identity-dir" | "/env" | "/identity-watch" => {
            &["GET"]
        }
        "/identity-dir/try-write" => &["POST"],
        "/counter" => &["GET", "POST"],
        _ => return error(404, format!("no such endpoint: {method} {path}")),
    };
    if !allowed.contains(&method) {
        let mut reply = error(405, format!("method not allowed: {method} {path}"));
        reply.headers.push(("Allow", allowed.join(", ")));
        return reply;
    }
    match (path, method) {
        ("/healthz", _) => Response::text(200, b"ok"),
        ("/whoami", _) => json(&whoami(&state.identity_dir)),
        ("/snapshot", _) => json(&state.snapshot),
        ("/identity-dir", _) => json(&identity_dir(&state.identity_dir)),
        ("/identity-dir/try-write", _) => json(&Attempts {
            attempts: try_write(&state.identity_dir),
        }),
        ("/env", _) => json(&json!({ "env": env() })),
        ("/counter", "POST") => {
            json(&json!({ "counter": state.counter.fetch_add(1, Ordering::SeqCst) + 1 }))
        }
        ("/counter", _) => json(&json!({ "counter": state.counter.load(Ordering::SeqCst) })),
        // Runs on the connection's own thread, so it blocks nobody else.
        ("/identity-watch", _) => match watch_ms(&req.query) {
            Ok(ms) => json(&watch(
                &state.identity_dir.join(ACTOR_ID),
                Duration::from_millis(ms),
            )),
            Err(msg) => error(400, msg),
        },
        _ => error(500, format!("unrouted: {method} {path}")),
    }
}

#[derive(Serialize)]
struct Whoami {
    file: String,
    file_hex: String,
    file_len: usize,
    hostname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn whoami(dir: &Path) -> Whoami {
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    match read_identity(dir) {
        Ok(bytes) => Whoami {
            file: String::from_utf8_lossy(&bytes).into_owned(),
            file_hex: hex(&bytes),
            file_len: bytes.len(),
            hostname,
            error: None,
        },
        Err(e) => Whoami {
            file: String::new(),
            file_hex: String::new(),
            file_len: 0,
            hostname,
            error: Some(e),
        },
    }
}

#[derive(Serialize)]
struct Entry {
    name: String,
    kind: &'static str,
    mode: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct IdentityDir {
    path: String,
    entries: Vec<Entry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entries_error: Option<String>,
    mounts: Vec<Mount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mountinfo_error: Option<String>,
}

fn identity_dir(dir: &Path) -> IdentityDir {
    let (entries, entries_error) = match list_dir(dir) {
        Ok(entries) => (entries, None),
        Err(e) => (Vec::new(), Some(format!("read_dir {}: {e}", dir.display()))),
    };
    // Match the path as given and as resolved (it may run natively under a symlink).
    let mut dirs = vec![dir.to_string_lossy().into_owned()];
    if let Ok(real) = fs::canonicalize(dir) {
        dirs.push(real.to_string_lossy().into_owned());
    }
    let (mounts, mountinfo_error) = match fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => mountinfo::mounts_under(&text, &dirs),
        Err(e) => (Vec::new(), Some(format!("read /proc/self/mountinfo: {e}"))),
    };
    IdentityDir {
        path: dir.to_string_lossy().into_owned(),
        entries,
        entries_error,
        mounts,
        mountinfo_error,
    }
}

fn list_dir(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for dirent in fs::read_dir(dir)? {
        let dirent = dirent?;
        let name = dirent.file_name().to_string_lossy().into_owned();
        // lstat: a symlink is reported as a symlink, not followed.
        entries.push(match fs::symlink_metadata(dirent.path()) {
            Ok(md) => {
                let ft = md.file_type();
                let kind = if ft.is_file() {
                    "file"
                } else if ft.is_dir() {
                    "dir"
                } else if ft.is_symlink() {
                    "symlink"
                } else {
                    "other"
                };
                Entry {
                    name,
                    kind,
                    mode: format!("{:04o}", md.mode() & 0o7777),
                    size: md.len(),
                    error: None,
                }
            }
            Err(e) => Entry {
                name,
                kind: "other",
                mode: String::new(),
                size: 0,
                error: Some(format!("lstat: {e}")),
            },
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

#[derive(Serialize)]
struct Attempts {
    attempts: Vec<Attempt>,
}

#[derive(Serialize)]
struct Attempt {
    op: &'static str,
    ok: bool,
    errno: Option<i32>,
    error: Option<String>,
}

/// Tries to change the identity directory, in order, and undoes nothing: on a
/// writable mount these really modify it, which is what a faulty runtime
/// deserves to have exposed.
fn try_write(dir: &Path) -> Vec<Attempt> {
    let id = dir.join(ACTOR_ID);
    let attempt = |op, result: io::Result<()>| match result {
        Ok(()) => Attempt {
            op,
            ok: true,
            errno: None,
            error: None,
        },
        Err(e) => Attempt {
            op,
            ok: false,
            errno: e.raw_os_error(),
            error: Some(strerror(&e)),
        },
    };
    vec![
        attempt("write-actor-id", {
            OpenOptions::new()
                .write(true)
                .open(&id)
                .and_then(|f| match f.write_at(b"x", 0)? {
                    1 => Ok(()),
                    n => Err(io::Error::other(format!("pwrite wrote {n} bytes, want 1"))),
                })
        }),
        attempt(
            "create",
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dir.join("probe-write-test"))
                .map(drop),
        ),
        attempt("unlink", fs::remove_file(&id)),
        attempt(
            "rename",
            fs::rename(&id, dir.join("actor-id.probe-renamed")),
        ),
        attempt("mkdir", fs::create_dir(dir.join("probe-mkdir-test"))),
    ]
}

fn env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

fn watch_ms(query: &str) -> Result<u64, String> {
    let range = format!(
        "must be an integer in {}..={}",
        WATCH_MS.start(),
        WATCH_MS.end()
    );
    let value = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("ms="))
        .ok_or_else(|| format!("missing query parameter ms: {range}"))?;
    match value.parse::<u64>() {
        Ok(ms) if WATCH_MS.contains(&ms) => Ok(ms),
        _ => Err(format!("bad ms value {value:?}: {range}")),
    }
}

#[derive(Serialize)]
struct Distinct {
    value_hex: String,
    value: String,
    count: u64,
}

#[derive(Serialize, Default)]
struct WatchReport {
    reads: u64,
    distinct: Vec<Distinct>,
    /// Reads whose value was not listed because `distinct` was full.
    distinct_dropped: u64,
    errors: u64,
    empty_reads: u64,
    first_error: Option<String>,
}

/// Reads `file` in a tight loop for `duration` (at least once). `reads`
/// counts every attempt, failed ones included; `distinct` is in order of
/// first appearance.
fn watch(file: &Path, duration: Duration) -> WatchReport {
    let deadline = Instant::now() + duration;
    let mut report = WatchReport::default();
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    loop {
        report.reads += 1;
        match fs::read(file) {
            Ok(bytes) => {
                if bytes.is_empty() {
                    report.empty_reads += 1;
                }
                if let Some(&i) = index.get(&bytes) {
                    report.distinct[i].count += 1;
                } else if report.distinct.len() < WATCH_MAX_DISTINCT {
                    report.distinct.push(Distinct {
                        value_hex: hex(&bytes),
                        value: String::from_utf8_lossy(&bytes).into_owned(),
                        count: 1,
                    });
                    index.insert(bytes, report.distinct.len() - 1);
                } else {
                    report.distinct_dropped += 1;
                }
            }
            Err(e) => {
                report.errors += 1;
                report
                    .first_error
                    .get_or_insert_with(|| format!("read {}: {e}", file.display()));
            }
        }
        if Instant::now() >= deadline {
            return report;
        }
    }
}

fn read_identity(dir: &Path) -> Result<Vec<u8>, String> {
    let path = dir.join(ACTOR_ID);
    fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))
}

/// The error's text without std's " (os error N)" suffix.
fn strerror(e: &io::Error) -> String {
    let text = e.to_string();
    match e.raw_os_error() {
        Some(n) => text
            .strip_suffix(&format!(" (os error {n})"))
            .unwrap_or(&text)
            .to_string(),
        None => text,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| {
            [
                DIGITS[usize::from(b >> 4)] as char,
                DIGITS[usize::from(b & 15)] as char,
            ]
        })
        .collect()
}

fn json(body: &impl Serialize) -> Response {
    Response::json(200, body)
}

fn error(status: u16, message: String) -> Response {
    Response::error(status, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_strerror() {
        assert_eq!(hex(b"\x00a\xff"), "0061ff");
        assert_eq!(
            strerror(&io::Error::from_raw_os_error(2)),
            "No such file or directory"
        );
    }

    #[test]
    fn watch_ms_bounds() {
        assert_eq!(watch_ms("ms=1"), Ok(1));
        assert_eq!(watch_ms("x=1&ms=10000"), Ok(10_000));
        assert!(watch_ms("ms=0").unwrap_err().contains("\"0\""));
        assert!(watch_ms("ms=10001").unwrap_err().contains("1..=10000"));
        assert!(watch_ms("ms=abc").unwrap_err().contains("\"abc\""));
        assert!(watch_ms("").unwrap_err().contains("missing"));
    }
}
