//! The atelet stand-in's service: `atelet.AteomHerder` (`Run`,
//! `Checkpoint`, `Restore`), doing what upstream's atelet and ateom-gvisor
//! do together (`cmd/atelet/main.go:212-569`,
//! `cmd/ateom-gvisor/main.go:180-443`), with upstream's paths, runsc
//! calls, container IDs and snapshot objects.
//!
//! **Invariants:**
//! - **One actor at a time per worker** (`target_ateom_uid`): `Run` and
//!   `Restore` first remove the worker's previous actor's containers; calls
//!   for one worker are serialised (upstream's ateom holds one lock per
//!   worker, `cmd/ateom-gvisor/main.go:161-163`).
//! - **Every container the stand-in creates is removed by its ID**
//!   (`runsc -root <actor>/runsc-state delete -force <id>`) on
//!   `Checkpoint`, on a failed `Run`/`Restore` and when the worker's next
//!   actor starts. Like upstream's, SIGTERM leaves running sandboxes alone.
//!
//! Where the stand-in differs from upstream, on purpose:
//! - runsc comes only from the asset cache
//!   (`static-files/runsc-<sha256>`); a miss is an error, never a download
//!   (upstream fetches the url, `cmd/atelet/sandbox_assets.go:117-181`).
//! - Readiness (`readyz.http_get`) is polled at the actor's address,
//!   `169.254.17.2:<port>`, from the worker pod's netns (where upstream's
//!   ateom polls it, `cmd/ateom-gvisor/main.go:231-234`,
//!   `internal/readyz/readyz.go`), entered through the ateom stand-in's
//!   PID ([`Paths::ateom_pid_file`]). Each probe reads its whole response
//!   and closes its side first, as Go's client does: a connection the actor
//!   closes first lingers and blocks a checkpoint with this runsc
//!   (CONTRACT.md V).
//! - The actor's `eth0` is given its address again before every sandbox
//!   start ([`crate::ateom::configure_actor_veth`]); upstream's ateom sets
//!   the whole actor network up per Run/Restore.
//! - EXTERNAL snapshot objects hold the raw files (see [`super::snapshot`]).
//! - `DATA` scope (`runsc fscheckpoint`) and durable-dir volumes are not
//!   implemented (runsc 20240729 lacks `fscheckpoint`): `UNIMPLEMENTED`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ate_atelet_api::{
    snapshot, CheckpointType, Container, RunRequest, SnapshotRequest, SnapshotScope, WorkloadSpec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Status;
use tracing::{info, warn};

use crate::image::ImageStore;
use crate::paths::{check_name, ActorRef, Paths, PAUSE};
use crate::runsc::ActorRunsc;
use crate::snapshot::{
    object_key, parse_uri_prefix, AssetEntry, S3Client, SandboxRecord, MANIFEST,
};
use ate_refagent::bundle::{self, BundleSpec, IdentityMount, SandboxPart};

/// The architecture whose assets are used (Go's `runtime.GOARCH` spelling,
/// `cmd/atelet/sandbox_assets.go:76`).
pub const ARCH: &str = "amd64";

/// The `PATH` every container gets first (`cmd/atelet/oci.go:111-114`).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// readyz timing (`internal/readyz/readyz.go`: 30 s overall, 250 ms per
/// request, default path `/readyz`).
const READYZ_OVERALL: Duration = Duration::from_secs(30);
const READYZ_REQUEST: Duration = Duration::from_millis(250);
const READYZ_INTERVAL: Duration = Duration::from_millis(5);
const READYZ_DEFAULT_PATH: &str = "/readyz";

/// The stand-in's settings.
pub struct Config {
    /// The node's tree.
    pub paths: Paths,
    /// `ATE_STORAGE_BACKEND=s3` and its variables, if set.
    pub s3: Option<S3Client>,
    /// `--localhost-registry-replacement`.
    pub localhost_registry_replacement: Option<String>,
    /// Each runsc call's deadline.
    pub runsc_timeout: Duration,
}

/// A worker's current actor.
#[derive(Debug, Clone)]
struct Running {
    actor: ActorRef,
    runsc: PathBuf,
    /// Created containers, pause first.
    containers: Vec<String>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Running>>>;

/// The service.
pub struct Atelet {
    cfg: Config,
    images: ImageStore,
    workers: std::sync::Mutex<HashMap<String, Slot>>,
}

/// A request's names, checked.
struct Target {
    uid: String,
    actor: ActorRef,
}

fn target(
    uid: &str,
    ns: &str,
    tmpl: &str,
    id: &str,
    spec: Option<&WorkloadSpec>,
) -> Result<Target, Status> {
    let inv = |e: crate::paths::NameError| Status::invalid_argument(e.to_string());
    check_name("target_ateom_uid", uid).map_err(inv)?;
    check_name("actor_template_namespace", ns).map_err(inv)?;
    check_name("actor_template_name", tmpl).map_err(inv)?;
    check_name("actor_id", id).map_err(inv)?;
    let spec = spec.ok_or_else(|| Status::invalid_argument("spec is required"))?;
    let mut seen = std::collections::HashSet::new();
    for c in &spec.containers {
        check_name("container name", &c.name).map_err(inv)?;
        if c.name == PAUSE {
            return Err(Status::invalid_argument(
                "container name \"pause\" is reserved for the pause container",
            ));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(Status::invalid_argument(format!(
                "duplicate container name {:?}",
                c.name
            )));
        }
        if !c.volume_mounts.is_empty() {
            return Err(Status::unimplemented(
                "volume mounts (durable-dir) are not implemented by the atelet stand-in",
            ));
        }
    }
    Ok(Target {
        uid: uid.to_owned(),
        actor: ActorRef {
            namespace: ns.to_owned(),
            template: tmpl.to_owned(),
            id: id.to_owned(),
        },
    })
}

/// A failed step of a call, as a status naming the call, actor and worker.
fn failed(method: &str, t: &Target, step: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!(
        "{method} of actor {} on worker {}: {step}: {e}",
        t.actor, t.uid
    ))
}

/// `Display` of an error with its causes, `: `-joined.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Atelet {
    /// A service with `cfg`.
    pub fn new(cfg: Config) -> Atelet {
        let images = ImageStore::new(
            &cfg.paths.image_cache(),
            cfg.localhost_registry_replacement.clone(),
        );
        Atelet {
            cfg,
            images,
            workers: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, uid: &str) -> Slot {
        self.workers
            .lock()
            .expect("the workers map is never poisoned")
            .entry(uid.to_owned())
            .or_default()
            .clone()
    }

    fn runsc_for(&self, r: &Running) -> ActorRunsc {
        ActorRunsc::new(&r.runsc, &self.cfg.paths, &r.actor, self.cfg.runsc_timeout)
    }

    /// Removes every container of `r` by its ID, apps before pause
    /// (`cmd/ateom-gvisor/main.go:330-354`); failures are logged, and
    /// returned joined.
    async fn remove_containers(&self, r: &Running) -> Result<(), String> {
        let rs = self.runsc_for(r);
        let mut errors = Vec::new();
        for c in r.containers.iter().rev() {
            let t = std::time::Instant::now();
            match rs.delete(c).await {
                Ok(()) => {
                    info!(actor = %r.actor, container = %c, elapsed = ?t.elapsed(), "deleted container")
                }
                Err(e) => {
                    warn!(actor = %r.actor, container = %c, error = %e, "cannot delete container");
                    errors.push(e.to_string());
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Ends the worker's current actor, if any.
    async fn teardown(&self, current: &mut Option<Running>) {
        if let Some(r) = current.take() {
            info!(actor = %r.actor, "removing the worker's previous actor");
            let _ = self.remove_containers(&r).await;
        }
    }

    /// atelet's `resetActorDirs` (`cmd/atelet/main.go:947-1009`).
    fn reset_actor_dirs(&self, a: &ActorRef) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for (dir, mode) in self.cfg.paths.reset_dirs(a) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    fn write_record(&self, a: &ActorRef, rec: &SandboxRecord) -> std::io::Result<()> {
        let path = self.cfg.paths.sandbox_assets_file(a);
        let json = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        std::fs::create_dir_all(self.cfg.paths.actor(a))?;
        ate_refagent::identity::write_file_atomic(
            &self.cfg.paths.actor(a),
            "sandbox-assets.json",
            &json,
            0o600,
        )
        .map_err(|e| std::io::Error::other(format!("{}: {}", path.display(), chain(&e))))
    }

    /// The cached runsc of `rec` (`cmd/atelet/sandbox_assets.go:95-181`,
    /// without the download).
    fn runsc_path(&self, rec: &SandboxRecord) -> Result<PathBuf, Status> {
        let entry = rec
            .assets
            .get("runsc")
            .ok_or_else(|| Status::invalid_argument("sandbox assets have no \"runsc\" file"))?;
        let sha = &entry.sha256;
        if sha.len() != 64
            || !sha
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Status::invalid_argument(format!(
                "invalid runsc sha256 {sha:?}: want 64 lowercase hex digits"
            )));
        }
        let path = self.cfg.paths.runsc_binary(sha);
        if !path.is_file() {
            return Err(Status::failed_precondition(format!(
                "while fetching sandbox asset \"runsc\": {} is not in the asset cache, and the atelet stand-in never \
                 downloads (upstream would fetch {} and check its sha256); place the runsc (adapter) there first",
                path.display(),
                entry.url
            )));
        }
        Ok(path)
    }

    /// The bundles of the pause and every app container
    /// (`cmd/atelet/main.go:633-738`, `cmd/atelet/oci.go:56-233`).
    async fn prepare_bundles(&self, t: &Target, spec: &WorkloadSpec) -> Result<(), String> {
        let paths = &self.cfg.paths;
        let identity = paths.identity(&t.actor);
        std::fs::create_dir_all(&identity)
            .map_err(|e| format!("while creating actor identity dir: {e}"))?;
        ate_refagent::identity::write_actor_id(&identity, t.actor.id.as_bytes())
            .map_err(|e| format!("while writing actor identity file: {}", chain(&e)))?;
        let netns = paths.netns(&t.uid);
        self.prepare_one(
            t,
            PAUSE,
            &spec.pause_image,
            vec!["/pause".into()],
            Vec::new(),
            None,
            &netns,
        )
        .await
        .map_err(|e| format!("while creating pause OCI bundle: {e}"))?;
        for c in &spec.containers {
            let env = c
                .env
                .iter()
                .map(|e| format!("{}={}", e.name, e.value))
                .collect();
            self.prepare_one(
                t,
                &c.name,
                &c.image,
                c.command.clone(),
                env,
                Some(&identity),
                &netns,
            )
            .await
            .map_err(|e| format!("while creating {:?} OCI bundle: {e}", c.name))?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn prepare_one(
        &self,
        t: &Target,
        name: &str,
        image: &str,
        args: Vec<String>,
        env: Vec<String>,
        identity: Option<&Path>,
        netns: &Path,
    ) -> Result<(), String> {
        let bundle_dir = self.cfg.paths.bundle(&t.actor, name);
        let rootfs = bundle_dir.join("rootfs");
        match std::fs::remove_dir_all(&rootfs) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!(
                    "while clearing rootfs {:?}: {e}",
                    rootfs.display().to_string()
                ))
            }
        }
        std::fs::create_dir_all(&rootfs)
            .map_err(|e| format!("in os.MkdirAll for container bundle dir: {e}"))?;
        let (tree, _digest) = self
            .images
            .unpacked(image)
            .await
            .map_err(|e| format!("in pullCache.Fetch: {}", chain(&e)))?;
        let (from, to) = (tree.clone(), rootfs.clone());
        tokio::task::spawn_blocking(move || ate_refagent::rootfs::copy_image_tree(&from, &to))
            .await
            .expect("the copy does not panic")
            .map_err(|e| format!("in untar: {}", chain(&e)))?;
        if identity.is_some() {
            // Confined to the rootfs: an image's symlink `run -> /outside`
            // is refused, as upstream's os.Root refuses it
            // (`cmd/atelet/oci.go:84-91, 235-251`), with its words (Go
            // 1.27.3's os.Root, checked: `creating mount dir "run/ate":
            // mkdirat run/ate: path escapes from parent`). Stricter than
            // os.Root: a symlink that stays inside the rootfs is refused
            // too (`ate_refagent::rootfs`, ID-13).
            ate_refagent::rootfs::mkdir_all_in_root(&rootfs, Path::new("run/ate"), 0o755).map_err(|e| match e {
                ate_refagent::rootfs::RootfsError::Symlink { .. } => format!(
                    "while creating identity mount point: creating mount dir \"run/ate\": mkdirat run/ate: path escapes from parent ({e})"
                ),
                e => format!("while creating identity mount point: creating mount dir \"run/ate\": {}", chain(&e)),
            })?;
        }
        let mut envs = vec![DEFAULT_PATH.to_owned()];
        envs.extend(env);
        if args.is_empty() {
            // runsc create refuses such a bundle with this message; upstream
            // passes it to runsc as it is (`cmd/atelet/main.go:714-720`).
            return Err("Spec.Process.Arg must be defined".to_owned());
        }
        let part = if identity.is_some() {
            SandboxPart::App {
                sandbox_id: PAUSE.to_owned(),
            }
        } else {
            SandboxPart::Pause
        };
        let mut spec = bundle::build_spec(&BundleSpec {
            args,
            env: envs,
            cwd: "/".into(),
            hostname: "runsc".into(),
            rootfs: rootfs.clone(),
            readonly_root: false,
            identity: identity.map_or(IdentityMount::None, |d| {
                IdentityMount::ReadOnlyDir(d.to_owned())
            }),
            helper_dir: None,
            part,
        })
        .map_err(|e| format!("while building OCI spec: {}", chain(&e)))?;
        // The sandbox joins the worker's netns (`cmd/atelet/oci.go:200-218`).
        if let Some(linux) = spec.linux_mut() {
            if let Some(nss) = linux.namespaces_mut() {
                for ns in nss.iter_mut() {
                    if ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network {
                        ns.set_path(Some(netns.to_owned()));
                    }
                }
            }
        }
        // The container's own name (`cmd/atelet/main.go:722-726`).
        if let Some(ann) = spec.annotations_mut() {
            ann.insert(bundle::CRI_CONTAINER_NAME.to_owned(), name.to_owned());
        }
        // /etc/resolv.conf, read-only, as upstream mounts it (`oci.go:138-143`).
        if Path::new("/etc/resolv.conf").is_file() {
            let m = oci_spec::runtime::MountBuilder::default()
                .destination("/etc/resolv.conf")
                .typ("bind")
                .source("/etc/resolv.conf")
                .options(vec!["rbind".to_owned(), "ro".to_owned()])
                .build()
                .map_err(|e| format!("while building OCI spec: {e}"))?;
            if let Some(ms) = spec.mounts_mut() {
                ms.push(m);
            }
        }
        bundle::write_bundle(&bundle_dir, &spec)
            .map_err(|e| format!("while writing OCI spec: {}", chain(&e)))
    }

    /// The worker pod's netns: `/proc/<ateom stand-in>/ns/net`.
    fn pod_netns(&self, uid: &str) -> Result<PathBuf, String> {
        let f = self.cfg.paths.ateom_pid_file(uid);
        let text = std::fs::read_to_string(&f).map_err(|e| {
            format!(
                "cannot read {}: {e} (is the ateom stand-in of worker {uid} running?)",
                f.display()
            )
        })?;
        let pid: u32 = text
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", f.display()))?;
        Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    /// Waits until every container with `readyz.http_get` answers 200
    /// (`internal/readyz/readyz.go`).
    async fn wait_ready(&self, uid: &str, containers: &[Container]) -> Result<(), String> {
        let probes: Vec<_> = containers
            .iter()
            .filter_map(|c| {
                c.readyz
                    .as_ref()
                    .and_then(|r| r.http_get.as_ref())
                    .map(|h| (c.name.clone(), h.clone()))
            })
            .collect();
        if probes.is_empty() {
            return Ok(());
        }
        let netns = self.pod_netns(uid)?;
        for (name, h) in probes {
            let port = u16::try_from(h.port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("invalid readyz config for {name:?}: port {}", h.port))?;
            let path = if h.path.is_empty() {
                READYZ_DEFAULT_PATH.to_owned()
            } else {
                h.path.clone()
            };
            let target = SocketAddr::from((crate::ateom::ACTOR_IP, port));
            let start = tokio::time::Instant::now();
            let mut attempts = 0u32;
            let mut last;
            loop {
                attempts += 1;
                match tokio::time::timeout(READYZ_REQUEST, get_status(&netns, target, &path)).await
                {
                    Ok(Ok(200)) => {
                        info!(container = %name, %target, attempts, elapsed = ?start.elapsed(), "readyz reached 200");
                        break;
                    }
                    Ok(Ok(code)) => last = format!("status {code}"),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = format!("no answer within {READYZ_REQUEST:?}"),
                }
                if start.elapsed() >= READYZ_OVERALL {
                    return Err(format!(
                        "readyz for {name:?} never returned 200 within {READYZ_OVERALL:?} ({attempts} attempts, last error: {last}; GET http://{target}{path})"
                    ));
                }
                tokio::time::sleep(READYZ_INTERVAL).await;
            }
        }
        Ok(())
    }

    /// Starts the bundles prepared for `t` (Run: create + start; Restore:
    /// create + restore), pause first, recording each created container
    /// in `run` so a failure can remove them.
    async fn start_containers(
        &self,
        run: &mut Running,
        spec: &WorkloadSpec,
        image: Option<&Path>,
    ) -> Result<(), String> {
        let rs = self.runsc_for(run);
        let names: Vec<String> = std::iter::once(PAUSE.to_owned())
            .chain(spec.containers.iter().map(|c| c.name.clone()))
            .collect();
        for c in names {
            let what = if c == PAUSE {
                "pause container".to_owned()
            } else {
                format!("{c:?} application container")
            };
            rs.create(&c)
                .await
                .map_err(|e| format!("while creating {what}: {e}"))?;
            run.containers.push(c.clone());
            match image {
                None => rs.start(&c).await,
                Some(img) => rs.restore(&c, img).await,
            }
            .map_err(|e| format!("while starting {what}: {e}"))?;
        }
        Ok(())
    }

    async fn run_inner(&self, req: RunRequest) -> Result<(), Status> {
        let t = target(
            &req.target_ateom_uid,
            &req.actor_template_namespace,
            &req.actor_template_name,
            &req.actor_id,
            req.spec.as_ref(),
        )?;
        let spec = req.spec.clone().unwrap_or_default();
        let rec = record_from_request(req.sandbox_assets.as_ref())?;
        let runsc = self.runsc_path(&rec)?;
        self.check_worker(&t, "Run")?;
        let slot = self.slot(&t.uid);
        let mut current = slot.lock().await;
        self.teardown(&mut current).await;
        info!(actor = %t.actor, worker = %t.uid, "Run");
        self.reset_actor_dirs(&t.actor)
            .map_err(|e| failed("Run", &t, "while resetting actor dirs", e))?;
        self.write_record(&t.actor, &rec)
            .map_err(|e| failed("Run", &t, "while recording sandbox assets", e))?;
        self.prepare_bundles(&t, &spec)
            .await
            .map_err(|e| failed("Run", &t, "while preparing OCI bundles", e))?;
        let run = self
            .boot(&t, &spec, runsc, None)
            .await
            .map_err(|e| failed("Run", &t, "while calling ateom.RunWorkload", e))?;
        *current = Some(run);
        Ok(())
    }

    /// The actor's network, its containers (created and started, or
    /// restored from `image`) and readiness, as ateom's RunWorkload and
    /// RestoreWorkload do; on failure every container made is removed.
    async fn boot(
        &self,
        t: &Target,
        spec: &WorkloadSpec,
        runsc: PathBuf,
        image: Option<&Path>,
    ) -> Result<Running, String> {
        let mut run = Running {
            actor: t.actor.clone(),
            runsc,
            containers: Vec::new(),
        };
        let started = async {
            crate::ateom::configure_actor_veth(&Paths::netns_name(&t.uid))
                .await
                .map_err(|e| format!("while setting up actor network: {e}"))?;
            self.start_containers(&mut run, spec, image).await?;
            self.wait_ready(&t.uid, &spec.containers)
                .await
                .map_err(|e| format!("while waiting for container readyz: {e}"))
        }
        .await;
        match started {
            Ok(()) => Ok(run),
            Err(e) => {
                let _ = self.remove_containers(&run).await;
                Err(e)
            }
        }
    }

    /// The worker's ateom is up: its socket and its netns are there.
    fn check_worker(&self, t: &Target, method: &str) -> Result<(), Status> {
        let sock = self.cfg.paths.ateom_socket(&t.uid);
        let netns = self.cfg.paths.netns(&t.uid);
        for (what, p) in [("socket", &sock), ("network namespace", &netns)] {
            if !p.exists() {
                return Err(Status::unavailable(format!(
                    "{method} of actor {} on worker {}: while getting ateom conn for {}: no ateom {what} at {}",
                    t.actor,
                    t.uid,
                    t.uid,
                    p.display()
                )));
            }
        }
        Ok(())
    }

    fn check_snapshot(&self, req: &SnapshotRequest, method: &str) -> Result<Target, Status> {
        let t = target(
            &req.target_ateom_uid,
            &req.actor_template_namespace,
            &req.actor_template_name,
            &req.actor_id,
            req.spec.as_ref(),
        )?;
        match SnapshotScope::try_from(req.scope) {
            Ok(SnapshotScope::Full) => {}
            Ok(SnapshotScope::Data) => {
                return Err(Status::unimplemented(format!(
                    "{method}: DATA scope needs runsc fscheckpoint, which the atelet stand-in does not implement"
                )))
            }
            _ => return Err(Status::invalid_argument("snapshot scope must be non-zero")),
        }
        match (CheckpointType::try_from(req.r#type), &req.config) {
            (Ok(CheckpointType::External), Some(snapshot::Config::External(c))) => {
                parse_uri_prefix(&c.snapshot_uri_prefix)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                if self.cfg.s3.is_none() {
                    return Err(Status::failed_precondition(
                        "EXTERNAL snapshots need ATE_STORAGE_BACKEND=s3 and the AWS_* variables (the atelet stand-in does not speak GCS, upstream's default)",
                    ));
                }
            }
            (Ok(CheckpointType::Local), Some(snapshot::Config::Local(c))) => {
                local_prefix(&c.snapshot_prefix)?
            }
            (Ok(CheckpointType::External), _) | (Ok(CheckpointType::Local), _) => {
                return Err(Status::invalid_argument(
                    "the snapshot config does not match the checkpoint type",
                ))
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "invalid checkpoint type: {}",
                    req.r#type
                )))
            }
        }
        Ok(t)
    }

    async fn checkpoint_inner(&self, req: SnapshotRequest) -> Result<(), Status> {
        let t = self.check_snapshot(&req, "Checkpoint")?;
        let spec = req.spec.clone().unwrap_or_default();
        let fail = |step: &str, e: String| failed("Checkpoint", &t, step, e);
        let mut rec: SandboxRecord = std::fs::read(self.cfg.paths.sandbox_assets_file(&t.actor))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| fail("while loading recorded sandbox assets", e))?;
        let runsc = self.runsc_path(&rec)?;
        let slot = self.slot(&t.uid);
        let mut current = slot.lock().await;
        let run = match current.as_ref() {
            Some(r) if r.actor == t.actor => r.clone(),
            Some(r) => {
                return Err(Status::failed_precondition(format!(
                    "Checkpoint of actor {} on worker {}: the worker runs actor {}",
                    t.actor, t.uid, r.actor
                )))
            }
            None => Running {
                actor: t.actor.clone(),
                runsc,
                containers: std::iter::once(PAUSE.to_owned())
                    .chain(spec.containers.iter().map(|c| c.name.clone()))
                    .collect(),
            },
        };
        info!(actor = %t.actor, worker = %t.uid, "Checkpoint");
        let dir = self.cfg.paths.checkpoint_state(&t.actor);
        std::fs::create_dir_all(&dir)
            .map_err(|e| fail("while creating checkpoint directory", e.to_string()))?;
        let rs = self.runsc_for(&run);
        rs.checkpoint(PAUSE, &dir).await.map_err(|e| {
            fail(
                "while calling ateom.CheckpointWorkload: while checkpointing pause",
                e.to_string(),
            )
        })?;
        // Best effort, as upstream (`cmd/ateom-gvisor/main.go:287-297`).
        for c in &run.containers {
            let _ = rs.state(c).await;
        }
        let _ = self.remove_containers(&run).await;
        *current = None;
        let mut files = Vec::new();
        for e in std::fs::read_dir(&dir)
            .map_err(|e| fail("while listing checkpoint files", e.to_string()))?
        {
            let e = e.map_err(|e| fail("while listing checkpoint files", e.to_string()))?;
            if e.file_type().map(|f| f.is_file()).unwrap_or(false) {
                files.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(fail(
                "checkpoint",
                "ateom reported no snapshot files for checkpoint".into(),
            ));
        }
        rec.snapshot_files = files;
        let manifest = serde_json::to_vec(&rec)
            .map_err(|e| fail("while marshaling snapshot manifest", e.to_string()))?;
        match &req.config {
            Some(snapshot::Config::External(c)) => {
                let s3 = self.cfg.s3.as_ref().expect("checked");
                let (bucket, prefix) = parse_uri_prefix(&c.snapshot_uri_prefix)
                    .map_err(|e| fail("snapshot", e.to_string()))?;
                for f in &rec.snapshot_files {
                    let bytes = tokio::fs::read(dir.join(f))
                        .await
                        .map_err(|e| fail("while uploading", format!("{f}: {e}")))?;
                    s3.put(&bucket, &object_key(&prefix, &format!("{f}.zstd")), bytes)
                        .await
                        .map_err(|e| fail(&format!("while uploading {f} to GCS"), e.to_string()))?;
                }
                s3.put(&bucket, &object_key(&prefix, MANIFEST), manifest)
                    .await
                    .map_err(|e| fail("while uploading snapshot manifest", e.to_string()))?;
            }
            Some(snapshot::Config::Local(c)) => {
                let to = self
                    .cfg
                    .paths
                    .local_checkpoints(&t.actor)
                    .join(&c.snapshot_prefix);
                std::fs::create_dir_all(&to).map_err(|e| {
                    fail("while creating local checkpoint directory", e.to_string())
                })?;
                for f in &rec.snapshot_files {
                    std::fs::rename(dir.join(f), to.join(f))
                        .map_err(|e| fail("while moving checkpoint", format!("{f}: {e}")))?;
                }
                ate_refagent::identity::write_file_atomic(&to, MANIFEST, &manifest, 0o600)
                    .map_err(|e| fail("while writing snapshot manifest", chain(&e)))?;
            }
            None => unreachable!("checked"),
        }
        self.reset_actor_dirs(&t.actor)
            .map_err(|e| fail("while resetting actor dirs", e.to_string()))?;
        Ok(())
    }

    async fn restore_inner(&self, req: SnapshotRequest) -> Result<(), Status> {
        let t = self.check_snapshot(&req, "Restore")?;
        let spec = req.spec.clone().unwrap_or_default();
        let fail = |step: &str, e: String| failed("Restore", &t, step, e);
        self.check_worker(&t, "Restore")?;
        let slot = self.slot(&t.uid);
        let mut current = slot.lock().await;
        self.teardown(&mut current).await;
        info!(actor = %t.actor, worker = %t.uid, "Restore");
        self.reset_actor_dirs(&t.actor)
            .map_err(|e| fail("while resetting actor dirs", e.to_string()))?;
        let image = self.cfg.paths.restore_state(&t.actor);
        let rec: SandboxRecord = match &req.config {
            Some(snapshot::Config::External(c)) => {
                let s3 = self.cfg.s3.as_ref().expect("checked");
                let (bucket, prefix) = parse_uri_prefix(&c.snapshot_uri_prefix)
                    .map_err(|e| fail("snapshot", e.to_string()))?;
                let m = s3
                    .get(&bucket, &object_key(&prefix, MANIFEST))
                    .await
                    .map_err(|e| fail("while fetching snapshot manifest", e.to_string()))?;
                let rec: SandboxRecord = serde_json::from_slice(&m)
                    .map_err(|e| fail("while parsing sandbox record/manifest", e.to_string()))?;
                for f in &rec.snapshot_files {
                    check_name("snapshot file", f).map_err(|e| fail("manifest", e.to_string()))?;
                    let bytes = s3
                        .get(&bucket, &object_key(&prefix, &format!("{f}.zstd")))
                        .await
                        .map_err(|e| {
                            fail(&format!("while downloading {f} from GCS"), e.to_string())
                        })?;
                    tokio::fs::write(image.join(f), bytes)
                        .await
                        .map_err(|e| fail("while downloading", format!("{f}: {e}")))?;
                }
                rec
            }
            Some(snapshot::Config::Local(c)) => {
                let from = self
                    .cfg
                    .paths
                    .local_checkpoints(&t.actor)
                    .join(&c.snapshot_prefix);
                let m = std::fs::read(from.join(MANIFEST)).map_err(|e| {
                    fail(
                        "while reading local snapshot manifest",
                        format!("{}: {e}", from.join(MANIFEST).display()),
                    )
                })?;
                let rec: SandboxRecord = serde_json::from_slice(&m)
                    .map_err(|e| fail("while parsing sandbox record/manifest", e.to_string()))?;
                for f in &rec.snapshot_files {
                    check_name("snapshot file", f).map_err(|e| fail("manifest", e.to_string()))?;
                    std::fs::copy(from.join(f), image.join(f))
                        .map_err(|e| fail("while copying checkpoint", format!("{f}: {e}")))?;
                }
                rec
            }
            None => unreachable!("checked"),
        };
        let runsc = self.runsc_path(&rec)?;
        self.prepare_bundles(&t, &spec)
            .await
            .map_err(|e| fail("while preparing OCI bundles", e))?;
        let run = self
            .boot(&t, &spec, runsc, Some(&image))
            .await
            .map_err(|e| fail("while calling ateom.RestoreWorkload", e))?;
        let mut record = rec.clone();
        record.snapshot_files.clear();
        self.write_record(&t.actor, &record)
            .map_err(|e| fail("while recording sandbox assets", e.to_string()))?;
        *current = Some(run);
        Ok(())
    }
}

/// A LOCAL prefix: non-empty, relative, no `..` (it is joined under the
/// actor's `local-checkpoint/`).
fn local_prefix(p: &str) -> Result<(), Status> {
    if p.is_empty() {
        return Err(Status::invalid_argument(
            "snapshot prefix must be non-empty for type CHECKPOINT_TYPE_LOCAL",
        ));
    }
    if Path::new(p)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(Status::invalid_argument(format!(
            "snapshot prefix {p:?} must be a relative path without '..'"
        )));
    }
    Ok(())
}

/// The request's assets for [`ARCH`] (`cmd/atelet/sandbox_assets.go:70-89`).
pub fn record_from_request(
    sa: Option<&ate_atelet_api::SandboxAssets>,
) -> Result<SandboxRecord, Status> {
    let sa = sa.ok_or_else(|| Status::invalid_argument("missing sandbox_assets"))?;
    let arch = sa
        .assets
        .get(ARCH)
        .filter(|a| !a.files.is_empty())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "sandbox_assets has no assets for architecture {ARCH:?}"
            ))
        })?;
    Ok(SandboxRecord {
        sandbox_class: sa.sandbox_class.clone(),
        assets: arch
            .files
            .iter()
            .map(|(k, f)| {
                (
                    k.clone(),
                    AssetEntry {
                        url: f.url.clone(),
                        sha256: f.sha256.clone(),
                    },
                )
            })
            .collect(),
        snapshot_files: Vec::new(),
    })
}

/// One readiness GET: the status code. Keep-alive (no `Connection:
/// close`), the whole response read by its `Content-Length`, then the
/// socket is closed by us: the client closes first, as Go's client does
/// when upstream's readyz ends (`CloseIdleConnections`). A connection the
/// actor closed first lingers in gVisor for seconds and makes runsc
/// 20240729 refuse the next checkpoint (CONTRACT.md V).
async fn get_status(netns: &Path, addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = connect_in(netns, addr, READYZ_REQUEST).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len || n == 0 {
                return head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| {
                        std::io::Error::other(format!(
                            "not an HTTP status line: {:?}",
                            head.lines().next().unwrap_or("")
                        ))
                    });
            }
        }
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "connection closed after {} bytes",
                buf.len()
            )));
        }
    }
}

/// A TCP connection made in the netns `netns`, from a thread of its own
/// that joins it (no other thread changes namespace).
async fn connect_in(
    netns: &Path,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(netns)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        // SAFETY: setns affects only this thread, which ends right after.
        let r = if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            Err(std::io::Error::last_os_error())
        } else {
            std::net::TcpStream::connect_timeout(&addr, timeout)
        };
        let _ = tx.send(r);
    });
    let s = rx
        .await
        .map_err(|_| std::io::Error::other("the connecting thread ended"))??;
    s.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(s)
}

#[async_trait::async_trait]
impl ate_atelet_api::server::AteomHerder for Atelet {
    async fn run(self: Arc<Self>, req: RunRequest) -> Result<(), Status> {
        self.run_inner(req).await
    }
    async fn checkpoint(self: Arc<Self>, req: SnapshotRequest) -> Result<(), Status> {
        self.checkpoint_inner(req).await
    }
    async fn restore(self: Arc<Self>, req: SnapshotRequest) -> Result<(), Status> {
        self.restore_inner(req).await
    }
}
