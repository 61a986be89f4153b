//! The control plane's part above atelet, played by the harness: what
//! upstream's `ateapi` and controller do for one node (CONTRACT.md V:
//! nothing above atelet can run here as it is).
//!
//! - **Actors** are ours: atelet knows no atespaces and keeps no actor
//!   list. An actor is created suspended with no snapshot; its first
//!   resume is a `Restore` from the template's golden (EXTERNAL,
//!   `cmd/ateapi/internal/controlapi/workflow_resume.go:300-315`), a
//!   suspend is a `Checkpoint` to the actor's own EXTERNAL prefix
//!   `<template location>/<actor>/<snapshot>` (`workflow_suspend.go:90,
//!   125-138`), and every later resume a `Restore` from its latest one
//!   (`workflow_resume.go:262-290`).
//! - **Workers**: each ateom runs one actor at a time
//!   (`cmd/ateom-gvisor/main.go`: a Run or Restore first tears down the
//!   previous actor), so a resume takes a free worker and a suspend gives
//!   it back; a resume waits for one at most [`WORKER_WAIT`].
//! - **Traffic and suspend**: the routing front ([`super::front`]) counts
//!   its requests per actor. A suspend holds the actor's lock (so no new
//!   request starts; one that arrives waits, then resumes it), waits until
//!   none is in flight, then asks atelet. runsc 20240729 refuses to
//!   checkpoint while a TCP endpoint is connected, and an endpoint the
//!   front closed first is gone within about 0.6 s (measured,
//!   `docs/upstream-node.md`): a refusal for that reason is reported as
//!   such, quoting ateom's log.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ate_atelet_api::{AteletClient, CallError, RunRequest, SnapshotRequest, Target, WorkloadSpec};
use tokio::sync::{Mutex as AsyncMutex, Notify, OwnedMutexGuard};
use tracing::info;

use crate::backend::{ActorInfo, ActorState, RestoreSource};

/// How long a resume waits for a free worker.
pub const WORKER_WAIT: Duration = Duration::from_secs(90);
/// The text ateom-gvisor logs when runsc refuses for that reason.
pub const CONNECTED_REFUSAL: &str = "cannot be saved in connected state";
/// The port the probe serves on, behind ateom's DNAT from the pod address.
pub const ACTOR_PORT: u16 = 80;

/// The workers: their pod UIDs and addresses, and which are free.
pub struct Workers {
    uids: Vec<String>,
    pod_addrs: Vec<Ipv4Addr>,
    free: Mutex<Vec<usize>>,
    freed: Notify,
}

impl Workers {
    /// Every worker free.
    pub fn new(uids: Vec<String>, pod_addrs: Vec<Ipv4Addr>) -> Workers {
        let free = (0..uids.len()).rev().collect();
        Workers {
            uids,
            pod_addrs,
            free: Mutex::new(free),
            freed: Notify::new(),
        }
    }

    /// Worker `i`'s pod UID.
    pub fn uid(&self, i: usize) -> &str {
        &self.uids[i]
    }

    /// Worker `i`'s pod address and the actor port.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.pod_addrs[i], ACTOR_PORT))
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.uids.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.uids.is_empty()
    }

    /// Takes a free worker, waiting at most `wait` for one.
    pub async fn take(&self, wait: Duration, for_what: &str) -> Result<usize> {
        let until = Instant::now() + wait;
        loop {
            let notified = self.freed.notified();
            if let Some(i) = self.free.lock().expect("workers lock").pop() {
                return Ok(i);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                bail!(
                    "no free worker for {for_what} within {wait:?}: all {} run an actor (each ateom runs one at a \
                     time); run fewer trials at once (--test-threads) or more workers (--node-workers)",
                    self.uids.len()
                );
            }
        }
    }

    /// Gives worker `i` back.
    pub fn give(&self, i: usize) {
        self.free.lock().expect("workers lock").push(i);
        self.freed.notify_one();
    }
}

/// A template as the control plane keeps it.
#[derive(Clone)]
pub struct TemplateRec {
    /// The namespace atelet is told.
    pub namespace: String,
    /// Its workload spec, sent with every call.
    pub spec: WorkloadSpec,
    /// Its golden snapshot's EXTERNAL prefix.
    pub golden_uri: String,
}

/// One actor's record.
struct ActorRec {
    template: String,
    state: ActorState,
    worker: Option<usize>,
    /// Its latest own snapshot's prefix; `None`: restore from the golden.
    own_snapshot: Option<String>,
    snapshots: u32,
    restored_from: Option<RestoreSource>,
    restore_ms: Option<u64>,
}

/// An actor's lock and its count of requests in flight through the front.
struct ActorSlot {
    /// Its template (fixed for the actor's life; readable without the lock).
    template: String,
    rec: Arc<AsyncMutex<ActorRec>>,
    in_flight: Arc<AtomicUsize>,
    drained: Arc<Notify>,
}

/// A request in flight to an actor: while one lives, the actor is not
/// suspended.
pub struct InFlight {
    count: Arc<AtomicUsize>,
    drained: Arc<Notify>,
    /// The actor's pod address.
    pub addr: SocketAddr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }
}

/// Why the front cannot route to an actor.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No such actor (404).
    #[error("no actor {id:?} in atespace {atespace:?}")]
    NotFound {
        /// The atespace.
        atespace: String,
        /// The actor.
        id: String,
    },
    /// Its resume failed (502).
    #[error("resuming actor {atespace}/{id} on demand failed: {cause}")]
    Resume {
        /// The atespace.
        atespace: String,
        /// The actor.
        id: String,
        /// The whole chain.
        cause: String,
    },
}

/// The control plane of one node.
pub struct Control {
    atelet: AteletClient,
    workers: Workers,
    templates: Mutex<HashMap<String, TemplateRec>>,
    actors: Mutex<HashMap<(String, String), ActorSlot>>,
    /// Each worker's ateom log, quoted when a checkpoint is refused.
    ateom_logs: Vec<PathBuf>,
    /// The node's directories (runsc's state files).
    layout: super::layout::Layout,
}

impl Control {
    /// Over `atelet` with `workers`; `ateom_logs[i]` is worker i's log.
    pub fn new(
        atelet: AteletClient,
        workers: Workers,
        ateom_logs: Vec<PathBuf>,
        layout: super::layout::Layout,
    ) -> Control {
        Control {
            atelet,
            workers,
            templates: Mutex::new(HashMap::new()),
            actors: Mutex::new(HashMap::new()),
            ateom_logs,
            layout,
        }
    }

    /// The workers.
    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    /// The atelet client.
    pub fn atelet(&self) -> &AteletClient {
        &self.atelet
    }

    /// Records a template whose golden is at `rec.golden_uri`.
    pub fn add_template(&self, name: &str, rec: TemplateRec) {
        self.templates
            .lock()
            .expect("templates lock")
            .insert(name.to_owned(), rec);
    }

    /// The template `name`.
    pub fn template(&self, name: &str) -> Option<TemplateRec> {
        self.templates
            .lock()
            .expect("templates lock")
            .get(name)
            .cloned()
    }

    /// Forgets template `name`; refused while an actor of it exists.
    pub fn delete_template(&self, name: &str) -> Result<()> {
        let users: Vec<String> = self
            .actors
            .lock()
            .expect("actors lock")
            .iter()
            .filter(|(_, s)| s.template == name)
            .map(|((a, i), _)| format!("{a}/{i}"))
            .collect();
        if !users.is_empty() {
            bail!("template {name} still has actors: {}", users.join(", "));
        }
        self.templates.lock().expect("templates lock").remove(name);
        Ok(())
    }

    /// Runs a golden actor `id` of template `name` (namespace `ns`) from
    /// `spec` on a free worker with `assets`; returns the worker, which the
    /// caller gives back after the golden's checkpoint.
    pub async fn run_golden(
        &self,
        ns: &str,
        name: &str,
        id: &str,
        spec: &WorkloadSpec,
        assets: ate_atelet_api::SandboxAssets,
    ) -> Result<usize> {
        let w = self
            .workers
            .take(WORKER_WAIT, &format!("golden {id}"))
            .await?;
        let req = RunRequest {
            target_ateom_uid: self.workers.uid(w).to_owned(),
            actor_template_namespace: ns.to_owned(),
            actor_template_name: name.to_owned(),
            actor_id: id.to_owned(),
            spec: Some(spec.clone()),
            sandbox_assets: Some(assets),
        };
        if let Err(e) = self.atelet.run(req).await {
            self.workers.give(w);
            return Err(self.explain(w, e).into());
        }
        Ok(w)
    }

    /// Checkpoints the actor on worker `w` to `uri` (EXTERNAL, FULL). A
    /// refusal for a connected TCP endpoint is reported as such, quoting
    /// ateom's log (or the error) line; it is not retried: with runsc
    /// 20240729 the refused sandbox may not survive it (measured with the
    /// stand-in; [`Control::suspend`] then looks).
    pub async fn checkpoint(
        &self,
        w: usize,
        target: &Target,
        spec: &WorkloadSpec,
        uri: &str,
    ) -> Result<()> {
        let log_mark = self.log_len(w);
        match self.atelet.checkpoint(SnapshotRequest::external(target, spec, uri)).await {
            Ok(()) => Ok(()),
            Err(e) => match self.connected_refusal(w, log_mark, &e) {
                Some(line) => bail!(
                    "suspend of actor {} refused: runsc will not checkpoint while a TCP connection to the actor \
                     is open (runsc 20240729 has no -allow-connected-on-save; the routing front closes its own \
                     connections first and waits for its requests, so another client holds one). ateom's log: \
                     {line}; atelet said: {e}",
                    target.actor_id
                ),
                None => Err(self.explain(w, e)),
            },
        }
    }

    /// Whether the sandbox of actor `id` of template `template` still runs
    /// (runsc's state files under the node's directory).
    fn sandbox_runs(&self, namespace: &str, template: &str, id: &str) -> bool {
        let dir = format!("{namespace}:{template}:{id}");
        super::sandboxes::leftovers(&self.layout)
            .map(|l| {
                l.iter()
                    .any(|l| l.actor_dir == dir && l.role == "runsc-sandbox")
            })
            .unwrap_or(false)
    }

    fn log_len(&self, w: usize) -> u64 {
        std::fs::metadata(&self.ateom_logs[w])
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The line of worker `w`'s ateom log (written since `from`) or of the
    /// error itself that says a connected endpoint was refused.
    fn connected_refusal(&self, w: usize, from: u64, e: &CallError) -> Option<String> {
        if e.message.contains(CONNECTED_REFUSAL) {
            return Some(e.message.clone());
        }
        let text = std::fs::read(&self.ateom_logs[w]).unwrap_or_default();
        let new = String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned();
        new.lines()
            .find(|l| l.contains(CONNECTED_REFUSAL))
            .map(|l| l.chars().take(600).collect())
    }

    /// atelet's error, with the last lines of the worker's ateom log (atelet
    /// often says only `exit status N`; the reason is in ateom's log).
    fn explain(&self, w: usize, e: CallError) -> anyhow::Error {
        let tail = super::agents::log_tail(&self.ateom_logs[w], 6);
        anyhow!(
            "{e}\n(the last lines of ateom-gvisor's log {}:\n{tail})",
            self.ateom_logs[w].display()
        )
    }

    /// Creates actor `atespace/id` of `template`, suspended with no
    /// snapshot of its own.
    pub fn create_actor(&self, atespace: &str, id: &str, template: &str) -> Result<ActorInfo> {
        if self.template(template).is_none() {
            bail!("no template {template:?} on this node");
        }
        let mut actors = self.actors.lock().expect("actors lock");
        let key = (atespace.to_owned(), id.to_owned());
        if actors.contains_key(&key) {
            bail!("actor {atespace}/{id} already exists");
        }
        let rec = ActorRec {
            template: template.to_owned(),
            state: ActorState::Suspended,
            worker: None,
            own_snapshot: None,
            snapshots: 0,
            restored_from: None,
            restore_ms: None,
        };
        let info = info_of(atespace, id, &rec, &self.workers);
        actors.insert(
            key,
            ActorSlot {
                template: template.to_owned(),
                rec: Arc::new(AsyncMutex::new(rec)),
                in_flight: Arc::new(AtomicUsize::new(0)),
                drained: Arc::new(Notify::new()),
            },
        );
        Ok(info)
    }

    fn slot(
        &self,
        atespace: &str,
        id: &str,
    ) -> Option<(Arc<AsyncMutex<ActorRec>>, Arc<AtomicUsize>, Arc<Notify>)> {
        self.actors
            .lock()
            .expect("actors lock")
            .get(&(atespace.to_owned(), id.to_owned()))
            .map(|s| (s.rec.clone(), s.in_flight.clone(), s.drained.clone()))
    }

    fn locked_err(atespace: &str, id: &str) -> anyhow::Error {
        anyhow!("no actor {id:?} in atespace {atespace:?}")
    }

    /// The actor as we keep it.
    pub async fn get(&self, atespace: &str, id: &str) -> Result<ActorInfo> {
        let (rec, _, _) = self
            .slot(atespace, id)
            .ok_or_else(|| Self::locked_err(atespace, id))?;
        let rec = rec.lock().await;
        Ok(info_of(atespace, id, &rec, &self.workers))
    }

    /// Resumes the actor (a no-op when it runs).
    pub async fn resume(&self, atespace: &str, id: &str) -> Result<ActorInfo> {
        let (rec, _, _) = self
            .slot(atespace, id)
            .ok_or_else(|| Self::locked_err(atespace, id))?;
        let mut rec = rec.lock_owned().await;
        self.resume_locked(atespace, id, &mut rec).await?;
        Ok(info_of(atespace, id, &rec, &self.workers))
    }

    async fn resume_locked(
        &self,
        atespace: &str,
        id: &str,
        rec: &mut OwnedMutexGuard<ActorRec>,
    ) -> Result<()> {
        if rec.state.is_running() {
            return Ok(());
        }
        let tpl = self.template(&rec.template).with_context(|| {
            format!("actor {atespace}/{id}'s template {} is gone", rec.template)
        })?;
        let (uri, from) = match &rec.own_snapshot {
            Some(own) => (own.clone(), RestoreSource::Own),
            None => (tpl.golden_uri.clone(), RestoreSource::Golden),
        };
        let w = self
            .workers
            .take(WORKER_WAIT, &format!("actor {atespace}/{id}"))
            .await?;
        let target = self.target(w, &tpl, &rec.template, id);
        rec.state = ActorState::Resuming;
        let started = Instant::now();
        match self
            .atelet
            .restore(SnapshotRequest::external(&target, &tpl.spec, &uri))
            .await
        {
            Ok(()) => {
                rec.state = ActorState::Running;
                rec.worker = Some(w);
                rec.restored_from = Some(from);
                rec.restore_ms = Some(started.elapsed().as_millis() as u64);
                info!(actor = %id, worker = %target.ateom_uid, from = ?from, ms = rec.restore_ms, "restored");
                Ok(())
            }
            Err(e) => {
                rec.state = ActorState::Suspended;
                self.workers.give(w);
                Err(self
                    .explain(w, e)
                    .context(format!("resume of actor {atespace}/{id} from {uri}")))
            }
        }
    }

    fn target(&self, w: usize, tpl: &TemplateRec, template: &str, id: &str) -> Target {
        Target {
            ateom_uid: self.workers.uid(w).to_owned(),
            namespace: tpl.namespace.clone(),
            template: template.to_owned(),
            actor_id: id.to_owned(),
        }
    }

    /// Suspends a running actor: waits out the front's requests to it,
    /// then checkpoints it to its own new prefix.
    pub async fn suspend(&self, atespace: &str, id: &str) -> Result<ActorInfo> {
        let (rec, in_flight, drained) = self
            .slot(atespace, id)
            .ok_or_else(|| Self::locked_err(atespace, id))?;
        let mut rec = rec.lock_owned().await;
        let Some(w) = rec.worker.filter(|_| rec.state.is_running()) else {
            bail!(
                "actor {atespace}/{id} is {}, not running: only a running actor can be suspended",
                rec.state
            );
        };
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let notified = drained.notified();
            if in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(until.into(), notified)
                .await
                .is_err()
            {
                bail!(
                    "actor {atespace}/{id} still had {} routed request(s) in flight after 30 s: not suspended",
                    in_flight.load(Ordering::Acquire)
                );
            }
        }
        let tpl = self.template(&rec.template).with_context(|| {
            format!("actor {atespace}/{id}'s template {} is gone", rec.template)
        })?;
        let n = rec.snapshots + 1;
        let uri = format!("{}{id}/s{n}/", tpl.golden_uri);
        let target = self.target(w, &tpl, &rec.template, id);
        rec.state = ActorState::Suspending;
        match self.checkpoint(w, &target, &tpl.spec, &uri).await {
            Ok(()) => {
                rec.state = ActorState::Suspended;
                rec.worker = None;
                rec.own_snapshot = Some(uri);
                rec.snapshots = n;
                self.workers.give(w);
                Ok(info_of(atespace, id, &rec, &self.workers))
            }
            Err(e) => {
                // ateom checkpoints before it deletes anything
                // (main.go:241-296), but runsc may have ended the sandbox.
                if self.sandbox_runs(&tpl.namespace, &rec.template, id) {
                    rec.state = ActorState::Running;
                } else {
                    rec.state =
                        ActorState::Unknown("its sandbox ended in a refused checkpoint".into());
                    rec.worker = None;
                    self.workers.give(w);
                }
                Err(e.context(format!("suspend of actor {atespace}/{id}")))
            }
        }
    }

    /// Deletes a suspended actor.
    pub async fn delete(&self, atespace: &str, id: &str) -> Result<()> {
        let (rec, _, _) = self
            .slot(atespace, id)
            .ok_or_else(|| Self::locked_err(atespace, id))?;
        let rec = rec.lock().await;
        if !rec.state.is_suspended() {
            bail!(
                "actor {atespace}/{id} is {}: suspend it before deleting it",
                rec.state
            );
        }
        drop(rec);
        self.actors
            .lock()
            .expect("actors lock")
            .remove(&(atespace.to_owned(), id.to_owned()));
        Ok(())
    }

    /// For the front: the actor's pod address, resuming it first when it
    /// is suspended, and a guard that holds off its suspend.
    pub async fn route(&self, atespace: &str, id: &str) -> Result<InFlight, RouteError> {
        let (rec, in_flight, drained) =
            self.slot(atespace, id)
                .ok_or_else(|| RouteError::NotFound {
                    atespace: atespace.to_owned(),
                    id: id.to_owned(),
                })?;
        let mut rec = rec.lock_owned().await;
        if !rec.state.is_running() {
            self.resume_locked(atespace, id, &mut rec)
                .await
                .map_err(|e| RouteError::Resume {
                    atespace: atespace.to_owned(),
                    id: id.to_owned(),
                    cause: format!("{e:#}"),
                })?;
        }
        let w = rec.worker.expect("a running actor has a worker");
        in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(InFlight {
            count: in_flight,
            drained,
            addr: self.workers.addr(w),
        })
    }

    /// `(atespace, id, template, worker)` of every actor that runs now.
    pub async fn running(&self) -> Vec<(String, String, String, usize)> {
        let slots: Vec<((String, String), Arc<AsyncMutex<ActorRec>>)> = self
            .actors
            .lock()
            .expect("actors lock")
            .iter()
            .map(|(k, s)| (k.clone(), s.rec.clone()))
            .collect();
        let mut out = Vec::new();
        for ((a, i), rec) in slots {
            let rec = rec.lock().await;
            if let (true, Some(w)) = (rec.state.is_running(), rec.worker) {
                out.push((a, i, rec.template.clone(), w));
            }
        }
        out
    }

    /// The actor's template and worker, if it runs.
    pub async fn placement(
        &self,
        atespace: &str,
        id: &str,
    ) -> Result<(TemplateRec, String, usize)> {
        let (rec, _, _) = self
            .slot(atespace, id)
            .ok_or_else(|| Self::locked_err(atespace, id))?;
        let rec = rec.lock().await;
        let tpl = self
            .template(&rec.template)
            .with_context(|| format!("template {} is gone", rec.template))?;
        match rec.worker.filter(|_| rec.state.is_running()) {
            Some(w) => Ok((tpl, rec.template.clone(), w)),
            None => bail!("actor {atespace}/{id} is {}, not running", rec.state),
        }
    }

    /// The actor's template (running or not).
    pub async fn template_of(&self, atespace: &str, id: &str) -> Result<(TemplateRec, String)> {
        let (rec, _, _) = self
            .slot(atespace, id)
            .ok_or_else(|| Self::locked_err(atespace, id))?;
        let name = rec.lock().await.template.clone();
        let tpl = self
            .template(&name)
            .with_context(|| format!("template {name} is gone"))?;
        Ok((tpl, name))
    }
}

fn info_of(atespace: &str, id: &str, rec: &ActorRec, workers: &Workers) -> ActorInfo {
    ActorInfo {
        atespace: atespace.to_owned(),
        id: id.to_owned(),
        state: rec.state.clone(),
        restored_from: rec.restored_from,
        restore_ms: rec.restore_ms,
        sandbox: rec.worker.map(|w| format!("worker {}", workers.uid(w))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_is_waited_for_and_the_wait_names_the_way_out() {
        let w = Arc::new(Workers::new(
            vec!["w0".into()],
            vec![Ipv4Addr::new(169, 254, 1, 2)],
        ));
        let first = w.take(Duration::from_millis(10), "a").await.unwrap();
        let err = w
            .take(Duration::from_millis(30), "b")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no free worker for b") && err.contains("--node-workers"),
            "{err}"
        );
        let w2 = w.clone();
        let waiter = tokio::spawn(async move { w2.take(Duration::from_secs(5), "c").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        w.give(first);
        assert_eq!(waiter.await.unwrap().unwrap(), first);
        assert_eq!(w.addr(0), "169.254.1.2:80".parse().unwrap());
    }
}
