//! A suite run's life: what the trials share, the backend's setup (once,
//! by the first trial that runs), its teardown or `--keep`, and the suite
//! report.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tracing::{error, info, warn};

use crate::backend::{select, Backend, Golden};
use crate::error_chain;
use crate::options::Options;
use crate::report::{self, SuiteReport, TrialRecord, Verdict};

/// The backend is there but broke: every trial fails with this message.
/// (A missing prerequisite is known before any trial runs: see
/// `Suite::main`.)
#[derive(Debug, Clone)]
pub(crate) struct Broken(pub String);

/// What every trial of one suite run shares.
pub(crate) struct Shared {
    pub suite: &'static str,
    pub opts: Options,
    pub setup: tokio::sync::OnceCell<Result<Setup, Broken>>,
    /// The backend as soon as it exists (before the golden is ready), so
    /// an interrupt can tear it down mid-setup.
    pub started: Mutex<Option<Arc<dyn Backend>>>,
    pub records: Mutex<Vec<TrialRecord>>,
    /// Resources failed trials left on purpose (`--keep`).
    pub kept_actors: Mutex<Vec<String>>,
    /// Set by the signal handler; from then on it owns teardown and exit.
    pub interrupted: AtomicBool,
    pub started_at: SystemTime,
    pub wall: Instant,
}

impl Shared {
    pub fn new(suite: &'static str, opts: Options) -> Shared {
        Shared {
            suite,
            opts,
            setup: Default::default(),
            started: Mutex::new(None),
            records: Mutex::new(Vec::new()),
            kept_actors: Mutex::new(Vec::new()),
            interrupted: AtomicBool::new(false),
            started_at: SystemTime::now(),
            wall: Instant::now(),
        }
    }
}

/// The backend, ready: its golden snapshot and the run's atespace.
#[derive(Clone)]
pub(crate) struct Setup {
    pub backend: Arc<dyn Backend>,
    pub golden: Golden,
    pub atespace: String,
}

/// Starts the backend, waits for the golden, creates the atespace.
pub(crate) async fn setup(shared: &Shared) -> Result<Setup, Broken> {
    let opts = &shared.opts;
    let broken = |e: anyhow::Error| {
        Broken(format!(
            "backend {} could not be set up: {}",
            opts.backend.name(),
            error_chain(e.as_ref())
        ))
    };
    let backend = select::start(&opts.backend, &opts.run_context(), |b| {
        *shared.started.lock().unwrap() = Some(b)
    })
    .await
    .map_err(broken)?;
    let golden = backend
        .deploy_probe(opts.golden_timeout)
        .await
        .map_err(|e| {
            broken(
                anyhow::Error::from(e)
                    .context("the probe template's golden snapshot did not become ready"),
            )
        })?;
    info!(template = %golden.template, golden = %golden.golden_actor_id, ms = golden.ready_after.as_millis() as u64, "golden ready");
    let atespace = opts.run_id.atespace();
    backend
        .create_atespace(&atespace)
        .await
        .map_err(|e| broken(e.into()))?;
    Ok(Setup {
        backend,
        golden,
        atespace,
    })
}

/// Tears the backend down, or keeps it (`--keep` with kept trials).
/// Returns a teardown error and the kept resources.
pub(crate) async fn finish_backend(shared: &Shared) -> (Option<String>, Vec<String>) {
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
            Err(e) => (Some(format!("--keep failed: {}", error_chain(&e))), vec![]),
        };
    }
    if let Some(Ok(setup)) = shared.setup.get() {
        if let Err(e) = backend.delete_atespace(&setup.atespace).await {
            warn!(
                "cannot delete atespace {}: {}",
                setup.atespace,
                error_chain(&e)
            );
        }
    }
    match backend.teardown().await {
        Ok(()) => (None, vec![]),
        Err(e) => {
            let chain = error_chain(&e);
            error!("teardown failed: {chain}");
            (Some(chain), vec![])
        }
    }
}

/// The suite's report from what the trials recorded.
pub(crate) fn suite_report(
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
        run_id: shared.opts.run_id.to_string(),
        backend: shared.opts.backend.name().to_owned(),
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

/// Writes the suite report and prints its summary; false when it could
/// not be written.
pub(crate) fn write_and_print(shared: &Shared, rep: &SuiteReport) -> bool {
    match report::write_suite(&shared.opts.report_dir, rep) {
        Ok(w) => {
            eprintln!("{}", report::console_summary(&w.run, rep, &w));
            // The plain closing line CI readers look for.
            eprintln!(
                "{}: {} passed, {} failed, {} skipped",
                rep.suite,
                rep.count(Verdict::Pass),
                rep.count(Verdict::Fail),
                rep.count(Verdict::Skip)
            );
            true
        }
        Err(e) => {
            eprintln!(
                "error: cannot write the report into {}: {}",
                shared.opts.report_dir.display(),
                error_chain(e.as_ref())
            );
            false
        }
    }
}
