//! The node's own processes: one atelet in the node's namespaces and one
//! ateom-gvisor per worker in that worker's pod netns (as upstream's
//! DaemonSet and per-WorkerPool Deployment place them), each started from
//! the user's binary, its output in a log file of the run, stopped by its
//! own PID.
//!
//! Flags, all verified at 86e138f6: atelet `--port` (default 8085),
//! `--metrics-listen-addr` (default `:9090`, moved to the node's loopback
//! here), `--gcp-auth-for-image-pulls` (`false`: no cloud credentials;
//! `cmd/atelet/main.go:62-66`); ateom-gvisor `--pod-uid`
//! (`cmd/ateom-gvisor/main.go:54`), which names its socket
//! (`main.go:120-125`, [`Layout::ateom_socket`]). Both print their version
//! with `--version` (`cmd/atelet/main.go:68`, `cmd/ateom-gvisor/main.go:56`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ate_cmd::{Cmd, Spawned, Stdio};
use tracing::{info, warn};

use super::layout::Layout;
use super::ns::Node;

/// atelet's gRPC port in the node.
pub const ATELET_PORT: u16 = 8085;

/// The user's build under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `atelet`.
    pub atelet: PathBuf,
    /// `ateom-gvisor`.
    pub ateom: PathBuf,
}

/// What `--version` printed, and the file's sha256, per binary (the
/// report's fingerprint).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BinaryPrint {
    /// The path given.
    pub path: PathBuf,
    /// Lowercase hex.
    pub sha256: String,
    /// First line of `--version`.
    pub version: String,
}

/// The sha256 and `--version` of `bin`.
pub async fn fingerprint(bin: &Path) -> Result<BinaryPrint> {
    let bytes = std::fs::read(bin).with_context(|| format!("cannot read {}", bin.display()))?;
    let sha256 = crate::sha256_hex(&bytes);
    let out = Cmd::new(bin)
        .arg("--version")
        .timeout(Duration::from_secs(10))
        .run()
        .await
        .with_context(|| format!("{} --version failed", bin.display()))?;
    let version = crate::first_line(&out.stdout_str()).to_owned();
    Ok(BinaryPrint {
        path: bin.to_owned(),
        sha256,
        version,
    })
}

/// The running node processes.
pub struct NodeAgents {
    atelet: Option<Spawned>,
    ateoms: Vec<(String, Spawned)>,
    logs: PathBuf,
}

fn log_file(logs: &Path, name: &str) -> Result<std::fs::File> {
    let p = logs.join(name);
    std::fs::File::create(&p).with_context(|| format!("cannot create {}", p.display()))
}

/// The last `n` lines of a log, for an error message.
pub(super) fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn tail(path: &Path) -> String {
    log_tail(path, 8)
}

impl NodeAgents {
    /// Starts atelet (with `env`, e.g. the S3 settings) and one ateom per
    /// worker, and waits until atelet accepts connections and every
    /// worker's socket exists. On failure everything started is stopped
    /// and the error quotes the log of the one that did not come up.
    pub async fn start(
        node: &Node,
        bins: &Binaries,
        env: &[(String, String)],
        logs: &Path,
        deadline: Duration,
    ) -> Result<NodeAgents> {
        std::fs::create_dir_all(logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let mut me = NodeAgents {
            atelet: None,
            ateoms: Vec::new(),
            logs: logs.to_owned(),
        };
        match me.start_inner(node, bins, env, deadline).await {
            Ok(()) => Ok(me),
            Err(e) => {
                if let Err(stop) = me.stop().await {
                    warn!(error = %format!("{stop:#}"), "stopping the node after a failed start");
                }
                Err(e)
            }
        }
    }

    async fn start_inner(
        &mut self,
        node: &Node,
        bins: &Binaries,
        env: &[(String, String)],
        deadline: Duration,
    ) -> Result<()> {
        let layout = Layout::new(&node.var_lib());
        let mut atelet = node.in_node(
            &bins.atelet.display().to_string(),
            &[
                format!("--port={ATELET_PORT}"),
                "--metrics-listen-addr=127.0.0.1:9090".into(),
                "--gcp-auth-for-image-pulls=false".into(),
            ],
        );
        for (k, v) in env {
            atelet = atelet.env(k, v);
        }
        let log = log_file(&self.logs, "atelet.log")?;
        self.atelet = Some(
            atelet
                .stdin(Stdio::null())
                .stdout_file(log.try_clone()?)
                .stderr_file(log)
                .spawn()
                .context("cannot start atelet")?,
        );
        for w in node.workers() {
            let log = log_file(&self.logs, &format!("ateom-{}.log", w.uid))?;
            let ateom = node
                .in_worker(
                    w,
                    &bins.ateom.display().to_string(),
                    &[format!("--pod-uid={}", w.uid)],
                )
                .stdin(Stdio::null())
                .stdout_file(log.try_clone()?)
                .stderr_file(log)
                .spawn()
                .with_context(|| format!("cannot start ateom-gvisor for worker {}", w.uid))?;
            self.ateoms.push((w.uid.clone(), ateom));
        }
        let until = tokio::time::Instant::now() + deadline;
        let atelet_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ATELET_PORT));
        loop {
            let atelet_up = node.connect(atelet_addr).await.is_ok();
            let missing: Vec<String> = self
                .ateoms
                .iter()
                .filter(|(uid, _)| !layout.ateom_socket(uid).exists())
                .map(|(uid, _)| uid.clone())
                .collect();
            if atelet_up && missing.is_empty() {
                info!(workers = self.ateoms.len(), "atelet and every ateom are up");
                return Ok(());
            }
            if let Some(exited) = self.exited() {
                bail!(
                    "{exited} exited while the node started; its log ({}):\n{}",
                    self.log_of(&exited).display(),
                    tail(&self.log_of(&exited))
                );
            }
            if tokio::time::Instant::now() >= until {
                let who = if atelet_up {
                    format!("ateom-gvisor of worker(s) {}", missing.join(", "))
                } else {
                    "atelet".to_owned()
                };
                let log = if atelet_up {
                    self.log_of(&format!("ateom-{}", missing[0]))
                } else {
                    self.log_of("atelet")
                };
                bail!(
                    "{who} not up within {deadline:?} (atelet: {}; sockets missing: {missing:?}); log {}:\n{}",
                    if atelet_up { "accepting" } else { "not accepting" },
                    log.display(),
                    tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_of(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// The name (`atelet`, `ateom-<uid>`) of a process that has exited.
    fn exited(&mut self) -> Option<String> {
        if let Some(a) = self.atelet.as_mut() {
            if matches!(a.try_wait(), Ok(Some(_))) {
                return Some("atelet".into());
            }
        }
        for (uid, p) in &mut self.ateoms {
            if matches!(p.try_wait(), Ok(Some(_))) {
                return Some(format!("ateom-{uid}"));
            }
        }
        None
    }

    /// The PIDs of every process (atelet first), for the run's record.
    pub fn pids(&self) -> Vec<u32> {
        self.atelet
            .iter()
            .map(Spawned::pid)
            .chain(self.ateoms.iter().map(|(_, p)| p.pid()))
            .collect()
    }

    /// Stops every process by its PID (SIGTERM, then SIGKILL after 3 s),
    /// ateoms first; reports each that could not be stopped.
    pub async fn stop(&mut self) -> Result<()> {
        let mut failed = Vec::new();
        for (uid, p) in self.ateoms.drain(..) {
            if let Err(e) = p.terminate(Duration::from_secs(3)).await {
                failed.push(format!("ateom-gvisor of {uid}: {e}"));
            }
        }
        if let Some(a) = self.atelet.take() {
            if let Err(e) = a.terminate(Duration::from_secs(3)).await {
                failed.push(format!("atelet: {e}"));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("cannot stop the node's processes: {}", failed.join("; "))
        }
    }
}
