//! The backend seam: what a suite may ask of a system under test.
//!
//! Suites know only this trait. It speaks of templates, actors and routes,
//! never of runsc or Kubernetes; each backend maps the operations onto its
//! own system ([`local`]: the embedded reference agent on gVisor; [`kind`]:
//! Agent Substrate on a kind cluster) and its spelling onto the types here
//! ([`ActorState`], [`TemplatePhase`], [`BackendError`]). Two capabilities
//! beyond the trait are offered only where a backend has them:
//! [`HostAccess`] (the machine the actors run on) and [`SandboxAccess`]
//! (the harness's own checker run inside an actor's sandbox). [`select`] is
//! the one place that knows every backend: their flag groups,
//! prerequisites and construction.

pub mod kind;
pub mod local;
pub mod node;
pub mod select;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use ate_checker::{ActorProcess, Env, Evidence, IdentityDir, IdentityWatch, TryWrite};

use crate::router::{RoutedResponse, RouterClient};

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

/// An actor's state, as every backend maps its system's spelling onto it
/// (the reference agent's `RUNNING`, upstream's `STATUS_RUNNING`, ...).
/// Suites compare these, never strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActorState {
    /// Being restored.
    Resuming,
    /// Running: reachable through the router.
    Running,
    /// Being checkpointed.
    Suspending,
    /// Checkpointed; a routed request resumes it.
    Suspended,
    /// Paused (upstream's `STATUS_PAUSING`/`STATUS_PAUSED`).
    Paused,
    /// Anything else, with the backend's raw text.
    Unknown(String),
}

impl ActorState {
    /// True for [`ActorState::Running`].
    pub fn is_running(&self) -> bool {
        *self == ActorState::Running
    }

    /// True for [`ActorState::Suspended`].
    pub fn is_suspended(&self) -> bool {
        *self == ActorState::Suspended
    }
}

impl std::fmt::Display for ActorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActorState::Resuming => f.write_str("Resuming"),
            ActorState::Running => f.write_str("Running"),
            ActorState::Suspending => f.write_str("Suspending"),
            ActorState::Suspended => f.write_str("Suspended"),
            ActorState::Paused => f.write_str("Paused"),
            ActorState::Unknown(raw) => write!(f, "unknown state {raw:?}"),
        }
    }
}

/// Where an actor's last restore came from, when the backend tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreSource {
    /// The template's golden snapshot.
    Golden,
    /// The actor's own last snapshot.
    Own,
}

/// What a backend reports of an actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActorInfo {
    /// Atespace.
    pub atespace: String,
    /// Actor ID.
    pub id: String,
    /// State.
    pub state: ActorState,
    /// Where the last restore came from, if the backend tells.
    pub restored_from: Option<RestoreSource>,
    /// Duration of the last restore as the backend measured it.
    pub restore_ms: Option<u64>,
    /// The sandbox/container running it, if any.
    pub sandbox: Option<String>,
}

/// An actor's directories on the host ([`HostAccess::actor_dirs`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostDirs {
    /// Its identity directory (the source of the `/run/ate` mount).
    pub identity: Option<PathBuf>,
    /// Its OCI bundle directory.
    pub bundle: Option<PathBuf>,
    /// Its runtime log directory.
    pub logs: Option<PathBuf>,
}

/// A container's part in an actor's sandbox ([`HostAccess::containers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerRole {
    /// The sandbox's infrastructure (pause) container: ID-12 says it gets
    /// no identity mount and no mount point.
    Pause,
    /// An application container: it gets the identity mount (ID-1).
    App,
}

/// One container of a running actor's sandbox, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostContainer {
    /// Pause or app.
    pub role: ContainerRole,
    /// The runtime's container ID.
    pub id: String,
    /// Its OCI bundle directory (holding `config.json`).
    pub bundle: PathBuf,
}

/// How a template deployment ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateOutcome {
    /// Template name.
    pub name: String,
    /// Last phase seen (at the deadline, if it never settled).
    pub phase: TemplatePhase,
    /// Why it failed, as the backend says.
    pub reason: Option<String>,
}

/// A template's phase, as every backend maps its system's spelling onto it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TemplatePhase {
    /// The golden snapshot is ready.
    Ready,
    /// The golden actor could not be made.
    Failed,
    /// Anything else (still on its way), with the backend's raw text.
    Other(String),
}

/// An actor a trial created, for artifact collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActorRef {
    /// Atespace.
    pub atespace: String,
    /// Actor ID.
    pub id: String,
}

/// Why a backend operation did not give its answer. The runner maps the
/// variants onto verdicts: a missing prerequisite or an unsupported
/// operation skips the trial with the reason; a failure fails it with the
/// whole cause chain.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Something this machine lacks (root, a program): skipped.
    #[error("prerequisite missing: {0}")]
    Prerequisite(String),
    /// The backend cannot do this at all: skipped.
    #[error("backend {backend} cannot {what}")]
    Unsupported {
        /// The backend's short name.
        backend: &'static str,
        /// What it cannot do.
        what: String,
    },
    /// The operation failed; the cause chain is kept.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Result of backend operations.
pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// What a backend offers when the harness can see the machine its actors
/// run on (the local backend): host directories, the identity rewrite hook
/// (ID-9) and images with planted symlinks (ID-13). A backend that cannot
/// see the host offers none ([`Backend::host`] is `None`) and trials that
/// need it are skipped with that reason before they run.
#[async_trait]
pub trait HostAccess: Send + Sync {
    /// The actor's directories on the host.
    async fn actor_dirs(&self, atespace: &str, id: &str) -> Result<HostDirs>;

    /// The containers of a running actor's sandbox (pause and app), with
    /// their bundles.
    async fn containers(&self, atespace: &str, id: &str) -> Result<Vec<HostContainer>>;

    /// A path as the runtime wrote it in a bundle (a mount's source, an
    /// absolute `root.path`), as the harness sees it on the host. The same
    /// path unless the runtime lives in a mount namespace of its own (the
    /// node backend: `/var/lib/ateom-gvisor` is this run's directory).
    fn host_path(&self, seen_by_runtime: &Path) -> PathBuf {
        seen_by_runtime.to_owned()
    }

    /// Rewrites a running actor's identity file on the host, cycling
    /// through `values` for `for_ms` ms, then its own ID again. Returns the
    /// number of writes.
    async fn rewrite_identity(
        &self,
        atespace: &str,
        id: &str,
        values: &[String],
        for_ms: u64,
    ) -> Result<u64>;

    /// Deploys a probe template named `<base>-<run>` whose image also holds
    /// the given symlinks (path in the image, target), and waits (at most
    /// `deadline`) until it is Ready or Failed.
    async fn deploy_probe_with_symlinks(
        &self,
        base: &str,
        symlinks: &[(String, String)],
        deadline: Duration,
    ) -> Result<TemplateOutcome>;
}

/// What a backend offers when it can run the harness's own static checker
/// (`ate-check`, crate `ate-checker`) inside an actor's sandbox (the local
/// backend: `runsc exec` through the agent). Every observation of the
/// contract except the `/whoami` answer then comes from code the harness
/// owns, so a probe with only `/whoami` and `/healthz` gets every trial. A
/// backend without it ([`Backend::sandbox`] is `None`, kind) leaves the
/// trials to the probe's own endpoints, or to a skip with the reason.
///
/// Each call runs in a RUNNING actor and returns the checker's own type.
#[async_trait]
pub trait SandboxAccess: Send + Sync {
    /// `ate-check mounts`: `/run/ate`'s entries and every mount at or
    /// under it.
    async fn mounts(&self, atespace: &str, id: &str) -> Result<IdentityDir>;

    /// `ate-check try-write`: write, create, unlink, rename, mkdir in
    /// `/run/ate`.
    async fn try_write(&self, atespace: &str, id: &str) -> Result<TryWrite>;

    /// `ate-check env`: the environment of the actor's own process.
    async fn env(&self, atespace: &str, id: &str) -> Result<Env>;

    /// `ate-check watch --ms N`: `actor-id` read in a loop for `ms`.
    async fn watch(&self, atespace: &str, id: &str, ms: u64) -> Result<IdentityWatch>;

    /// `ate-check evidence`: which process image the actor runs.
    async fn evidence(&self, atespace: &str, id: &str) -> Result<Evidence>;

    /// `ate-check mark --token T`: plants `token` in the actor's memory,
    /// then the evidence.
    async fn mark(&self, atespace: &str, id: &str, token: &str) -> Result<Evidence>;

    /// The evidence the backend recorded in the golden sandbox of
    /// `template` just before its checkpoint (a token planted there).
    async fn golden_evidence(&self, template: &str) -> Result<Evidence>;
}

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

    /// When `resp` is the router's own refusal (no such actor, bad Host)
    /// rather than the actor's answer, the router's message. Lets a trial
    /// tell a probe that lacks an endpoint from a route that does not exist.
    fn router_refusal(&self, _resp: &RoutedResponse) -> Option<String> {
        None
    }

    /// Container IDs the backend has started and not yet removed.
    async fn live_sandboxes(&self) -> Result<Vec<String>>;

    /// Host-only operations, when the harness can see the host.
    fn host(&self) -> Option<&dyn HostAccess> {
        None
    }

    /// The harness's checker inside actors' sandboxes, when the backend
    /// can run it.
    fn sandbox(&self) -> Option<&dyn SandboxAccess> {
        None
    }

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
