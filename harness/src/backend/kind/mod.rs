//! The kind backend: Agent Substrate on a kind cluster (CONTRACT.md III;
//! every interaction is audited against upstream in `docs/upstream.md`).
//! Rooms: `cluster.rs` (find or create), `preflight.rs`, `deploy.rs` (install,
//! deploy the agent under test), `record.rs` (the run record and `gc`);
//! this file holds the backend itself (probe, actors, artifacts, teardown).
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
//! call and registry request is recorded as a [`plan::Step`] before it is
//! made, and `--dry-run` records the same steps without making any. Names
//! carry the run's ID (namespace `ate-conf-<run>`), so runs never collide.
//! Teardown removes what this run made, by name, and reports every failure
//! instead of swallowing it.

mod cluster;
mod deploy;
pub mod kube;
pub mod oci;
pub mod options;
pub mod plan;
pub mod portforward;
mod preflight;
mod record;
pub mod tools;

pub use self::record::gc_stale_runs;
use self::record::stale_records;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use tracing::{info, warn};

pub use self::options::{KindFlags, KindOptions, FLAGS};
use self::plan::{Plan, Step};
use self::tools::Tools;
use super::{ActorInfo, ActorRef, Backend, Golden};
use anyhow::Result;
type BackendResult<T> = super::Result<T>;
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
    plan: Plan,
    client: std::sync::OnceLock<::kube::Client>,
    forward: tokio::sync::Mutex<Option<portforward::RouterForward>>,
    router_addr: std::sync::OnceLock<SocketAddr>,
    state: Mutex<State>,
    /// The run's record lock, held while this backend lives.
    lock: Mutex<Option<std::fs::File>>,
}

impl KindBackend {
    /// A backend that has made nothing yet: register it for interrupts,
    /// then [`bring_up`](KindBackend::bring_up).
    pub fn new(opts: KindOptions) -> KindBackend {
        let tools = Tools::new(
            opts.context(),
            opts.kubeconfig.clone(),
            opts.command_timeout,
        );
        let tools = if opts.dry_run {
            tools
        } else {
            tools.resolved(opts.search_path.as_ref())
        };
        KindBackend {
            tools,
            plan: Plan::default(),
            client: std::sync::OnceLock::new(),
            forward: tokio::sync::Mutex::new(None),
            router_addr: std::sync::OnceLock::new(),
            state: Mutex::new(State::default()),
            lock: Mutex::new(None),
            opts,
        }
    }

    fn record_paths(&self) -> Option<(PathBuf, PathBuf)> {
        let dir = self
            .opts
            .state_dir
            .as_ref()
            .filter(|_| !self.opts.dry_run)?;
        let run = &self.opts.run_id;
        Some((
            dir.join(format!("{run}.json")),
            dir.join(format!("{run}.lock")),
        ))
    }

    /// Takes the run's record lock: while it is held, `gc` leaves the run
    /// alone.
    fn take_lock(&self) -> Result<()> {
        let Some((_, lock)) = self.record_paths() else {
            return Ok(());
        };
        let dir = lock.parent().expect("a record dir");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .with_context(|| format!("cannot open {}", lock.display()))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                anyhow::anyhow!(
                    "run ID {:?} is in use by another process ({} is locked: {e}); choose another --run-id",
                    self.opts.run_id,
                    lock.display()
                )
            },
        )?;
        *self.lock.lock().unwrap() = Some(f);
        Ok(())
    }

    /// Changes the state and writes the run's record (temp file, rename),
    /// so that what this run made can be removed even if it dies.
    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut st = self.state.lock().unwrap();
        f(&mut st);
        let Some((json, _)) = self.record_paths() else {
            return;
        };
        let record = Record {
            run_id: self.opts.run_id.to_string(),
            cluster: self.opts.cluster.clone(),
            context: self.opts.context(),
            kubeconfig: self.opts.kubeconfig.clone(),
            state: st.clone(),
        };
        let tmp = json.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&record)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &json));
        if let Err(e) = written {
            warn!("cannot write the run record {}: {e}", json.display());
        }
    }

    /// Puts the rendered manifest back from the record when its file is
    /// gone (a report directory cleared since), so it can be deleted.
    fn restore_manifest(&self, path: &Path) -> Result<()> {
        if self.opts.dry_run || path.exists() {
            return Ok(());
        }
        let text = self.state.lock().unwrap().rendered_text.clone();
        let text = text.with_context(|| {
            format!(
                "the rendered manifest {} is gone and the record has no copy",
                path.display()
            )
        })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Removes the run's record: everything it listed is gone.
    fn forget_record(&self) {
        if let Some((json, lock)) = self.record_paths() {
            let _ = std::fs::remove_file(json);
            let _ = std::fs::remove_file(lock);
        }
    }

    /// [`new`](KindBackend::new) and [`bring_up`](KindBackend::bring_up).
    pub async fn start(opts: KindOptions) -> Result<KindBackend> {
        let backend = KindBackend::new(opts);
        backend.bring_up().await?;
        Ok(backend)
    }

    /// Finds or creates the cluster, checks the installation and starts the
    /// router forward. In a dry run it records those steps and makes none.
    /// On failure it removes what it made (a cluster or registry it
    /// created) before returning the error; an interrupt meanwhile is
    /// handled by [`Backend::teardown`], which knows what was made so far.
    pub async fn bring_up(&self) -> Result<()> {
        if let Err(e) = self.bring_up_inner().await {
            if let Err(t) = self.teardown().await {
                return Err(e.context(format!("and the cleanup after it failed too: {t:#}")));
            }
            return Err(e);
        }
        Ok(())
    }

    async fn bring_up_inner(&self) -> Result<()> {
        self.take_lock()?;
        if let Some(dir) = self.opts.state_dir.as_ref().filter(|_| !self.opts.dry_run) {
            for (run, what) in stale_records(dir) {
                warn!(
                    "kind run {run} ended without cleaning up: {}; remove it with `ate-conformance gc`",
                    if what.is_empty() { "nothing but its record".to_owned() } else { what.join(", ") }
                );
            }
        }
        self.ensure_cluster().await?;
        if self.opts.install {
            self.install().await?;
        }
        if self.opts.deploy_agent {
            self.deploy_agent().await?;
        }
        self.preflight().await?;
        if self.opts.dry_run {
            self.plan.extend(
                portforward::router_plan(
                    portforward::ROUTER_NAMESPACE,
                    portforward::ROUTER_SERVICE,
                    portforward::ROUTER_PORT,
                )
                .into_iter()
                .map(Step::Api),
            );
            self.plan.push(Step::local(
                "serve the forward on 127.0.0.1:<port 0>; the router client sends there with Host: <actor>.<atespace>.actors.resources.substrate.ate.dev",
            ));
        } else {
            let fwd = portforward::RouterForward::start(
                self.client()?.clone(),
                portforward::ROUTER_NAMESPACE,
                portforward::ROUTER_SERVICE,
                portforward::ROUTER_PORT,
            )
            .await
            .context("cannot port-forward to the router (ate-system/atenet-router)")?;
            let addr = fwd.local_addr();
            let _ = self.router_addr.set(addr);
            info!(local_addr = %addr, pod = %fwd.pod(), "router forward up");
            *self.forward.lock().await = Some(fwd);
        }
        Ok(())
    }

    /// The steps made so far (all of them, in a dry run).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The options.
    pub fn options(&self) -> &KindOptions {
        &self.opts
    }

    /// Records and runs a command; in a dry run returns `assume` instead.
    async fn run(&self, purpose: &str, cmd: ate_cmd::Cmd, assume: &str) -> Result<String> {
        self.plan.push(Step::command(purpose, &cmd));
        if self.opts.dry_run {
            return Ok(assume.to_owned());
        }
        let out = cmd.run().await.with_context(|| purpose.to_owned())?;
        Ok(out.stdout_str().into_owned())
    }

    fn client(&self) -> Result<&::kube::Client> {
        self.client
            .get()
            .context("the kind backend has no API client (preflight did not connect)")
    }

    fn track_actor(&self, atespace: &str, id: &str, present: bool) {
        let key = (atespace.to_owned(), id.to_owned());
        self.update(|st| {
            if present {
                st.actors.insert(key);
            } else {
                st.actors.remove(&key);
            }
        });
    }

    /// The probe binary: given, or this workspace's static build.
    async fn probe_binary(&self) -> Result<PathBuf> {
        if let Some(p) = &self.opts.probe_bin {
            return Ok(p.clone());
        }
        if self.opts.dry_run {
            return Ok(PathBuf::from("<target/ate-static/.../ate-probe>"));
        }
        let bins = crate::fixture::static_bins(&crate::fixture::BuildOptions::from_env()).await?;
        Ok(bins.probe)
    }

    /// Renders the probe fixture into the work directory.
    fn render_probe(&self, image: &str) -> Result<(PathBuf, String)> {
        let ns = self.opts.namespace();
        let src = self.opts.fixtures_dir.join(PROBE_FIXTURE);
        let text = std::fs::read_to_string(&src)
            .with_context(|| format!("cannot read the probe fixture {}", src.display()))?;
        let vars: BTreeMap<&str, String> = [
            ("NAMESPACE", ns.clone()),
            ("TEMPLATE", TEMPLATE_NAME.to_owned()),
            ("POOL", self.opts.pool()),
            ("PROBE_IMAGE", image.to_owned()),
            ("ATEOM_IMAGE", ATEOM_IMAGE.to_owned()),
            ("RUN_ID", self.opts.run_id.to_string()),
        ]
        .into_iter()
        .chain(
            self.opts
                .bucket_name
                .clone()
                .filter(|b| !b.is_empty())
                .or_else(|| self.opts.dry_run.then(|| "<BUCKET_NAME unset>".to_owned()))
                .map(|b| ("BUCKET_NAME", b)),
        )
        .collect();
        let rendered = crate::template::render(&src.display().to_string(), &text, &vars)?;
        let out = self
            .opts
            .work_dir
            .join(format!("probe-{}.yaml", self.opts.run_id));
        self.plan.push(Step::local(format!(
            "render {} into {} (NAMESPACE={ns}, PROBE_IMAGE={image})",
            src.display(),
            out.display()
        )));
        if !self.opts.dry_run {
            std::fs::create_dir_all(&self.opts.work_dir)
                .with_context(|| format!("cannot create {}", self.opts.work_dir.display()))?;
            std::fs::write(&out, &rendered)
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
        Ok((out, rendered))
    }

    async fn actor_info(&self, atespace: &str, id: &str, assume_state: &str) -> Result<ActorInfo> {
        let json = self
            .run(
                &format!("read actor {atespace}/{id}"),
                self.tools.ate_get_actor(atespace, id),
                &format!(
                    r#"{{"actors":[{{"actorId":"{id}","atespace":"{atespace}","status":"STATUS_{assume_state}"}}]}}"#
                ),
            )
            .await?;
        let state = tools::parse_actor_state(&json, atespace, id).map_err(anyhow::Error::msg)?;
        Ok(ActorInfo {
            atespace: atespace.to_owned(),
            id: id.to_owned(),
            state: tools::actor_state(&state),
            restored_from: None,
            restore_ms: None,
            sandbox: None,
        })
    }

    /// Suspends (unless suspended) and deletes the golden actor `id` in
    /// `ate-golden`; an actor already gone (ateapi's NotFound) is fine.
    async fn remove_golden_actor(&self, id: &str) -> Result<()> {
        let a = GOLDEN_ATESPACE;
        let info = match self.actor_info(a, id, "SUSPENDED").await {
            Ok(info) => info,
            Err(e) if tools::is_actor_not_found(&format!("{e:#}"), id) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !info.state.is_suspended() {
            self.run(
                &format!("suspend the golden actor {a}/{id}"),
                self.tools.ate_suspend(a, id),
                "",
            )
            .await?;
        }
        self.run(
            &format!("delete the golden actor {a}/{id} (it outlives its template)"),
            self.tools.ate_delete_actor(a, id),
            "",
        )
        .await?;
        Ok(())
    }

    /// Runs `cmd` for an artifact file: its output, or the error, goes
    /// into `path`.
    async fn artifact(
        &self,
        purpose: &str,
        cmd: ate_cmd::Cmd,
        path: PathBuf,
        written: &mut Vec<PathBuf>,
    ) {
        let text = match self.run(purpose, cmd, "").await {
            Ok(out) => out,
            Err(e) => format!("could not {purpose}: {e:#}\n"),
        };
        if std::fs::write(&path, text).is_ok() {
            written.push(path);
        }
    }
}

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

    async fn deploy_probe(&self, deadline: Duration) -> BackendResult<Golden> {
        let r: Result<Golden> = async {
        let start = Instant::now();
        let repo_name = self.opts.ko_docker_repo.clone().unwrap_or_default();
        let repo = if self.opts.dry_run && repo_name.is_empty() {
            oci::Repo {
                registry: "<KO_DOCKER_REPO unset>".into(),
                repository: PROBE_IMAGE_NAME.into(),
            }
        } else {
            oci::repo_from_ko_docker_repo(&repo_name, PROBE_IMAGE_NAME)?
        };
        let tag = format!("conf-{}", self.opts.run_id);
        let binary = self.probe_binary().await?;
        self.plan.push(Step::local(format!(
            "pack {} into an OCI image (one gzip layer holding /probe, config, manifest, sha256 digests)",
            binary.display()
        )));
        let image_ref = if self.opts.dry_run {
            self.plan.extend(
                oci::push_plan(&repo, &tag, None)
                    .into_iter()
                    .map(Step::Registry),
            );
            format!(
                "{}/{}@sha256:<manifest digest>",
                repo.registry, repo.repository
            )
        } else {
            let b = binary.clone();
            let image = tokio::task::spawn_blocking(move || {
                oci::build_image(&oci::ImageSpec::new(&b, "probe"))
            })
            .await
            .context("the image build panicked")??;
            self.plan.extend(
                oci::push_plan(&repo, &tag, Some(&image))
                    .into_iter()
                    .map(Step::Registry),
            );
            let http = reqwest::Client::builder()
                .no_proxy()
                .build()
                .context("cannot build the registry client")?;
            let pushed = oci::push(&http, &repo, &tag, &image).await?;
            info!(image = %pushed.reference, "probe image pushed");
            self.state.lock().unwrap().probe_image = Some(pushed.reference.clone());
            pushed.reference
        };
        let (manifest, text) = self.render_probe(&image_ref)?;
        let root = self
            .opts
            .substrate_root
            .clone()
            .unwrap_or_else(|| PathBuf::from("<ATE_SUBSTRATE_ROOT unset>"));
        // Recorded before it runs, so teardown deletes whatever part of it
        // was applied.
        self.update(|st| {
            st.rendered = Some(manifest.clone());
            st.rendered_text = Some(text);
        });
        self.run(
            "apply the probe's Namespace, WorkerPool and ActorTemplate",
            self.tools.ko_apply(&manifest, &root, &repo_name),
            "",
        )
        .await?;
        let ns = self.opts.namespace();
        self.plan.extend(
            kube::golden_plan(&ns, TEMPLATE_NAME)
                .into_iter()
                .map(Step::Api),
        );
        let (golden_actor_id, snapshot) = if self.opts.dry_run {
            (
                "<status.goldenActorID>".to_owned(),
                Some("<status.goldenSnapshot>".to_owned()),
            )
        } else {
            // The whole deadline is the golden wait's: `ko apply` may
            // first build the worker image for minutes.
            let ready = kube::wait_golden(
                self.client()?,
                &ns,
                TEMPLATE_NAME,
                deadline,
                Duration::from_secs(1),
            )
            .await?;
            info!(
                golden = %ready.golden_actor_id,
                snapshot = ?ready.golden_snapshot,
                phases = ?ready.phase_history.iter().map(|(p, t)| format!("{p:?}@{:.1}s", t.as_secs_f64())).collect::<Vec<_>>(),
                "golden snapshot ready"
            );
            (ready.golden_actor_id, ready.golden_snapshot)
        };
        // The controller leaves the golden actor in `ate-golden` when the
        // template is deleted (no finalizer): teardown removes it.
        self.update(|st| st.golden_actor = Some(golden_actor_id.clone()));
        Ok(Golden {
            template: format!("{ns}/{TEMPLATE_NAME}"),
            golden_actor_id,
            snapshot,
            ready_after: start.elapsed(),
        })
    }
        .await;
        Ok(r?)
    }

    async fn create_atespace(&self, atespace: &str) -> BackendResult<()> {
        let r: Result<()> = async {
            self.update(|st| {
                st.atespaces.insert(atespace.to_owned());
            });
            self.run(
                &format!("create atespace {atespace}"),
                self.tools.ate_create_atespace(atespace),
                "",
            )
            .await?;
            Ok(())
        }
        .await;
        Ok(r?)
    }

    async fn delete_atespace(&self, atespace: &str) -> BackendResult<()> {
        let r: Result<()> = async {
            self.run(
                &format!("delete atespace {atespace}"),
                self.tools.ate_delete_atespace(atespace),
                "",
            )
            .await?;
            self.update(|st| {
                st.atespaces.remove(atespace);
            });
            Ok(())
        }
        .await;
        Ok(r?)
    }

    async fn create_actor(
        &self,
        atespace: &str,
        id: &str,
        template: &str,
    ) -> BackendResult<ActorInfo> {
        let r: Result<ActorInfo> = async {
            self.track_actor(atespace, id, true);
            self.run(
                &format!("create actor {atespace}/{id} of template {template}"),
                self.tools.ate_create_actor(atespace, id, template),
                "",
            )
            .await?;
            self.actor_info(atespace, id, "SUSPENDED").await
        }
        .await;
        Ok(r?)
    }

    async fn resume(&self, atespace: &str, id: &str) -> BackendResult<ActorInfo> {
        let r: Result<ActorInfo> = async {
            self.run(
                &format!("resume actor {atespace}/{id} (returns once RUNNING)"),
                self.tools.ate_resume(atespace, id),
                "",
            )
            .await?;
            self.actor_info(atespace, id, "RUNNING").await
        }
        .await;
        Ok(r?)
    }

    async fn suspend(&self, atespace: &str, id: &str) -> BackendResult<ActorInfo> {
        let r: Result<ActorInfo> = async {
            self.run(
                &format!("suspend actor {atespace}/{id}"),
                self.tools.ate_suspend(atespace, id),
                "",
            )
            .await?;
            self.actor_info(atespace, id, "SUSPENDED").await
        }
        .await;
        Ok(r?)
    }

    async fn delete_actor(&self, atespace: &str, id: &str) -> BackendResult<()> {
        let r: Result<()> = async {
            self.run(
                &format!("delete actor {atespace}/{id}"),
                self.tools.ate_delete_actor(atespace, id),
                "",
            )
            .await?;
            self.track_actor(atespace, id, false);
            Ok(())
        }
        .await;
        Ok(r?)
    }

    async fn get_actor(&self, atespace: &str, id: &str) -> BackendResult<ActorInfo> {
        let r: Result<ActorInfo> = async { self.actor_info(atespace, id, "RUNNING").await }.await;
        Ok(r?)
    }

    fn router(&self) -> RouterClient {
        RouterClient::new(
            self.router_addr
                .get()
                .copied()
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        )
    }

    async fn live_sandboxes(&self) -> BackendResult<Vec<String>> {
        let r: Result<Vec<String>> = async {
            // Actors are what this backend starts; the cluster runs them.
            Ok(self
                .state
                .lock()
                .unwrap()
                .actors
                .iter()
                .map(|(a, i)| format!("actor {a}/{i}"))
                .collect())
        }
        .await;
        Ok(r?)
    }

    async fn delete_template(&self, _name: &str) -> BackendResult<()> {
        let r: Result<()> = async {
            // The probe template goes with the rendered manifest at teardown.
            Ok(())
        }
        .await;
        Ok(r?)
    }

    async fn collect_artifacts(
        &self,
        actors: &[ActorRef],
        dir: &Path,
    ) -> BackendResult<Vec<PathBuf>> {
        let r: Result<Vec<PathBuf>> = async {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut written = Vec::new();
            let ns = self.opts.namespace();
            for (pods_ns, sub) in [("ate-system", "ate-system"), (ns.as_str(), "workers")] {
                let list = self
                    .run(
                        &format!("list the pods of {pods_ns}"),
                        self.tools
                            .kubectl(["get", "pods", "-n", pods_ns, "-o", "name"]),
                        "",
                    )
                    .await
                    .unwrap_or_default();
                let sub_dir = dir.join(sub);
                let _ = std::fs::create_dir_all(&sub_dir);
                for pod in list.lines().map(str::trim).filter(|p| !p.is_empty()) {
                    let short = pod.trim_start_matches("pod/");
                    self.artifact(
                        &format!("read the logs of {pods_ns}/{short}"),
                        self.tools.kubectl([
                            "logs",
                            "-n",
                            pods_ns,
                            pod,
                            "--all-containers",
                            "--timestamps",
                            "--tail=5000",
                        ]),
                        sub_dir.join(format!("{short}.log")),
                        &mut written,
                    )
                    .await;
                }
                self.artifact(
                    &format!("read the events of {pods_ns}"),
                    self.tools.kubectl([
                        "get",
                        "events",
                        "-n",
                        pods_ns,
                        "-o",
                        "wide",
                        "--sort-by=.lastTimestamp",
                    ]),
                    dir.join(format!("events-{pods_ns}.txt")),
                    &mut written,
                )
                .await;
            }
            self.artifact(
                &format!("describe namespace {ns}"),
                self.tools.kubectl(["describe", "namespace", &ns]),
                dir.join("describe-namespace.txt"),
                &mut written,
            )
            .await;
            self.artifact(
                "describe the ActorTemplate",
                self.tools.kubectl([
                    "describe",
                    "-n",
                    &ns,
                    "actortemplates.ate.dev",
                    TEMPLATE_NAME,
                ]),
                dir.join("describe-actortemplate.txt"),
                &mut written,
            )
            .await;
            self.artifact(
                "describe the WorkerPool",
                self.tools.kubectl([
                    "describe",
                    "-n",
                    &ns,
                    "workerpools.ate.dev",
                    &self.opts.pool(),
                ]),
                dir.join("describe-workerpool.txt"),
                &mut written,
            )
            .await;
            for a in actors {
                self.artifact(
                    &format!("read actor {}/{}", a.atespace, a.id),
                    self.tools.ate_get_actor(&a.atespace, &a.id),
                    dir.join(format!("actor-{}-{}.json", a.atespace, a.id)),
                    &mut written,
                )
                .await;
            }
            let mut steps = self.plan.to_string();
            if let Some(f) = self.forward.lock().await.as_ref() {
                steps.push_str("\nrouter forward events:\n");
                for e in f.events() {
                    steps.push_str(&format!("  {e}\n"));
                }
            }
            let p = dir.join("kind-steps.txt");
            if std::fs::write(&p, steps).is_ok() {
                written.push(p);
            }
            Ok(written)
        }
        .await;
        Ok(r?)
    }

    async fn keep(&self) -> BackendResult<(Vec<String>, String)> {
        let r: Result<(Vec<String>, String)> = async {
        if let Some(f) = self.forward.lock().await.take() {
            f.stop().await;
        }
        self.update(|st| st.kept = true);
        let st = self.state.lock().unwrap();
        let mut kept = vec![format!(
            "namespace {} (WorkerPool {}, ActorTemplate {TEMPLATE_NAME}) on context {}",
            self.opts.namespace(),
            self.opts.pool(),
            self.opts.context()
        )];
        kept.extend(st.atespaces.iter().map(|a| format!("atespace {a}")));
        kept.extend(st.actors.iter().map(|(a, i)| format!("actor {a}/{i}")));
        kept.extend(st.golden_actor.iter().map(|g| format!("golden actor {GOLDEN_ATESPACE}/{g}")));
        let how = if self.opts.state_dir.is_some() {
            "ate-conformance gc --backend kind (it reads this run's record and removes each of them)"
                .to_owned()
        } else {
            "suspend and delete the actors with kubectl ate, then kubectl delete the rendered manifest"
                .to_owned()
        };
        Ok((kept, how))
    }
        .await;
        Ok(r?)
    }

    async fn teardown(&self) -> BackendResult<()> {
        let r: Result<()> = async {
        if let Some(f) = self.forward.lock().await.take() {
            f.stop().await;
        }
        let mut errors = Vec::new();
        let actors: Vec<_> = self.state.lock().unwrap().actors.iter().cloned().collect();
        for (a, i) in actors {
            let r = async {
                let info = match self.actor_info(&a, &i, "RUNNING").await {
                    Ok(info) => info,
                    // Already gone (ateapi's NotFound, get_actor.go:34):
                    // nothing left to remove.
                    Err(e) if tools::is_actor_not_found(&format!("{e:#}"), &i) => {
                        self.track_actor(&a, &i, false);
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                if !info.state.is_suspended() {
                    self.suspend(&a, &i).await?;
                }
                self.delete_actor(&a, &i).await?;
                Ok::<(), anyhow::Error>(())
            }
            .await;
            if let Err(e) = r {
                errors.push(format!("actor {a}/{i}: {e:#}"));
            }
        }
        let atespaces: Vec<_> = self
            .state
            .lock()
            .unwrap()
            .atespaces
            .iter()
            .cloned()
            .collect();
        for a in atespaces {
            if let Err(e) = self.delete_atespace(&a).await {
                errors.push(format!("atespace {a}: {e:#}"));
            }
        }
        let rendered = self.state.lock().unwrap().rendered.clone();
        if let Some(m) = rendered {
            match self.restore_manifest(&m).map(|()| m.clone()) {
                Err(e) => errors.push(format!("{e:#}")),
                Ok(m) => match self
                    .run(
                        "delete the probe's Namespace, WorkerPool and ActorTemplate",
                        self.tools.kubectl_delete_manifest(&m),
                        "",
                    )
                    .await
                {
                    Ok(_) => self.update(|st| {
                        st.rendered = None;
                        st.rendered_text = None;
                    }),
                    Err(e) => errors.push(format!("{e:#}")),
                },
            }
        }
        // The golden actor stays in `ate-golden` after its template is gone
        // (the controller has no finalizer; actortemplate_controller.go:76-79
        // returns at once on deletion). It is suspended once the template is
        // Ready (:146-160); delete needs it suspended (delete_actor.go:41).
        let golden = self.state.lock().unwrap().golden_actor.clone();
        if let Some(g) = golden {
            match self.remove_golden_actor(&g).await {
                Ok(()) => self.update(|st| st.golden_actor = None),
                Err(e) => errors.push(format!("golden actor {GOLDEN_ATESPACE}/{g}: {e:#}")),
            }
        }
        let (cluster, registry) = {
            let st = self.state.lock().unwrap();
            (st.created_cluster, st.created_registry)
        };
        if cluster {
            if let Err(e) = self
                .run(
                    &format!(
                        "delete the kind cluster {} this run created",
                        self.opts.cluster
                    ),
                    self.tools.kind_delete_cluster(&self.opts.cluster),
                    "",
                )
                .await
            {
                errors.push(format!("{e:#}"));
            } else {
                self.update(|st| st.created_cluster = false);
            }
        }
        if registry {
            if let Err(e) = self
                .run(
                    "remove the local registry this run started",
                    self.tools.registry_remove(),
                    "",
                )
                .await
            {
                errors.push(format!("{e:#}"));
            } else {
                self.update(|st| st.created_registry = false);
            }
        }
        if !errors.is_empty() {
            bail!(
                "kind teardown left {} problem(s) (the run's record stays for `ate-conformance gc --backend kind`):\n  {}",
                errors.len(),
                errors.join("\n  ")
            );
        }
        self.forget_record();
        Ok(())
    }
        .await;
        Ok(r?)
    }
}
