//! A thin layer over libtest-mimic for suites.
//!
//! A suite declares trials (name, contract statements covered, what the
//! trial needs, async body taking a [`Ctx`]); [`Suite::main`] takes our
//! options out of the command line ([`crate::options`]), runs the trials
//! with libtest-mimic, tears the backend down and writes the reports
//! ([`crate::report`]). Rooms: [`context`] (what a body gets), `inside`
//! (observations from inside an actor's sandbox: the harness's checker, or
//! the probe), `trial` (one trial's execution), `lifecycle` (setup,
//! teardown, the suite report), `interrupt` (signals).
//!
//! The runner knows only the [`Backend`](crate::backend::Backend) trait;
//! which backend, its options and prerequisites come from
//! [`crate::backend::select`].
//!
//! **Invariants.** `--list` starts nothing. A trial that will be skipped
//! and can be known to be (a missing prerequisite, a backend that cannot
//! see the host a trial needs) is handed to libtest as ignored with the
//! reason before anything starts; a skip found while running (a probe
//! without an endpoint) is reported to libtest as ignored with the reason
//! too: cargo's summary never counts a skip as passed. With
//! `--fail-on-skip` (default under `CI=true`) a skip fails the run. The
//! backend is started lazily by the first trial that runs, once, and torn
//! down after the last; a backend that is there but breaks fails every
//! trial with the reason. Each trial's cleanups run last-in-first-out on
//! pass, fail and panic (`--keep` leaves a failed trial's resources
//! instead); artifacts of a failed trial are collected first, under their
//! own deadline, and never mask the failure. SIGINT/SIGTERM tear the
//! backend down (even mid-setup), write the report and exit 130.

pub mod context;
mod inside;
mod interrupt;
mod lifecycle;
mod trial;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use libtest_mimic::{Arguments, Trial};
use tracing::warn;

pub use self::context::{Ctx, Skip, Violation};
use self::lifecycle::{finish_backend, suite_report, write_and_print, Shared};
use crate::backend::select::{self, PlannedTrial};
use crate::options;

type BoxFut = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
type Body = Arc<dyn Fn(Ctx) -> BoxFut + Send + Sync>;

/// What a trial needs of the backend beyond the [`Backend`](crate::backend::Backend)
/// trait; where the backend lacks it, the trial is skipped with the reason
/// before it runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// [`HostAccess`](crate::backend::HostAccess): the actors' host.
    pub host: bool,
    /// [`HostAccess::rewrite_identity`](crate::backend::HostAccess::rewrite_identity):
    /// a hook that rewrites a running actor's identity file.
    pub rewrite: bool,
}

impl Needs {
    /// The trial needs to see the actors' host.
    pub const HOST: Needs = Needs {
        host: true,
        rewrite: false,
    };
    /// The trial rewrites a running actor's identity file on the host.
    pub const HOST_REWRITE: Needs = Needs {
        host: true,
        rewrite: true,
    };
}

pub(crate) struct TrialDef {
    name: &'static str,
    covers: &'static [&'static str],
    needs: Needs,
    body: Body,
}

/// A suite: a named list of trials.
pub struct Suite {
    name: &'static str,
    trials: Vec<TrialDef>,
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
    pub fn trial<F, Fut>(self, name: &'static str, covers: &'static [&'static str], f: F) -> Self
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.trial_needing(name, covers, Needs::default(), f)
    }

    /// Adds a trial that needs more of the backend than the trait (e.g.
    /// [`Needs::HOST`]).
    pub fn trial_needing<F, Fut>(
        mut self,
        name: &'static str,
        covers: &'static [&'static str],
        needs: Needs,
        f: F,
    ) -> Self
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.trials.push(TrialDef {
            name,
            covers,
            needs,
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
            crate::paths::report_dir(),
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
        if opts.backend.dry_run() {
            let planned: Vec<PlannedTrial<'_>> = self
                .trials
                .iter()
                .map(|t| PlannedTrial {
                    name: t.name,
                    covers: t.covers,
                })
                .collect();
            return select::dry_run(self.name, &planned, &opts.backend, &opts.run_context());
        }

        let missing = opts.backend.prerequisites(opts.probe_bin.as_deref());
        if let Some(reason) = &missing {
            warn!("prerequisite missing, every trial is skipped: {reason}");
        }
        let sees_host = opts.backend.sees_host();
        let backend_name = opts.backend.name();
        let opts_backend = opts.backend.clone();
        let rt = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime"),
        );
        let shared = Arc::new(Shared::new(self.name, opts));
        rt.spawn(interrupt::handler(shared.clone()));

        let trials = self
            .trials
            .into_iter()
            .map(|def| {
                let name = def.name;
                let skip = match &missing {
                    Some(reason) => Some(format!("prerequisite missing: {reason}")),
                    None if def.needs.host && !sees_host => Some(trial::no_host(backend_name)),
                    None if def.needs.rewrite => opts_backend
                        .no_identity_rewrite()
                        .map(|why| format!("backend {backend_name} cannot rewrite a running actor's identity file: {why}")),
                    None => None,
                };
                let (shared, rt) = (shared.clone(), rt.clone());
                // Ignored with the reason (libtest's "ignored (...)"),
                // recorded as skipped; nothing is started for it.
                Trial::ignorable_test(name, move || match skip {
                    Some(reason) => trial::skip_before(&shared, &def, reason),
                    None => rt.block_on(trial::run(shared, def)),
                })
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
            teardown_error,
            None,
            kept,
        );
        let written = write_and_print(&shared, &rep);
        let unwaived = rep.unwaived_skips();
        if rep.fail_on_skip && unwaived > 0 {
            eprintln!(
                "error: {unwaived} trial(s) skipped without a waiver, and skips fail this run (--fail-on-skip, or CI=true; waive with --waive ID=REASON or --waivers FILE)"
            );
            return std::process::ExitCode::FAILURE;
        }
        if !written || rep.failed() {
            return std::process::ExitCode::FAILURE;
        }
        conclusion.exit_code()
    }
}

#[cfg(test)]
mod tests;
