//! Templates: the spec's checks, the golden boot (run, `/healthz` through
//! the relay, checkpoint), lookup and deletion.
//!
//! **Invariants.** A template's phase goes `ResumeGoldenActor` →
//! `WaitGoldenActor` → `Ready` or `Failed`; actors are created only of a
//! Ready one. The golden actor never serves traffic: its sandbox is
//! removed whatever happened (in the background after a checkpoint, which
//! has stopped it). A template keeps its own link to the binary, so a
//! rebuild of the original path cannot change it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use tracing::{error, info};

use super::provision::{self, Provision, TemplateImage};
use super::Engine;
use super::{
    error_chain, host_err, ms, new_uuid, not_found, EngineError, GoldenPaths, Phase, TemplateSpec,
    TemplateStatus, TemplateView,
};
use crate::names;
use crate::relay::RelayPool;
use crate::rootfs;

/// One template: its view (spec and status).
pub(super) struct Template {
    pub(super) view: Mutex<TemplateView>,
}

impl Engine {
    /// Checks a `POST /templates` body and fills its defaults (`args`);
    /// an error names the field, the value and what is allowed.
    pub fn validate_spec(spec: &mut TemplateSpec) -> Result<(), EngineError> {
        names::validate_template_name(&spec.name)?;
        let bad = |field, value: String, allowed: &str| EngineError::InvalidField {
            field,
            value,
            allowed: allowed.into(),
        };
        if !spec.binary.is_absolute() {
            return Err(bad(
                "binary",
                spec.binary.display().to_string(),
                "must be an absolute path to a static executable on the agent's host",
            ));
        }
        let meta = std::fs::metadata(&spec.binary).map_err(|e| {
            bad(
                "binary",
                spec.binary.display().to_string(),
                &format!("must exist ({e})"),
            )
        })?;
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(bad(
                "binary",
                spec.binary.display().to_string(),
                "must be an executable regular file",
            ));
        }
        if let Some(dir) = &spec.image_dir {
            let shown = dir.display().to_string();
            if !dir.is_absolute() {
                return Err(bad(
                    "image_dir",
                    shown,
                    "must be an absolute path to a directory",
                ));
            }
            match std::fs::symlink_metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(bad("image_dir", shown, "must be a directory")),
                Err(e) => return Err(bad("image_dir", shown, &format!("must exist ({e})"))),
            }
        }
        if spec.port == 0 {
            return Err(bad("port", "0".into(), "must be 1..=65535"));
        }
        let file_name = spec
            .binary
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("app")
            .to_owned();
        if spec.args.is_empty() {
            spec.args = vec![format!("/{file_name}")];
        }
        if !spec.args[0].starts_with('/') {
            return Err(bad(
                "args[0]",
                spec.args[0].clone(),
                "must be an absolute path inside the image",
            ));
        }
        if let Some(e) = spec
            .env
            .iter()
            .find(|e| !e.contains('=') || e.starts_with('='))
        {
            return Err(bad("env", e.clone(), "entries must be KEY=VALUE"));
        }
        Ok(())
    }

    /// Creates a template and boots its golden actor in the background;
    /// poll [`Engine::template`] for the phase.
    pub fn create_template(
        self: &Arc<Self>,
        mut spec: TemplateSpec,
    ) -> Result<TemplateView, EngineError> {
        Self::validate_spec(&mut spec)?;
        let golden_id = new_uuid();
        let view = TemplateView {
            spec: spec.clone(),
            status: TemplateStatus {
                phase: Phase::ResumeGoldenActor,
                golden_actor_id: Some(golden_id.clone()),
                reason: None,
                golden: None,
                timings_ms: BTreeMap::new(),
                golden_evidence: None,
            },
        };
        let t = Arc::new(Template {
            view: Mutex::new(view.clone()),
        });
        {
            let mut reg = self.reg.lock().unwrap();
            self.refuse_if_closing(|| format!("create template {}", spec.name))?;
            if reg.templates.contains_key(&spec.name) {
                return Err(EngineError::AlreadyExists {
                    kind: "template",
                    name: spec.name,
                });
            }
            reg.templates.insert(spec.name.clone(), t.clone());
        }
        self.persist();
        let engine = self.clone();
        let task = tokio::spawn(async move {
            let result = engine.boot_golden(&t, &golden_id).await;
            {
                let mut v = t.view.lock().unwrap();
                match result {
                    Ok(()) => {
                        v.status.phase = Phase::Ready;
                        info!(template = %v.spec.name, golden = %golden_id, timings = ?v.status.timings_ms, "golden snapshot ready");
                    }
                    Err(e) => {
                        let reason = error_chain(&e);
                        error!(template = %v.spec.name, %reason, "golden boot failed");
                        v.status.phase = Phase::Failed;
                        v.status.reason = Some(reason);
                    }
                }
            }
            engine.persist();
        });
        let mut boots = self.golden_boots.lock().unwrap();
        boots.retain(|t| !t.is_finished());
        boots.push(task);
        Ok(view)
    }

    pub(super) fn template_dir(&self, name: &str) -> PathBuf {
        self.cfg.state_dir.join("templates").join(name)
    }

    async fn boot_golden(&self, t: &Template, golden_id: &str) -> Result<(), EngineError> {
        let spec = t.view.lock().unwrap().spec.clone();
        let tdir = self.template_dir(&spec.name);
        let _ = std::fs::remove_dir_all(&tdir);
        std::fs::create_dir_all(&tdir)
            .map_err(host_err(format!("cannot create {}", tdir.display())))?;
        let image = TemplateImage::in_dir(&tdir);
        // The image is the binary alone: keep our own link to it so a
        // rebuild of the original path cannot change a template.
        rootfs::link_or_copy(&spec.binary, &image.bin).map_err(host_err(format!(
            "cannot copy {} into the template",
            spec.binary.display()
        )))?;
        if let Some(src) = &spec.image_dir {
            std::fs::create_dir_all(&image.tree)
                .map_err(host_err(format!("cannot create {}", image.tree.display())))?;
            rootfs::copy_image_tree(src, &image.tree).map_err(host_err(format!(
                "cannot copy the image dir {} into the template",
                src.display()
            )))?;
        }
        self.provisioner.golden_image(&image, golden_id)?;
        let dirs = self
            .provisioner
            .actor_dirs(&self.cfg.state_dir, &tdir.join("golden"));
        let sandbox = self.new_sandbox();
        let at = Provision {
            spec: &spec,
            image: &image,
            dirs: &dirs,
            actor_id: golden_id,
            helper_dir: &self.helper_dir(),
            helper_bin: &self.helper_bin(),
        };
        provision::prepare(self.provisioner.as_ref(), at)?;
        provision::write_bundles(self.provisioner.as_ref(), at, &sandbox)?;

        let owner = format!("golden:{}", spec.name);
        let t0 = Instant::now();
        let result = async {
            self.boot_sandbox(&sandbox, &dirs, &owner).await?;
            let boot = t0.elapsed();
            {
                let mut v = t.view.lock().unwrap();
                v.status.phase = Phase::WaitGoldenActor;
                v.status.timings_ms.insert("boot".into(), ms(boot));
            }
            info!(template = %spec.name, golden = %golden_id, pause = %sandbox.pause, app = %sandbox.app, boot_ms = ms(boot), "golden actor booted; waiting for /healthz");
            let pool = self.relays(&sandbox.app, spec.port);
            let t1 = Instant::now();
            let health = wait_healthy(&pool, self.cfg.golden_health_timeout).await;
            pool.close(Duration::from_secs(2)).await;
            health?;
            t.view.lock().unwrap().status.timings_ms.insert("health".into(), ms(t1.elapsed()));
            let snapshot = tdir.join("snapshot");
            std::fs::create_dir_all(&snapshot).map_err(host_err(format!("cannot create {}", snapshot.display())))?;
            let evidence = self.mark_golden(&sandbox.app, golden_id).await?;
            let t2 = Instant::now();
            self.checkpoint_sandbox(&sandbox, &snapshot, &dirs.logs)
                .await
                .map_err(|source| EngineError::Runtime { context: format!("cannot checkpoint the golden actor {golden_id}"), source: Box::new(source) })?;
            let mut v = t.view.lock().unwrap();
            v.status.timings_ms.insert("checkpoint".into(), ms(t2.elapsed()));
            v.status.golden_evidence = evidence;
            v.status.golden = Some(GoldenPaths {
                bundle_dir: dirs.bundle.clone(),
                pause_bundle_dir: dirs.pause_bundle.clone(),
                pause_bin: self.helper_bin(),
                image_dir: snapshot,
                image_bin: image.bin.clone(),
            });
            Ok::<(), EngineError>(())
        }
        .await;
        // The golden actor never serves traffic: stop it whatever happened
        // (a checkpoint has already stopped it; otherwise it may still run).
        match result {
            Ok(()) => {
                self.remove_sandbox_later(sandbox);
                Ok(())
            }
            Err(e) => {
                if let Err(r) = self.remove_sandbox(&sandbox).await {
                    error!(pause = %sandbox.pause, app = %sandbox.app, error = %error_chain(&r), "cannot remove the failed golden actor's sandbox");
                }
                Err(e)
            }
        }
    }

    /// A template's view.
    pub fn template(&self, name: &str) -> Result<TemplateView, EngineError> {
        let reg = self.reg.lock().unwrap();
        let t = reg
            .templates
            .get(name)
            .ok_or_else(|| not_found("template", name))?;
        let v = t.view.lock().unwrap().clone();
        Ok(v)
    }

    /// All templates.
    pub fn templates(&self) -> Vec<TemplateView> {
        self.reg
            .lock()
            .unwrap()
            .templates
            .values()
            .map(|t| t.view.lock().unwrap().clone())
            .collect()
    }

    /// Deletes a template that no actor uses and whose golden boot is over.
    pub fn delete_template(&self, name: &str) -> Result<(), EngineError> {
        {
            let mut reg = self.reg.lock().unwrap();
            let t = reg
                .templates
                .get(name)
                .ok_or_else(|| not_found("template", name))?;
            let phase = t.view.lock().unwrap().status.phase;
            if matches!(phase, Phase::ResumeGoldenActor | Phase::WaitGoldenActor) {
                return Err(EngineError::WrongState {
                    op: "delete",
                    what: format!("template {name}"),
                    state: format!("{phase:?}"),
                    allowed: "a template can be deleted once it is Ready or Failed",
                });
            }
            if let Some((a, id)) = reg
                .atespaces
                .iter()
                .flat_map(|(a, m)| m.iter().map(move |(id, x)| (a, id, x)))
                .find_map(|(a, id, x)| {
                    (x.view.lock().unwrap().template == name).then(|| (a.clone(), id.clone()))
                })
            {
                return Err(EngineError::WrongState {
                    op: "delete",
                    what: format!("template {name}"),
                    state: format!("in use by actor {a}/{id}"),
                    allowed: "delete its actors first",
                });
            }
            reg.templates.remove(name);
        }
        let _ = std::fs::remove_dir_all(self.template_dir(name));
        self.persist();
        Ok(())
    }
}

/// Polls `GET /healthz` through the relay until it answers 200 or the
/// deadline passes; on timeout says what it saw last.
async fn wait_healthy(pool: &RelayPool, deadline: Duration) -> Result<(), EngineError> {
    let start = Instant::now();
    loop {
        let req = hyper::Request::get("/healthz")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .expect("static request");
        let last = match tokio::time::timeout(Duration::from_secs(5), pool.send(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => return Ok(()),
            Ok(Ok(resp)) => format!("/healthz answered {}", resp.status()),
            Ok(Err(e)) => error_chain(&e),
            Err(_) => "/healthz did not answer within 5s".to_owned(),
        };
        if start.elapsed() >= deadline {
            return Err(EngineError::Host {
                context: format!(
                    "golden actor not healthy after {:?}; last: {last}",
                    deadline
                ),
                source: Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "health deadline passed",
                )),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
