//! The end of a run: keep what it made (`--keep`, listed with how to
//! remove it), or remove it, in order: the run's actors (suspended first),
//! its atespaces, the rendered manifest (the probe's Namespace, WorkerPool
//! and ActorTemplate), the golden actor the controller leaves behind, and a
//! cluster and registry only if this run created them.
//!
//! **Invariants.** Only what the run's record lists is removed, by name; a
//! user's cluster is never deleted. Every failure is reported, none
//! swallowed; the record stays until everything it lists is gone, so `gc`
//! can finish the job.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{tools, KindBackend, GOLDEN_ATESPACE, TEMPLATE_NAME};

impl KindBackend {
    /// Stops the router forward and lists what is left on purpose, with how
    /// to remove it.
    pub(super) async fn keep_all(&self) -> (Vec<String>, String) {
        if let Some(f) = self.forward.lock().await.take() {
            f.stop().await;
        }
        self.update(|st| st.kept = true);
        let st = self.state.lock().unwrap();
        let mut kept = vec![format!(
            "namespace {} (WorkerPool {}, ActorTemplate {TEMPLATE_NAME}) on context {}",
            self.opts.namespace(),
            self.opts.pool(),
            self.opts.context()
        )];
        kept.extend(st.atespaces.iter().map(|a| format!("atespace {a}")));
        kept.extend(st.actors.iter().map(|(a, i)| format!("actor {a}/{i}")));
        kept.extend(
            st.golden_actor
                .iter()
                .map(|g| format!("golden actor {GOLDEN_ATESPACE}/{g}")),
        );
        let how = if self.opts.state_dir.is_some() {
            "ate-conformance gc --backend kind (it reads this run's record and removes each of them)"
                .to_owned()
        } else {
            "suspend and delete the actors with kubectl ate, then kubectl delete the rendered manifest"
                .to_owned()
        };
        (kept, how)
    }

    /// Removes everything the run made (see the module doc).
    pub(super) async fn remove_all(&self) -> Result<()> {
        if let Some(f) = self.forward.lock().await.take() {
            f.stop().await;
        }
        let mut errors = Vec::new();
        let actors: Vec<_> = self.state.lock().unwrap().actors.iter().cloned().collect();
        for (a, i) in actors {
            let r = async {
                let info = match self.actor_info(&a, &i, "RUNNING").await {
                    Ok(info) => info,
                    // Already gone (ateapi's NotFound, get_actor.go:34):
                    // nothing left to remove.
                    Err(e) if tools::is_actor_not_found(&format!("{e:#}"), &i) => {
                        self.forget_actor(&a, &i);
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                if !info.state.is_suspended() {
                    self.suspend_actor(&a, &i).await?;
                }
                self.delete_actor_named(&a, &i).await?;
                Ok::<(), anyhow::Error>(())
            }
            .await;
            if let Err(e) = r {
                errors.push(format!("actor {a}/{i}: {e:#}"));
            }
        }
        let atespaces: Vec<_> = self
            .state
            .lock()
            .unwrap()
            .atespaces
            .iter()
            .cloned()
            .collect();
        for a in atespaces {
            if let Err(e) = self.delete_atespace_named(&a).await {
                errors.push(format!("atespace {a}: {e:#}"));
            }
        }
        let rendered = self.state.lock().unwrap().rendered.clone();
        if let Some(m) = rendered {
            match self.delete_manifest(&m).await {
                Ok(()) => self.update(|st| {
                    st.rendered = None;
                    st.rendered_text = None;
                }),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        // The golden actor stays in `ate-golden` after its template is gone
        // (the controller has no finalizer; actortemplate_controller.go:76-79
        // returns at once on deletion). It is suspended once the template is
        // Ready (:146-160); delete needs it suspended (delete_actor.go:41).
        let golden = self.state.lock().unwrap().golden_actor.clone();
        if let Some(g) = golden {
            match self.remove_golden_actor(&g).await {
                Ok(()) => self.update(|st| st.golden_actor = None),
                Err(e) => errors.push(format!("golden actor {GOLDEN_ATESPACE}/{g}: {e:#}")),
            }
        }
        let (cluster, registry) = {
            let st = self.state.lock().unwrap();
            (st.created_cluster, st.created_registry)
        };
        if cluster {
            if let Err(e) = self
                .exec
                .run(
                    &format!(
                        "delete the kind cluster {} this run created",
                        self.opts.cluster
                    ),
                    self.tools.kind_delete_cluster(&self.opts.cluster),
                    "",
                )
                .await
            {
                errors.push(format!("{e:#}"));
            } else {
                self.update(|st| st.created_cluster = false);
            }
        }
        if registry {
            if let Err(e) = self
                .exec
                .run(
                    "remove the local registry this run started",
                    self.tools.registry_remove(),
                    "",
                )
                .await
            {
                errors.push(format!("{e:#}"));
            } else {
                self.update(|st| st.created_registry = false);
            }
        }
        if !errors.is_empty() {
            bail!(
                "kind teardown left {} problem(s) (the run's record stays for `ate-conformance gc --backend kind`):\n  {}",
                errors.len(),
                errors.join("\n  ")
            );
        }
        self.forget_record();
        Ok(())
    }

    /// `kubectl delete -f <rendered>`; the manifest is first put back from
    /// the run's record when its file is gone (a report directory cleared
    /// since), as part of the same step.
    async fn delete_manifest(&self, path: &Path) -> Result<()> {
        let purpose = "delete the probe's Namespace, WorkerPool and ActorTemplate";
        let cmd = self.tools.kubectl_delete_manifest(path);
        let step = super::plan::Step::command(purpose, &cmd);
        let real = async {
            self.restore_manifest(path)?;
            cmd.run().await.context(purpose)?;
            Ok(())
        };
        self.exec.perform(step, real, || Ok(())).await
    }

    /// Puts the rendered manifest back from the record when its file is
    /// gone.
    fn restore_manifest(&self, path: &Path) -> Result<()> {
        if path.exists() {
            return Ok(());
        }
        let text = self.state.lock().unwrap().rendered_text.clone();
        let text = text.with_context(|| {
            format!(
                "the rendered manifest {} is gone and the record has no copy",
                path.display()
            )
        })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}
