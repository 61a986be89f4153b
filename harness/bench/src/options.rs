//! What a bench run measures, and where it writes.

use std::path::PathBuf;

use ate_harness::fixture::BuildOptions;

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
