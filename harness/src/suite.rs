//! A thin layer over libtest-mimic for suites.
//!
//! A suite declares trials (name, contract statements covered, async body
//! taking a [`Ctx`]); [`Suite::main`] takes our options out of the command
//! line ([`crate::options`]), runs the trials with libtest-mimic, tears the
//! backend down and writes the reports ([`crate::report`]).
//!
//! **Invariants.** `--list` starts nothing. The backend is started lazily
//! by the first trial that runs, once, and torn down after the last. A
//! missing prerequisite (not root, no runsc) makes every trial *skipped*
//! with the reason — never passed; with `--fail-on-skip` (default under
//! `CI=true`) a skip fails the run. A backend that is there but breaks
//! fails every trial with the reason. Each trial's cleanups run
//! last-in-first-out on pass, fail and panic (`--keep` leaves a failed
//! trial's resources instead); artifacts of a failed trial are collected
//! first, under their own deadline, and never mask the failure.
//! SIGINT/SIGTERM tear the backend down (even mid-setup), write the report
//! and exit 130.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use libtest_mimic::{Arguments, Failed, Trial};
use tracing::{error, info, warn};

use crate::backend::kind::{KindBackend, KindOptions};
use crate::backend::local::{LocalBackend, LocalOptions};
use crate::backend::{ActorRef, Backend, Golden};
use crate::options::{self, Options};
use crate::report::{self, PhaseTime, SuiteReport, TrialRecord, Verdict};
use crate::router::{Recorder, RouterClient};

type BoxFut = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
type Body = Arc<dyn Fn(Ctx) -> BoxFut + Send + Sync>;

struct TrialDef {
    name: &'static str,
    covers: &'static [&'static str],
    body: Body,
}

/// A suite: a named list of trials.
pub struct Suite {
    name: &'static str,
    trials: Vec<TrialDef>,
}

/// The workspace root (where `target/` lives).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness lives in the workspace")
        .to_path_buf()
}

/// Returned (as an error) by a trial that cannot run here: recorded as
/// *skipped* with the reason, never as passed.
#[derive(Debug, thiserror::Error)]
#[error("skipped: {0}")]
pub struct Skip(pub String);

/// Why the backend is not available to trials.
#[derive(Debug, Clone)]
enum Unavailable {
    /// A prerequisite is missing here: trials are skipped.
    Prerequisite(String),
    /// The backend is there but broke: trials fail.
    Broken(String),
}

/// What every trial of one suite run shares.
struct Shared {
    suite: &'static str,
    opts: Options,
    setup: tokio::sync::OnceCell<Result<Setup, Unavailable>>,
    /// The backend as soon as it started (before the golden is ready), so
    /// an interrupt can tear it down mid-setup.
    started: Mutex<Option<Arc<dyn Backend>>>,
    records: Mutex<Vec<TrialRecord>>,
    /// Resources failed trials left on purpose (`--keep`).
    kept_actors: Mutex<Vec<String>>,
    /// Set by the signal handler; from then on it owns teardown and exit.
    interrupted: AtomicBool,
    started_at: SystemTime,
    wall: Instant,
}

#[derive(Clone)]
struct Setup {
    backend: Arc<dyn Backend>,
    golden: Golden,
    atespace: String,
}

/// A cleanup registered by a trial.
type Cleanup = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// What a trial body gets.
#[derive(Clone)]
pub struct Ctx {
    setup: Setup,
    run_id: String,
    trial: &'static str,
    started: Instant,
    phases: Arc<Mutex<Vec<PhaseTime>>>,
    log: Arc<Mutex<String>>,
    cleanups: Arc<Mutex<Vec<(String, Cleanup)>>>,
    actors: Arc<Mutex<Vec<ActorRef>>>,
    exchanges: Recorder,
}

impl Ctx {
    /// The backend under test.
    pub fn backend(&self) -> &dyn Backend {
        self.setup.backend.as_ref()
    }

    /// The probe template's golden snapshot.
    pub fn golden(&self) -> &Golden {
        &self.setup.golden
    }

    /// The atespace this run's actors live in.
    pub fn atespace(&self) -> &str {
        &self.setup.atespace
    }

    /// A router client; its exchanges are kept for the trial's artifacts.
    pub fn router(&self) -> RouterClient {
        self.setup
            .backend
            .router()
            .with_recorder(self.exchanges.clone())
    }

    /// `<base>-<run id>`: a name no other run uses.
    pub fn unique(&self, base: &str) -> String {
        format!("{base}-{}", self.run_id)
    }

    /// Adds a line to the trial's log (JUnit system-out).
    pub fn note(&self, line: impl AsRef<str>) {
        let t = self.started.elapsed().as_secs_f64() * 1000.0;
        self.log
            .lock()
            .unwrap()
            .push_str(&format!("[{t:>9.1} ms] {}\n", line.as_ref()));
    }

    /// Runs `fut` as a named phase: timed, logged, kept for the report.
    pub async fn phase<T>(&self, name: impl Into<String>, fut: impl Future<Output = T>) -> T {
        let name = name.into();
        let start = Instant::now();
        let out = fut.await;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        info!(trial = self.trial, phase = %name, ms = format!("{ms:.1}"), "phase done");
        self.note(format!("{name}: {ms:.1} ms"));
        self.phases.lock().unwrap().push(PhaseTime { name, ms });
        out
    }

    /// Registers a cleanup; cleanups run last-in-first-out when the trial
    /// ends, however it ends (unless `--keep` keeps a failed trial's).
    pub fn defer(
        &self,
        what: impl Into<String>,
        f: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.cleanups
            .lock()
            .unwrap()
            .push((what.into(), Box::pin(f)));
    }

    /// A [`Skip`] error: return it to mark the trial skipped with `reason`.
    pub fn skip(&self, reason: impl Into<String>) -> anyhow::Error {
        Skip(reason.into()).into()
    }

    /// Creates an actor of the probe template named `<base>-<run>` and
    /// registers its removal (suspend if running, then delete).
    pub async fn new_actor(&self, base: &str) -> anyhow::Result<String> {
        let id = self.unique(base);
        let template = self.golden().template.clone();
        self.phase(
            format!("create {id}"),
            self.backend().create_actor(self.atespace(), &id, &template),
        )
        .await?;
        self.actors.lock().unwrap().push(ActorRef {
            atespace: self.atespace().to_owned(),
            id: id.clone(),
        });
        let backend = self.setup.backend.clone();
        let (a, i) = (self.atespace().to_owned(), id.clone());
        self.defer(format!("remove actor {a}/{i}"), async move {
            let info = backend.get_actor(&a, &i).await?;
            if info.state != "SUSPENDED" {
                backend.suspend(&a, &i).await?;
            }
            backend.delete_actor(&a, &i).await
        });
        Ok(id)
    }

    /// `GET path` on the probe of actor `id`, parsed as JSON. An endpoint
    /// the probe does not have (404 on anything but the upstream `/whoami`
    /// and `/healthz`) skips the trial with that reason: another probe may
    /// stand in for ours (DESIGN.md "The probe is replaceable").
    pub async fn probe_json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        id: &str,
        path: &str,
    ) -> anyhow::Result<T> {
        let host = crate::router::actor_host(id, self.atespace());
        let resp = self
            .router()
            .send_with_host(method.clone(), Some(&host), path)
            .await?;
        if resp.status == 404 && !matches!(path, "/whoami" | "/healthz") {
            let body = resp.body_text();
            // The router's own 404 (unknown actor) is a failure, not a gap
            // in the probe.
            if !body.contains("\"kind\":\"not-found\"") {
                return Err(self.skip(format!(
                    "the probe has no {method} {path} endpoint (404), which this trial needs"
                )));
            }
        }
        resp.ok()?.json()
    }
}

impl Suite {
    /// A new, empty suite.
    pub fn new(name: &'static str) -> Self {
        Suite {
            name,
            trials: Vec::new(),
        }
    }

    /// Adds a trial covering contract statements `covers` (e.g. `["ID-3"]`).
    pub fn trial<F, Fut>(
        mut self,
        name: &'static str,
        covers: &'static [&'static str],
        f: F,
    ) -> Self
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.trials.push(TrialDef {
            name,
            covers,
            body: Arc::new(move |ctx| Box::pin(f(ctx))),
        });
        self
    }

    /// Runs the suite as a test binary's `main`.
    pub fn main(self) -> std::process::ExitCode {
        crate::init_tracing();
        let parsed = options::parse(
            std::env::args().collect(),
            |k| std::env::var(k).ok(),
            workspace_root().join("target/ate-report"),
        );
        let (opts, rest) = match parsed {
            Ok(x) => x,
            Err(e) => {
                eprintln!("error: {e:#}\n\n{}", options::usage());
                return std::process::ExitCode::from(2);
            }
        };
        let args = Arguments::from_iter(rest);
        if args.list {
            // Starts nothing: names only.
            let trials = self
                .trials
                .iter()
                .map(|t| Trial::test(t.name, || Ok(())))
                .collect();
            return libtest_mimic::run(&args, trials).exit_code();
        }

        if opts.dry_run {
            return dry_run(self.name, &self.trials, &opts);
        }
        let missing = prerequisites(&opts);
        let rt = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime"),
        );
        let shared = Arc::new(Shared {
            suite: self.name,
            opts,
            setup: Default::default(),
            started: Mutex::new(None),
            records: Mutex::new(Vec::new()),
            kept_actors: Mutex::new(Vec::new()),
            interrupted: AtomicBool::new(false),
            started_at: SystemTime::now(),
            wall: Instant::now(),
        });
        if let Some(reason) = &missing {
            warn!("prerequisite missing, every trial is skipped: {reason}");
            let _ = shared
                .setup
                .set(Err(Unavailable::Prerequisite(reason.clone())));
        }
        rt.spawn(interrupt_handler(shared.clone()));

        let trials = self
            .trials
            .into_iter()
            .map(|def| {
                let (shared2, rt2) = (shared.clone(), rt.clone());
                let name = def.name;
                let covers = def.covers;
                let trial = Trial::test(name, move || rt2.block_on(run_trial(shared2, def)));
                match &missing {
                    // Shown as "ignored" by libtest, recorded as skipped
                    // with the reason; unless --include-ignored runs it
                    // anyway, which then records the same skip.
                    Some(reason) if !args.include_ignored => {
                        shared.records.lock().unwrap().push(TrialRecord {
                            suite: shared.suite.to_owned(),
                            name: name.to_owned(),
                            covers: covers.iter().map(|s| s.to_string()).collect(),
                            verdict: Verdict::Skip,
                            duration_ms: 0.0,
                            message: Some(format!("prerequisite missing: {reason}")),
                            log: String::new(),
                            phases: vec![],
                            artifacts: vec![],
                        });
                        trial.with_ignored_flag(true)
                    }
                    _ => trial,
                }
            })
            .collect::<Vec<_>>();
        let conclusion = libtest_mimic::run(&args, trials);
        if shared.interrupted.load(Ordering::SeqCst) {
            // The signal handler tears down, reports and exits 130.
            loop {
                std::thread::park();
            }
        }
        let (teardown_error, kept) = rt.block_on(finish_backend(&shared));
        let rep = suite_report(
            &shared,
            conclusion.num_filtered_out,
            teardown_error.clone(),
            None,
            kept,
        );
        let ok = write_and_print(&shared, &rep);
        let skipped = rep
            .trials
            .iter()
            .filter(|t| t.verdict == Verdict::Skip)
            .count();
        if shared.opts.fail_on_skip && skipped > 0 {
            eprintln!("error: {skipped} trial(s) skipped, and skips fail this run (--fail-on-skip, or CI=true)");
            return std::process::ExitCode::FAILURE;
        }
        if !ok || teardown_error.is_some() || rep.trials.iter().any(|t| t.verdict == Verdict::Fail)
        {
            return std::process::ExitCode::FAILURE;
        }
        conclusion.exit_code()
    }
}

/// Checks what the backend needs before anything starts; `Some(reason)`
/// when something is missing here.
fn prerequisites(opts: &Options) -> Option<String> {
    if opts.backend != "local" {
        // The kind backend checks its own prerequisites in its preflight,
        // and a failed check fails every trial with the reason: a user who
        // asked for a cluster gets no silent skip.
        return None;
    }
    if !rustix::process::geteuid().is_root() {
        return Some(
            "the local backend runs gVisor sandboxes and needs root; run the suite as root".into(),
        );
    }
    if which::which(&opts.runsc).is_err() {
        return Some(format!(
            "runsc not found ({}); install it with: apt-get install -y runsc",
            opts.runsc.display()
        ));
    }
    let prebuilt = std::env::var_os(crate::fixture::AGENT_BIN_ENV).is_some()
        && (opts.probe_bin.is_some() || std::env::var_os(crate::fixture::PROBE_BIN_ENV).is_some());
    if !prebuilt
        && which::which(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).is_err()
    {
        return Some("cargo not found, and ATE_AGENT_BIN/ATE_PROBE_BIN are not both set".into());
    }
    None
}

async fn setup(shared: &Shared) -> Result<Setup, Unavailable> {
    let opts = &shared.opts;
    let broken = |e: anyhow::Error| {
        Unavailable::Broken(format!(
            "backend {} could not be set up: {}",
            opts.backend,
            chain(&e)
        ))
    };
    let root = workspace_root();
    let backend: Arc<dyn Backend> = if opts.backend == "kind" {
        // Registered before it makes anything, so an interrupt during a
        // cluster creation still removes that cluster.
        let kind = Arc::new(KindBackend::new(kind_options(opts)));
        *shared.started.lock().unwrap() = Some(kind.clone());
        kind.bring_up().await.map_err(broken)?;
        kind
    } else {
        Arc::new(local_backend(opts, &root).await.map_err(broken)?)
    };
    *shared.started.lock().unwrap() = Some(backend.clone());
    let golden = backend
        .deploy_probe(opts.golden_timeout)
        .await
        .map_err(|e| {
            broken(e.context("the probe template's golden snapshot did not become ready"))
        })?;
    info!(template = %golden.template, golden = %golden.golden_actor_id, ms = golden.ready_after.as_millis() as u64, "golden ready");
    let atespace = format!("conf-{}", opts.run_id);
    backend.create_atespace(&atespace).await.map_err(broken)?;
    Ok(Setup {
        backend,
        golden,
        atespace,
    })
}

async fn local_backend(opts: &Options, root: &std::path::Path) -> anyhow::Result<LocalBackend> {
    LocalBackend::start(LocalOptions {
        run_id: opts.run_id.clone(),
        state_root: root.join("target/ate-state"),
        log_dir: opts.report_dir.join("logs"),
        probe_bin: opts.probe_bin.clone(),
        runsc: opts.runsc.clone(),
        fault: opts.agent_fault.clone(),
        runsc_debug: true,
        start_timeout: Duration::from_secs(30),
    })
    .await
}

/// Where kind runs keep their records (what each made, for `gc`).
pub const KIND_STATE_DIR: &str = "target/ate-state/kind";

/// The kind backend's options from ours.
pub fn kind_options(opts: &Options) -> KindOptions {
    KindOptions {
        run_id: opts.run_id.clone(),
        cluster: opts.cluster.clone(),
        create_cluster: opts.create_cluster,
        context: opts.context.clone(),
        kubeconfig: opts.kubeconfig.clone(),
        substrate_root: opts.substrate_root.clone(),
        bucket_name: opts.bucket_name.clone(),
        ko_docker_repo: opts.ko_docker_repo.clone(),
        probe_bin: opts.probe_bin.clone(),
        fixtures_dir: workspace_root().join("fixtures"),
        work_dir: opts.report_dir.join("kind"),
        search_path: None,
        command_timeout: Duration::from_secs(120),
        preflight_deadline: Duration::from_secs(30),
        dry_run: opts.dry_run,
        state_dir: Some(workspace_root().join(KIND_STATE_DIR)),
    }
}

/// `--dry-run`: the kind backend's whole plan for this suite, printed in
/// order; nothing is run, no API is called.
fn dry_run(suite: &str, trials: &[TrialDef], opts: &Options) -> std::process::ExitCode {
    use crate::backend::kind::plan::Step;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let planned = rt.block_on(async {
        let backend = KindBackend::start(kind_options(opts)).await?;
        let golden = backend.deploy_probe(opts.golden_timeout).await?;
        let atespace = format!("conf-{}", opts.run_id);
        backend.create_atespace(&atespace).await?;
        let actor = format!("<actor>-{}", opts.run_id);
        backend.plan().push(Step::local(format!(
            "each trial, for each actor it uses (named <base>-{}), makes these steps:",
            opts.run_id
        )));
        backend
            .create_actor(&atespace, &actor, &golden.template)
            .await?;
        backend.resume(&atespace, &actor).await?;
        backend.plan().push(Step::local(format!(
            "GET /whoami (and the trial's other requests) through the router forward with Host: {}",
            crate::router::actor_host(&actor, &atespace)
        )));
        backend.suspend(&atespace, &actor).await?;
        backend.delete_actor(&atespace, &actor).await?;
        backend.plan().push(Step::local("after the last trial:"));
        backend.delete_atespace(&atespace).await?;
        backend.teardown().await?;
        Ok::<_, anyhow::Error>(backend.plan().clone())
    });
    match planned {
        Ok(plan) => {
            println!(
                "dry run of suite {suite} on backend kind (run {}): nothing below was run, no API was called\n",
                opts.run_id
            );
            println!("trials ({}):", trials.len());
            for t in trials {
                println!("  {} [{}]", t.name, t.covers.join(", "));
            }
            println!("\nplan, in order:");
            print!("{plan}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: the dry run could not be planned: {}", chain(&e));
            std::process::ExitCode::from(2)
        }
    }
}

fn chain(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for c in e.chain().skip(1) {
        s.push_str("\ncaused by: ");
        s.push_str(&c.to_string());
    }
    s
}

/// `gate::own_identity` → `gate__own_identity` (a directory name).
fn dir_name(trial: &str) -> String {
    trial
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn run_trial(shared: Arc<Shared>, def: TrialDef) -> Result<(), Failed> {
    let start = Instant::now();
    let setup = shared.setup.get_or_init(|| setup(&shared)).await.clone();
    let mut record = TrialRecord {
        suite: shared.suite.to_owned(),
        name: def.name.to_owned(),
        covers: def.covers.iter().map(|s| s.to_string()).collect(),
        verdict: Verdict::Pass,
        duration_ms: 0.0,
        message: None,
        log: String::new(),
        phases: vec![],
        artifacts: vec![],
    };
    match setup {
        Err(Unavailable::Prerequisite(reason)) => {
            record.verdict = Verdict::Skip;
            record.message = Some(format!("prerequisite missing: {reason}"));
        }
        Err(Unavailable::Broken(msg)) => {
            record.verdict = Verdict::Fail;
            record.message = Some(msg);
        }
        Ok(setup) => run_body(&shared, &def, setup, &mut record).await,
    }
    record.duration_ms = start.elapsed().as_secs_f64() * 1000.0;
    let outcome = match (record.verdict, &record.message) {
        (Verdict::Pass, _) => Ok(()),
        (Verdict::Fail, m) => Err(Failed::from(m.clone().unwrap_or_default())),
        (Verdict::Skip, m) => {
            let reason = m.clone().unwrap_or_default();
            eprintln!("SKIPPED {}: {reason}", def.name);
            if shared.opts.fail_on_skip {
                Err(Failed::from(format!(
                    "{reason}\n(skipped, which fails this run: --fail-on-skip, or CI=true)"
                )))
            } else {
                Ok(())
            }
        }
    };
    shared.records.lock().unwrap().push(record);
    outcome
}

async fn run_body(shared: &Shared, def: &TrialDef, setup: Setup, record: &mut TrialRecord) {
    let ctx = Ctx {
        setup: setup.clone(),
        run_id: shared.opts.run_id.clone(),
        trial: def.name,
        started: Instant::now(),
        phases: Default::default(),
        log: Default::default(),
        cleanups: Default::default(),
        actors: Default::default(),
        exchanges: Default::default(),
    };
    // Spawned, so a panic in the body is caught as a JoinError.
    let result = tokio::spawn((def.body)(ctx.clone())).await;
    let (verdict, mut message) = match result {
        Ok(Ok(())) => (Verdict::Pass, None),
        Ok(Err(e)) => match e.downcast_ref::<Skip>() {
            Some(Skip(reason)) => (Verdict::Skip, Some(reason.clone())),
            None => (Verdict::Fail, Some(chain(&e))),
        },
        Err(j) if j.is_panic() => (
            Verdict::Fail,
            Some(format!("panicked: {}", panic_text(j.into_panic()))),
        ),
        Err(j) => (Verdict::Fail, Some(format!("trial task ended: {j}"))),
    };
    if verdict == Verdict::Fail {
        // Before cleanups remove what is to be looked at; bounded, and a
        // collection problem is a note, never the verdict.
        let rel = PathBuf::from("artifacts")
            .join(shared.suite)
            .join(dir_name(def.name));
        let dir = shared.opts.report_dir.join(&rel);
        let actors = ctx.actors.lock().unwrap().clone();
        let exchanges = ctx.exchanges.lock().unwrap().clone();
        let collected = tokio::time::timeout(Duration::from_secs(30), async {
            let mut files = setup.backend.collect_artifacts(&actors, &dir).await?;
            let f = dir.join("probe-responses.json");
            std::fs::write(&f, serde_json::to_vec_pretty(&exchanges)?)?;
            files.push(f);
            Ok::<_, anyhow::Error>(files)
        })
        .await;
        match collected {
            Ok(Ok(files)) => {
                record.artifacts = files
                    .iter()
                    .map(|f| {
                        f.strip_prefix(&shared.opts.report_dir)
                            .unwrap_or(f)
                            .display()
                            .to_string()
                    })
                    .collect()
            }
            Ok(Err(e)) => ctx.note(format!("artifact collection failed: {e:#}")),
            Err(_) => ctx.note("artifact collection did not finish within 30 s"),
        }
    }
    let cleanups = std::mem::take(&mut *ctx.cleanups.lock().unwrap());
    if verdict == Verdict::Fail && shared.opts.keep {
        let mut kept = shared.kept_actors.lock().unwrap();
        for (what, _) in &cleanups {
            ctx.note(format!("kept (--keep), not run: {what}"));
            kept.push(format!("{}: not run: {what}", def.name));
        }
    } else {
        for (what, c) in cleanups.into_iter().rev() {
            if let Err(e) = c.await {
                let m = format!("cleanup failed: {what}: {}", chain(&e));
                error!(trial = def.name, "{m}");
                ctx.note(&m);
                message = Some(match message {
                    Some(prev) => format!("{prev}\n{m}"),
                    None => m,
                });
            }
        }
    }
    // A failed cleanup fails a trial that otherwise passed or skipped.
    record.verdict = match (verdict, &message) {
        (Verdict::Pass, Some(_)) => Verdict::Fail,
        (v, _) => v,
    };
    record.message = message;
    record.phases = std::mem::take(&mut *ctx.phases.lock().unwrap());
    record.log = std::mem::take(&mut *ctx.log.lock().unwrap());
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

/// Tears the backend down, or keeps it (`--keep` with kept trials).
/// Returns a teardown error and the kept resources.
async fn finish_backend(shared: &Shared) -> (Option<String>, Vec<String>) {
    let backend = shared.started.lock().unwrap().clone();
    let Some(backend) = backend else {
        return (None, vec![]);
    };
    let kept_actors = shared.kept_actors.lock().unwrap().clone();
    if !kept_actors.is_empty() {
        return match backend.keep().await {
            Ok((mut kept, how)) => {
                kept.extend(kept_actors);
                eprintln!("\n--keep: left for inspection:");
                for k in &kept {
                    eprintln!("  {k}");
                }
                eprintln!("remove them with: {how}");
                kept.push(format!("remove with: {how}"));
                (None, kept)
            }
            Err(e) => (Some(format!("--keep failed: {e:#}")), vec![]),
        };
    }
    if let Some(Ok(setup)) = shared.setup.get() {
        if let Err(e) = backend.delete_atespace(&setup.atespace).await {
            warn!("cannot delete atespace {}: {e:#}", setup.atespace);
        }
    }
    match backend.teardown().await {
        Ok(()) => (None, vec![]),
        Err(e) => {
            error!("teardown failed: {e:#}");
            (Some(chain(&e)), vec![])
        }
    }
}

fn suite_report(
    shared: &Shared,
    filtered_out: u64,
    teardown_error: Option<String>,
    interrupted: Option<String>,
    kept: Vec<String>,
) -> SuiteReport {
    let mut fingerprint = crate::fingerprint::harness();
    let backend = shared.started.lock().unwrap().clone();
    if let Some(b) = backend {
        fingerprint.extend(b.fingerprint());
    }
    let golden = match shared.setup.get() {
        Some(Ok(s)) => {
            fingerprint.insert("golden_actor_id".into(), s.golden.golden_actor_id.clone());
            if let Some(snap) = &s.golden.snapshot {
                fingerprint.insert("golden_snapshot".into(), snap.clone());
            }
            Some(s.golden.clone())
        }
        _ => None,
    };
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    SuiteReport {
        suite: shared.suite.to_owned(),
        run_id: shared.opts.run_id.clone(),
        backend: shared.opts.backend.clone(),
        started_unix_ms: ms(shared.started_at),
        ended_unix_ms: ms(SystemTime::now()),
        wall_ms: shared.wall.elapsed().as_millis() as u64,
        fingerprint,
        golden,
        teardown_error,
        interrupted,
        kept,
        filtered_out,
        fail_on_skip: shared.opts.fail_on_skip,
        trials: shared.records.lock().unwrap().clone(),
    }
}

fn write_and_print(shared: &Shared, rep: &SuiteReport) -> bool {
    match report::write_suite(&shared.opts.report_dir, rep) {
        Ok(w) => {
            eprintln!("{}", report::console_summary(&w.run, rep, &w));
            let count = |v| rep.trials.iter().filter(|t| t.verdict == v).count();
            // The plain closing line CI readers look for.
            eprintln!(
                "{}: {} passed, {} failed, {} skipped",
                rep.suite,
                count(Verdict::Pass),
                count(Verdict::Fail),
                count(Verdict::Skip)
            );
            true
        }
        Err(e) => {
            eprintln!(
                "error: cannot write the report into {}: {e:#}",
                shared.opts.report_dir.display()
            );
            false
        }
    }
}

async fn interrupt_handler(shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let sig = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    shared.interrupted.store(true, Ordering::SeqCst);
    eprintln!("\n{sig}: interrupted; cleaning up what this run started");
    let backend = shared.started.lock().unwrap().clone();
    let summary = match backend {
        Some(b) => {
            let live = b.live_sandboxes().await.unwrap_or_default();
            match b.teardown().await {
                Ok(()) => format!("{sig}: stopped the {} backend and removed its sandboxes {live:?}", b.name()),
                Err(e) => format!("{sig}: cleanup failed: {e:#}"),
            }
        }
        None => format!(
            "{sig}: no backend was up yet (an agent still starting stops itself and its sandboxes when this process exits)"
        ),
    };
    eprintln!("{summary}");
    let rep = suite_report(&shared, 0, None, Some(summary), vec![]);
    write_and_print(&shared, &rep);
    std::process::exit(130);
}
