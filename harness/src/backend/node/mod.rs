//! The node backend: upstream's real node components, `atelet` and one
//! `ateom-gvisor` per worker, given as the user's binaries
//! (`--atelet-bin`, `--ateom-bin`), on one machine, with the harness in
//! the control plane's place (CONTRACT.md V). In CI the same backend runs
//! an in-repo stand-in that speaks the same API over real runsc.
//!
//! What a run makes, in order, each recorded before the next step
//! ([`record`]): the node's mount and network namespaces and one pod netns
//! per worker ([`ns`]); an S3 endpoint in the node for EXTERNAL snapshots
//! ([`s3`]); `docker-registry` in the node with the probe and pause
//! images ([`registry`]); the runsc adapter in atelet's asset cache
//! (crate `ate-runsc-adapter`); atelet and the ateoms ([`agents`]); the
//! routing front on the host's loopback ([`front`]). The harness then does
//! what ateapi, the controller and the router do above atelet
//! ([`control`]): actors, workers, golden fan-out, suspend and resume.
//! [`host`] checks the host-side statements on the real node's files and
//! runs the harness's checker in actors with `runsc exec`. Teardown (and
//! `gc` after a killed run) ends everything by its own PID
//! ([`sandboxes`] for what ateom leaves). [`layout`] holds upstream's
//! node paths, [`options`] the flag group.

pub mod agents;
pub mod control;
pub mod front;
pub mod host;
pub mod layout;
pub mod ns;
pub mod options;
pub mod record;
pub mod registry;
pub mod s3;
pub mod sandboxes;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use async_trait::async_trait;
use ate_atelet_api::{
    ArchAssets, AssetFile, AteletClient, Container, HttpGetAction, Readyz, SandboxAssets, Target,
    WorkloadSpec,
};
use tracing::{info, warn};

pub use options::{NodeFlags, FLAGS};

use self::agents::{Binaries, BinaryPrint, NodeAgents};
use self::control::{Control, TemplateRec, Workers};
use self::front::Front;
use self::layout::Layout;
use self::ns::{Forward, Node};
use self::record::RunRecord;
use self::registry::NodeRegistry;
use self::s3::S3Endpoint;
use super::kind::oci;
use super::{
    ActorInfo, ActorRef, Backend, Evidence, Golden, HostAccess, Result as BackendResult,
    SandboxAccess,
};
use crate::router::{RoutedResponse, RouterClient};
use crate::run_id::RunId;

/// The probe's container name (not `pause`, which is reserved,
/// `validate.go:80-100`).
pub const APP_CONTAINER: &str = "probe";
/// The pause container's name and runsc ID (`cmd/ateom-gvisor/runsc.go`,
/// `main.go:280`).
pub const PAUSE_CONTAINER: &str = "pause";
/// Where the checker lies in the probe image.
pub const CHECKER_IN_IMAGE: &str = "ate-check";
/// The flags the adapter drops: the two of ateom's that runsc 20240729
/// lacks (CONTRACT.md V; `cmd/ateom-gvisor/runsc.go:75-105, 176-210`).
pub const DROPPED_FLAGS: [&str; 2] = ["allow-connected-on-save", "background"];
/// Why ID-9's rewrite hook cannot exist on a real node.
pub const NO_REWRITE_HOOK: &str =
    "atelet writes actor-id once per Run/Restore (cmd/atelet/main.go:648) and has \
     no hook to rewrite it while the actor runs";
/// One atelet call's deadline.
pub const CALL_DEADLINE: Duration = Duration::from_secs(120);

/// What the node backend is built with.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// This run's ID.
    pub run_id: RunId,
    /// The flags.
    pub flags: NodeFlags,
    /// Another probe binary (static).
    pub probe_bin: Option<PathBuf>,
    /// Runs live in `<state_root>/<run>` (`target/ate-state/node`).
    pub state_root: PathBuf,
    /// Logs go here.
    pub log_dir: PathBuf,
    /// How long the node may take to come up.
    pub start_timeout: Duration,
}

/// What a started run holds until teardown.
struct Parts {
    node: Node,
    s3: S3Endpoint,
    registry: NodeRegistry,
    agents: NodeAgents,
    _atelet_forward: Forward,
    front: Front,
}

/// What `bring_up` learnt.
struct Up {
    control: Arc<Control>,
    front: SocketAddr,
    layout: Layout,
    runsc_sha: String,
    adapter_log: PathBuf,
    prints: Vec<BinaryPrint>,
    runsc_version: String,
    probe: PathBuf,
    checker: PathBuf,
    pause_image: String,
}

/// The node backend.
pub struct NodeBackend {
    opts: NodeOptions,
    run_dir: PathBuf,
    parts: Mutex<Option<Parts>>,
    up: OnceLock<Up>,
    /// Golden evidence per template (planted before its checkpoint).
    golden_evidence: Mutex<HashMap<String, Evidence>>,
}

impl NodeBackend {
    /// A backend that has made nothing yet.
    pub fn new(opts: NodeOptions) -> NodeBackend {
        let run_dir = opts.state_root.join(opts.run_id.state_dir_name());
        NodeBackend {
            opts,
            run_dir,
            parts: Mutex::new(None),
            up: OnceLock::new(),
            golden_evidence: Mutex::new(HashMap::new()),
        }
    }

    /// The template namespace atelet is told for every template of this
    /// run: `ate-conf-<run>` (atelet knows no atespaces; a DNS-1123 label,
    /// `internal/resources/validate.go:42-59`). It makes every actor
    /// directory of the run its own (`<ns>:<template>:<id>`), which
    /// [`sandboxes`] relies on to never kill another run's process.
    pub fn namespace(&self) -> String {
        self.opts.run_id.namespace()
    }

    fn up(&self) -> Result<&Up> {
        self.up
            .get()
            .ok_or_else(|| anyhow!("the node backend is not up"))
    }

    /// Builds the node, step by step (module docs); on failure what was
    /// made is torn down by the caller's `teardown`.
    pub async fn bring_up(&self) -> Result<()> {
        let flags = &self.opts.flags;
        if let Some(m) = flags.missing() {
            anyhow::bail!("{m}");
        }
        // Absolute: they are started behind nsenter, in the node's mount
        // namespace, where a relative path does not resolve.
        let absolute = |p: &Option<PathBuf>| {
            let p = p.clone().expect("checked");
            std::fs::canonicalize(&p).with_context(|| format!("cannot resolve {}", p.display()))
        };
        let bins = Binaries {
            atelet: absolute(&flags.atelet)?,
            ateom: absolute(&flags.ateom)?,
        };
        let t0 = Instant::now();
        let mut phases: Vec<(&str, Duration)> = Vec::new();
        let mut mark = Instant::now();
        let mut phase = |name: &'static str, phases: &mut Vec<(&str, Duration)>| {
            phases.push((name, mark.elapsed()));
            mark = Instant::now();
        };
        std::fs::create_dir_all(&self.opts.state_root)
            .with_context(|| format!("cannot create {}", self.opts.state_root.display()))?;
        for line in record::gc_stale_runs(&self.opts.state_root).await? {
            warn!("an earlier node run was left behind: {line}");
            eprintln!("gc: {line}");
        }
        std::fs::create_dir_all(&self.run_dir)
            .with_context(|| format!("cannot create {}", self.run_dir.display()))?;
        std::fs::create_dir_all(&self.opts.log_dir)
            .with_context(|| format!("cannot create {}", self.opts.log_dir.display()))?;
        let rec = RunRecord::create(&self.run_dir)?;
        phase("gc", &mut phases);

        let prints = vec![
            agents::fingerprint(&bins.atelet).await?,
            agents::fingerprint(&bins.ateom).await?,
        ];
        let runsc_version = crate::first_line(
            &ate_cmd::Cmd::new(&flags.runsc)
                .arg("--version")
                .timeout(Duration::from_secs(10))
                .run()
                .await
                .with_context(|| format!("{} --version failed", flags.runsc.display()))?
                .stdout_str(),
        )
        .to_owned();
        let build = crate::fixture::BuildOptions::from_env();
        let statics = crate::fixture::static_bins(&build).await?;
        let adapter = crate::fixture::runsc_adapter(&build).await?;
        let probe = self.opts.probe_bin.clone().unwrap_or(statics.probe.clone());
        phase("binaries", &mut phases);

        let uids: Vec<String> = (0..flags.workers)
            .map(|i| format!("w{i}-{}", self.opts.run_id))
            .collect();
        let node = Node::create(&self.run_dir.join("node"), &uids).await?;
        for (i, pid) in node.holder_pids().into_iter().enumerate() {
            rec.add(
                if i == 0 {
                    "node namespace holder"
                } else {
                    "pod namespace holder"
                },
                pid,
            )?;
        }
        phase("namespaces", &mut phases);
        let layout = Layout::new(&node.var_lib());
        let netns = node.netns();
        let mut parts_node = Some(node);
        // From here on, a failure must still tear the node down: keep
        // what exists in `self.parts` as soon as it exists.
        let result = async {
            let node = parts_node.as_ref().expect("node");
            let s3 = S3Endpoint::start(
                node.listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                    .await?,
                &self.run_dir.join("s3"),
                "ate-snapshots",
                "ateconformance",
                &format!("secret-{}", self.opts.run_id),
            )
            .await?;
            let registry = NodeRegistry::start(
                node,
                &self.run_dir.join("registry"),
                Duration::from_secs(20),
            )
            .await?;
            if let Some(pid) = registry.pid() {
                rec.add("docker-registry", pid)?;
            }
            let (runsc_sha, adapter_log) = self.place_adapter(&layout, &adapter, &flags.runsc)?;
            let agents_started = Instant::now();
            let agents = NodeAgents::start(
                node,
                &bins,
                &s3.atelet_env(),
                &self.opts.log_dir,
                self.opts.start_timeout,
            )
            .await?;
            for (i, pid) in agents.pids().into_iter().enumerate() {
                rec.add(
                    if i == 0 {
                        "atelet".into()
                    } else {
                        format!("ateom {}", uids[i - 1])
                    }
                    .as_str(),
                    pid,
                )?;
            }
            let forward = node
                .forward(SocketAddr::from((Ipv4Addr::LOCALHOST, agents::ATELET_PORT)))
                .await?;
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://{}", forward.local_addr()))
                    .context("atelet endpoint")?
                    .connect_lazy();
            let workers = Workers::new(
                uids.clone(),
                node.workers().iter().map(|w| w.pod_addr).collect(),
            );
            let logs = uids
                .iter()
                .map(|u| self.opts.log_dir.join(format!("ateom-{u}.log")))
                .collect();
            let control = Arc::new(Control::new(
                AteletClient::new(channel, CALL_DEADLINE),
                workers,
                logs,
                layout.clone(),
            ));
            let front = Front::start(control.clone(), netns.clone()).await?;
            let agents_took = agents_started.elapsed();
            Ok::<_, anyhow::Error>((
                agents_took,
                s3,
                registry,
                agents,
                forward,
                front,
                control,
                runsc_sha,
                adapter_log,
            ))
        }
        .await;
        let (agents_took, s3, registry, agents, forward, front, control, runsc_sha, adapter_log) =
            match result {
                Ok(v) => v,
                Err(e) => {
                    if let Some(node) = parts_node.take() {
                        let _ = sandboxes::kill_leftovers(&layout).await;
                        if let Err(t) = node.teardown().await {
                            warn!(error = %format!("{t:#}"), "node teardown after a failed start");
                        }
                    }
                    return Err(e);
                }
            };
        let front_addr = front.addr();
        let pause_image_bin = statics.agent.clone();
        *self.parts.lock().expect("parts lock") = Some(Parts {
            node: parts_node.take().expect("node"),
            s3,
            registry,
            agents,
            _atelet_forward: forward,
            front,
        });
        phase("S3, registry, atelet and ateoms, front", &mut phases);
        let pause_image = self.push_pause(&pause_image_bin).await?;
        phase("pause image", &mut phases);
        let _ = self.up.set(Up {
            control,
            front: front_addr,
            layout,
            runsc_sha,
            adapter_log,
            prints,
            runsc_version,
            probe,
            checker: statics.checker.clone(),
            pause_image,
        });
        info!(
            workers = flags.workers,
            ms = t0.elapsed().as_millis() as u64,
            "node up: namespaces, S3, registry, atelet and ateoms, routing front"
        );
        let shown: Vec<String> = phases
            .iter()
            .map(|(n, d)| format!("{n} {:.2} s", d.as_secs_f64()))
            .chain(std::iter::once(format!(
                "of which atelet and ateoms ready {:.2} s",
                agents_took.as_secs_f64()
            )))
            .collect();
        eprintln!(
            "node: up in {:.2} s with {} workers ({}); atelet {}, ateom {}",
            t0.elapsed().as_secs_f64(),
            flags.workers,
            shown.join(", "),
            bins.atelet.display(),
            bins.ateom.display()
        );
        Ok(())
    }

    /// Places the adapter at `static-files/runsc-<its sha256>` with its
    /// config naming the real runsc; returns the sha256 and the drop log.
    fn place_adapter(
        &self,
        layout: &Layout,
        adapter: &Path,
        runsc: &Path,
    ) -> Result<(String, PathBuf)> {
        let bytes =
            std::fs::read(adapter).with_context(|| format!("cannot read {}", adapter.display()))?;
        let sha = crate::sha256_hex(&bytes);
        let dst = layout.runsc(&sha);
        std::fs::create_dir_all(layout.static_files())?;
        std::fs::write(&dst, &bytes).with_context(|| format!("cannot write {}", dst.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))?;
        let real =
            which::which(runsc).with_context(|| format!("runsc {} not found", runsc.display()))?;
        let log = self.opts.log_dir.join("runsc-adapter.jsonl");
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let cfg = ate_runsc_adapter::Config {
            runsc: real.display().to_string(),
            drop: DROPPED_FLAGS.iter().map(|s| s.to_string()).collect(),
            log: log.display().to_string(),
        };
        let cfg_path = PathBuf::from(format!("{}.adapter.json", dst.display()));
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg)?)
            .with_context(|| format!("cannot write {}", cfg_path.display()))?;
        Ok((sha, log))
    }

    async fn registry_push(
        &self,
        repository: &str,
        tag: &str,
        image: &oci::BuiltImage,
    ) -> Result<String> {
        let pusher = {
            let parts = self.parts.lock().expect("parts lock");
            parts
                .as_ref()
                .ok_or_else(|| anyhow!("the node is torn down"))?
                .registry
                .pusher()
        };
        pusher.push(repository, tag, image).await
    }

    async fn push_pause(&self, agent: &Path) -> Result<String> {
        let a = agent.to_owned();
        let image = tokio::task::spawn_blocking(move || {
            oci::build_image(&oci::ImageSpec::new(&a, "pause"))
        })
        .await
        .context("the pause image build panicked")??;
        self.registry_push("ate/pause", &format!("conf-{}", self.opts.run_id), &image)
            .await
    }

    /// Builds and pushes a probe image (probe at `/probe`, the checker at
    /// `/ate-check`, plus `symlinks`); returns its reference.
    async fn push_probe(&self, tag: &str, symlinks: &[(String, String)]) -> Result<String> {
        let up = self.up()?;
        let (probe, checker, links) = (up.probe.clone(), up.checker.clone(), symlinks.to_vec());
        let image = tokio::task::spawn_blocking(move || {
            let extra = [(checker, CHECKER_IN_IMAGE.to_owned())];
            oci::build_image(&oci::ImageSpec {
                binary: &probe,
                path_in_image: "probe",
                symlinks: &links,
                extra_binaries: &extra,
            })
        })
        .await
        .context("the probe image build panicked")??;
        self.registry_push("ate/probe", tag, &image).await
    }

    /// The probe's workload: `/probe` (atelet runs the request's command,
    /// never the image's entrypoint: `cmd/atelet/main.go:714-720`), ready
    /// when `GET /healthz` on port 80 answers.
    fn probe_spec(&self, image: &str) -> Result<WorkloadSpec> {
        Ok(WorkloadSpec {
            containers: vec![Container {
                name: APP_CONTAINER.into(),
                image: image.to_owned(),
                command: vec!["/probe".into()],
                env: Vec::new(),
                readyz: Some(Readyz {
                    http_get: Some(HttpGetAction {
                        path: "/healthz".into(),
                        port: i32::from(control::ACTOR_PORT),
                    }),
                }),
                volume_mounts: Vec::new(),
            }],
            pause_image: self.up()?.pause_image.clone(),
            volumes: Vec::new(),
        })
    }

    /// The sandbox assets of every Run: runsc (the adapter) by its sha256;
    /// the file is in the cache, so atelet never fetches the url
    /// (`cmd/atelet/sandbox_assets.go:110-125`).
    fn assets(&self) -> Result<SandboxAssets> {
        let file = AssetFile {
            url: "https://127.0.0.1/ate-conformance/runsc-is-in-the-cache-never-fetched".into(),
            sha256: self.up()?.runsc_sha.clone(),
        };
        Ok(SandboxAssets {
            sandbox_class: "gvisor".into(),
            assets: [(
                "amd64".to_owned(),
                ArchAssets {
                    files: [("runsc".to_owned(), file)].into_iter().collect(),
                },
            )]
            .into_iter()
            .collect(),
        })
    }

    /// Runs a golden of template `name` from `image`, marks it with the
    /// checker when `mark` (the golden evidence), and checkpoints it to
    /// the template's EXTERNAL prefix. Returns the golden's ID and prefix.
    async fn make_golden(&self, name: &str, image: &str, mark: bool) -> Result<(String, String)> {
        let up = self.up()?;
        let spec = self.probe_spec(image)?;
        let golden_id = format!("golden-{}", self.opts.run_id);
        let uri = {
            let parts = self.parts.lock().expect("parts lock");
            parts
                .as_ref()
                .ok_or_else(|| anyhow!("the node is torn down"))?
                .s3
                .uri_prefix(&self.namespace(), name)
        };
        let t = Instant::now();
        let w = up
            .control
            .run_golden(&self.namespace(), name, &golden_id, &spec, self.assets()?)
            .await?;
        let ran = t.elapsed();
        let target = Target {
            ateom_uid: up.control.workers().uid(w).to_owned(),
            namespace: self.namespace(),
            template: name.to_owned(),
            actor_id: golden_id.clone(),
        };
        let result = async {
            if mark {
                let token = format!("golden-{}-{}", self.opts.run_id, std::process::id());
                let ev: Evidence = self
                    .check_in(name, &golden_id, &ate_checker::Command::Mark { token })
                    .await
                    .context("cannot mark the golden before its checkpoint")?;
                self.golden_evidence
                    .lock()
                    .expect("evidence lock")
                    .insert(name.to_owned(), ev);
            }
            let c = Instant::now();
            up.control.checkpoint(w, &target, &spec, &uri).await?;
            Ok::<_, anyhow::Error>(c.elapsed())
        }
        .await;
        up.control.workers().give(w);
        let checkpointed = result?;
        eprintln!(
            "node: golden {golden_id} of {name}: Run {:.2} s, Checkpoint {:.2} s to {uri}",
            ran.as_secs_f64(),
            checkpointed.as_secs_f64()
        );
        up.control.add_template(
            name,
            TemplateRec {
                namespace: self.namespace(),
                spec,
                golden_uri: uri.clone(),
            },
        );
        Ok((golden_id, uri))
    }

    /// The adapter's drops, summarised: `flag ×N` per flag.
    fn dropped_flags(&self) -> String {
        let Ok(up) = self.up() else {
            return "not started".into();
        };
        let text = std::fs::read_to_string(&up.adapter_log).unwrap_or_default();
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for line in text.lines() {
            if let Ok(d) = serde_json::from_str::<ate_runsc_adapter::Dropped>(line) {
                for f in d.dropped {
                    *counts
                        .entry(format!("{} {f}", d.subcommand.clone().unwrap_or_default()))
                        .or_default() += 1;
                }
            }
        }
        if counts.is_empty() {
            "none".into()
        } else {
            counts
                .iter()
                .map(|(f, n)| format!("{f} x{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    async fn teardown_inner(&self) -> Result<()> {
        let parts = self.parts.lock().expect("parts lock").take();
        let Some(p) = parts else {
            return Ok(());
        };
        let Parts {
            node,
            s3,
            mut registry,
            mut agents,
            _atelet_forward,
            front,
        } = p;
        let mut failed = Vec::new();
        drop(front);
        drop(_atelet_forward);
        if let Err(e) = agents.stop().await {
            failed.push(format!("{e:#}"));
        }
        // Stopping atelet and ateom leaves their sandboxes running
        // (measured): end them by PID from runsc's state files.
        let layout = Layout::new(&node.var_lib());
        match sandboxes::kill_leftovers(&layout).await {
            Ok(killed) if !killed.is_empty() => {
                info!(
                    count = killed.len(),
                    "ended the sandbox processes ateom left"
                )
            }
            Ok(_) => {}
            Err(e) => failed.push(format!("{e:#}")),
        }
        registry.stop().await;
        // Every actor directory of the run is `<ns>:...` with the run's own
        // namespace, so its runsc calls name it in `-root`.
        match node
            .kill_remaining(&format!("/actors/{}:", self.namespace()))
            .await
        {
            Ok(killed) if !killed.is_empty() => {
                info!(
                    ?killed,
                    "ended what the node's processes left running in it"
                )
            }
            Ok(_) => {}
            Err(e) => failed.push(format!("{e:#}")),
        }
        s3.stop().await;
        if let Err(e) = node.teardown().await {
            failed.push(format!("{e:#}"));
        }
        if failed.is_empty() {
            std::fs::remove_dir_all(&self.run_dir)
                .with_context(|| format!("cannot remove {}", self.run_dir.display()))?;
            Ok(())
        } else {
            anyhow::bail!("node teardown: {}", failed.join("; "))
        }
    }
}

#[async_trait]
impl Backend for NodeBackend {
    fn name(&self) -> &'static str {
        "node"
    }

    fn fingerprint(&self) -> Vec<(String, String)> {
        let mut out = vec![(
            "backend".to_owned(),
            "node (the user's atelet and ateom-gvisor in namespaces of ours; the harness as control plane)".to_owned(),
        )];
        if let Ok(up) = self.up() {
            for p in &up.prints {
                let name = p
                    .path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                out.push((
                    name,
                    format!(
                        "{} (sha256 {}, --version: {})",
                        p.path.display(),
                        p.sha256,
                        p.version
                    ),
                ));
            }
            out.push(("runsc".into(), up.runsc_version.clone()));
            out.push((
                "runsc adapter".into(),
                format!("static-files/runsc-{}", up.runsc_sha),
            ));
            out.push((
                "runsc flags dropped by the adapter".into(),
                self.dropped_flags(),
            ));
            out.push(("workers".into(), up.control.workers().len().to_string()));
        }
        out
    }

    async fn deploy_probe(&self, _deadline: Duration) -> BackendResult<Golden> {
        let t = Instant::now();
        let name = self.opts.run_id.probe_template();
        let image = self
            .push_probe(&format!("conf-{}", self.opts.run_id), &[])
            .await?;
        let (golden_actor_id, uri) = self.make_golden(&name, &image, true).await?;
        Ok(Golden {
            template: name,
            golden_actor_id,
            snapshot: Some(uri),
            ready_after: t.elapsed(),
        })
    }

    async fn create_atespace(&self, _atespace: &str) -> BackendResult<()> {
        // Atespaces are the control plane's alone (atelet knows none).
        Ok(())
    }

    async fn delete_atespace(&self, _atespace: &str) -> BackendResult<()> {
        Ok(())
    }

    async fn create_actor(
        &self,
        atespace: &str,
        id: &str,
        template: &str,
    ) -> BackendResult<ActorInfo> {
        Ok(self.up()?.control.create_actor(atespace, id, template)?)
    }

    async fn resume(&self, atespace: &str, id: &str) -> BackendResult<ActorInfo> {
        Ok(self.up()?.control.resume(atespace, id).await?)
    }

    async fn suspend(&self, atespace: &str, id: &str) -> BackendResult<ActorInfo> {
        Ok(self.up()?.control.suspend(atespace, id).await?)
    }

    async fn delete_actor(&self, atespace: &str, id: &str) -> BackendResult<()> {
        Ok(self.up()?.control.delete(atespace, id).await?)
    }

    async fn get_actor(&self, atespace: &str, id: &str) -> BackendResult<ActorInfo> {
        Ok(self.up()?.control.get(atespace, id).await?)
    }

    fn router(&self) -> RouterClient {
        match self.up() {
            Ok(up) => RouterClient::new(up.front),
            // Not up: a port nothing listens on, so a request fails loudly.
            Err(_) => RouterClient::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 9))),
        }
    }

    fn router_refusal(&self, resp: &RoutedResponse) -> Option<String> {
        front::is_front_error(&resp.body)
    }

    async fn live_sandboxes(&self) -> BackendResult<Vec<String>> {
        let up = self.up()?;
        let mut ids: Vec<String> = sandboxes::leftovers(&up.layout)?
            .into_iter()
            .filter(|l| l.role == "runsc-sandbox")
            .map(|l| format!("{}/{}", l.actor_dir, l.container))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn host(&self) -> Option<&dyn HostAccess> {
        Some(self)
    }

    fn sandbox(&self) -> Option<&dyn SandboxAccess> {
        Some(self)
    }

    async fn delete_template(&self, name: &str) -> BackendResult<()> {
        Ok(self.up()?.control.delete_template(name)?)
    }

    async fn collect_artifacts(
        &self,
        actors: &[ActorRef],
        dir: &Path,
    ) -> BackendResult<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(anyhow::Error::from)?;
        let mut written = Vec::new();
        let logs = std::fs::read_dir(&self.opts.log_dir).map_err(anyhow::Error::from)?;
        for e in logs.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("atelet")
                || name.starts_with("ateom-")
                || name.starts_with("runsc-adapter")
            {
                let dst = dir.join(&name);
                if std::fs::copy(e.path(), &dst).is_ok() {
                    written.push(dst);
                }
            }
        }
        if let Ok(up) = self.up() {
            for a in actors {
                if let Ok((tpl, name)) = up.control.template_of(&a.atespace, &a.id).await {
                    for c in [PAUSE_CONTAINER, APP_CONTAINER] {
                        let src = up
                            .layout
                            .bundle(&tpl.namespace, &name, &a.id, c)
                            .join("config.json");
                        let dst = dir.join(format!("{}-{c}-config.json", a.id));
                        if std::fs::copy(&src, &dst).is_ok() {
                            written.push(dst);
                        }
                    }
                }
            }
        }
        Ok(written)
    }

    async fn keep(&self) -> BackendResult<(Vec<String>, String)> {
        let mut lines = vec![format!("node run directory {}", self.run_dir.display())];
        if let Some(p) = self.parts.lock().expect("parts lock").as_ref() {
            lines.push(format!(
                "namespace holders (pids) {:?}",
                p.node.holder_pids()
            ));
            lines.push(format!("atelet and ateoms (pids) {:?}", p.agents.pids()));
        }
        // Leave the processes running: forget them without stopping.
        if let Some(p) = self.parts.lock().expect("parts lock").take() {
            std::mem::forget(p);
        }
        Ok((
            lines,
            "cargo run -q -p ate-cli --bin ate-conformance -- gc".into(),
        ))
    }

    async fn teardown(&self) -> BackendResult<()> {
        Ok(self.teardown_inner().await?)
    }
}
