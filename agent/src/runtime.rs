//! What the engine asks of the container runtime, as one trait.
//!
//! [`Runtime`] is every runsc operation the engine and its relays use:
//! create, start, restore, checkpoint, remove, list, and the `runsc exec`
//! vector of a relay. The real implementation is [`Runsc`] (`runsc.rs`: argument
//! vectors with deadlines); `recording` (tests only) records every call and
//! fails the calls it is told to, so the engine's state machine is tested
//! without root or runsc.
//!
//! **Invariant:** the engine reaches runsc only through this trait; nothing
//! in `engine/` builds a runsc command itself.

use std::fmt::Debug;
use std::path::Path;

use ate_cmd::Cmd;

use crate::runsc::{DebugLog, Runsc, RunscError};

#[cfg(test)]
pub mod recording;

/// The container runtime the engine drives (see the module docs).
#[async_trait::async_trait]
pub trait Runtime: Debug + Send + Sync + 'static {
    /// Creates container `cid` from `bundle` (a sandbox, or a container
    /// joining one, as its annotations say); its stdio goes to the file
    /// `console`.
    async fn create(
        &self,
        cid: &str,
        bundle: &Path,
        console: &Path,
        debug: DebugLog<'_>,
    ) -> Result<(), RunscError>;

    /// Starts created container `cid`; stdio to `console`.
    async fn start(&self, cid: &str, console: &Path, debug: DebugLog<'_>)
        -> Result<(), RunscError>;

    /// Restores container `cid` from the checkpoint `image` with `bundle`,
    /// detached; stdio to `console`.
    async fn restore(
        &self,
        cid: &str,
        bundle: &Path,
        image: &Path,
        console: &Path,
        debug: DebugLog<'_>,
    ) -> Result<(), RunscError>;

    /// Checkpoints container `cid` into `image`; it is stopped after.
    async fn checkpoint(
        &self,
        cid: &str,
        image: &Path,
        debug: DebugLog<'_>,
    ) -> Result<(), RunscError>;

    /// Kills and deletes container `cid`; one that no longer exists counts
    /// as removed.
    async fn remove(&self, cid: &str) -> Result<(), RunscError>;

    /// IDs of the containers the runtime lists.
    async fn list(&self) -> Result<Vec<String>, RunscError>;

    /// The command that runs the relay inside container `cid` (the helper
    /// at `helper_in_sandbox`, connecting to `127.0.0.1:port` there).
    fn exec_relay(&self, cid: &str, helper_in_sandbox: &str, port: u16) -> Cmd;

    /// The command that runs a helper program (under `/.ate`, e.g. the
    /// harness's checker) with `args` inside container `cid`.
    fn exec(&self, cid: &str, program_in_sandbox: &str, args: &[String]) -> Cmd;
}

#[async_trait::async_trait]
impl Runtime for Runsc {
    async fn create(
        &self,
        cid: &str,
        bundle: &Path,
        console: &Path,
        debug: DebugLog<'_>,
    ) -> Result<(), RunscError> {
        Runsc::create(self, cid, bundle, console, debug).await
    }

    async fn start(
        &self,
        cid: &str,
        console: &Path,
        debug: DebugLog<'_>,
    ) -> Result<(), RunscError> {
        Runsc::start(self, cid, console, debug).await
    }

    async fn restore(
        &self,
        cid: &str,
        bundle: &Path,
        image: &Path,
        console: &Path,
        debug: DebugLog<'_>,
    ) -> Result<(), RunscError> {
        Runsc::restore(self, cid, bundle, image, console, debug).await
    }

    async fn checkpoint(
        &self,
        cid: &str,
        image: &Path,
        debug: DebugLog<'_>,
    ) -> Result<(), RunscError> {
        Runsc::checkpoint(self, cid, image, debug).await
    }

    async fn remove(&self, cid: &str) -> Result<(), RunscError> {
        Runsc::remove(self, cid).await
    }

    async fn list(&self) -> Result<Vec<String>, RunscError> {
        Runsc::list(self).await
    }

    fn exec_relay(&self, cid: &str, helper_in_sandbox: &str, port: u16) -> Cmd {
        Runsc::exec_relay(self, cid, helper_in_sandbox, port)
    }

    fn exec(&self, cid: &str, program_in_sandbox: &str, args: &[String]) -> Cmd {
        Runsc::exec(self, cid, program_in_sandbox, args)
    }
}
