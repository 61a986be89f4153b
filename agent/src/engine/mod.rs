//! The engine: templates, atespaces and actors of one agent, in rooms.
//!
//! - `template`: a template's checks, its golden boot (run, `/healthz`,
//!   checkpoint), lookup and deletion;
//! - `actor`: the actor state machine ([`actor::Life`], each operation's
//!   precondition a method of it) and resume / suspend / delete / forward;
//! - `provision`: how an actor's host side is laid out (directories,
//!   identity, rootfs, bundle) behind the one [`provision::Provisioner`]
//!   trait: the healthy agent, and one implementation per fault mode;
//! - `sandbox`: an actor's sandbox in the runtime, a pause container and
//!   the app container (boot, restore, checkpoint, removal);
//! - `journal`: the sandbox journal (record before start, remove after
//!   delete, orphans after a crash);
//! - `store`: the persisted registry (`state.json`).
//!
//! The engine reaches runsc only through [`Runtime`] (`crate::runtime`).
//!
//! **Invariants.** Operations on one actor are serialised by its operation
//! lock; a failed operation leaves the actor in the state it started from,
//! with nothing half-made on disk or in the runtime. Every container is
//! recorded in the journal *before* the runtime is asked to start it and
//! the record is removed only after the runtime deleted it, so a crashed
//! agent's successor finds every orphan. The per-actor bundle, identity and
//! rootfs directories are reset at the start of every run/restore and after
//! every suspend's checkpoint (ID-10), and `config.json` is generated anew
//! each time. Nothing created after shutdown begins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::error;

use crate::bundle::HELPER_MOUNT_POINT;
use crate::fault::Fault;
use crate::names::{self, NameError, GOLDEN_ATESPACE};
use crate::relay::{RelayError, RelayPool};
use crate::rootfs;
use crate::runsc::{DebugLog, RunscError};
use crate::runtime::Runtime;

mod actor;
mod journal;
mod provision;
mod sandbox;
mod store;
mod template;
#[cfg(test)]
mod tests;

pub use journal::remove_recorded_sandboxes;

/// File name of the agent binary inside the helper directory.
pub const HELPER_BIN_NAME: &str = "ate-refagent";

/// Errors of engine operations; `api` maps each to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A name broke ID-14.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// A request field has a value that is not allowed.
    #[error("invalid {field} {value:?}: {allowed}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// The thing named does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// "template", "atespace" or "actor".
        kind: &'static str,
        /// Its name (`atespace/actor` for actors).
        name: String,
    },
    /// The thing named exists already.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// "template", "atespace" or "actor".
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The operation is not allowed in the actor's or template's state.
    #[error("cannot {op} {what}: it is {state}; {allowed}")]
    WrongState {
        /// The operation.
        op: &'static str,
        /// What it was asked of.
        what: String,
        /// The state it is in.
        state: String,
        /// When the operation is allowed.
        allowed: &'static str,
    },
    /// The runtime failed; the source says how.
    #[error("{context}")]
    Runtime {
        /// What the agent was doing.
        context: String,
        /// The runsc failure.
        #[source]
        source: Box<RunscError>,
    },
    /// Preparing files on the host failed.
    #[error("{context}")]
    Host {
        /// What the agent was doing.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The agent is shutting down and starts nothing new.
    #[error("the agent is shutting down: cannot {op}")]
    ShuttingDown {
        /// What was refused.
        op: String,
    },
    /// Talking to the actor through its relay failed.
    #[error(transparent)]
    Relay(#[from] RelayError),
}

/// The container ID of sandbox number `n` of agent `instance`: fixed
/// width, so no ID is a prefix of another (runsc resolves prefixes).
pub fn container_id(instance: &str, n: u64) -> String {
    format!("ate-{instance}-{n:08}")
}

/// `kind` `name` does not exist.
fn not_found(kind: &'static str, name: impl Into<String>) -> EngineError {
    EngineError::NotFound {
        kind,
        name: name.into(),
    }
}

fn host_err<E: std::error::Error + Send + Sync + 'static>(
    context: impl Into<String>,
) -> impl FnOnce(E) -> EngineError {
    let context = context.into();
    move |e| EngineError::Host {
        context,
        source: Box::new(e),
    }
}

pub use ate_agent_api::{
    ActorDirs, ActorState, ActorView, ContainerRole, ContainerView, GoldenPaths, Phase,
    RestoreSource, SnapshotSource, TemplateSpec, TemplateStatus, TemplateView,
};

#[derive(Default)]
struct Registry {
    templates: BTreeMap<String, Arc<template::Template>>,
    atespaces: BTreeMap<String, BTreeMap<String, Arc<actor::Actor>>>,
}

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The agent's state directory.
    pub state_dir: PathBuf,
    /// The container runtime ([`crate::runsc::Runsc`] in the agent).
    pub runtime: Arc<dyn Runtime>,
    /// Host path of the static agent binary to expose at `/.ate` as relay.
    pub helper_bin: PathBuf,
    /// Host path of the harness's static checker, placed beside the relay
    /// (`None`: no checks; see `check`).
    pub checker_bin: Option<PathBuf>,
    /// Deadline for the golden actor to answer `/healthz`.
    pub golden_health_timeout: Duration,
    /// Pass `--debug --debug-log` to runsc (per-actor `logs/`).
    pub runsc_debug: bool,
    /// Break the identity contract on purpose this way (self-test only;
    /// `None` is the healthy agent). Chooses the provisioner, once.
    pub fault: Option<Fault>,
}

/// The engine: all templates, atespaces and actors of one agent.
pub struct Engine {
    cfg: EngineConfig,
    runtime: Arc<dyn Runtime>,
    provisioner: Arc<dyn provision::Provisioner>,
    journal: journal::Journal,
    instance: String,
    seq: AtomicU64,
    reg: Mutex<Registry>,
    persist_lock: Mutex<()>,
    /// Deletions of checkpointed (stopped) containers still in progress.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Golden boots in progress.
    golden_boots: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set (under the registry lock) when shutdown begins: nothing new is
    /// created or started after it.
    closing: AtomicBool,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("getrandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A random UUID (v4), lowercase: a valid actor ID.
pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("getrandom");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Engine {
    /// Opens the engine on its state dir: loads the persisted registry and
    /// removes every sandbox a previous agent left (logging each one).
    /// Returns the engine and the IDs of the orphans it removed.
    pub async fn open(cfg: EngineConfig) -> Result<(Arc<Engine>, Vec<String>), EngineError> {
        for d in ["templates", "actors", "sandboxes", "helper"] {
            std::fs::create_dir_all(cfg.state_dir.join(d)).map_err(host_err(format!(
                "cannot create {}",
                cfg.state_dir.join(d).display()
            )))?;
        }
        // The helper dir holds the agent binary (and the checker), mounted at /.ate.
        let helper = cfg.state_dir.join("helper").join(HELPER_BIN_NAME);
        let _ = std::fs::remove_file(&helper);
        rootfs::link_or_copy(&cfg.helper_bin, &helper).map_err(host_err(format!(
            "cannot place the relay helper at {}",
            helper.display()
        )))?;
        crate::check::place_checker(cfg.checker_bin.as_deref(), &cfg.state_dir.join("helper"))?;

        let engine = Arc::new(Engine {
            runtime: cfg.runtime.clone(),
            provisioner: provision::for_config(cfg.fault).into(),
            journal: journal::Journal::new(&cfg.state_dir),
            instance: random_hex(4),
            seq: AtomicU64::new(0),
            reg: Mutex::new(Registry::default()),
            persist_lock: Mutex::new(()),
            background: Mutex::new(Vec::new()),
            golden_boots: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            cfg,
        });
        let orphans =
            remove_recorded_sandboxes(&engine.cfg.state_dir, engine.runtime.as_ref()).await?;
        engine.load()?;
        Ok((engine, orphans))
    }

    /// The agent instance ID (part of every container ID it makes).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The configuration it was opened with (for `check`).
    pub(crate) fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The container runtime (for `check`).
    pub(crate) fn runtime(&self) -> &dyn Runtime {
        self.runtime.as_ref()
    }

    /// The fault mode this agent runs in (`None`: healthy).
    pub fn fault(&self) -> Option<Fault> {
        self.provisioner.fault()
    }

    /// `ate-<instance>-<8 digits>`. runsc accepts any unambiguous prefix of
    /// a container ID, so `ate-x-4` would be ambiguous while `ate-x-41`
    /// runs; IDs of one fixed length are never a prefix of one another.
    fn new_cid(&self) -> String {
        container_id(&self.instance, self.seq.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Container IDs (pause and app) this agent has recorded as started
    /// and not yet removed.
    pub fn recorded_sandboxes(&self) -> Vec<String> {
        self.journal.recorded()
    }

    fn helper_dir(&self) -> PathBuf {
        self.cfg.state_dir.join("helper")
    }

    /// The agent binary in the helper dir (the relay, and the pause
    /// container's program).
    fn helper_bin(&self) -> PathBuf {
        self.helper_dir().join(HELPER_BIN_NAME)
    }

    /// The relays into the app container `cid`, whose app listens on
    /// `port`.
    fn relays(&self, cid: &str, port: u16) -> Arc<RelayPool> {
        RelayPool::new(
            self.runtime.clone(),
            cid,
            &format!("{HELPER_MOUNT_POINT}/{HELPER_BIN_NAME}"),
            port,
        )
    }

    /// `logs/console.log`: the container's stdio and runsc's messages for
    /// run and restore (appended across resumes).
    fn console_log(&self, logs: &Path) -> Result<PathBuf, EngineError> {
        std::fs::create_dir_all(logs)
            .map_err(host_err(format!("cannot create {}", logs.display())))?;
        Ok(logs.join("console.log"))
    }

    fn debug_dir<'a>(&self, logs: &'a Path) -> DebugLog<'a> {
        if self.cfg.runsc_debug {
            let _ = std::fs::create_dir_all(logs);
            DebugLog(Some(logs))
        } else {
            DebugLog(None)
        }
    }

    fn refuse_if_closing(&self, op: impl FnOnce() -> String) -> Result<(), EngineError> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown { op: op() });
        }
        Ok(())
    }

    // --------------------------------------------------------------- atespaces

    /// Creates an atespace.
    pub fn create_atespace(&self, name: &str) -> Result<(), EngineError> {
        names::validate_atespace(name)?;
        if name == GOLDEN_ATESPACE {
            return Err(EngineError::InvalidField {
                field: "atespace",
                value: name.into(),
                allowed: format!("{GOLDEN_ATESPACE} is reserved for golden actors"),
            });
        }
        {
            let mut reg = self.reg.lock().unwrap();
            if reg.atespaces.contains_key(name) {
                return Err(EngineError::AlreadyExists {
                    kind: "atespace",
                    name: name.into(),
                });
            }
            reg.atespaces.insert(name.into(), BTreeMap::new());
        }
        self.persist();
        Ok(())
    }

    /// Deletes an empty atespace.
    pub fn delete_atespace(&self, name: &str) -> Result<(), EngineError> {
        {
            let mut reg = self.reg.lock().unwrap();
            let m = reg
                .atespaces
                .get(name)
                .ok_or_else(|| not_found("atespace", name))?;
            if let Some(id) = m.keys().next() {
                return Err(EngineError::WrongState {
                    op: "delete",
                    what: format!("atespace {name}"),
                    state: format!("not empty (actor {id})"),
                    allowed: "delete its actors first",
                });
            }
            reg.atespaces.remove(name);
        }
        let _ = std::fs::remove_dir_all(self.cfg.state_dir.join("actors").join(name));
        self.persist();
        Ok(())
    }

    /// Names of all atespaces.
    pub fn atespaces(&self) -> Vec<String> {
        self.reg.lock().unwrap().atespaces.keys().cloned().collect()
    }

    // ---------------------------------------------------------------- shutdown

    /// Refuses new work from now on (the flag is set under the registry
    /// lock, so no actor is created behind it) and returns every actor.
    fn close(&self) -> Vec<Arc<actor::Actor>> {
        let reg = self.reg.lock().unwrap();
        self.closing.store(true, Ordering::SeqCst);
        reg.atespaces
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Waits for the deletions of checkpointed sandboxes still in flight.
    async fn wait_background_deletes(&self) {
        let pending = std::mem::take(&mut *self.background.lock().unwrap());
        for task in pending {
            let _ = task.await;
        }
    }

    /// Stops taking work and lets in-flight operations finish, but leaves
    /// every sandbox running and recorded (the harness's `--keep`).
    /// Returns the recorded container IDs.
    pub async fn detach(&self) -> Vec<String> {
        for a in self.close() {
            a.close_relays().await;
        }
        self.wait_background_deletes().await;
        self.persist();
        self.recorded_sandboxes()
    }

    /// Stops every running actor and removes its sandbox (agent shutdown).
    /// Returns the container IDs removed.
    pub async fn shutdown(&self) -> Vec<String> {
        // Stop routing to every running actor; their sandboxes are removed
        // below, all at once (each takes runsc about 2 s).
        for a in self.close() {
            a.abandon().await;
        }
        // Golden boots in flight: stop them; their sandboxes are recorded
        // and removed below.
        let boots = std::mem::take(&mut *self.golden_boots.lock().unwrap());
        for task in boots {
            task.abort();
            let _ = task.await;
        }
        // Deletions of checkpointed sandboxes still in flight.
        self.wait_background_deletes().await;
        // Every container still recorded: running actors, a golden boot in
        // flight, a failed delete. Concurrently, by container ID: the app
        // containers first, then the pause containers.
        let mut removed = Vec::new();
        for group in self.journal.recorded_in_removal_order() {
            let mut tasks = tokio::task::JoinSet::new();
            for cid in group {
                let runtime = self.runtime.clone();
                let journal = self.journal.clone();
                tasks.spawn(async move {
                    let r = journal.remove(runtime.as_ref(), &cid).await;
                    (cid, r)
                });
            }
            while let Some(done) = tasks.join_next().await {
                match done {
                    Ok((cid, Ok(()))) => removed.push(cid),
                    Ok((cid, Err(e))) => {
                        error!(%cid, error = %error_chain(&e), "cannot remove container at shutdown")
                    }
                    Err(e) => error!(error = %e, "container removal task failed"),
                }
            }
        }
        removed.sort();
        self.persist();
        removed
    }
}

/// Renders an error and its sources, one cause per line (`caused by: ...`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str("\ncaused by: ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
