//! The run's record and `gc`: every process a node run starts (namespace
//! holders, the registry, atelet, each ateom) is written to
//! `<run dir>/record.json` with its PID and its kernel start time *before*
//! the run goes on, so a run killed with SIGKILL can be cleaned up by the
//! next one: [`gc_stale_runs`] ends exactly those processes (a PID whose
//! start time differs is someone else's now, and is left alone), kills the
//! sandbox and gofer processes ateom left (found by runsc's state files,
//! [`sandboxes::kill_leftovers`]) and removes the run's directory. Its
//! namespaces and mounts die with the last process in them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::layout::Layout;
use super::sandboxes;

/// The record's file name in a run's directory.
pub const FILE: &str = "record.json";

/// One process of the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Proc {
    /// What it is (`node holder`, `atelet`, `ateom w0`, `registry`).
    pub what: String,
    /// Its PID.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field
    /// 22), so a reused PID is never taken for it.
    pub start: u64,
}

/// A run's record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// The harness process that made the run.
    pub owner: Option<Proc>,
    /// Every process it started, in order.
    pub procs: Vec<Proc>,
}

/// `/proc/<pid>/stat` field 22, if the process exists.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

impl Proc {
    /// `pid` as it runs now.
    pub fn of(what: &str, pid: u32) -> Proc {
        Proc {
            what: what.to_owned(),
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether this very process still runs.
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// The record of the run in `dir`, kept on disk as it grows.
pub struct RunRecord {
    path: PathBuf,
    rec: std::sync::Mutex<Record>,
}

impl RunRecord {
    /// A new record for this process's run in `dir`.
    pub fn create(dir: &Path) -> Result<RunRecord> {
        let me = RunRecord {
            path: dir.join(FILE),
            rec: std::sync::Mutex::new(Record {
                owner: Some(Proc::of("harness", std::process::id())),
                procs: Vec::new(),
            }),
        };
        me.save()?;
        Ok(me)
    }

    /// Adds a process and writes the record.
    pub fn add(&self, what: &str, pid: u32) -> Result<()> {
        self.rec
            .lock()
            .expect("record lock")
            .procs
            .push(Proc::of(what, pid));
        self.save()
    }

    fn save(&self) -> Result<()> {
        let text = serde_json::to_vec_pretty(&*self.rec.lock().expect("record lock"))
            .expect("serialisable");
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

fn kill(pid: u32) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// Cleans up every run under `root` whose owner is gone; returns one line
/// per thing removed. A run whose owner still runs is left alone.
pub async fn gc_stale_runs(root: &Path) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(lines);
    };
    for e in entries.flatten() {
        let dir = e.path();
        if !dir.is_dir() {
            continue;
        }
        let rec: Record = match std::fs::read(dir.join(FILE)) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(_) => Record::default(),
        };
        if rec.owner.as_ref().is_some_and(Proc::alive) {
            continue;
        }
        let run = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // Sandboxes first: while they run, the node's namespaces live.
        let layout = Layout::new(&dir.join("node").join("var-lib-ateom-gvisor"));
        match sandboxes::kill_leftovers(&layout).await {
            Ok(killed) => {
                for l in killed {
                    lines.push(format!(
                        "node run {run}: killed {} {} (pid {}) of container {} in {}",
                        l.role, l.container, l.pid, l.container, l.actor_dir
                    ));
                }
            }
            Err(e) => {
                warn!(run = %run, error = %format!("{e:#}"), "cannot end the sandboxes of an earlier node run")
            }
        }
        // Then our processes, newest first (the holders last).
        let alive: Vec<&Proc> = rec.procs.iter().rev().filter(|p| p.alive()).collect();
        for p in &alive {
            kill(p.pid);
            lines.push(format!("node run {run}: killed {} (pid {})", p.what, p.pid));
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while alive.iter().any(|p| p.alive()) && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(p) = alive.iter().find(|p| p.alive()) {
            anyhow::bail!(
                "{} (pid {}) of node run {run} still runs 5 s after SIGKILL",
                p.what,
                p.pid
            );
        }
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
        lines.push(format!("node run {run}: removed {}", dir.display()));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_known_by_pid_and_start_time() {
        let me = Proc::of("me", std::process::id());
        assert!(me.start > 0, "{me:?}");
        assert!(me.alive());
        let reused = Proc {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(
            !reused.alive(),
            "a PID with another start time is someone else's"
        );
    }

    #[tokio::test]
    async fn gc_removes_a_dead_run_and_leaves_a_live_one() {
        let root = tempfile::tempdir().unwrap();
        let live = root.path().join("live");
        std::fs::create_dir_all(&live).unwrap();
        let _rec = RunRecord::create(&live).unwrap();
        let dead = root.path().join("dead");
        std::fs::create_dir_all(dead.join("node")).unwrap();
        // A child that has exited: its PID names no process of that start.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = Proc::of("gone", child.id());
        child.wait().unwrap();
        let rec = Record {
            owner: Some(Proc {
                start: 1,
                ..gone.clone()
            }),
            procs: vec![gone],
        };
        std::fs::write(dead.join(FILE), serde_json::to_vec(&rec).unwrap()).unwrap();
        let lines = gc_stale_runs(root.path()).await.unwrap();
        assert!(!dead.exists() && live.exists(), "{lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("removed") && l.contains("dead")),
            "{lines:?}"
        );
    }
}
