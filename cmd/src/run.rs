//! Running a command to completion.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tracing::debug;

use crate::error::tail;
use crate::group::GroupChild;
use crate::{install_hint, Cmd, CmdError, Output};

/// After `SIGKILL`, how long to keep reading output that is still buffered
/// (a process that left the group may hold the pipes open forever).
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(1);

impl Cmd {
    /// Runs the command to completion and captures its standard output and
    /// standard error. A non-zero exit is not an error here (see
    /// [`run`](Cmd::run)).
    ///
    /// Standard input is `/dev/null` unless [`stdin_bytes`](Cmd::stdin_bytes)
    /// was given. If the returned future is dropped before the command
    /// finished (a deadline of the caller's, an aborted task) the command's
    /// process group is killed.
    ///
    /// It finishes when the program has exited and its output pipes are
    /// closed: a background process that still holds them keeps it waiting
    /// (up to the timeout, when one is set). Streams sent elsewhere with
    /// [`stdout`](Cmd::stdout)/[`stderr`](Cmd::stderr) (a file, say) are
    /// not captured, and do not hold it up.
    pub async fn output(&self) -> Result<Output, CmdError> {
        self.check_found()?;
        debug!(cmd = %self, "running");
        let start = Instant::now();

        let mut command = self.command();
        command
            .stdin(if self.stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            // Piped (the default) is captured; a file, null or inherit set
            // with `stdout`/`stderr` is honoured and that stream is not
            // captured (a detached child holding a pipe would keep us
            // waiting; a file does not).
            .stdout(
                self.stdout_mode
                    .to_std()
                    .map_err(|err| self.io_error(err))?,
            )
            .stderr(
                self.stderr_mode
                    .to_std()
                    .map_err(|err| self.io_error(err))?,
            );
        let child = command.spawn().map_err(|err| self.spawn_error(err))?;
        let mut child = GroupChild::new(child);
        let stdin = child.child.stdin.take();
        let mut stdout = child.child.stdout.take();
        let mut stderr = child.child.stderr.take();
        let mut out = Vec::new();
        let mut err = Vec::new();

        let finished = {
            let run = async {
                let (fed, read_out, read_err, exited) = tokio::join!(
                    feed(stdin, self.stdin.as_deref()),
                    drain(stdout.as_mut(), &mut out),
                    drain(stderr.as_mut(), &mut err),
                    child.exited(),
                );
                fed.and(read_out).and(read_err).and(exited)
            };
            match self.timeout {
                Some(limit) => tokio::time::timeout(limit, run).await.ok(),
                None => Some(run.await),
            }
        };

        match finished {
            Some(Ok(())) => {
                let status = child.reap().await.map_err(|err| self.io_error(err))?;
                let duration = start.elapsed();
                debug!(cmd = %self, %status, ?duration, "finished");
                Ok(Output {
                    status,
                    stdout: out,
                    stderr: err,
                    duration,
                })
            }
            Some(Err(io_err)) => {
                child.signal_group(Signal::KILL);
                let _ = child.reap().await;
                Err(self.io_error(io_err))
            }
            None => {
                let after = self.timeout.unwrap_or_default();
                debug!(cmd = %self, ?after, "timed out: stopping its process group");
                child.signal_group(Signal::TERM);
                let _ = tokio::time::timeout(self.grace, async {
                    tokio::join!(
                        drain(stdout.as_mut(), &mut out),
                        drain(stderr.as_mut(), &mut err),
                        child.exited(),
                    )
                })
                .await;
                // Also sweeps group members that outlived the leader.
                child.signal_group(Signal::KILL);
                let _ = tokio::time::timeout(DRAIN_AFTER_KILL, async {
                    tokio::join!(
                        drain(stdout.as_mut(), &mut out),
                        drain(stderr.as_mut(), &mut err),
                    )
                })
                .await;
                let _ = child.reap().await;
                Err(CmdError::Timeout {
                    cmd: self.to_string(),
                    after,
                    stdout_tail: tail(&out),
                    stderr_tail: tail(&err),
                })
            }
        }
    }

    /// Like [`output`](Cmd::output), but a non-zero exit (or death by a
    /// signal) is [`CmdError::Failed`].
    pub async fn run(&self) -> Result<Output, CmdError> {
        let output = self.output().await?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(CmdError::Failed {
                cmd: self.to_string(),
                status: output.status,
                stdout_tail: tail(&output.stdout),
                stderr_tail: tail(&output.stderr),
            })
        }
    }

    /// [`run`](Cmd::run)s the command and returns its standard output as
    /// UTF-8, without one trailing newline.
    pub async fn read_stdout(&self) -> Result<String, CmdError> {
        let output = self.run().await?;
        let mut text = String::from_utf8(output.stdout).map_err(|_| {
            self.io_error(io::Error::new(
                io::ErrorKind::InvalidData,
                "standard output is not valid UTF-8",
            ))
        })?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Ok(text)
    }

    /// The tokio command: program, arguments, environment, working directory
    /// and its own process group; the caller sets up standard streams.
    pub(crate) fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(&self.args);
        for key in &self.env_remove {
            command.env_remove(key);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        command.process_group(0);
        command
    }

    /// Fails early with [`CmdError::NotFound`] when a program without `/` is
    /// not on the `PATH` the child will see.
    pub(crate) fn check_found(&self) -> Result<(), CmdError> {
        if self.program.as_bytes().contains(&b'/') {
            return Ok(());
        }
        let path = self.env.iter().find(|(key, _)| key == "PATH");
        let found = match path {
            Some((_, path)) => {
                let cwd = match &self.cwd {
                    Some(dir) => dir.clone(),
                    None => std::env::current_dir().unwrap_or_else(|_| "/".into()),
                };
                which::which_in(&self.program, Some(path), cwd)
            }
            None => which::which(&self.program),
        };
        match found {
            Ok(_) => Ok(()),
            Err(_) => Err(self.not_found()),
        }
    }

    pub(crate) fn not_found(&self) -> CmdError {
        CmdError::NotFound {
            program: self.program.to_string_lossy().into_owned(),
            hint: install_hint(&self.program),
        }
    }

    /// `ENOENT` from spawning means the program is missing, unless the
    /// working directory is the thing that does not exist.
    pub(crate) fn spawn_error(&self, err: io::Error) -> CmdError {
        let cwd_ok = self.cwd.as_ref().is_none_or(|dir| dir.is_dir());
        if err.kind() == io::ErrorKind::NotFound && cwd_ok {
            self.not_found()
        } else {
            CmdError::Spawn {
                cmd: self.to_string(),
                source: err,
            }
        }
    }

    pub(crate) fn io_error(&self, err: io::Error) -> CmdError {
        CmdError::Io {
            cmd: self.to_string(),
            source: err,
        }
    }
}

/// Writes `bytes` to the child's standard input and closes it. A child that
/// exits without reading all of it is not an error.
pub(crate) async fn feed(stdin: Option<ChildStdin>, bytes: Option<&[u8]>) -> io::Result<()> {
    let (Some(mut stdin), Some(bytes)) = (stdin, bytes) else {
        return Ok(());
    };
    match stdin.write_all(bytes).await {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => Err(err),
        _ => Ok(()),
    }
}

/// Reads `reader` to its end into `buf`. Cancel-safe: what was read before
/// the future was dropped stays in `buf`, and a later call goes on.
async fn drain<R: AsyncRead + Unpin>(reader: Option<&mut R>, buf: &mut Vec<u8>) -> io::Result<()> {
    let Some(reader) = reader else { return Ok(()) };
    let mut chunk = [0u8; 8192];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
