//! The atelet/ateom stand-in for real (root, runsc 20240729): the node's
//! namespaces (`ate_harness::backend::node::ns`), a `docker-registry` in
//! the node, the S3 endpoint (`s3.rs`), `ate-standin-atelet` and one
//! `ate-standin-ateom` per worker started as the node backend starts
//! upstream's pair (`agents.rs`), driven with `ate-atelet-api`'s client.
//!
//! The golden runs, answers `/whoami` at its worker's pod address,
//! checkpoints EXTERNAL to S3; two actors are restored from that one
//! snapshot on two workers and each answers its own ID; one is suspended
//! (LOCAL) and resumed; reflection lists `atelet.AteomHerder`; an image
//! planting `run -> <outside>`, an empty command and a runsc missing from
//! the asset cache each fail with upstream's words; SIGTERM leaves the
//! sandboxes running, as upstream's does, and the node backend's
//! `kill_leftovers` ends them by PID. Fails loudly when root, runsc or docker-registry
//! is missing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ate_atelet_api::{
    snapshot, ArchAssets, AssetFile, AteletClient, CheckpointType, Container, HttpGetAction,
    LocalConfig, Readyz, RunRequest, SandboxAssets, SnapshotRequest, SnapshotScope, Target,
    WorkloadSpec,
};
use ate_harness::backend::kind::oci::{build_image, push, ImageSpec, Repo};
use ate_harness::backend::node::agents::{Binaries, NodeAgents, ATELET_PORT};
use ate_harness::backend::node::layout::Layout;
use ate_harness::backend::node::ns::Node;
use ate_harness::backend::node::s3::S3Endpoint;
use ate_harness::fixture::{static_bins, BuildOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "standin-ns";
const TMPL: &str = "probe";
const RUNSC: &str = "/usr/bin/runsc";

fn require_prerequisites() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the stand-in test makes namespaces, mounts and gVisor sandboxes: run it as root"
    );
    assert!(
        Path::new(RUNSC).is_file(),
        "{RUNSC} is missing: apt-get install -t bookworm-backports runsc"
    );
    assert!(
        which("docker-registry"),
        "docker-registry is missing: apt-get install docker-registry"
    );
}

fn which(p: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
        .unwrap_or(false)
}

fn sha256_hex(b: &[u8]) -> String {
    ate_harness::sha256_hex(b)
}

/// GET `path` at `addr` from the node's network: status and body. Reads by
/// Content-Length and closes first.
async fn get(node: &Node, addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s = node
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    // Keep-alive: the client closes first (a connection the actor closed
    // first lingers and blocks the next checkpoint, CONTRACT.md V).
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .map_err(|_| {
                format!(
                    "no full answer from {addr} within 5 s: {:?}",
                    String::from_utf8_lossy(&buf)
                )
            })?
            .map_err(|e| e.to_string())?;
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            });
            if len.is_some_and(|l| body.len() >= l) || n == 0 {
                let code = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                return Ok((code, body.to_owned()));
            }
        }
        if n == 0 {
            return Err(format!("connection closed early: {text:?}"));
        }
    }
}

async fn whoami(node: &Node, addr: SocketAddr) -> String {
    let (code, body) = get(node, SocketAddr::new(addr.ip(), 80), "/whoami")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["file"]
        .as_str()
        .unwrap_or_else(|| panic!("no file in {body}"))
        .to_owned()
}

fn target(uid: &str, id: &str) -> Target {
    Target {
        ateom_uid: uid.into(),
        namespace: NS.into(),
        template: TMPL.into(),
        actor_id: id.into(),
    }
}

fn run_request(t: &Target, spec: &WorkloadSpec, runsc_sha: &str) -> RunRequest {
    let files = HashMap::from([(
        "runsc".to_owned(),
        AssetFile {
            url: "https://storage.invalid/gvisor/runsc".into(),
            sha256: runsc_sha.into(),
        },
    )]);
    RunRequest {
        target_ateom_uid: t.ateom_uid.clone(),
        actor_template_namespace: t.namespace.clone(),
        actor_template_name: t.template.clone(),
        actor_id: t.actor_id.clone(),
        spec: Some(spec.clone()),
        sandbox_assets: Some(SandboxAssets {
            sandbox_class: "gvisor".into(),
            assets: HashMap::from([("amd64".to_owned(), ArchAssets { files })]),
        }),
    }
}

fn local(t: &Target, spec: &WorkloadSpec, prefix: &str) -> SnapshotRequest {
    let mut r = SnapshotRequest::external(t, spec, "s3://unused/");
    r.r#type = CheckpointType::Local as i32;
    r.config = Some(snapshot::Config::Local(LocalConfig {
        snapshot_prefix: prefix.into(),
    }));
    r.scope = SnapshotScope::Full as i32;
    r
}

/// How long a connection the client closed stays "connected" inside
/// gVisor (measured about 0.6 s, CONTRACT.md V); this runsc refuses to
/// checkpoint meanwhile, and the refused checkpoint leaves the sandbox
/// dead (measured here: its control server refuses connections after).
/// So the caller keeps quiet this long before a checkpoint, as the
/// node backend's routing front must.
const QUIET_BEFORE_CHECKPOINT: Duration = Duration::from_millis(1500);

async fn checkpoint(client: &AteletClient, req: SnapshotRequest) -> Result<Duration, String> {
    tokio::time::sleep(QUIET_BEFORE_CHECKPOINT).await;
    let start = Instant::now();
    client.checkpoint(req).await.map_err(|e| e.to_string())?;
    Ok(start.elapsed())
}

fn state_files(var_lib: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(actors) = std::fs::read_dir(var_lib.join("actors")) {
        for a in actors.flatten() {
            if let Ok(rd) = std::fs::read_dir(a.path().join("runsc-state")) {
                out.extend(
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "state")),
                );
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standin_runs_checkpoints_and_restores_each_actor_with_its_own_id() {
    require_prerequisites();
    let t0 = Instant::now();
    let bins = static_bins(&BuildOptions::from_env())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("static binaries ready after {:?}", t0.elapsed());

    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let node = Node::create(&tmp.path().join("node"), &["w0".into(), "w1".into()])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let outcome = scenario(&node, &bins.probe, &bins.agent, tmp.path(), &outside).await;
    let teardown = node.teardown().await;
    if let Err(e) = outcome {
        // Kept for a look: the logs, the bundles, runsc's output.
        let kept = tmp.keep();
        panic!("{e}\n(the run's directory is kept: {})", kept.display());
    }
    teardown.unwrap_or_else(|e| panic!("node teardown: {e:#}"));
}

async fn scenario(
    node: &Node,
    probe: &Path,
    agent: &Path,
    tmp: &Path,
    outside: &Path,
) -> Result<(), String> {
    let layout = Layout::new(&node.var_lib());

    // The registry, in the node's network; pushed to through a forward.
    let reg_dir = tmp.join("registry");
    std::fs::create_dir_all(&reg_dir).unwrap();
    let reg_cfg = reg_dir.join("config.yml");
    std::fs::write(
        &reg_cfg,
        format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {:?}\nhttp:\n  addr: 127.0.0.1:5000\n",
            reg_dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    let registry = node
        .in_node(
            "docker-registry",
            &["serve".into(), reg_cfg.display().to_string()],
        )
        .stdin(ate_cmd::Stdio::null())
        .stdout(ate_cmd::Stdio::null())
        .stderr_file(std::fs::File::create(reg_dir.join("stderr.log")).unwrap())
        .spawn()
        .map_err(|e| format!("docker-registry: {e}"))?;
    let result = with_registry(node, &layout, probe, agent, tmp, outside).await;
    let _ = registry.terminate(Duration::from_secs(3)).await;
    result
}

async fn with_registry(
    node: &Node,
    layout: &Layout,
    probe: &Path,
    agent: &Path,
    tmp: &Path,
    outside: &Path,
) -> Result<(), String> {
    let fwd = node
        .forward("127.0.0.1:5000".parse().unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match http
            .get(format!("http://{}/v2/", fwd.local_addr()))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => {
                return Err(format!(
                    "docker-registry in the node did not answer: {other:?}"
                ))
            }
        }
    }
    let push_as = |name: &str| Repo {
        registry: fwd.local_addr().to_string(),
        repository: format!("ate/{name}"),
    };
    let in_node = |name: &str, digest: &str| format!("127.0.0.1:5000/ate/{name}@{digest}");
    let probe_img = build_image(&ImageSpec::new(probe, "probe")).map_err(|e| e.to_string())?;
    let pause_img = build_image(&ImageSpec::new(agent, "pause")).map_err(|e| e.to_string())?;
    let planted = [("run".to_owned(), outside.display().to_string())];
    let evil_img = build_image(&ImageSpec {
        binary: probe,
        path_in_image: "probe",
        symlinks: &planted,
        extra_binaries: &[],
    })
    .map_err(|e| e.to_string())?;
    let p = push(&http, &push_as("probe"), "v1", &probe_img)
        .await
        .map_err(|e| e.to_string())?;
    let q = push(&http, &push_as("pause"), "v1", &pause_img)
        .await
        .map_err(|e| e.to_string())?;
    let x = push(&http, &push_as("evil"), "v1", &evil_img)
        .await
        .map_err(|e| e.to_string())?;
    let spec = WorkloadSpec {
        containers: vec![Container {
            name: "probe".into(),
            image: in_node("probe", &p.digest),
            command: vec!["/probe".into()],
            env: vec![],
            readyz: Some(Readyz {
                http_get: Some(HttpGetAction {
                    path: "/healthz".into(),
                    port: 80,
                }),
            }),
            volume_mounts: vec![],
        }],
        pause_image: in_node("pause", &q.digest),
        volumes: vec![],
    };

    // The runsc "adapter" in atelet's asset cache, under its own sha256.
    // The real adapter (crate `runsc-adapter`), configured as the node
    // backend configures it: drop the two flags runsc 20240729 lacks.
    let drops = tmp.join("adapter-drops.jsonl");
    let adapter = ate_harness::fixture::runsc_adapter(&BuildOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let bytes = std::fs::read(&adapter).unwrap();
    let sha = sha256_hex(&bytes);
    std::fs::create_dir_all(layout.static_files()).unwrap();
    let runsc_path = layout.runsc(&sha);
    std::fs::write(&runsc_path, &bytes).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runsc_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let real = RUNSC;
    std::fs::write(
        format!("{}.adapter.json", runsc_path.display()),
        serde_json::json!({
            "runsc": real,
            "drop": ["allow-connected-on-save", "background"],
            "log": drops.display().to_string(),
        })
        .to_string(),
    )
    .unwrap();

    // S3 in the node's network.
    let listener = node
        .listen("127.0.0.1:0".parse().unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let s3 = S3Endpoint::start(
        listener,
        &tmp.join("s3"),
        "ate",
        "ate-key",
        "ate-secret-key",
    )
    .await
    .map_err(|e| format!("{e:#}"))?;

    let bins = Binaries {
        atelet: PathBuf::from(env!("CARGO_BIN_EXE_ate-standin-atelet")),
        ateom: PathBuf::from(env!("CARGO_BIN_EXE_ate-standin-ateom")),
    };
    let mut agents = NodeAgents::start(
        node,
        &bins,
        &s3.atelet_env(),
        &tmp.join("logs"),
        Duration::from_secs(20),
    )
    .await
    .map_err(|e| format!("{e:#}"))?;
    let result = drive(node, layout, &spec, &sha, &s3, &x.digest, outside).await;
    let stopped = agents.stop().await;
    let logs = std::fs::read_to_string(tmp.join("logs/atelet.log")).unwrap_or_default();
    let result = result.map_err(|e| format!("{e}\natelet's log:\n{logs}"));
    result?;
    stopped.map_err(|e| format!("{e:#}"))?;
    // As upstream's, SIGTERM left the running sandboxes: the node
    // backend's teardown ends them by PID from runsc's state files.
    let killed = ate_harness::backend::node::sandboxes::kill_leftovers(layout)
        .await
        .map_err(|e| format!("{e:#}"))?;
    tracing::info!(
        count = killed.len(),
        "sandbox processes left after SIGTERM, ended by PID"
    );
    let still =
        ate_harness::backend::node::sandboxes::leftovers(layout).map_err(|e| format!("{e:#}"))?;
    if !still.is_empty() {
        return Err(format!(
            "sandbox processes still running after kill_leftovers: {still:?}"
        ));
    }
    for uid in ["w0", "w1"] {
        if layout.ateom_socket(uid).exists() {
            return Err(format!("ateom stand-in of {uid} left its socket"));
        }
    }
    let dropped = std::fs::read_to_string(&drops).unwrap_or_default();
    if !dropped.contains("\"-allow-connected-on-save\"") || !dropped.contains("\"-background\"") {
        return Err(format!("the adapter dropped no flags: {dropped:?}"));
    }
    s3.stop().await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    node: &Node,
    layout: &Layout,
    spec: &WorkloadSpec,
    sha: &str,
    s3: &S3Endpoint,
    evil_digest: &str,
    outside: &Path,
) -> Result<(), String> {
    let fwd = node
        .forward(SocketAddr::from(([127, 0, 0, 1], ATELET_PORT)))
        .await
        .map_err(|e| e.to_string())?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", fwd.local_addr()))
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("connect to atelet: {e}"))?;
    let client = AteletClient::new(channel.clone(), Duration::from_secs(120));
    let (w0, w1) = (&node.workers()[0], &node.workers()[1]);
    let pod = |w: &ate_harness::backend::node::ns::Worker| SocketAddr::from((w.pod_addr, 80));

    // Reflection lists the service.
    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let mut rc = ServerReflectionClient::new(channel.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = rc
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .map_err(|e| format!("reflection: {e}"))?
            .into_inner();
        let msg = stream
            .message()
            .await
            .map_err(|e| format!("reflection: {e}"))?
            .ok_or("reflection: no answer")?;
        let names: Vec<String> = match msg.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => return Err(format!("reflection: unexpected answer {other:?}")),
        };
        if !names.iter().any(|n| n == "atelet.AteomHerder") {
            return Err(format!(
                "reflection does not list atelet.AteomHerder: {names:?}"
            ));
        }
        eprintln!("reflection lists {names:?}");
    }

    let golden = target("w0", "probe-golden");
    let t = Instant::now();
    client
        .run(run_request(&golden, spec, sha))
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("Run (golden) {:?}", t.elapsed());
    let id = whoami(node, pod(w0)).await;
    if id != "probe-golden" {
        return Err(format!("the golden reads {id:?}"));
    }

    let prefix = s3.uri_prefix(NS, TMPL);
    let took = checkpoint(&client, SnapshotRequest::external(&golden, spec, &prefix)).await?;
    eprintln!("Checkpoint EXTERNAL {took:?}");
    let objects = s3.root().join("ate").join(NS).join(TMPL);
    for o in ["manifest.json", "checkpoint.img.zstd"] {
        if !objects.join(o).is_file() {
            return Err(format!("no S3 object {o} under {}", objects.display()));
        }
    }
    if !state_files(&node.var_lib()).is_empty() {
        return Err("the golden's containers are still there after Checkpoint".into());
    }

    let alpha = target("w0", "probe-alpha");
    let beta = target("w1", "probe-beta");
    for (who, w) in [(&alpha, w0), (&beta, w1)] {
        let t = Instant::now();
        client
            .restore(SnapshotRequest::external(who, spec, &prefix))
            .await
            .map_err(|e| e.to_string())?;
        eprintln!(
            "Restore {} on {} {:?}",
            who.actor_id,
            who.ateom_uid,
            t.elapsed()
        );
        let id = whoami(node, pod(w)).await;
        if id != who.actor_id {
            return Err(format!(
                "{} restored from the golden reads {id:?}",
                who.actor_id
            ));
        }
    }
    // The restored bundle binds the actor's own identity dir at /run/ate, read-only.
    let cfg = std::fs::read_to_string(
        layout
            .bundle(NS, TMPL, "probe-alpha", "probe")
            .join("config.json"),
    )
    .map_err(|e| e.to_string())?;
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    let m = cfg["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/run/ate")
        .ok_or("no /run/ate mount")?;
    let want = format!("/var/lib/ateom-gvisor/actors/{NS}:{TMPL}:probe-alpha/identity");
    if m["source"] != want.as_str() || !m["options"].as_array().unwrap().iter().any(|o| o == "ro") {
        return Err(format!("the /run/ate mount is {m}"));
    }
    if std::fs::read(layout.identity(NS, TMPL, "probe-alpha").join("actor-id"))
        .map_err(|e| e.to_string())?
        != b"probe-alpha"
    {
        return Err("the identity file on the host is not probe-alpha".into());
    }

    // Suspend (LOCAL) and resume beta.
    let took = checkpoint(&client, local(&beta, spec, "suspend-1")).await?;
    eprintln!("Checkpoint LOCAL {took:?}");
    let t = Instant::now();
    client
        .restore(local(&beta, spec, "suspend-1"))
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("Restore LOCAL {:?}", t.elapsed());
    let id = whoami(node, pod(w1)).await;
    if id != "probe-beta" {
        return Err(format!("beta resumed reads {id:?}"));
    }

    // ID-13: an image planting run -> <outside> is refused at the mount
    // point, nothing written outside.
    let mut evil = spec.clone();
    evil.containers[0].image = format!("127.0.0.1:5000/ate/evil@{evil_digest}");
    let e = client
        .run(run_request(&target("w1", "probe-evil"), &evil, sha))
        .await
        .err()
        .ok_or("the planted symlink was followed")?;
    if !e.message.contains("path escapes from parent") {
        return Err(format!("planted symlink: {e}"));
    }
    if std::fs::read_dir(outside).unwrap().next().is_some() {
        return Err("something was written through the planted symlink".into());
    }
    // An empty command.
    let mut empty = spec.clone();
    empty.containers[0].command.clear();
    let e = client
        .run(run_request(&target("w1", "probe-empty"), &empty, sha))
        .await
        .err()
        .ok_or("an empty command ran")?;
    if !e.message.contains("Spec.Process.Arg must be defined") {
        return Err(format!("empty command: {e}"));
    }
    // A runsc not in the asset cache.
    let e = client
        .run(run_request(
            &target("w1", "probe-nocache"),
            spec,
            &"0".repeat(64),
        ))
        .await
        .err()
        .ok_or("ran without runsc")?;
    if e.code != tonic::Code::FailedPrecondition || !e.message.contains("never downloads") {
        return Err(format!("missing runsc: {e}"));
    }
    eprintln!("failures: {}", e.message);
    // alpha still runs on w0.
    let id = whoami(node, pod(w0)).await;
    if id != "probe-alpha" {
        return Err(format!("alpha reads {id:?} at the end"));
    }
    // A checkpoint while a connection to the actor is open: refused, with
    // runsc's own words (the sandbox is left dead).
    let mut held = node.connect(pod(w0)).await.map_err(|e| e.to_string())?;
    held.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_secs(5), held.read(&mut answer)).await;
    let e = client
        .checkpoint(SnapshotRequest::external(
            &alpha,
            spec,
            &s3.uri_prefix(NS, "held"),
        ))
        .await
        .err()
        .ok_or("a checkpoint with a connection open succeeded")?;
    if !e
        .message
        .contains("endpoint cannot be saved in connected state")
    {
        return Err(format!("checkpoint with a connection open: {e}"));
    }
    eprintln!("refused checkpoint: {}", e.message);
    drop(held);
    Ok(())
}
