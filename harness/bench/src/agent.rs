//! The agent under test, started and stopped through the agent API's
//! client.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use ate_agent_api::client::{Agent, AgentClient, AgentOptions};
use ate_harness::fixture::StaticBins;
use ate_harness::router::RouterClient;

use crate::AGENT_TERM_GRACE;

/// `ate-refagent serve` on a state dir of its own, started and stopped by
/// the agent API's client.
pub(crate) struct BenchAgent {
    agent: Option<Agent>,
}

impl BenchAgent {
    pub(crate) async fn start(bins: &StaticBins, dir: &Path, runsc: &Path) -> Result<BenchAgent> {
        // Our own link to the agent binary, for the stale-run sweep.
        let _ = std::fs::hard_link(&bins.agent, dir.join("ate-refagent"))
            .or_else(|_| std::fs::copy(&bins.agent, dir.join("ate-refagent")).map(drop));
        let opts = AgentOptions {
            agent_bin: bins.agent.clone(),
            state_dir: dir.join("state"),
            runsc: runsc.to_path_buf(),
            // No checker: the bench times the golden boot as it is.
            checker_bin: None,
            runsc_debug: false,
            fault: None,
            log: dir.join("agent.log"),
        };
        let agent = Agent::spawn(&opts, Duration::from_secs(30)).await?;
        let line = agent.line();
        ensure!(
            line.control.ip().is_loopback() && line.router.ip().is_loopback(),
            "the agent listens off loopback: {line:?}"
        );
        eprintln!(
            "bench: agent pid {} instance {} control {} router {} state {}",
            agent.pid(),
            line.instance,
            line.control,
            line.router,
            line.state_dir.display()
        );
        Ok(BenchAgent { agent: Some(agent) })
    }

    pub(crate) fn inner(&self) -> &Agent {
        self.agent.as_ref().expect("running")
    }

    pub(crate) fn api(&self) -> &AgentClient {
        self.inner().client()
    }

    pub(crate) fn instance(&self) -> &str {
        &self.inner().line().instance
    }

    pub(crate) fn state_dir(&self) -> &Path {
        &self.inner().line().state_dir
    }

    pub(crate) fn router(&self) -> RouterClient {
        RouterClient::new(self.inner().line().router)
    }

    /// SIGTERM (the agent removes every sandbox it started) and reap.
    pub(crate) async fn stop(mut self) -> Result<String> {
        let agent = self.agent.take().expect("running");
        let status = agent.stop(AGENT_TERM_GRACE).await?;
        Ok(status.to_string())
    }
}

impl Drop for BenchAgent {
    /// Not stopped by [`BenchAgent::stop`] (a panic): SIGTERM, so that it
    /// removes its sandboxes, and wait for it, rather than the SIGKILL that
    /// dropping the child would send.
    fn drop(&mut self) {
        let Some(agent) = self.agent.as_ref() else {
            return;
        };
        let pid = agent.pid();
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
        let t0 = Instant::now();
        while t0.elapsed() < AGENT_TERM_GRACE {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next().map(String::from));
            match state.as_deref() {
                Some(s) if s != "Z" => std::thread::sleep(Duration::from_millis(50)),
                _ => break,
            }
        }
    }
}
