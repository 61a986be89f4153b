//! `ate-conformance bench`: what restoring actors from one golden snapshot
//! costs through the reference agent, measured against the raw runtime on
//! the same golden image in the same run.
//!
//! One run: start `ate-refagent serve` on a state dir of its own (under
//! `target/ate-bench/`), deploy the probe template (golden boot +
//! checkpoint), then for every fan-out size N and for sequential and
//! concurrent (= cores) restores:
//!
//! - **raw**: `runsc --network=none restore --detach --image-path <golden>
//!   --bundle B ate-bench-<run>-K` into bare bundles prepared here the way
//!   the agent prepares its own (rootfs = the probe binary hard-linked plus
//!   the mount-point directories, an identity dir, the golden's
//!   `config.json` with `root.path` and the `/run/ate` source rewritten),
//!   timed per restore; every container is registered before it is started
//!   and removed by its ID afterwards, on failure and on interrupt;
//! - **agent**: the same N actors resumed through the control API (client
//!   time per call, and the agent's own `last_restore_ms` /
//!   `last_resume_ms`), each then asked `/whoami` and `/snapshot` through
//!   the router (own ID; restored from the golden, not booted);
//!
//! and per step: wall time, p50/p95/max per restore, actors per second,
//! resident memory per sandbox (VmRSS summed over the `runsc-sandbox` and
//! `runsc-gofer` processes that name the container or its bundle), disk
//! per actor (apparent bytes, and unique bytes: files not hard-linked with
//! the template, plus directories). Then interleaved pairs (one raw
//! restore, one agent resume, alternating which goes first) for the
//! agent/raw ratio, the router's on-demand path (a
//! suspended actor's first `GET /whoami`: first byte and complete
//! response) and warm `/whoami` round-trips (p50/p95/p99). [`run`] returns
//! a [`Report`]; [`render_table`] prints it as one Markdown table and
//! [`write_json`] writes it.
//!
//! Nothing here asserts timings; [`run`] fails only when the work itself is
//! wrong (an actor reads another ID, a restore fails, a sandbox is left).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use ate_agent_api::client::{Agent, AgentClient, AgentOptions};
use ate_agent_api::{ActorState, ActorView, Phase, RestoreSource, TemplateSpec};
use ate_harness::cmd::{Cmd, Stdio};
use ate_harness::fixture::{static_bins, BuildOptions, StaticBins};
use ate_harness::probe::{Snapshot, Whoami};
use ate_harness::router::{actor_host, RouterClient};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The template every bench run deploys.
pub const TEMPLATE: &str = "probe";
/// Container-ID prefix of the raw containers (`ate-bench-<run>-<k>`).
pub const RAW_PREFIX: &str = "ate-bench-";
/// Where the relay helper sits inside every sandbox (the golden bundle
/// mounts the agent's helper dir there).
const RELAY_IN_SANDBOX: &str = "/.ate/ate-refagent";

const READY_DEADLINE: Duration = Duration::from_secs(90);
const OP_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);
const AGENT_TERM_GRACE: Duration = Duration::from_secs(90);

// ================================================================ options

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Fan-out sizes (actors restored from the one golden snapshot).
    pub ns: Vec<usize>,
    /// Concurrency of the concurrent runs (default: the number of cores).
    pub concurrency: usize,
    /// Warm `/whoami` round-trips through the router.
    pub whoami_requests: usize,
    /// Warm-up requests before those.
    pub whoami_warmup: usize,
    /// On-demand samples (each: a suspended actor's first routed request),
    /// for an actor's own snapshot and for a fresh actor (golden).
    pub on_demand_samples: usize,
    /// Interleaved pairs (one raw restore, one agent resume, alternating
    /// which goes first) for the agent/raw ratio.
    pub paired_samples: usize,
    /// Per step, how many raw containers are also asked `/whoami` and
    /// `/snapshot` over `runsc exec ... relay` (all are checked with
    /// `runsc state`).
    pub raw_http_checks: usize,
    /// The runsc program.
    pub runsc: PathBuf,
    /// Parent of this run's working dir (`run-<id>/`: agent state, raw
    /// bundles), removed at the end.
    pub work_root: PathBuf,
    /// How to get the static probe and agent.
    pub build: BuildOptions,
}

/// The number of cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            ns: vec![1, 2, 8, 32, 64],
            concurrency: cores(),
            whoami_requests: 500,
            whoami_warmup: 20,
            on_demand_samples: 3,
            paired_samples: 20,
            raw_http_checks: 2,
            runsc: PathBuf::from("runsc"),
            work_root: ate_harness::paths::bench_dir(),
            build: BuildOptions::default(),
        }
    }
}

/// `target/ate-bench/bench.json`.
pub fn default_out() -> PathBuf {
    ate_harness::paths::bench_dir().join("bench.json")
}

// ================================================================ report

/// Latency statistics in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Samples.
    pub n: usize,
    /// Minimum.
    pub min_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Stats {
    /// Statistics of `ms` (must not be empty).
    pub fn of(ms: &[f64]) -> Stats {
        let mut s = ms.to_vec();
        s.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let k = ((p / 100.0) * s.len() as f64).ceil() as usize;
            s[k.clamp(1, s.len()) - 1]
        };
        Stats {
            n: s.len(),
            min_ms: s[0],
            p50_ms: rank(50.0),
            p95_ms: rank(95.0),
            p99_ms: rank(99.0),
            max_ms: s[s.len() - 1],
            mean_ms: s.iter().sum::<f64>() / s.len() as f64,
        }
    }
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores available to this process.
    pub cores: usize,
    /// CPU model (`/proc/cpuinfo`).
    pub cpu: String,
    /// `MemTotal` from `/proc/meminfo`, KiB.
    pub memory_kib: u64,
    /// Kernel release.
    pub kernel: String,
    /// `runsc --version`, first line.
    pub runsc: String,
}

/// The golden image all restores of the run come from.
#[derive(Debug, Clone, Serialize)]
pub struct GoldenInfo {
    /// Template name.
    pub template: String,
    /// The golden actor's ID.
    pub golden_actor_id: String,
    /// The snapshot image directory.
    pub snapshot: PathBuf,
    /// Bytes of the snapshot image.
    pub snapshot_bytes: u64,
    /// Bytes of the image (the probe binary: the whole rootfs content).
    pub rootfs_bytes: u64,
    /// The agent's golden timings (boot, health, checkpoint), ms.
    pub timings_ms: BTreeMap<String, u64>,
}

/// One fan-out step: N actors restored by one path in one mode.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutRow {
    /// `raw` (runsc restore driven directly) or `agent` (API resume).
    pub path: String,
    /// Actors restored.
    pub n: usize,
    /// Restores in flight at once.
    pub concurrency: usize,
    /// First restore started to last one done, ms.
    pub wall_ms: f64,
    /// Per restore: raw = `runsc restore`; agent = the API resume call.
    pub restore: Stats,
    /// The same, every sample in the order the restores were started.
    pub restore_samples_ms: Vec<f64>,
    /// Agent only: its own `last_restore_ms` (runsc restore alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_restore: Option<Stats>,
    /// Agent only: its own `last_resume_ms` (dirs, bundle, restore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_resume: Option<Stats>,
    /// N / wall.
    pub actors_per_s: f64,
    /// Mean VmRSS per sandbox (runsc-sandbox + runsc-gofer), KiB.
    pub rss_kib_per_sandbox: f64,
    /// Largest VmRSS of one sandbox, KiB.
    pub rss_kib_max: f64,
    /// Mean PSS per sandbox (shared pages split), KiB, when readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pss_kib_per_sandbox: Option<f64>,
    /// Host processes per sandbox (mean).
    pub processes_per_sandbox: f64,
    /// Agent only: mean VmRSS of the host side of one relay (`runsc exec`)
    /// kept open per actor after its first routed request, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_rss_kib_per_actor: Option<f64>,
    /// Mean bytes under an actor's directory (every file and dir).
    pub disk_apparent_bytes: f64,
    /// Mean bytes under an actor's directory not shared with the template
    /// (files with one link, plus directories).
    pub disk_unique_bytes: f64,
    /// Raw only: preparing the N bundles (not part of the restore times).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepare_ms: Option<f64>,
    /// Removing the N sandboxes (raw: kill + delete; agent: suspend +
    /// delete and the background deletions settled).
    pub teardown_ms: f64,
}

/// The router's on-demand path: a suspended actor's first routed request.
#[derive(Debug, Clone, Serialize)]
pub struct OnDemand {
    /// From the actor's own snapshot (created, resumed, suspended): first
    /// response byte.
    pub own_first_byte: Stats,
    /// The same, complete response.
    pub own_complete: Stats,
    /// A fresh actor (restored from the golden on its first request):
    /// first response byte.
    pub golden_first_byte: Stats,
    /// The same, complete response.
    pub golden_complete: Stats,
}

/// Interleaved pairs: a raw restore and an agent resume one after the
/// other (alternating which goes first), so drift in the machine's speed
/// weighs on both alike.
#[derive(Debug, Clone, Serialize)]
pub struct Paired {
    /// Raw `runsc restore`.
    pub raw: Stats,
    /// Agent resume, the API call.
    pub api_resume: Stats,
    /// The agent's own `last_resume_ms`.
    pub agent_resume: Stats,
    /// The agent's own `last_restore_ms` (its runsc restore alone).
    pub agent_restore: Stats,
}

/// Agent over raw, median against median.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Interleaved pairs: API resume p50 / raw `runsc restore` p50 (the
    /// target's measure).
    pub paired_api_resume: f64,
    /// Interleaved pairs: the agent's own `last_resume_ms` p50 / raw p50.
    pub paired_agent_resume: f64,
    /// Interleaved pairs: the agent's own `last_restore_ms` p50 / raw p50.
    pub paired_agent_restore: f64,
    /// Fan-out, sequential, all N pooled: API resume p50 / raw p50 (blocks
    /// of N raw then N agent restores: drift between blocks shows here).
    pub sequential_api_resume: f64,
    /// The same, the agent's own `last_resume_ms`.
    pub sequential_agent_resume: f64,
    /// The same, the agent's own `last_restore_ms`.
    pub sequential_agent_restore: f64,
    /// Fan-out, concurrent, all N pooled: API resume p50 / raw p50.
    pub concurrent_api_resume: f64,
    /// Raw sequential restore, all N pooled.
    pub raw_sequential: Stats,
    /// API resume sequential, all N pooled.
    pub agent_sequential: Stats,
}

/// One target of the issue and how this run did.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is measured.
    pub what: String,
    /// The measured value.
    pub value: f64,
    /// The limit.
    pub limit: f64,
    /// Whether it is met.
    pub met: bool,
}

/// What one agent-path actor answered.
#[derive(Debug, Clone, Serialize)]
pub struct ActorCheck {
    /// Atespace.
    pub atespace: String,
    /// Actor ID.
    pub id: String,
    /// Its container.
    pub cid: String,
    /// `last_restore_from` of its view.
    pub restored_from: String,
    /// `/whoami` `file` through the router.
    pub whoami: String,
    /// `/snapshot` nonce.
    pub nonce: String,
    /// `/snapshot` identity at process start.
    pub identity_at_start: String,
}

/// What one raw container showed.
#[derive(Debug, Clone, Serialize)]
pub struct RawCheck {
    /// Container ID (also the ID in its identity dir).
    pub cid: String,
    /// `runsc state` status.
    pub state: String,
    /// `/whoami` `file` over `runsc exec ... relay`, when asked.
    pub whoami: Option<String>,
    /// `/snapshot` nonce, when asked.
    pub nonce: Option<String>,
    /// `/snapshot` identity at start, when asked.
    pub identity_at_start: Option<String>,
}

/// The correctness evidence of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    /// The one start nonce every restored process reported (the golden
    /// process's).
    pub golden_nonce: String,
    /// Every agent-path actor of the fan-out.
    pub agent_actors: Vec<ActorCheck>,
    /// Every raw container.
    pub raw_containers: Vec<RawCheck>,
    /// Warm `/whoami` answers that were the actor's own ID (all of them).
    pub warm_whoami_own: usize,
}

/// What was left afterwards.
#[derive(Debug, Clone, Serialize)]
pub struct Cleanup {
    /// `runsc list` entries of this run (raw prefix or agent instance)
    /// after everything was removed: must be empty.
    pub runsc_left: Vec<String>,
    /// The agent's instance (its container IDs are `ate-<instance>-<k>`).
    pub agent_instance: String,
    /// The agent's exit status on SIGTERM.
    pub agent_exit: String,
    /// Raw containers created and removed by ID.
    pub raw_removed: usize,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Run ID (part of the raw container IDs).
    pub run: String,
    /// When it ran (UTC).
    pub date: String,
    /// The machine.
    pub machine: Machine,
    /// Fan-out sizes, concurrency and request counts used.
    pub options: Value,
    /// The golden image.
    pub golden: GoldenInfo,
    /// One row per (N, mode, path).
    pub fanout: Vec<FanoutRow>,
    /// Router on-demand path.
    pub on_demand: OnDemand,
    /// Warm `/whoami` round-trips through the router.
    pub warm_whoami: Stats,
    /// Interleaved raw/agent pairs.
    pub paired: Paired,
    /// Agent/raw ratios.
    pub ratio: Ratio,
    /// The targets.
    pub targets: Vec<Target>,
    /// Correctness evidence.
    pub checks: Checks,
    /// Cleanup evidence.
    pub cleanup: Cleanup,
    /// The whole run, s.
    pub total_s: f64,
}

// ================================================================ entry

/// Runs the benchmark; on SIGINT/SIGTERM stops, removes every sandbox it
/// made and fails with the signal's name.
pub async fn run(opts: &BenchOptions) -> Result<Report> {
    ensure!(!opts.ns.is_empty(), "no fan-out sizes given");
    ensure!(
        opts.ns.iter().all(|&n| (1..=512).contains(&n)),
        "fan-out sizes must be 1..=512: {:?}",
        opts.ns
    );
    ensure!(opts.concurrency >= 1, "concurrency must be at least 1");
    ensure!(
        opts.whoami_requests >= 1 && opts.on_demand_samples >= 1 && opts.paired_samples >= 1,
        "whoami requests, on-demand and paired samples must be at least 1"
    );
    let started = Instant::now();
    std::fs::create_dir_all(&opts.work_root)
        .with_context(|| format!("cannot create {}", opts.work_root.display()))?;
    let work_root = opts.work_root.canonicalize()?;
    sweep_stale_runs(&work_root, &opts.runsc).await;
    let run_id = random_hex(4);
    let dir = tempfile::Builder::new()
        .prefix(&format!("run-{run_id}-"))
        .tempdir_in(&work_root)?;
    let lock = std::fs::File::create(dir.path().join("bench.lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .context("cannot lock the bench run dir")?;
    let raw = Arc::new(RawSandboxes::new(
        opts.runsc.clone(),
        dir.path().join("raw-sandboxes"),
    )?);
    let mut ctx = Ctx {
        opts: opts.clone(),
        run_id: run_id.clone(),
        dir: dir.path().to_path_buf(),
        raw: raw.clone(),
        agent: None,
        seq: 0,
        samples: BTreeMap::new(),
    };

    let measured = tokio::select! {
        r = ctx.measure() => r,
        sig = interrupted() => Err(anyhow!("interrupted by {sig}: removed every sandbox of this run")),
    };
    // Whatever happened: raw containers by ID, then the agent (SIGTERM
    // makes it remove every sandbox it started).
    let raw_removed = raw.created();
    let raw_cleanup = raw.remove_all().await;
    let agent_info = ctx.agent.as_ref().map(|a| {
        (
            format!("ate-{}-", a.instance()),
            a.state_dir().to_path_buf(),
        )
    });
    let agent_exit = match ctx.agent.take() {
        Some(a) => Some(a.stop().await),
        None => None,
    };
    let raw_prefix = format!("{RAW_PREFIX}{run_id}-");
    let ours = |c: &String| {
        c.starts_with(&raw_prefix)
            || agent_info
                .as_ref()
                .is_some_and(|(p, _)| c.starts_with(p.as_str()))
    };
    let mut left: Vec<String> = runsc_list(&opts.runsc)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(ours)
        .collect();
    // Sandboxes the agent failed to remove on SIGTERM stay recorded in its
    // state dir: remove them the documented way (`ate-refagent gc`), and
    // count that as a failure of the run all the same.
    let mut agent_left = None;
    if let Some((prefix, state)) = &agent_info {
        let theirs: Vec<String> = left
            .iter()
            .filter(|c| c.starts_with(prefix))
            .cloned()
            .collect();
        if !theirs.is_empty() {
            let gc = Cmd::new(dir.path().join("ate-refagent"))
                .arg("gc")
                .arg("--state-dir")
                .arg(state)
                .arg("--runsc")
                .arg(&opts.runsc)
                .timeout(Duration::from_secs(120))
                .output()
                .await;
            let said = match gc {
                Ok(o) => format!("{}\n{}", o.stdout_str().trim(), o.stderr_str().trim())
                    .trim()
                    .to_owned(),
                Err(e) => format!("{e:#}"),
            };
            agent_left = Some(format!(
                "the agent left {theirs:?} running after SIGTERM; `ate-refagent gc` then said: {said}"
            ));
            left = runsc_list(&opts.runsc)
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(ours)
                .collect();
        }
    }
    drop(lock);
    drop(dir);

    let m = match measured {
        Ok(m) => m,
        Err(e) => {
            // The measurement's failure is the error; say what cleanup
            // could not do as well.
            if let Err(c) = &raw_cleanup {
                eprintln!("bench: cleanup: {c:#}");
            }
            if let Some(Err(a)) = &agent_exit {
                eprintln!("bench: cleanup: {a:#}");
            }
            if let Some(a) = &agent_left {
                eprintln!("bench: cleanup: {a}");
            }
            if !left.is_empty() {
                eprintln!("bench: cleanup: runsc still lists {left:?}");
            }
            return Err(e);
        }
    };
    raw_cleanup.context("cannot remove the raw containers")?;
    let agent_exit = agent_exit
        .context("the agent was not running at the end")?
        .context("the agent did not stop cleanly")?;
    ensure!(
        left.is_empty(),
        "runsc still lists containers of this run after cleanup: {left:?}"
    );
    if let Some(a) = agent_left {
        bail!("{a}");
    }
    let targets = targets(&m);
    Ok(Report {
        run: run_id,
        date: utc_now(),
        machine: machine(&opts.runsc).await,
        options: json!({
            "ns": opts.ns,
            "concurrency": opts.concurrency,
            "whoami_requests": opts.whoami_requests,
            "whoami_warmup": opts.whoami_warmup,
            "on_demand_samples": opts.on_demand_samples,
            "paired_samples": opts.paired_samples,
            "raw_http_checks": opts.raw_http_checks,
        }),
        golden: m.golden,
        paired: m.paired,
        ratio: m.ratio,
        targets,
        fanout: m.fanout,
        on_demand: m.on_demand,
        warm_whoami: m.warm,
        checks: m.checks,
        cleanup: Cleanup {
            runsc_left: left,
            agent_instance: m.instance.clone(),
            agent_exit,
            raw_removed,
        },
        total_s: started.elapsed().as_secs_f64(),
    })
}

/// [`run`], then the table on stdout and the JSON at `out`.
pub async fn run_and_print(opts: &BenchOptions, out: &Path) -> Result<Report> {
    let report = run(opts).await?;
    println!("{}", render_table(&report));
    write_json(&report, out)?;
    eprintln!("bench: JSON written to {}", out.display());
    Ok(report)
}

/// Writes the report as pretty JSON (parent dirs created).
pub fn write_json(report: &Report, out: &Path) -> Result<()> {
    if let Some(p) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(out, text + "\n").with_context(|| format!("cannot write {}", out.display()))
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

// ================================================================ the run

struct Measured {
    instance: String,
    golden: GoldenInfo,
    fanout: Vec<FanoutRow>,
    on_demand: OnDemand,
    warm: Stats,
    paired: Paired,
    ratio: Ratio,
    checks: Checks,
}

struct Ctx {
    opts: BenchOptions,
    run_id: String,
    dir: PathBuf,
    raw: Arc<RawSandboxes>,
    agent: Option<BenchAgent>,
    seq: usize,
    /// Per-restore samples pooled over all N: `raw-seq`, `agent-con`, ...
    samples: BTreeMap<String, Vec<f64>>,
}

/// What the probe template's golden gives a raw restore.
#[derive(Clone)]
struct Golden {
    id: String,
    snapshot: PathBuf,
    config: Value,
    image_bin: PathBuf,
    /// The image binary's path inside the rootfs (`args[0]` without `/`).
    bin_in_rootfs: String,
}

/// The probe's answers that prove identity and provenance.
#[derive(Debug, Clone)]
struct Answers {
    whoami: String,
    nonce: String,
    identity_at_start: String,
}

impl Ctx {
    fn agent(&self) -> &BenchAgent {
        self.agent.as_ref().expect("the agent is started first")
    }

    fn api(&self) -> &AgentClient {
        self.agent().api()
    }

    /// Waits until the agent lists no sandbox (deletions of checkpointed
    /// containers run in the background).
    async fn settle_sandboxes(&self) -> Result<()> {
        Ok(self.api().wait_no_sandboxes(SETTLE_DEADLINE).await?)
    }

    async fn measure(&mut self) -> Result<Measured> {
        let t0 = Instant::now();
        let bins = static_bins(&self.opts.build)
            .await
            .context("cannot build the static probe and agent")?;
        eprintln!(
            "bench {}: static binaries ready ({} ms)",
            self.run_id,
            t0.elapsed().as_millis()
        );
        self.agent = Some(BenchAgent::start(&bins, &self.dir, &self.opts.runsc).await?);
        let (golden, golden_info) = self.deploy(&bins).await?;
        self.settle_sandboxes().await?;

        // Warm-up, not recorded: the first restore of a run pays for cold
        // caches (snapshot file, runsc binary, page cache).
        self.raw_step(&golden, 1, 1).await?;
        self.agent_step(1, 1, "warmup").await?;
        self.samples.clear();

        let conc = self.opts.concurrency;
        let mut fanout = Vec::new();
        let mut agent_checks = Vec::new();
        let mut raw_checks = Vec::new();
        for &n in &self.opts.ns.clone() {
            let modes = if conc.min(n) > 1 {
                vec![1, conc.min(n)]
            } else {
                vec![1]
            };
            for c in modes {
                let (row, checks) = self.raw_step(&golden, n, c).await?;
                eprintln!("bench: {}", row_line(&row));
                fanout.push(row);
                raw_checks.extend(checks);
                let (row, checks) = self
                    .agent_step(n, c, if c == 1 { "seq" } else { "con" })
                    .await?;
                eprintln!("bench: {}", row_line(&row));
                fanout.push(row);
                agent_checks.extend(checks);
            }
        }

        let paired = self.paired(&golden).await?;
        let on_demand = self.on_demand().await?;
        let (warm, warm_own) = self.warm_whoami().await?;

        // Provenance: one nonce for every restored process, the golden's ID
        // read at start by each, its own ID now.
        let nonces: BTreeSet<&str> = agent_checks
            .iter()
            .map(|c| c.nonce.as_str())
            .chain(raw_checks.iter().filter_map(|c| c.nonce.as_deref()))
            .collect();
        ensure!(
            nonces.len() == 1,
            "restored processes report {} different start nonces {nonces:?}: not all restored from one golden image",
            nonces.len()
        );
        let golden_nonce = nonces.into_iter().next().unwrap_or_default().to_owned();
        let at_start: BTreeSet<&str> = agent_checks
            .iter()
            .map(|c| c.identity_at_start.as_str())
            .chain(
                raw_checks
                    .iter()
                    .filter_map(|c| c.identity_at_start.as_deref()),
            )
            .collect();
        ensure!(
            at_start.len() == 1 && at_start.contains(golden.id.as_str()),
            "restored processes read {at_start:?} at start, not only the golden actor's ID {}",
            golden.id
        );

        let ratio = self.ratio(&paired)?;
        Ok(Measured {
            instance: self.agent().instance().to_owned(),
            golden: golden_info,
            fanout,
            on_demand,
            warm,
            paired,
            ratio,
            checks: Checks {
                golden_nonce,
                agent_actors: agent_checks,
                raw_containers: raw_checks,
                warm_whoami_own: warm_own,
            },
        })
    }

    /// Deploys the probe template and reads what a raw restore needs.
    async fn deploy(&mut self, bins: &StaticBins) -> Result<(Golden, GoldenInfo)> {
        let api = self.api();
        let t0 = Instant::now();
        let view = api
            .deploy_template(&TemplateSpec::new(TEMPLATE, &bins.probe), READY_DEADLINE)
            .await
            .context("the probe template was not Ready")?;
        if view.status.phase != Phase::Ready {
            bail!("the probe template failed: {:?}", view.status);
        }
        let status = &view.status;
        let id = status
            .golden_actor_id
            .clone()
            .context("no golden_actor_id")?;
        // Where the agent keeps the golden bundle and image: asked, not
        // derived from its private state dir layout.
        let paths = status
            .golden
            .clone()
            .context("a Ready template without golden paths")?;
        let snapshot = paths.image_dir;
        let config_path = paths.bundle_dir.join("config.json");
        let config: Value = serde_json::from_slice(
            &std::fs::read(&config_path)
                .with_context(|| format!("cannot read {}", config_path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", config_path.display()))?;
        let args0 = view.spec.args.first().context("template has no args[0]")?;
        let image_bin = paths.image_bin;
        let timings: BTreeMap<String, u64> = status.timings_ms.clone();
        eprintln!(
            "bench: template {TEMPLATE} Ready in {} ms (golden {id}, timings {timings:?}), snapshot {}",
            t0.elapsed().as_millis(),
            snapshot.display()
        );
        let info = GoldenInfo {
            template: TEMPLATE.into(),
            golden_actor_id: id.clone(),
            snapshot_bytes: disk_usage(&snapshot)?.0,
            rootfs_bytes: std::fs::metadata(&image_bin)?.len(),
            snapshot: snapshot.clone(),
            timings_ms: timings,
        };
        Ok((
            Golden {
                id,
                snapshot,
                config,
                image_bin,
                bin_in_rootfs: args0.trim_start_matches('/').to_owned(),
            },
            info,
        ))
    }

    // ------------------------------------------------------------------ raw

    /// Prepares a bare bundle for `cid` under `root` the way the agent
    /// prepares an actor's: rootfs (binary hard-linked, mount points),
    /// identity dir holding `id`, the golden's config.json re-pointed.
    fn prepare_raw_bundle(golden: &Golden, root: &Path, cid: &str) -> Result<()> {
        let rootfs = root.join("rootfs");
        let identity = root.join("identity");
        let bundle = root.join("bundle");
        for d in ["proc", "dev", "sys", ".ate", "run/ate"] {
            std::fs::create_dir_all(rootfs.join(d))?;
        }
        if let Some(parent) = Path::new(&golden.bin_in_rootfs).parent() {
            std::fs::create_dir_all(rootfs.join(parent))?;
        }
        std::fs::hard_link(&golden.image_bin, rootfs.join(&golden.bin_in_rootfs)).with_context(
            || {
                format!(
                    "cannot hard-link {} into {}",
                    golden.image_bin.display(),
                    rootfs.display()
                )
            },
        )?;
        std::fs::create_dir_all(&identity)?;
        std::fs::write(identity.join("actor-id"), cid)?;
        std::fs::create_dir_all(&bundle)?;
        let mut config = golden.config.clone();
        config["root"]["path"] = json!(rootfs);
        let mounts = config["mounts"]
            .as_array_mut()
            .context("golden config.json has no mounts")?;
        let id_mount = mounts
            .iter_mut()
            .find(|m| m["destination"] == "/run/ate")
            .context("golden config.json has no /run/ate mount")?;
        id_mount["source"] = json!(identity);
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&config)?,
        )?;
        Ok(())
    }

    async fn raw_step(
        &mut self,
        golden: &Golden,
        n: usize,
        conc: usize,
    ) -> Result<(FanoutRow, Vec<RawCheck>)> {
        let base = self.dir.join("raw");
        let t_prep = Instant::now();
        let mut items = Vec::new();
        for _ in 0..n {
            self.seq += 1;
            // Fixed width: runsc resolves an ID given on its command line
            // as a prefix, so `…-2` would be ambiguous beside `…-21`.
            let cid = format!("{RAW_PREFIX}{}-{:04}", self.run_id, self.seq);
            let root = base.join(&cid);
            Self::prepare_raw_bundle(golden, &root, &cid)?;
            items.push((cid, root));
        }
        let prepare_ms = ms(t_prep.elapsed());

        let runsc = self.opts.runsc.clone();
        let snapshot = golden.snapshot.clone();
        let raw = self.raw.clone();
        let wall = Instant::now();
        let times = bounded(
            items.clone(),
            conc,
            move |(cid, root): (String, PathBuf)| {
                let runsc = runsc.clone();
                let snapshot = snapshot.clone();
                let raw = raw.clone();
                async move { raw_restore(&runsc, &snapshot, &raw, &cid, &root).await }
            },
        )
        .await?;
        let wall_ms = ms(wall.elapsed());

        // Memory before anything else runs in them.
        let procs = scan_procs();
        let mem: Vec<SandboxMem> = items
            .iter()
            .map(|(cid, root)| sandbox_mem(&procs, cid, &root.join("bundle")))
            .collect();
        let disk: Vec<(u64, u64)> = items
            .iter()
            .map(|(_, root)| disk_usage(root))
            .collect::<Result<_>>()?;

        // Correctness: each running; the first few answer over the relay.
        let runsc = self.opts.runsc.clone();
        let http_checks = self.opts.raw_http_checks;
        let checks = bounded(
            items.iter().cloned().enumerate().collect(),
            conc,
            move |(k, (cid, _)): (usize, (String, PathBuf))| {
                let runsc = runsc.clone();
                async move {
                    let state = runsc_state(&runsc, &cid).await?;
                    ensure!(
                        state == "running",
                        "raw container {cid} is {state:?} after restore"
                    );
                    let mut c = RawCheck {
                        cid: cid.clone(),
                        state,
                        whoami: None,
                        nonce: None,
                        identity_at_start: None,
                    };
                    if k < http_checks {
                        let a = relay_answers(&runsc, &cid).await?;
                        ensure!(
                            a.whoami == cid,
                            "raw container {cid} read {:?} from /run/ate/actor-id, not its own ID",
                            a.whoami
                        );
                        c.whoami = Some(a.whoami);
                        c.nonce = Some(a.nonce);
                        c.identity_at_start = Some(a.identity_at_start);
                    }
                    Ok(c)
                }
            },
        )
        .await?;

        let t_down = Instant::now();
        let ids: Vec<String> = items.iter().map(|(c, _)| c.clone()).collect();
        self.raw.remove_many(&ids).await?;
        // Until their processes are gone, so that they do not weigh on the
        // next measurement.
        let marks: Vec<String> = items
            .iter()
            .flat_map(|(cid, root)| [cid.clone(), root.join("bundle").display().to_string()])
            .collect();
        let t_gone = Instant::now();
        while t_gone.elapsed() < Duration::from_secs(20)
            && scan_procs().iter().any(|p| {
                p.args.iter().any(|a| {
                    marks
                        .iter()
                        .any(|m| a == m || a.ends_with(&format!("={m}")))
                })
            })
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let teardown_ms = ms(t_down.elapsed());
        for (_, root) in &items {
            let _ = std::fs::remove_dir_all(root);
        }
        let mode = if conc == 1 { "seq" } else { "con" };
        self.sample(format!("raw-{mode}"), &times);
        let row = FanoutRow {
            path: "raw".into(),
            prepare_ms: Some(prepare_ms),
            ..fan_row(n, conc, wall_ms, &times, &mem, &disk, teardown_ms)
        };
        Ok((row, checks))
    }

    // ---------------------------------------------------------------- agent

    async fn agent_step(
        &mut self,
        n: usize,
        conc: usize,
        label: &str,
    ) -> Result<(FanoutRow, Vec<ActorCheck>)> {
        let api = self.api().clone();
        let atespace = format!("{label}-n{n}");
        api.create_atespace(&atespace).await?;
        let ids: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
        for id in &ids {
            api.create_actor(&atespace, id, TEMPLATE).await?;
        }
        let a = atespace.clone();
        let wall = Instant::now();
        let views = bounded(ids.clone(), conc, move |id: String| {
            let api = api.clone();
            let a = a.clone();
            async move {
                let t0 = Instant::now();
                let v = api.resume(&a, &id).await?;
                Ok((ms(t0.elapsed()), v))
            }
        })
        .await?;
        let wall_ms = ms(wall.elapsed());
        let times: Vec<f64> = views.iter().map(|(t, _)| *t).collect();
        let num = |v: &ActorView, k: &str, x: Option<u64>| -> Result<f64> {
            x.map(|x| x as f64)
                .with_context(|| format!("no {k} in the resume answer {v:?}"))
        };
        let restore: Vec<f64> = views
            .iter()
            .map(|(_, v)| num(v, "last_restore_ms", v.last_restore_ms))
            .collect::<Result<_>>()?;
        let resume: Vec<f64> = views
            .iter()
            .map(|(_, v)| num(v, "last_resume_ms", v.last_resume_ms))
            .collect::<Result<_>>()?;
        let mut actors = Vec::new();
        for (id, (_, v)) in ids.iter().zip(&views) {
            actors.push((
                id.clone(),
                v.sandbox
                    .clone()
                    .with_context(|| format!("no sandbox in the actor view {v:?}"))?,
                v.dirs.root.clone(),
                v.dirs.bundle.clone(),
                v.last_restore_from
                    .with_context(|| format!("no last_restore_from in the actor view {v:?}"))?
                    .to_string(),
            ));
        }

        let procs = scan_procs();
        let mem: Vec<SandboxMem> = actors
            .iter()
            .map(|(_, cid, _, bundle, _)| sandbox_mem(&procs, cid, bundle))
            .collect();
        let disk: Vec<(u64, u64)> = actors
            .iter()
            .map(|(_, _, root, _, _)| disk_usage(root))
            .collect::<Result<_>>()?;

        // Own ID and provenance through the router (this also opens the
        // relay the router keeps per actor).
        let router = self.agent().router();
        let a = atespace.clone();
        let checks = bounded(actors.clone(), conc, move |(id, cid, _, _, from)| {
            let router = router.clone();
            let a = a.clone();
            async move {
                let ans = routed_answers(&router, &a, &id).await?;
                ensure!(
                    ans.whoami == id,
                    "actor {a}/{id} read {:?} through the router, not its own ID",
                    ans.whoami
                );
                Ok(ActorCheck {
                    atespace: a,
                    id,
                    cid,
                    restored_from: from,
                    whoami: ans.whoami,
                    nonce: ans.nonce,
                    identity_at_start: ans.identity_at_start,
                })
            }
        })
        .await?;
        let procs = scan_procs();
        let relay: Vec<f64> = actors
            .iter()
            .map(|(_, cid, _, _, _)| relay_rss_kib(&procs, cid) as f64)
            .collect();
        let relay_mean = relay.iter().sum::<f64>() / relay.len() as f64;

        let t_down = Instant::now();
        self.remove_actors(&atespace, &ids, conc).await?;
        let teardown_ms = ms(t_down.elapsed());
        let mode = if conc == 1 { "seq" } else { "con" };
        self.sample(format!("agent-{mode}"), &times);
        self.sample(format!("agent-{mode}-restore"), &restore);
        self.sample(format!("agent-{mode}-resume"), &resume);
        let row = FanoutRow {
            path: "agent".into(),
            agent_restore: Some(Stats::of(&restore)),
            agent_resume: Some(Stats::of(&resume)),
            relay_rss_kib_per_actor: (relay_mean > 0.0).then_some(relay_mean),
            ..fan_row(n, conc, wall_ms, &times, &mem, &disk, teardown_ms)
        };
        Ok((row, checks))
    }

    /// Suspends (where running) and deletes the actors, deletes the
    /// atespace, and waits until the agent lists no sandbox.
    async fn remove_actors(&self, atespace: &str, ids: &[String], conc: usize) -> Result<()> {
        let api = self.api().clone();
        let a = atespace.to_owned();
        bounded(ids.to_vec(), conc, move |id: String| {
            let api = api.clone();
            let a = a.clone();
            async move {
                let v = api.actor(&a, &id).await?;
                if v.state == ActorState::Running {
                    api.suspend(&a, &id).await?;
                }
                api.delete_actor(&a, &id).await?;
                Ok(())
            }
        })
        .await?;
        self.api().delete_atespace(atespace).await?;
        self.settle_sandboxes().await
    }

    // --------------------------------------------------------------- paired

    /// `paired_samples` rounds of one raw restore and one agent resume,
    /// back to back, alternating which goes first; everything stays
    /// running until the end (like a sequential fan-out of both at once).
    async fn paired(&mut self, golden: &Golden) -> Result<Paired> {
        let a = "paired";
        self.api().create_atespace(a).await?;
        let (mut raw_ms, mut api_ms, mut restore, mut resume) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut raws = Vec::new();
        let mut ids = Vec::new();
        for i in 0..self.opts.paired_samples {
            self.seq += 1;
            let cid = format!("{RAW_PREFIX}{}-{:04}", self.run_id, self.seq);
            let root = self.dir.join("raw").join(&cid);
            Self::prepare_raw_bundle(golden, &root, &cid)?;
            let id = format!("p{i}");
            let api = self.api();
            api.create_actor(a, &id, TEMPLATE).await?;
            for raw_turn in [i % 2 == 0, i % 2 != 0] {
                if raw_turn {
                    raw_ms.push(
                        raw_restore(&self.opts.runsc, &golden.snapshot, &self.raw, &cid, &root)
                            .await?,
                    );
                } else {
                    let t0 = Instant::now();
                    let v = api.resume(a, &id).await?;
                    api_ms.push(ms(t0.elapsed()));
                    let num = |k: &str, x: Option<u64>| {
                        x.map(|x| x as f64)
                            .with_context(|| format!("no {k} in the resume answer {v:?}"))
                    };
                    restore.push(num("last_restore_ms", v.last_restore_ms)?);
                    resume.push(num("last_resume_ms", v.last_resume_ms)?);
                }
            }
            raws.push((cid, root));
            ids.push(id);
        }
        // Both really run: the raw containers by their state, the actors
        // by their own ID through the router.
        for (cid, _) in &raws {
            let st = runsc_state(&self.opts.runsc, cid).await?;
            ensure!(st == "running", "raw container {cid} is {st:?}");
        }
        let router = self.agent().router();
        for id in &ids {
            let w: Whoami = router.get_json(a, id, "/whoami").await?;
            ensure!(w.file == *id, "actor {a}/{id} read {:?}", w.file);
        }
        let cids: Vec<String> = raws.iter().map(|(c, _)| c.clone()).collect();
        self.raw.remove_many(&cids).await?;
        for (_, root) in &raws {
            let _ = std::fs::remove_dir_all(root);
        }
        self.remove_actors(a, &ids, self.opts.concurrency).await?;
        let p = Paired {
            raw: Stats::of(&raw_ms),
            api_resume: Stats::of(&api_ms),
            agent_resume: Stats::of(&resume),
            agent_restore: Stats::of(&restore),
        };
        eprintln!(
            "bench: {} interleaved pairs: raw restore p50 {:.1} ms, agent API resume p50 {:.1} ms (its own resume {:.1}, restore {:.1})",
            raws.len(),
            p.raw.p50_ms,
            p.api_resume.p50_ms,
            p.agent_resume.p50_ms,
            p.agent_restore.p50_ms
        );
        Ok(p)
    }

    // ------------------------------------------------------------ on demand

    async fn on_demand(&mut self) -> Result<OnDemand> {
        let api = self.api().clone();
        let a = "ondemand";
        api.create_atespace(a).await?;
        let mut own = (Vec::new(), Vec::new());
        let mut fresh = (Vec::new(), Vec::new());
        let mut ids = Vec::new();
        for i in 0..self.opts.on_demand_samples {
            // Own snapshot: create, resume, suspend, then the first request.
            let id = format!("own-{i}");
            api.create_actor(a, &id, TEMPLATE).await?;
            let v = api.resume(a, &id).await?;
            let cid = v.sandbox.context("resume names no sandbox")?;
            api.suspend(a, &id).await?;
            api.wait_sandboxes_gone(&[cid], SETTLE_DEADLINE).await?;
            let (first, complete) = self.routed_first_request(a, &id).await?;
            let v = api.actor(a, &id).await?;
            ensure!(
                v.last_restore_from == Some(RestoreSource::Own),
                "on-demand resume of {a}/{id} did not restore its own snapshot: {v:?}"
            );
            own.0.push(first);
            own.1.push(complete);
            ids.push(id);

            // Fresh actor: its first request restores the golden.
            let id = format!("fresh-{i}");
            api.create_actor(a, &id, TEMPLATE).await?;
            let (first, complete) = self.routed_first_request(a, &id).await?;
            let v = api.actor(a, &id).await?;
            ensure!(
                v.last_restore_from == Some(RestoreSource::Golden),
                "on-demand resume of {a}/{id} did not restore the golden: {v:?}"
            );
            fresh.0.push(first);
            fresh.1.push(complete);
            ids.push(id);
        }
        self.remove_actors(a, &ids, self.opts.concurrency).await?;
        Ok(OnDemand {
            own_first_byte: Stats::of(&own.0),
            own_complete: Stats::of(&own.1),
            golden_first_byte: Stats::of(&fresh.0),
            golden_complete: Stats::of(&fresh.1),
        })
    }

    /// `GET /whoami` through the router on a fresh connection; (first
    /// response byte, complete response) in ms; the body must be the
    /// actor's own ID.
    async fn routed_first_request(&self, atespace: &str, id: &str) -> Result<(f64, f64)> {
        let host = actor_host(id, atespace);
        let req = format!("GET /whoami HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let mut s = tokio::net::TcpStream::connect(self.agent().inner().line().router).await?;
        s.set_nodelay(true)?;
        let t0 = Instant::now();
        s.write_all(req.as_bytes()).await?;
        let resp = tokio::time::timeout(OP_TIMEOUT, read_response(&mut s, t0))
            .await
            .with_context(|| {
                format!("no answer within {OP_TIMEOUT:?} to GET /whoami of {atespace}/{id}")
            })??;
        ensure!(
            resp.status == 200,
            "on-demand GET /whoami of {atespace}/{id} answered {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        );
        let w: Whoami = serde_json::from_slice(&resp.body)?;
        ensure!(
            w.file == id,
            "on-demand GET /whoami of {atespace}/{id} read {:?}",
            w.file
        );
        Ok((resp.first_byte_ms, resp.complete_ms))
    }

    // ---------------------------------------------------------------- warm

    async fn warm_whoami(&mut self) -> Result<(Stats, usize)> {
        let (a, id) = ("warm", "w0");
        let api = self.api();
        api.create_atespace(a).await?;
        api.create_actor(a, id, TEMPLATE).await?;
        api.resume(a, id).await?;
        let router = self.agent().router();
        let mut own = 0;
        let mut times = Vec::with_capacity(self.opts.whoami_requests);
        for k in 0..self.opts.whoami_warmup + self.opts.whoami_requests {
            let r = router.get(a, id, "/whoami").await?.ok()?;
            let w: Whoami = r.json()?;
            ensure!(
                w.file == id,
                "warm GET /whoami of {a}/{id} read {:?}",
                w.file
            );
            if k >= self.opts.whoami_warmup {
                own += 1;
                times.push(ms(r.elapsed));
            }
        }
        self.remove_actors(a, &[id.to_owned()], 1).await?;
        Ok((Stats::of(&times), own))
    }

    /// Agent over raw, from the per-restore samples of all N pooled.
    fn ratio(&self, p: &Paired) -> Result<Ratio> {
        let get = |k: &str| -> Result<Stats> {
            self.samples
                .get(k)
                .filter(|v| !v.is_empty())
                .map(|v| Stats::of(v))
                .with_context(|| format!("no {k} samples"))
        };
        let raw_seq = get("raw-seq")?;
        let api_seq = get("agent-seq")?;
        let agent_resume = get("agent-seq-resume")?;
        let agent_restore = get("agent-seq-restore")?;
        // With concurrency 1, or only N = 1, there is no concurrent run.
        let con = match (get("raw-con"), get("agent-con")) {
            (Ok(r), Ok(a)) => a.p50_ms / r.p50_ms,
            _ => api_seq.p50_ms / raw_seq.p50_ms,
        };
        Ok(Ratio {
            paired_api_resume: p.api_resume.p50_ms / p.raw.p50_ms,
            paired_agent_resume: p.agent_resume.p50_ms / p.raw.p50_ms,
            paired_agent_restore: p.agent_restore.p50_ms / p.raw.p50_ms,
            sequential_api_resume: api_seq.p50_ms / raw_seq.p50_ms,
            sequential_agent_resume: agent_resume.p50_ms / raw_seq.p50_ms,
            sequential_agent_restore: agent_restore.p50_ms / raw_seq.p50_ms,
            concurrent_api_resume: con,
            raw_sequential: raw_seq,
            agent_sequential: api_seq,
        })
    }

    fn sample(&mut self, key: String, v: &[f64]) {
        self.samples.entry(key).or_default().extend_from_slice(v);
    }
}

/// `runsc --network=none restore --detach --image-path SNAPSHOT --bundle
/// ROOT/bundle CID`, stdio to `ROOT/console.log`, the container registered
/// first; returns the restore's milliseconds.
async fn raw_restore(
    runsc: &Path,
    snapshot: &Path,
    raw: &RawSandboxes,
    cid: &str,
    root: &Path,
) -> Result<f64> {
    raw.register(cid)?;
    let console = root.join("console.log");
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&console)
    };
    let cmd = Cmd::new(runsc)
        .args(["--network=none", "restore", "--detach", "--image-path"])
        .arg(snapshot)
        .arg("--bundle")
        .arg(root.join("bundle"))
        .arg(cid)
        .timeout(OP_TIMEOUT)
        .stdout(Stdio::file(open()?))
        .stderr(Stdio::file(open()?));
    let t0 = Instant::now();
    cmd.run().await.with_context(|| {
        format!(
            "raw restore of {cid} failed; console:\n{}",
            std::fs::read_to_string(&console).unwrap_or_default()
        )
    })?;
    Ok(ms(t0.elapsed()))
}

/// A row from one step's samples.
fn fan_row(
    n: usize,
    conc: usize,
    wall_ms: f64,
    times: &[f64],
    mem: &[SandboxMem],
    disk: &[(u64, u64)],
    teardown_ms: f64,
) -> FanoutRow {
    let mean = |v: &mut dyn Iterator<Item = f64>| {
        let (s, k) = v.fold((0.0, 0usize), |(s, k), x| (s + x, k + 1));
        if k == 0 {
            0.0
        } else {
            s / k as f64
        }
    };
    let pss: Vec<f64> = mem
        .iter()
        .filter_map(|m| m.pss_kib)
        .map(|x| x as f64)
        .collect();
    FanoutRow {
        path: String::new(),
        n,
        concurrency: conc,
        wall_ms,
        restore: Stats::of(times),
        restore_samples_ms: times.to_vec(),
        agent_restore: None,
        agent_resume: None,
        actors_per_s: n as f64 / (wall_ms / 1000.0),
        rss_kib_per_sandbox: mean(&mut mem.iter().map(|m| m.rss_kib as f64)),
        rss_kib_max: mem.iter().map(|m| m.rss_kib as f64).fold(0.0, f64::max),
        pss_kib_per_sandbox: (pss.len() == mem.len() && !pss.is_empty())
            .then(|| pss.iter().sum::<f64>() / pss.len() as f64),
        processes_per_sandbox: mean(&mut mem.iter().map(|m| m.processes as f64)),
        relay_rss_kib_per_actor: None,
        disk_apparent_bytes: mean(&mut disk.iter().map(|d| d.0 as f64)),
        disk_unique_bytes: mean(&mut disk.iter().map(|d| d.1 as f64)),
        prepare_ms: None,
        teardown_ms,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("getrandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn utc_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    chrono::DateTime::from_timestamp_millis(now)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// Runs `f` on every item with at most `conc` in flight (FIFO), and
/// returns the results in item order; the first error wins and the rest
/// are aborted.
async fn bounded<I, R, F, Fut>(items: Vec<I>, conc: usize, f: F) -> Result<Vec<R>>
where
    I: Send + 'static,
    R: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    let sem = Arc::new(tokio::sync::Semaphore::new(conc.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let len = items.len();
    for (k, item) in items.into_iter().enumerate() {
        let sem = sem.clone();
        let fut = f(item);
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore stays open");
            (k, fut.await)
        });
    }
    let mut out: Vec<Option<R>> = (0..len).map(|_| None).collect();
    while let Some(j) = set.join_next().await {
        let (k, r) = j.context("a bench task panicked")?;
        out[k] = Some(r?);
    }
    Ok(out
        .into_iter()
        .map(|r| r.expect("every task answered"))
        .collect())
}

// ============================================================ raw sandboxes

/// The raw containers of a run: each registered (in memory and as a record
/// file) before runsc is asked to start it, unregistered only once runsc
/// deleted it. Whatever is still registered when this is dropped (a panic)
/// is removed then, by ID.
struct RawSandboxes {
    runsc: PathBuf,
    records: PathBuf,
    live: Mutex<BTreeSet<String>>,
    created: Mutex<usize>,
}

impl RawSandboxes {
    fn new(runsc: PathBuf, records: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&records)?;
        Ok(RawSandboxes {
            runsc,
            records,
            live: Mutex::new(BTreeSet::new()),
            created: Mutex::new(0),
        })
    }

    fn register(&self, cid: &str) -> Result<()> {
        std::fs::write(self.records.join(cid), b"")?;
        self.live.lock().unwrap().insert(cid.to_owned());
        *self.created.lock().unwrap() += 1;
        Ok(())
    }

    fn created(&self) -> usize {
        *self.created.lock().unwrap()
    }

    async fn remove(runsc: &Path, records: &Path, cid: &str) -> Result<()> {
        remove_container(runsc, cid).await?;
        let _ = std::fs::remove_file(records.join(cid));
        Ok(())
    }

    /// Removes these containers (16 at a time); tries every one, then
    /// reports those it could not remove.
    async fn remove_many(&self, ids: &[String]) -> Result<()> {
        let runsc = self.runsc.clone();
        let records = self.records.clone();
        let results = bounded(ids.to_vec(), 16, move |cid: String| {
            let runsc = runsc.clone();
            let records = records.clone();
            async move {
                let r = RawSandboxes::remove(&runsc, &records, &cid).await;
                Ok((cid, r))
            }
        })
        .await?;
        let mut failed = Vec::new();
        let mut live = self.live.lock().unwrap();
        for (cid, r) in results {
            match r {
                Ok(()) => {
                    live.remove(&cid);
                }
                Err(e) => failed.push(format!("{cid}: {e:#}")),
            }
        }
        ensure!(
            failed.is_empty(),
            "cannot remove raw containers:\n{}",
            failed.join("\n")
        );
        Ok(())
    }

    /// Removes every container still registered.
    async fn remove_all(&self) -> Result<()> {
        let ids: Vec<String> = self.live.lock().unwrap().iter().cloned().collect();
        if !ids.is_empty() {
            eprintln!("bench: removing {} raw container(s): {ids:?}", ids.len());
        }
        self.remove_many(&ids).await
    }
}

impl Drop for RawSandboxes {
    fn drop(&mut self) {
        let ids: Vec<String> = self.live.lock().unwrap().iter().cloned().collect();
        std::thread::scope(|s| {
            for cid in &ids {
                let runsc = &self.runsc;
                s.spawn(move || {
                    let _ = std::process::Command::new(runsc)
                        .args(["--network=none", "kill", cid, "KILL"])
                        .output();
                    match std::process::Command::new(runsc)
                        .args(["--network=none", "delete", "-force", cid])
                        .output()
                    {
                        Ok(o) if o.status.success() => {
                            eprintln!("bench: removed raw container {cid}")
                        }
                        Ok(o) => eprintln!(
                            "bench: CANNOT remove raw container {cid}: {}",
                            String::from_utf8_lossy(&o.stderr).trim()
                        ),
                        Err(e) => eprintln!("bench: CANNOT remove raw container {cid}: {e}"),
                    }
                });
            }
        });
    }
}

/// `runsc kill CID KILL` (fails for a stopped one; ignored), then `runsc
/// delete -force CID`, which must succeed unless runsc no longer lists it.
async fn remove_container(runsc: &Path, cid: &str) -> Result<()> {
    let short = Duration::from_secs(30);
    let _ = Cmd::new(runsc)
        .args(["--network=none", "kill", cid, "KILL"])
        .timeout(short)
        .output()
        .await;
    let del = Cmd::new(runsc)
        .args(["--network=none", "delete", "-force", cid])
        .timeout(short)
        .run()
        .await;
    match del {
        Ok(_) => Ok(()),
        Err(e) => {
            if runsc_list(runsc).await?.iter().any(|c| c == cid) {
                Err(e).with_context(|| format!("cannot delete raw container {cid}"))
            } else {
                Ok(())
            }
        }
    }
}

async fn runsc_list(runsc: &Path) -> Result<Vec<String>> {
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

async fn runsc_state(runsc: &Path, cid: &str) -> Result<String> {
    let out = Cmd::new(runsc)
        .args(["state", cid])
        .timeout(Duration::from_secs(20))
        .run()
        .await?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("runsc state {cid}: not JSON: {}", out.stdout_str()))?;
    Ok(v["status"].as_str().unwrap_or_default().to_owned())
}

/// Removes what a bench run killed before its cleanup left under
/// `work_root` (a run dir whose lock nobody holds): its raw containers by
/// their recorded IDs, the sandboxes its agent recorded (`ate-refagent
/// gc`), then the dir.
async fn sweep_stale_runs(work_root: &Path, runsc: &Path) {
    let Ok(entries) = std::fs::read_dir(work_root) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("run-") || !dir.is_dir() {
            continue;
        }
        let Ok(lock) = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("bench.lock"))
        else {
            continue;
        };
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // a live run
        }
        for rec in std::fs::read_dir(dir.join("raw-sandboxes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let cid = rec.file_name().to_string_lossy().into_owned();
            match remove_container(runsc, &cid).await {
                Ok(()) => eprintln!("bench: removed raw container {cid} left by {name}"),
                Err(e) => eprintln!("bench: cannot remove {cid} left by {name}: {e:#}"),
            }
        }
        let state = dir.join("state");
        let agent = dir.join("ate-refagent");
        if state.is_dir() && agent.exists() {
            let _ = Cmd::new(&agent)
                .arg("gc")
                .arg("--state-dir")
                .arg(&state)
                .arg("--runsc")
                .arg(runsc)
                .timeout(Duration::from_secs(120))
                .output()
                .await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("bench: removed stale run dir {}", dir.display());
    }
}

// ================================================================ agent

/// `ate-refagent serve` on a state dir of its own, started and stopped by
/// the agent API's client.
struct BenchAgent {
    agent: Option<Agent>,
}

impl BenchAgent {
    async fn start(bins: &StaticBins, dir: &Path, runsc: &Path) -> Result<BenchAgent> {
        // Our own link to the agent binary, for the stale-run sweep.
        let _ = std::fs::hard_link(&bins.agent, dir.join("ate-refagent"))
            .or_else(|_| std::fs::copy(&bins.agent, dir.join("ate-refagent")).map(drop));
        let opts = AgentOptions {
            agent_bin: bins.agent.clone(),
            state_dir: dir.join("state"),
            runsc: runsc.to_path_buf(),
            runsc_debug: false,
            fault: None,
            log: dir.join("agent.log"),
        };
        let agent = Agent::spawn(&opts, Duration::from_secs(30)).await?;
        let line = agent.line();
        ensure!(
            line.control.ip().is_loopback() && line.router.ip().is_loopback(),
            "the agent listens off loopback: {line:?}"
        );
        eprintln!(
            "bench: agent pid {} instance {} control {} router {} state {}",
            agent.pid(),
            line.instance,
            line.control,
            line.router,
            line.state_dir.display()
        );
        Ok(BenchAgent { agent: Some(agent) })
    }

    fn inner(&self) -> &Agent {
        self.agent.as_ref().expect("running")
    }

    fn api(&self) -> &AgentClient {
        self.inner().client()
    }

    fn instance(&self) -> &str {
        &self.inner().line().instance
    }

    fn state_dir(&self) -> &Path {
        &self.inner().line().state_dir
    }

    fn router(&self) -> RouterClient {
        RouterClient::new(self.inner().line().router)
    }

    /// SIGTERM (the agent removes every sandbox it started) and reap.
    async fn stop(mut self) -> Result<String> {
        let agent = self.agent.take().expect("running");
        let status = agent.stop(AGENT_TERM_GRACE).await?;
        Ok(status.to_string())
    }
}

impl Drop for BenchAgent {
    /// Not stopped by [`BenchAgent::stop`] (a panic): SIGTERM, so that it
    /// removes its sandboxes, and wait for it, rather than the SIGKILL that
    /// dropping the child would send.
    fn drop(&mut self) {
        let Some(agent) = self.agent.as_ref() else {
            return;
        };
        let pid = agent.pid();
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
        let t0 = Instant::now();
        while t0.elapsed() < AGENT_TERM_GRACE {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next().map(String::from));
            match state.as_deref() {
                Some(s) if s != "Z" => std::thread::sleep(Duration::from_millis(50)),
                _ => break,
            }
        }
    }
}

// ============================================================ probe answers

/// `/whoami` and `/snapshot` of an actor through the router.
async fn routed_answers(router: &RouterClient, atespace: &str, id: &str) -> Result<Answers> {
    let w: Whoami = router.get_json(atespace, id, "/whoami").await?;
    let s: Snapshot = router.get_json(atespace, id, "/snapshot").await?;
    Ok(Answers {
        whoami: w.file,
        nonce: s.nonce,
        identity_at_start: s.identity_at_start,
    })
}

/// `/whoami` and `/snapshot` of a raw container over one `runsc exec CID
/// /.ate/ate-refagent relay --port 80` (stdin/stdout piped, keep-alive).
async fn relay_answers(runsc: &Path, cid: &str) -> Result<Answers> {
    let mut child = Cmd::new(runsc)
        .args([
            "--network=none",
            "exec",
            cid,
            RELAY_IN_SANDBOX,
            "relay",
            "--port",
            "80",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("relay stdin")?;
    let mut stdout = child.stdout.take().context("relay stdout")?;
    let mut get = async |path: &str| -> Result<Vec<u8>> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {cid}\r\n\r\n");
        stdin.write_all(req.as_bytes()).await?;
        stdin.flush().await?;
        let r = tokio::time::timeout(OP_TIMEOUT, read_response(&mut stdout, Instant::now()))
            .await
            .with_context(|| format!("raw container {cid}: no answer to GET {path}"))??;
        ensure!(
            r.status == 200,
            "raw container {cid}: GET {path} answered {}",
            r.status
        );
        Ok(r.body)
    };
    let answers = async {
        let w: Whoami = serde_json::from_slice(&get("/whoami").await?)?;
        let s: Snapshot = serde_json::from_slice(&get("/snapshot").await?)?;
        Ok::<_, anyhow::Error>(Answers {
            whoami: w.file,
            nonce: s.nonce,
            identity_at_start: s.identity_at_start,
        })
    }
    .await;
    // Closing stdin ends the relay.
    drop(stdin);
    let _ = child.terminate(Duration::from_secs(5)).await;
    answers
}

/// An HTTP/1.1 response with a Content-Length, read off a stream.
struct HttpResp {
    status: u16,
    body: Vec<u8>,
    first_byte_ms: f64,
    complete_ms: f64,
}

/// Reads one response (headers, then Content-Length bytes); times are
/// measured from `t0`.
async fn read_response<R: AsyncRead + Unpin>(r: &mut R, t0: Instant) -> Result<HttpResp> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut first = None;
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let k = r.read(&mut chunk).await?;
        ensure!(
            k > 0,
            "connection closed before a complete header: {:?}",
            String::from_utf8_lossy(&buf)
        );
        first.get_or_insert_with(|| ms(t0.elapsed()));
        buf.extend_from_slice(&chunk[..k]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let len: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .with_context(|| format!("no Content-Length in {head:?}"))?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let k = r.read(&mut chunk).await?;
        ensure!(
            k > 0,
            "connection closed after {} of {len} body bytes",
            body.len()
        );
        body.extend_from_slice(&chunk[..k]);
    }
    body.truncate(len);
    Ok(HttpResp {
        status,
        body,
        first_byte_ms: first.unwrap_or(0.0),
        complete_ms: ms(t0.elapsed()),
    })
}

// ============================================================ memory, disk

struct ProcInfo {
    pid: u32,
    args: Vec<String>,
}

/// Every process with a command line.
fn scan_procs() -> Vec<ProcInfo> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (!args.is_empty()).then_some(ProcInfo { pid, args })
        })
        .collect()
}

fn status_kib(pid: u32, file: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Memory of one sandbox.
struct SandboxMem {
    rss_kib: u64,
    pss_kib: Option<u64>,
    processes: usize,
}

/// Whether a runsc process is an `exec` (a relay), not the sandbox.
fn is_exec(p: &ProcInfo) -> bool {
    p.args.iter().any(|a| a == "exec")
}

/// The sandbox's host processes: `runsc-sandbox` and `runsc-gofer` name
/// the container ID or its bundle (`--bundle=B` / `--bundle B`).
fn sandbox_mem(procs: &[ProcInfo], cid: &str, bundle: &Path) -> SandboxMem {
    let bundle = bundle.to_string_lossy();
    let flag = format!("--bundle={bundle}");
    let mine: Vec<&ProcInfo> = procs
        .iter()
        .filter(|p| !is_exec(p))
        .filter(|p| {
            p.args
                .iter()
                .any(|a| a == cid || a == bundle.as_ref() || *a == flag)
        })
        .collect();
    let rss = mine
        .iter()
        .filter_map(|p| status_kib(p.pid, "status", "VmRSS:"))
        .sum();
    let pss: Vec<u64> = mine
        .iter()
        .filter_map(|p| status_kib(p.pid, "smaps_rollup", "Pss:"))
        .collect();
    SandboxMem {
        rss_kib: rss,
        pss_kib: (pss.len() == mine.len() && !mine.is_empty()).then(|| pss.iter().sum()),
        processes: mine.len(),
    }
}

/// VmRSS of the host-side `runsc exec CID ...` relay processes.
fn relay_rss_kib(procs: &[ProcInfo], cid: &str) -> u64 {
    procs
        .iter()
        .filter(|p| is_exec(p) && p.args.iter().any(|a| a == cid))
        .filter_map(|p| status_kib(p.pid, "status", "VmRSS:"))
        .sum()
}

/// `(apparent, unique)` bytes under `root`: every file, symlink and
/// directory by its size; unique counts files only when they have one link
/// (not shared with the template), and every directory.
fn disk_usage(root: &Path) -> Result<(u64, u64)> {
    let mut apparent = 0;
    let mut unique = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p)
            .with_context(|| format!("cannot stat {}", p.display()))?;
        apparent += m.len();
        if m.is_dir() {
            unique += m.len();
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        } else if m.nlink() == 1 {
            unique += m.len();
        }
    }
    Ok((apparent, unique))
}

// ================================================================ machine

async fn machine(runsc: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let runsc = Cmd::new(runsc)
        .arg("--version")
        .timeout(Duration::from_secs(10))
        .run()
        .await
        .map(|o| {
            o.stdout_str()
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|e| format!("unknown ({e})"));
    Machine {
        cores: cores(),
        cpu,
        memory_kib,
        kernel,
        runsc,
    }
}

// ================================================================ targets

/// The targets, for this run.
fn targets(m: &Measured) -> Vec<Target> {
    let mut t = vec![Target {
        what: "agent restore / raw runsc restore, p50 vs p50 (interleaved pairs, API resume call)"
            .into(),
        value: m.ratio.paired_api_resume,
        limit: 1.10,
        met: m.ratio.paired_api_resume <= 1.10,
    }];
    let fan64 = m
        .fanout
        .iter()
        .filter(|r| r.path == "agent" && r.n == 64)
        .map(|r| r.wall_ms / 1000.0)
        .fold(f64::INFINITY, f64::min);
    if fan64.is_finite() {
        t.push(Target {
            what: "64 actors from one golden through the agent, wall s (best mode)".into(),
            value: fan64,
            limit: 15.0,
            met: fan64 < 15.0,
        });
    }
    t.push(Target {
        what: "warm /whoami through the router, p50 ms".into(),
        value: m.warm.p50_ms,
        limit: 20.0,
        met: m.warm.p50_ms < 20.0,
    });
    let unique = m
        .fanout
        .iter()
        .filter(|r| r.path == "agent")
        .map(|r| r.disk_unique_bytes)
        .fold(0.0, f64::max);
    t.push(Target {
        what: "per-actor unique disk bytes (agent), must stay below one rootfs copy".into(),
        value: unique,
        limit: m.golden.rootfs_bytes as f64,
        met: unique < m.golden.rootfs_bytes as f64,
    });
    t
}

// ================================================================ table

fn row_line(r: &FanoutRow) -> String {
    format!(
        "{} N={} conc={}: wall {:.2} s, restore p50 {:.1} ms p95 {:.1} ms max {:.1} ms, {:.1} actors/s, RSS {:.1} MiB/sandbox, disk {:.0}/{:.0} KiB",
        r.path,
        r.n,
        r.concurrency,
        r.wall_ms / 1000.0,
        r.restore.p50_ms,
        r.restore.p95_ms,
        r.restore.max_ms,
        r.actors_per_s,
        r.rss_kib_per_sandbox / 1024.0,
        r.disk_apparent_bytes / 1024.0,
        r.disk_unique_bytes / 1024.0
    )
}

/// The report as one Markdown table, with the machine above it and the
/// ratio and targets below.
pub fn render_table(r: &Report) -> String {
    let m = &r.machine;
    let mut out = format!(
        "ate-conformance bench, run {} on {}: {} cores ({}), {:.1} GiB, kernel {}, {}\n\
         golden: {} KiB snapshot, {} KiB rootfs (the probe binary); agent golden boot {} ms, checkpoint {} ms\n\n",
        r.run,
        r.date,
        m.cores,
        m.cpu,
        m.memory_kib as f64 / 1024.0 / 1024.0,
        m.kernel,
        m.runsc,
        r.golden.snapshot_bytes / 1024,
        r.golden.rootfs_bytes / 1024,
        r.golden.timings_ms.get("boot").copied().unwrap_or_default(),
        r.golden.timings_ms.get("checkpoint").copied().unwrap_or_default(),
    );
    let header = [
        "what",
        "N",
        "conc",
        "wall s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "actors/s",
        "RSS (PSS) MiB/sandbox",
        "disk KiB/actor (all/unique)",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    let f1 = |x: f64| format!("{x:.1}");
    for f in &r.fanout {
        let what = if f.path == "raw" {
            "raw `runsc restore`".to_owned()
        } else {
            let (a, b) = (
                f.agent_restore.as_ref().map_or(0.0, |s| s.p50_ms),
                f.agent_resume.as_ref().map_or(0.0, |s| s.p50_ms),
            );
            format!("agent resume (API; agent's own p50 restore {a:.0} / resume {b:.0} ms)")
        };
        rows.push(vec![
            what,
            f.n.to_string(),
            f.concurrency.to_string(),
            format!("{:.2}", f.wall_ms / 1000.0),
            f1(f.restore.p50_ms),
            f1(f.restore.p95_ms),
            "".into(),
            f1(f.restore.max_ms),
            f1(f.actors_per_s),
            match f.pss_kib_per_sandbox {
                Some(p) => format!("{:.1} ({:.1})", f.rss_kib_per_sandbox / 1024.0, p / 1024.0),
                None => f1(f.rss_kib_per_sandbox / 1024.0),
            },
            format!(
                "{:.0} / {:.0}",
                f.disk_apparent_bytes / 1024.0,
                f.disk_unique_bytes / 1024.0
            ),
        ]);
    }
    let lat = |what: &str, s: &Stats| -> Vec<String> {
        vec![
            what.to_owned(),
            s.n.to_string(),
            "1".into(),
            "".into(),
            f1(s.p50_ms),
            f1(s.p95_ms),
            f1(s.p99_ms),
            f1(s.max_ms),
            "".into(),
            "".into(),
            "".into(),
        ]
    };
    let p = &r.paired;
    rows.push(lat("interleaved pairs: raw `runsc restore`", &p.raw));
    rows.push(lat(
        &format!(
            "interleaved pairs: agent resume (API; own p50 restore {:.0} / resume {:.0} ms)",
            p.agent_restore.p50_ms, p.agent_resume.p50_ms
        ),
        &p.api_resume,
    ));
    let od = &r.on_demand;
    rows.push(lat(
        "router on demand, own snapshot: first byte of `/whoami`",
        &od.own_first_byte,
    ));
    rows.push(lat(
        "router on demand, own snapshot: complete",
        &od.own_complete,
    ));
    rows.push(lat(
        "router on demand, fresh actor (golden): first byte",
        &od.golden_first_byte,
    ));
    rows.push(lat(
        "router on demand, fresh actor (golden): complete",
        &od.golden_complete,
    ));
    rows.push(lat("warm `/whoami` through the router", &r.warm_whoami));

    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::from("|");
        for (k, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - c.chars().count();
            if k == 0 {
                s.push_str(&format!(" {c}{} |", " ".repeat(pad)));
            } else {
                s.push_str(&format!(" {}{c} |", " ".repeat(pad)));
            }
        }
        s + "\n"
    };
    out.push_str(&line(header.iter().map(|h| h.to_string()).collect()));
    out.push_str(&line(
        widths
            .iter()
            .enumerate()
            .map(|(k, w)| {
                if k == 0 {
                    "-".repeat(*w)
                } else {
                    format!("{}:", "-".repeat(w - 1))
                }
            })
            .collect(),
    ));
    for row in rows {
        out.push_str(&line(row));
    }
    let q = &r.ratio;
    out.push_str(&format!(
        "\nagent/raw restore, p50 vs p50: interleaved pairs {:.3} (agent's own resume {:.3}, its runsc restore alone {:.3}); \
         fan-out, all N pooled: sequential {:.3} (API resume {:.1} ms vs runsc restore {:.1} ms; own resume {:.3}, restore {:.3}), concurrent {:.3}\n",
        q.paired_api_resume,
        q.paired_agent_resume,
        q.paired_agent_restore,
        q.sequential_api_resume,
        q.agent_sequential.p50_ms,
        q.raw_sequential.p50_ms,
        q.sequential_agent_resume,
        q.sequential_agent_restore,
        q.concurrent_api_resume
    ));
    for t in &r.targets {
        out.push_str(&format!(
            "target {}: {:.3} (limit {:.2}) {}\n",
            t.what,
            t.value,
            t.limit,
            if t.met { "MET" } else { "MISSED" }
        ));
    }
    out
}
