//! The embedded backend: the reference agent (`ate-refagent`) as a child
//! process, actors in real gVisor sandboxes on this machine.
//!
//! Start-up: build (or take) the static probe and agent, remove what a
//! crashed earlier run left (`ate-refagent gc` on every state dir no agent
//! holds), start `ate-refagent serve --exit-with-parent` with a state dir of
//! this run's own, read its one JSON line (bound control and router
//! addresses), then drive its control API. Teardown: SIGTERM, which makes
//! the agent kill and delete every sandbox it started; then a check that
//! `runsc list` shows none of them.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use ate_cmd::{Cmd, Spawned, Stdio};
use serde::Deserialize;
use serde_json::{json, Value};

use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::{info, warn};

use super::{
    ActorInfo, ActorState, Backend, Golden, HostAccess, HostDirs, RestoreSource, TemplateOutcome,
    TemplatePhase,
};
use anyhow::Result;
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
    /// runsc, and cargo unless both static binaries are given.
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
            && (probe_bin.is_some() || std::env::var_os(fixture::PROBE_BIN_ENV).is_some());
        if !prebuilt
            && which::which(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).is_err()
        {
            return Some(
                "cargo not found, and ATE_AGENT_BIN/ATE_PROBE_BIN are not both set".into(),
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

/// The agent's start-up line.
#[derive(Debug, Deserialize)]
struct AgentLine {
    control: SocketAddr,
    router: SocketAddr,
    pid: u32,
    instance: String,
    runsc_version: String,
    #[serde(default)]
    orphans_removed: Vec<String>,
}

/// The embedded backend.
pub struct LocalBackend {
    opts: LocalOptions,
    agent: Mutex<Option<Spawned>>,
    line: AgentLine,
    http: reqwest::Client,
    state_dir: PathBuf,
    log_path: PathBuf,
    bins: StaticBins,
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect()
}

/// Marker file in a state dir left on purpose by `--keep`: the automatic
/// clean-up at the start of a run leaves such dirs alone; `ate-conformance
/// gc` removes them.
pub const KEPT_MARKER: &str = "KEPT";

/// True when no agent holds `dir`'s lock (its agent is gone).
pub fn state_dir_is_stale(dir: &Path) -> bool {
    let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("agent.lock"))
    else {
        // No lock file: not an agent state dir we know how to judge.
        return false;
    };
    rustix::fs::flock(
        f.as_fd(),
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .is_ok()
}

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
        if !dir.is_dir() || !state_dir_is_stale(&dir) {
            continue;
        }
        if !include_kept && dir.join(KEPT_MARKER).exists() {
            info!(run_dir = %dir.display(), "leaving a run kept with --keep (remove it with `ate-conformance gc`)");
            continue;
        }
        let out = Cmd::new(agent_bin)
            .arg("gc")
            .arg("--state-dir")
            .arg(&dir)
            .arg("--remove")
            .timeout(Duration::from_secs(120))
            .run()
            .await
            .with_context(|| {
                format!(
                    "cannot clean up the state dir {} of an earlier run",
                    dir.display()
                )
            })?;
        for l in out.stdout_str().lines() {
            warn!(run_dir = %dir.display(), "earlier run left: {l}");
            removed.push(l.to_owned());
        }
    }
    Ok(removed)
}

/// The probe template spec, rendered from `fixtures/local/probe-template.json`.
pub fn probe_template(name: &str, probe_bin: &Path) -> Result<Value> {
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
    Ok(crate::template::render_json(
        "fixtures/local/probe-template.json",
        &doc,
        &vars,
    )?)
}

impl LocalBackend {
    /// Creates a template and polls it until Ready or Failed, or until
    /// `deadline`; returns the last template view seen.
    async fn deploy_and_wait(&self, spec: Value, deadline: Duration) -> Result<Value> {
        let name = spec["name"].as_str().unwrap_or_default().to_owned();
        let start = Instant::now();
        self.call(reqwest::Method::POST, "/templates", Some(spec))
            .await
            .with_context(|| format!("cannot create template {name}"))?;
        loop {
            let last = self
                .call(reqwest::Method::GET, &format!("/templates/{name}"), None)
                .await?;
            let phase = last.pointer("/status/phase").and_then(Value::as_str);
            if matches!(phase, Some("Ready") | Some("Failed")) || start.elapsed() >= deadline {
                return Ok(last);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Builds what is needed, cleans up after crashed runs, and starts the
    /// agent.
    pub async fn start(opts: LocalOptions) -> Result<LocalBackend> {
        let bins = fixture::static_bins(&fixture::BuildOptions::default())
            .await
            .context("cannot build the static probe and agent")?;
        let probe = opts.probe_bin.clone().unwrap_or_else(|| bins.probe.clone());
        let bins = StaticBins {
            probe,
            agent: bins.agent,
        };
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
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Cmd::new(&bins.agent)
            .arg("serve")
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--exit-with-parent")
            .arg("--runsc")
            .arg(&opts.runsc)
            // The log is a file: no colour codes in it.
            .env("NO_COLOR", "1")
            .stderr(Stdio::file(log));
        if opts.runsc_debug {
            cmd = cmd.arg("--runsc-debug");
        }
        if let Some(f) = &opts.fault {
            cmd = cmd.arg("--fault").arg(f);
        }
        let started = Instant::now();
        let mut agent = cmd.spawn().context("cannot start the reference agent")?;
        let stdout = agent.stdout.take().expect("stdout is piped");
        let first = tokio::time::timeout(opts.start_timeout, async {
            BufReader::new(stdout).lines().next_line().await
        })
        .await;
        let line = match first {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = agent.wait().await.ok();
                bail!(
                    "the agent `{}` exited before it was ready ({status:?}); its log {}:\n{}",
                    agent.cmd(),
                    log_path.display(),
                    tail(&log_path, 30)
                );
            }
            Err(_) => {
                let cmdline = agent.cmd().to_owned();
                let _ = agent.terminate(Duration::from_secs(10)).await;
                bail!(
                    "the agent `{cmdline}` printed no address line within {:?}; its log {}:\n{}",
                    opts.start_timeout,
                    log_path.display(),
                    tail(&log_path, 30)
                );
            }
        };
        let line: AgentLine = serde_json::from_str(&line)
            .with_context(|| format!("the agent's first line is not its address JSON: {line}"))?;
        info!(pid = line.pid, control = %line.control, router = %line.router, ms = started.elapsed().as_millis() as u64, "agent ready");
        if !line.orphans_removed.is_empty() {
            warn!(orphans = ?line.orphans_removed, "agent removed orphan sandboxes");
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("reqwest client builds without TLS");
        Ok(LocalBackend {
            opts,
            agent: Mutex::new(Some(agent)),
            line,
            http,
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

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let what = format!("agent API `{method} {path}`");
        let mut req = self
            .http
            .request(method, format!("http://{}{}", self.line.control, path))
            .timeout(Duration::from_secs(120));
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| {
            format!(
                "{what}: no answer from the agent (log: {})",
                self.log_path.display()
            )
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("{what}: cannot read the body"))?;
        if !status.is_success() {
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(String::from))
                .unwrap_or(text);
            bail!("{what} answered {status}: {msg}");
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{what}: the answer is not JSON: {text}"))
    }

    fn actor_info(v: &Value) -> Result<ActorInfo> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        Ok(ActorInfo {
            atespace: s("atespace").ok_or_else(|| anyhow!("actor view without atespace: {v}"))?,
            id: s("id").ok_or_else(|| anyhow!("actor view without id: {v}"))?,
            state: actor_state(s("state").as_deref().unwrap_or_default()),
            restored_from: match s("last_restore_from").as_deref() {
                Some("golden") => Some(RestoreSource::Golden),
                Some("own") => Some(RestoreSource::Own),
                _ => None,
            },
            restore_ms: v.get("last_restore_ms").and_then(Value::as_u64),
            sandbox: s("sandbox"),
        })
    }

    fn host_dirs(v: &Value) -> HostDirs {
        let dir = |k: &str| v.pointer(k).and_then(Value::as_str).map(PathBuf::from);
        HostDirs {
            identity: dir("/dirs/identity"),
            bundle: dir("/dirs/bundle"),
            logs: dir("/dirs/logs"),
        }
    }

    async fn actor_view(&self, atespace: &str, id: &str) -> Result<Value> {
        self.call(
            reqwest::Method::GET,
            &format!("/atespaces/{atespace}/actors/{id}"),
            None,
        )
        .await
    }
}

/// The seam's state for the agent's state names (`RUNNING`, ...).
fn actor_state(name: &str) -> ActorState {
    match name {
        "RESUMING" => ActorState::Resuming,
        "RUNNING" => ActorState::Running,
        "SUSPENDING" => ActorState::Suspending,
        "SUSPENDED" => ActorState::Suspended,
        other => ActorState::Unknown(other.to_owned()),
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
                self.opts
                    .fault
                    .clone()
                    .unwrap_or_else(|| "none (healthy)".into()),
            ),
        ]
    }

    async fn deploy_probe(&self, deadline: Duration) -> BackendResult<Golden> {
        let r: Result<Golden> = async {
            let name = self.opts.run_id.probe_template();
            let start = Instant::now();
            let spec = probe_template(&name, &self.bins.probe)?;
            let last = self.deploy_and_wait(spec, deadline).await?;
            match last.pointer("/status/phase").and_then(Value::as_str) {
                Some("Ready") => {
                    let golden_actor_id = last
                        .pointer("/status/goldenActorId")
                        .or_else(|| last.pointer("/status/goldenActorID"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            anyhow!("template {name} is Ready without a golden actor ID: {last}")
                        })?
                        .to_owned();
                    let snapshot = last
                        .pointer("/status/snapshot")
                        .and_then(Value::as_str)
                        .map(String::from);
                    Ok(Golden {
                        template: name,
                        golden_actor_id,
                        snapshot,
                        ready_after: start.elapsed(),
                    })
                }
                Some("Failed") => bail!(
                    "template {name} failed: {}",
                    last.pointer("/status/reason")
                        .and_then(Value::as_str)
                        .unwrap_or("(no reason given)")
                ),
                _ => bail!(
                    "template {name} not Ready after {deadline:?}; last status seen: {}",
                    last.get("status").unwrap_or(&last)
                ),
            }
        }
        .await;
        Ok(r?)
    }

    async fn delete_template(&self, name: &str) -> BackendResult<()> {
        let r: Result<()> = async {
            self.call(reqwest::Method::DELETE, &format!("/templates/{name}"), None)
                .await
                .map(|_| ())
        }
        .await;
        Ok(r?)
    }

    async fn create_atespace(&self, atespace: &str) -> BackendResult<()> {
        let r: Result<()> = async {
            self.call(
                reqwest::Method::POST,
                "/atespaces",
                Some(json!({ "name": atespace })),
            )
            .await
            .map(|_| ())
        }
        .await;
        Ok(r?)
    }

    async fn delete_atespace(&self, atespace: &str) -> BackendResult<()> {
        let r: Result<()> = async {
            self.call(
                reqwest::Method::DELETE,
                &format!("/atespaces/{atespace}"),
                None,
            )
            .await
            .map(|_| ())
        }
        .await;
        Ok(r?)
    }

    async fn create_actor(
        &self,
        atespace: &str,
        id: &str,
        template: &str,
    ) -> BackendResult<ActorInfo> {
        let r: Result<ActorInfo> = async {
            let v = self
                .call(
                    reqwest::Method::POST,
                    &format!("/atespaces/{atespace}/actors"),
                    Some(json!({ "id": id, "template": template })),
                )
                .await?;
            Self::actor_info(&v)
        }
        .await;
        Ok(r?)
    }

    async fn resume(&self, atespace: &str, id: &str) -> BackendResult<ActorInfo> {
        let r: Result<ActorInfo> = async {
            let v = self
                .call(
                    reqwest::Method::POST,
                    &format!("/atespaces/{atespace}/actors/{id}/resume"),
                    None,
                )
                .await?;
            Self::actor_info(&v)
        }
        .await;
        Ok(r?)
    }

    async fn suspend(&self, atespace: &str, id: &str) -> BackendResult<ActorInfo> {
        let r: Result<ActorInfo> = async {
            let v = self
                .call(
                    reqwest::Method::POST,
                    &format!("/atespaces/{atespace}/actors/{id}/suspend"),
                    None,
                )
                .await?;
            Self::actor_info(&v)
        }
        .await;
        Ok(r?)
    }

    async fn delete_actor(&self, atespace: &str, id: &str) -> BackendResult<()> {
        let r: Result<()> = async {
            self.call(
                reqwest::Method::DELETE,
                &format!("/atespaces/{atespace}/actors/{id}"),
                None,
            )
            .await
            .map(|_| ())
        }
        .await;
        Ok(r?)
    }

    async fn get_actor(&self, atespace: &str, id: &str) -> BackendResult<ActorInfo> {
        let r: Result<ActorInfo> = async {
            let v = self
                .call(
                    reqwest::Method::GET,
                    &format!("/atespaces/{atespace}/actors/{id}"),
                    None,
                )
                .await?;
            Self::actor_info(&v)
        }
        .await;
        Ok(r?)
    }

    fn router(&self) -> RouterClient {
        RouterClient::new(self.line.router)
    }

    fn router_refusal(&self, resp: &RoutedResponse) -> Option<String> {
        // The agent's router answers its own errors as the API does:
        // `{"error": ..., "kind": ...}` (agent/src/router.rs).
        let v: Value = serde_json::from_slice(&resp.body).ok()?;
        v.get("kind")?.as_str()?;
        v.get("error")?.as_str().map(String::from)
    }

    fn host(&self) -> Option<&dyn HostAccess> {
        Some(self)
    }

    async fn live_sandboxes(&self) -> BackendResult<Vec<String>> {
        let r: Result<Vec<String>> = async {
            // What runsc itself lists, not what the agent believes.
            let out = Cmd::new(&self.opts.runsc)
                .args(["list", "-quiet"])
                .timeout(Duration::from_secs(20))
                .run()
                .await?;
            let prefix = format!("ate-{}-", self.line.instance);
            Ok(out
                .stdout_str()
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with(&prefix))
                .map(String::from)
                .collect())
        }
        .await;
        Ok(r?)
    }

    async fn collect_artifacts(
        &self,
        actors: &[super::ActorRef],
        dir: &Path,
    ) -> BackendResult<Vec<PathBuf>> {
        let r: Result<Vec<PathBuf>> = async {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut written = Vec::new();
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let mut needles: Vec<String> = Vec::new();
            let mut hosts: Vec<String> = Vec::new();
            let mut notes = Vec::new();
            for a in actors {
                needles.push(format!("{}/{}", a.atespace, a.id));
                hosts.push(format!(
                    "host={}",
                    crate::router::actor_host(&a.id, &a.atespace)
                ));
                let (info, dirs) = match self
                    .actor_view(&a.atespace, &a.id)
                    .await
                    .and_then(|v| Ok((Self::actor_info(&v)?, Self::host_dirs(&v))))
                {
                    Ok(x) => x,
                    Err(e) => {
                        notes.push(format!(
                            "{}/{}: cannot get the actor from the agent: {e:#}",
                            a.atespace, a.id
                        ));
                        continue;
                    }
                };
                if let Some(cid) = &info.sandbox {
                    needles.push(cid.clone());
                }
                let stem = format!("{}-{}", a.atespace, a.id);
                match dirs.bundle.as_ref().map(|b| b.join("config.json")) {
                    Some(cfg) if cfg.exists() => {
                        let to = dir.join(format!("{stem}.config.json"));
                        std::fs::copy(&cfg, &to)
                            .with_context(|| format!("cannot copy {}", cfg.display()))?;
                        written.push(to);
                    }
                    _ => notes.push(format!(
                        "{}/{}: no config.json ({}; the bundle is reset after a suspend, ID-10)",
                        a.atespace, a.id, info.state
                    )),
                }
                if let Some(logs) = &dirs.logs {
                    for e in std::fs::read_dir(logs).into_iter().flatten().flatten() {
                        let to = dir.join(format!("{stem}.{}", e.file_name().to_string_lossy()));
                        if e.path().is_file() && std::fs::copy(e.path(), &to).is_ok() {
                            written.push(to);
                        }
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
                std::fs::write(&to, text)
                    .with_context(|| format!("cannot write {}", to.display()))?;
                written.push(to);
            }
            if !notes.is_empty() {
                let to = dir.join("notes.txt");
                std::fs::write(&to, notes.join("\n") + "\n")?;
                written.push(to);
            }
            Ok(written)
        }
        .await;
        Ok(r?)
    }

    async fn keep(&self) -> BackendResult<(Vec<String>, String)> {
        let r: Result<(Vec<String>, String)> = async {
        let agent = self.agent.lock().unwrap().take();
        let Some(mut agent) = agent else {
            bail!("the agent is already stopped; nothing to keep")
        };
        let v = self.call(reqwest::Method::POST, "/detach", None).await?;
        let status = tokio::time::timeout(Duration::from_secs(30), agent.wait()).await;
        if !matches!(status, Ok(Ok(_))) {
            let _ = agent.terminate(Duration::from_secs(10)).await;
            bail!("the agent did not exit after /detach; it was stopped and its sandboxes removed");
        }
        std::fs::write(
            self.state_dir.join(KEPT_MARKER),
            format!("kept by run {}\n", self.opts.run_id),
        )
        .with_context(|| format!("cannot mark {} as kept", self.state_dir.display()))?;
        let mut kept: Vec<String> = v["sandboxes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|cid| format!("sandbox {cid} (runsc state: `runsc state {cid}`)"))
            .collect();
        kept.push(format!(
            "agent state dir {} (actor bundles, identity dirs, snapshots, logs)",
            self.state_dir.display()
        ));
        kept.push(format!("agent log {}", self.log_path.display()));
        let how = format!(
            "cargo run -q -p ate-harness --bin ate-conformance -- gc   (or: {} gc --state-dir {} --remove)",
            self.bins.agent.display(),
            self.state_dir.display()
        );
        Ok((kept, how))
    }
        .await;
        Ok(r?)
    }

    async fn teardown(&self) -> BackendResult<()> {
        let r: Result<()> = async {
            let agent = self.agent.lock().unwrap().take();
            let Some(agent) = agent else { return Ok(()) };
            let pid = agent.pid();
            let status = agent
                .terminate(Duration::from_secs(120))
                .await
                .context("cannot stop the agent")?;
            info!(pid, ?status, "agent stopped");
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
                bail!(
                "the agent left {} sandbox(es) running after SIGTERM: {left:?} (removed now by ID)",
                left.len()
            );
            }
            if !status.success() {
                bail!(
                    "the agent exited with {status} at teardown; its log {}:\n{}",
                    self.log_path.display(),
                    tail(&self.log_path, 30)
                );
            }
            std::fs::remove_dir_all(&self.state_dir)
                .with_context(|| format!("cannot remove {}", self.state_dir.display()))?;
            Ok(())
        }
        .await;
        Ok(r?)
    }
}

/// The seam's phase for the agent's template phases.
fn template_phase(name: &str) -> TemplatePhase {
    match name {
        "Ready" => TemplatePhase::Ready,
        "Failed" => TemplatePhase::Failed,
        other => TemplatePhase::Other(other.to_owned()),
    }
}

#[async_trait]
impl HostAccess for LocalBackend {
    async fn actor_dirs(&self, atespace: &str, id: &str) -> BackendResult<HostDirs> {
        Ok(Self::host_dirs(&self.actor_view(atespace, id).await?))
    }

    async fn rewrite_identity(
        &self,
        atespace: &str,
        id: &str,
        values: &[String],
        for_ms: u64,
    ) -> BackendResult<u64> {
        let r: Result<u64> = async {
            let v = self
                .call(
                    reqwest::Method::POST,
                    &format!("/atespaces/{atespace}/actors/{id}/identity/rewrite"),
                    Some(json!({ "values": values, "for_ms": for_ms })),
                )
                .await?;
            v["writes"]
                .as_u64()
                .ok_or_else(|| anyhow!("the agent's rewrite answer has no writes count: {v}"))
        }
        .await;
        Ok(r?)
    }

    async fn deploy_probe_with_symlinks(
        &self,
        base: &str,
        symlinks: &[(String, String)],
        deadline: Duration,
    ) -> BackendResult<TemplateOutcome> {
        let r: Result<TemplateOutcome> = async {
            let name = self.opts.run_id.unique(base);
            let image = tempfile::Builder::new()
                .prefix("ate-image-")
                .tempdir_in(&self.opts.state_root)?;
            for (path, target) in symlinks {
                let p = image.path().join(path);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::os::unix::fs::symlink(target, &p).with_context(|| {
                    format!("cannot plant {path} -> {target} in the test image")
                })?;
            }
            let mut spec = probe_template(&name, &self.bins.probe)?;
            spec["image_dir"] = json!(image.path());
            let last = self.deploy_and_wait(spec, deadline).await?;
            Ok(TemplateOutcome {
                name,
                phase: template_phase(
                    last.pointer("/status/phase")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                ),
                reason: last
                    .pointer("/status/reason")
                    .and_then(Value::as_str)
                    .map(String::from),
            })
        }
        .await;
        Ok(r?)
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
