//! The backend seam: what a suite may ask of a system under test.
//!
//! Suites know only this trait. It speaks of templates, actors and routes,
//! never of runsc or Kubernetes; each backend maps the operations onto its
//! own system ([`local`]: the embedded reference agent on gVisor).

pub mod local;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::router::RouterClient;

/// The probe template once its golden snapshot is ready.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Golden {
    /// Template name (unique per run).
    pub template: String,
    /// The golden actor's ID (in atespace `ate-golden`).
    pub golden_actor_id: String,
    /// Where the backend keeps the golden snapshot (for the report).
    pub snapshot: Option<String>,
    /// Time from deploy to Ready.
    pub ready_after: Duration,
}

/// What a backend reports of an actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActorInfo {
    /// Atespace.
    pub atespace: String,
    /// Actor ID.
    pub id: String,
    /// State as the backend names it (`RUNNING`, `SUSPENDED`, ...).
    pub state: String,
    /// Where the last restore came from (`golden`, `own`), if the backend
    /// tells.
    pub restored_from: Option<String>,
    /// Duration of the last restore as the backend measured it.
    pub restore_ms: Option<u64>,
    /// The actor's identity directory on the host, when the harness can see
    /// the host (local backend); `None` on a cluster.
    pub host_identity_dir: Option<PathBuf>,
    /// The sandbox/container running it, if any.
    pub sandbox: Option<String>,
    /// Its OCI bundle directory on the host (local backend).
    #[serde(default)]
    pub host_bundle_dir: Option<PathBuf>,
    /// Its runtime log directory on the host (local backend).
    #[serde(default)]
    pub host_log_dir: Option<PathBuf>,
}

/// An actor a trial created, for artifact collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActorRef {
    /// Atespace.
    pub atespace: String,
    /// Actor ID.
    pub id: String,
}

/// Result of backend operations; the error carries its whole cause chain.
pub type Result<T> = anyhow::Result<T>;

/// A system under test.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Short name (`local`, `kind`).
    fn name(&self) -> &'static str;

    /// Versions and facts for the report's environment fingerprint.
    fn fingerprint(&self) -> Vec<(String, String)>;

    /// Deploys the probe template and waits (at most `deadline`) until its
    /// golden snapshot is ready. Called once per suite run.
    async fn deploy_probe(&self, deadline: Duration) -> Result<Golden>;

    /// Creates an atespace.
    async fn create_atespace(&self, atespace: &str) -> Result<()>;

    /// Deletes an (empty) atespace.
    async fn delete_atespace(&self, atespace: &str) -> Result<()>;

    /// Creates an actor of `template`; it starts suspended.
    async fn create_actor(&self, atespace: &str, id: &str, template: &str) -> Result<ActorInfo>;

    /// Resumes an actor (restore from the golden, or its own snapshot);
    /// returns once it runs.
    async fn resume(&self, atespace: &str, id: &str) -> Result<ActorInfo>;

    /// Suspends a running actor.
    async fn suspend(&self, atespace: &str, id: &str) -> Result<ActorInfo>;

    /// Deletes a suspended actor.
    async fn delete_actor(&self, atespace: &str, id: &str) -> Result<()>;

    /// The actor as the backend sees it.
    async fn get_actor(&self, atespace: &str, id: &str) -> Result<ActorInfo>;

    /// A client that sends HTTP through the router, with
    /// `Host: <actor>.<atespace>.actors.resources.substrate.ate.dev`.
    fn router(&self) -> RouterClient;

    /// Container IDs the backend has started and not yet removed.
    async fn live_sandboxes(&self) -> Result<Vec<String>>;

    /// Writes what a person needs to understand a failure involving
    /// `actors` into `dir` (logs, configs, ...) and returns the files
    /// written. The caller bounds the time.
    async fn collect_artifacts(&self, actors: &[ActorRef], dir: &Path) -> Result<Vec<PathBuf>>;

    /// Leaves everything running for inspection instead of tearing down
    /// (`--keep` after a failure). Returns one line per thing kept, and the
    /// command that removes them.
    async fn keep(&self) -> Result<(Vec<String>, String)>;

    /// Stops everything the backend started. Idempotent.
    async fn teardown(&self) -> Result<()>;
}
