//! Templates and actors, with the actor state machine.
//!
//! ```text
//!            create                resume (golden or own snapshot)
//!   (none) ---------> Suspended ----------------------------> Running
//!                      ^   |  delete                            |
//!                      |   v                                    |
//!                      | (gone)          suspend (checkpoint)   |
//!                      +----------------------------------------+
//! ```
//!
//! **Invariants.** Operations on one actor are serialised by its `op` lock;
//! a failed operation leaves the actor in the state it started from, with
//! nothing half-made on disk or in runsc. Every sandbox is recorded in
//! `sandboxes/<cid>.json` *before* runsc is asked to start it and the record
//! is removed only after runsc deleted it, so a crashed agent's successor
//! finds every orphan. The per-actor bundle, identity and rootfs directories
//! are reset at the start of every run/restore and after every suspend's
//! checkpoint (ID-10), and `config.json` is generated anew each time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use crate::bundle::{self, BundleSpec, IdentityMount, HELPER_MOUNT_POINT};
use crate::fault::Fault;
use crate::identity;
use crate::names::{self, NameError, GOLDEN_ATESPACE};
use crate::relay::{FullResponse, RelayError, RelayPool};
use crate::rootfs;
use crate::runsc::{DebugLog, Runsc, RunscError};

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

/// A wrong-state error for an actor operation.
fn actor_wrong_state(
    op: &'static str,
    atespace: &str,
    id: &str,
    state: &str,
    allowed: &'static str,
) -> EngineError {
    EngineError::WrongState {
        op,
        what: format!("actor {atespace}/{id}"),
        state: state.into(),
        allowed,
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
    ActorDirs, ActorState, ActorView, GoldenPaths, Phase, RestoreSource, SnapshotSource,
    TemplateSpec, TemplateStatus, TemplateView,
};

struct Running {
    cid: String,
    relays: Arc<RelayPool>,
}

struct Actor {
    view: Mutex<ActorView>,
    running: Mutex<Option<Arc<RelayPool>>>,
    /// Serialises resume/suspend/delete of this actor.
    op: tokio::sync::Mutex<Option<Running>>,
    port: u16,
}

struct Template {
    view: Mutex<TemplateView>,
}

#[derive(Default)]
struct Registry {
    templates: BTreeMap<String, Arc<Template>>,
    atespaces: BTreeMap<String, BTreeMap<String, Arc<Actor>>>,
}

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The agent's state directory.
    pub state_dir: PathBuf,
    /// How to call runsc.
    pub runsc: Runsc,
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
    /// `None` is the healthy agent).
    pub fault: Option<Fault>,
}

/// Persisted registry (`state.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    templates: Vec<TemplateView>,
    atespaces: BTreeMap<String, Vec<ActorView>>,
}

/// One record per started sandbox, for orphan cleanup.
#[derive(Debug, Serialize, Deserialize)]
struct SandboxRecord {
    cid: String,
    owner: String,
    agent_pid: u32,
    created_unix_ms: u64,
}

/// The engine: all templates, atespaces and actors of one agent.
pub struct Engine {
    cfg: EngineConfig,
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
    closing: std::sync::atomic::AtomicBool,
    /// FAULT `no-reset` only: the directories of the first actor resumed,
    /// whose bundle every later resume reuses.
    no_reset_first: Mutex<Option<ActorDirs>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
            instance: random_hex(4),
            seq: AtomicU64::new(0),
            reg: Mutex::new(Registry::default()),
            persist_lock: Mutex::new(()),
            background: Mutex::new(Vec::new()),
            golden_boots: Mutex::new(Vec::new()),
            closing: std::sync::atomic::AtomicBool::new(false),
            no_reset_first: Mutex::new(None),
            cfg,
        });
        let orphans = engine.remove_orphans().await?;
        engine.load()?;
        Ok((engine, orphans))
    }

    /// The agent instance ID (part of every container ID it makes).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The runsc driver.
    pub fn runsc(&self) -> &Runsc {
        &self.cfg.runsc
    }

    /// The configuration it was opened with (for `check`).
    pub(crate) fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The fault mode this agent runs in (`None`: healthy).
    pub fn fault(&self) -> Option<Fault> {
        self.cfg.fault
    }

    /// The directories of an actor (or golden actor) rooted at `root`.
    fn actor_dirs(&self, root: PathBuf) -> ActorDirs {
        let mut dirs = ActorDirs::under(&root);
        if self.cfg.fault == Some(Fault::SharedIdentityDir) {
            // FAULT shared-identity-dir: breaks ID-8 ("each actor has its
            // own host identity directory; no two actors share one").
            dirs.identity = self.cfg.state_dir.join("shared-identity");
        }
        dirs
    }

    /// Resets an actor's per-run directories: bundle, identity, rootfs
    /// (ID-10).
    fn reset_per_run_dirs(&self, dirs: &ActorDirs) -> Result<(), EngineError> {
        for d in [&dirs.bundle, &dirs.identity, &dirs.rootfs] {
            if self.cfg.fault == Some(Fault::SharedIdentityDir) && d == &dirs.identity {
                // FAULT shared-identity-dir: breaks ID-8/ID-10 (per-actor
                // directory deleted and recreated): the one shared dir is
                // only created, never reset, so every mount of it sees
                // the last write.
                std::fs::create_dir_all(d)
                    .map_err(host_err(format!("cannot create {}", d.display())))?;
                continue;
            }
            identity::reset_dir(d).map_err(host_err(format!("cannot reset {}", d.display())))?;
        }
        Ok(())
    }

    async fn remove_orphans(&self) -> Result<Vec<String>, EngineError> {
        remove_recorded_sandboxes(&self.cfg.state_dir, &self.cfg.runsc).await
    }

    fn load(&self) -> Result<(), EngineError> {
        let path = self.cfg.state_dir.join("state.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(host_err(format!("cannot read {}", path.display()))(e)),
        };
        let p: Persisted = serde_json::from_slice(&bytes)
            .map_err(host_err(format!("cannot parse {}", path.display())))?;
        let mut reg = self.reg.lock().unwrap();
        for mut t in p.templates {
            if t.status.phase != Phase::Ready {
                t.status.phase = Phase::Failed;
                t.status.reason.get_or_insert_with(|| {
                    "the agent stopped while the golden actor was booting".into()
                });
            }
            reg.templates.insert(
                t.spec.name.clone(),
                Arc::new(Template {
                    view: Mutex::new(t),
                }),
            );
        }
        for (a, actors) in p.atespaces {
            let mut m = BTreeMap::new();
            for mut v in actors {
                let port = reg
                    .templates
                    .get(&v.template)
                    .map(|t| t.view.lock().unwrap().spec.port)
                    .unwrap_or(80);
                // Whatever ran before is gone (orphans were removed): the
                // actor resumes from its last own snapshot, or the golden.
                v.state = ActorState::Suspended;
                v.sandbox = None;
                m.insert(v.id.clone(), Arc::new(Actor::new(v, port)));
            }
            reg.atespaces.insert(a, m);
        }
        info!(
            templates = reg.templates.len(),
            atespaces = reg.atespaces.len(),
            "loaded agent state"
        );
        Ok(())
    }

    fn persist(&self) {
        let _g = self.persist_lock.lock().unwrap();
        let p = {
            let reg = self.reg.lock().unwrap();
            Persisted {
                templates: reg
                    .templates
                    .values()
                    .map(|t| t.view.lock().unwrap().clone())
                    .collect(),
                atespaces: reg
                    .atespaces
                    .iter()
                    .map(|(a, m)| {
                        (
                            a.clone(),
                            m.values().map(|x| x.view.lock().unwrap().clone()).collect(),
                        )
                    })
                    .collect(),
            }
        };
        let path = self.cfg.state_dir.join("state.json");
        let tmp = self.cfg.state_dir.join(".state.json.tmp");
        let res = serde_json::to_vec_pretty(&p)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = res {
            error!(error = %e, path = %path.display(), "cannot persist agent state");
        }
    }

    /// `ate-<instance>-<8 digits>`. runsc accepts any unambiguous prefix of
    /// a container ID, so `ate-x-4` would be ambiguous while `ate-x-41`
    /// runs; IDs of one fixed length are never a prefix of one another.
    fn new_cid(&self) -> String {
        container_id(&self.instance, self.seq.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record_sandbox(&self, cid: &str, owner: &str) -> Result<PathBuf, EngineError> {
        let path = self
            .cfg
            .state_dir
            .join("sandboxes")
            .join(format!("{cid}.json"));
        let rec = SandboxRecord {
            cid: cid.into(),
            owner: owner.into(),
            agent_pid: std::process::id(),
            created_unix_ms: unix_ms(),
        };
        std::fs::write(&path, serde_json::to_vec(&rec).expect("record serialises")).map_err(
            host_err(format!("cannot record sandbox {cid} at {}", path.display())),
        )?;
        Ok(path)
    }

    async fn remove_sandbox(&self, cid: &str) -> Result<(), EngineError> {
        self.cfg
            .runsc
            .remove(cid)
            .await
            .map_err(|source| EngineError::Runtime {
                context: format!("cannot remove sandbox {cid}"),
                source: Box::new(source),
            })?;
        let _ = std::fs::remove_file(
            self.cfg
                .state_dir
                .join("sandboxes")
                .join(format!("{cid}.json")),
        );
        Ok(())
    }

    /// Deletes a container that a successful checkpoint has stopped, in
    /// the background: runsc takes about 1.5 s to tear such a sandbox down
    /// and nothing needs to wait for it. The record stays until runsc has
    /// deleted it, and [`Engine::shutdown`] waits for these deletions.
    fn remove_stopped_sandbox_later(&self, cid: String) {
        let runsc = self.cfg.runsc.clone();
        let record = self
            .cfg
            .state_dir
            .join("sandboxes")
            .join(format!("{cid}.json"));
        let task = tokio::spawn(async move {
            match runsc.remove(&cid).await {
                Ok(()) => {
                    let _ = std::fs::remove_file(&record);
                    debug!(%cid, "deleted checkpointed sandbox");
                }
                Err(e) => {
                    error!(%cid, error = %error_chain(&e), "cannot delete a checkpointed sandbox; it stays recorded for cleanup")
                }
            }
        });
        let mut bg = self.background.lock().unwrap();
        bg.retain(|t| !t.is_finished());
        bg.push(task);
    }

    /// Container IDs this agent has recorded as started and not yet removed.
    pub fn recorded_sandboxes(&self) -> Vec<String> {
        let dir = self.cfg.state_dir.join("sandboxes");
        let mut v: Vec<String> = std::fs::read_dir(dir)
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

    fn helper_dir(&self) -> PathBuf {
        self.cfg.state_dir.join("helper")
    }

    fn helper_in_sandbox() -> String {
        format!("{HELPER_MOUNT_POINT}/{HELPER_BIN_NAME}")
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

    // ---------------------------------------------------------------- templates

    /// Checks a `POST /templates` body and fills its defaults (`args`);
    /// an error names the field, the value and what is allowed.
    pub fn validate_spec(spec: &mut TemplateSpec) -> Result<(), EngineError> {
        names::validate_template_name(&spec.name)?;
        let bad = |field, value: String, allowed: &str| EngineError::InvalidField {
            field,
            value,
            allowed: allowed.into(),
        };
        if !spec.binary.is_absolute() {
            return Err(bad(
                "binary",
                spec.binary.display().to_string(),
                "must be an absolute path to a static executable on the agent's host",
            ));
        }
        let meta = std::fs::metadata(&spec.binary).map_err(|e| {
            bad(
                "binary",
                spec.binary.display().to_string(),
                &format!("must exist ({e})"),
            )
        })?;
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(bad(
                "binary",
                spec.binary.display().to_string(),
                "must be an executable regular file",
            ));
        }
        if let Some(dir) = &spec.image_dir {
            let shown = dir.display().to_string();
            if !dir.is_absolute() {
                return Err(bad(
                    "image_dir",
                    shown,
                    "must be an absolute path to a directory",
                ));
            }
            match std::fs::symlink_metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(bad("image_dir", shown, "must be a directory")),
                Err(e) => return Err(bad("image_dir", shown, &format!("must exist ({e})"))),
            }
        }
        if spec.port == 0 {
            return Err(bad("port", "0".into(), "must be 1..=65535"));
        }
        let file_name = spec
            .binary
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("app")
            .to_owned();
        if spec.args.is_empty() {
            spec.args = vec![format!("/{file_name}")];
        }
        if !spec.args[0].starts_with('/') {
            return Err(bad(
                "args[0]",
                spec.args[0].clone(),
                "must be an absolute path inside the image",
            ));
        }
        if let Some(e) = spec
            .env
            .iter()
            .find(|e| !e.contains('=') || e.starts_with('='))
        {
            return Err(bad("env", e.clone(), "entries must be KEY=VALUE"));
        }
        Ok(())
    }

    /// Creates a template and boots its golden actor in the background;
    /// poll [`Engine::template`] for the phase.
    pub fn create_template(
        self: &Arc<Self>,
        mut spec: TemplateSpec,
    ) -> Result<TemplateView, EngineError> {
        Self::validate_spec(&mut spec)?;
        let golden_id = new_uuid();
        let view = TemplateView {
            spec: spec.clone(),
            status: TemplateStatus {
                phase: Phase::ResumeGoldenActor,
                golden_actor_id: Some(golden_id.clone()),
                reason: None,
                golden: None,
                timings_ms: BTreeMap::new(),
                golden_evidence: None,
            },
        };
        let t = Arc::new(Template {
            view: Mutex::new(view.clone()),
        });
        {
            let mut reg = self.reg.lock().unwrap();
            self.refuse_if_closing(|| format!("create template {}", spec.name))?;
            if reg.templates.contains_key(&spec.name) {
                return Err(EngineError::AlreadyExists {
                    kind: "template",
                    name: spec.name,
                });
            }
            reg.templates.insert(spec.name.clone(), t.clone());
        }
        self.persist();
        let engine = self.clone();
        let task = tokio::spawn(async move {
            let result = engine.boot_golden(&t, &golden_id).await;
            {
                let mut v = t.view.lock().unwrap();
                match result {
                    Ok(()) => {
                        v.status.phase = Phase::Ready;
                        info!(template = %v.spec.name, golden = %golden_id, timings = ?v.status.timings_ms, "golden snapshot ready");
                    }
                    Err(e) => {
                        let reason = error_chain(&e);
                        error!(template = %v.spec.name, %reason, "golden boot failed");
                        v.status.phase = Phase::Failed;
                        v.status.reason = Some(reason);
                    }
                }
            }
            engine.persist();
        });
        let mut boots = self.golden_boots.lock().unwrap();
        boots.retain(|t| !t.is_finished());
        boots.push(task);
        Ok(view)
    }

    fn refuse_if_closing(&self, op: impl FnOnce() -> String) -> Result<(), EngineError> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown { op: op() });
        }
        Ok(())
    }

    fn template_dir(&self, name: &str) -> PathBuf {
        self.cfg.state_dir.join("templates").join(name)
    }

    /// Prepares an actor's rootfs: the template's binary (hard-linked, so
    /// the rootfs is never copied whole), the directories the runtime
    /// mounts over, and the identity mount point created with resolution
    /// confined to the rootfs (ID-13).
    fn prepare_rootfs(
        &self,
        template: &str,
        spec: &TemplateSpec,
        rootfs_dir: &Path,
    ) -> Result<(), EngineError> {
        let image_bin = self.template_dir(template).join("image-bin");
        let image_tree = self.template_dir(template).join("image-tree");
        if image_tree.is_dir() {
            rootfs::copy_image_tree(&image_tree, rootfs_dir).map_err(host_err(format!(
                "cannot lay the image into {}",
                rootfs_dir.display()
            )))?;
        }
        let name = spec.args[0].trim_start_matches('/');
        let target = rootfs_dir.join(name);
        if let Some(parent) = Path::new(name)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            rootfs::mkdir_all_in_root(rootfs_dir, parent, 0o755)
                .map_err(host_err("cannot prepare the rootfs"))?;
        }
        rootfs::link_or_copy(&image_bin, &target).map_err(host_err(format!(
            "cannot place the image binary in {}",
            rootfs_dir.display()
        )))?;
        for d in ["proc", "dev", "sys", ".ate"] {
            rootfs::mkdir_all_in_root(rootfs_dir, Path::new(d), 0o755)
                .map_err(host_err("cannot prepare the rootfs"))?;
        }
        if self.cfg.fault == Some(Fault::SymlinkFollow) {
            // FAULT symlink-follow: breaks ID-13 ("the mount point run/ate
            // is created with resolution confined to the rootfs"): plain
            // create_dir_all follows an image's symlinks out of the rootfs.
            let mp = rootfs_dir.join("run/ate");
            std::fs::create_dir_all(&mp).map_err(host_err(format!(
                "cannot create the identity mount point {}",
                mp.display()
            )))?;
        } else {
            rootfs::mkdir_all_in_root(rootfs_dir, Path::new("run/ate"), 0o755).map_err(
                host_err(format!(
                    "cannot create the identity mount point in {}",
                    rootfs_dir.display()
                )),
            )?;
        }
        if self.cfg.fault == Some(Fault::FileMount) {
            // FAULT file-mount: breaks ID-7 ("what is mounted is the
            // directory, not a single file"): the mount point of the
            // single-file bind is a file in the rootfs's /run/ate.
            use std::os::unix::fs::OpenOptionsExt;
            let mp = rootfs_dir.join("run/ate").join(identity::ACTOR_ID_FILE);
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o644)
                .open(&mp)
                .map_err(host_err(format!(
                    "cannot create the file mount point {}",
                    mp.display()
                )))?;
        }
        Ok(())
    }

    /// Resets an actor's per-run directories (ID-10) and writes its
    /// identity (ID-9), rootfs (ID-13) and a fresh `config.json` (ID-6/7).
    fn prepare_actor_dirs(
        &self,
        template: &str,
        spec: &TemplateSpec,
        dirs: &ActorDirs,
        actor_id: &str,
    ) -> Result<(), EngineError> {
        self.reset_per_run_dirs(dirs)?;
        match self.cfg.fault {
            // FAULT env-identity, baked-identity: break ID-1 ("the actor's
            // ID is in the file /run/ate/actor-id"): no identity file at all.
            Some(Fault::EnvIdentity | Fault::BakedIdentity) => {}
            fault => write_identity(fault, &dirs.identity, actor_id).map_err(host_err(format!(
                "cannot write the identity in {}",
                dirs.identity.display()
            )))?,
        }
        self.prepare_rootfs(template, spec, &dirs.rootfs)?;
        let mut env = spec.env.clone();
        let identity = match self.cfg.fault {
            // FAULT env-identity: breaks ID-7 ("not an environment
            // variable"): the ID goes into the process env and nothing is
            // mounted; a restore keeps the golden's env from the snapshot.
            Some(Fault::EnvIdentity) => {
                env.push(format!("ATE_ACTOR_ID={actor_id}"));
                IdentityMount::None
            }
            // FAULT baked-identity: breaks ID-3/ID-4/ID-7: no mount; the
            // golden ID baked into the image (see boot_golden) is all
            // there is.
            Some(Fault::BakedIdentity) => IdentityMount::None,
            // FAULT writable-mount: breaks ID-6 ("the mount is read-only").
            Some(Fault::WritableMount) => IdentityMount::FaultWritableDir(dirs.identity.clone()),
            // FAULT file-mount: breaks ID-7 ("what is mounted is the
            // directory, not a single file").
            Some(Fault::FileMount) => {
                IdentityMount::FaultFile(dirs.identity.join(identity::ACTOR_ID_FILE))
            }
            _ => IdentityMount::ReadOnlyDir(dirs.identity.clone()),
        };
        let b = BundleSpec {
            args: spec.args.clone(),
            env,
            cwd: "/".into(),
            hostname: "runsc".into(),
            rootfs: dirs.rootfs.clone(),
            readonly_root: true,
            identity,
            helper_dir: Some(self.helper_dir()),
        };
        let oci = bundle::build_spec(&b).map_err(host_err("cannot build the OCI spec"))?;
        bundle::write_bundle(&dirs.bundle, &oci)
            .map_err(host_err(format!("cannot write {}", dirs.bundle.display())))?;
        Ok(())
    }

    async fn boot_golden(&self, t: &Template, golden_id: &str) -> Result<(), EngineError> {
        let spec = t.view.lock().unwrap().spec.clone();
        let tdir = self.template_dir(&spec.name);
        let _ = std::fs::remove_dir_all(&tdir);
        std::fs::create_dir_all(&tdir)
            .map_err(host_err(format!("cannot create {}", tdir.display())))?;
        // The image is the binary alone: keep our own link to it so a
        // rebuild of the original path cannot change a template.
        rootfs::link_or_copy(&spec.binary, &tdir.join("image-bin")).map_err(host_err(format!(
            "cannot copy {} into the template",
            spec.binary.display()
        )))?;
        if let Some(src) = &spec.image_dir {
            let tree = tdir.join("image-tree");
            std::fs::create_dir_all(&tree)
                .map_err(host_err(format!("cannot create {}", tree.display())))?;
            rootfs::copy_image_tree(src, &tree).map_err(host_err(format!(
                "cannot copy the image dir {} into the template",
                src.display()
            )))?;
        }
        if self.cfg.fault == Some(Fault::BakedIdentity) {
            // FAULT baked-identity: breaks ID-3/ID-4 ("no restored actor
            // reads the golden actor's ID"): the golden ID is written into
            // the image, which every actor's rootfs is made from. (The
            // directories are made confined, so ID-13 still holds.)
            let tree = tdir.join("image-tree");
            let baked = tree.join("run/ate").join(identity::ACTOR_ID_FILE);
            std::fs::create_dir_all(&tree)
                .map_err(host_err(format!("cannot create {}", tree.display())))?;
            rootfs::mkdir_all_in_root(&tree, Path::new("run/ate"), 0o755).map_err(host_err(
                format!("cannot bake the identity into {}", tree.display()),
            ))?;
            std::fs::write(&baked, golden_id)
                .map_err(host_err(format!("cannot write {}", baked.display())))?;
        }
        let dirs = self.actor_dirs(tdir.join("golden"));
        self.prepare_actor_dirs(&spec.name, &spec, &dirs, golden_id)?;

        let cid = self.new_cid();
        let owner = format!("golden:{}", spec.name);
        self.record_sandbox(&cid, &owner)?;
        let t0 = Instant::now();
        let result = async {
            self.cfg
                .runsc
                .run(&cid, &dirs.bundle, &self.console_log(&dirs.logs)?, self.debug_dir(&dirs.logs))
                .await
                .map_err(|source| EngineError::Runtime { context: format!("cannot boot the golden actor {golden_id}"), source: Box::new(source) })?;
            let boot = t0.elapsed();
            {
                let mut v = t.view.lock().unwrap();
                v.status.phase = Phase::WaitGoldenActor;
                v.status.timings_ms.insert("boot".into(), ms(boot));
            }
            info!(template = %spec.name, golden = %golden_id, %cid, boot_ms = ms(boot), "golden actor booted; waiting for /healthz");
            let pool = RelayPool::new(self.cfg.runsc.clone(), &cid, &Self::helper_in_sandbox(), spec.port);
            let t1 = Instant::now();
            let health = wait_healthy(&pool, self.cfg.golden_health_timeout).await;
            pool.close(Duration::from_secs(2)).await;
            health?;
            t.view.lock().unwrap().status.timings_ms.insert("health".into(), ms(t1.elapsed()));
            let image = tdir.join("snapshot");
            std::fs::create_dir_all(&image).map_err(host_err(format!("cannot create {}", image.display())))?;
            let evidence = self.mark_golden(&cid, golden_id).await?;
            let t2 = Instant::now();
            self.cfg
                .runsc
                .checkpoint(&cid, &image, self.debug_dir(&dirs.logs))
                .await
                .map_err(|source| EngineError::Runtime { context: format!("cannot checkpoint the golden actor {golden_id}"), source: Box::new(source) })?;
            let mut v = t.view.lock().unwrap();
            v.status.timings_ms.insert("checkpoint".into(), ms(t2.elapsed()));
            v.status.golden_evidence = evidence;
            v.status.golden = Some(GoldenPaths {
                bundle_dir: dirs.bundle.clone(),
                image_dir: image,
                image_bin: tdir.join("image-bin"),
            });
            Ok::<(), EngineError>(())
        }
        .await;
        // The golden actor never serves traffic: stop it whatever happened
        // (a checkpoint has already stopped it; otherwise it may still run).
        match result {
            Ok(()) => {
                self.remove_stopped_sandbox_later(cid);
                Ok(())
            }
            Err(e) => {
                if let Err(r) = self.remove_sandbox(&cid).await {
                    error!(%cid, error = %error_chain(&r), "cannot remove the failed golden actor's sandbox");
                }
                Err(e)
            }
        }
    }

    /// A template's view.
    pub fn template(&self, name: &str) -> Result<TemplateView, EngineError> {
        let reg = self.reg.lock().unwrap();
        let t = reg
            .templates
            .get(name)
            .ok_or_else(|| not_found("template", name))?;
        let v = t.view.lock().unwrap().clone();
        Ok(v)
    }

    /// All templates.
    pub fn templates(&self) -> Vec<TemplateView> {
        self.reg
            .lock()
            .unwrap()
            .templates
            .values()
            .map(|t| t.view.lock().unwrap().clone())
            .collect()
    }

    /// Deletes a template that no actor uses and whose golden boot is over.
    pub fn delete_template(&self, name: &str) -> Result<(), EngineError> {
        {
            let mut reg = self.reg.lock().unwrap();
            let t = reg
                .templates
                .get(name)
                .ok_or_else(|| not_found("template", name))?;
            let phase = t.view.lock().unwrap().status.phase;
            if matches!(phase, Phase::ResumeGoldenActor | Phase::WaitGoldenActor) {
                return Err(EngineError::WrongState {
                    op: "delete",
                    what: format!("template {name}"),
                    state: format!("{phase:?}"),
                    allowed: "a template can be deleted once it is Ready or Failed",
                });
            }
            if let Some((a, id)) = reg
                .atespaces
                .iter()
                .flat_map(|(a, m)| m.iter().map(move |(id, x)| (a, id, x)))
                .find_map(|(a, id, x)| {
                    (x.view.lock().unwrap().template == name).then(|| (a.clone(), id.clone()))
                })
            {
                return Err(EngineError::WrongState {
                    op: "delete",
                    what: format!("template {name}"),
                    state: format!("in use by actor {a}/{id}"),
                    allowed: "delete its actors first",
                });
            }
            reg.templates.remove(name);
        }
        let _ = std::fs::remove_dir_all(self.template_dir(name));
        self.persist();
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

    // ------------------------------------------------------------------ actors

    fn actor(&self, atespace: &str, id: &str) -> Result<Arc<Actor>, EngineError> {
        names::validate_atespace(atespace)?;
        names::validate_actor_id(id)?;
        let reg = self.reg.lock().unwrap();
        let m = reg
            .atespaces
            .get(atespace)
            .ok_or_else(|| not_found("atespace", atespace))?;
        m.get(id)
            .cloned()
            .ok_or_else(|| not_found("actor", format!("{atespace}/{id}")))
    }

    /// Creates an actor of a Ready template; it starts Suspended and its
    /// first resume restores the golden snapshot.
    pub fn create_actor(
        &self,
        atespace: &str,
        id: &str,
        template: &str,
    ) -> Result<ActorView, EngineError> {
        names::validate_atespace(atespace)?;
        names::validate_actor_id(id)?;
        names::validate_template_name(template)?;
        let view = {
            let mut reg = self.reg.lock().unwrap();
            self.refuse_if_closing(|| format!("create actor {atespace}/{id}"))?;
            let t = reg
                .templates
                .get(template)
                .ok_or_else(|| not_found("template", template))?;
            let (phase, port) = {
                let v = t.view.lock().unwrap();
                (v.status.phase, v.spec.port)
            };
            if phase != Phase::Ready {
                return Err(EngineError::WrongState {
                    op: "create an actor of",
                    what: format!("template {template}"),
                    state: format!("{phase:?}"),
                    allowed: "actors can be created once the template is Ready",
                });
            }
            let m = reg
                .atespaces
                .get_mut(atespace)
                .ok_or_else(|| not_found("atespace", atespace))?;
            if m.contains_key(id) {
                return Err(EngineError::AlreadyExists {
                    kind: "actor",
                    name: format!("{atespace}/{id}"),
                });
            }
            let view = ActorView {
                id: id.into(),
                atespace: atespace.into(),
                template: template.into(),
                state: ActorState::Suspended,
                sandbox: None,
                snapshot: SnapshotSource::Golden,
                restores: 0,
                last_restore_from: None,
                last_restore_ms: None,
                last_resume_ms: None,
                dirs: self.actor_dirs(self.cfg.state_dir.join("actors").join(atespace).join(id)),
            };
            m.insert(id.into(), Arc::new(Actor::new(view.clone(), port)));
            view
        };
        self.persist();
        Ok(view)
    }

    /// An actor's view.
    pub fn get_actor(&self, atespace: &str, id: &str) -> Result<ActorView, EngineError> {
        let a = self.actor(atespace, id)?;
        let v = a.view.lock().unwrap().clone();
        Ok(v)
    }

    /// All actors of an atespace.
    pub fn list_actors(&self, atespace: &str) -> Result<Vec<ActorView>, EngineError> {
        names::validate_atespace(atespace)?;
        let reg = self.reg.lock().unwrap();
        let m = reg
            .atespaces
            .get(atespace)
            .ok_or_else(|| not_found("atespace", atespace))?;
        Ok(m.values().map(|a| a.view.lock().unwrap().clone()).collect())
    }

    /// Resumes a suspended actor. `on_demand` (the router's path) treats an
    /// actor that is already running as success; the API's explicit resume
    /// reports it as a wrong-state call.
    pub async fn resume(
        &self,
        atespace: &str,
        id: &str,
        on_demand: bool,
    ) -> Result<ActorView, EngineError> {
        let actor = self.actor(atespace, id)?;
        let mut op = actor.op.lock().await;
        // Checked under the op lock: shutdown takes every op lock after
        // setting the flag, so no sandbox starts behind its back.
        self.refuse_if_closing(|| format!("resume actor {atespace}/{id}"))?;
        if op.is_some() {
            if on_demand {
                return Ok(actor.view.lock().unwrap().clone());
            }
            return Err(actor_wrong_state(
                "resume",
                atespace,
                id,
                "RUNNING",
                "only a SUSPENDED actor can be resumed",
            ));
        }
        let (template, dirs, source) = {
            let mut v = actor.view.lock().unwrap();
            v.state = ActorState::Resuming;
            (v.template.clone(), v.dirs.clone(), v.snapshot.clone())
        };
        let t0 = Instant::now();
        match self
            .do_resume(&template, &dirs, id, &source, actor.port)
            .await
        {
            Ok((running, restore)) => {
                let pool = running.relays.clone();
                let cid = running.cid.clone();
                *op = Some(running);
                *actor.running.lock().unwrap() = Some(pool);
                let v = {
                    let mut v = actor.view.lock().unwrap();
                    v.state = ActorState::Running;
                    v.sandbox = Some(cid.clone());
                    v.restores += 1;
                    v.last_restore_from = Some(match source {
                        SnapshotSource::Golden => RestoreSource::Golden,
                        SnapshotSource::Own(_) => RestoreSource::Own,
                    });
                    v.last_restore_ms = Some(ms(restore));
                    v.last_resume_ms = Some(ms(t0.elapsed()));
                    v.clone()
                };
                info!(
                    actor = %format!("{atespace}/{id}"),
                    %cid,
                    from = %v.last_restore_from.map(|s| s.to_string()).unwrap_or_default(),
                    restore_ms = ms(restore),
                    resume_ms = ms(t0.elapsed()),
                    "restored actor from {} image",
                    if matches!(source, SnapshotSource::Golden) { "the template's golden" } else { "its own snapshot" }
                );
                drop(op);
                self.persist();
                Ok(v)
            }
            Err(e) => {
                actor.view.lock().unwrap().state = ActorState::Suspended;
                Err(e)
            }
        }
    }

    async fn do_resume(
        &self,
        template: &str,
        dirs: &ActorDirs,
        id: &str,
        source: &SnapshotSource,
        port: u16,
    ) -> Result<(Running, Duration), EngineError> {
        let (spec, golden) = {
            let t = self.template(template)?;
            (t.spec, t.status.golden.map(|g| g.image_dir))
        };
        let image = match source {
            SnapshotSource::Golden => golden.ok_or_else(|| EngineError::WrongState {
                op: "resume from",
                what: format!("template {template}"),
                state: "without a golden snapshot".into(),
                allowed: "the template must be Ready",
            })?,
            SnapshotSource::Own(p) => p.clone(),
        };
        let bundle_dir = if self.cfg.fault == Some(Fault::NoReset) {
            self.no_reset_bundle(template, &spec, dirs, id)?
        } else {
            self.prepare_actor_dirs(template, &spec, dirs, id)?;
            dirs.bundle.clone()
        };
        let cid = self.new_cid();
        self.record_sandbox(&cid, &format!("actor:{id}"))?;
        let t0 = Instant::now();
        if let Err(source) = self
            .cfg
            .runsc
            .restore(
                &cid,
                &bundle_dir,
                &image,
                &self.console_log(&dirs.logs)?,
                self.debug_dir(&dirs.logs),
            )
            .await
        {
            let _ = self.remove_sandbox(&cid).await;
            return Err(EngineError::Runtime {
                context: format!("cannot restore actor {id} from {}", image.display()),
                source: Box::new(source),
            });
        }
        let restore = t0.elapsed();
        let relays = RelayPool::new(
            self.cfg.runsc.clone(),
            &cid,
            &Self::helper_in_sandbox(),
            port,
        );
        Ok((Running { cid, relays }, restore))
    }

    /// FAULT `no-reset`: breaks ID-10 ("the per-actor directories are
    /// deleted and recreated at the start of every restore; config.json is
    /// regenerated on every resume, so the mount always points at this
    /// actor's directory"). The first actor resumed gets a normal bundle;
    /// every later resume, of any actor, reuses that bundle as it is.
    fn no_reset_bundle(
        &self,
        template: &str,
        spec: &TemplateSpec,
        dirs: &ActorDirs,
        id: &str,
    ) -> Result<PathBuf, EngineError> {
        let mut first = self.no_reset_first.lock().unwrap();
        if let Some(first) = first.as_ref() {
            return Ok(first.bundle.clone());
        }
        self.prepare_actor_dirs(template, spec, dirs, id)?;
        *first = Some(dirs.clone());
        Ok(dirs.bundle.clone())
    }

    /// Suspends a running actor: closes its relays, checkpoints it into a
    /// fresh snapshot directory of its own, deletes the container, and
    /// resets its per-run directories (the identity dir is empty until the
    /// next resume, ID-10).
    pub async fn suspend(&self, atespace: &str, id: &str) -> Result<ActorView, EngineError> {
        let actor = self.actor(atespace, id)?;
        let mut op = actor.op.lock().await;
        let Some(running) = op.take() else {
            return Err(actor_wrong_state(
                "suspend",
                atespace,
                id,
                "SUSPENDED",
                "only a RUNNING actor can be suspended",
            ));
        };
        let (dirs, old) = {
            let mut v = actor.view.lock().unwrap();
            v.state = ActorState::Suspending;
            (v.dirs.clone(), v.snapshot.clone())
        };
        *actor.running.lock().unwrap() = None;
        running.relays.close(Duration::from_secs(2)).await;
        let snap = dirs.root.join(format!(
            "snapshot-{}",
            self.seq.fetch_add(1, Ordering::Relaxed) + 1
        ));
        let t0 = Instant::now();
        let ck = async {
            std::fs::create_dir_all(&snap)
                .map_err(host_err(format!("cannot create {}", snap.display())))?;
            self.cfg
                .runsc
                .checkpoint(&running.cid, &snap, self.debug_dir(&dirs.logs))
                .await
                .map_err(|source| EngineError::Runtime {
                    context: format!("cannot checkpoint actor {atespace}/{id}"),
                    source: Box::new(source),
                })
        }
        .await;
        if let Err(e) = ck {
            // The container may still run: keep it, with fresh relays.
            let _ = std::fs::remove_dir_all(&snap);
            let relays = RelayPool::new(
                self.cfg.runsc.clone(),
                &running.cid,
                &Self::helper_in_sandbox(),
                actor.port,
            );
            *actor.running.lock().unwrap() = Some(relays.clone());
            *op = Some(Running {
                cid: running.cid,
                relays,
            });
            actor.view.lock().unwrap().state = ActorState::Running;
            return Err(e);
        }
        let checkpoint_ms = ms(t0.elapsed());
        self.remove_stopped_sandbox_later(running.cid.clone());
        if self.cfg.fault != Some(Fault::NoReset) {
            self.reset_per_run_dirs(&dirs)?;
        }
        // else FAULT no-reset: breaks ID-10 ("after a suspend the identity
        // directory is empty until the next resume"): nothing is reset.
        if let SnapshotSource::Own(p) = old {
            let _ = std::fs::remove_dir_all(p);
        }
        let v = {
            let mut v = actor.view.lock().unwrap();
            v.state = ActorState::Suspended;
            v.sandbox = None;
            v.snapshot = SnapshotSource::Own(snap);
            v.clone()
        };
        info!(actor = %format!("{atespace}/{id}"), cid = %running.cid, checkpoint_ms, "suspended actor into its own snapshot");
        drop(op);
        self.persist();
        Ok(v)
    }

    /// Deletes a suspended actor and everything it owns on the host.
    pub async fn delete_actor(&self, atespace: &str, id: &str) -> Result<(), EngineError> {
        let actor = self.actor(atespace, id)?;
        let op = actor.op.lock().await;
        if op.is_some() {
            return Err(actor_wrong_state(
                "delete",
                atespace,
                id,
                "RUNNING",
                "only a SUSPENDED actor can be deleted; suspend it first",
            ));
        }
        let root = actor.view.lock().unwrap().dirs.root.clone();
        {
            let mut reg = self.reg.lock().unwrap();
            if let Some(m) = reg.atespaces.get_mut(atespace) {
                m.remove(id);
            }
        }
        drop(op);
        let pinned = self.cfg.fault == Some(Fault::NoReset)
            && self
                .no_reset_first
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|d| d.root == root);
        if pinned {
            // FAULT no-reset: the first actor's bundle outlives it, since
            // every later resume reuses it (see no_reset_bundle).
            warn!(root = %root.display(), "fault no-reset: keeping the deleted actor's directories, later resumes reuse its bundle");
        } else {
            let _ = std::fs::remove_dir_all(&root);
        }
        self.persist();
        Ok(())
    }

    /// Sends an HTTP request to a running actor through its relay, resuming
    /// it first if it is suspended (the router's on-demand path).
    pub async fn forward(
        &self,
        atespace: &str,
        id: &str,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<FullResponse, EngineError> {
        let actor = self.actor(atespace, id)?;
        let pool = actor.running.lock().unwrap().clone();
        let pool = match pool {
            Some(p) => p,
            None => {
                self.resume(atespace, id, true).await?;
                let p = actor.running.lock().unwrap().clone();
                p.ok_or_else(|| EngineError::WrongState {
                    op: "route to",
                    what: format!("actor {atespace}/{id}"),
                    state: "suspended again while resuming".into(),
                    allowed: "retry the request",
                })?
            }
        };
        Ok(pool.send(req).await?)
    }

    /// Conformance hook (ID-9): rewrites a running actor's `actor-id` on the
    /// host, atomically, cycling through `values` for `for_ms`
    /// milliseconds (or until `times` writes, whichever comes first), then
    /// writes the actor's own ID again. Lets a suite watch rewrites from
    /// inside the actor. Returns the number of writes, the last one
    /// included.
    pub async fn rewrite_identity(
        &self,
        atespace: &str,
        id: &str,
        values: Vec<String>,
        for_ms: u64,
        times: Option<u64>,
    ) -> Result<u64, EngineError> {
        let max_ms = if times.is_some() { 60_000 } else { 30_000 };
        if values.is_empty()
            || values.iter().any(|v| v.is_empty() || v.len() > 255)
            || !(1..=max_ms).contains(&for_ms)
            || times.is_some_and(|t| !(1..=100_000).contains(&t))
        {
            return Err(EngineError::InvalidField {
                field: "rewrite",
                value: format!("values {values:?}, for_ms {for_ms}, times {times:?}"),
                allowed: "1 or more values of 1..=255 bytes, for_ms 1..=30000 \
                          (1..=60000 with times), times 1..=100000 if given"
                    .into(),
            });
        }
        let actor = self.actor(atespace, id)?;
        let op = actor.op.lock().await;
        if op.is_none() {
            return Err(actor_wrong_state(
                "rewrite the identity of",
                atespace,
                id,
                "SUSPENDED",
                "only a RUNNING actor's identity can be rewritten",
            ));
        }
        let dir = actor.view.lock().unwrap().dirs.identity.clone();
        let own = id.to_owned();
        let fault = self.cfg.fault;
        let n = tokio::task::spawn_blocking(move || {
            let end = Instant::now() + Duration::from_millis(for_ms);
            let limit = times.unwrap_or(u64::MAX);
            let mut n = 0u64;
            while n < limit && Instant::now() < end {
                write_identity(fault, &dir, &values[(n as usize) % values.len()])?;
                n += 1;
            }
            write_identity(fault, &dir, &own)?;
            Ok::<_, identity::IdentityError>(n + 1)
        })
        .await
        .expect("rewrite task")
        .map_err(host_err(format!(
            "cannot rewrite the identity of {atespace}/{id}"
        )))?;
        drop(op);
        info!(actor = %format!("{atespace}/{id}"), writes = n, for_ms, ?times, "rewrote the identity (conformance hook)");
        Ok(n)
    }

    /// Refuses new work from now on (the flag is set under the registry
    /// lock, so no actor is created behind it) and returns every actor.
    fn close(&self) -> Vec<Arc<Actor>> {
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
        let actors = self.close();
        for a in actors {
            let op = a.op.lock().await;
            if let Some(running) = op.as_ref() {
                running.relays.close(Duration::from_millis(500)).await;
            }
        }
        self.wait_background_deletes().await;
        self.persist();
        self.recorded_sandboxes()
    }

    /// Stops every running actor and removes its sandbox (agent shutdown).
    /// Returns the container IDs removed.
    pub async fn shutdown(&self) -> Vec<String> {
        let actors = self.close();
        // Stop routing to every running actor; their sandboxes are removed
        // below, all at once (each takes runsc about 2 s).
        for a in actors {
            let mut op = a.op.lock().await;
            if let Some(running) = op.take() {
                *a.running.lock().unwrap() = None;
                running.relays.close(Duration::from_millis(500)).await;
                let mut v = a.view.lock().unwrap();
                v.state = ActorState::Suspended;
                v.sandbox = None;
            }
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
        // Every sandbox still recorded: running actors, a golden boot in
        // flight, a failed delete. Concurrently, by container ID.
        let mut tasks = tokio::task::JoinSet::new();
        for cid in self.recorded_sandboxes() {
            let runsc = self.cfg.runsc.clone();
            let record = self
                .cfg
                .state_dir
                .join("sandboxes")
                .join(format!("{cid}.json"));
            tasks.spawn(async move {
                let r = runsc.remove(&cid).await;
                if r.is_ok() {
                    let _ = std::fs::remove_file(&record);
                }
                (cid, r)
            });
        }
        let mut removed = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((cid, Ok(()))) => removed.push(cid),
                Ok((cid, Err(e))) => {
                    error!(%cid, error = %error_chain(&e), "cannot remove sandbox at shutdown")
                }
                Err(e) => error!(error = %e, "sandbox removal task failed"),
            }
        }
        removed.sort();
        self.persist();
        removed
    }
}

impl Actor {
    fn new(view: ActorView, port: u16) -> Self {
        Actor {
            view: Mutex::new(view),
            running: Mutex::new(None),
            op: tokio::sync::Mutex::new(None),
            port,
        }
    }
}

/// Kills and deletes, by container ID, every sandbox recorded in
/// `state_dir/sandboxes/` (left by an agent that did not shut down), logging
/// each one. Returns the IDs removed.
pub async fn remove_recorded_sandboxes(
    state_dir: &Path,
    runsc: &Runsc,
) -> Result<Vec<String>, EngineError> {
    let dir = state_dir.join("sandboxes");
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
        runsc
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

/// Polls `GET /healthz` through the relay until it answers 200 or the
/// deadline passes; on timeout says what it saw last.
async fn wait_healthy(pool: &RelayPool, deadline: Duration) -> Result<(), EngineError> {
    let start = Instant::now();
    loop {
        let req = hyper::Request::get("/healthz")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .expect("static request");
        let last = match tokio::time::timeout(Duration::from_secs(5), pool.send(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => return Ok(()),
            Ok(Ok(resp)) => format!("/healthz answered {}", resp.status()),
            Ok(Err(e)) => error_chain(&e),
            Err(_) => "/healthz did not answer within 5s".to_owned(),
        };
        if start.elapsed() >= deadline {
            return Err(EngineError::Host {
                context: format!(
                    "golden actor not healthy after {:?}; last: {last}",
                    deadline
                ),
                source: Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "health deadline passed",
                )),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `dir/actor-id` holding `id`: atomically (ID-9), exactly the ID
/// bytes (ID-2), unless a fault mode says otherwise.
fn write_identity(
    fault: Option<Fault>,
    dir: &Path,
    id: &str,
) -> Result<(), identity::IdentityError> {
    match fault {
        // FAULT torn-write: breaks ID-9 ("the host writes actor-id
        // atomically ... never a torn or empty one").
        Some(Fault::TornWrite) => identity::write_actor_id_torn(dir, id.as_bytes()),
        // FAULT trailing-newline: breaks ID-2 ("exactly the raw actor ID
        // bytes, no trailing newline").
        Some(Fault::TrailingNewline) => identity::write_actor_id(dir, format!("{id}\n").as_bytes()),
        _ => identity::write_actor_id(dir, id.as_bytes()),
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

#[cfg(test)]
mod tests {
    use super::container_id;

    #[test]
    fn container_ids_are_never_prefixes_of_each_other() {
        let ids: Vec<String> = (1..=1000).map(|n| container_id("0123abcd", n)).collect();
        assert_eq!(ids[3], "ate-0123abcd-00000004");
        for a in &ids {
            for b in &ids {
                assert!(
                    a == b || !b.starts_with(a.as_str()),
                    "{a} is a prefix of {b}"
                );
            }
        }
    }
}
