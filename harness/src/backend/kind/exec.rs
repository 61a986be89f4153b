//! The kind backend's one executor: every command, Kubernetes API call,
//! registry request and local side effect goes through an [`Executor`],
//! which records it as a [`Step`] in the run's [`Plan`] before it is made.
//!
//! Two implementations of one seam (youki's `syscall/` has a real and a
//! recording one): [`Executor::Real`] records the step and makes it;
//! [`Executor::Recording`] records the same step and returns the stand-in
//! answer the caller gives, so the code after it runs on unchanged and the
//! dry run shows the whole sequence the code makes. Each call site
//! documents its stand-in (a command's output, a placeholder digest, a
//! placeholder golden actor ...).
//!
//! **Invariants.** The only `match` on the two is in this file; nothing else
//! in the backend asks which one it has. A step is recorded before its
//! effect starts, in both. A recording executor never runs a command,
//! opens a connection or writes a file: it never polls the future of the
//! real effect (Rust futures do nothing until polled) and never calls the
//! closure that would build one.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use futures_util::future::BoxFuture;

use super::kube::{self, KubeTarget};
use super::plan::{ApiCall, Plan, Step};

/// The real executor's state: the plan and, once connected, the API
/// client.
#[derive(Clone, Default)]
pub struct Real {
    plan: Plan,
    client: Arc<OnceLock<::kube::Client>>,
}

/// The recording executor's state: only the plan.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    plan: Plan,
}

/// Records every step; the real one also makes it (see the module doc).
#[derive(Clone)]
pub enum Executor {
    /// Records and performs.
    Real(Real),
    /// Records and answers with the caller's stand-in (`--dry-run`).
    Recording(Recording),
}

/// An API call was asked of a real executor that has no client yet.
#[derive(Debug, thiserror::Error)]
#[error("the kind backend has no API client (the preflight did not connect)")]
pub struct NotConnected;

impl Executor {
    /// A real executor, not connected to any cluster yet.
    pub fn real() -> Executor {
        Executor::Real(Real::default())
    }

    /// A real executor talking to the cluster through `client`.
    pub fn real_with_client(client: ::kube::Client) -> Executor {
        let real = Real::default();
        let _ = real.client.set(client);
        Executor::Real(real)
    }

    /// The recording executor of a dry run.
    pub fn recording() -> Executor {
        Executor::Recording(Recording::default())
    }

    /// The steps recorded so far.
    pub fn plan(&self) -> &Plan {
        match self {
            Executor::Real(r) => &r.plan,
            Executor::Recording(r) => &r.plan,
        }
    }

    /// Records `step`, then awaits `real` (real) or returns `stand_in()`
    /// (recording). The one primitive everything else is made of.
    ///
    /// The returned future is boxed, with `real` inside it: effects'
    /// futures are large, and a caller's future would otherwise hold every
    /// one it awaits (the whole bring-up overflowed a 2 MiB test thread).
    pub fn perform<'a, T: Send + 'a>(
        &'a self,
        step: Step,
        real: impl Future<Output = T> + Send + 'a,
        stand_in: impl FnOnce() -> T + Send + 'a,
    ) -> BoxFuture<'a, T> {
        let real = Box::pin(real);
        Box::pin(async move {
            self.plan().push(step);
            match self {
                Executor::Real(_) => real.await,
                Executor::Recording(_) => stand_in(),
            }
        })
    }

    /// Like [`perform`](Executor::perform), for an effect that needs the
    /// API client: `real` is called with it only by a real executor, which
    /// fails with [`NotConnected`] when it has none.
    pub fn with_client<'a, T, Fut>(
        &'a self,
        step: Step,
        real: impl FnOnce(::kube::Client) -> Fut + Send + 'a,
        stand_in: impl FnOnce() -> T + Send + 'a,
    ) -> BoxFuture<'a, Result<T, NotConnected>>
    where
        T: Send + 'a,
        Fut: Future<Output = T> + Send + 'a,
    {
        Box::pin(async move {
            self.plan().push(step);
            match self {
                Executor::Real(r) => {
                    let client = r.client.get().cloned().ok_or(NotConnected)?;
                    Ok(Box::pin(real(client)).await)
                }
                Executor::Recording(_) => Ok(stand_in()),
            }
        })
    }

    /// A value a real run must have, e.g. an option the user must set: a
    /// real executor passes `value` through (its error too); a recording
    /// one answers the error with `stand_in()`, a placeholder the plan
    /// shows (no step: nothing is made).
    pub fn or_stand_in<T, E>(
        &self,
        value: Result<T, E>,
        stand_in: impl FnOnce() -> T,
    ) -> Result<T, E> {
        match self {
            Executor::Real(_) => value,
            Executor::Recording(_) => Ok(value.unwrap_or_else(|_| stand_in())),
        }
    }

    /// Connects kube-rs with `target`'s kubeconfig and context (a local
    /// step: it reads the kubeconfig and builds the client, no API call
    /// yet). The recording one connects nothing.
    pub async fn connect(&self, target: &KubeTarget) -> anyhow::Result<()> {
        let step = Step::local(format!(
            "connect kube-rs with kubeconfig {} and context {}",
            target
                .kubeconfig
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(default: $KUBECONFIG or ~/.kube/config)".into()),
            target.context.as_deref().unwrap_or("(the current context)")
        ));
        self.plan().push(step);
        match self {
            Executor::Real(r) => {
                if r.client.get().is_none() {
                    let client = Box::pin(kube::connect(target)).await?;
                    let _ = r.client.set(client);
                }
                Ok(())
            }
            Executor::Recording(_) => Ok(()),
        }
    }

    /// Runs `cmd`, its standard output as text; a recording executor
    /// answers `stand_in` (documented at each call).
    pub fn run<'a>(
        &'a self,
        purpose: &'a str,
        cmd: ate_cmd::Cmd,
        stand_in: &str,
    ) -> BoxFuture<'a, anyhow::Result<String>> {
        let stand_in = stand_in.to_owned();
        self.run_or(purpose, cmd, move || Ok(stand_in))
    }

    /// [`run`](Executor::run) with a stand-in that may be a failure (e.g.
    /// `docker inspect` of a container the dry run assumes absent).
    pub fn run_or<'a>(
        &'a self,
        purpose: &'a str,
        cmd: ate_cmd::Cmd,
        stand_in: impl FnOnce() -> anyhow::Result<String> + Send + 'a,
    ) -> BoxFuture<'a, anyhow::Result<String>> {
        let step = Step::command(purpose, &cmd);
        let real = async move {
            let out = cmd.run().await.with_context(|| purpose.to_owned())?;
            Ok(out.stdout_str().into_owned())
        };
        self.perform(step, real, stand_in)
    }

    /// Runs `pipeline`, one step per stage (with its purpose), and returns
    /// each stage's standard output; a recording executor answers
    /// `stand_in()` (one output per stage).
    pub fn pipeline<'a>(
        &'a self,
        purposes: &[&str],
        pipeline: ate_cmd::Pipeline,
        stand_in: impl FnOnce() -> Vec<String> + Send + 'a,
    ) -> BoxFuture<'a, Result<Vec<String>, ate_cmd::PipelineError>> {
        for (stage, purpose) in pipeline.stages().iter().zip(purposes) {
            self.plan().push(Step::command(*purpose, stage));
        }
        let real = Box::pin(async move {
            let outs = pipeline.run().await?;
            Ok(outs.iter().map(|o| o.stdout_str().into_owned()).collect())
        });
        Box::pin(async move {
            match self {
                Executor::Real(_) => real.await,
                Executor::Recording(_) => Ok(stand_in()),
            }
        })
    }

    /// Local work with an effect (build, write a file), as a local step.
    pub fn local<'a, T: Send + 'a>(
        &'a self,
        purpose: impl Into<String>,
        real: impl Future<Output = T> + Send + 'a,
        stand_in: impl FnOnce() -> T + Send + 'a,
    ) -> BoxFuture<'a, T> {
        self.perform(Step::local(purpose), real, stand_in)
    }

    /// One Kubernetes API call made with kube-rs (`real` gets the client).
    pub fn api<'a, T, Fut>(
        &'a self,
        call: ApiCall,
        real: impl FnOnce(::kube::Client) -> Fut + Send + 'a,
        stand_in: impl FnOnce() -> T + Send + 'a,
    ) -> BoxFuture<'a, Result<T, NotConnected>>
    where
        T: Send + 'a,
        Fut: Future<Output = T> + Send + 'a,
    {
        self.with_client(Step::Api(call), real, stand_in)
    }

    /// One request to the OCI registry.
    pub fn registry<'a, T: Send + 'a>(
        &'a self,
        call: ApiCall,
        real: impl Future<Output = T> + Send + 'a,
        stand_in: impl FnOnce() -> T + Send + 'a,
    ) -> BoxFuture<'a, T> {
        self.perform(Step::Registry(call), real, stand_in)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn calls() -> (Arc<AtomicUsize>, impl Fn() -> usize) {
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        (n, move || m.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn both_record_the_same_step_and_only_the_real_one_makes_it() {
        for (exec, made) in [(Executor::real(), 1), (Executor::recording(), 0)] {
            let (n, count) = calls();
            let answer = exec
                .local(
                    "write a file",
                    async {
                        n.fetch_add(1, Ordering::SeqCst);
                        "real"
                    },
                    || "stand-in",
                )
                .await;
            assert_eq!(count(), made);
            assert_eq!(answer, if made == 1 { "real" } else { "stand-in" });
            assert_eq!(exec.plan().steps(), vec![Step::local("write a file")]);
        }
    }

    #[tokio::test]
    async fn a_recording_executor_runs_no_command() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("made");
        let cmd = ate_cmd::Cmd::new("touch").arg(&marker);
        let out = Executor::recording()
            .run("touch a file", cmd, "assumed output")
            .await
            .unwrap();
        assert_eq!(out, "assumed output");
        assert!(!marker.exists(), "the recording executor ran the command");
        let cmd = ate_cmd::Cmd::new("touch").arg(&marker);
        Executor::real().run("touch a file", cmd, "").await.unwrap();
        assert!(marker.exists(), "the real executor did not run the command");
    }

    #[tokio::test]
    async fn an_unconnected_real_executor_refuses_api_calls_but_records_them() {
        let exec = Executor::real();
        let call = ApiCall::new("GET", "/api/v1/namespaces", "list");
        let r = exec
            .api(call.clone(), |_c| async { "answer" }, || "stand-in")
            .await;
        assert!(r.is_err());
        assert_eq!(exec.plan().steps(), vec![Step::Api(call)]);
    }

    #[test]
    fn or_stand_in_keeps_a_real_runs_error() {
        let missing: Result<&str, &str> = Err("ATE_SUBSTRATE_ROOT unset");
        assert_eq!(Executor::real().or_stand_in(missing, || "<x>"), missing);
        assert_eq!(
            Executor::recording().or_stand_in(missing, || "<x>"),
            Ok("<x>")
        );
        assert_eq!(
            Executor::recording().or_stand_in(Ok::<_, ()>("given"), || "<x>"),
            Ok("given")
        );
    }
}
