//! The run: start the agent, deploy the probe template, then every step
//! (fan-out, interleaved pairs, on-demand, warm round-trips).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use ate_agent_api::client::AgentClient;
use ate_agent_api::{ActorState, ActorView, Phase, RestoreSource, TemplateSpec};
use ate_harness::cmd::Cmd;
use ate_harness::fixture::{static_bins, StaticBins};
use ate_harness::probe::Whoami;
use ate_harness::router::actor_host;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::agent::BenchAgent;
use crate::options::BenchOptions;
use crate::procfs::{disk_usage, machine, relay_rss_kib, sandbox_mem, scan_procs, SandboxMem};
use crate::raw::{
    raw_app_id, raw_pause_id, raw_restore, runsc_list, runsc_state, sweep_stale_runs, RawSandboxes,
};
use crate::relay::{read_response, relay_answers, routed_answers};
use crate::report::{
    render_table, row_line, targets, write_json, ActorCheck, Checks, Cleanup, FanoutRow,
    GoldenInfo, OnDemand, Paired, Ratio, RawCheck, Report,
};
use crate::stats::Stats;
use crate::{OP_TIMEOUT, RAW_PREFIX, READY_DEADLINE, SETTLE_DEADLINE, TEMPLATE};

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

pub(crate) async fn interrupted() -> &'static str {
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

pub(crate) struct Measured {
    instance: String,
    pub(crate) golden: GoldenInfo,
    pub(crate) fanout: Vec<FanoutRow>,
    pub(crate) on_demand: OnDemand,
    pub(crate) warm: Stats,
    paired: Paired,
    pub(crate) ratio: Ratio,
    checks: Checks,
}

pub(crate) struct Ctx {
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
pub(crate) struct Golden {
    id: String,
    snapshot: PathBuf,
    /// The golden app container's `config.json`.
    config: Value,
    /// The golden pause container's `config.json`.
    pause_config: Value,
    /// The pause program the agent lays into every pause rootfs.
    pause_bin: PathBuf,
    image_bin: PathBuf,
    /// The image binary's path inside the rootfs (`args[0]` without `/`).
    bin_in_rootfs: String,
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
        let read_config = |bundle: &Path| -> Result<Value> {
            let path = bundle.join("config.json");
            serde_json::from_slice(
                &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
            )
            .with_context(|| format!("{} is not JSON", path.display()))
        };
        let config = read_config(&paths.bundle_dir)?;
        let pause_config = read_config(&paths.pause_bundle_dir)?;
        let pause_bin = paths.pause_bin;
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
                pause_config,
                pause_bin,
                image_bin,
                bin_in_rootfs: args0.trim_start_matches('/').to_owned(),
            },
            info,
        ))
    }

    // ------------------------------------------------------------------ raw

    /// Prepares bare bundles for the sandbox of app container `cid` under
    /// `root` the way the agent prepares an actor's: the pause container's
    /// own rootfs (the pause program hard-linked) and the golden's pause
    /// config.json re-pointed, in `root/pause/`; the app rootfs (binary
    /// hard-linked, mount points), identity dir holding `cid`, the golden's
    /// config.json re-pointed and wired to the raw pause container.
    fn prepare_raw_bundle(golden: &Golden, root: &Path, cid: &str) -> Result<()> {
        let pause_rootfs = root.join("pause").join("rootfs");
        let pause_bundle = root.join("pause").join("bundle");
        for d in ["proc", "dev", "sys"] {
            std::fs::create_dir_all(pause_rootfs.join(d))?;
        }
        std::fs::hard_link(&golden.pause_bin, pause_rootfs.join("pause")).with_context(|| {
            format!(
                "cannot hard-link {} into {}",
                golden.pause_bin.display(),
                pause_rootfs.display()
            )
        })?;
        std::fs::create_dir_all(&pause_bundle)?;
        let mut pause_config = golden.pause_config.clone();
        pause_config["root"]["path"] = json!(pause_rootfs);
        std::fs::write(
            pause_bundle.join("config.json"),
            serde_json::to_vec_pretty(&pause_config)?,
        )?;

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
        config["annotations"]["io.kubernetes.cri.sandbox-id"] = json!(raw_pause_id(cid));
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
            let cid = raw_app_id(&self.run_id, self.seq);
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
            .map(|(cid, root)| {
                sandbox_mem(
                    &procs,
                    &[cid, &raw_pause_id(cid)],
                    &[&root.join("bundle"), &root.join("pause").join("bundle")],
                )
            })
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
        // Each sandbox's processes: those of its pause and app containers.
        let mem: Vec<SandboxMem> = views
            .iter()
            .map(|(_, v)| {
                let ids: Vec<&str> = v.containers.iter().map(|c| c.id.as_str()).collect();
                let bundles: Vec<&Path> = v.containers.iter().map(|c| c.bundle.as_path()).collect();
                sandbox_mem(&procs, &ids, &bundles)
            })
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
            let cid = raw_app_id(&self.run_id, self.seq);
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
        let mut after = (Vec::new(), Vec::new());
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

            // Just resumed through the API: the first routed request right
            // after the resume answered (the restore is done; what is left
            // is the path into the sandbox).
            let id = format!("resumed-{i}");
            api.create_actor(a, &id, TEMPLATE).await?;
            api.resume(a, &id).await?;
            let (first, complete) = self.routed_first_request(a, &id).await?;
            after.0.push(first);
            after.1.push(complete);
            ids.push(id);
        }
        self.remove_actors(a, &ids, self.opts.concurrency).await?;
        Ok(OnDemand {
            own_first_byte: Stats::of(&own.0),
            own_complete: Stats::of(&own.1),
            golden_first_byte: Stats::of(&fresh.0),
            golden_complete: Stats::of(&fresh.1),
            after_resume_first_byte: Stats::of(&after.0),
            after_resume_complete: Stats::of(&after.1),
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

/// A row from one step's samples.
pub(crate) fn fan_row(
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

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("getrandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn utc_now() -> String {
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
pub(crate) async fn bounded<I, R, F, Fut>(items: Vec<I>, conc: usize, f: F) -> Result<Vec<R>>
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
