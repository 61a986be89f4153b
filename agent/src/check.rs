//! The harness's checker inside sandboxes: the agent places the static
//! `ate-check` binary beside its relay in the helper directory (mounted
//! read-only at `/.ate` in every sandbox) and runs it there with `runsc
//! exec`, for the control API's `POST .../actors/{id}/check` and, once per
//! template, in the golden sandbox just before its checkpoint.
//!
//! The golden run is `ate-check mark --token golden-<random>`: it plants a
//! token in the golden's memory-backed `/dev/shm` and records the evidence
//! (token, actor PID and start time, `boot_id`) in the template's status,
//! so that a suite can tell a restore of this golden (same token and
//! `boot_id`) from a cold boot (no token, a new `boot_id`).
//!
//! **Invariants.** Without `--checker-bin` nothing is placed, the golden
//! is not marked and every check is refused with the reason; with it, a
//! golden whose mark fails does not become Ready. A check runs only in a
//! RUNNING actor's sandbox, with 1..=8 arguments of at most 256 bytes, and
//! returns the checker's JSON object untouched; the checker's own usage
//! error is the caller's (`invalid`). A check is not serialised with
//! suspend: the harness never suspends an actor it is checking (a checker
//! still running at a checkpoint would be saved with the actor).

use std::path::Path;
use std::time::Duration;

use ate_agent_api::CheckRequest;
use ate_checker::{Command, Evidence};
use ate_cmd::{CmdError, Stdio};
use tracing::info;

use crate::bundle::HELPER_MOUNT_POINT;
use crate::engine::{ActorState, Engine, EngineError};
use crate::rootfs;
use crate::runsc::RunscError;

/// Deadline of one checker run: the longest, `watch --ms 10000`, plus
/// runsc's own start-up.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The checker's path inside a sandbox.
fn checker_in_sandbox() -> String {
    format!("{HELPER_MOUNT_POINT}/{}", ate_checker::BIN_NAME)
}

/// Puts `bin` (if given) into the helper dir as `ate-check`, replacing
/// whatever an earlier agent left there.
pub fn place_checker(bin: Option<&Path>, helper_dir: &Path) -> Result<(), EngineError> {
    let to = helper_dir.join(ate_checker::BIN_NAME);
    let _ = std::fs::remove_file(&to);
    let Some(bin) = bin else { return Ok(()) };
    rootfs::link_or_copy(bin, &to).map_err(|e| EngineError::Host {
        context: format!(
            "cannot place the checker {} at {}",
            bin.display(),
            to.display()
        ),
        source: Box::new(e),
    })
}

/// Refuses what a check cannot take, naming the bad value.
fn validate_args(args: &[String]) -> Result<(), EngineError> {
    let bad = args
        .iter()
        .find(|a| a.len() > CheckRequest::MAX_ARG_LEN || a.contains('\0'));
    if args.is_empty() || args.len() > CheckRequest::MAX_ARGS || bad.is_some() {
        // The one bad argument (its start, when long), else all of them.
        let value = match bad {
            Some(a) if a.len() > 64 => {
                let cut = (0..=64).rev().find(|i| a.is_char_boundary(*i)).unwrap_or(0);
                format!("{}... ({} bytes)", &a[..cut], a.len())
            }
            Some(a) => a.clone(),
            None => args.join(" "),
        };
        return Err(EngineError::InvalidField {
            field: "args",
            value,
            allowed: format!(
                "1..={} arguments of at most {} bytes each, no NUL (the checker's subcommand and flags, \
                 e.g. [\"watch\", \"--ms\", \"1500\"])",
                CheckRequest::MAX_ARGS,
                CheckRequest::MAX_ARG_LEN
            ),
        });
    }
    Ok(())
}

impl Engine {
    /// Runs `ate-check ARGS` in the sandbox of the running actor
    /// `atespace/id` and returns the JSON object it printed.
    pub async fn check(
        &self,
        atespace: &str,
        id: &str,
        args: Vec<String>,
    ) -> Result<serde_json::Value, EngineError> {
        validate_args(&args)?;
        let what = format!("actor {atespace}/{id}");
        if self.config().checker_bin.is_none() {
            return Err(EngineError::WrongState {
                op: "check",
                what,
                state: "on an agent started without --checker-bin".into(),
                allowed: "start the agent with --checker-bin PATH (the static ate-check)",
            });
        }
        let view = self.get_actor(atespace, id)?;
        // The app container: the pause container has neither `/.ate` nor
        // the actor's process (ID-12).
        let app = view
            .containers
            .iter()
            .find(|c| c.role == ate_agent_api::ContainerRole::App)
            .map(|c| c.id.clone());
        let cid = match (&view.state, app) {
            (ActorState::Running, Some(cid)) => cid,
            (state, _) => {
                return Err(EngineError::WrongState {
                    op: "check",
                    what,
                    state: state.to_string(),
                    allowed: "only a RUNNING actor can be checked",
                })
            }
        };
        self.run_checker(&cid, &args).await
    }

    /// Hook of the golden boot, between `/healthz` and the checkpoint (the
    /// same in every fault mode): plants a token in the golden sandbox and
    /// returns the evidence the checker saw, or `None` without a checker.
    pub(crate) async fn mark_golden(
        &self,
        cid: &str,
        golden_id: &str,
    ) -> Result<Option<Evidence>, EngineError> {
        if self.config().checker_bin.is_none() {
            return Ok(None);
        }
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).expect("getrandom");
        let token = format!("golden-{}", ate_checker::hex(&b));
        let cmd = Command::Mark {
            token: token.clone(),
        };
        let value = self.run_checker(cid, &cmd.args()).await?;
        let evidence: Evidence =
            serde_json::from_value(value.clone()).map_err(|e| EngineError::Host {
                context: format!(
                    "the checker's mark of golden actor {golden_id} is not evidence: {value}"
                ),
                source: Box::new(e),
            })?;
        if evidence.token.as_deref() != Some(token.as_str()) || evidence.actor.is_none() {
            return Err(EngineError::Host {
                context: format!("cannot mark golden actor {golden_id} before its checkpoint"),
                source: format!("planted {token:?}, the checker saw {evidence:?}").into(),
            });
        }
        info!(golden = %golden_id, %cid, ?evidence, "marked the golden actor before its checkpoint");
        Ok(Some(evidence))
    }

    async fn run_checker(
        &self,
        cid: &str,
        args: &[String],
    ) -> Result<serde_json::Value, EngineError> {
        let cmd = self
            .runtime()
            .exec(cid, &checker_in_sandbox(), args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .timeout(CHECK_TIMEOUT);
        let runtime = |source: CmdError| EngineError::Runtime {
            context: format!("cannot run the checker in container {cid}"),
            source: Box::new(RunscError::Command {
                op: "exec",
                cid: cid.to_owned(),
                console: String::new(),
                source,
            }),
        };
        let out = cmd.output().await.map_err(runtime)?;
        // ate-check exits 2 on a usage error, naming the bad argument.
        if out.status.code() == Some(2) {
            return Err(EngineError::InvalidField {
                field: "args",
                value: args.join(" "),
                allowed: format!("the checker says: {}", out.stderr_str().trim()),
            });
        }
        if !out.status.success() {
            return Err(runtime(CmdError::Failed {
                cmd: cmd.to_string(),
                status: out.status,
                stdout_tail: ate_cmd::tail(&out.stdout),
                stderr_tail: ate_cmd::tail(&out.stderr),
            }));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| EngineError::Host {
                context: format!(
                    "the checker in container {cid} printed no JSON: {:?}",
                    ate_cmd::tail(&out.stdout)
                ),
                source: Box::new(e),
            })?;
        if !value.is_object() {
            return Err(EngineError::Host {
                context: format!("the checker in container {cid} printed {value}, not an object"),
                source: "want one JSON object".into(),
            });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_args_are_refused_naming_the_value() {
        let msg = |args: Vec<String>| validate_args(&args).unwrap_err().to_string();
        assert!(msg(vec![]).starts_with("invalid args \"\": 1..=8 arguments"));
        let nine: Vec<String> = (0..9).map(|i| i.to_string()).collect();
        assert!(msg(nine).starts_with("invalid args \"0 1 2 3 4 5 6 7 8\""));
        let long = "x".repeat(257);
        let m = msg(vec!["mark".into(), "--token".into(), long]);
        assert!(
            m.contains("(257 bytes)") && m.contains("at most 256 bytes"),
            "{m}"
        );
        assert!(msg(vec!["a\0b".into()]).contains("\"a\\0b\""));
        assert!(validate_args(&Command::Watch { ms: 1500 }.args()).is_ok());
    }
}
