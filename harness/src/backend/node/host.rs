//! The host side of the node, and the harness's checker inside actors.
//!
//! **Host.** The harness sees the node's `/var/lib/ateom-gvisor` as this
//! run's directory, so the host-side statements are checked on the files
//! the real atelet wrote: each actor's identity directory
//! (`actors/<ns>:<template>:<id>/identity`, ID-8, ID-10), the pause and app
//! bundles (`bundles/pause`, `bundles/<container>`, ID-12), and a probe
//! image planting `run -> /outside` deployed for real (ID-13). Paths in the
//! bundles are the node's view; [`HostAccess::host_path`] maps them.
//! What atelet cannot be made to do is unsupported, with the reason: it
//! writes `actor-id` once per Run/Restore (`cmd/atelet/main.go:648`) and
//! has no hook to rewrite it in a running actor (ID-9).
//!
//! **Checker.** The probe image carries the static `ate-check` at
//! `/ate-check`; it runs in the actor's app container with `runsc exec`
//! against the actor's runsc state root (`-root <actor>/runsc-state`, the
//! one every ateom call uses: `cmd/ateom-gvisor/runsc.go:50`), in the
//! node's mount namespace, so the in-actor statements hold with the real
//! atelet's sandboxes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use async_trait::async_trait;
use serde::de::DeserializeOwned;

use super::layout::{Layout, IN_NODE};
use super::{NodeBackend, APP_CONTAINER, CHECKER_IN_IMAGE, PAUSE_CONTAINER};
use crate::backend::{
    BackendError, ContainerRole, Env, Evidence, HostAccess, HostContainer, HostDirs, IdentityDir,
    IdentityWatch, Result as BackendResult, SandboxAccess, TemplateOutcome, TemplatePhase,
    TryWrite,
};

/// How long one checker run may take (`watch` adds its own time).
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

impl NodeBackend {
    /// Runs `ate-check <cmd>` in the app container of actor `actor` of
    /// template `template` and parses what it prints.
    pub(super) async fn check_in<T: DeserializeOwned>(
        &self,
        template: &str,
        actor: &str,
        cmd: &ate_checker::Command,
    ) -> Result<T> {
        let root = Layout::new(Path::new(IN_NODE)).runsc_state(&self.namespace(), template, actor);
        let runsc = which::which(&self.opts.flags.runsc)
            .with_context(|| format!("runsc {} not found", self.opts.flags.runsc.display()))?;
        let mut argv = vec![
            "-root".to_owned(),
            root.display().to_string(),
            "exec".to_owned(),
            APP_CONTAINER.to_owned(),
            format!("/{CHECKER_IN_IMAGE}"),
        ];
        argv.extend(cmd.args());
        let extra = match cmd {
            ate_checker::Command::Watch { ms } => Duration::from_millis(*ms),
            _ => Duration::ZERO,
        };
        let run = {
            let parts = self.parts.lock().expect("parts lock");
            let p = parts
                .as_ref()
                .ok_or_else(|| anyhow!("the node is torn down"))?;
            p.node.in_node(&runsc.display().to_string(), &argv)
        };
        let out = run
            .timeout(CHECK_TIMEOUT + extra)
            .run()
            .await
            .with_context(|| {
                format!(
                    "ate-check {} in actor {actor} (runsc exec)",
                    cmd.args().join(" ")
                )
            })?;
        serde_json::from_str(out.stdout_str().trim()).with_context(|| {
            format!(
                "ate-check {} in actor {actor} printed no JSON answer: {:?}",
                cmd.args().join(" "),
                crate::first_line(&out.stdout_str())
            )
        })
    }

    async fn check_actor<T: DeserializeOwned>(
        &self,
        atespace: &str,
        id: &str,
        cmd: &ate_checker::Command,
    ) -> BackendResult<T> {
        let up = self.up()?;
        let (_, template, _) = up.control.placement(atespace, id).await?;
        Ok(self.check_in(&template, id, cmd).await?)
    }
}

#[async_trait]
impl HostAccess for NodeBackend {
    async fn actor_dirs(&self, atespace: &str, id: &str) -> BackendResult<HostDirs> {
        let up = self.up()?;
        let (tpl, name) = up.control.template_of(atespace, id).await?;
        Ok(HostDirs {
            identity: Some(up.layout.identity(&tpl.namespace, &name, id)),
            bundle: Some(up.layout.bundle(&tpl.namespace, &name, id, APP_CONTAINER)),
            logs: Some(self.opts.log_dir.clone()),
        })
    }

    async fn containers(&self, atespace: &str, id: &str) -> BackendResult<Vec<HostContainer>> {
        let up = self.up()?;
        let (tpl, name, _) = up.control.placement(atespace, id).await?;
        Ok([
            (ContainerRole::Pause, PAUSE_CONTAINER),
            (ContainerRole::App, APP_CONTAINER),
        ]
        .into_iter()
        .map(|(role, c)| HostContainer {
            role,
            id: c.to_owned(),
            bundle: up.layout.bundle(&tpl.namespace, &name, id, c),
        })
        .collect())
    }

    fn host_path(&self, seen_by_runtime: &Path) -> PathBuf {
        match (self.up(), seen_by_runtime.strip_prefix(IN_NODE)) {
            (Ok(up), Ok(rest)) => up.layout.root().join(rest),
            _ => seen_by_runtime.to_owned(),
        }
    }

    async fn rewrite_identity(
        &self,
        _atespace: &str,
        _id: &str,
        _values: &[String],
        _for_ms: u64,
    ) -> BackendResult<u64> {
        Err(BackendError::Unsupported {
            backend: "node",
            what: format!(
                "rewrite a running actor's identity file: {}",
                super::NO_REWRITE_HOOK
            ),
        })
    }

    async fn deploy_probe_with_symlinks(
        &self,
        base: &str,
        symlinks: &[(String, String)],
        _deadline: Duration,
    ) -> BackendResult<TemplateOutcome> {
        let name = self.opts.run_id.unique(base);
        let image = self.push_probe(&name, symlinks).await?;
        Ok(match self.make_golden(&name, &image, false).await {
            Ok(_) => TemplateOutcome {
                name,
                phase: TemplatePhase::Ready,
                reason: None,
            },
            Err(e) => TemplateOutcome {
                name,
                phase: TemplatePhase::Failed,
                reason: Some(format!("{e:#}")),
            },
        })
    }
}

#[async_trait]
impl SandboxAccess for NodeBackend {
    async fn mounts(&self, atespace: &str, id: &str) -> BackendResult<IdentityDir> {
        self.check_actor(atespace, id, &ate_checker::Command::Mounts)
            .await
    }

    async fn try_write(&self, atespace: &str, id: &str) -> BackendResult<TryWrite> {
        self.check_actor(atespace, id, &ate_checker::Command::TryWrite)
            .await
    }

    async fn env(&self, atespace: &str, id: &str) -> BackendResult<Env> {
        self.check_actor(atespace, id, &ate_checker::Command::Env)
            .await
    }

    async fn watch(&self, atespace: &str, id: &str, ms: u64) -> BackendResult<IdentityWatch> {
        self.check_actor(atespace, id, &ate_checker::Command::Watch { ms })
            .await
    }

    async fn evidence(&self, atespace: &str, id: &str) -> BackendResult<Evidence> {
        self.check_actor(atespace, id, &ate_checker::Command::Evidence)
            .await
    }

    async fn mark(&self, atespace: &str, id: &str, token: &str) -> BackendResult<Evidence> {
        let cmd = ate_checker::Command::Mark {
            token: token.to_owned(),
        };
        self.check_actor(atespace, id, &cmd).await
    }

    async fn golden_evidence(&self, template: &str) -> BackendResult<Evidence> {
        match self
            .golden_evidence
            .lock()
            .expect("evidence lock")
            .get(template)
        {
            Some(e) => Ok(e.clone()),
            None => Err(anyhow!(
                "template {template} has no golden evidence: its golden was not marked"
            )
            .into()),
        }
    }
}
