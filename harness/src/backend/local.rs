//! The embedded backend: the reference agent (`ate-refagent`) as a child
//! process, actors in real gVisor sandboxes on this machine.
//!
//! Start-up: build (or take) the static probe and agent, remove what a
//! crashed earlier run left (`ate-refagent gc` on every state dir no agent
//! holds), start the agent with a state dir of this run's own, then drive
//! its control API, all through the agent's one client (`ate-agent-api`).
//! Teardown: SIGTERM, which makes the agent kill and delete every sandbox
//! it started; then a check that none of them is left.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use async_trait::async_trait;
use ate_agent_api::client::{self as agent, Agent, AgentClient, AgentOptions};
use ate_agent_api::{self as api, ErrorBody, Fault, Phase, StartupLine, TemplateSpec};
use ate_cmd::Cmd;
use serde_json::Value;
use tracing::{info, warn};

use super::{
    ActorInfo, ActorState, Backend, ContainerRole, Env, Evidence, Golden, HostAccess,
    HostContainer, HostDirs, IdentityDir, IdentityWatch, RestoreSource, SandboxAccess,
    TemplateOutcome, TemplatePhase, TryWrite,
};
use ate_checker::Command as Check;
type BackendResult<T> = super::Result<T>;
use crate::fixture::{self, StaticBins};
use crate::flags::{Spec, Values};
use crate::router::{RoutedResponse, RouterClient};
use crate::run_id::RunId;

/// The local backend's flags.
pub const FLAGS: &[Spec] = &[
    Spec {
        flag: "--runsc",
        env: "ATE_RUNSC",
        value: Some("PATH"),
        help: "the runsc program",
    },
    Spec {
        flag: "--agent-fault",
        env: "ATE_AGENT_FAULT",
        value: Some("NAME"),
        help: "run the reference agent in a fault mode (self-test)",
    },
];

/// What the local flags say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFlags {
    /// The runsc program.
    pub runsc: PathBuf,
    /// A fault mode for the reference agent (self-test only).
    pub agent_fault: Option<String>,
}

impl LocalFlags {
    /// Reads the group.
    pub fn from_values(v: &Values<'_>) -> anyhow::Result<LocalFlags> {
        Ok(LocalFlags {
            runsc: v
                .get("--runsc")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("runsc")),
            agent_fault: v.get("--agent-fault"),
        })
    }

    /// What this machine lacks for the local backend, if anything: root,
    /// runsc, and cargo unless every static binary is given.
    pub fn prerequisites(&self, probe_bin: Option<&Path>) -> Option<String> {
        if !rustix::process::geteuid().is_root() {
            return Some(
                "the local backend runs gVisor sandboxes and needs root; run the suite as root"
                    .into(),
            );
        }
        if which::which(&self.runsc).is_err() {
            return Some(format!(
                "runsc not found ({}); install it with: apt-get install -y -t bookworm-backports runsc",
                self.runsc.display()
            ));
        }
        if let Some(reason) = runsc_too_old(&self.runsc) {
            return Some(reason);
        }
        let prebuilt = std::env::var_os(fixture::AGENT_BIN_ENV).is_some()
            && std::env::var_os(fixture::CHECKER_BIN_ENV).is_some()
            && (probe_bin.is_some() || std::env::var_os(fixture::PROBE_BIN_ENV).is_some());
        if !prebuilt
            && which::which(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).is_err()
        {
            return Some(
                "cargo not found, and ATE_AGENT_BIN/ATE_CHECKER_BIN/ATE_PROBE_BIN are not all set"
                    .into(),
            );
        }
        None
    }
}

/// The oldest gVisor release the local backend supports: the 2022-12 build
/// cannot checkpoint an actor written like a real one (an epoll server:
/// "endpoint still has waiters upon save"), nor restore a pause + app
/// sandbox (DESIGN.md, runsc facts).
pub const RUNSC_MIN_RELEASE: u32 = 20240729;

/// The gVisor release date in `runsc --version`'s first line
/// (`runsc version 0.0~20240729.0`, `runsc version release-20260622.0`).
pub fn gvisor_release(version: &str) -> Option<u32> {
    let b = version.as_bytes();
    (0..b.len().saturating_sub(7)).find_map(|i| {
        let w = &b[i..i + 8];
        let digits = w.iter().all(u8::is_ascii_digit);
        let alone = (i == 0 || !b[i - 1].is_ascii_digit())
            && b.get(i + 8).is_none_or(|c| !c.is_ascii_digit());
        (digits && alone && w.starts_with(b"20"))
            .then(|| std::str::from_utf8(w).ok()?.parse().ok())
            .flatten()
    })
}

/// Why `runsc` cannot serve the local backend, naming the version found.
fn runsc_too_old(runsc: &Path) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let out = rt.block_on(
        Cmd::new(runsc)
            .arg("--version")
            .timeout(Duration::from_secs(10))
            .run(),
    );
    let text = match out {
        Ok(o) => o.stdout_str().lines().next().unwrap_or("").to_owned(),
        Err(e) => return Some(format!("`{} --version` failed: {e}", runsc.display())),
    };
    match gvisor_release(&text) {
        Some(d) if d >= RUNSC_MIN_RELEASE => None,
        found => Some(format!(
            "{} is {text:?} ({}), older than gVisor {RUNSC_MIN_RELEASE}, which the local backend needs \
             (older builds cannot checkpoint an epoll-based actor); install a newer one with: \
             apt-get install -y -t bookworm-backports runsc, or pass --runsc",
            runsc.display(),
            found.map_or("no release date found".to_owned(), |d| format!("release {d}"))
        )),
    }
}

/// Options of the local backend.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// This run's ID (part of the state dir, template and actor names).
    pub run_id: RunId,
    /// Parent of every run's agent state dir.
    pub state_root: PathBuf,
    /// Where the agent's log goes (`agent-<run>.log`).
    pub log_dir: PathBuf,
    /// Use this probe binary instead of building ours.
    pub probe_bin: Option<PathBuf>,
    /// The runsc program.
    pub runsc: PathBuf,
    /// Run the agent in this fault mode (`--fault`; self-test only).
    pub fault: Option<String>,
    /// Ask runsc for debug logs (per actor, under the state dir).
    pub runsc_debug: bool,
    /// Deadline for the agent to print its address line.
    pub start_timeout: Duration,
}

/// The embedded backend.
pub struct LocalBackend {
    opts: LocalOptions,
    agent: Mutex<Option<Agent>>,
    line: StartupLine,
    client: AgentClient,
    fault: Option<Fault>,
    state_dir: PathBuf,
    log_path: PathBuf,
    bins: StaticBins,
}

/// Marker file in a state dir left on purpose by `--keep`: the automatic
/// clean-up at the start of a run leaves such dirs alone; `ate-conformance
/// gc` removes them.
pub const KEPT_MARKER: &str = "KEPT";

pub use ate_agent_api::client::state_dir_is_stale;

/// Removes what crashed earlier runs left under `state_root`: for every
/// state dir no agent holds, `ate-refagent gc --remove` kills and deletes
/// its recorded sandboxes by ID and removes the dir. Returns what `gc`
/// printed, one line per thing removed.
/// `include_kept` also removes runs kept with `--keep`.
pub async fn gc_stale_runs(
    agent_bin: &Path,
    state_root: &Path,
    include_kept: bool,
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(state_root) else {
        return Ok(removed);
    };
    for e in entries.flatten() {
        let dir = e.path();
        if !dir.is_dir() || !agent::state_dir_is_stale(&dir) {
            continue;
        }
        if !include_kept && dir.join(KEPT_MARKER).exists() {
            info!(run_dir = %dir.display(), "leaving a run kept with --keep (remove it with `ate-conformance gc`)");
            continue;
        }
        let lines = agent::gc_and_remove(agent_bin, &dir)
            .await
            .with_context(|| {
                format!(
                    "cannot clean up the state dir {} of an earlier run",
                    dir.display()
                )
            })?;
        for l in lines {
            warn!(run_dir = %dir.display(), "earlier run left: {l}");
            removed.push(l);
        }
    }
    Ok(removed)
}

/// The probe template spec, rendered from `fixtures/local/probe-template.json`.
pub fn probe_template(name: &str, probe_bin: &Path) -> Result<TemplateSpec> {
    let path = crate::paths::fixtures_dir().join("local/probe-template.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let file = probe_bin
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| {
            anyhow!(
                "probe binary {} has no UTF-8 file name",
                probe_bin.display()
            )
        })?;
    let vars = std::collections::BTreeMap::from([
        ("TEMPLATE", name.to_owned()),
        (
            "PROBE_BIN",
            probe_bin
                .to_str()
                .ok_or_else(|| anyhow!("probe path {} is not UTF-8", probe_bin.display()))?
                .to_owned(),
        ),
        ("PROBE_FILE", file.to_owned()),
    ]);
    let rendered = crate::template::render_json("fixtures/local/probe-template.json", &doc, &vars)?;
    serde_json::from_value(rendered)
        .with_context(|| format!("{} is not a template spec", path.display()))
}

/// The seam's state for the agent's.
fn actor_state(s: api::ActorState) -> ActorState {
    match s {
        api::ActorState::Resuming => ActorState::Resuming,
        api::ActorState::Running => ActorState::Running,
        api::ActorState::Suspending => ActorState::Suspending,
        api::ActorState::Suspended => ActorState::Suspended,
    }
}

/// The seam's phase for the agent's.
fn template_phase(p: Phase) -> TemplatePhase {
    match p {
        Phase::Ready => TemplatePhase::Ready,
        Phase::Failed => TemplatePhase::Failed,
        other => TemplatePhase::Other(format!("{other:?}")),
    }
}

fn actor_info(v: &api::ActorView) -> ActorInfo {
    ActorInfo {
        atespace: v.atespace.clone(),
        id: v.id.clone(),
        state: actor_state(v.state),
        restored_from: v.last_restore_from.map(|r| match r {
            api::RestoreSource::Golden => RestoreSource::Golden,
            api::RestoreSource::Own => RestoreSource::Own,
        }),
        restore_ms: v.last_restore_ms,
        sandbox: v.sandbox.clone(),
    }
}

fn host_dirs(v: &api::ActorView) -> HostDirs {
    HostDirs {
        identity: Some(v.dirs.identity.clone()),
        bundle: Some(v.dirs.bundle.clone()),
        logs: Some(v.dirs.logs.clone()),
    }
}

impl LocalBackend {
    /// Builds what is needed, cleans up after crashed runs, and starts the
    /// agent.
    pub async fn start(opts: LocalOptions) -> Result<LocalBackend> {
        let fault = opts.fault.as_deref().map(str::parse::<Fault>).transpose()?;
        let bins = fixture::static_bins(&fixture::BuildOptions::default())
            .await
            .context("cannot build the static probe and agent")?;
        let probe = opts.probe_bin.clone().unwrap_or_else(|| bins.probe.clone());
        let bins = StaticBins { probe, ..bins };
        std::fs::create_dir_all(&opts.state_root)
            .with_context(|| format!("cannot create {}", opts.state_root.display()))?;
        std::fs::create_dir_all(&opts.log_dir)
            .with_context(|| format!("cannot create {}", opts.log_dir.display()))?;
        let gc = gc_stale_runs(&bins.agent, &opts.state_root, false).await?;
        if !gc.is_empty() {
            info!(count = gc.len(), "removed leftovers of earlier runs");
        }
        let state_dir = opts.state_root.join(opts.run_id.state_dir_name());
        let log_path = opts.log_dir.join(format!("agent-{}.log", opts.run_id));
        let agent = Agent::spawn(
            &AgentOptions {
                agent_bin: bins.agent.clone(),
                state_dir: state_dir.clone(),
                runsc: opts.runsc.clone(),
                checker_bin: Some(bins.checker.clone()),
                runsc_debug: opts.runsc_debug,
                fault,
                log: log_path.clone(),
            },
            opts.start_timeout,
        )
        .await
        .context("cannot start the reference agent")?;
        Ok(LocalBackend {
            line: agent.line().clone(),
            client: agent.client().clone(),
            agent: Mutex::new(Some(agent)),
            fault,
            opts,
            state_dir,
            log_path,
            bins,
        })
    }

    /// The agent's log file.
    pub fn agent_log(&self) -> &Path {
        &self.log_path
    }

    /// The agent's control API address.
    pub fn control_addr(&self) -> SocketAddr {
        self.line.control
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn fingerprint(&self) -> Vec<(String, String)> {
        vec![
            (
                "backend".into(),
                "local (embedded ate-refagent on gVisor runsc)".into(),
            ),
            ("runsc".into(), self.line.runsc_version.clone()),
            (
                "agent".into(),
                format!(
                    "{} (pid {}, instance {})",
                    self.bins.agent.display(),
                    self.line.pid,
                    self.line.instance
                ),
            ),
            ("probe".into(), self.bins.probe.display().to_string()),
            ("agent_log".into(), self.log_path.display().to_string()),
            (
                "agent_fault".into(),
                self.fault
                    .map(|f| f.name().to_owned())
                    .unwrap_or_else(|| "none (healthy)".into()),
            ),
        ]
    }

    async fn deploy_probe(&self, deadline: Duration) -> BackendResult<Golden> {
        let name = self.opts.run_id.probe_template();
        let start = Instant::now();
        let spec = probe_template(&name, &self.bins.probe)?;
        let view = self
            .client
            .deploy_template(&spec, deadline)
            .await
            .map_err(anyhow::Error::from)?;
        let status = &view.status;
        match status.phase {
            Phase::Ready => Ok(Golden {
                golden_actor_id: status.golden_actor_id.clone().ok_or_else(|| {
                    anyhow!("template {name} is Ready without a golden actor ID: {status:?}")
                })?,
                snapshot: status
                    .golden
                    .as_ref()
                    .map(|g| g.image_dir.display().to_string()),
                template: name,
                ready_after: start.elapsed(),
            }),
            Phase::Failed => Err(anyhow!(
                "template {name} failed: {}",
                status.reason.as_deref().unwrap_or("(no reason given)")
            )
            .into()),
            _ => Err(anyhow!(
                "template {name} not Ready after {deadline:?}; last status seen: {status:?}"
            )
            .into()),
        }
    }

    async fn delete_template(&self, name: &str) -> BackendResult<()> {
        Ok(self
            .client
            .delete_template(name)
            .await
            .map_err(anyhow::Error::from)?)
    }

    async fn create_atespace(&self, atespace: &str) -> BackendResult<()> {
        Ok(self
            .client
            .create_atespace(atespace)
            .await
            .map_err(anyhow::Error::from)?)
    }

    async fn delete_atespace(&self, atespace: &str) -> BackendResult<()> {
        Ok(self
            .client
            .delete_atespace(atespace)
            .await
            .map_err(anyhow::Error::from)?)
    }

    async fn create_actor(
        &self,
        atespace: &str,
        id: &str,
        template: &str,
    ) -> BackendResult<ActorInfo> {
        let v = self
            .client
            .create_actor(atespace, id, template)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(actor_info(&v))
    }

    async fn resume(&self, atespace: &str, id: &str) -> BackendResult<ActorInfo> {
        let v = self
            .client
            .resume(atespace, id)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(actor_info(&v))
    }

    async fn suspend(&self, atespace: &str, id: &str) -> BackendResult<ActorInfo> {
        let v = self
            .client
            .suspend(atespace, id)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(actor_info(&v))
    }

    async fn delete_actor(&self, atespace: &str, id: &str) -> BackendResult<()> {
        Ok(self
            .client
            .delete_actor(atespace, id)
            .await
            .map_err(anyhow::Error::from)?)
    }

    async fn get_actor(&self, atespace: &str, id: &str) -> BackendResult<ActorInfo> {
        let v = self
            .client
            .actor(atespace, id)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(actor_info(&v))
    }

    fn router(&self) -> RouterClient {
        RouterClient::new(self.line.router)
    }

    fn router_refusal(&self, resp: &RoutedResponse) -> Option<String> {
        // The agent's router answers its own errors with the API's error
        // body (agent/src/router.rs); an actor's answer is anything else.
        serde_json::from_slice::<ErrorBody>(&resp.body)
            .ok()
            .map(|b| b.error)
    }

    fn host(&self) -> Option<&dyn HostAccess> {
        Some(self)
    }

    fn sandbox(&self) -> Option<&dyn SandboxAccess> {
        Some(self)
    }

    async fn live_sandboxes(&self) -> BackendResult<Vec<String>> {
        // What runsc itself lists, not what the agent believes: this
        // agent's containers carry its instance in their fixed-width IDs.
        let prefix = format!("ate-{}-", self.line.instance);
        Ok(runsc_list(&self.opts.runsc)
            .await?
            .into_iter()
            .filter(|c| c.starts_with(&prefix))
            .collect())
    }

    async fn collect_artifacts(
        &self,
        actors: &[super::ActorRef],
        dir: &Path,
    ) -> BackendResult<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut written = Vec::new();
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let mut notes = Vec::new();
        let mut needles: Vec<String> = Vec::new();
        let mut hosts: Vec<String> = Vec::new();
        for a in actors {
            needles.push(format!("{}/{}", a.atespace, a.id));
            hosts.push(format!(
                "host={}",
                crate::router::actor_host(&a.id, &a.atespace)
            ));
            let view = match self.client.actor(&a.atespace, &a.id).await {
                Ok(v) => v,
                Err(e) => {
                    notes.push(format!(
                        "{}/{}: cannot get the actor from the agent: {}",
                        a.atespace,
                        a.id,
                        crate::error_chain(&e)
                    ));
                    continue;
                }
            };
            needles.extend(view.containers.iter().map(|c| c.id.clone()));
            let stem = format!("{}-{}", a.atespace, a.id);
            let cfg = view.dirs.bundle.join("config.json");
            if cfg.exists() {
                let to = dir.join(format!("{stem}.config.json"));
                std::fs::copy(&cfg, &to)
                    .with_context(|| format!("cannot copy {}", cfg.display()))?;
                written.push(to);
                // The pause container's bundle (ID-12), written with it.
                let pause = view.dirs.pause_bundle.join("config.json");
                if pause.exists() {
                    let to = dir.join(format!("{stem}.pause.config.json"));
                    std::fs::copy(&pause, &to)
                        .with_context(|| format!("cannot copy {}", pause.display()))?;
                    written.push(to);
                }
            } else {
                notes.push(format!(
                    "{}/{}: no config.json ({}; the bundle is reset after a suspend, ID-10)",
                    a.atespace, a.id, view.state
                ));
            }
            for e in std::fs::read_dir(&view.dirs.logs)
                .into_iter()
                .flatten()
                .flatten()
            {
                let to = dir.join(format!("{stem}.{}", e.file_name().to_string_lossy()));
                if e.path().is_file() && std::fs::copy(e.path(), &to).is_ok() {
                    written.push(to);
                }
            }
        }
        // Every agent line about these actors, and the router's lines for
        // their Hosts (restores name the actor and its container ID).
        let agent_lines: String = log
            .lines()
            .filter(|l| needles.iter().any(|n| l.contains(n.as_str())))
            .map(|l| format!("{l}\n"))
            .collect();
        let router_lines: String = log
            .lines()
            .filter(|l| l.contains(" routed") && hosts.iter().any(|h| l.contains(h.as_str())))
            .map(|l| format!("{l}\n"))
            .collect();
        for (name, text) in [("agent.log", agent_lines), ("router.log", router_lines)] {
            let to = dir.join(name);
            std::fs::write(&to, text).with_context(|| format!("cannot write {}", to.display()))?;
            written.push(to);
        }
        if !notes.is_empty() {
            let to = dir.join("notes.txt");
            std::fs::write(&to, notes.join("\n") + "\n")
                .with_context(|| format!("cannot write {}", to.display()))?;
            written.push(to);
        }
        Ok(written)
    }

    async fn keep(&self) -> BackendResult<(Vec<String>, String)> {
        let agent = self.agent.lock().unwrap().take();
        let Some(agent) = agent else {
            return Err(anyhow!("the agent is already stopped; nothing to keep").into());
        };
        let detached = agent
            .detach(Duration::from_secs(30))
            .await
            .map_err(anyhow::Error::from)?;
        std::fs::write(
            self.state_dir.join(KEPT_MARKER),
            format!("kept by run {}\n", self.opts.run_id),
        )
        .with_context(|| format!("cannot mark {} as kept", self.state_dir.display()))?;
        let mut kept: Vec<String> = detached
            .sandboxes
            .iter()
            .map(|cid| format!("sandbox {cid} (runsc state: `runsc state {cid}`)"))
            .collect();
        kept.push(format!(
            "agent state dir {} (actor bundles, identity dirs, snapshots, logs)",
            self.state_dir.display()
        ));
        kept.push(format!("agent log {}", self.log_path.display()));
        let how = format!(
            "cargo run -q -p ate-cli --bin ate-conformance -- gc   (or: {} gc --state-dir {} --remove)",
            self.bins.agent.display(),
            self.state_dir.display()
        );
        Ok((kept, how))
    }

    async fn teardown(&self) -> BackendResult<()> {
        let agent = self.agent.lock().unwrap().take();
        let Some(agent) = agent else { return Ok(()) };
        let pid = agent.pid();
        let stopped = agent.stop(Duration::from_secs(120)).await;
        info!(pid, ok = stopped.is_ok(), "agent stopped");
        let left = self.live_sandboxes().await?;
        if !left.is_empty() {
            // The agent failed its own invariant: remove them by ID, and
            // fail loudly.
            for cid in &left {
                let _ = Cmd::new(&self.opts.runsc)
                    .args(["kill", cid, "KILL"])
                    .timeout(Duration::from_secs(20))
                    .output()
                    .await;
                let _ = Cmd::new(&self.opts.runsc)
                    .args(["delete", "-force", cid])
                    .timeout(Duration::from_secs(20))
                    .output()
                    .await;
            }
            return Err(anyhow!(
                "the agent left {} sandbox(es) running after SIGTERM: {left:?} (removed now by ID)",
                left.len()
            )
            .into());
        }
        stopped.context("cannot stop the agent")?;
        std::fs::remove_dir_all(&self.state_dir)
            .with_context(|| format!("cannot remove {}", self.state_dir.display()))?;
        Ok(())
    }
}

/// `runsc list -quiet`: the container IDs runsc knows.
pub async fn runsc_list(runsc: &Path) -> Result<Vec<String>> {
    let out = Cmd::new(runsc)
        .args(["list", "-quiet"])
        .timeout(Duration::from_secs(20))
        .run()
        .await?;
    Ok(out
        .stdout_str()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

#[async_trait]
impl HostAccess for LocalBackend {
    async fn actor_dirs(&self, atespace: &str, id: &str) -> BackendResult<HostDirs> {
        let v = self
            .client
            .actor(atespace, id)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(host_dirs(&v))
    }

    async fn containers(&self, atespace: &str, id: &str) -> BackendResult<Vec<HostContainer>> {
        let v = self
            .client
            .actor(atespace, id)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(v.containers
            .iter()
            .map(|c| HostContainer {
                role: match c.role {
                    api::ContainerRole::Pause => ContainerRole::Pause,
                    api::ContainerRole::App => ContainerRole::App,
                },
                id: c.id.clone(),
                bundle: c.bundle.clone(),
            })
            .collect())
    }

    async fn rewrite_identity(
        &self,
        atespace: &str,
        id: &str,
        values: &[String],
        for_ms: u64,
    ) -> BackendResult<u64> {
        let body = api::IdentityRewrite {
            values: values.to_vec(),
            for_ms,
            times: None,
        };
        Ok(self
            .client
            .rewrite_identity(atespace, id, &body)
            .await
            .map_err(anyhow::Error::from)?
            .writes)
    }

    async fn deploy_probe_with_symlinks(
        &self,
        base: &str,
        symlinks: &[(String, String)],
        deadline: Duration,
    ) -> BackendResult<TemplateOutcome> {
        let name = self.opts.run_id.unique(base);
        let image = tempfile::Builder::new()
            .prefix("ate-image-")
            .tempdir_in(&self.opts.state_root)
            .context("cannot make the test image dir")?;
        for (path, target) in symlinks {
            let p = image.path().join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::os::unix::fs::symlink(target, &p)
                .with_context(|| format!("cannot plant {path} -> {target} in the test image"))?;
        }
        let mut spec = probe_template(&name, &self.bins.probe)?;
        spec.image_dir = Some(image.path().to_path_buf());
        let view = self
            .client
            .deploy_template(&spec, deadline)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(TemplateOutcome {
            name,
            phase: template_phase(view.status.phase),
            reason: view.status.reason.clone(),
        })
    }
}

impl LocalBackend {
    /// One checker run in an actor's sandbox, through the agent.
    async fn check<T: serde::de::DeserializeOwned>(
        &self,
        atespace: &str,
        id: &str,
        cmd: &Check,
    ) -> BackendResult<T> {
        Ok(self
            .client
            .check(atespace, id, cmd)
            .await
            .map_err(anyhow::Error::from)?)
    }
}

#[async_trait]
impl SandboxAccess for LocalBackend {
    async fn mounts(&self, atespace: &str, id: &str) -> BackendResult<IdentityDir> {
        self.check(atespace, id, &Check::Mounts).await
    }

    async fn try_write(&self, atespace: &str, id: &str) -> BackendResult<TryWrite> {
        self.check(atespace, id, &Check::TryWrite).await
    }

    async fn env(&self, atespace: &str, id: &str) -> BackendResult<Env> {
        self.check(atespace, id, &Check::Env).await
    }

    async fn watch(&self, atespace: &str, id: &str, ms: u64) -> BackendResult<IdentityWatch> {
        self.check(atespace, id, &Check::Watch { ms }).await
    }

    async fn evidence(&self, atespace: &str, id: &str) -> BackendResult<Evidence> {
        self.check(atespace, id, &Check::Evidence).await
    }

    async fn mark(&self, atespace: &str, id: &str, token: &str) -> BackendResult<Evidence> {
        let cmd = Check::Mark {
            token: token.to_owned(),
        };
        self.check(atespace, id, &cmd).await
    }

    async fn golden_evidence(&self, template: &str) -> BackendResult<Evidence> {
        let view = self
            .client
            .template(template)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(view.status.golden_evidence.ok_or_else(|| {
            anyhow!(
                "template {template} has no golden evidence (phase {:?}): the agent marks the golden \
                 only when started with --checker-bin",
                view.status.phase
            )
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gvisor_release_dates_are_read_from_both_spellings() {
        assert_eq!(
            gvisor_release("runsc version 0.0~20240729.0"),
            Some(20240729)
        );
        assert_eq!(
            gvisor_release("runsc version 0.0~20221219.0"),
            Some(20221219)
        );
        assert_eq!(
            gvisor_release("runsc version release-20260622.0"),
            Some(20260622)
        );
        assert_eq!(gvisor_release("runsc version 1.2.3"), None);
        assert_eq!(
            gvisor_release("runsc version 120240729"),
            None,
            "nine digits is no date"
        );
    }
}
