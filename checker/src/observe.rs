//! The observations, one function per subcommand. Each takes the paths it
//! looks at (the binary passes the sandbox's; tests pass temp dirs) and
//! returns its JSON type, with every failure inside it as a field.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{
    hex, mountinfo, procfs, DirEntry, Env, Evidence, IdentityDir, IdentityWatch, TryWrite,
    WatchValue, WriteAttempt, ACTOR_ID_FILE, WATCH_MAX_DISTINCT,
};

/// Where a sandbox's kernel shows what the checker reads.
#[derive(Debug, Clone, Copy)]
pub struct Paths<'a> {
    /// The identity directory (`/run/ate`).
    pub identity_dir: &'a Path,
    /// `/proc`.
    pub proc: &'a Path,
    /// The token file (`/dev/shm/.ate-check-token`).
    pub token: &'a Path,
}

impl Paths<'static> {
    /// The paths inside a sandbox.
    pub fn sandbox() -> Paths<'static> {
        Paths {
            identity_dir: Path::new(crate::IDENTITY_DIR),
            proc: Path::new("/proc"),
            token: Path::new(crate::TOKEN_FILE),
        }
    }
}

/// `mounts`: the entries of the identity directory and every mount at or
/// under it.
pub fn mounts(p: Paths<'_>) -> IdentityDir {
    let dir = p.identity_dir;
    let (entries, entries_error) = match list_dir(dir) {
        Ok(entries) => (entries, None),
        Err(e) => (Vec::new(), Some(format!("read_dir {}: {e}", dir.display()))),
    };
    let dirs = vec![dir.to_string_lossy().into_owned()];
    let info = p.proc.join("self/mountinfo");
    let (mounts, mountinfo_error) = match fs::read_to_string(&info) {
        Ok(text) => mountinfo::mounts_under(&text, &dirs),
        Err(e) => (Vec::new(), Some(format!("read {}: {e}", info.display()))),
    };
    IdentityDir {
        path: dir.to_string_lossy().into_owned(),
        entries,
        entries_error,
        mounts,
        mountinfo_error,
    }
}

fn list_dir(dir: &Path) -> io::Result<Vec<DirEntry>> {
    let mut entries = Vec::new();
    for dirent in fs::read_dir(dir)? {
        let dirent = dirent?;
        let name = dirent.file_name().to_string_lossy().into_owned();
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
                DirEntry {
                    name,
                    kind: kind.into(),
                    mode: format!("{:04o}", md.mode() & 0o7777),
                    size: md.len(),
                    error: None,
                }
            }
            Err(e) => DirEntry {
                name,
                kind: "other".into(),
                mode: String::new(),
                size: 0,
                error: Some(format!("lstat: {e}")),
            },
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// `try-write`: write `actor-id`, create, unlink, rename and mkdir in the
/// identity directory, in that order, undoing nothing: on a writable mount
/// these really change it, which a faulty runtime deserves to have shown.
pub fn try_write(p: Paths<'_>) -> TryWrite {
    let dir = p.identity_dir;
    let id = dir.join(ACTOR_ID_FILE);
    let attempt = |op: &str, result: io::Result<()>| match result {
        Ok(()) => WriteAttempt {
            op: op.into(),
            ok: true,
            errno: None,
            error: None,
        },
        Err(e) => WriteAttempt {
            op: op.into(),
            ok: false,
            errno: e.raw_os_error(),
            error: Some(strerror(&e)),
        },
    };
    let write =
        OpenOptions::new()
            .write(true)
            .open(&id)
            .and_then(|f| match f.write_at(b"x", 0)? {
                1 => Ok(()),
                n => Err(io::Error::other(format!("pwrite wrote {n} bytes, want 1"))),
            });
    TryWrite {
        attempts: vec![
            attempt("write-actor-id", write),
            attempt(
                "create",
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(dir.join("ate-check-create"))
                    .map(drop),
            ),
            attempt("unlink", fs::remove_file(&id)),
            attempt(
                "rename",
                fs::rename(&id, dir.join("actor-id.ate-check-renamed")),
            ),
            attempt("mkdir", fs::create_dir(dir.join("ate-check-mkdir"))),
        ],
    }
}

/// `env`: the environment of the actor's process.
pub fn env(p: Paths<'_>) -> Env {
    let actor = match procfs::find_actor(p.proc, std::process::id()) {
        Ok(a) => a,
        Err(error) => {
            return Env {
                error: Some(error),
                ..Env::default()
            }
        }
    };
    let path = p.proc.join(actor.pid.to_string()).join("environ");
    match fs::read(&path) {
        Ok(bytes) => Env {
            pid: Some(actor.pid),
            env: procfs::parse_environ(&bytes),
            error: None,
        },
        Err(e) => Env {
            pid: Some(actor.pid),
            env: Default::default(),
            error: Some(format!("read {}: {e}", path.display())),
        },
    }
}

/// `watch --ms N`: reads `actor-id` in a tight loop for `duration` (at
/// least once).
pub fn watch(p: Paths<'_>, duration: Duration) -> IdentityWatch {
    let file = p.identity_dir.join(ACTOR_ID_FILE);
    let deadline = Instant::now() + duration;
    let mut report = IdentityWatch::default();
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    loop {
        report.reads += 1;
        match fs::read(&file) {
            Ok(bytes) => {
                if bytes.is_empty() {
                    report.empty_reads += 1;
                }
                if let Some(&i) = index.get(&bytes) {
                    report.distinct[i].count += 1;
                } else if report.distinct.len() < WATCH_MAX_DISTINCT {
                    report.distinct.push(WatchValue {
                        value_hex: hex(&bytes),
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

/// `evidence`: the actor's process, the planted token (if any) and the
/// sandbox kernel's `boot_id`.
pub fn evidence(p: Paths<'_>) -> Evidence {
    let (actor, actor_error) = match procfs::find_actor(p.proc, std::process::id()) {
        Ok(a) => (Some(a), None),
        Err(e) => (None, Some(e)),
    };
    let (token, token_error) = match fs::read_to_string(p.token) {
        Ok(t) => (Some(t), None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (None, None),
        Err(e) => (None, Some(format!("read {}: {e}", p.token.display()))),
    };
    let boot = p.proc.join("sys/kernel/random/boot_id");
    let (boot_id, boot_id_error) = match fs::read_to_string(&boot) {
        Ok(b) => (Some(b.trim_end().to_owned()), None),
        Err(e) => (None, Some(format!("read {}: {e}", boot.display()))),
    };
    Evidence {
        actor,
        actor_error,
        token,
        token_error,
        boot_id,
        boot_id_error,
    }
}

/// `mark --token T`: plants `token` in the token file (temp file, rename),
/// then gives the evidence, which carries the token when it was planted.
pub fn mark(p: Paths<'_>, token: &str) -> Evidence {
    let tmp = p.token.with_extension("tmp");
    let planted = fs::write(&tmp, token).and_then(|()| fs::rename(&tmp, p.token));
    let mut e = evidence(p);
    if let Err(err) = planted {
        let _ = fs::remove_file(&tmp);
        e.token_error = Some(format!(
            "cannot plant the token in {}: {err}",
            p.token.display()
        ));
    }
    e
}

/// The error's text without std's " (os error N)" suffix.
fn strerror(e: &io::Error) -> String {
    let text = e.to_string();
    match e.raw_os_error() {
        Some(n) => text
            .strip_suffix(&format!(" (os error {n})"))
            .unwrap_or(&text)
            .to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(std::path::PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(name: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("ate-check-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }

    #[test]
    fn try_write_on_a_writable_dir_succeeds_and_changes_it() {
        let t = tmp("tw");
        fs::write(t.0.join(ACTOR_ID_FILE), "a1").unwrap();
        let p = Paths {
            identity_dir: &t.0,
            proc: Path::new("/proc"),
            token: &t.0.join("tok"),
        };
        let tw = try_write(p);
        let ops: Vec<(&str, bool)> = tw.attempts.iter().map(|a| (a.op.as_str(), a.ok)).collect();
        // unlink removed actor-id, so the rename after it fails (ENOENT).
        assert_eq!(
            ops,
            [
                ("write-actor-id", true),
                ("create", true),
                ("unlink", true),
                ("rename", false),
                ("mkdir", true)
            ]
        );
        assert_eq!(tw.attempts[3].errno, Some(2));
        assert_eq!(
            tw.attempts[3].error.as_deref(),
            Some("No such file or directory")
        );
        assert!(t.0.join("ate-check-mkdir").is_dir());
    }

    #[test]
    fn mounts_lists_entries_and_reports_a_missing_dir() {
        let t = tmp("mounts");
        fs::write(t.0.join(ACTOR_ID_FILE), "abc").unwrap();
        let p = Paths {
            identity_dir: &t.0,
            proc: Path::new("/proc"),
            token: &t.0.join("tok"),
        };
        let d = mounts(p);
        assert_eq!(d.entries.len(), 1);
        assert_eq!(
            (
                d.entries[0].name.as_str(),
                d.entries[0].kind.as_str(),
                d.entries[0].size
            ),
            ("actor-id", "file", 3)
        );
        assert!(d.mountinfo_error.is_none(), "{:?}", d.mountinfo_error);
        let gone = t.0.join("gone");
        let d = mounts(Paths {
            identity_dir: &gone,
            ..p
        });
        assert!(d.entries_error.unwrap().contains("gone"));
    }

    #[test]
    fn watch_counts_reads_and_errors() {
        let t = tmp("watch");
        let p = Paths {
            identity_dir: &t.0,
            proc: Path::new("/proc"),
            token: &t.0.join("tok"),
        };
        let w = watch(p, Duration::from_millis(5));
        assert!(w.reads >= 1 && w.errors == w.reads, "{w:?}");
        assert!(w.first_error.unwrap().contains("actor-id"));
        fs::write(t.0.join(ACTOR_ID_FILE), "ab").unwrap();
        let w = watch(p, Duration::from_millis(5));
        assert_eq!(
            (w.errors, w.distinct.len(), w.distinct[0].value_hex.as_str()),
            (0, 1, "6162")
        );
        assert_eq!(w.distinct[0].count, w.reads);
    }

    #[test]
    fn mark_plants_a_token_that_evidence_reads_back() {
        let t = tmp("mark");
        let tok = t.0.join("tok");
        let p = Paths {
            identity_dir: &t.0,
            proc: Path::new("/proc"),
            token: &tok,
        };
        assert_eq!(evidence(p).token, None);
        let e = mark(p, "t-1");
        assert_eq!(
            (e.token.as_deref(), e.token_error.as_deref()),
            (Some("t-1"), None)
        );
        assert_eq!(evidence(p).token.as_deref(), Some("t-1"));
        let bad = t.0.join("no/such/dir/tok");
        let e = mark(Paths { token: &bad, ..p }, "t-2");
        assert!(e.token_error.unwrap().contains("cannot plant the token"));
    }
}
