//! `/proc` inside the sandbox: `/proc/<pid>/stat` and `environ` parsing, and
//! which process is the actor's.
//!
//! The actor's process is the lowest PID in the container's PID namespace
//! that is neither the checker itself nor one of the agent's helpers (any
//! program under `/.ate/`, e.g. the relay): on runsc that is the
//! container's init, PID 1.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::ActorProcess;

/// Where the agent mounts its helpers (the relay, this checker).
pub const HELPER_DIR: &str = "/.ate/";

/// The fields of `/proc/<pid>/stat` the checker reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Field 1.
    pub pid: u32,
    /// Field 2, without its parentheses.
    pub comm: String,
    /// Field 4.
    pub ppid: u32,
    /// Field 22: start time in clock ticks after boot.
    pub start_ticks: u64,
}

/// Parses a `/proc/<pid>/stat` line. `comm` may hold spaces and
/// parentheses, so it runs from the first `(` to the *last* `)`.
pub fn parse_stat(text: &str) -> Result<Stat, String> {
    let open = text.find('(').ok_or("no '(' before comm")?;
    let close = text.rfind(')').ok_or("no ')' after comm")?;
    if close < open {
        return Err("')' before '('".into());
    }
    let pid = text[..open]
        .trim()
        .parse()
        .map_err(|_| format!("bad pid field {:?}", text[..open].trim()))?;
    let comm = text[open + 1..close].to_owned();
    // Fields 3.. follow the comm; field n is at index n - 3.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<&str, String> {
        rest.get(n - 3)
            .copied()
            .ok_or_else(|| format!("only {} fields, want at least {n}", rest.len() + 2))
    };
    let ppid = field(4)?
        .parse()
        .map_err(|_| format!("bad ppid field {:?}", field(4).unwrap_or("")))?;
    let start_ticks = field(22)?
        .parse()
        .map_err(|_| format!("bad starttime field {:?}", field(22).unwrap_or("")))?;
    Ok(Stat {
        pid,
        comm,
        ppid,
        start_ticks,
    })
}

/// Parses `/proc/<pid>/environ` (NUL-separated `NAME=value`; an entry
/// without `=` is kept with an empty value).
pub fn parse_environ(bytes: &[u8]) -> BTreeMap<String, String> {
    bytes
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let s = String::from_utf8_lossy(e);
            match s.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (s.into_owned(), String::new()),
            }
        })
        .collect()
}

/// Finds the actor's process under `proc_root` (`/proc`), leaving out
/// `self_pid` and helpers under [`HELPER_DIR`].
pub fn find_actor(proc_root: &Path, self_pid: u32) -> Result<ActorProcess, String> {
    let dir =
        fs::read_dir(proc_root).map_err(|e| format!("read_dir {}: {e}", proc_root.display()))?;
    let mut pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|p| *p != self_pid)
        .collect();
    pids.sort_unstable();
    let mut skipped = Vec::new();
    for pid in pids {
        let base = proc_root.join(pid.to_string());
        // runsc 20240729 refuses readlink of another process's `exe`
        // (measured), so argv[0] from `cmdline` is read too.
        let exe = fs::read_link(base.join("exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let argv0 = fs::read(base.join("cmdline")).ok().and_then(|b| {
            let first = b.split(|c| *c == 0).next()?;
            (!first.is_empty()).then(|| String::from_utf8_lossy(first).into_owned())
        });
        let helper = [&exe, &argv0]
            .iter()
            .find_map(|p| p.as_deref().filter(|p| p.starts_with(HELPER_DIR)));
        if let Some(helper) = helper {
            skipped.push(format!("{pid} ({helper})"));
            continue;
        }
        // A process that exits meanwhile is no candidate.
        let Ok(text) = fs::read_to_string(base.join("stat")) else {
            continue;
        };
        let stat =
            parse_stat(&text).map_err(|e| format!("{}/stat: {e}: {text:?}", base.display()))?;
        return Ok(ActorProcess {
            pid,
            comm: stat.comm,
            start_ticks: stat.start_ticks,
            exe,
            argv0,
        });
    }
    Err(format!(
        "no process in this PID namespace besides the checker (pid {self_pid}) and the agent's helpers {skipped:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let s = parse_stat(
            "1 (ate-probe) S 0 1 1 0 -1 4194560 10 0 0 0 1 2 0 0 20 0 1 0 57 1000 10 18446744073709551615",
        )
        .unwrap();
        assert_eq!(
            (s.pid, s.comm.as_str(), s.ppid, s.start_ticks),
            (1, "ate-probe", 0, 57)
        );
        let s = parse_stat("42 (a) b (c)) R 7 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0\n")
            .unwrap();
        assert_eq!(
            (s.pid, s.comm.as_str(), s.ppid, s.start_ticks),
            (42, "a) b (c)", 7, 123456)
        );
    }

    #[test]
    fn malformed_stat_lines_say_what_is_wrong() {
        assert!(parse_stat("1 ate-probe S 0").unwrap_err().contains("'('"));
        assert!(parse_stat("x (p) S 0").unwrap_err().contains("bad pid"));
        assert!(parse_stat("1 (p) S 0 1 2")
            .unwrap_err()
            .contains("want at least 22"));
        assert!(parse_stat("1 (p) S z").unwrap_err().contains("bad ppid"));
    }

    #[test]
    fn environ_entries() {
        let e = parse_environ(b"PATH=/bin\0ATE_ACTOR_ID=a=b\0LONELY\0\0");
        assert_eq!(e["PATH"], "/bin");
        assert_eq!(e["ATE_ACTOR_ID"], "a=b");
        assert_eq!(e["LONELY"], "");
        assert_eq!(e.len(), 3);
    }

    #[test]
    fn the_actor_is_the_lowest_pid_that_is_not_us_nor_a_helper() {
        // A fake /proc: 1 is a helper (exe under /.ate/), 3 a helper known
        // only by argv[0] (no readable exe, as on runsc), 5 is us, 9 the actor.
        let root = std::env::temp_dir().join(format!("ate-check-proc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (pid, exe, comm) in [
            (1, "/.ate/ate-refagent", "relay"),
            (3, "", "check"),
            (5, "/x", "me"),
            (9, "/app", "app x"),
        ] {
            let d = root.join(pid.to_string());
            fs::create_dir_all(&d).unwrap();
            if exe.is_empty() {
                fs::write(d.join("cmdline"), "/.ate/ate-check\0evidence\0").unwrap();
            } else {
                std::os::unix::fs::symlink(exe, d.join("exe")).unwrap();
            }
            let fields = "S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 77 0 0";
            fs::write(d.join("stat"), format!("{pid} ({comm}) {fields}")).unwrap();
        }
        fs::create_dir_all(root.join("self")).unwrap();
        let a = find_actor(&root, 5).unwrap();
        assert_eq!(
            (a.pid, a.comm.as_str(), a.start_ticks, a.exe.as_deref()),
            (9, "app x", 77, Some("/app"))
        );
        fs::remove_dir_all(root.join("9")).unwrap();
        let err = find_actor(&root, 5).unwrap_err();
        assert!(
            err.contains("/.ate/ate-refagent") && err.contains("3 (/.ate/ate-check)"),
            "{err}"
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
