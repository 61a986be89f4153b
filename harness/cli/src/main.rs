//! `ate-conformance`: run every suite into one report, list trials, merge
//! reports, apply the release gate, and clean up after crashed runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use ate_harness::cmd::{Cmd, Stdio};
use ate_harness::paths::workspace_root;
use ate_harness::report;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ate-conformance",
    version,
    about = "identity conformance for actor runtimes: run, list, report, gate, gc"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every suite (suites/*.rs) into one report directory. ARGS go to
    /// each suite: the harness options (--backend, --report-dir, --keep,
    /// --run-id, ...) and libtest's (name filters, --exact, --skip, ...).
    Run {
        /// Options and filters for the suites.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The self-test: every suite against a healthy agent (all must pass,
    /// this is also the main run's report) and against each fault mode of
    /// the reference agent (a named trial must fail with the fault's
    /// symptom); writes the kill matrix into report.md. ARGS as for `run`.
    Selftest {
        /// Options and filters for the suites.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List every suite's trials as `suite/trial: test`; starts nothing.
    List,
    /// Merge the suite reports in a report directory into report.json,
    /// junit.xml and report.md.
    Report {
        /// The report directory.
        #[arg(long, env = "ATE_REPORT_DIR")]
        report_dir: Option<PathBuf>,
    },
    /// The release gate: exit 0 only if every contract statement (ID-1..ID-15)
    /// passed and no trial failed or was skipped.
    Gate {
        /// The report directory.
        #[arg(long, env = "ATE_REPORT_DIR")]
        report_dir: Option<PathBuf>,
    },
    /// Remove what crashed or kept runs left: local runs' sandboxes (by
    /// container ID) and agent state dirs; kind runs' actors, atespaces,
    /// namespaces and any cluster or registry they created (by their
    /// records in target/ate-state/kind). Runs still running are left
    /// alone. Prints each thing removed.
    Gc {
        /// Where runs keep agent state (default target/ate-state).
        #[arg(long)]
        state_root: Option<PathBuf>,
    },
    /// Benchmark: raw `runsc restore` vs the agent's resume from one golden
    /// snapshot, fan-out, router on-demand and warm /whoami; prints one
    /// table and writes JSON. Removes every sandbox it starts.
    Bench {
        /// Fan-out sizes, comma-separated.
        #[arg(long = "n", value_delimiter = ',', default_value = "1,2,8,32,64")]
        n: Vec<usize>,
        /// Concurrency of the concurrent runs (default: the number of cores).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Warm /whoami round-trips through the router.
        #[arg(long, default_value_t = 500)]
        whoami: usize,
        /// On-demand samples (suspended actor's first routed request).
        #[arg(long, default_value_t = 3)]
        on_demand: usize,
        /// Where the JSON goes (default target/ate-bench/bench.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The runsc program.
        #[arg(long, env = "ATE_RUNSC", default_value = "runsc")]
        runsc: PathBuf,
        /// Measure the node backend instead: restores through the user's
        /// atelet and ateom-gvisor, against atelet's own breakdown.
        #[arg(long)]
        node: bool,
        /// With --node: the atelet under test.
        #[arg(long, env = "ATE_ATELET_BIN", requires = "node")]
        atelet_bin: Option<PathBuf>,
        /// With --node: the ateom-gvisor under test.
        #[arg(long, env = "ATE_ATEOM_BIN", requires = "node")]
        ateom_bin: Option<PathBuf>,
        /// With --node: restores per pass (sequential, then concurrent).
        #[arg(long, default_value_t = 8, requires = "node")]
        node_n: usize,
    },
}

fn default_report_dir() -> PathBuf {
    workspace_root().join("target/ate-report")
}

fn suites() -> anyhow::Result<Vec<String>> {
    let dir = workspace_root().join("suites");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension().is_some_and(|x| x == "rs"))
                .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    v.sort();
    if v.is_empty() {
        bail!("no suites in {}", dir.display());
    }
    Ok(v)
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Empties a report directory that holds an earlier report; refuses one
/// that holds anything else, so nothing of the user's is lost.
fn prepare_report_dir(dir: &Path) -> anyhow::Result<()> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    if entries.next().is_none() {
        return Ok(());
    }
    let ours = dir.join("suites").is_dir()
        || dir.join("report.json").exists()
        || dir.join("logs").is_dir();
    if !ours {
        bail!(
            "report dir {} is not empty and holds no earlier report; choose another --report-dir (nothing was removed)",
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir)
        .with_context(|| format!("cannot clear the earlier report in {}", dir.display()))
}

/// Runs every suite with `args` into `report_dir` as run `run_id`, the
/// suites' output streaming to this terminal. Returns the suites that
/// exited non-zero.
async fn run_suites(
    args: &[String],
    report_dir: &Path,
    run_id: &str,
) -> anyhow::Result<Vec<String>> {
    let mut failed = Vec::new();
    for suite in suites()? {
        eprintln!("=== suite {suite} (run {run_id}) ===");
        let out = Cmd::new(cargo())
            .args(["test", "--quiet", "--test", &suite, "--"])
            .args(args)
            // Last, so they win over the same options in `args`.
            .arg("--run-id")
            .arg(run_id)
            .arg("--report-dir")
            .arg(report_dir)
            .cwd(workspace_root())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .output()
            .await?;
        if !out.status.success() {
            failed.push(format!("{suite} ({})", out.status));
        }
    }
    Ok(failed)
}

/// Validates `args` as the suites will, before anything runs.
fn parse_args(args: &[String]) -> anyhow::Result<ate_harness::options::Options> {
    let mut all = vec!["ate-conformance".to_string()];
    all.extend(args.iter().cloned());
    let (opts, _) =
        ate_harness::options::parse(all, |k| std::env::var(k).ok(), default_report_dir())
            .map_err(|e| anyhow::anyhow!("{e:#}\n\n{}", ate_harness::options::usage()))?;
    Ok(opts)
}

fn print_reports(m: &report::Merged) {
    eprintln!("\nrun {}: {:?}", m.run.run_id, m.run.verdict);
    eprintln!("report: {}", m.markdown.display());
    eprintln!("        {}", m.junit.display());
    eprintln!("        {}", m.report_json.display());
}

async fn run(args: Vec<String>) -> anyhow::Result<bool> {
    let opts = parse_args(&args)?;
    if opts.backend.dry_run() {
        // Each suite prints its plan; nothing runs, so there is no report
        // to prepare or merge (and an earlier one is left alone).
        let failed = run_suites(&args, &opts.report_dir, opts.run_id.as_str()).await?;
        return Ok(failed.is_empty());
    }
    prepare_report_dir(&opts.report_dir)?;
    let failed = run_suites(&args, &opts.report_dir, opts.run_id.as_str()).await?;
    let merged = report::merge_dir(&opts.report_dir)?;
    print_reports(&merged);
    if !failed.is_empty() {
        eprintln!("failed suites: {}", failed.join(", "));
    }
    Ok(failed.is_empty())
}

async fn selftest(args: Vec<String>) -> anyhow::Result<bool> {
    let opts = parse_args(&args)?;
    if opts.backend.agent_fault().is_some() {
        bail!("selftest chooses the fault modes itself; drop --agent-fault/ATE_AGENT_FAULT");
    }
    if opts.backend.name() != "local" {
        bail!(
            "selftest runs the reference agent's fault modes, so it needs --backend local (got {:?}); use `run` for the kind backend",
            opts.backend.name()
        );
    }
    prepare_report_dir(&opts.report_dir)?;
    let base = opts.run_id.to_string();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let st = ate_harness::selftest::run(
        &opts.report_dir,
        &ate_harness::selftest::faults(),
        |fault, dir| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut a = args.clone();
            let run_id = match fault {
                None => base.clone(),
                Some(f) => {
                    a.extend([
                        "--agent-fault".to_string(),
                        f.to_string(),
                        "--no-fail-on-skip".to_string(),
                    ]);
                    format!("{}f{n}", &base[..base.len().min(12)])
                }
            };
            async move {
            if let Some(f) = fault {
                eprintln!(
                    "\n=== self-test: the suites against the agent in fault mode {f}; failures below are expected, \
                     the self-test checks that one names the fault's symptom ==="
                );
            }
            run_suites(&a, &dir, &run_id).await.map(|_| ())
        }
        },
    )
    .await?;
    let merged = report::merge_dir(&opts.report_dir)?;
    print_reports(&merged);
    let problems = st.problems();
    for p in &problems {
        eprintln!("  - {p}");
    }
    eprintln!(
        "self-test: {}",
        if problems.is_empty() {
            "PASS (every fault caught, healthy agent all green)"
        } else {
            "FAIL"
        }
    );
    Ok(problems.is_empty())
}

async fn list() -> anyhow::Result<()> {
    for suite in suites()? {
        let out = Cmd::new(cargo())
            .args([
                "test", "--quiet", "--test", &suite, "--", "--list", "--format", "terse",
            ])
            .cwd(workspace_root())
            .timeout(Duration::from_secs(1800))
            .run()
            .await?;
        for line in out.stdout_str().lines().filter(|l| l.ends_with(": test")) {
            println!("{suite}/{line}");
        }
    }
    Ok(())
}

async fn gc(state_root: Option<PathBuf>) -> anyhow::Result<()> {
    let root = state_root.unwrap_or_else(|| workspace_root().join("target/ate-state"));
    if !root.is_dir() {
        println!("nothing to remove: {} does not exist", root.display());
        return Ok(());
    }
    // kind runs: by their records, on the cluster each names.
    let kind_dir = root.join("kind");
    for line in
        ate_harness::backend::kind::gc_stale_runs(&kind_dir, None, Duration::from_secs(120)).await?
    {
        println!("kind: {line}");
    }
    // node runs: by their records (PIDs with start times) and runsc's
    // state files in each run's node directory.
    for line in ate_harness::backend::node::record::gc_stale_runs(&root.join("node")).await? {
        println!("node: {line}");
    }
    let bins =
        ate_harness::fixture::static_bins(&ate_harness::fixture::BuildOptions::default()).await?;
    let removed = ate_harness::backend::local::gc_stale_runs(&bins.agent, &root, true).await?;
    if removed.is_empty() {
        println!("nothing to remove under {}", root.display());
    }
    for line in removed {
        println!("{line}");
    }
    let busy: Vec<String> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.join("agent.lock").exists() && !ate_harness::backend::local::state_dir_is_stale(p)
        })
        .map(|p| p.display().to_string())
        .collect();
    if !busy.is_empty() {
        println!(
            "left alone (an agent is running there): {}",
            busy.join(", ")
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    ate_harness::init_tracing();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result: anyhow::Result<bool> = rt.block_on(async {
        match cli.cmd {
            Command::Run { args } => run(args).await,
            Command::Selftest { args } => selftest(args).await,
            Command::List => list().await.map(|_| true),
            Command::Report { report_dir } => {
                let dir = report_dir.unwrap_or_else(default_report_dir);
                let m = report::merge_dir(&dir)?;
                println!("{:?}: {}", m.run.verdict, m.markdown.display());
                println!("{}", m.junit.display());
                println!("{}", m.report_json.display());
                Ok(true)
            }
            Command::Gate { report_dir } => {
                let dir = report_dir.unwrap_or_else(default_report_dir);
                let m = report::merge_dir(&dir)?;
                match report::gate(&m.run) {
                    Ok(()) => {
                        println!(
                            "release gate: PASS (run {}, {})",
                            m.run.run_id,
                            m.markdown.display()
                        );
                        Ok(true)
                    }
                    Err(problems) => {
                        println!(
                            "release gate: FAIL (run {}, {})",
                            m.run.run_id,
                            m.markdown.display()
                        );
                        for p in problems {
                            println!("  - {p}");
                        }
                        Ok(false)
                    }
                }
            }
            Command::Gc { state_root } => gc(state_root).await.map(|_| true),
            Command::Bench {
                n,
                concurrency,
                whoami,
                on_demand,
                out,
                runsc,
                node,
                atelet_bin,
                ateom_bin,
                node_n,
            } => {
                let d = ate_bench::BenchOptions::default();
                if node {
                    let opts = ate_bench::NodeBenchOptions {
                        flags: ate_harness::backend::node::NodeFlags {
                            atelet: atelet_bin,
                            ateom: ateom_bin,
                            workers: concurrency.unwrap_or(d.concurrency).max(1) + 1,
                            runsc,
                        },
                        n: node_n,
                        concurrency: concurrency.unwrap_or(d.concurrency).max(1),
                        work_root: d.work_root.clone(),
                    };
                    let report = ate_bench::run_node(&opts).await?;
                    println!(
                        "{}",
                        ate_bench::render_node(&report, opts.n, opts.concurrency)
                    );
                    let out = out.unwrap_or_else(|| d.work_root.join("bench-node.json"));
                    if let Some(dir) = out.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    std::fs::write(&out, serde_json::to_vec_pretty(&report)?)?;
                    println!("JSON: {}", out.display());
                    return Ok::<bool, anyhow::Error>(true);
                }
                let opts = ate_bench::BenchOptions {
                    ns: n,
                    concurrency: concurrency.unwrap_or(d.concurrency),
                    whoami_requests: whoami,
                    on_demand_samples: on_demand,
                    runsc,
                    ..d
                };
                let out = out.unwrap_or_else(ate_bench::default_out);
                ate_bench::run_and_print(&opts, &out).await.map(|_| true)
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            for c in e.chain().skip(1) {
                eprintln!("caused by: {c}");
            }
            ExitCode::FAILURE
        }
    }
}
