//! A [`Runtime`] that runs nothing: it records every call, keeps the set
//! of containers a real runsc would list, and fails the calls it is told
//! to (tests only).
//!
//! Each call also notes whether the engine's sandbox journal held a record
//! for the container at the moment the call was made, so a test can check
//! record-before-start without instrumenting the journal.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ate_cmd::{Cmd, CmdError};

use super::Runtime;
use crate::runsc::{DebugLog, RunscError};

/// A runtime operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `runsc create`.
    Create,
    /// `runsc start`.
    Start,
    /// `runsc restore`.
    Restore,
    /// `runsc checkpoint`.
    Checkpoint,
    /// `runsc kill` + `delete`.
    Remove,
    /// `runsc list`.
    List,
    /// `runsc exec` of a relay (the command is built, never run).
    Exec,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Start => "start",
            Op::Restore => "restore",
            Op::Checkpoint => "checkpoint",
            Op::Remove => "delete",
            Op::List => "list",
            Op::Exec => "exec",
        }
    }
}

/// One call the engine made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Which operation.
    pub op: Op,
    /// The container ID (`*` for list).
    pub cid: String,
    /// The bundle given (create, restore).
    pub bundle: Option<PathBuf>,
    /// The image given (restore, checkpoint).
    pub image: Option<PathBuf>,
    /// Whether `<journal>/<cid>.json` existed when the call was made.
    pub journaled: bool,
    /// Whether the call was made to fail.
    pub failed: bool,
}

/// The recording runtime (see the module docs).
#[derive(Debug)]
pub struct Recording {
    journal_dir: PathBuf,
    calls: Mutex<Vec<Call>>,
    fail: Mutex<VecDeque<Op>>,
    listed: Mutex<BTreeSet<String>>,
}

impl Recording {
    /// A recorder that checks the journal in `journal_dir`
    /// (`<state dir>/sandboxes`).
    pub fn new(journal_dir: &Path) -> Self {
        Recording {
            journal_dir: journal_dir.to_path_buf(),
            calls: Mutex::new(Vec::new()),
            fail: Mutex::new(VecDeque::new()),
            listed: Mutex::new(BTreeSet::new()),
        }
    }

    /// Makes the next call of `op` fail (once; queue several for more).
    pub fn fail_next(&self, op: Op) {
        self.fail.lock().unwrap().push_back(op);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls of `op` so far, in order.
    pub fn calls_of(&self, op: Op) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.op == op).collect()
    }

    /// The containers a real runsc would list now.
    pub fn listed(&self) -> Vec<String> {
        self.listed.lock().unwrap().iter().cloned().collect()
    }

    /// Records the call; `Err` if it was told to fail.
    fn record(
        &self,
        op: Op,
        cid: &str,
        bundle: Option<&Path>,
        image: Option<&Path>,
    ) -> Result<(), Box<RunscError>> {
        let failed = {
            let mut fail = self.fail.lock().unwrap();
            match fail.iter().position(|f| *f == op) {
                Some(i) => {
                    fail.remove(i);
                    true
                }
                None => false,
            }
        };
        self.calls.lock().unwrap().push(Call {
            op,
            cid: cid.to_owned(),
            bundle: bundle.map(Path::to_path_buf),
            image: image.map(Path::to_path_buf),
            journaled: self.journal_dir.join(format!("{cid}.json")).exists(),
            failed,
        });
        if failed {
            return Err(Box::new(RunscError::Command {
                op: op.name(),
                cid: cid.to_owned(),
                console: String::new(),
                source: CmdError::Io {
                    cmd: format!("recording runtime: {}", op.name()),
                    source: std::io::Error::other("failure scripted by the test"),
                },
            }));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Runtime for Recording {
    async fn create(
        &self,
        cid: &str,
        bundle: &Path,
        _console: &Path,
        _debug: DebugLog<'_>,
    ) -> Result<(), RunscError> {
        self.record(Op::Create, cid, Some(bundle), None)
            .map_err(|e| *e)?;
        self.listed.lock().unwrap().insert(cid.to_owned());
        Ok(())
    }

    async fn start(
        &self,
        cid: &str,
        _console: &Path,
        _debug: DebugLog<'_>,
    ) -> Result<(), RunscError> {
        self.record(Op::Start, cid, None, None).map_err(|e| *e)
    }

    async fn restore(
        &self,
        cid: &str,
        bundle: &Path,
        image: &Path,
        _console: &Path,
        _debug: DebugLog<'_>,
    ) -> Result<(), RunscError> {
        self.record(Op::Restore, cid, Some(bundle), Some(image))
            .map_err(|e| *e)?;
        self.listed.lock().unwrap().insert(cid.to_owned());
        Ok(())
    }

    async fn checkpoint(
        &self,
        cid: &str,
        image: &Path,
        _debug: DebugLog<'_>,
    ) -> Result<(), RunscError> {
        // A checkpointed container stops but stays listed until deleted.
        self.record(Op::Checkpoint, cid, None, Some(image))
            .map_err(|e| *e)
    }

    async fn remove(&self, cid: &str) -> Result<(), RunscError> {
        self.record(Op::Remove, cid, None, None).map_err(|e| *e)?;
        self.listed.lock().unwrap().remove(cid);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<String>, RunscError> {
        self.record(Op::List, "*", None, None).map_err(|e| *e)?;
        Ok(self.listed())
    }

    fn exec_relay(&self, cid: &str, _helper_in_sandbox: &str, port: u16) -> Cmd {
        // Never failed on request: building a command cannot fail.
        let _ = self.record(Op::Exec, cid, None, None);
        // No sandbox to relay into: a program that does not exist, so a
        // relay started by mistake fails at once and says so.
        Cmd::new("/nonexistent/recording-runtime-has-no-relay")
            .arg(cid)
            .arg(port.to_string())
    }

    fn exec(&self, cid: &str, program_in_sandbox: &str, args: &[String]) -> Cmd {
        let _ = self.record(Op::Exec, cid, None, None);
        // Likewise: no sandbox, so the helper cannot run.
        Cmd::new("/nonexistent/recording-runtime-has-no-sandbox")
            .arg(cid)
            .arg(program_in_sandbox)
            .args(args)
    }
}
