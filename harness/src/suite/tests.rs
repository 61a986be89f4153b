//! The runner's verdicts for observations from inside a sandbox, with a
//! stub backend and a real loopback HTTP server standing in for a probe
//! that has only upstream's `/whoami` and `/healthz` (404 for anything
//! else). A backend without sandbox access falls back to the probe's
//! endpoint; a probe without it skips the trial at run time, and that skip
//! is handed to libtest-mimic as ignored with the reason, never passed (or
//! failed, under `--fail-on-skip`). With sandbox access the probe is never asked.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use libtest_mimic::{Completion, Failed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::lifecycle::{Setup, Shared};
use super::{trial, Needs, TrialDef};
use crate::backend::{
    ActorInfo, ActorRef, Backend, BackendError, Env, Evidence, Golden, IdentityDir, IdentityWatch,
    Result, SandboxAccess, TryWrite,
};
use crate::report::Verdict;
use crate::router::RouterClient;

/// A probe with only `/whoami` and `/healthz`: 404 for every other path.
/// Counts the requests it gets.
async fn minimal_probe() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "not found";
                let resp = format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
    (addr, hits)
}

/// Routes everything to the stub probe; with `checker`, offers sandbox
/// access whose `mounts` answers `checker`. Every other operation fails
/// loudly: the trials here must not need them.
struct Stub {
    router: SocketAddr,
    checker: Option<IdentityDir>,
}

fn not_here<T>(op: &str) -> Result<T> {
    Err(BackendError::Failed(anyhow!(
        "the stub backend does not {op}"
    )))
}

#[async_trait]
impl Backend for Stub {
    fn name(&self) -> &'static str {
        "stub"
    }
    fn fingerprint(&self) -> Vec<(String, String)> {
        vec![]
    }
    async fn deploy_probe(&self, _: Duration) -> Result<Golden> {
        not_here("deploy")
    }
    async fn create_atespace(&self, _: &str) -> Result<()> {
        not_here("create atespaces")
    }
    async fn delete_atespace(&self, _: &str) -> Result<()> {
        not_here("delete atespaces")
    }
    async fn create_actor(&self, _: &str, _: &str, _: &str) -> Result<ActorInfo> {
        not_here("create actors")
    }
    async fn resume(&self, _: &str, _: &str) -> Result<ActorInfo> {
        not_here("resume")
    }
    async fn suspend(&self, _: &str, _: &str) -> Result<ActorInfo> {
        not_here("suspend")
    }
    async fn delete_actor(&self, _: &str, _: &str) -> Result<()> {
        not_here("delete actors")
    }
    async fn get_actor(&self, _: &str, _: &str) -> Result<ActorInfo> {
        not_here("get actors")
    }
    fn router(&self) -> RouterClient {
        RouterClient::new(self.router)
    }
    async fn live_sandboxes(&self) -> Result<Vec<String>> {
        Ok(vec![])
    }
    fn sandbox(&self) -> Option<&dyn SandboxAccess> {
        self.checker.as_ref().map(|_| self as &dyn SandboxAccess)
    }
    async fn delete_template(&self, _: &str) -> Result<()> {
        not_here("delete templates")
    }
    async fn collect_artifacts(&self, _: &[ActorRef], _: &Path) -> Result<Vec<PathBuf>> {
        Ok(vec![])
    }
    async fn keep(&self) -> Result<(Vec<String>, String)> {
        not_here("keep")
    }
    async fn teardown(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl SandboxAccess for Stub {
    async fn mounts(&self, _: &str, _: &str) -> Result<IdentityDir> {
        Ok(self.checker.clone().expect("offered only with a checker"))
    }
    async fn try_write(&self, _: &str, _: &str) -> Result<TryWrite> {
        not_here("try-write")
    }
    async fn env(&self, _: &str, _: &str) -> Result<Env> {
        not_here("env")
    }
    async fn watch(&self, _: &str, _: &str, _: u64) -> Result<IdentityWatch> {
        not_here("watch")
    }
    async fn evidence(&self, _: &str, _: &str) -> Result<Evidence> {
        not_here("evidence")
    }
    async fn mark(&self, _: &str, _: &str, _: &str) -> Result<Evidence> {
        not_here("mark")
    }
    async fn golden_evidence(&self, _: &str) -> Result<Evidence> {
        not_here("golden evidence")
    }
}

/// What libtest-mimic is handed for a trial, i.e. how it counts it.
#[derive(Debug, PartialEq, Eq)]
enum Counted {
    Passed,
    Ignored(Option<String>),
    Failed,
}

fn counted(out: std::result::Result<Completion, Failed>) -> Counted {
    match out {
        Ok(Completion::Completed) => Counted::Passed,
        Ok(Completion::Ignored { reason }) => Counted::Ignored(reason),
        Err(_) => Counted::Failed,
    }
}

/// Runs one trial whose body observes `/run/ate` (`ctx.identity_dir`) the
/// way `Suite::main` hands it to libtest-mimic; returns what libtest is
/// given, our record and what the body saw.
fn run_identity_dir_trial(
    stub: Stub,
    fail_on_skip: bool,
) -> (Counted, crate::report::TrialRecord, Option<IdentityDir>) {
    let report = tempfile::tempdir().unwrap();
    let (mut opts, _) =
        crate::options::parse(vec!["suite".into()], |_| None, report.path().to_path_buf()).unwrap();
    opts.fail_on_skip = fail_on_skip;
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let shared = Arc::new(Shared::new("stub", opts));
    let setup = Setup {
        backend: Arc::new(stub),
        golden: Golden {
            template: "t".into(),
            golden_actor_id: "g".into(),
            snapshot: None,
            ready_after: Duration::ZERO,
        },
        atespace: "a".into(),
    };
    assert!(shared.setup.set(Ok(setup)).is_ok());
    let seen = Arc::new(std::sync::Mutex::new(None));
    let out = seen.clone();
    let def = TrialDef {
        name: "inside::identity_dir",
        covers: &["ID-7"],
        needs: Needs::default(),
        body: Arc::new(move |ctx| {
            let out = out.clone();
            Box::pin(async move {
                let d = ctx.identity_dir("actor-1").await?;
                *out.lock().unwrap() = Some(d);
                Ok(())
            })
        }),
    };
    let out = counted(rt.block_on(trial::run(shared.clone(), def)));
    let rec = shared
        .records
        .lock()
        .unwrap()
        .pop()
        .expect("the trial is recorded");
    let seen = seen.lock().unwrap().take();
    (out, rec, seen)
}

#[test]
fn a_probe_without_the_endpoint_is_a_runtime_skip_ignored_never_passed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (addr, hits) = rt.block_on(minimal_probe());
    let stub = || Stub {
        router: addr,
        checker: None,
    };

    let (c, rec, seen) = run_identity_dir_trial(stub(), false);
    assert_eq!(rec.verdict, Verdict::Skip, "{rec:?}");
    let reason = rec.message.as_deref().unwrap_or_default();
    assert_eq!(
        reason,
        "the probe has no GET /identity-dir endpoint (404), which this trial needs"
    );
    assert!(seen.is_none());
    assert_eq!(
        c,
        Counted::Ignored(Some(reason.to_owned())),
        "libtest is told ignored with the reason, never passed"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the probe was asked once");

    let (c, rec, _) = run_identity_dir_trial(stub(), true);
    assert_eq!(rec.verdict, Verdict::Skip);
    assert_eq!(c, Counted::Failed, "under --fail-on-skip the skip fails");
}

#[test]
fn with_sandbox_access_the_checker_observes_and_the_probe_is_never_asked() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (addr, hits) = rt.block_on(minimal_probe());
    let from_checker = IdentityDir {
        path: "/run/ate".into(),
        ..IdentityDir::default()
    };
    let stub = Stub {
        router: addr,
        checker: Some(from_checker.clone()),
    };
    let (c, rec, seen) = run_identity_dir_trial(stub, true);
    assert_eq!(rec.verdict, Verdict::Pass, "{rec:?}");
    assert_eq!(seen, Some(from_checker));
    assert_eq!(c, Counted::Passed);
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the probe was never asked");
    assert!(
        rec.phases
            .iter()
            .any(|p| p.name == "checker: mounts of actor-1"),
        "{:?}",
        rec.phases
    );
}
