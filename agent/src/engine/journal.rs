//! The sandbox journal: one record per runsc container the agent starts,
//! `<state dir>/sandboxes/<cid>.json`.
//!
//! **Invariants.** A container is recorded *before* the runtime is asked
//! to start it (run or restore), and its record is removed only after the
//! runtime deleted it; so whatever a crashed agent left running is in the
//! journal, and its successor (or `ate-refagent gc`) removes every one by
//! its ID ([`remove_recorded_sandboxes`]). Nothing is ever killed by name.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{debug, error, warn};

use super::{error_chain, host_err, EngineError};
use crate::runtime::Runtime;

/// One record per started container, for orphan cleanup.
#[derive(Debug, Serialize, Deserialize)]
struct SandboxRecord {
    cid: String,
    owner: String,
    agent_pid: u32,
    created_unix_ms: u64,
}

/// The journal of one state dir.
#[derive(Debug, Clone)]
pub(super) struct Journal {
    dir: PathBuf,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Journal {
    /// The journal in `state_dir/sandboxes` (created by `Engine::open`).
    pub(super) fn new(state_dir: &Path) -> Self {
        Journal {
            dir: journal_dir(state_dir),
        }
    }

    fn path(&self, cid: &str) -> PathBuf {
        self.dir.join(format!("{cid}.json"))
    }

    /// Records container `cid`, started for `owner` (`golden:<template>`,
    /// `actor:<id>`); call before the runtime starts it.
    pub(super) fn record(&self, cid: &str, owner: &str) -> Result<(), EngineError> {
        let path = self.path(cid);
        let rec = SandboxRecord {
            cid: cid.into(),
            owner: owner.into(),
            agent_pid: std::process::id(),
            created_unix_ms: unix_ms(),
        };
        std::fs::write(&path, serde_json::to_vec(&rec).expect("record serialises")).map_err(
            host_err(format!("cannot record sandbox {cid} at {}", path.display())),
        )
    }

    /// Drops the record of a container the runtime has deleted.
    fn forget(&self, cid: &str) {
        let _ = std::fs::remove_file(self.path(cid));
    }

    /// Container IDs recorded as started and not yet removed, sorted.
    pub(super) fn recorded(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.path()
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(String::from)
            })
            .collect();
        v.sort();
        v
    }

    /// Deletes container `cid` by its ID, then its record.
    pub(super) async fn remove(&self, runtime: &dyn Runtime, cid: &str) -> Result<(), EngineError> {
        runtime
            .remove(cid)
            .await
            .map_err(|source| EngineError::Runtime {
                context: format!("cannot remove sandbox {cid}"),
                source: Box::new(source),
            })?;
        self.forget(cid);
        Ok(())
    }

    /// [`Journal::remove`] in a task of its own, for a container a
    /// checkpoint has stopped (runsc takes about 1.5 s to tear it down and
    /// nothing needs to wait); a failure leaves the record for cleanup.
    pub(super) fn remove_in_background(
        &self,
        runtime: Arc<dyn Runtime>,
        cid: String,
    ) -> tokio::task::JoinHandle<()> {
        let journal = self.clone();
        tokio::spawn(async move {
            match journal.remove(runtime.as_ref(), &cid).await {
                Ok(()) => debug!(%cid, "deleted checkpointed sandbox"),
                Err(e) => {
                    error!(%cid, error = %error_chain(&e), "cannot delete a checkpointed sandbox; it stays recorded for cleanup")
                }
            }
        })
    }
}

fn journal_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("sandboxes")
}

/// Kills and deletes, by container ID, every sandbox recorded in
/// `state_dir/sandboxes/` (left by an agent that did not shut down), logging
/// each one. Returns the IDs removed.
pub async fn remove_recorded_sandboxes(
    state_dir: &Path,
    runtime: &dyn Runtime,
) -> Result<Vec<String>, EngineError> {
    let dir = journal_dir(state_dir);
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(host_err(format!("cannot read {}", dir.display()))(e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(cid) = path.file_stem().and_then(|s| s.to_str()).map(String::from) else {
            continue;
        };
        let owner = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<SandboxRecord>(&b).ok())
            .map(|r| r.owner)
            .unwrap_or_else(|| "unknown".into());
        runtime
            .remove(&cid)
            .await
            .map_err(|source| EngineError::Runtime {
                context: format!("cannot remove orphan sandbox {cid} ({owner})"),
                source: Box::new(source),
            })?;
        warn!(%cid, %owner, state_dir = %state_dir.display(), "removed orphan sandbox left by an earlier agent");
        let _ = std::fs::remove_file(&path);
        removed.push(cid);
    }
    Ok(removed)
}
