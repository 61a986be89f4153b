//! A failed trial's artifacts: the pods' logs and events of `ate-system`
//! and of the run's namespace, the template, pool and namespace described,
//! each actor the trial used, and the run's steps so far with the router
//! forward's events, the way upstream's CI collects its diagnostics
//! (`.github/workflows/pr-workflow.yaml:112-121`).
//!
//! **Invariants.** A command that fails writes its error into the file it
//! was for; collecting never fails the trial's own failure, and every file
//! written is returned.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{KindBackend, TEMPLATE_NAME};
use crate::backend::ActorRef;

impl KindBackend {
    /// Writes the artifacts into `dir`; returns the files written.
    pub(super) async fn write_artifacts(
        &self,
        actors: &[ActorRef],
        dir: &Path,
    ) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut written = Vec::new();
        let ns = self.opts.namespace();
        for (pods_ns, sub) in [("ate-system", "ate-system"), (ns.as_str(), "workers")] {
            let list = self
                .exec
                .run(
                    &format!("list the pods of {pods_ns}"),
                    self.tools
                        .kubectl(["get", "pods", "-n", pods_ns, "-o", "name"]),
                    "",
                )
                .await
                .unwrap_or_default();
            let sub_dir = dir.join(sub);
            let _ = std::fs::create_dir_all(&sub_dir);
            for pod in list.lines().map(str::trim).filter(|p| !p.is_empty()) {
                let short = pod.trim_start_matches("pod/");
                self.artifact(
                    &format!("read the logs of {pods_ns}/{short}"),
                    self.tools.kubectl([
                        "logs",
                        "-n",
                        pods_ns,
                        pod,
                        "--all-containers",
                        "--timestamps",
                        "--tail=5000",
                    ]),
                    sub_dir.join(format!("{short}.log")),
                    &mut written,
                )
                .await;
            }
            self.artifact(
                &format!("read the events of {pods_ns}"),
                self.tools.kubectl([
                    "get",
                    "events",
                    "-n",
                    pods_ns,
                    "-o",
                    "wide",
                    "--sort-by=.lastTimestamp",
                ]),
                dir.join(format!("events-{pods_ns}.txt")),
                &mut written,
            )
            .await;
        }
        self.artifact(
            &format!("describe namespace {ns}"),
            self.tools.kubectl(["describe", "namespace", &ns]),
            dir.join("describe-namespace.txt"),
            &mut written,
        )
        .await;
        self.artifact(
            "describe the ActorTemplate",
            self.tools.kubectl([
                "describe",
                "-n",
                &ns,
                "actortemplates.ate.dev",
                TEMPLATE_NAME,
            ]),
            dir.join("describe-actortemplate.txt"),
            &mut written,
        )
        .await;
        self.artifact(
            "describe the WorkerPool",
            self.tools.kubectl([
                "describe",
                "-n",
                &ns,
                "workerpools.ate.dev",
                &self.opts.pool(),
            ]),
            dir.join("describe-workerpool.txt"),
            &mut written,
        )
        .await;
        for a in actors {
            self.artifact(
                &format!("read actor {}/{}", a.atespace, a.id),
                self.tools.ate_get_actor(&a.atespace, &a.id),
                dir.join(format!("actor-{}-{}.json", a.atespace, a.id)),
                &mut written,
            )
            .await;
        }
        let mut steps = self.plan().to_string();
        if let Some(f) = self.forward.lock().await.as_ref() {
            steps.push_str("\nrouter forward events:\n");
            for e in f.events() {
                steps.push_str(&format!("  {e}\n"));
            }
        }
        let p = dir.join("kind-steps.txt");
        if std::fs::write(&p, steps).is_ok() {
            written.push(p);
        }
        Ok(written)
    }

    /// Runs `cmd` for an artifact file: its output, or the error, goes
    /// into `path`.
    async fn artifact(
        &self,
        purpose: &str,
        cmd: ate_cmd::Cmd,
        path: PathBuf,
        written: &mut Vec<PathBuf>,
    ) {
        let text = match self.exec.run(purpose, cmd, "").await {
            Ok(out) => out,
            Err(e) => format!("could not {purpose}: {e:#}\n"),
        };
        if std::fs::write(&path, text).is_ok() {
            written.push(path);
        }
    }
}
