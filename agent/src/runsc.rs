//! The `runsc` command vectors the agent runs, and nothing else.
//!
//! Every call is an argument vector with a deadline (see `ate-cmd`); the
//! container ID is always the last positional argument so logs read the same
//! way as `runsc`'s own usage lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ate_cmd::{Cmd, CmdError, Stdio};

/// Errors from driving `runsc`.
#[derive(Debug, thiserror::Error)]
pub enum RunscError {
    /// A `runsc` invocation failed, timed out or could not start; the source
    /// carries the command line, its status and the tail of its output.
    #[error("runsc {op} failed for container {cid}{console}")]
    Command {
        /// The subcommand (`run`, `restore`, ...).
        op: &'static str,
        /// The container ID it was run for.
        cid: String,
        /// The tail of the container's console log, when the command wrote
        /// there (rendered as an indented block, or empty).
        console: String,
        /// What the command runner reported.
        #[source]
        source: CmdError,
    },
    /// `runsc --version` could not be run.
    #[error("cannot determine the runsc version")]
    Version(#[source] CmdError),
}

/// How the agent calls `runsc`.
#[derive(Debug, Clone)]
pub struct Runsc {
    /// The program to run (`runsc` on PATH by default).
    pub program: PathBuf,
    /// `--root` for runsc's own state; `None` keeps runsc's default.
    pub root: Option<PathBuf>,
    /// Deadline for run, restore and checkpoint.
    pub op_timeout: Duration,
}

impl Default for Runsc {
    fn default() -> Self {
        Runsc {
            program: PathBuf::from("runsc"),
            root: None,
            op_timeout: Duration::from_secs(60),
        }
    }
}

/// Where runsc should write its debug logs for one call, if anywhere.
#[derive(Debug, Clone, Copy)]
pub struct DebugLog<'a>(pub Option<&'a Path>);

impl Runsc {
    fn base(&self, debug: DebugLog<'_>) -> Cmd {
        let mut cmd = Cmd::new(&self.program);
        if let Some(root) = &self.root {
            cmd = cmd.arg("--root").arg(root);
        }
        // --network=none: the only network mode that checkpoints on these
        // machines (DESIGN.md); traffic enters through the relay.
        cmd = cmd.arg("--network=none");
        if let Some(dir) = debug.0 {
            // A trailing slash makes runsc write one file per command there.
            let mut d = dir.as_os_str().to_owned();
            d.push("/");
            let mut flag = std::ffi::OsString::from("--debug-log=");
            flag.push(d);
            cmd = cmd.arg("--debug").arg(flag);
        }
        cmd
    }

    async fn call(&self, op: &'static str, cid: &str, cmd: Cmd) -> Result<(), RunscError> {
        let fail = |console: String, source| RunscError::Command {
            op,
            cid: cid.to_owned(),
            console,
            source,
        };
        let out = cmd.output().await.map_err(|e| fail(String::new(), e))?;
        if out.status.success() {
            return Ok(());
        }
        // runsc puts the reason on the first line of stderr, often followed
        // by a Go stack dump: keep that line (elided) as well as the tail.
        let first = String::from_utf8_lossy(&out.stderr)
            .lines()
            .find(|l| !l.trim().is_empty())
            .map(elide)
            .unwrap_or_default();
        let source = CmdError::Failed {
            cmd: cmd.to_string(),
            status: out.status,
            stdout_tail: ate_cmd::tail(&out.stdout),
            stderr_tail: ate_cmd::tail(&out.stderr),
        };
        Err(fail(
            if first.is_empty() {
                first
            } else {
                format!(": {first}")
            },
            source,
        ))
    }

    /// Runs `run`/`restore`, whose container inherits runsc's stdio: it
    /// must go to a file (a pipe would stay open as long as the container
    /// lives), and that file's tail goes into the error.
    async fn call_with_console(
        &self,
        op: &'static str,
        cid: &str,
        cmd: Cmd,
        console: &Path,
    ) -> Result<(), RunscError> {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(console)
        };
        let (out, err) = match (open(), open()) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                return Err(RunscError::Command {
                    op,
                    cid: cid.to_owned(),
                    console: String::new(),
                    source: CmdError::Io {
                        cmd: format!("{cmd} (console log {})", console.display()),
                        source: e,
                    },
                })
            }
        };
        let cmd = cmd.stdout(Stdio::file(out)).stderr(Stdio::file(err));
        cmd.run().await.map(|_| ()).map_err(|source| {
            // Both streams went to the console log: show its end.
            let text = std::fs::read_to_string(console).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail: String = lines[lines.len().saturating_sub(20)..]
                .iter()
                .map(|l| format!("\n    {l}"))
                .collect();
            RunscError::Command {
                op,
                cid: cid.to_owned(),
                console: format!("; console log {}:{tail}", console.display()),
                source,
            }
        })
    }

    /// `runsc create --bundle B CID`: creates a container (the sandbox
    /// itself for a pause bundle, a container in its sandbox for an app
    /// bundle); its stdio (and runsc's) goes to the file `console`. As
    /// upstream's ateom does (`cmd/ateom-gvisor/runsc.go:37-73` at
    /// 86e138f6), without its per-actor `-root` and `-pid-file`.
    pub async fn create(
        &self,
        cid: &str,
        bundle: &Path,
        console: &Path,
        debug: DebugLog<'_>,
    ) -> Result<(), RunscError> {
        let cmd = self
            .base(debug)
            .args(["create", "--bundle"])
            .arg(bundle)
            .arg(cid)
            .timeout(self.op_timeout);
        self.call_with_console("create", cid, cmd, console).await
    }

    /// `runsc start CID`: starts a created container
    /// (`cmd/ateom-gvisor/runsc.go:75-105` at 86e138f6; this runsc has no
    /// `-allow-connected-on-save`). For a container joining a sandbox
    /// runsc hands *this* command's stdio to the container's process, so
    /// it goes to the file `console` too (a pipe would never close).
    pub async fn start(
        &self,
        cid: &str,
        console: &Path,
        debug: DebugLog<'_>,
    ) -> Result<(), RunscError> {
        let cmd = self
            .base(debug)
            .args(["start"])
            .arg(cid)
            .timeout(self.op_timeout);
        self.call_with_console("start", cid, cmd, console).await
    }

    /// `runsc restore --detach --image-path I --bundle B CID`; stdio to
    /// the file `console`. Called on each container of a sandbox with the
    /// same image, pause first (`cmd/ateom-gvisor/runsc.go:176-210` at
    /// 86e138f6; this runsc's restore creates the container itself and
    /// has no `-background`).
    pub async fn restore(
        &self,
        cid: &str,
        bundle: &Path,
        image: &Path,
        console: &Path,
        debug: DebugLog<'_>,
    ) -> Result<(), RunscError> {
        let cmd = self
            .base(debug)
            .args(["restore", "--detach", "--image-path"])
            .arg(image)
            .arg("--bundle")
            .arg(bundle)
            .arg(cid)
            .timeout(self.op_timeout);
        self.call_with_console("restore", cid, cmd, console).await
    }

    /// `runsc checkpoint --image-path I CID`; the container is stopped after.
    /// Given the pause (root) container, it saves the whole sandbox
    /// (`cmd/ateom-gvisor/main.go:279-281` at 86e138f6).
    pub async fn checkpoint(
        &self,
        cid: &str,
        image: &Path,
        debug: DebugLog<'_>,
    ) -> Result<(), RunscError> {
        let cmd = self
            .base(debug)
            .args(["checkpoint", "--image-path"])
            .arg(image)
            .arg(cid)
            .timeout(self.op_timeout);
        self.call("checkpoint", cid, cmd).await
    }

    /// Kills and deletes a container by its ID. A container that no longer
    /// exists counts as removed; anything else that keeps it listed is an
    /// error.
    pub async fn remove(&self, cid: &str) -> Result<(), RunscError> {
        let short = Duration::from_secs(20);
        // The kill fails for a stopped container; delete -force is what
        // must succeed.
        let _ = self
            .base(DebugLog(None))
            .args(["kill", cid, "KILL"])
            .timeout(short)
            .output()
            .await;
        let delete = self
            .base(DebugLog(None))
            .args(["delete", "-force", cid])
            .timeout(short);
        match self.call("delete", cid, delete).await {
            Ok(()) => Ok(()),
            Err(e) => match self.list().await {
                Ok(ids) if !ids.iter().any(|id| id == cid) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// IDs of the containers runsc lists under this root.
    pub async fn list(&self) -> Result<Vec<String>, RunscError> {
        let out = self
            .base(DebugLog(None))
            .args(["list", "-quiet"])
            .timeout(Duration::from_secs(20))
            .run()
            .await
            .map_err(|source| RunscError::Command {
                op: "list",
                cid: "*".into(),
                console: String::new(),
                source,
            })?;
        Ok(out
            .stdout_str()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// The command that runs the agent's relay inside container `cid`,
    /// connecting to `127.0.0.1:port` there and piping stdin/stdout.
    pub fn exec_relay(&self, cid: &str, helper_in_sandbox: &str, port: u16) -> Cmd {
        self.base(DebugLog(None))
            .arg("exec")
            .arg(cid)
            .arg(helper_in_sandbox)
            .arg("relay")
            .arg("--port")
            .arg(port.to_string())
    }

    /// `runsc exec CID PROGRAM ARGS...`: a helper program (under `/.ate`)
    /// inside container `cid`. Its output is readable only through a pipe
    /// or file the caller owns, so the caller sets stdio explicitly.
    pub fn exec(&self, cid: &str, program_in_sandbox: &str, args: &[String]) -> Cmd {
        self.base(DebugLog(None))
            .arg("exec")
            .arg(cid)
            .arg(program_in_sandbox)
            .args(args)
    }

    /// `runsc --version`, first line.
    pub async fn version(&self) -> Result<String, RunscError> {
        let out = Cmd::new(&self.program)
            .arg("--version")
            .timeout(Duration::from_secs(10))
            .run()
            .await
            .map_err(RunscError::Version)?;
        Ok(out
            .stdout_str()
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned())
    }
}

/// One long line shortened to its start and end (runsc's error lines embed
/// whole Go structs; the reason is at either end).
fn elide(line: &str) -> String {
    const HEAD: usize = 200;
    const TAIL: usize = 300;
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= HEAD + TAIL {
        return line.to_owned();
    }
    let head: String = chars[..HEAD].iter().collect();
    let tail: String = chars[chars.len() - TAIL..].iter().collect();
    format!(
        "{head} [... {} characters ...] {tail}",
        chars.len() - HEAD - TAIL
    )
}

#[cfg(test)]
mod tests {
    use super::elide;

    #[test]
    fn elide_keeps_both_ends_of_long_lines() {
        assert_eq!(elide("short"), "short");
        let long = format!(
            "checkpoint failed: {}: endpoint still has waiters upon save",
            "x".repeat(5000)
        );
        let e = elide(&long);
        assert!(e.starts_with("checkpoint failed: "), "{e}");
        assert!(e.ends_with("endpoint still has waiters upon save"), "{e}");
        assert!(e.len() < 700, "{}", e.len());
    }
}
