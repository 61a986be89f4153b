//! The backend seam: what a suite may ask of a system under test.
//!
//! Suites know only this trait. It speaks of templates, actors and routes,
//! never of runsc or Kubernetes; each backend maps the operations onto its
//! own system ([`local`]: the embedded reference agent on gVisor).

pub mod kind;
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

/// How a template deployment ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateOutcome {
    /// Template name.
    pub name: String,
    /// Last phase (`Ready`, `Failed`, or whatever it was at the deadline).
    pub phase: String,
    /// Why it failed, as the backend says.
    pub reason: Option<String>,
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

    /// Conformance hook (ID-9): rewrites a running actor's identity file on
    /// the host, cycling through `values` for `for_ms` ms, then its own ID
    /// again. `Ok(None)`: this backend cannot (the trial is skipped).
    /// Returns the number of writes.
    async fn rewrite_identity(
        &self,
        atespace: &str,
        id: &str,
        values: &[String],
        for_ms: u64,
    ) -> Result<Option<u64>>;

    /// Deploys a probe template named `<base>` whose image also holds the
    /// given symlinks (path in the image, target), and waits (at most
    /// `deadline`) until it is Ready or Failed. `Ok(None)`: this backend
    /// cannot build such an image.
    async fn deploy_probe_with_symlinks(
        &self,
        base: &str,
        symlinks: &[(String, String)],
        deadline: Duration,
    ) -> Result<Option<TemplateOutcome>>;

    /// Deletes a template (with no actors).
    async fn delete_template(&self, name: &str) -> Result<()>;

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
