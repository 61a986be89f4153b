//! Actors: the state machine, and the operations that move an actor
//! through it.
//!
//! ```text
//!            create                resume (golden or own snapshot)
//!   (none) ---------> Suspended ----------------------------> Running
//!                      ^   |  delete                            |
//!                      |   v                                    |
//!                      | (gone)          suspend (checkpoint)   |
//!                      +----------------------------------------+
//! ```
//!
//! **Invariants.** An actor's [`Life`] is guarded by its operation lock,
//! which serialises resume, suspend, delete and the identity rewrite; each
//! operation's precondition is a method of [`Life`], checked under that
//! lock. A failed operation leaves the actor in the state it started from
//! (a failed checkpoint keeps it running, with fresh relays), with nothing
//! half-made on disk or in the runtime. Every container is recorded in the
//! journal before the runtime starts it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use tracing::info;

use super::provision::{self, Provision, TemplateImage};
use super::sandbox::Sandbox;
use super::{
    host_err, ms, not_found, ActorDirs, ActorState, ActorView, Engine, EngineError, Phase,
    RestoreSource, SnapshotSource,
};
use crate::identity;
use crate::names;
use crate::relay::{FullResponse, RelayPool};

/// A running actor's sandbox and the relays into its app container.
pub(super) struct Running {
    sandbox: Sandbox,
    relays: Arc<RelayPool>,
}

/// Where an actor is in the state machine, as far as the runtime goes:
/// suspended (nothing in the runtime) or running (a container).
pub(super) enum Life {
    /// Nothing runs; the next resume restores [`ActorView::snapshot`].
    Suspended,
    /// A sandbox (pause + app container) runs the actor.
    Running(Running),
}

/// An operation the actor's state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refused {
    /// The state the actor is in.
    pub(super) state: ActorState,
    /// When the operation is allowed.
    pub(super) allowed: &'static str,
}

impl Refused {
    fn for_actor(self, op: &'static str, atespace: &str, id: &str) -> EngineError {
        EngineError::WrongState {
            op,
            what: format!("actor {atespace}/{id}"),
            state: self.state.to_string(),
            allowed: self.allowed,
        }
    }
}

impl Life {
    /// Resume: only a suspended actor.
    pub(super) fn can_resume(&self) -> Result<(), Refused> {
        match self {
            Life::Suspended => Ok(()),
            Life::Running(_) => Err(Refused {
                state: ActorState::Running,
                allowed: "only a SUSPENDED actor can be resumed",
            }),
        }
    }

    /// Suspend: only a running actor; takes its container out (the actor
    /// is suspended from here on unless the caller puts it back).
    pub(super) fn take_for_suspend(&mut self) -> Result<Running, Refused> {
        match std::mem::replace(self, Life::Suspended) {
            Life::Running(r) => Ok(r),
            Life::Suspended => Err(Refused {
                state: ActorState::Suspended,
                allowed: "only a RUNNING actor can be suspended",
            }),
        }
    }

    /// Delete: only a suspended actor.
    pub(super) fn can_delete(&self) -> Result<(), Refused> {
        match self {
            Life::Suspended => Ok(()),
            Life::Running(_) => Err(Refused {
                state: ActorState::Running,
                allowed: "only a SUSPENDED actor can be deleted; suspend it first",
            }),
        }
    }

    /// The identity rewrite hook: only a running actor.
    pub(super) fn can_rewrite_identity(&self) -> Result<(), Refused> {
        match self {
            Life::Running(_) => Ok(()),
            Life::Suspended => Err(Refused {
                state: ActorState::Suspended,
                allowed: "only a RUNNING actor's identity can be rewritten",
            }),
        }
    }
}

/// One actor: its view, its life under the operation lock, and the relays
/// the router uses without taking that lock.
pub(super) struct Actor {
    pub(super) view: Mutex<ActorView>,
    routes: Mutex<Option<Arc<RelayPool>>>,
    life: tokio::sync::Mutex<Life>,
    port: u16,
}

impl Actor {
    /// A suspended actor whose app listens on `port`.
    pub(super) fn new(view: ActorView, port: u16) -> Self {
        Actor {
            view: Mutex::new(view),
            routes: Mutex::new(None),
            life: tokio::sync::Mutex::new(Life::Suspended),
            port,
        }
    }

    /// A copy of its view.
    pub(super) fn view(&self) -> ActorView {
        self.view.lock().unwrap().clone()
    }

    fn set_running(&self, life: &mut Life, running: Running) {
        *self.routes.lock().unwrap() = Some(running.relays.clone());
        *life = Life::Running(running);
    }

    /// Closes the relays of a running actor but leaves it running (the
    /// agent detaches, `--keep`).
    pub(super) async fn close_relays(&self) {
        if let Life::Running(running) = &*self.life.lock().await {
            running.relays.close(Duration::from_millis(500)).await;
        }
    }

    /// Stops routing to a running actor and marks it suspended; its
    /// container stays recorded, for the caller to remove (shutdown).
    pub(super) async fn abandon(&self) {
        let mut life = self.life.lock().await;
        if let Life::Running(running) = std::mem::replace(&mut *life, Life::Suspended) {
            *self.routes.lock().unwrap() = None;
            running.relays.close(Duration::from_millis(500)).await;
            let mut v = self.view.lock().unwrap();
            v.state = ActorState::Suspended;
            v.sandbox = None;
            v.containers = Vec::new();
        }
    }
}

impl Engine {
    fn actor(&self, atespace: &str, id: &str) -> Result<Arc<Actor>, EngineError> {
        names::validate_atespace(atespace)?;
        names::validate_actor_id(id)?;
        let reg = self.reg.lock().unwrap();
        let m = reg
            .atespaces
            .get(atespace)
            .ok_or_else(|| not_found("atespace", atespace))?;
        m.get(id)
            .cloned()
            .ok_or_else(|| not_found("actor", format!("{atespace}/{id}")))
    }

    /// Creates an actor of a Ready template; it starts Suspended and its
    /// first resume restores the golden snapshot.
    pub fn create_actor(
        &self,
        atespace: &str,
        id: &str,
        template: &str,
    ) -> Result<ActorView, EngineError> {
        names::validate_atespace(atespace)?;
        names::validate_actor_id(id)?;
        names::validate_template_name(template)?;
        let view = {
            let mut reg = self.reg.lock().unwrap();
            self.refuse_if_closing(|| format!("create actor {atespace}/{id}"))?;
            let t = reg
                .templates
                .get(template)
                .ok_or_else(|| not_found("template", template))?;
            let (phase, port) = {
                let v = t.view.lock().unwrap();
                (v.status.phase, v.spec.port)
            };
            if phase != Phase::Ready {
                return Err(EngineError::WrongState {
                    op: "create an actor of",
                    what: format!("template {template}"),
                    state: format!("{phase:?}"),
                    allowed: "actors can be created once the template is Ready",
                });
            }
            let m = reg
                .atespaces
                .get_mut(atespace)
                .ok_or_else(|| not_found("atespace", atespace))?;
            if m.contains_key(id) {
                return Err(EngineError::AlreadyExists {
                    kind: "actor",
                    name: format!("{atespace}/{id}"),
                });
            }
            let view = ActorView {
                id: id.into(),
                atespace: atespace.into(),
                template: template.into(),
                state: ActorState::Suspended,
                sandbox: None,
                containers: Vec::new(),
                snapshot: SnapshotSource::Golden,
                restores: 0,
                last_restore_from: None,
                last_restore_ms: None,
                last_resume_ms: None,
                dirs: self.provisioner.actor_dirs(
                    &self.cfg.state_dir,
                    &self.cfg.state_dir.join("actors").join(atespace).join(id),
                ),
            };
            m.insert(id.into(), Arc::new(Actor::new(view.clone(), port)));
            view
        };
        self.persist();
        Ok(view)
    }

    /// An actor's view.
    pub fn get_actor(&self, atespace: &str, id: &str) -> Result<ActorView, EngineError> {
        let a = self.actor(atespace, id)?;
        let v = a.view.lock().unwrap().clone();
        Ok(v)
    }

    /// All actors of an atespace.
    pub fn list_actors(&self, atespace: &str) -> Result<Vec<ActorView>, EngineError> {
        names::validate_atespace(atespace)?;
        let reg = self.reg.lock().unwrap();
        let m = reg
            .atespaces
            .get(atespace)
            .ok_or_else(|| not_found("atespace", atespace))?;
        Ok(m.values().map(|a| a.view.lock().unwrap().clone()).collect())
    }

    /// Resumes a suspended actor (the API's resume): an actor that is
    /// already running is a wrong-state call.
    pub async fn resume(&self, atespace: &str, id: &str) -> Result<ActorView, EngineError> {
        let actor = self.actor(atespace, id)?;
        let mut life = actor.life.lock().await;
        // Checked under the op lock: shutdown takes every op lock after
        // setting the flag, so no sandbox starts behind its back.
        self.refuse_if_closing(|| format!("resume actor {atespace}/{id}"))?;
        life.can_resume()
            .map_err(|r| r.for_actor("resume", atespace, id))?;
        self.start(&actor, &mut life, atespace, id).await
    }

    /// Resumes an actor if it is suspended (the router's on-demand path):
    /// one that is already running is success.
    pub async fn resume_on_demand(
        &self,
        atespace: &str,
        id: &str,
    ) -> Result<ActorView, EngineError> {
        let actor = self.actor(atespace, id)?;
        let mut life = actor.life.lock().await;
        self.refuse_if_closing(|| format!("resume actor {atespace}/{id}"))?;
        if let Life::Running(_) = &*life {
            return Ok(actor.view());
        }
        self.start(&actor, &mut life, atespace, id).await
    }

    /// Restores a suspended actor (its life locked by the caller) and
    /// makes it running; on failure it stays suspended.
    async fn start(
        &self,
        actor: &Actor,
        life: &mut Life,
        atespace: &str,
        id: &str,
    ) -> Result<ActorView, EngineError> {
        let (template, dirs, source) = {
            let mut v = actor.view.lock().unwrap();
            v.state = ActorState::Resuming;
            (v.template.clone(), v.dirs.clone(), v.snapshot.clone())
        };
        let t0 = Instant::now();
        let (running, running_dirs, restore) = match self
            .restore(&template, &dirs, atespace, id, &source, actor.port)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                actor.view.lock().unwrap().state = ActorState::Suspended;
                return Err(e);
            }
        };
        let (pause, app) = (running.sandbox.pause.clone(), running.sandbox.app.clone());
        let containers = running.sandbox.views(&running_dirs);
        actor.set_running(life, running);
        let v = {
            let mut v = actor.view.lock().unwrap();
            v.state = ActorState::Running;
            v.sandbox = Some(pause.clone());
            v.containers = containers;
            v.restores += 1;
            v.last_restore_from = Some(match source {
                SnapshotSource::Golden => RestoreSource::Golden,
                SnapshotSource::Own(_) => RestoreSource::Own,
            });
            v.last_restore_ms = Some(ms(restore));
            v.last_resume_ms = Some(ms(t0.elapsed()));
            v.clone()
        };
        info!(
            actor = %format!("{atespace}/{id}"),
            %pause,
            %app,
            from = %v.last_restore_from.map(|s| s.to_string()).unwrap_or_default(),
            restore_ms = ms(restore),
            resume_ms = ms(t0.elapsed()),
            "restored actor from {} image",
            if matches!(source, SnapshotSource::Golden) { "the template's golden" } else { "its own snapshot" }
        );
        self.persist();
        Ok(v)
    }

    /// Provisions the actor's directories and restores its sandbox from
    /// `source`; returns it running, the directories it runs from, and
    /// how long the restore took.
    async fn restore(
        &self,
        template: &str,
        dirs: &ActorDirs,
        atespace: &str,
        id: &str,
        source: &SnapshotSource,
        port: u16,
    ) -> Result<(Running, ActorDirs, Duration), EngineError> {
        let (spec, golden) = {
            let t = self.template(template)?;
            (t.spec, t.status.golden.map(|g| g.image_dir))
        };
        let image = match source {
            SnapshotSource::Golden => golden.ok_or_else(|| EngineError::WrongState {
                op: "resume from",
                what: format!("template {template}"),
                state: "without a golden snapshot".into(),
                allowed: "the template must be Ready",
            })?,
            SnapshotSource::Own(p) => p.clone(),
        };
        let template_image = TemplateImage::in_dir(&self.template_dir(template));
        let (helper_dir, helper_bin) = (self.helper_dir(), self.helper_bin());
        let at = |dirs| Provision {
            spec: &spec,
            image: &template_image,
            dirs,
            actor_id: id,
            helper_dir: &helper_dir,
            helper_bin: &helper_bin,
        };
        let p = self.provisioner.as_ref();
        let dirs = p.dirs_for_resume(dirs, &|| provision::prepare(p, at(dirs)))?;
        let sandbox = self.new_sandbox();
        provision::write_bundles(p, at(&dirs), &sandbox)?;
        let t0 = Instant::now();
        self.restore_sandbox(&sandbox, &dirs, &image, &format!("actor:{atespace}/{id}"))
            .await?;
        let restore = t0.elapsed();
        let relays = self.relays(&sandbox.app, port);
        Ok((Running { sandbox, relays }, dirs, restore))
    }

    /// Suspends a running actor: closes its relays, checkpoints it into a
    /// fresh snapshot directory of its own, deletes the container, and
    /// resets its per-run directories (the identity dir is empty until the
    /// next resume, ID-10). A failed checkpoint keeps it running.
    pub async fn suspend(&self, atespace: &str, id: &str) -> Result<ActorView, EngineError> {
        let actor = self.actor(atespace, id)?;
        let mut life = actor.life.lock().await;
        let running = life
            .take_for_suspend()
            .map_err(|r| r.for_actor("suspend", atespace, id))?;
        let (dirs, old) = {
            let mut v = actor.view.lock().unwrap();
            v.state = ActorState::Suspending;
            (v.dirs.clone(), v.snapshot.clone())
        };
        *actor.routes.lock().unwrap() = None;
        running.relays.close(Duration::from_secs(2)).await;
        let snap = dirs.root.join(format!(
            "snapshot-{}",
            self.seq.fetch_add(1, Ordering::Relaxed) + 1
        ));
        let t0 = Instant::now();
        let ck = self
            .checkpoint_into(&running.sandbox, &snap, &dirs.logs, atespace, id)
            .await;
        if let Err(e) = ck {
            // The container may still run: keep it, with fresh relays.
            let _ = std::fs::remove_dir_all(&snap);
            let relays = self.relays(&running.sandbox.app, actor.port);
            actor.set_running(
                &mut life,
                Running {
                    sandbox: running.sandbox,
                    relays,
                },
            );
            actor.view.lock().unwrap().state = ActorState::Running;
            return Err(e);
        }
        let checkpoint_ms = ms(t0.elapsed());
        let pause = running.sandbox.pause.clone();
        self.remove_sandbox_later(running.sandbox);
        self.provisioner.after_checkpoint(&dirs)?;
        if let SnapshotSource::Own(p) = old {
            let _ = std::fs::remove_dir_all(p);
        }
        let v = {
            let mut v = actor.view.lock().unwrap();
            v.state = ActorState::Suspended;
            v.sandbox = None;
            v.containers = Vec::new();
            v.snapshot = SnapshotSource::Own(snap);
            v.clone()
        };
        info!(actor = %format!("{atespace}/{id}"), %pause, checkpoint_ms, "suspended actor into its own snapshot");
        drop(life);
        self.persist();
        Ok(v)
    }

    async fn checkpoint_into(
        &self,
        sandbox: &Sandbox,
        snap: &Path,
        logs: &Path,
        atespace: &str,
        id: &str,
    ) -> Result<(), EngineError> {
        std::fs::create_dir_all(snap)
            .map_err(host_err(format!("cannot create {}", snap.display())))?;
        self.checkpoint_sandbox(sandbox, snap, logs)
            .await
            .map_err(|source| EngineError::Runtime {
                context: format!("cannot checkpoint actor {atespace}/{id}"),
                source: Box::new(source),
            })
    }

    /// Deletes a suspended actor and everything it owns on the host.
    pub async fn delete_actor(&self, atespace: &str, id: &str) -> Result<(), EngineError> {
        let actor = self.actor(atespace, id)?;
        let life = actor.life.lock().await;
        life.can_delete()
            .map_err(|r| r.for_actor("delete", atespace, id))?;
        let root: PathBuf = actor.view.lock().unwrap().dirs.root.clone();
        {
            let mut reg = self.reg.lock().unwrap();
            if let Some(m) = reg.atespaces.get_mut(atespace) {
                m.remove(id);
            }
        }
        drop(life);
        self.provisioner.remove_actor_dirs(&root);
        self.persist();
        Ok(())
    }

    /// Sends an HTTP request to a running actor through its relay, resuming
    /// it first if it is suspended (the router's on-demand path).
    pub async fn forward(
        &self,
        atespace: &str,
        id: &str,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<FullResponse, EngineError> {
        let actor = self.actor(atespace, id)?;
        let pool = actor.routes.lock().unwrap().clone();
        let pool = match pool {
            Some(p) => p,
            None => {
                self.resume_on_demand(atespace, id).await?;
                let p = actor.routes.lock().unwrap().clone();
                p.ok_or_else(|| EngineError::WrongState {
                    op: "route to",
                    what: format!("actor {atespace}/{id}"),
                    state: "suspended again while resuming".into(),
                    allowed: "retry the request",
                })?
            }
        };
        Ok(pool.send(req).await?)
    }

    /// Conformance hook (ID-9): rewrites a running actor's `actor-id` on the
    /// host, atomically, cycling through `values` for `for_ms`
    /// milliseconds (or until `times` writes, whichever comes first), then
    /// writes the actor's own ID again. Lets a suite watch rewrites from
    /// inside the actor. Returns the number of writes, the last one
    /// included.
    pub async fn rewrite_identity(
        &self,
        atespace: &str,
        id: &str,
        values: Vec<String>,
        for_ms: u64,
        times: Option<u64>,
    ) -> Result<u64, EngineError> {
        let max_ms = if times.is_some() { 60_000 } else { 30_000 };
        if values.is_empty()
            || values.iter().any(|v| v.is_empty() || v.len() > 255)
            || !(1..=max_ms).contains(&for_ms)
            || times.is_some_and(|t| !(1..=100_000).contains(&t))
        {
            return Err(EngineError::InvalidField {
                field: "rewrite",
                value: format!("values {values:?}, for_ms {for_ms}, times {times:?}"),
                allowed: "1 or more values of 1..=255 bytes, for_ms 1..=30000 \
                          (1..=60000 with times), times 1..=100000 if given"
                    .into(),
            });
        }
        let actor = self.actor(atespace, id)?;
        let life = actor.life.lock().await;
        life.can_rewrite_identity()
            .map_err(|r| r.for_actor("rewrite the identity of", atespace, id))?;
        let dir = actor.view.lock().unwrap().dirs.identity.clone();
        let own = id.to_owned();
        let provisioner = self.provisioner.clone();
        let n = tokio::task::spawn_blocking(move || {
            let end = Instant::now() + Duration::from_millis(for_ms);
            let limit = times.unwrap_or(u64::MAX);
            let mut n = 0u64;
            while n < limit && Instant::now() < end {
                provisioner.write_identity(&dir, &values[(n as usize) % values.len()])?;
                n += 1;
            }
            provisioner.write_identity(&dir, &own)?;
            Ok::<_, identity::IdentityError>(n + 1)
        })
        .await
        .expect("rewrite task")
        .map_err(host_err(format!(
            "cannot rewrite the identity of {atespace}/{id}"
        )))?;
        drop(life);
        info!(actor = %format!("{atespace}/{id}"), writes = n, for_ms, ?times, "rewrote the identity (conformance hook)");
        Ok(n)
    }
}
