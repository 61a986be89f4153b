//! The sandbox journal: one record per runsc container the agent starts,
//! `<state dir>/sandboxes/<cid>.json`.
//!
//! **Invariants.** A container is recorded *before* the runtime is asked
//! to start it (run or restore), and its record is removed only after the
//! runtime deleted it; so whatever a crashed agent left running is in the
//! journal, and its successor (or `ate-refagent gc`) removes every one by
//! its ID ([`remove_recorded_sandboxes`]), app containers before pause
//! containers (deleting a sandbox's root first would leave its app's
//! state behind). Nothing is ever killed by name.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ate_agent_api::ContainerRole;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{host_err, EngineError};
use crate::runtime::Runtime;

/// One record per started container, for orphan cleanup.
#[derive(Debug, Serialize, Deserialize)]
struct SandboxRecord {
    cid: String,
    owner: String,
    /// Pause or app (absent in records of older agents: removed first).
    #[serde(default)]
    role: Option<ContainerRole>,
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

    /// Records container `cid` in `role`, started for `owner`
    /// (`golden:<template>`, `actor:<atespace>/<id>`); call before the
    /// runtime starts it.
    pub(super) fn record(
        &self,
        cid: &str,
        owner: &str,
        role: ContainerRole,
    ) -> Result<(), EngineError> {
        let path = self.path(cid);
        let rec = SandboxRecord {
            cid: cid.into(),
            owner: owner.into(),
            role: Some(role),
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
        let mut v: Vec<String> = self.records().into_iter().map(|r| r.cid).collect();
        v.sort();
        v
    }

    /// The recorded container IDs in removal order: every container that
    /// is not a pause, then the pause containers; each group sorted.
    pub(super) fn recorded_in_removal_order(&self) -> [Vec<String>; 2] {
        let (mut pauses, mut others): (Vec<_>, Vec<_>) = self
            .records()
            .into_iter()
            .partition(|r| r.role == Some(ContainerRole::Pause));
        others.sort_by(|a, b| a.cid.cmp(&b.cid));
        pauses.sort_by(|a, b| a.cid.cmp(&b.cid));
        [others, pauses].map(|g| g.into_iter().map(|r| r.cid).collect())
    }

    /// Every record; one that cannot be read or parsed still counts, by
    /// its file name, with owner `unknown` and no role.
    fn records(&self) -> Vec<SandboxRecord> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                let cid = path.file_stem()?.to_str()?.to_owned();
                Some(
                    std::fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<SandboxRecord>(&b).ok())
                        .unwrap_or(SandboxRecord {
                            cid: cid.clone(),
                            owner: "unknown".into(),
                            role: None,
                            agent_pid: 0,
                            created_unix_ms: 0,
                        }),
                )
                .map(|r| SandboxRecord { cid, ..r })
            })
            .collect()
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
}

fn journal_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("sandboxes")
}

/// Kills and deletes, by container ID, every container recorded in
/// `state_dir/sandboxes/` (left by an agent that did not shut down), app
/// containers before pause containers, logging each one. Returns the IDs
/// removed.
pub async fn remove_recorded_sandboxes(
    state_dir: &Path,
    runtime: &dyn Runtime,
) -> Result<Vec<String>, EngineError> {
    let journal = Journal::new(state_dir);
    match std::fs::metadata(&journal.dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(host_err(format!("cannot read {}", journal.dir.display()))(
                e,
            ))
        }
        Ok(_) => {}
    }
    let owners: std::collections::BTreeMap<String, (String, Option<ContainerRole>)> = journal
        .records()
        .into_iter()
        .map(|r| (r.cid, (r.owner, r.role)))
        .collect();
    let mut removed = Vec::new();
    for cid in journal.recorded_in_removal_order().into_iter().flatten() {
        let (owner, role) = owners
            .get(&cid)
            .cloned()
            .unwrap_or(("unknown".into(), None));
        let role = role.map(|r| r.as_str()).unwrap_or("unknown");
        runtime
            .remove(&cid)
            .await
            .map_err(|source| EngineError::Runtime {
                context: format!("cannot remove orphan container {cid} ({role} of {owner})"),
                source: Box::new(source),
            })?;
        warn!(%cid, %owner, %role, state_dir = %state_dir.display(), "removed orphan container left by an earlier agent");
        journal.forget(&cid);
        removed.push(cid);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::recording::{Op, Recording};

    #[tokio::test]
    async fn orphans_are_removed_apps_first_and_unreadable_records_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        std::fs::create_dir_all(&journal.dir).unwrap();
        journal
            .record("ate-x-00000001", "actor:a/b", ContainerRole::Pause)
            .unwrap();
        journal
            .record("ate-x-00000002", "actor:a/b", ContainerRole::App)
            .unwrap();
        // An older agent's record (no role), and one that is not JSON.
        std::fs::write(
            journal.path("ate-x-00000003"),
            br#"{"cid":"ate-x-00000003","owner":"actor:a/c","agent_pid":1,"created_unix_ms":0}"#,
        )
        .unwrap();
        std::fs::write(journal.path("ate-x-00000004"), b"torn").unwrap();
        assert_eq!(
            journal.recorded_in_removal_order(),
            [
                vec![
                    "ate-x-00000002".to_owned(),
                    "ate-x-00000003".into(),
                    "ate-x-00000004".into()
                ],
                vec!["ate-x-00000001".to_owned()],
            ]
        );
        let rt = Recording::new(&journal.dir);
        let removed = remove_recorded_sandboxes(dir.path(), &rt).await.unwrap();
        assert_eq!(
            removed,
            [
                "ate-x-00000002",
                "ate-x-00000003",
                "ate-x-00000004",
                "ate-x-00000001"
            ]
        );
        let calls = rt.calls();
        assert!(
            calls.iter().all(|c| c.op == Op::Remove && c.journaled),
            "{calls:?}"
        );
        assert!(journal.recorded().is_empty());
    }
}
