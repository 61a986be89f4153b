//! What the reliability and crash tests share: the static binaries, an
//! agent spawned through the one client on a state dir under `target/`,
//! a guard that stops it with SIGTERM even when a test fails, and what
//! runsc and /proc show.
//!
//! These tests need root and runsc.

#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use ate_agent_api::client::{Agent, AgentOptions};
use ate_harness::fixture::{static_bins, BuildOptions, StaticBins};

/// An engine for an in-process agent (API tests): state in `state_dir`,
/// `runsc` as given (tests that must never call it pass a path that does
/// not exist, so any accidental call fails loudly), the test binary as the
/// relay helper, a 1 s golden health deadline, healthy.
pub fn in_process_config(state_dir: PathBuf, runsc: PathBuf) -> ate_refagent::engine::EngineConfig {
    ate_refagent::engine::EngineConfig {
        state_dir,
        runtime: std::sync::Arc::new(ate_refagent::runsc::Runsc {
            program: runsc,
            ..ate_refagent::runsc::Runsc::default()
        }),
        helper_bin: std::env::current_exe().unwrap(),
        checker_bin: None,
        golden_health_timeout: Duration::from_secs(1),
        runsc_debug: false,
        fault: None,
    }
}

/// The IDs of a running actor's containers (pause and app), sorted: what
/// `GET /sandboxes` and `runsc list` show for it.
pub fn container_ids(v: &ate_agent_api::ActorView) -> Vec<String> {
    let mut ids: Vec<String> = v.containers.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    ids
}

/// How long the agent has to print its start-up line.
pub const SPAWN_DEADLINE: Duration = Duration::from_secs(30);
/// Grace for the agent to remove its sandboxes on SIGTERM.
pub const TERM_GRACE: Duration = Duration::from_secs(60);

/// The static probe and agent (the agent must be static: it is also the
/// relay inside each sandbox), built once into `target/ate-static`.
pub async fn bins() -> anyhow::Result<StaticBins> {
    let t0 = Instant::now();
    let bins = static_bins(&BuildOptions::default()).await?;
    eprintln!("static binaries ready in {} ms", t0.elapsed().as_millis());
    Ok(bins)
}

/// A fresh temp dir under the workspace's `target/` (canonical), named
/// `<prefix>XXXXXX`; removed when dropped.
pub fn test_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&target)?;
    let target = target.canonicalize()?;
    Ok(tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&target)?)
}

/// `ate-refagent serve` on `state_dir` with its log at `log`, through
/// [`Agent::spawn`], wrapped in a [`Guard`].
pub async fn spawn(bins: &StaticBins, state_dir: &Path, log: &Path) -> anyhow::Result<Guard> {
    let opts = AgentOptions {
        agent_bin: bins.agent.clone(),
        state_dir: state_dir.to_path_buf(),
        runsc: PathBuf::from("runsc"),
        checker_bin: Some(bins.checker.clone()),
        runsc_debug: false,
        fault: None,
        log: log.to_path_buf(),
    };
    let agent = Agent::spawn(&opts, SPAWN_DEADLINE)
        .await
        .context("cannot start the reference agent")?;
    Ok(Guard {
        pid: agent.pid(),
        log: log.to_path_buf(),
        agent: Some(agent),
    })
}

/// A running agent that a failed test must not leave behind: dropped while
/// it still holds the agent, it sends SIGTERM (so the agent removes its
/// sandboxes) and waits up to [`TERM_GRACE`] for it to exit, instead of the
/// SIGKILL that dropping an [`Agent`] sends. Take the agent out with
/// [`Guard::take`] to stop or kill it yourself.
pub struct Guard {
    agent: Option<Agent>,
    pid: u32,
    log: PathBuf,
}

impl Guard {
    /// The agent.
    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("the agent was not taken")
    }

    /// The agent, out of the guard's care.
    pub fn take(&mut self) -> Agent {
        self.agent.take().expect("the agent was not taken")
    }
}

impl std::ops::Deref for Guard {
    type Target = Agent;
    fn deref(&self) -> &Agent {
        self.agent()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(agent) = self.agent.take() else {
            return;
        };
        eprintln!(
            "agent {} stopped by drop (test failed?); last log lines:\n{}",
            self.pid,
            ate_agent_api::client::log_tail(&self.log, 40)
        );
        // The agent is not reaped while `agent` lives, so its pid is ours.
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let t0 = Instant::now();
        while t0.elapsed() < TERM_GRACE {
            match proc_stat(self.pid) {
                Some(s) if s.state != 'Z' => std::thread::sleep(Duration::from_millis(50)),
                _ => break,
            }
        }
        drop(agent);
    }
}

/// A process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `Z`, ...
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Start time (clock ticks after boot): tells a reused pid apart.
    pub start: u64,
}

/// `/proc/<pid>/stat`, or `None` when there is no such process.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// `runsc list -quiet`: every container ID runsc lists.
pub async fn runsc_ids() -> anyhow::Result<Vec<String>> {
    ate_harness::backend::local::runsc_list(std::path::Path::new("runsc")).await
}

/// The container IDs of agent instance `instance` that runsc lists.
pub async fn runsc_ids_of(instance: &str) -> anyhow::Result<Vec<String>> {
    let prefix = format!("ate-{instance}-");
    Ok(runsc_ids()
        .await?
        .into_iter()
        .filter(|c| c.starts_with(&prefix))
        .collect())
}
