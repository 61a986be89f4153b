//! A real OCI registry for tests: Debian's `docker-registry` (2.8) on
//! 127.0.0.1, with a config of our own (filesystem storage in a temp dir,
//! no auth: the packaged config's htpasswd on :5000 is never used).
//!
//! Not installed is a failure naming the package, never a skip.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use ate_harness::backend::kind::oci::{repo_from_ko_docker_repo, Repo};
use ate_harness::cmd::{self, Cmd, CmdError, Spawned};
use reqwest::StatusCode;

/// The registry program.
pub const REGISTRY_PROGRAM: &str = "docker-registry";
/// How to install it.
pub const INSTALL: &str = "apt-get install -y docker-registry";
/// How long a start may take.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);
/// How often readiness is polled.
pub const READY_POLL: Duration = Duration::from_millis(50);
/// Ports tried.
pub const START_ATTEMPTS: usize = 5;
/// SIGTERM to SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The registry

/// A `docker-registry serve` child on 127.0.0.1, with its storage and logs
/// in a temporary directory.
///
/// **Stopped by its pid in every case**: [`TestRegistry::stop`] terminates
/// it (SIGTERM, grace, SIGKILL to its process group); when a test fails
/// before that, dropping the guard drops the [`Spawned`], which kills the
/// process group (whose id is the child's pid) with SIGKILL.
pub struct TestRegistry {
    child: Option<Spawned>,
    /// `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Starts a registry on a free port and waits until `GET /v2/` answers
    /// 200; retries on another port when the one picked was taken.
    pub async fn start() -> anyhow::Result<TestRegistry> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match TestRegistry::start_once().await? {
                Ok(registry) => return Ok(registry),
                // Someone took the port between our probe and the registry's bind.
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow!("no attempt was made"))
            .context(format!(
                "docker-registry could not bind a free port in {START_ATTEMPTS} attempts"
            )))
    }

    /// `Ok(Err(..))` when the port was taken (worth another try).
    async fn start_once() -> anyhow::Result<anyhow::Result<TestRegistry>> {
        let dir = tempfile::tempdir().context("creating the registry's directory")?;
        let addr = free_port()?;
        let config_path = dir.path().join("config.yml");
        std::fs::write(
            &config_path,
            registry_config(&dir.path().join("data"), addr),
        )
        .context("writing the registry config")?;
        let stdout_path = dir.path().join("stdout.log");
        let stderr_path = dir.path().join("stderr.log");
        let open = |path: &Path| {
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))
        };
        let mut command = Cmd::new(REGISTRY_PROGRAM)
            .arg("serve")
            .arg(&config_path)
            .stdin(cmd::Stdio::null())
            .stdout_file(open(&stdout_path)?)
            .stderr_file(open(&stderr_path)?);
        // distribution lets REGISTRY_* variables override the config file.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
                command = command.env_remove(key);
            }
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(err @ CmdError::NotFound { .. }) => {
                return Err(anyhow::Error::new(err).context(format!(
                    "`{REGISTRY_PROGRAM}` is not installed; these tests need a real registry: \
                     {INSTALL}"
                )))
            }
            Err(err) => return Err(anyhow::Error::new(err).context("starting docker-registry")),
        };
        let mut registry = TestRegistry {
            child: Some(child),
            addr,
            stderr_path,
            _dir: dir,
        };
        match registry.wait_ready(READY_DEADLINE).await {
            Ok(()) => Ok(Ok(registry)),
            Err(err) if registry.stderr_tail().contains("address already in use") => {
                registry.stop().await?;
                Ok(Err(err))
            }
            Err(err) => {
                registry.stop().await?;
                Err(err)
            }
        }
    }

    /// Polls `GET /v2/` every 50 ms until it answers 200; fails at once if
    /// the registry exits, and at `deadline` with what it last saw.
    async fn wait_ready(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let http = http_client()?;
        let url = format!("{}/v2/", self.base_url());
        let started = Instant::now();
        let mut last_seen = String::from("nothing yet");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "docker-registry exited with {status} before {url} answered 200 \
                         (last seen: {last_seen}); its stderr:\n{}",
                        self.stderr_tail()
                    );
                }
            }
            match http.get(&url).timeout(Duration::from_secs(2)).send().await {
                Ok(response) if response.status() == StatusCode::OK => return Ok(()),
                Ok(response) => last_seen = format!("status {}", response.status()),
                Err(err) => last_seen = error_chain(&err),
            }
            if started.elapsed() >= deadline {
                bail!(
                    "GET {url} did not answer 200 within {deadline:?} (last seen: {last_seen}); \
                     docker-registry's stderr:\n{}",
                    self.stderr_tail()
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Terminates the registry by its pid (its process group).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.take() {
            let pid = child.pid();
            child
                .terminate(STOP_GRACE)
                .await
                .with_context(|| format!("stopping docker-registry (pid {pid})"))?;
        }
        Ok(())
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn repo(&self, repository: &str) -> anyhow::Result<Repo> {
        Ok(repo_from_ko_docker_repo(
            &self.addr.to_string(),
            repository,
        )?)
    }

    pub fn stderr_tail(&self) -> String {
        match std::fs::read(&self.stderr_path) {
            Ok(bytes) => cmd::tail(&bytes),
            Err(err) => format!("(cannot read {}: {err})", self.stderr_path.display()),
        }
    }
}

/// Our own config: no auth, loopback only, storage in `data`, quiet logs.
pub fn registry_config(data: &Path, addr: SocketAddr) -> String {
    // A JSON string is a valid YAML scalar, whatever the path holds.
    let data = serde_json::to_string(&data.to_string_lossy()).unwrap_or_default();
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n"
    )
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

pub fn http_client() -> anyhow::Result<reqwest::Client> {
    // All traffic is to 127.0.0.1: never through a proxy.
    Ok(reqwest::Client::builder().no_proxy().build()?)
}

/// The error and its causes, `: `-separated.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
