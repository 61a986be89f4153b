//! Long-running children.

use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

use rustix::process::Signal;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tracing::debug;

use crate::group::GroupChild;
use crate::run::feed;
use crate::{Cmd, CmdError};

impl Cmd {
    /// Starts the command and returns at once, for children that run
    /// alongside the caller (a node agent, a port-forward).
    ///
    /// Streams follow [`stdin`](Cmd::stdin), [`stdout`](Cmd::stdout) and
    /// [`stderr`](Cmd::stderr) (all piped by default); piped ends are in
    /// [`Spawned`]'s fields. With [`stdin_bytes`](Cmd::stdin_bytes) the bytes
    /// are fed in the background and standard input is then closed. The
    /// [timeout](Cmd::timeout) does not apply: stop the child with
    /// [`Spawned::terminate`], or drop it to kill its process group.
    ///
    /// Must be called within a tokio runtime.
    pub fn spawn(&self) -> Result<Spawned, CmdError> {
        self.check_found()?;
        debug!(cmd = %self, "spawning");
        let stdio_error = |err| CmdError::Spawn {
            cmd: self.to_string(),
            source: err,
        };
        let stdin = match self.stdin {
            Some(_) => std::process::Stdio::piped(),
            None => self.stdin_mode.to_std().map_err(stdio_error)?,
        };
        let mut command = self.command();
        command
            .stdin(stdin)
            .stdout(self.stdout_mode.to_std().map_err(stdio_error)?)
            .stderr(self.stderr_mode.to_std().map_err(stdio_error)?);
        let child = command.spawn().map_err(|err| self.spawn_error(err))?;
        let mut inner = GroupChild::new(child);
        let mut stdin = inner.child.stdin.take();
        if let Some(bytes) = self.stdin.clone() {
            let pipe = stdin.take();
            tokio::spawn(async move {
                let _ = feed(pipe, Some(&bytes)).await;
            });
        }
        debug!(cmd = %self, pid = inner.pid(), "spawned");
        Ok(Spawned {
            stdout: inner.child.stdout.take(),
            stderr: inner.child.stderr.take(),
            stdin,
            inner,
            cmd: self.to_string(),
        })
    }
}

/// A running child started by [`Cmd::spawn`], leader of its own process
/// group.
///
/// **Dropping it before it was reaped kills its process group with
/// `SIGKILL`.** Stop it gracefully with [`terminate`](Spawned::terminate).
pub struct Spawned {
    /// The caller's end of the child's standard input, when piped.
    pub stdin: Option<ChildStdin>,
    /// The caller's end of the child's standard output, when piped.
    pub stdout: Option<ChildStdout>,
    /// The caller's end of the child's standard error, when piped.
    pub stderr: Option<ChildStderr>,
    inner: GroupChild,
    cmd: String,
}

impl Spawned {
    /// The child's pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// The command line it was started with.
    pub fn cmd(&self) -> &str {
        &self.cmd
    }

    /// Waits for the child to exit and reaps it. Other members of its
    /// process group are left alone.
    pub async fn wait(&mut self) -> Result<ExitStatus, CmdError> {
        self.inner.reap().await.map_err(|err| self.io_error(err))
    }

    /// Reaps the child if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, CmdError> {
        match self.inner.child.try_wait() {
            Ok(status) => Ok(status),
            Err(err) => Err(self.io_error(err)),
        }
    }

    /// Stops the child: `SIGTERM` to its process group, up to `grace` for
    /// the leader to exit, then `SIGKILL` to the group (which also ends
    /// members that outlived the leader), then reaps it. A child that has
    /// already been reaped just returns its status.
    pub async fn terminate(mut self, grace: Duration) -> Result<ExitStatus, CmdError> {
        if !self.inner.is_reaped() {
            debug!(cmd = %self.cmd, pid = self.pid(), ?grace, "terminating");
            self.inner.signal_group(Signal::TERM);
            let _ = tokio::time::timeout(grace, self.inner.exited()).await;
            self.inner.signal_group(Signal::KILL);
        }
        let status = self.inner.reap().await.map_err(|err| self.io_error(err))?;
        debug!(cmd = %self.cmd, %status, "terminated");
        Ok(status)
    }

    /// Kills the child at once: `SIGKILL` to its process group, with no
    /// `SIGTERM` first (crash tests: it gets no chance to clean up), then
    /// reaps it. A child that has already been reaped just returns its
    /// status.
    pub async fn kill(mut self) -> Result<ExitStatus, CmdError> {
        if !self.inner.is_reaped() {
            debug!(cmd = %self.cmd, pid = self.pid(), "killing");
            self.inner.signal_group(Signal::KILL);
        }
        let status = self.inner.reap().await.map_err(|err| self.io_error(err))?;
        debug!(cmd = %self.cmd, %status, "killed");
        Ok(status)
    }

    fn io_error(&self, err: std::io::Error) -> CmdError {
        CmdError::Io {
            cmd: self.cmd.clone(),
            source: err,
        }
    }
}

impl fmt::Debug for Spawned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawned")
            .field("cmd", &self.cmd)
            .field("pid", &self.pid())
            .field("reaped", &self.inner.is_reaped())
            .finish_non_exhaustive()
    }
}
