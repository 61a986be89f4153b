//! `ate-refagent serve`: the agent process.
//!
//! Binds the control API and the router on loopback (port 0 unless given),
//! prints one JSON line on stdout (`ate_agent_api::StartupLine`: control
//! and router addresses, pid, instance, state dir, runsc version, orphans
//! removed, fault), and serves until
//! SIGTERM or SIGINT; then it kills and deletes every sandbox it started,
//! by container ID, and exits.
//!
//! **Invariant:** one agent per state dir (an exclusive `flock` on
//! `agent.lock`); a second one fails at once naming the holder's dir.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ate_agent_api::StartupLine;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::api::{self, ApiState};
use crate::engine::{Engine, EngineConfig};
use crate::fault::Fault;
use crate::router;
use crate::runsc::Runsc;

/// Options of `serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// State directory (created if missing).
    pub state_dir: PathBuf,
    /// Control API address.
    pub control_addr: SocketAddr,
    /// Router address.
    pub router_addr: SocketAddr,
    /// runsc driver settings.
    pub runsc: Runsc,
    /// Static binary exposed to sandboxes as the relay helper.
    pub helper_bin: PathBuf,
    /// The harness's checker, placed beside the relay (`None`: no checks).
    pub checker_bin: Option<PathBuf>,
    /// Golden `/healthz` deadline.
    pub golden_health_timeout: Duration,
    /// runsc debug logs per actor.
    pub runsc_debug: bool,
    /// Shut down (as on SIGTERM) when the parent process goes away, so a
    /// harness killed with SIGKILL does not leave its agent behind.
    pub exit_with_parent: bool,
    /// Break the identity contract on purpose (self-test only; `None`, the
    /// default, is the healthy agent).
    pub fault: Option<Fault>,
}

fn lock_state_dir(state_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let lock_path = state_dir.join("agent.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    rustix::fs::flock(
        lock.as_fd(),
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .with_context(|| {
        format!(
            "state dir {} is in use by another ate-refagent (lock {} held)",
            state_dir.display(),
            lock_path.display()
        )
    })?;
    Ok(lock)
}

/// `ate-refagent gc`: removes the sandboxes recorded in a state dir whose
/// agent is gone, then (with `remove_dir`) the state dir itself. Prints
/// one line per thing removed. Fails if an agent still holds the dir.
pub async fn gc(
    state_dir: &std::path::Path,
    runsc: &Runsc,
    remove_dir: bool,
) -> anyhow::Result<Vec<String>> {
    let lock = lock_state_dir(state_dir)?;
    let removed = crate::engine::remove_recorded_sandboxes(state_dir, runsc)
        .await
        .map_err(|e| anyhow::anyhow!(crate::engine::error_chain(&e)))?;
    for cid in &removed {
        println!(
            "removed sandbox {cid} (recorded in {})",
            state_dir.display()
        );
    }
    if remove_dir {
        std::fs::remove_dir_all(state_dir)
            .with_context(|| format!("cannot remove {}", state_dir.display()))?;
        println!("removed state dir {}", state_dir.display());
    }
    drop(lock);
    Ok(removed)
}

/// Runs the agent until a signal.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("cannot create state dir {}", opts.state_dir.display()))?;
    let state_dir = opts
        .state_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", opts.state_dir.display()))?;
    let lock = lock_state_dir(&state_dir)?;
    if let Some(f) = opts.fault {
        warn!(
            "FAULT MODE {f}: this agent breaks the identity contract on purpose ({})",
            f.description()
        );
    }

    let runsc_version = opts
        .runsc
        .version()
        .await
        .context("runsc is required to run actors")?;
    let cfg = EngineConfig {
        state_dir: state_dir.clone(),
        runtime: std::sync::Arc::new(opts.runsc.clone()),
        helper_bin: opts.helper_bin.clone(),
        checker_bin: opts.checker_bin.clone(),
        golden_health_timeout: opts.golden_health_timeout,
        runsc_debug: opts.runsc_debug,
        fault: opts.fault,
    };
    let (engine, orphans) = Engine::open(cfg)
        .await
        .map_err(|e| anyhow::anyhow!(crate::engine::error_chain(&e)))?;
    if !orphans.is_empty() {
        warn!(
            count = orphans.len(),
            ?orphans,
            "removed orphan sandboxes of an earlier agent on this state dir"
        );
    }

    let control = TcpListener::bind(opts.control_addr)
        .await
        .with_context(|| format!("cannot bind {}", opts.control_addr))?;
    let routerl = TcpListener::bind(opts.router_addr)
        .await
        .with_context(|| format!("cannot bind {}", opts.router_addr))?;
    let control_addr = control.local_addr()?;
    let router_addr = routerl.local_addr()?;

    let (detach_tx, mut detach_rx) = tokio::sync::mpsc::channel::<()>(1);
    let api_app = api::app(ApiState {
        engine: engine.clone(),
        runsc_version: runsc_version.clone(),
        state_dir: state_dir.clone(),
        detach: Some(detach_tx),
    });
    let router_app = router::app(engine.clone());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut rx1 = stop_rx.clone();
    let mut rx2 = stop_rx.clone();
    let api_task = tokio::spawn(async move {
        axum::serve(control, api_app)
            .with_graceful_shutdown(async move {
                let _ = rx1.wait_for(|s| *s).await;
            })
            .await
    });
    let router_task = tokio::spawn(async move {
        axum::serve(routerl, router_app)
            .with_graceful_shutdown(async move {
                let _ = rx2.wait_for(|s| *s).await;
            })
            .await
    });

    let line = StartupLine {
        control: control_addr,
        router: router_addr,
        pid: std::process::id(),
        instance: engine.instance().to_owned(),
        state_dir: state_dir.clone(),
        runsc_version,
        orphans_removed: orphans,
        fault: opts.fault,
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}",
            serde_json::to_string(&line).expect("the start-up line serialises")
        )?;
        out.flush()?;
    }
    info!(control = %control_addr, router = %router_addr, state_dir = %state_dir.display(), "ate-refagent serving");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let parent = rustix::process::getppid();
    let parent_gone = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if rustix::process::getppid() != parent {
                return;
            }
        }
    };
    let sig = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = parent_gone, if opts.exit_with_parent => "parent exited",
        _ = detach_rx.recv() => "detach",
    };
    let _ = stop_tx.send(true);
    if sig == "detach" {
        // Asked to leave everything as it is for inspection (`--keep`):
        // sandboxes stay, and so do their records, so `gc` finds them.
        let kept = engine.detach().await;
        warn!(count = kept.len(), ?kept, "detached: leaving sandboxes running for inspection; remove them with `ate-refagent gc --state-dir {}`", state_dir.display());
    } else {
        info!(
            signal = sig,
            "shutting down: removing every sandbox this agent started"
        );
        let removed = engine.shutdown().await;
        info!(count = removed.len(), ?removed, "removed sandboxes");
    }
    // Connections held open by clients must not keep the agent alive.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = api_task.await;
        let _ = router_task.await;
    })
    .await;
    drop(lock);
    Ok(())
}
