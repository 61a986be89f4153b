//! The kind backend: Agent Substrate on a kind cluster (CONTRACT.md III;
//! every interaction is audited against upstream in `docs/upstream.md`).
//! This file holds the backend's state and the `Backend` trait's impl,
//! each method one call into a room: `exec.rs` (the one executor every
//! step goes through), `cluster.rs` (find or create), `preflight.rs`,
//! `deploy.rs` (install, deploy the agent under test), `probe.rs` (the
//! probe image, its manifest, the golden wait), `actors.rs` (atespaces and
//! actors with `kubectl ate`), `artifacts.rs` (a failed trial's artifacts),
//! `teardown.rs` (keep or remove what the run made), `record.rs` (the run
//! record and `gc`), `options.rs`.
//!
//! The cluster is the engine; this backend adds none of its own. It reuses
//! a named kind cluster (creates one, with the local registry, only when
//! asked, and deletes only a cluster it created), checks the installation
//! before anything else, pushes the probe as an OCI image ([`oci`]), renders
//! `fixtures/probe/probe.yaml.tmpl` and applies it with `ko apply`
//! ([`tools`]), waits for the golden snapshot with kube-rs ([`kube`]),
//! drives actors with `kubectl ate`, and reaches them through a kube-rs
//! port-forward to the `atenet-router` Service ([`portforward`]).
//!
//! **Invariants.** Every command is an argument vector; every command, API
//! call, registry request and local effect goes through the backend's one
//! [`exec::Executor`], which records it as a [`plan::Step`] before it is
//! made. `--dry-run` is the recording executor, chosen in
//! [`KindBackend::new`] and nowhere else: the same code runs, so the dry
//! run shows exactly the steps a real run makes. Names carry the run's ID
//! (namespace `ate-conf-<run>`), so runs never collide. Teardown removes
//! what this run made, by name, and reports every failure instead of
//! swallowing it.

mod actors;
mod artifacts;
mod cluster;
mod deploy;
pub mod exec;
pub mod kube;
pub mod oci;
pub mod options;
pub mod plan;
pub mod portforward;
mod preflight;
mod probe;
mod record;
mod teardown;
pub mod tools;

pub use self::record::gc_stale_runs;
use self::record::{stale_records, RecordFiles};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use tracing::{info, warn};

use self::exec::Executor;
pub use self::options::{KindFlags, KindOptions, FLAGS};
use self::plan::Plan;
use self::tools::Tools;
use super::{ActorInfo, ActorRef, Backend, Golden};
use crate::router::RouterClient;

/// The worker image of the probe's WorkerPool: a `ko://` reference that
/// resolves only inside the Agent Substrate checkout.
pub const ATEOM_IMAGE: &str = "ko://github.com/agent-substrate/substrate/cmd/ateom-gvisor";
/// Name of the probe image in `KO_DOCKER_REPO`.
pub const PROBE_IMAGE_NAME: &str = "ate-conformance-probe";
/// The ActorTemplate's name inside the run's namespace.
pub const TEMPLATE_NAME: &str = "probe";
/// The reserved atespace golden actors live in
/// (`internal/resources/actor.go:31`).
pub const GOLDEN_ATESPACE: &str = "ate-golden";
/// The fixture rendered for the probe.
pub const PROBE_FIXTURE: &str = "probe/probe.yaml.tmpl";

/// What this run has made, as far as teardown needs to know; also the
/// run's record on disk (see [`gc_stale_runs`]).
#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
struct State {
    created_cluster: bool,
    created_registry: bool,
    rendered: Option<PathBuf>,
    /// The rendered manifest's text, so a later `gc` can delete what it
    /// declares even when the report directory is gone.
    rendered_text: Option<String>,
    atespaces: BTreeSet<String>,
    actors: BTreeSet<(String, String)>,
    versions: BTreeMap<String, String>,
    probe_image: Option<String>,
    /// The checkout `--deploy-agent` built: commit, and whether it had
    /// uncommitted changes.
    #[serde(default)]
    agent_commit: Option<(String, bool)>,
    /// The atelet image digest `ko resolve` built and every atelet pod runs.
    #[serde(default)]
    atelet_digest: Option<String>,
    /// The template's golden actor (in atespace [`GOLDEN_ATESPACE`]), which
    /// outlives the template and is deleted at teardown.
    #[serde(default)]
    golden_actor: Option<String>,
    /// Left on purpose (`--keep`).
    kept: bool,
}

/// A run's record: where its cluster is, and what it made there.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    run_id: String,
    cluster: String,
    context: String,
    kubeconfig: Option<PathBuf>,
    state: State,
}

/// The kind backend.
pub struct KindBackend {
    opts: KindOptions,
    tools: Tools,
    /// Every command, API call and registry request goes through it.
    exec: Executor,
    forward: tokio::sync::Mutex<Option<portforward::RouterForward>>,
    router_addr: std::sync::OnceLock<SocketAddr>,
    state: Mutex<State>,
    /// Where the run's record lives; `None`: the run keeps none.
    records: Option<RecordFiles>,
    /// The run's record lock, held while this backend lives.
    lock: Mutex<Option<std::fs::File>>,
}

impl KindBackend {
    /// A backend that has made nothing yet: register it for interrupts,
    /// then [`bring_up`](KindBackend::bring_up).
    ///
    /// The one place `--dry-run` is read: a dry run gets the recording
    /// executor, its tools by name (nothing is looked up on `PATH`) and no
    /// run record; a real run the real executor, its tools resolved to
    /// absolute paths and its record in `state_dir`.
    pub fn new(opts: KindOptions) -> KindBackend {
        let tools = Tools::new(
            opts.context(),
            opts.kubeconfig.clone(),
            opts.command_timeout,
        );
        let (exec, tools, records) = if opts.dry_run {
            (Executor::recording(), tools, None)
        } else {
            (
                Executor::real(),
                tools.resolved(opts.search_path.as_ref()),
                opts.state_dir
                    .as_deref()
                    .map(|dir| RecordFiles::new(dir, &opts.run_id)),
            )
        };
        KindBackend {
            tools,
            exec,
            forward: tokio::sync::Mutex::new(None),
            router_addr: std::sync::OnceLock::new(),
            state: Mutex::new(State::default()),
            records,
            lock: Mutex::new(None),
            opts,
        }
    }

    /// [`new`](KindBackend::new) and [`bring_up`](KindBackend::bring_up).
    pub async fn start(opts: KindOptions) -> Result<KindBackend> {
        let backend = KindBackend::new(opts);
        backend.bring_up().await?;
        Ok(backend)
    }

    /// Finds or creates the cluster, checks the installation and starts the
    /// router forward (in a dry run, records those steps and makes none).
    /// On failure it removes what it made (a cluster or registry it
    /// created) before returning the error; an interrupt meanwhile is
    /// handled by [`Backend::teardown`], which knows what was made so far.
    pub async fn bring_up(&self) -> Result<()> {
        if let Err(e) = Box::pin(self.bring_up_inner()).await {
            if let Err(t) = Box::pin(self.remove_all()).await {
                return Err(e.context(format!("and the cleanup after it failed too: {t:#}")));
            }
            return Err(e);
        }
        Ok(())
    }

    async fn bring_up_inner(&self) -> Result<()> {
        self.take_lock()?;
        if let Some(records) = &self.records {
            for (run, what) in stale_records(records.dir()) {
                warn!(
                    "kind run {run} ended without cleaning up: {}; remove it with `ate-conformance gc`",
                    if what.is_empty() { "nothing but its record".to_owned() } else { what.join(", ") }
                );
            }
        }
        Box::pin(self.ensure_cluster()).await?;
        if self.opts.install {
            Box::pin(self.install()).await?;
        }
        if self.opts.deploy_agent {
            Box::pin(self.deploy_agent()).await?;
        }
        Box::pin(self.preflight()).await?;
        let forward = portforward::RouterForward::start(
            &self.exec,
            portforward::ROUTER_NAMESPACE,
            portforward::ROUTER_SERVICE,
            portforward::ROUTER_PORT,
        )
        .await
        .context("cannot port-forward to the router (ate-system/atenet-router)")?;
        // `None` is the recording executor's answer: no forward to keep.
        if let Some(fwd) = forward {
            let addr = fwd.local_addr();
            let _ = self.router_addr.set(addr);
            info!(local_addr = %addr, pod = %fwd.pod(), "router forward up");
            *self.forward.lock().await = Some(fwd);
        }
        Ok(())
    }

    /// The steps made so far (all of them, in a dry run).
    pub fn plan(&self) -> &Plan {
        self.exec.plan()
    }

    /// The options.
    pub fn options(&self) -> &KindOptions {
        &self.opts
    }
}

/// Each method is one call into its room; `?` turns the room's
/// `anyhow::Error` into [`super::BackendError::Failed`], the chain kept.
#[async_trait]
impl Backend for KindBackend {
    fn name(&self) -> &'static str {
        "kind"
    }

    fn fingerprint(&self) -> Vec<(String, String)> {
        let st = self.state.lock().unwrap();
        let mut out = vec![
            ("kind_cluster".to_owned(), self.opts.cluster.clone()),
            ("kube_context".to_owned(), self.opts.context()),
            ("kind_namespace".to_owned(), self.opts.namespace()),
            (
                "kind_cluster_created_by_run".to_owned(),
                st.created_cluster.to_string(),
            ),
        ];
        if let Some(r) = &self.opts.ko_docker_repo {
            out.push(("ko_docker_repo".into(), r.clone()));
        }
        if let Some(i) = &st.probe_image {
            out.push(("probe_image".into(), i.clone()));
        }
        if let Some((commit, dirty)) = &st.agent_commit {
            out.push(("substrate_commit".into(), commit.clone()));
            out.push(("substrate_dirty".into(), dirty.to_string()));
        }
        if let Some(d) = &st.atelet_digest {
            out.push(("atelet_digest".into(), d.clone()));
        }
        for (tool, v) in &st.versions {
            out.push((format!("{tool}_version"), v.clone()));
        }
        out
    }

    async fn deploy_probe(&self, deadline: Duration) -> super::Result<Golden> {
        Ok(self.deploy_probe_template(deadline).await?)
    }

    async fn create_atespace(&self, atespace: &str) -> super::Result<()> {
        Ok(self.create_atespace_named(atespace).await?)
    }

    async fn delete_atespace(&self, atespace: &str) -> super::Result<()> {
        Ok(self.delete_atespace_named(atespace).await?)
    }

    async fn create_actor(
        &self,
        atespace: &str,
        id: &str,
        template: &str,
    ) -> super::Result<ActorInfo> {
        Ok(self.create_actor_of(atespace, id, template).await?)
    }

    async fn resume(&self, atespace: &str, id: &str) -> super::Result<ActorInfo> {
        Ok(self.resume_actor(atespace, id).await?)
    }

    async fn suspend(&self, atespace: &str, id: &str) -> super::Result<ActorInfo> {
        Ok(self.suspend_actor(atespace, id).await?)
    }

    async fn delete_actor(&self, atespace: &str, id: &str) -> super::Result<()> {
        Ok(self.delete_actor_named(atespace, id).await?)
    }

    async fn get_actor(&self, atespace: &str, id: &str) -> super::Result<ActorInfo> {
        Ok(self.actor_info(atespace, id, "RUNNING").await?)
    }

    fn router(&self) -> RouterClient {
        RouterClient::new(
            self.router_addr
                .get()
                .copied()
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        )
    }

    async fn live_sandboxes(&self) -> super::Result<Vec<String>> {
        // Actors are what this backend starts; the cluster runs them.
        Ok(self.tracked_actors())
    }

    async fn delete_template(&self, _name: &str) -> super::Result<()> {
        // The probe template goes with the rendered manifest at teardown.
        Ok(())
    }

    async fn collect_artifacts(
        &self,
        actors: &[ActorRef],
        dir: &Path,
    ) -> super::Result<Vec<PathBuf>> {
        Ok(self.write_artifacts(actors, dir).await?)
    }

    async fn keep(&self) -> super::Result<(Vec<String>, String)> {
        Ok(self.keep_all().await)
    }

    async fn teardown(&self) -> super::Result<()> {
        Ok(self.remove_all().await?)
    }
}
