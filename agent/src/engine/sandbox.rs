//! An actor's sandbox in the runtime: a pause container, the sandbox's
//! root, and the app container in it, as upstream's ateom runs them (and
//! as Kubernetes pods are run): boot is `create` + `start` of the pause,
//! then of the app (`cmd/ateom-gvisor/main.go:207-229` at 86e138f6); the
//! checkpoint is of the pause (root) container alone and saves the whole
//! sandbox (`main.go:279-281`); a restore restores each container with
//! the same image, pause first (`runsc.go:176-177`, `main.go:395-433`);
//! removal deletes the app, then the pause (`main.go:343-351`).
//!
//! **Invariants.** Both container IDs are fixed-width and distinct, so
//! neither is a prefix of another. Both are recorded in the journal before
//! the runtime is asked to create either; a failed boot or restore ends
//! with both removed, by ID. Everything that reaches into the actor (`runsc exec`: the
//! relays) targets the app container.

use std::path::Path;

use super::{ActorDirs, ContainerRole, ContainerView, Engine, EngineError};
use crate::runsc::RunscError;

/// The two containers of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sandbox {
    /// The pause (root) container's ID: the sandbox's ID.
    pub(super) pause: String,
    /// The app container's ID (`runsc exec` targets it).
    pub(super) app: String,
}

impl Sandbox {
    /// Both containers, pause first, with their bundles and rootfs in
    /// `dirs` (what the API shows of a running actor).
    pub(super) fn views(&self, dirs: &ActorDirs) -> Vec<ContainerView> {
        vec![
            ContainerView {
                role: ContainerRole::Pause,
                id: self.pause.clone(),
                bundle: dirs.pause_bundle.clone(),
                rootfs: dirs.pause_rootfs.clone(),
            },
            ContainerView {
                role: ContainerRole::App,
                id: self.app.clone(),
                bundle: dirs.bundle.clone(),
                rootfs: dirs.rootfs.clone(),
            },
        ]
    }
}

fn runtime_err(context: String) -> impl FnOnce(RunscError) -> EngineError {
    move |source| EngineError::Runtime {
        context,
        source: Box::new(source),
    }
}

impl Engine {
    /// Two fresh container IDs: the pause's, then the app's.
    pub(super) fn new_sandbox(&self) -> Sandbox {
        let pause = self.new_cid();
        let app = self.new_cid();
        Sandbox { pause, app }
    }

    fn record_sandbox(&self, sb: &Sandbox, owner: &str) -> Result<(), EngineError> {
        self.journal
            .record(&sb.pause, owner, ContainerRole::Pause)?;
        self.journal.record(&sb.app, owner, ContainerRole::App)
    }

    /// Boots a sandbox from the bundles in `dirs`: records both
    /// containers, then creates and starts the pause, then the app. On
    /// failure the caller removes the sandbox (as it does when the booted
    /// actor turns out unhealthy).
    pub(super) async fn boot_sandbox(
        &self,
        sb: &Sandbox,
        dirs: &ActorDirs,
        owner: &str,
    ) -> Result<(), EngineError> {
        self.record_sandbox(sb, owner)?;
        let booted = async {
            let console = self.console_log(&dirs.logs)?;
            let debug = self.debug_dir(&dirs.logs);
            for (cid, bundle, what) in [
                (&sb.pause, &dirs.pause_bundle, "pause"),
                (&sb.app, &dirs.bundle, "app"),
            ] {
                let context = || format!("cannot boot the {what} container of {owner}");
                self.runtime
                    .create(cid, bundle, &console, debug)
                    .await
                    .map_err(runtime_err(context()))?;
                self.runtime
                    .start(cid, &console, debug)
                    .await
                    .map_err(runtime_err(context()))?;
            }
            Ok(())
        }
        .await;
        booted
    }

    /// Restores a sandbox from `image` with the bundles in `dirs`: records
    /// both containers, then restores the pause, then the app, each with
    /// the same image. On failure both are removed.
    pub(super) async fn restore_sandbox(
        &self,
        sb: &Sandbox,
        dirs: &ActorDirs,
        image: &Path,
        owner: &str,
    ) -> Result<(), EngineError> {
        self.record_sandbox(sb, owner)?;
        let restored = async {
            let console = self.console_log(&dirs.logs)?;
            let debug = self.debug_dir(&dirs.logs);
            for (cid, bundle, what) in [
                (&sb.pause, &dirs.pause_bundle, "pause"),
                (&sb.app, &dirs.bundle, "app"),
            ] {
                self.runtime
                    .restore(cid, bundle, image, &console, debug)
                    .await
                    .map_err(runtime_err(format!(
                        "cannot restore the {what} container of {owner} from {}",
                        image.display()
                    )))?;
            }
            Ok(())
        }
        .await;
        self.remove_sandbox_on_error(sb, restored).await
    }

    async fn remove_sandbox_on_error(
        &self,
        sb: &Sandbox,
        result: Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        if result.is_err() {
            if let Err(e) = self.remove_sandbox(sb).await {
                tracing::error!(pause = %sb.pause, app = %sb.app, error = %super::error_chain(&e), "cannot remove a sandbox that failed to start; it stays recorded");
            }
        }
        result
    }

    /// Checkpoints the sandbox (its pause container) into `image`; every
    /// container of it is stopped after.
    pub(super) async fn checkpoint_sandbox(
        &self,
        sb: &Sandbox,
        image: &Path,
        logs: &Path,
    ) -> Result<(), RunscError> {
        self.runtime
            .checkpoint(&sb.pause, image, self.debug_dir(logs))
            .await
    }

    /// Deletes the app container, then the pause, each by its ID, each
    /// record after its container; both are tried, the first error is
    /// returned.
    pub(super) async fn remove_sandbox(&self, sb: &Sandbox) -> Result<(), EngineError> {
        let app = self.journal.remove(self.runtime.as_ref(), &sb.app).await;
        let pause = self.journal.remove(self.runtime.as_ref(), &sb.pause).await;
        app.and(pause)
    }

    /// [`Engine::remove_sandbox`] in the background, for a sandbox a
    /// checkpoint has stopped (runsc takes about 1.5 s to tear it down and
    /// nothing needs to wait); [`Engine::shutdown`] waits for these.
    pub(super) fn remove_sandbox_later(&self, sb: Sandbox) {
        let runtime = self.runtime.clone();
        let journal = self.journal.clone();
        let task = tokio::spawn(async move {
            for cid in [&sb.app, &sb.pause] {
                match journal.remove(runtime.as_ref(), cid).await {
                    Ok(()) => tracing::debug!(%cid, "deleted checkpointed container"),
                    Err(e) => {
                        tracing::error!(%cid, error = %super::error_chain(&e), "cannot delete a checkpointed container; it stays recorded for cleanup")
                    }
                }
            }
        });
        let mut bg = self.background.lock().unwrap();
        bg.retain(|t| !t.is_finished());
        bg.push(task);
    }
}
