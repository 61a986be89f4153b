//! The node's OCI registry: Debian's `docker-registry` (the CNCF
//! distribution registry) started by us in the node's network namespace on
//! its loopback, `127.0.0.1:5000`, so atelet pulls from a `127.0.0.1`
//! reference over plain HTTP as it does for `localhost` ones
//! (go-containerregistry's `name.Insecure` rule; CONTRACT.md V), and the
//! host's loopback is never used. We push through [`Node::forward`] with
//! the kind backend's image builder and pusher ([`oci`]): the same images
//! a cluster gets.
//!
//! Its config is ours (filesystem storage in this run's directory, no auth,
//! no log noise); `REGISTRY_*` variables, which override the config file,
//! are removed from its environment. Stopped by its own PID.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ate_cmd::{Spawned, Stdio};

use super::ns::{Forward, Node};
use crate::backend::kind::oci;

/// The program (Debian package `docker-registry`).
pub const PROGRAM: &str = "docker-registry";
/// Where it listens in the node.
pub const ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5000);

/// A running registry in the node.
pub struct NodeRegistry {
    child: Option<Spawned>,
    forward: Forward,
    log: PathBuf,
    http: reqwest::Client,
}

/// Pushes images to the node's registry through the host-loopback forward.
#[derive(Clone)]
pub struct Pusher {
    via: SocketAddr,
    http: reqwest::Client,
}

impl Pusher {
    /// Pushes `image` as `<repository>:<tag>` and returns the reference
    /// atelet is given: `127.0.0.1:5000/<repository>@sha256:...`, by digest.
    pub async fn push(
        &self,
        repository: &str,
        tag: &str,
        image: &oci::BuiltImage,
    ) -> Result<String> {
        let repo = oci::Repo {
            registry: self.via.to_string(),
            repository: repository.to_owned(),
        };
        let pushed = oci::push(&self.http, &repo, tag, image)
            .await
            .with_context(|| format!("cannot push {repository}:{tag} to the node's registry"))?;
        Ok(format!("{ADDR}/{repository}@{}", pushed.digest))
    }
}

/// The config file: storage under `data`, listening on [`ADDR`].
fn config(data: &Path) -> String {
    // A JSON string is a valid YAML scalar, whatever the path holds.
    let data = serde_json::to_string(&data.to_string_lossy()).unwrap_or_default();
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {data}\n\
         http:\n  addr: {ADDR}\n"
    )
}

impl NodeRegistry {
    /// Starts the registry in `node` with its files under `dir`, and waits
    /// (at most `deadline`) until `GET /v2/` answers 200.
    pub async fn start(node: &Node, dir: &Path, deadline: Duration) -> Result<NodeRegistry> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let cfg = dir.join("config.yml");
        std::fs::write(&cfg, config(&dir.join("data")))
            .with_context(|| format!("cannot write {}", cfg.display()))?;
        let log = dir.join("registry.log");
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = node
            .in_node(PROGRAM, &["serve".into(), cfg.display().to_string()])
            .stdin(Stdio::null())
            .stdout_file(out.try_clone()?)
            .stderr_file(out);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
                cmd = cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().with_context(|| {
            format!("cannot start {PROGRAM} in the node (install it: apt-get install -y docker-registry)")
        })?;
        let forward = node
            .forward(ADDR)
            .await
            .context("cannot forward to the node's registry")?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("cannot build the registry client")?;
        let mut me = NodeRegistry {
            child: Some(child),
            forward,
            log,
            http,
        };
        if let Err(e) = me.wait_ready(deadline).await {
            me.stop().await;
            return Err(e);
        }
        Ok(me)
    }

    async fn wait_ready(&mut self, deadline: Duration) -> Result<()> {
        let url = format!("http://{}/v2/", self.forward.local_addr());
        let started = Instant::now();
        let mut last;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "{PROGRAM} exited with {status} before {url} answered; its log ({}):\n{}",
                    self.log.display(),
                    super::agents::log_tail(&self.log, 20)
                );
            }
            match self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = crate::error_chain(&e),
            }
            if started.elapsed() >= deadline {
                bail!(
                    "{PROGRAM} in the node did not answer GET /v2/ within {deadline:?} (last: {last}); its log ({}):\n{}",
                    self.log.display(),
                    super::agents::log_tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The registry's PID, for the run's record.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Spawned::pid)
    }

    /// What pushes to it (cheap to clone; valid while the registry runs).
    pub fn pusher(&self) -> Pusher {
        Pusher {
            via: self.forward.local_addr(),
            http: self.http.clone(),
        }
    }

    /// Stops the registry by its PID.
    pub async fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = child.terminate(Duration::from_secs(5)).await;
        }
    }
}
