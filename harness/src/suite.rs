//! A thin layer over libtest-mimic for suites.
//!
//! A suite declares trials (name, contract statements covered, async body
//! taking a [`Ctx`]); [`Suite::main`] parses our options out of the command
//! line (the rest goes to libtest-mimic, so `--list`, filters, `--exact`,
//! `--skip`, `--test-threads`, `--nocapture` keep working), runs the trials,
//! tears the backend down, and writes the report.
//!
//! **Invariants.** `--list` starts nothing. The backend is started lazily by
//! the first trial that runs, once, and torn down after the last; a backend
//! that cannot start fails every trial with the reason (never a silent
//! pass). Each trial's cleanups run last-in-first-out on pass, fail and
//! panic; SIGINT/SIGTERM tear the backend down before exiting.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use libtest_mimic::{Arguments, Failed, Trial};
use tracing::{error, info};

use crate::backend::local::{LocalBackend, LocalOptions};
use crate::backend::{Backend, Golden};
use crate::report::{self, PhaseTime, SuiteReport, TrialRecord, Verdict};
use crate::router::RouterClient;

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

/// Options the harness takes (flags after `--`, or environment variables).
#[derive(Debug, Clone)]
pub struct Options {
    /// `--backend` / `ATE_BACKEND`: `local` (default).
    pub backend: String,
    /// `--report-dir` / `ATE_REPORT_DIR` (default `target/ate-report`).
    pub report_dir: PathBuf,
    /// `--run-id` / `ATE_RUN_ID` (default: random).
    pub run_id: String,
    /// `--probe-bin` / `ATE_PROBE_BIN`: another probe binary.
    pub probe_bin: Option<PathBuf>,
}

/// The workspace root (where `target/` lives).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness lives in the workspace")
        .to_path_buf()
}

/// A short random run ID (lowercase hex: valid in every name it is part of).
pub fn new_run_id() -> String {
    let mut b = [0u8; 3];
    getrandom::fill(&mut b).expect("getrandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const OPTIONS: [(&str, &str); 4] = [
    ("--backend", "ATE_BACKEND"),
    ("--report-dir", "ATE_REPORT_DIR"),
    ("--run-id", "ATE_RUN_ID"),
    ("--probe-bin", "ATE_PROBE_BIN"),
];

/// Splits our options from libtest-mimic's. Returns the options and the
/// remaining arguments (program name first).
pub fn parse_options(args: Vec<String>) -> anyhow::Result<(Options, Vec<String>)> {
    let mut rest = Vec::new();
    let mut given: std::collections::BTreeMap<&str, String> = Default::default();
    let mut it = args.into_iter();
    if let Some(p) = it.next() {
        rest.push(p);
    }
    while let Some(a) = it.next() {
        let known = OPTIONS
            .iter()
            .find(|(f, _)| a == *f || a.starts_with(&format!("{f}=")));
        match known {
            Some((flag, _)) => {
                let v = match a.split_once('=') {
                    Some((_, v)) => v.to_owned(),
                    None => it
                        .next()
                        .with_context(|| format!("option {flag} needs a value"))?,
                };
                given.insert(flag, v);
            }
            None => rest.push(a),
        }
    }
    let get = |flag: &str, env: &str| {
        given
            .get(flag)
            .cloned()
            .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
    };
    let backend = get("--backend", "ATE_BACKEND").unwrap_or_else(|| "local".into());
    if backend != "local" {
        anyhow::bail!("unknown backend {backend:?}: valid backends are: local");
    }
    let run_id = get("--run-id", "ATE_RUN_ID").unwrap_or_else(new_run_id);
    if run_id.is_empty()
        || run_id.len() > 16
        || !run_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        anyhow::bail!("invalid run id {run_id:?}: 1 to 16 lowercase letters or digits");
    }
    Ok((
        Options {
            backend,
            report_dir: get("--report-dir", "ATE_REPORT_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target/ate-report")),
            run_id,
            probe_bin: get("--probe-bin", "ATE_PROBE_BIN").map(PathBuf::from),
        },
        rest,
    ))
}

/// What every trial of one suite run shares.
struct Shared {
    suite: &'static str,
    opts: Options,
    backend: tokio::sync::OnceCell<Result<Setup, String>>,
    records: Mutex<Vec<TrialRecord>>,
    /// Set by the signal handler; from then on it owns the teardown and
    /// the exit.
    interrupted: std::sync::atomic::AtomicBool,
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
    phases: Arc<Mutex<Vec<PhaseTime>>>,
    cleanups: Arc<Mutex<Vec<(String, Cleanup)>>>,
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

    /// A router client.
    pub fn router(&self) -> RouterClient {
        self.setup.backend.router()
    }

    /// `<base>-<run id>`: a name no other run uses.
    pub fn unique(&self, base: &str) -> String {
        format!("{base}-{}", self.run_id)
    }

    /// Runs `fut` as a named phase: timed, logged, kept for the report.
    pub async fn phase<T>(&self, name: impl Into<String>, fut: impl Future<Output = T>) -> T {
        let name = name.into();
        let start = Instant::now();
        let out = fut.await;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        info!(trial = self.trial, phase = %name, ms = format!("{ms:.1}"), "phase done");
        self.phases.lock().unwrap().push(PhaseTime { name, ms });
        out
    }

    /// Registers a cleanup; cleanups run last-in-first-out when the trial
    /// ends, however it ends.
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
        let (opts, rest) = match parse_options(std::env::args().collect()) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("error: {e:#}");
                return std::process::ExitCode::from(2);
            }
        };
        let args = Arguments::from_iter(rest);
        if args.list {
            let trials = self
                .trials
                .iter()
                .map(|t| Trial::test(t.name, || Ok(())))
                .collect();
            return libtest_mimic::run(&args, trials).exit_code();
        }
        let rt = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime"),
        );
        let shared = Arc::new(Shared {
            suite: self.name,
            opts,
            backend: Default::default(),
            records: Mutex::new(Vec::new()),
            interrupted: Default::default(),
        });
        rt.spawn(interrupt_handler(shared.clone()));
        let started = SystemTime::now();
        let wall = Instant::now();

        let trials = self
            .trials
            .into_iter()
            .map(|def| {
                let (shared, rt) = (shared.clone(), rt.clone());
                Trial::test(def.name, move || rt.block_on(run_trial(shared, def)))
            })
            .collect();
        let conclusion = libtest_mimic::run(&args, trials);
        if shared.interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            // The signal handler is tearing down and will exit(130).
            loop {
                std::thread::park();
            }
        }

        let mut teardown_error = None;
        let mut fingerprint = vec![];
        let mut golden = None;
        if let Some(Ok(setup)) = shared.backend.get() {
            fingerprint = setup.backend.fingerprint();
            golden = Some(setup.golden.clone());
            let s = setup.clone();
            if let Err(e) = rt.block_on(async move {
                let _ = s.backend.delete_atespace(&s.atespace).await;
                s.backend.teardown().await
            }) {
                error!("teardown failed: {e:#}");
                teardown_error = Some(format!("{e:#}"));
            }
        }
        let records = std::mem::take(&mut *shared.records.lock().unwrap());
        let rep = SuiteReport {
            suite: shared.suite.to_owned(),
            run_id: shared.opts.run_id.clone(),
            backend: shared.opts.backend.clone(),
            started_unix_ms: started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            wall_ms: wall.elapsed().as_millis() as u64,
            fingerprint,
            golden,
            teardown_error: teardown_error.clone(),
            filtered_out: conclusion.num_filtered_out,
            trials: records,
        };
        match report::write_suite(&shared.opts.report_dir, &rep) {
            Ok(paths) => eprintln!("{}", report::console_summary(&rep, &paths)),
            Err(e) => {
                eprintln!(
                    "error: cannot write the report into {}: {e:#}",
                    shared.opts.report_dir.display()
                );
                return std::process::ExitCode::FAILURE;
            }
        }
        if teardown_error.is_some() {
            return std::process::ExitCode::FAILURE;
        }
        conclusion.exit_code()
    }
}

async fn setup(shared: &Shared) -> Result<Setup, String> {
    let opts = &shared.opts;
    let start = async {
        let root = workspace_root();
        let backend = LocalBackend::start(LocalOptions {
            run_id: opts.run_id.clone(),
            state_root: root.join("target/ate-state"),
            log_dir: opts.report_dir.join("logs"),
            probe_bin: opts.probe_bin.clone(),
            runsc_debug: false,
            start_timeout: Duration::from_secs(30),
        })
        .await?;
        let backend: Arc<dyn Backend> = Arc::new(backend);
        let golden = match backend.deploy_probe(Duration::from_secs(60)).await {
            Ok(g) => g,
            Err(e) => {
                let _ = backend.teardown().await;
                return Err(e.context("the probe template's golden snapshot did not become ready"));
            }
        };
        info!(template = %golden.template, golden = %golden.golden_actor_id, ms = golden.ready_after.as_millis() as u64, "golden ready");
        let atespace = format!("conf-{}", opts.run_id);
        if let Err(e) = backend.create_atespace(&atespace).await {
            let _ = backend.teardown().await;
            return Err(e);
        }
        Ok::<_, anyhow::Error>(Setup {
            backend,
            golden,
            atespace,
        })
    };
    start.await.map_err(|e| {
        format!(
            "backend {} could not be set up: {}",
            opts.backend,
            chain(&e)
        )
    })
}

fn chain(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for c in e.chain().skip(1) {
        s.push_str("\ncaused by: ");
        s.push_str(&c.to_string());
    }
    s
}

async fn run_trial(shared: Arc<Shared>, def: TrialDef) -> Result<(), Failed> {
    let start = Instant::now();
    let setup = shared.backend.get_or_init(|| setup(&shared)).await.clone();
    let ctx_phases = Arc::new(Mutex::new(Vec::new()));
    let (verdict, message) = match setup {
        Err(e) => (Verdict::Fail, Some(e)),
        Ok(setup) => {
            let ctx = Ctx {
                setup,
                run_id: shared.opts.run_id.clone(),
                trial: def.name,
                phases: ctx_phases.clone(),
                cleanups: Arc::new(Mutex::new(Vec::new())),
            };
            let cleanups = ctx.cleanups.clone();
            // Spawned, so a panic in the body is caught as a JoinError.
            let result = tokio::spawn((def.body)(ctx)).await;
            let mut message = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(chain(&e)),
                Err(j) if j.is_panic() => Some(format!("panicked: {}", panic_text(j.into_panic()))),
                Err(j) => Some(format!("trial task ended: {j}")),
            };
            let list = std::mem::take(&mut *cleanups.lock().unwrap());
            for (what, c) in list.into_iter().rev() {
                if let Err(e) = c.await {
                    let m = format!("cleanup failed: {what}: {}", chain(&e));
                    error!(trial = def.name, "{m}");
                    message = Some(match message {
                        Some(prev) => format!("{prev}\n{m}"),
                        None => m,
                    });
                }
            }
            (
                if message.is_some() {
                    Verdict::Fail
                } else {
                    Verdict::Pass
                },
                message,
            )
        }
    };
    let phases = std::mem::take(&mut *ctx_phases.lock().unwrap());
    shared.records.lock().unwrap().push(TrialRecord {
        name: def.name.to_owned(),
        covers: def.covers.iter().map(|s| s.to_string()).collect(),
        verdict,
        duration_ms: start.elapsed().as_secs_f64() * 1000.0,
        message: message.clone(),
        phases,
    });
    match message {
        None => Ok(()),
        Some(m) => Err(Failed::from(m)),
    }
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
    shared
        .interrupted
        .store(true, std::sync::atomic::Ordering::SeqCst);
    eprintln!("\n{sig}: interrupted; cleaning up what this run started");
    if let Some(Ok(setup)) = shared.backend.get() {
        let live = setup.backend.live_sandboxes().await.unwrap_or_default();
        match setup.backend.teardown().await {
            Ok(()) => eprintln!(
                "stopped the {} backend; removed its sandboxes: {live:?}",
                setup.backend.name()
            ),
            Err(e) => eprintln!("cleanup after {sig} failed: {e:#}"),
        }
    } else {
        eprintln!("no backend was up yet (an agent still starting stops itself and its sandboxes when this process exits)");
    }
    std::process::exit(130);
}
