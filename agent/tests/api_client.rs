//! The one client against the real server: every body the agent sends is
//! parsed into the `ate-agent-api` type the client expects (views, the
//! start-up line, `/info`, `/sandboxes`, error bodies with their typed
//! kind), so server and client cannot drift. Nothing here reaches runsc
//! except `runsc --version` at start-up of the spawned agent.

mod support;

use std::time::Duration;

use ate_agent_api::client::{Agent, AgentClient, AgentOptions, ApiError, Method};
use ate_agent_api::{ErrorKind, Fault, Phase, TemplateSpec};
use ate_refagent::api::{self, ApiState};
use ate_refagent::engine::Engine;

/// An in-process agent whose runsc does not exist: a golden boot fails.
async fn serve() -> (AgentClient, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::in_process_config(
        dir.path().to_path_buf(),
        "/nonexistent/runsc-must-not-be-called".into(),
    );
    let (engine, _) = Engine::open(cfg).await.unwrap();
    let c = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = c.local_addr().unwrap();
    let state = ApiState {
        engine,
        runsc_version: "test".into(),
        state_dir: dir.path().to_path_buf(),
        detach: None,
    };
    tokio::spawn(async move { axum::serve(c, api::app(state)).await.unwrap() });
    (AgentClient::new(addr), dir)
}

fn kind_of<T: std::fmt::Debug>(r: Result<T, ApiError>) -> (u16, ErrorKind) {
    match r {
        Err(ApiError::Api { status, kind, .. }) => (status, kind),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn views_and_errors_parse_into_the_shared_types() {
    let (c, dir) = serve().await;
    c.health().await.unwrap();
    let info = c.info().await.unwrap();
    assert_eq!(info.pid, std::process::id());
    assert_eq!(info.state_dir, dir.path());
    assert_eq!(info.fault, None);
    assert_eq!(info.runsc_version, "test");

    assert!(c.templates().await.unwrap().is_empty());
    assert!(c.atespaces().await.unwrap().is_empty());
    assert!(c.sandboxes().await.unwrap().is_empty());

    // A template whose golden boot fails (no runsc): the view parses in
    // every phase, and the wait returns the Failed view with its reason.
    let spec = TemplateSpec::new("tpl", "/usr/bin/busybox");
    let created = c.create_template(&spec).await.unwrap();
    assert_eq!(created.spec.name, "tpl");
    assert_eq!(created.spec.args, ["/busybox"]);
    assert_eq!(created.status.golden, None);
    let settled = c
        .wait_template("tpl", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(settled.status.phase, Phase::Failed);
    assert!(
        settled
            .status
            .reason
            .as_deref()
            .unwrap()
            .contains("runsc-must-not-be-called"),
        "{settled:?}"
    );
    assert_eq!(settled.status.golden, None);
    assert_eq!(c.templates().await.unwrap(), [settled]);

    c.create_atespace("team-a").await.unwrap();
    assert_eq!(c.atespaces().await.unwrap(), ["team-a"]);
    assert!(c.actors("team-a").await.unwrap().is_empty());

    // Every error kind the client can see without runsc, typed.
    assert_eq!(
        kind_of(c.create_atespace("team-a").await),
        (409, ErrorKind::AlreadyExists)
    );
    assert_eq!(
        kind_of(c.create_atespace("Bad_Name").await),
        (400, ErrorKind::Invalid)
    );
    assert_eq!(
        kind_of(c.template("nope").await),
        (404, ErrorKind::NotFound)
    );
    assert_eq!(
        kind_of(c.actor("team-a", "ghost").await),
        (404, ErrorKind::NotFound)
    );
    assert_eq!(
        kind_of(
            c.create_actor("team-a", "5b1f0f7e-3c2a-4d6b-9a1e-2f4c8d9e0a11", "tpl")
                .await
        ),
        (409, ErrorKind::WrongState)
    );
    assert_eq!(
        kind_of(c.create_template(&spec).await),
        (409, ErrorKind::AlreadyExists)
    );
    assert_eq!(kind_of(c.detach().await), (409, ErrorKind::WrongState));

    // A body that is not JSON: `invalid`, as the raw answer shows.
    let raw = c
        .send_raw(Method::POST, "/atespaces", Some(b"{not json".to_vec()))
        .await
        .unwrap();
    assert_eq!(raw.status, 400);
    let body = raw.error_body().unwrap();
    assert_eq!(body.kind, ErrorKind::Invalid);
    assert_eq!(raw.status, body.kind.status());

    c.delete_template("tpl").await.unwrap();
    c.delete_atespace("team-a").await.unwrap();
    assert!(c.templates().await.unwrap().is_empty());
    assert!(c.atespaces().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_wait_that_runs_out_reports_the_last_status() {
    // A fake runsc that never answers: the golden boot stays in
    // ResumeGoldenActor past the deadline.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("runsc-that-hangs");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 3\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = support::in_process_config(dir.path().join("state"), fake.clone());
    let (engine, _) = Engine::open(cfg).await.unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = AgentClient::new(l.local_addr().unwrap());
    let state = ApiState {
        engine: engine.clone(),
        runsc_version: "test".into(),
        state_dir: dir.path().join("state"),
        detach: None,
    };
    tokio::spawn(async move { axum::serve(l, api::app(state)).await.unwrap() });
    let spec = TemplateSpec::new("slow", "/usr/bin/busybox");
    let err = c
        .deploy_template(&spec, Duration::from_millis(300))
        .await
        .unwrap_err();
    match &err {
        ApiError::Timeout { what, last, .. } => {
            assert!(what.contains("slow"), "{err}");
            assert!(last.contains("\"phase\""), "{err}");
            assert!(!last.contains("\"Ready\""), "{err}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    engine.shutdown().await;
}

/// The spawned binary: its start-up line parses into `StartupLine` and
/// agrees with `/info`; SIGTERM stops it cleanly. Needs runsc on PATH
/// (only `runsc --version` is run).
#[tokio::test]
async fn spawned_agent_line_agrees_with_info() {
    let Ok(runsc) = which_runsc() else {
        eprintln!("skipped: no runsc on PATH");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let opts = AgentOptions {
        agent_bin: env!("CARGO_BIN_EXE_ate-refagent").into(),
        state_dir: dir.path().join("state"),
        runsc,
        checker_bin: None,
        runsc_debug: false,
        fault: Some(Fault::TornWrite),
        log: dir.path().join("agent.log"),
    };
    let agent = Agent::spawn(&opts, Duration::from_secs(30)).await.unwrap();
    let line = agent.line().clone();
    assert_eq!(line.pid, agent.pid());
    assert!(line.control.ip().is_loopback() && line.router.ip().is_loopback());
    assert_eq!(line.fault, Some(Fault::TornWrite));
    assert!(line.orphans_removed.is_empty());
    let info = agent.client().info().await.unwrap();
    assert_eq!(info.instance, line.instance);
    assert_eq!(info.pid, line.pid);
    assert_eq!(info.state_dir, line.state_dir);
    assert_eq!(info.runsc_version, line.runsc_version);
    assert_eq!(info.fault, Some(Fault::TornWrite));
    let status = agent.stop(Duration::from_secs(30)).await.unwrap();
    assert!(status.success());
    let log = std::fs::read_to_string(&opts.log).unwrap();
    assert!(log.contains("FAULT MODE torn-write"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in the log: {log}");
}

/// An agent that exits before its line: the error quotes its log.
#[tokio::test]
async fn an_agent_that_dies_at_start_is_reported_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let opts = AgentOptions {
        agent_bin: env!("CARGO_BIN_EXE_ate-refagent").into(),
        state_dir: dir.path().join("state"),
        runsc: "/nonexistent/runsc".into(),
        checker_bin: None,
        runsc_debug: false,
        fault: None,
        log: dir.path().join("agent.log"),
    };
    let err = Agent::spawn(&opts, Duration::from_secs(30))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("exited before it was ready"), "{msg}");
    assert!(msg.contains("runsc is required"), "{msg}");
}

fn which_runsc() -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("runsc"))
        .find(|p| p.is_file())
        .ok_or(())
}
