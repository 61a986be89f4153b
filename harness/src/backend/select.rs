//! The one place that knows every backend: their names, flag groups,
//! defaults, prerequisites, what each can see, how each is built, and the
//! kind backend's dry run. The runner asks this module and then speaks
//! only the [`Backend`] trait.

use std::sync::Arc;
use std::time::Duration;

use super::kind::{self, KindBackend, KindFlags, KindOptions};
use super::local::{self, LocalBackend, LocalFlags, LocalOptions};
use super::node::{self, NodeBackend, NodeFlags, NodeOptions};
use super::Backend;
use std::path::{Path, PathBuf};

use crate::flags::{Spec, Values};
use crate::paths;
use crate::run_id::RunId;

/// What a backend is built with besides its own options: the run's
/// common options.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// This run's ID.
    pub run_id: RunId,
    /// The report directory (logs and work files go below it).
    pub report_dir: PathBuf,
    /// Another probe binary.
    pub probe_bin: Option<PathBuf>,
    /// Golden snapshot deadline.
    pub golden_timeout: Duration,
}

/// Backends this build can drive.
pub const BACKENDS: &[&str] = &["local", "kind", "node"];

/// The selected backend with its own options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendOptions {
    /// The embedded reference agent on gVisor.
    Local(LocalFlags),
    /// Agent Substrate on a kind cluster.
    Kind(KindFlags),
    /// The user's atelet and ateom-gvisor on this machine.
    Node(NodeFlags),
}

/// Every backend's flag group, by backend name.
pub fn flag_groups() -> Vec<(&'static str, &'static [Spec])> {
    vec![
        ("local", local::FLAGS),
        ("kind", kind::FLAGS),
        ("node", node::FLAGS),
    ]
}

/// The options of backend `name`, read and checked.
pub fn parse(name: &str, values: &Values<'_>) -> anyhow::Result<BackendOptions> {
    match name {
        "local" => Ok(BackendOptions::Local(LocalFlags::from_values(values)?)),
        "kind" => Ok(BackendOptions::Kind(KindFlags::from_values(values)?)),
        "node" => Ok(BackendOptions::Node(NodeFlags::from_values(values)?)),
        other => anyhow::bail!(
            "unknown backend {other:?}: valid backends are: {}",
            BACKENDS.join(", ")
        ),
    }
}

impl BackendOptions {
    /// The backend's short name.
    pub fn name(&self) -> &'static str {
        match self {
            BackendOptions::Local(_) => "local",
            BackendOptions::Kind(_) => "kind",
            BackendOptions::Node(_) => "node",
        }
    }

    /// How long a golden snapshot may take unless told: a cold cluster
    /// takes minutes (upstream waits up to 5).
    pub fn default_golden_timeout(&self) -> Duration {
        match self {
            BackendOptions::Local(_) | BackendOptions::Node(_) => Duration::from_secs(60),
            BackendOptions::Kind(_) => Duration::from_secs(300),
        }
    }

    /// What this machine lacks for the backend, if anything; the runner
    /// skips every trial with this reason. The kind backend checks its own
    /// prerequisites in its preflight, where a failure fails every trial:
    /// a user who asked for a cluster gets no silent skip. So does the node
    /// backend, in `bring_up`: a user who gave (or forgot) their atelet
    /// build must hear what is wrong as a failure.
    pub fn prerequisites(&self, probe_bin: Option<&Path>) -> Option<String> {
        match self {
            BackendOptions::Local(f) => f.prerequisites(probe_bin),
            BackendOptions::Kind(_) | BackendOptions::Node(_) => None,
        }
    }

    /// Whether the backend offers [`super::HostAccess`]; known before it
    /// starts, so trials that need the host are handed to libtest as
    /// ignored, with the reason, instead of running to a skip.
    pub fn sees_host(&self) -> bool {
        matches!(self, BackendOptions::Local(_) | BackendOptions::Node(_))
    }

    /// Why the backend has no hook to rewrite a running actor's identity
    /// file (ID-9), when it has none; known before it starts.
    pub fn no_identity_rewrite(&self) -> Option<&'static str> {
        match self {
            BackendOptions::Node(_) => Some(node::NO_REWRITE_HOOK),
            BackendOptions::Local(_) | BackendOptions::Kind(_) => None,
        }
    }

    /// Print the plan instead of running (`--dry-run`, kind only).
    pub fn dry_run(&self) -> bool {
        matches!(self, BackendOptions::Kind(k) if k.dry_run)
    }

    /// The reference agent's fault mode (`--agent-fault`, local only).
    pub fn agent_fault(&self) -> Option<&str> {
        match self {
            BackendOptions::Local(f) => f.agent_fault.as_deref(),
            BackendOptions::Kind(_) | BackendOptions::Node(_) => None,
        }
    }
}

/// Builds and starts the selected backend. `started` receives it as soon
/// as it exists, before it has made anything, so an interrupt can tear it
/// down mid-creation.
pub async fn start(
    backend: &BackendOptions,
    opts: &RunContext,
    started: impl Fn(Arc<dyn Backend>),
) -> anyhow::Result<Arc<dyn Backend>> {
    match backend {
        BackendOptions::Kind(k) => {
            let kind = Arc::new(KindBackend::new(kind_options(opts, k)));
            started(kind.clone());
            kind.bring_up().await?;
            Ok(kind)
        }
        BackendOptions::Node(n) => {
            let node = Arc::new(NodeBackend::new(NodeOptions {
                run_id: opts.run_id.clone(),
                flags: n.clone(),
                probe_bin: opts.probe_bin.clone(),
                state_root: paths::state_root().join("node"),
                log_dir: opts.report_dir.join("logs"),
                start_timeout: Duration::from_secs(30),
            }));
            started(node.clone());
            node.bring_up().await?;
            Ok(node)
        }
        BackendOptions::Local(l) => {
            let local: Arc<dyn Backend> = Arc::new(
                LocalBackend::start(LocalOptions {
                    run_id: opts.run_id.clone(),
                    state_root: paths::state_root(),
                    log_dir: opts.report_dir.join("logs"),
                    probe_bin: opts.probe_bin.clone(),
                    runsc: l.runsc.clone(),
                    fault: l.agent_fault.clone(),
                    runsc_debug: true,
                    start_timeout: Duration::from_secs(30),
                })
                .await?,
            );
            started(local.clone());
            Ok(local)
        }
    }
}

/// The kind backend's options from ours.
pub fn kind_options(opts: &RunContext, k: &KindFlags) -> KindOptions {
    KindOptions {
        run_id: opts.run_id.clone(),
        cluster: k.cluster.clone(),
        create_cluster: k.create_cluster,
        install: k.install,
        deploy_agent: k.deploy_agent,
        context: k.context.clone(),
        kubeconfig: k.kubeconfig.clone(),
        substrate_root: k.substrate_root.clone(),
        bucket_name: k.bucket_name.clone(),
        ko_docker_repo: k.ko_docker_repo.clone(),
        probe_bin: opts.probe_bin.clone(),
        fixtures_dir: paths::fixtures_dir(),
        work_dir: opts.report_dir.join("kind"),
        search_path: None,
        command_timeout: Duration::from_secs(120),
        preflight_deadline: Duration::from_secs(30),
        dry_run: k.dry_run,
        state_dir: Some(paths::kind_state_dir()),
    }
}

/// A trial as the dry run lists it: name and the statements it covers.
pub struct PlannedTrial<'a> {
    /// Trial name.
    pub name: &'a str,
    /// Contract statements.
    pub covers: &'a [&'a str],
}

/// `--dry-run`: the kind backend's whole plan for a suite, printed in
/// order; nothing is run, no API is called. Exit status 2 when it cannot
/// be planned.
pub fn dry_run(
    suite: &str,
    trials: &[PlannedTrial<'_>],
    backend: &BackendOptions,
    opts: &RunContext,
) -> std::process::ExitCode {
    use super::kind::plan::Step;
    let BackendOptions::Kind(k) = backend else {
        eprintln!("error: --dry-run is for the kind backend (use --backend kind)");
        return std::process::ExitCode::from(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let run = &opts.run_id;
    // The backend's logs during the dry run tell of stand-in answers, not
    // of a cluster: they carry the span's name.
    let span = tracing::info_span!("dry_run", answers = "stand-in");
    let planned = rt.block_on(tracing::Instrument::instrument(
        async {
            let backend = KindBackend::start(kind_options(opts, k)).await?;
            let golden = backend.deploy_probe(opts.golden_timeout).await?;
            let atespace = run.atespace();
            backend.create_atespace(&atespace).await?;
            let actor = run.unique("<actor>");
            backend.plan().push(Step::local(format!(
                "each trial, for each actor it uses (named <base>-{run}), makes these steps:"
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
        },
        span,
    ));
    match planned {
        Ok(plan) => {
            println!(
                "dry run of suite {suite} on backend kind (run {run}): nothing below was run, no API was called\n"
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
            eprintln!(
                "error: the dry run could not be planned: {}",
                crate::error_chain(e.as_ref())
            );
            std::process::ExitCode::from(2)
        }
    }
}
