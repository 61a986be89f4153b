//! The probe on the cluster: its OCI image pushed to `KO_DOCKER_REPO`
//! ([`oci`](super::oci)), `fixtures/probe/probe.yaml.tmpl` rendered with the
//! image's digest and applied with `ko apply` (the WorkerPool's `ko://`
//! worker image resolves in the checkout), then the wait for the
//! ActorTemplate's golden snapshot ([`kube`](super::kube)).
//!
//! **Invariants.** The probe is referenced by digest, never by tag. The
//! rendered manifest (path and text) is in the run's record before `ko
//! apply` runs, so teardown deletes whatever part of it was applied. The
//! golden actor is recorded as soon as it is known: it outlives its
//! template.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::info;

use super::{kube, oci, KindBackend, ATEOM_IMAGE, PROBE_FIXTURE, PROBE_IMAGE_NAME, TEMPLATE_NAME};
use crate::backend::Golden;

impl KindBackend {
    /// Pushes the probe image, renders and applies the manifest, and waits
    /// (within `deadline`) for the golden snapshot.
    pub(super) async fn deploy_probe_template(&self, deadline: Duration) -> Result<Golden> {
        let start = Instant::now();
        let repo_name = self.opts.ko_docker_repo.clone().unwrap_or_default();
        let repo = self.exec.or_stand_in(
            oci::repo_from_ko_docker_repo(&repo_name, PROBE_IMAGE_NAME),
            || oci::Repo {
                registry: "<KO_DOCKER_REPO unset>".into(),
                repository: PROBE_IMAGE_NAME.into(),
            },
        )?;
        let tag = format!("conf-{}", self.opts.run_id);
        let binary = self.probe_binary().await?;
        let image = self
            .exec
            .local(
                format!(
                    "pack {} into an OCI image (one gzip layer holding /probe, config, manifest, sha256 digests)",
                    binary.display()
                ),
                async {
                    let b = binary.clone();
                    tokio::task::spawn_blocking(move || {
                        oci::build_image(&oci::ImageSpec::new(&b, "probe"))
                    })
                    .await
                    .context("the image build panicked")?
                    .map_err(anyhow::Error::from)
                },
                || Ok(oci::BuiltImage::stand_in()),
            )
            .await?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("cannot build the registry client")?;
        let pushed = oci::push_with(&self.exec, &http, &repo, &tag, &image).await?;
        info!(image = %pushed.reference, "probe image pushed");
        self.update(|st| st.probe_image = Some(pushed.reference.clone()));
        let (manifest, text) = self.render_probe(&pushed.reference).await?;
        let root = self
            .opts
            .substrate_root
            .clone()
            .unwrap_or_else(|| PathBuf::from("<ATE_SUBSTRATE_ROOT unset>"));
        // Recorded before it runs, so teardown deletes whatever part of it
        // was applied.
        self.update(|st| {
            st.rendered = Some(manifest.clone());
            st.rendered_text = Some(text);
        });
        self.exec
            .run(
                "apply the probe's Namespace, WorkerPool and ActorTemplate",
                self.tools.ko_apply(&manifest, &root, &repo_name),
                "",
            )
            .await?;
        let ns = self.opts.namespace();
        // The whole deadline is the golden wait's: `ko apply` may first
        // build the worker image for minutes.
        let ready = kube::wait_golden_with(
            &self.exec,
            &ns,
            TEMPLATE_NAME,
            deadline,
            Duration::from_secs(1),
        )
        .await?;
        info!(
            golden = %ready.golden_actor_id,
            snapshot = ?ready.golden_snapshot,
            phases = ?ready.phase_history.iter().map(|(p, t)| format!("{p:?}@{:.1}s", t.as_secs_f64())).collect::<Vec<_>>(),
            "golden snapshot ready"
        );
        // The controller leaves the golden actor in `ate-golden` when the
        // template is deleted (no finalizer): teardown removes it.
        self.update(|st| st.golden_actor = Some(ready.golden_actor_id.clone()));
        Ok(Golden {
            template: format!("{ns}/{TEMPLATE_NAME}"),
            golden_actor_id: ready.golden_actor_id,
            snapshot: ready.golden_snapshot,
            ready_after: start.elapsed(),
        })
    }

    /// The probe binary: given, or this workspace's static build (a local
    /// step; a recording executor answers a placeholder path).
    async fn probe_binary(&self) -> Result<PathBuf> {
        if let Some(p) = &self.opts.probe_bin {
            return Ok(p.clone());
        }
        self.exec
            .local(
                "build the static probe (target/ate-static)",
                async {
                    let opts = crate::fixture::BuildOptions::from_env();
                    Ok(crate::fixture::static_bins(&opts).await?.probe)
                },
                || Ok(PathBuf::from("<target/ate-static/.../ate-probe>")),
            )
            .await
    }

    /// Renders the probe fixture and writes it into the work directory (a
    /// local step); returns its path and text.
    async fn render_probe(&self, image: &str) -> Result<(PathBuf, String)> {
        let ns = self.opts.namespace();
        let src = self.opts.fixtures_dir.join(PROBE_FIXTURE);
        let text = std::fs::read_to_string(&src)
            .with_context(|| format!("cannot read the probe fixture {}", src.display()))?;
        let bucket = self
            .exec
            .or_stand_in(
                self.opts
                    .bucket_name
                    .clone()
                    .filter(|b| !b.is_empty())
                    .ok_or(()),
                || "<BUCKET_NAME unset>".to_owned(),
            )
            .ok();
        let vars: BTreeMap<&str, String> = [
            ("NAMESPACE", ns.clone()),
            ("TEMPLATE", TEMPLATE_NAME.to_owned()),
            ("POOL", self.opts.pool()),
            ("PROBE_IMAGE", image.to_owned()),
            ("ATEOM_IMAGE", ATEOM_IMAGE.to_owned()),
            ("RUN_ID", self.opts.run_id.to_string()),
        ]
        .into_iter()
        .chain(bucket.map(|b| ("BUCKET_NAME", b)))
        .collect();
        let rendered = crate::template::render(&src.display().to_string(), &text, &vars)?;
        let out = self
            .opts
            .work_dir
            .join(format!("probe-{}.yaml", self.opts.run_id));
        let purpose = format!(
            "render {} into {} (NAMESPACE={ns}, PROBE_IMAGE={image})",
            src.display(),
            out.display()
        );
        let write = async {
            std::fs::create_dir_all(&self.opts.work_dir)
                .with_context(|| format!("cannot create {}", self.opts.work_dir.display()))?;
            std::fs::write(&out, &rendered)
                .with_context(|| format!("cannot write {}", out.display()))
        };
        self.exec.local(purpose, write, || Ok(())).await?;
        Ok((out, rendered))
    }
}
