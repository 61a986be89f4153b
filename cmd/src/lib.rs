//! A command is a value.
//!
//! [`Cmd`] holds a program, its argument vector, environment changes, working
//! directory, timeout and standard input; nothing is ever run through a shell
//! and nothing changes the process-wide working directory or environment.
//!
//! **Every child runs in its own process group.** On timeout the group gets
//! `SIGTERM`, then `SIGKILL` after a grace period; a dropped future or a dropped
//! [`Spawned`] kills the group with `SIGKILL`, so no grandchild outlives its
//! caller by accident.
//!
//! ```no_run
//! # async fn f() -> Result<(), ate_cmd::CmdError> {
//! use std::time::Duration;
//! use ate_cmd::Cmd;
//!
//! let version = Cmd::new("runsc")
//!     .arg("--version")
//!     .timeout(Duration::from_secs(10))
//!     .read_stdout()
//!     .await?;
//! # Ok(()) }
//! ```

mod error;
mod group;
mod pipeline;
mod quote;
mod run;
mod spawned;

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

pub use error::{install_hint, tail, CmdError};
pub use pipeline::{Pipeline, PipelineError};
pub use spawned::Spawned;

/// The default time between `SIGTERM` and `SIGKILL` when a command is stopped.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

/// A command to run: program, arguments, environment changes, working
/// directory, timeout and standard input.
///
/// Build it with [`Cmd::new`] and the builder methods, then run it with
/// [`output`](Cmd::output), [`run`](Cmd::run),
/// [`read_stdout`](Cmd::read_stdout) or [`spawn`](Cmd::spawn). Running does
/// not consume the value: the same command can be run again.
#[derive(Clone, Debug)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    cwd: Option<PathBuf>,
    timeout: Option<Duration>,
    grace: Duration,
    stdin: Option<Vec<u8>>,
    stdin_mode: Stdio,
    stdout_mode: Stdio,
    stderr_mode: Stdio,
}

impl Cmd {
    /// A command that runs `program` (looked up on `PATH` when it has no `/`).
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            cwd: None,
            timeout: None,
            grace: DEFAULT_GRACE,
            stdin: None,
            stdin_mode: Stdio::piped(),
            stdout_mode: Stdio::piped(),
            stderr_mode: Stdio::piped(),
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub fn args<I>(mut self, args: I) -> Cmd
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the child (the rest is inherited).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        let key = key.as_ref().to_owned();
        self.env_remove.retain(|k| *k != key);
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.as_ref().to_owned()));
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Cmd {
        let key = key.as_ref().to_owned();
        self.env.retain(|(k, _)| *k != key);
        if !self.env_remove.contains(&key) {
            self.env_remove.push(key);
        }
        self
    }

    /// Runs the child in `dir` (the caller's working directory is untouched).
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Stops the command if it has not finished after `limit`: `SIGTERM` to
    /// its process group, then `SIGKILL` after the [grace](Cmd::grace) period.
    /// Applies to [`output`](Cmd::output), [`run`](Cmd::run) and
    /// [`read_stdout`](Cmd::read_stdout), not to [`spawn`](Cmd::spawn).
    pub fn timeout(mut self, limit: Duration) -> Cmd {
        self.timeout = Some(limit);
        self
    }

    /// The time between `SIGTERM` and `SIGKILL` on timeout
    /// ([`DEFAULT_GRACE`] unless set).
    pub fn grace(mut self, grace: Duration) -> Cmd {
        self.grace = grace;
        self
    }

    /// Feeds `bytes` to the child's standard input, then closes it. Without
    /// it, [`output`](Cmd::output) gives the child `/dev/null`.
    pub fn stdin_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    /// Standard input of a [spawned](Cmd::spawn) child (default: piped,
    /// handed to the caller as [`Spawned::stdin`]). Ignored when
    /// [`stdin_bytes`](Cmd::stdin_bytes) is set, and by `output`, which uses
    /// `/dev/null` or the given bytes.
    pub fn stdin(mut self, stdio: Stdio) -> Cmd {
        self.stdin_mode = stdio;
        self
    }

    /// Standard output of the child (default: piped). `output` captures a
    /// pipe; any other choice (a file, for a detached child) is honoured and
    /// not captured.
    pub fn stdout(mut self, stdio: Stdio) -> Cmd {
        self.stdout_mode = stdio;
        self
    }

    /// Standard error of the child (default: piped); as for
    /// [`stdout`](Cmd::stdout).
    pub fn stderr(mut self, stdio: Stdio) -> Cmd {
        self.stderr_mode = stdio;
        self
    }

    /// Shorthand for `.stdout(Stdio::file(file))`.
    pub fn stdout_file(self, file: File) -> Cmd {
        self.stdout(Stdio::file(file))
    }

    /// Shorthand for `.stderr(Stdio::file(file))`.
    pub fn stderr_file(self, file: File) -> Cmd {
        self.stderr(Stdio::file(file))
    }

    /// The program, as given to [`Cmd::new`].
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments, in order.
    pub fn get_args(&self) -> impl Iterator<Item = &OsStr> {
        self.args.iter().map(OsString::as_os_str)
    }

    /// The environment variables set explicitly, in the order they were set.
    pub fn get_envs(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str()))
    }

    /// The working directory, when one was set.
    pub fn get_cwd(&self) -> Option<&Path> {
        self.cwd.as_deref()
    }
}

/// The command line for people: environment set explicitly as `KEY=VAL`
/// prefixes, then the program and its arguments, each shell-quoted only when
/// needed (`runsc --root /x restore --image-path '/a b' id`).
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in &self.env {
            write!(f, "{}={} ", quote::quote(key), quote::quote(value))?;
        }
        f.write_str(&quote::quote(&self.program))?;
        for arg in &self.args {
            write!(f, " {}", quote::quote(arg))?;
        }
        Ok(())
    }
}

/// What a finished command left behind.
#[derive(Clone, Debug)]
pub struct Output {
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it wrote to standard output.
    pub stdout: Vec<u8>,
    /// Everything it wrote to standard error.
    pub stderr: Vec<u8>,
    /// From spawning to reaping.
    pub duration: Duration,
}

impl Output {
    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// Standard error as text (invalid UTF-8 replaced).
    pub fn stderr_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }
}

/// Where one standard stream of a child goes (for [`spawn`](Cmd::spawn);
/// `output`/`run` honour it for stdout and stderr, capturing only pipes).
#[derive(Clone, Debug)]
pub struct Stdio(StdioKind);

#[derive(Clone, Debug)]
enum StdioKind {
    Piped,
    Null,
    Inherit,
    File(Arc<File>),
}

impl Stdio {
    /// A pipe; the caller's end is handed out by [`Spawned`].
    pub fn piped() -> Stdio {
        Stdio(StdioKind::Piped)
    }

    /// `/dev/null`.
    pub fn null() -> Stdio {
        Stdio(StdioKind::Null)
    }

    /// The caller's own stream.
    pub fn inherit() -> Stdio {
        Stdio(StdioKind::Inherit)
    }

    /// An open file (for output streams, open it for writing or appending).
    pub fn file(file: File) -> Stdio {
        Stdio(StdioKind::File(Arc::new(file)))
    }

    fn to_std(&self) -> std::io::Result<std::process::Stdio> {
        Ok(match &self.0 {
            StdioKind::Piped => std::process::Stdio::piped(),
            StdioKind::Null => std::process::Stdio::null(),
            StdioKind::Inherit => std::process::Stdio::inherit(),
            StdioKind::File(file) => file.try_clone()?.into(),
        })
    }
}
