//! The runsc calls upstream's ateom-gvisor makes, with its argument
//! vectors (`cmd/ateom-gvisor/runsc.go` at 86e138f6): every call starts
//! `-log-format json --alsologtostderr` and carries `-root
//! <actor>/runsc-state`; the container ID is the last argument and is the
//! container's name (`pause` or the request's container name).
//!
//! - `create -bundle <bundles>/<c> -pid-file <pidfiles>/<c>.pid <c>`
//!   (`runsc.go:37-73`),
//! - `-allow-connected-on-save … start <c>` (`runsc.go:75-105`),
//! - `checkpoint -image-path <dir> <c>` (`runsc.go:107-135`),
//! - `restore -bundle … -image-path <dir> -pid-file … -background -direct
//!   -detach <c>` (`runsc.go:176-210`),
//! - `delete -force <c>` (`runsc.go:212-239`), `state <c>`
//!   (`runsc.go:241-260`).
//!
//! runsc 20240729 lacks `-allow-connected-on-save` and `restore
//! -background`: the program given is the harness's adapter, which drops
//! them (CONTRACT.md V), so the stand-in passes them as upstream does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ate_cmd::{Cmd, Stdio};

use super::paths::{ActorRef, Paths};

/// A runsc call that failed; the message carries runsc's own words.
#[derive(Debug, thiserror::Error)]
#[error("runsc {op} {container}: {detail}")]
pub struct RunscFailed {
    /// The subcommand.
    pub op: &'static str,
    /// The container ID.
    pub container: String,
    /// runsc's message(s) and the command's status.
    pub detail: String,
}

/// runsc for one actor.
#[derive(Debug, Clone)]
pub struct ActorRunsc {
    program: PathBuf,
    paths: Paths,
    actor: ActorRef,
    timeout: Duration,
}

/// The messages of runsc's output, the last `n`: each JSON log line's
/// `msg` (`-log-format json`) and each warning, error or fatal line of
/// its `--alsologtostderr` (glog: `W1202 06:15:46.620790 17146 file.go:1]
/// text`, the text kept); when there are none, the first other non-empty
/// line (a panic's reason comes before its Go stack dump), shortened.
pub fn messages(text: &str, n: usize) -> String {
    let mut msgs = Vec::new();
    let mut first_other = None;
    for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(m) = serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_owned))
        {
            msgs.push(m);
            continue;
        }
        let glog =
            l.len() > 5 && l.as_bytes()[1..5].iter().all(u8::is_ascii_digit) && l.contains("] ");
        if glog {
            if matches!(l.as_bytes()[0], b'W' | b'E' | b'F') {
                msgs.push(
                    l.split_once("] ")
                        .map(|(_, t)| t.to_owned())
                        .unwrap_or_default(),
                );
            }
            continue;
        }
        if first_other.is_none() {
            first_other = Some(l.to_owned());
        }
    }
    let mut out: Vec<String> = msgs[msgs.len().saturating_sub(n)..]
        .iter()
        .map(|m| elide(m, 600))
        .collect();
    if out.is_empty() {
        out.extend(first_other.map(|l| elide(&l, 600)));
    }
    out.join(" | ")
}

fn elide(s: &str, max: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= max {
        return s.to_owned();
    }
    let head: String = chars[..max / 3].iter().collect();
    let tail: String = chars[chars.len() - 2 * max / 3..].iter().collect();
    format!("{head} [...] {tail}")
}

impl ActorRunsc {
    /// runsc `program` for `actor`; every call has `timeout`.
    pub fn new(program: &Path, paths: &Paths, actor: &ActorRef, timeout: Duration) -> ActorRunsc {
        ActorRunsc {
            program: program.to_owned(),
            paths: paths.clone(),
            actor: actor.clone(),
            timeout,
        }
    }

    fn base(&self) -> Cmd {
        Cmd::new(&self.program)
            .args(["-log-format", "json", "--alsologtostderr"])
            .timeout(self.timeout)
    }

    fn root(&self) -> [String; 2] {
        [
            "-root".into(),
            self.paths.runsc_state(&self.actor).display().to_string(),
        ]
    }

    /// `create`'s argument vector.
    pub fn create_cmd(&self, c: &str) -> Cmd {
        self.base()
            .args(self.root())
            .arg("create")
            .arg("-bundle")
            .arg(self.paths.bundle(&self.actor, c))
            .arg("-pid-file")
            .arg(self.paths.pidfile(&self.actor, c))
            .arg(c)
    }

    /// `start`'s argument vector.
    pub fn start_cmd(&self, c: &str) -> Cmd {
        self.base()
            .arg("-allow-connected-on-save")
            .args(self.root())
            .arg("start")
            .arg(c)
    }

    /// `checkpoint`'s argument vector.
    pub fn checkpoint_cmd(&self, c: &str, image: &Path) -> Cmd {
        self.base()
            .args(self.root())
            .args(["checkpoint", "-image-path"])
            .arg(image)
            .arg(c)
    }

    /// `restore`'s argument vector.
    pub fn restore_cmd(&self, c: &str, image: &Path) -> Cmd {
        self.base()
            .args(self.root())
            .arg("restore")
            .arg("-bundle")
            .arg(self.paths.bundle(&self.actor, c))
            .arg("-image-path")
            .arg(image)
            .arg("-pid-file")
            .arg(self.paths.pidfile(&self.actor, c))
            .args(["-background", "-direct", "-detach"])
            .arg(c)
    }

    /// `delete -force`'s argument vector.
    pub fn delete_cmd(&self, c: &str) -> Cmd {
        self.base()
            .args(self.root())
            .args(["delete", "-force"])
            .arg(c)
    }

    /// `state`'s argument vector.
    pub fn state_cmd(&self, c: &str) -> Cmd {
        self.base().args(self.root()).arg("state").arg(c)
    }

    /// Runs a command whose container may inherit its stdio (create, start,
    /// restore): both streams go to the container's console log (a pipe
    /// would stay open as long as the container lives); on failure the
    /// log's new lines are the message.
    async fn with_console(&self, op: &'static str, c: &str, cmd: Cmd) -> Result<(), RunscFailed> {
        let dir = self.paths.runsc_logs(&self.actor, c);
        let log = dir.join("console.log");
        let fail = |detail: String| RunscFailed {
            op,
            container: c.to_owned(),
            detail,
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
        };
        let (out, err) = match (open(), open()) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                return Err(fail(format!("cannot open {}: {e}", log.display())))
            }
        };
        let before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let result = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::file(out))
            .stderr(Stdio::file(err))
            .run()
            .await;
        result.map(drop).map_err(|e| {
            let text = std::fs::read(&log).unwrap_or_default();
            let new = String::from_utf8_lossy(text.get(before as usize..).unwrap_or_default())
                .into_owned();
            fail(format!(
                "{} ({e}; console log {})",
                messages(&new, 4),
                log.display()
            ))
        })
    }

    /// Runs a command with its output captured; on failure runsc's last
    /// messages are the error.
    async fn captured(&self, op: &'static str, c: &str, cmd: Cmd) -> Result<(), RunscFailed> {
        let fail = |detail: String| RunscFailed {
            op,
            container: c.to_owned(),
            detail,
        };
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| fail(format!("{e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let text = format!("{}\n{}", out.stdout_str(), out.stderr_str());
        let dir = self.paths.runsc_logs(&self.actor, c);
        let log = dir.join(format!("{op}.log"));
        let kept = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&log, &text));
        let kept = if kept.is_ok() {
            format!("; output in {}", log.display())
        } else {
            String::new()
        };
        Err(fail(format!(
            "{} ({}{kept})",
            messages(&text, 4),
            out.status
        )))
    }

    /// `runsc create`.
    pub async fn create(&self, c: &str) -> Result<(), RunscFailed> {
        self.with_console("create", c, self.create_cmd(c)).await
    }

    /// `runsc start`.
    pub async fn start(&self, c: &str) -> Result<(), RunscFailed> {
        self.with_console("start", c, self.start_cmd(c)).await
    }

    /// `runsc restore`.
    pub async fn restore(&self, c: &str, image: &Path) -> Result<(), RunscFailed> {
        self.with_console("restore", c, self.restore_cmd(c, image))
            .await
    }

    /// `runsc checkpoint`.
    pub async fn checkpoint(&self, c: &str, image: &Path) -> Result<(), RunscFailed> {
        self.captured("checkpoint", c, self.checkpoint_cmd(c, image))
            .await
    }

    /// `runsc state` (upstream checks it before deleting,
    /// `cmd/ateom-gvisor/main.go:330-341`).
    pub async fn state(&self, c: &str) -> Result<(), RunscFailed> {
        self.captured("state", c, self.state_cmd(c)).await
    }

    /// `runsc delete -force`.
    pub async fn delete(&self, c: &str) -> Result<(), RunscFailed> {
        self.captured("delete", c, self.delete_cmd(c)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(cmd: &Cmd) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn argument_vectors_are_ateoms() {
        let paths = Paths::default();
        let a = ActorRef {
            namespace: "ns".into(),
            template: "t".into(),
            id: "x".into(),
        };
        let r = ActorRunsc::new(Path::new("/rs"), &paths, &a, Duration::from_secs(1));
        let act = "/var/lib/ateom-gvisor/actors/ns:t:x";
        let pre = ["-log-format", "json", "--alsologtostderr"];
        let root = ["-root".to_owned(), format!("{act}/runsc-state")];
        let mut want: Vec<String> = pre.iter().map(|s| s.to_string()).collect();
        want.extend(root.clone());
        want.extend([
            "create".into(),
            "-bundle".into(),
            format!("{act}/bundles/app"),
            "-pid-file".into(),
            format!("{act}/pidfiles/app.pid"),
            "app".into(),
        ]);
        assert_eq!(argv(&r.create_cmd("app")), want);

        let mut want: Vec<String> = pre.iter().map(|s| s.to_string()).collect();
        want.push("-allow-connected-on-save".into());
        want.extend(root.clone());
        want.extend(["start".into(), "pause".into()]);
        assert_eq!(argv(&r.start_cmd("pause")), want);

        let img = Path::new("/img");
        let mut want: Vec<String> = pre.iter().map(|s| s.to_string()).collect();
        want.extend(root.clone());
        want.extend(["restore", "-bundle"].map(String::from));
        want.push(format!("{act}/bundles/pause"));
        want.extend([
            "-image-path".into(),
            "/img".into(),
            "-pid-file".into(),
            format!("{act}/pidfiles/pause.pid"),
        ]);
        want.extend(["-background", "-direct", "-detach", "pause"].map(String::from));
        assert_eq!(argv(&r.restore_cmd("pause", img)), want);

        let tail = argv(&r.checkpoint_cmd("pause", img));
        assert_eq!(
            tail[3..],
            [
                root[0].clone(),
                root[1].clone(),
                "checkpoint".into(),
                "-image-path".into(),
                "/img".into(),
                "pause".into()
            ]
        );
        assert_eq!(argv(&r.delete_cmd("app"))[5..], ["delete", "-force", "app"]);
    }

    #[test]
    fn messages_are_the_json_msgs() {
        let text = "{\"msg\":\"starting\",\"level\":\"info\"}\n\nplain\n{\"msg\":\"endpoint cannot be saved in connected state\"}\n";
        assert_eq!(
            messages(text, 1),
            "endpoint cannot be saved in connected state"
        );
        let glog = "I1202 06:15:46.620790   17146 main.go:196] **** gVisor ****\nW1202 06:15:46.7   17146 util.go:64] FATAL ERROR: checkpoint failed: endpoint cannot be saved in connected state\ngoroutine 1\n";
        assert_eq!(
            messages(glog, 4),
            "FATAL ERROR: checkpoint failed: endpoint cannot be saved in connected state"
        );
        assert_eq!(
            messages("panic: boom\ngoroutine 1 [running]:\n", 4),
            "panic: boom"
        );
    }
}
