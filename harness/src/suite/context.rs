//! What a trial body gets: the backend, the golden, the router, names of
//! its own, timed phases, deferred cleanups, and violations of contract
//! statements as structured records.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::info;

use super::lifecycle::Setup;
use crate::backend::{ActorRef, Backend, Golden, HostAccess};
use crate::report::PhaseTime;
use crate::router::{Recorder, RouterClient};
use crate::run_id::RunId;

/// A cleanup registered by a trial.
pub(crate) type Cleanup = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// A trial found a contract statement broken. Rendered as
/// `ID-4: <message>` (several statements: `ID-6/ID-7: ...`); the trial's
/// record carries the statements, and the self-test reads them there.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", statements.join("/"))]
pub struct Violation {
    /// The statements broken (`ID-4`, ...).
    pub statements: Vec<String>,
    /// What was seen, with everything a person needs.
    pub message: String,
}

/// Returned (as an error) by a trial that cannot run here: recorded as
/// *skipped* with the reason, shown by libtest as ignored, never passed.
#[derive(Debug, thiserror::Error)]
#[error("skipped: {0}")]
pub struct Skip(pub String);

/// What a trial body gets.
#[derive(Clone)]
pub struct Ctx {
    pub(crate) setup: Setup,
    pub(crate) run_id: RunId,
    pub(crate) trial: &'static str,
    pub(crate) started: Instant,
    pub(crate) phases: Arc<Mutex<Vec<PhaseTime>>>,
    pub(crate) log: Arc<Mutex<String>>,
    pub(crate) cleanups: Arc<Mutex<Vec<(String, Cleanup)>>>,
    pub(crate) actors: Arc<Mutex<Vec<ActorRef>>>,
    pub(crate) violated: Arc<Mutex<Vec<String>>>,
    pub(crate) exchanges: Recorder,
}

impl Ctx {
    pub(crate) fn new(setup: Setup, run_id: RunId, trial: &'static str) -> Ctx {
        Ctx {
            setup,
            run_id,
            trial,
            started: Instant::now(),
            phases: Default::default(),
            log: Default::default(),
            cleanups: Default::default(),
            actors: Default::default(),
            violated: Default::default(),
            exchanges: Default::default(),
        }
    }

    /// The backend under test.
    pub fn backend(&self) -> &dyn Backend {
        self.setup.backend.as_ref()
    }

    /// The backend's host access. Trials declared with
    /// [`super::Needs::host`] run only where it exists.
    pub fn host(&self) -> anyhow::Result<&dyn HostAccess> {
        self.setup
            .backend
            .host()
            .ok_or_else(|| Skip(super::trial::no_host(self.setup.backend.name())).into())
    }

    /// The probe template's golden snapshot.
    pub fn golden(&self) -> &Golden {
        &self.setup.golden
    }

    /// The atespace this run's actors live in.
    pub fn atespace(&self) -> &str {
        &self.setup.atespace
    }

    /// A router client; its exchanges are kept for the trial's artifacts.
    pub fn router(&self) -> RouterClient {
        self.setup
            .backend
            .router()
            .with_recorder(self.exchanges.clone())
    }

    /// `<base>-<run id>`: a name no other run uses.
    pub fn unique(&self, base: &str) -> String {
        self.run_id.unique(base)
    }

    /// Adds a line to the trial's log (JUnit system-out).
    pub fn note(&self, line: impl AsRef<str>) {
        let t = self.started.elapsed().as_secs_f64() * 1000.0;
        self.log
            .lock()
            .unwrap()
            .push_str(&format!("[{t:>9.1} ms] {}\n", line.as_ref()));
    }

    /// Runs `fut` as a named phase: timed, logged, kept for the report.
    pub async fn phase<T>(&self, name: impl Into<String>, fut: impl Future<Output = T>) -> T {
        let name = name.into();
        let start = Instant::now();
        let out = fut.await;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        info!(trial = self.trial, phase = %name, ms = format!("{ms:.1}"), "phase done");
        self.note(format!("{name}: {ms:.1} ms"));
        self.phases.lock().unwrap().push(PhaseTime { name, ms });
        out
    }

    /// Registers a cleanup; cleanups run last-in-first-out when the trial
    /// ends, however it ends (unless `--keep` keeps a failed trial's).
    pub fn defer(
        &self,
        what: impl Into<String>,
        f: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.cleanups
            .lock()
            .unwrap()
            .push((what.into(), Box::pin(f)));
    }

    /// A [`Skip`] error: return it to mark the trial skipped with `reason`.
    pub fn skip(&self, reason: impl Into<String>) -> anyhow::Error {
        Skip(reason.into()).into()
    }

    /// A [`Violation`] of `statement`, recorded for the trial's record:
    /// return it to fail the trial.
    pub fn violation(&self, statement: &str, message: impl Into<String>) -> anyhow::Error {
        self.violations(&[statement], message)
    }

    /// A [`Violation`] of several statements at once.
    pub fn violations(&self, statements: &[&str], message: impl Into<String>) -> anyhow::Error {
        let mut v = self.violated.lock().unwrap();
        for s in statements {
            if !v.iter().any(|x| x == s) {
                v.push((*s).to_owned());
            }
        }
        Violation {
            statements: statements.iter().map(|s| (*s).to_owned()).collect(),
            message: message.into(),
        }
        .into()
    }

    /// `Err(violation)` unless `ok`; the message is built only on failure.
    pub fn ensure(
        &self,
        ok: bool,
        statement: &str,
        message: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if ok {
            Ok(())
        } else {
            Err(self.violation(statement, message()))
        }
    }

    /// Wraps `err` in a violation of `statement` (the cause is kept):
    /// e.g. an own-identity failure after a suspend/resume cycle (ID-11).
    pub fn violation_context(
        &self,
        err: anyhow::Error,
        statement: &str,
        message: impl Into<String>,
    ) -> anyhow::Error {
        let v = self.violation(statement, message);
        let v = v
            .downcast::<Violation>()
            .expect("violation() makes a Violation");
        err.context(v)
    }

    /// Creates an actor of the probe template named `<base>-<run>` and
    /// registers its removal (suspend if running, then delete).
    pub async fn new_actor(&self, base: &str) -> anyhow::Result<String> {
        let id = self.unique(base);
        let template = self.golden().template.clone();
        self.phase(
            format!("create {id}"),
            self.backend().create_actor(self.atespace(), &id, &template),
        )
        .await?;
        self.actors.lock().unwrap().push(ActorRef {
            atespace: self.atespace().to_owned(),
            id: id.clone(),
        });
        let backend = self.setup.backend.clone();
        let (a, i) = (self.atespace().to_owned(), id.clone());
        self.defer(format!("remove actor {a}/{i}"), async move {
            let info = backend.get_actor(&a, &i).await?;
            if !info.state.is_suspended() {
                backend.suspend(&a, &i).await?;
            }
            Ok(backend.delete_actor(&a, &i).await?)
        });
        Ok(id)
    }

    /// `method path` on the probe of actor `id`, parsed as JSON. An endpoint
    /// the probe does not have (the actor answers 404 on anything but the
    /// upstream `/whoami` and `/healthz`) skips the trial with that reason:
    /// another probe may stand in for ours (DESIGN.md "The probe is
    /// replaceable"). The router's own 404 (no such actor) is a failure.
    pub async fn probe_json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        id: &str,
        path: &str,
    ) -> anyhow::Result<T> {
        let host = crate::router::actor_host(id, self.atespace());
        let resp = self
            .router()
            .send_with_host(method.clone(), Some(&host), path)
            .await?;
        if resp.status == 404
            && !matches!(path, "/whoami" | "/healthz")
            && self.backend().router_refusal(&resp).is_none()
        {
            return Err(self.skip(format!(
                "the probe has no {method} {path} endpoint (404), which this trial needs"
            )));
        }
        resp.ok()?.json()
    }
}
