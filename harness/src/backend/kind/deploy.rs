//! Installing the system and deploying the agent under test from the
//! Agent Substrate checkout (`--install`, `--deploy-agent`), as upstream's
//! `hack/install-ate-kind.sh` and `deploy_atelet` (`hack/install-ate.sh:
//! 333-351`) do; see `docs/upstream.md`.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use tracing::info;

use super::{tools, KindBackend};

/// The atelet digest a recording executor's `ko resolve` prints.
pub const STAND_IN_DIGEST: &str = "sha256:<digest ko resolve prints>";

/// `kubectl get pods -l app=atelet -o json` as a recording executor
/// answers it: one pod running [`STAND_IN_DIGEST`].
fn stand_in_atelet_pods(repo: &str) -> String {
    let image = format!("{repo}/atelet@{STAND_IN_DIGEST}");
    serde_json::json!({"items": [{
        "metadata": {"name": "<atelet pod>"},
        "spec": {"containers": [{"name": "atelet", "image": image}]},
        "status": {"containerStatuses": [{"name": "atelet", "imageID": image}]}
    }]})
    .to_string()
}

impl KindBackend {
    /// The checkout and `KO_DOCKER_REPO` a build from the checkout needs;
    /// a recording executor answers placeholders for what is not set.
    pub(super) fn checkout(&self, what: &str) -> Result<(PathBuf, String)> {
        let root = self.exec.or_stand_in(
            self.opts.substrate_root.clone().ok_or_else(|| {
                anyhow!("{what} needs the Agent Substrate checkout: set --substrate-root or ATE_SUBSTRATE_ROOT")
            }),
            || PathBuf::from("<ATE_SUBSTRATE_ROOT unset>"),
        )?;
        let repo = self.exec.or_stand_in(
            self.opts
                .ko_docker_repo
                .clone()
                .filter(|r| !r.is_empty())
                .ok_or_else(|| {
                    anyhow!("{what} needs KO_DOCKER_REPO (--ko-docker-repo; upstream's kind install uses localhost:5001)")
                }),
            || "<KO_DOCKER_REPO unset>".to_owned(),
        )?;
        Ok((root, repo))
    }

    /// `--install`: the checkout's `hack/install-ate-kind.sh
    /// --deploy-ate-system`, the one upstream script the harness runs (an
    /// argument vector; its output is captured and its tail is in the
    /// error when it fails).
    pub(super) async fn install(&self) -> Result<()> {
        let (root, repo) = self.checkout("--install")?;
        self.exec.run(
            "install Agent Substrate from the checkout (hack/install-ate-kind.sh --deploy-ate-system)",
            self.tools.install_ate_kind(&root, &repo),
            "",
        )
        .await?;
        Ok(())
    }

    /// `--deploy-agent`: builds atelet from the checkout and deploys it the
    /// way upstream's `deploy_atelet` does on kind (`hack/install-ate.sh:
    /// 333-351`): `kubectl kustomize` | `ko resolve -f -` | `kubectl apply
    /// -f -`, pipes made here, then the rollout wait, then a check that
    /// every atelet pod runs exactly the digest `ko resolve` built. The
    /// checkout's commit (and whether it is dirty) and that digest go into
    /// the fingerprint.
    pub(super) async fn deploy_agent(&self) -> Result<()> {
        let (root, repo) = self.checkout("--deploy-agent")?;
        let commit = self
            .exec
            .run(
                "record the checkout's commit",
                self.tools.git_head(&root),
                "<commit>\n",
            )
            .await?;
        let status = self
            .exec
            .run(
                "is the checkout dirty? (git status --porcelain)",
                self.tools.git_status(&root),
                "",
            )
            .await?;
        let commit = commit.trim().to_owned();
        let dirty = !status.trim().is_empty();
        self.update(|st| st.agent_commit = Some((commit.clone(), dirty)));
        let pipeline = ate_cmd::Pipeline::new(vec![
            self.tools
                .kubectl_kustomize(&root, tools::ATELET_KIND_OVERLAY),
            self.tools.ko_resolve_stdin(&root, &repo),
            self.tools.kubectl_apply_stdin(),
        ]);
        let purposes = [
            "deploy atelet, stage 1 of 3: render the kind overlay (standard output piped into stage 2)",
            "deploy atelet, stage 2 of 3: build and resolve ko:// images (standard input from stage 1, standard output piped into stage 3)",
            "deploy atelet, stage 3 of 3: apply the resolved manifest (standard input from stage 2)",
        ];
        let shown = pipeline.to_string();
        // Stand-in: stage 2 prints one atelet image at STAND_IN_DIGEST.
        let outs = self
            .exec
            .pipeline(&purposes, pipeline, || {
                vec![
                    String::new(),
                    format!("        image: {repo}/atelet@{STAND_IN_DIGEST}\n"),
                    String::new(),
                ]
            })
            .await
            .with_context(|| format!("cannot deploy atelet from {} ({shown})", root.display()))?;
        let manifest = &outs[1];
        let resolved = match tools::resolved_digests(manifest, "atelet").as_slice() {
            [one] => one.clone(),
            other => bail!(
                "`ko resolve` of {} named {} atelet image digest(s) {other:?}; expected exactly one:\n{}",
                tools::ATELET_KIND_OVERLAY,
                other.len(),
                crate::cmd::tail(manifest.as_bytes())
            ),
        };
        self.exec
            .run(
                "wait for the atelet rollout",
                self.tools.kubectl_rollout_status("daemonset/atelet"),
                "",
            )
            .await?;
        // Stand-in: one atelet pod running the stand-in digest.
        let pods = self
            .exec
            .run(
                "read the atelet pods' images, to check each runs the digest just built",
                self.tools.kubectl_atelet_pods(),
                &stand_in_atelet_pods(&repo),
            )
            .await?;
        let pods = tools::atelet_pod_digests(&pods).map_err(anyhow::Error::msg)?;
        if pods.is_empty() {
            bail!("no atelet pod in ate-system (label app=atelet) after the rollout");
        }
        let wrong: Vec<String> = pods
            .iter()
            .filter(|(_, spec, running)| *spec != resolved || *running != resolved)
            .map(|(pod, spec, running)| format!("pod {pod} names {spec:?} and runs {running:?}"))
            .collect();
        if !wrong.is_empty() {
            bail!(
                "atelet pods do not run the image just built: ko resolve built {resolved}, but {}",
                wrong.join("; ")
            );
        }
        info!(digest = %resolved, pods = pods.len(), "atelet deployed from the checkout");
        self.update(|st| st.atelet_digest = Some(resolved.clone()));
        Ok(())
    }
}
