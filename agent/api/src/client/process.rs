//! The agent process: spawn `ate-refagent serve`, read its start-up line,
//! stop it, detach it; and `ate-refagent gc` for state dirs whose agent is
//! gone. The one place that starts the agent.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use ate_cmd::{Cmd, CmdError, Spawned, Stdio};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::http::{AgentClient, ApiError};
use crate::fault::Fault;
use crate::types::{Detached, StartupLine};

/// Lines of the agent's log quoted in failure messages.
const LOG_TAIL_LINES: usize = 30;

/// An error starting, stopping or cleaning up after the agent process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The log file could not be created.
    #[error("cannot create the agent log {}", path.display())]
    Log {
        /// The log path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The agent could not be started, or `gc` failed.
    #[error("cannot run the reference agent")]
    Cmd(#[from] CmdError),
    /// The agent exited before printing its start-up line.
    #[error("the agent `{cmd}` exited before it was ready ({status}); its log {}:\n{tail}", log.display())]
    Exited {
        /// The command line.
        cmd: String,
        /// How it exited.
        status: String,
        /// Its log.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// No start-up line within the caller's deadline; the agent was stopped.
    #[error("the agent `{cmd}` printed no start-up line within {waited:?}; its log {}:\n{tail}", log.display())]
    NoLine {
        /// The command line.
        cmd: String,
        /// How long it was given.
        waited: Duration,
        /// Its log.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// The first line is not the start-up JSON.
    #[error("the agent's first line is not its start-up JSON: {line}")]
    BadLine {
        /// The line.
        line: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The agent exited unsuccessfully when stopped.
    #[error("the agent exited with {status} when stopped; its log {}:\n{tail}", log.display())]
    StopFailed {
        /// How it exited.
        status: ExitStatus,
        /// Its log.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// `POST /detach` failed.
    #[error("cannot detach the agent")]
    Detach(#[source] ApiError),
    /// The agent did not exit after `/detach`; it was stopped (and so
    /// removed its sandboxes).
    #[error("the agent did not exit within {waited:?} after /detach; it was stopped and its sandboxes removed")]
    DetachHung {
        /// How long it was given.
        waited: Duration,
    },
}

/// How to start the agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The `ate-refagent` binary.
    pub agent_bin: PathBuf,
    /// Its state dir (created by the agent).
    pub state_dir: PathBuf,
    /// The runsc program.
    pub runsc: PathBuf,
    /// The harness's static checker (`ate-check`), placed next to the
    /// agent's relay and run in sandboxes (`--checker-bin`); `None`: the
    /// agent offers no checks.
    pub checker_bin: Option<PathBuf>,
    /// Ask runsc for debug logs (per actor, under the state dir).
    pub runsc_debug: bool,
    /// Run in this fault mode (self-test only; `None`: healthy).
    pub fault: Option<Fault>,
    /// Where the agent's stderr goes (created or truncated).
    pub log: PathBuf,
}

impl AgentOptions {
    /// The command: `serve --state-dir D --exit-with-parent --runsc R
    /// [--checker-bin C] [--runsc-debug] [--fault F]`, `NO_COLOR=1` (the log is a file),
    /// stdin closed. Stdout is piped (the start-up line); stderr is set by
    /// [`Agent::spawn`].
    pub fn command(&self) -> Cmd {
        let mut cmd = Cmd::new(&self.agent_bin)
            .arg("serve")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--exit-with-parent")
            .arg("--runsc")
            .arg(&self.runsc)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        if let Some(c) = &self.checker_bin {
            cmd = cmd.arg("--checker-bin").arg(c);
        }
        if self.runsc_debug {
            cmd = cmd.arg("--runsc-debug");
        }
        if let Some(f) = self.fault {
            cmd = cmd.arg("--fault").arg(f.name());
        }
        cmd
    }
}

/// A running agent started by [`Agent::spawn`].
///
/// **Dropping it kills its process group with SIGKILL** (its sandboxes stay
/// behind, recorded, for the next agent or `gc`); stop it with
/// [`stop`](Agent::stop).
#[derive(Debug)]
pub struct Agent {
    child: Spawned,
    line: StartupLine,
    client: AgentClient,
    log: PathBuf,
}

impl Agent {
    /// Starts the agent and reads its start-up line within `deadline`. On
    /// failure the message quotes the end of its log.
    pub async fn spawn(opts: &AgentOptions, deadline: Duration) -> Result<Agent, ProcessError> {
        let log = std::fs::File::create(&opts.log).map_err(|source| ProcessError::Log {
            path: opts.log.clone(),
            source,
        })?;
        let started = Instant::now();
        let mut child = opts.command().stderr(Stdio::file(log)).spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let first = tokio::time::timeout(deadline, async {
            BufReader::new(stdout).lines().next_line().await
        })
        .await;
        let line = match first {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = match child.wait().await {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("cannot reap it: {e}"),
                };
                return Err(ProcessError::Exited {
                    cmd: child.cmd().to_owned(),
                    status,
                    log: opts.log.clone(),
                    tail: log_tail(&opts.log, LOG_TAIL_LINES),
                });
            }
            Err(_) => {
                let cmd = child.cmd().to_owned();
                let _ = child.terminate(Duration::from_secs(10)).await;
                return Err(ProcessError::NoLine {
                    cmd,
                    waited: deadline,
                    log: opts.log.clone(),
                    tail: log_tail(&opts.log, LOG_TAIL_LINES),
                });
            }
        };
        let line: StartupLine = match serde_json::from_str(&line) {
            Ok(l) => l,
            Err(source) => {
                let _ = child.terminate(Duration::from_secs(10)).await;
                return Err(ProcessError::BadLine { line, source });
            }
        };
        tracing::info!(pid = line.pid, control = %line.control, router = %line.router, ms = started.elapsed().as_millis() as u64, "agent ready");
        if !line.orphans_removed.is_empty() {
            tracing::warn!(orphans = ?line.orphans_removed, "agent removed orphan sandboxes");
        }
        Ok(Agent {
            client: AgentClient::new(line.control),
            child,
            line,
            log: opts.log.clone(),
        })
    }

    /// What the agent printed when it was ready.
    pub fn line(&self) -> &StartupLine {
        &self.line
    }

    /// The control API client.
    pub fn client(&self) -> &AgentClient {
        &self.client
    }

    /// The agent's pid (also its process group).
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The agent's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of its log, each indented.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Reaps the agent if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        Ok(self.child.try_wait()?)
    }

    /// SIGTERM (the agent kills and deletes every sandbox it started), up
    /// to `grace` for it to exit, then SIGKILL to its group; reaped. An
    /// unsuccessful exit is an error quoting its log.
    pub async fn stop(self, grace: Duration) -> Result<ExitStatus, ProcessError> {
        let status = self.child.terminate(grace).await?;
        if !status.success() {
            return Err(ProcessError::StopFailed {
                status,
                log: self.log.clone(),
                tail: log_tail(&self.log, LOG_TAIL_LINES),
            });
        }
        Ok(status)
    }

    /// SIGKILL to its process group (no SIGTERM first), reaped: no chance
    /// to clean up (crash tests). Its sandboxes stay, recorded in the state
    /// dir.
    pub async fn kill(self) -> Result<ExitStatus, ProcessError> {
        Ok(self.child.kill().await?)
    }

    /// `POST /detach`, then waits up to `deadline` for the agent to exit,
    /// leaving every sandbox running and recorded (for `--keep`). If it
    /// does not exit it is stopped (removing its sandboxes) and this fails.
    pub async fn detach(mut self, deadline: Duration) -> Result<Detached, ProcessError> {
        let detached = self.client.detach().await.map_err(ProcessError::Detach)?;
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(Ok(_)) => Ok(detached),
            _ => {
                let _ = self.child.terminate(Duration::from_secs(10)).await;
                Err(ProcessError::DetachHung { waited: deadline })
            }
        }
    }
}

/// The last `lines` lines of the file at `path`, each indented by four
/// spaces (empty when it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect()
}

/// True when no agent holds `dir`'s lock (its agent is gone). A dir with
/// no lock file is not an agent state dir: false.
pub fn state_dir_is_stale(dir: &Path) -> bool {
    let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("agent.lock"))
    else {
        return false;
    };
    rustix::fs::flock(
        f.as_fd(),
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .is_ok()
}

/// `ate-refagent gc --state-dir DIR --remove`: kills and deletes the
/// sandboxes recorded in the state dir of an agent that is gone, by ID,
/// then removes the dir. Returns what it printed, one line per thing
/// removed. Fails if an agent still holds the dir.
pub async fn gc_and_remove(
    agent_bin: &Path,
    state_dir: &Path,
) -> Result<Vec<String>, ProcessError> {
    let out = Cmd::new(agent_bin)
        .arg("gc")
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--remove")
        .env("NO_COLOR", "1")
        .timeout(Duration::from_secs(120))
        .run()
        .await?;
    Ok(out.stdout_str().lines().map(String::from).collect())
}
