//! One trial's execution: setup (shared, once), the body in its own task
//! (a panic is a failure), artifacts of a failure before any cleanup, the
//! cleanups last-in-first-out, and the verdict for our record and for
//! libtest.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Completion, Failed};
use tracing::error;

use super::context::{Ctx, Skip};
use super::lifecycle::{setup, Broken, Setup, Shared};
use super::TrialDef;
use crate::backend::BackendError;
use crate::error_chain;
use crate::report::{TrialRecord, Verdict};

/// Why a trial that needs the actors' host is skipped on `backend`.
pub(crate) fn no_host(backend: &str) -> String {
    format!("backend {backend} cannot see the host its actors run on, which this trial needs")
}

/// A fresh record of `def`, verdict to be decided.
pub(crate) fn record(shared: &Shared, def: &TrialDef) -> TrialRecord {
    TrialRecord::new(shared.suite, def.name, def.covers, Verdict::Pass)
}

/// What libtest is told of a recorded verdict: a pass, a failure, or
/// ignored with the reason (under `--fail-on-skip` a skip fails).
pub(crate) fn outcome(shared: &Shared, record: &TrialRecord) -> Result<Completion, Failed> {
    let message = record.message.clone().unwrap_or_default();
    match record.verdict {
        Verdict::Pass => Ok(Completion::Completed),
        Verdict::Fail => Err(Failed::from(message)),
        Verdict::Skip if record.waived.is_some() => {
            let waived = record.waived.as_deref().unwrap_or_default();
            eprintln!("WAIVED {}: {message} (waived: {waived})", record.name);
            Ok(Completion::ignored_with(format!("waived: {waived}")))
        }
        Verdict::Skip => {
            eprintln!("SKIPPED {}: {message}", record.name);
            if shared.opts.fail_on_skip {
                Err(Failed::from(format!(
                    "{message}\n(skipped, which fails this run: --fail-on-skip, or CI=true)"
                )))
            } else {
                Ok(Completion::ignored_with(message))
            }
        }
    }
}

/// The waiver of a skipped trial: every statement it covers is waived
/// (`ID-9: reason; ...`); `None` when any is not, or it covers none.
fn waiver(shared: &Shared, rec: &TrialRecord) -> Option<String> {
    let waivers = &shared.opts.waivers;
    if rec.covers.is_empty() || !rec.covers.iter().all(|c| waivers.contains_key(c.trim())) {
        return None;
    }
    Some(
        rec.covers
            .iter()
            .map(|c| format!("{}: {}", c.trim(), waivers[c.trim()]))
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// A trial known before the run to be skipped: recorded, and handed to
/// libtest as ignored with `reason`; nothing is started.
pub(crate) fn skip_before(
    shared: &Shared,
    def: &TrialDef,
    reason: String,
) -> Result<Completion, Failed> {
    let mut rec = record(shared, def);
    rec.verdict = Verdict::Skip;
    rec.message = Some(reason);
    rec.waived = waiver(shared, &rec);
    let out = outcome(shared, &rec);
    shared.records.lock().unwrap().push(rec);
    out
}

/// Runs one trial (setting the backend up first if no trial has yet).
pub(crate) async fn run(shared: Arc<Shared>, def: TrialDef) -> Result<Completion, Failed> {
    let start = Instant::now();
    let setup = shared.setup.get_or_init(|| setup(&shared)).await.clone();
    let mut rec = record(&shared, &def);
    match setup {
        Err(Broken(msg)) => {
            rec.verdict = Verdict::Fail;
            rec.message = Some(msg);
            rec.setup_failed = true;
        }
        Ok(setup) if def.needs.host && setup.backend.host().is_none() => {
            rec.verdict = Verdict::Skip;
            rec.message = Some(no_host(setup.backend.name()));
        }
        Ok(setup) => run_body(&shared, &def, setup, &mut rec).await,
    }
    rec.duration_ms = start.elapsed().as_secs_f64() * 1000.0;
    if rec.verdict == Verdict::Skip {
        rec.waived = waiver(&shared, &rec);
    }
    let out = outcome(&shared, &rec);
    shared.records.lock().unwrap().push(rec);
    out
}

/// The verdict a body's error asks for: a skip (ours, or a backend that
/// lacks a prerequisite or cannot do something) or a failure.
fn judge(e: &anyhow::Error) -> (Verdict, String) {
    if let Some(Skip(reason)) = e.downcast_ref::<Skip>() {
        return (Verdict::Skip, reason.clone());
    }
    match e.downcast_ref::<BackendError>() {
        Some(b @ (BackendError::Prerequisite(_) | BackendError::Unsupported { .. })) => {
            (Verdict::Skip, b.to_string())
        }
        _ => (Verdict::Fail, error_chain(e.as_ref())),
    }
}

async fn run_body(shared: &Shared, def: &TrialDef, setup: Setup, rec: &mut TrialRecord) {
    let ctx = Ctx::new(setup.clone(), shared.opts.run_id.clone(), def.name);
    // Spawned, so a panic in the body is caught as a JoinError.
    let result = tokio::spawn((def.body)(ctx.clone())).await;
    let (verdict, mut message) = match result {
        Ok(Ok(())) => (Verdict::Pass, None),
        Ok(Err(e)) => {
            let (v, m) = judge(&e);
            (v, Some(m))
        }
        Err(j) if j.is_panic() => (
            Verdict::Fail,
            Some(format!("panicked: {}", panic_text(j.into_panic()))),
        ),
        Err(j) => (Verdict::Fail, Some(format!("trial task ended: {j}"))),
    };
    if verdict == Verdict::Fail {
        collect_artifacts(shared, def, &setup, &ctx, rec).await;
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
                let m = format!("cleanup failed: {what}: {}", error_chain(e.as_ref()));
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
    rec.verdict = match (verdict, &message) {
        (Verdict::Pass, Some(_)) => Verdict::Fail,
        (v, _) => v,
    };
    rec.message = message;
    if rec.verdict == Verdict::Fail {
        rec.violated = ctx.violated.lock().unwrap().clone();
    }
    rec.phases = std::mem::take(&mut *ctx.phases.lock().unwrap());
    rec.log = std::mem::take(&mut *ctx.log.lock().unwrap());
}

/// Before cleanups remove what is to be looked at; bounded, and a
/// collection problem is a note, never the verdict.
async fn collect_artifacts(
    shared: &Shared,
    def: &TrialDef,
    setup: &Setup,
    ctx: &Ctx,
    rec: &mut TrialRecord,
) {
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
            rec.artifacts = files
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

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}
