//! The runsc sandboxes ateom-gvisor left on the node. Stopping atelet and
//! ateom does not end them (runsc daemonises the sandbox and its gofer),
//! so the node's teardown ends them itself, by PID, from runsc's own state
//! files in this run's directories: `<actor dir>/runsc-state/<id>.state`
//! (the `-root` ateom gives every runsc call,
//! `cmd/ateom-gvisor/runsc.go:50` with `internal/ateompath/ateompath.go:96`),
//! whose `sandbox.pid` and `goferPid` name the processes. A PID is killed
//! only if that process still runs with exactly this actor's `--root`: the
//! path is node-relative, but its actor directory carries the run's own
//! template namespace (`ate-conf-<run>`), so a reused PID is never hit.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use tracing::{info, warn};

use super::layout::{Layout, IN_NODE};

#[derive(Deserialize)]
struct StateFile {
    id: String,
    #[serde(rename = "goferPid", default)]
    gofer_pid: i32,
    #[serde(default)]
    sandbox: Option<SandboxState>,
}

#[derive(Deserialize)]
struct SandboxState {
    #[serde(default)]
    pid: i32,
}

/// One runsc process of this run, found from a state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// The container ID.
    pub container: String,
    /// The actor directory's name (`<ns>:<template>:<actor>`).
    pub actor_dir: String,
    /// `runsc-sandbox` or `runsc-gofer`.
    pub role: &'static str,
    /// Its PID.
    pub pid: u32,
}

/// Every sandbox and gofer process the state files under `layout` name
/// that still runs as this run's (see the module docs).
pub fn leftovers(layout: &Layout) -> Result<Vec<Leftover>> {
    let actors = layout.root().join("actors");
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(&actors) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", actors.display())),
    };
    for actor in entries.flatten() {
        let actor_dir = actor.file_name().to_string_lossy().into_owned();
        let state_dir = actor.path().join("runsc-state");
        let root_arg = format!("--root={IN_NODE}/actors/{actor_dir}/runsc-state");
        for f in std::fs::read_dir(&state_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = f.path();
            if path.extension().is_none_or(|e| e != "state") {
                continue;
            }
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            let Ok(state) = serde_json::from_slice::<StateFile>(&text) else {
                warn!(file = %path.display(), "unreadable runsc state file");
                continue;
            };
            let sandbox = state.sandbox.as_ref().map_or(0, |s| s.pid);
            for (role, pid) in [("runsc-sandbox", sandbox), ("runsc-gofer", state.gofer_pid)] {
                let Ok(pid) = u32::try_from(pid) else {
                    continue;
                };
                if pid != 0 && runs_as(pid, &root_arg) {
                    found.push(Leftover {
                        container: state.id.clone(),
                        actor_dir: actor_dir.clone(),
                        role,
                        pid,
                    });
                }
            }
        }
    }
    found.sort_by_key(|l| l.pid);
    found.dedup();
    Ok(found)
}

/// Whether `pid` runs with `root_arg` among its arguments.
fn runs_as(pid: u32, root_arg: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == root_arg.as_bytes()))
}

/// Kills every [`leftovers`] process with SIGKILL and waits until each is
/// gone; names each one that would not go.
pub async fn kill_leftovers(layout: &Layout) -> Result<Vec<Leftover>> {
    let found = leftovers(layout)?;
    for l in &found {
        info!(container = %l.container, actor = %l.actor_dir, role = l.role, pid = l.pid, "killing a sandbox process ateom left");
        if let Ok(pid) = i32::try_from(l.pid) {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let alive: Vec<&Leftover> = found
            .iter()
            .filter(|l| Path::new(&format!("/proc/{}", l.pid)).exists())
            .collect();
        if alive.is_empty() {
            return Ok(found);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("sandbox processes still alive 5 s after SIGKILL: {alive:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
