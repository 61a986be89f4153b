//! The engine's unit tests: container IDs, and the state machine on the
//! recording runtime (no root, no runsc).

use super::container_id;

#[test]
fn container_ids_are_never_prefixes_of_each_other() {
    let ids: Vec<String> = (1..=1000).map(|n| container_id("0123abcd", n)).collect();
    assert_eq!(ids[3], "ate-0123abcd-00000004");
    for a in &ids {
        for b in &ids {
            assert!(
                a == b || !b.starts_with(a.as_str()),
                "{a} is a prefix of {b}"
            );
        }
    }
}

mod state_machine {
    //! The state machine on the recording runtime: nothing runs, every
    //! runtime call is recorded with whether the journal held its
    //! container at that moment.

    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::store::Persisted;
    use super::super::{
        ActorState, ContainerRole, Engine, EngineConfig, EngineError, GoldenPaths, Phase,
        SnapshotSource, TemplateSpec, TemplateStatus, TemplateView,
    };
    use crate::runtime::recording::{Op, Recording};

    const ATESPACE: &str = "space";
    const TEMPLATE: &str = "probe";

    struct Fixture {
        _dir: tempfile::TempDir,
        engine: Arc<Engine>,
        rt: Arc<Recording>,
    }

    /// A small executable file standing in for a static binary.
    fn fake_binary(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, b"not a real program").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn config(state_dir: &Path, rt: &Arc<Recording>, helper: &Path) -> EngineConfig {
        EngineConfig {
            state_dir: state_dir.to_path_buf(),
            runtime: rt.clone(),
            helper_bin: helper.to_path_buf(),
            checker_bin: None,
            golden_health_timeout: Duration::from_millis(200),
            runsc_debug: false,
            fault: None,
        }
    }

    /// An engine whose state dir holds a Ready template (as a previous
    /// agent left it: its golden image dir and image binary in place),
    /// and an empty atespace.
    async fn with_ready_template() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let tdir = state.join("templates").join(TEMPLATE);
        std::fs::create_dir_all(tdir.join("snapshot")).unwrap();
        fake_binary(&tdir.join("image-bin"));
        let helper = dir.path().join("helper-bin");
        fake_binary(&helper);
        let mut spec = TemplateSpec::new(TEMPLATE, tdir.join("image-bin"));
        spec.args = vec!["/probe".into()];
        let p = Persisted {
            templates: vec![TemplateView {
                spec,
                status: TemplateStatus {
                    phase: Phase::Ready,
                    golden_actor_id: Some("golden".into()),
                    reason: None,
                    golden: Some(GoldenPaths {
                        bundle_dir: tdir.join("golden/bundle"),
                        pause_bundle_dir: tdir.join("golden/pause/bundle"),
                        pause_bin: state.join("helper/ate-refagent"),
                        image_dir: tdir.join("snapshot"),
                        image_bin: tdir.join("image-bin"),
                    }),
                    timings_ms: BTreeMap::new(),
                    golden_evidence: None,
                },
            }],
            atespaces: BTreeMap::from([(ATESPACE.to_owned(), Vec::new())]),
        };
        std::fs::write(state.join("state.json"), serde_json::to_vec(&p).unwrap()).unwrap();
        let rt = Arc::new(Recording::new(&state.join("sandboxes")));
        let (engine, orphans) = Engine::open(config(&state, &rt, &helper)).await.unwrap();
        assert!(orphans.is_empty());
        Fixture {
            _dir: dir,
            engine,
            rt,
        }
    }

    fn assert_wrong_state(e: EngineError, op: &str, state: ActorState) {
        match e {
            EngineError::WrongState {
                op: got, state: s, ..
            } => {
                assert_eq!(got, op);
                assert_eq!(s, state.to_string());
            }
            other => panic!("expected a wrong-state refusal of {op}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn resume_of_a_running_actor_is_refused_and_restores_nothing() {
        let f = with_ready_template().await;
        f.engine.create_actor(ATESPACE, "a", TEMPLATE).unwrap();
        let v = f.engine.resume(ATESPACE, "a").await.unwrap();
        assert_eq!(v.state, ActorState::Running);
        let e = f.engine.resume(ATESPACE, "a").await.unwrap_err();
        assert_wrong_state(e, "resume", ActorState::Running);
        // One restore: of the pause, then the app, with the same image.
        let restores = f.rt.calls_of(Op::Restore);
        assert_eq!(restores.len(), 2, "{restores:?}");
        // The router's path takes a running actor as it is.
        let v = f.engine.resume_on_demand(ATESPACE, "a").await.unwrap();
        assert_eq!(v.state, ActorState::Running);
        assert_eq!(f.rt.calls_of(Op::Restore), restores);
        let ids: Vec<String> = v.containers.iter().map(|c| c.id.clone()).collect();
        assert_eq!(f.rt.listed(), ids);
    }

    #[tokio::test]
    async fn suspend_of_a_suspended_actor_is_refused() {
        let f = with_ready_template().await;
        f.engine.create_actor(ATESPACE, "a", TEMPLATE).unwrap();
        let e = f.engine.suspend(ATESPACE, "a").await.unwrap_err();
        assert_wrong_state(e, "suspend", ActorState::Suspended);
        f.engine.resume(ATESPACE, "a").await.unwrap();
        let v = f.engine.suspend(ATESPACE, "a").await.unwrap();
        assert_eq!(v.state, ActorState::Suspended);
        let e = f.engine.suspend(ATESPACE, "a").await.unwrap_err();
        assert_wrong_state(e, "suspend", ActorState::Suspended);
        assert_eq!(f.rt.calls_of(Op::Checkpoint).len(), 1);
    }

    #[tokio::test]
    async fn a_failed_checkpoint_keeps_the_actor_running_and_a_later_suspend_works() {
        let f = with_ready_template().await;
        f.engine.create_actor(ATESPACE, "a", TEMPLATE).unwrap();
        let running = f.engine.resume(ATESPACE, "a").await.unwrap();
        let cid = running.sandbox.clone().unwrap();
        let mut both: Vec<String> = running.containers.iter().map(|c| c.id.clone()).collect();
        both.sort();
        let identity = running.dirs.identity.join("actor-id");
        f.rt.fail_next(Op::Checkpoint);
        let e = f.engine.suspend(ATESPACE, "a").await.unwrap_err();
        assert!(matches!(e, EngineError::Runtime { .. }), "{e:?}");
        let v = f.engine.get_actor(ATESPACE, "a").unwrap();
        assert_eq!(v.state, ActorState::Running);
        assert_eq!(v.sandbox.as_deref(), Some(cid.as_str()));
        assert_eq!(v.snapshot, SnapshotSource::Golden, "no snapshot was made");
        // Nothing was removed or reset: the container is still recorded
        // and listed, the identity still in place.
        assert!(f.rt.calls_of(Op::Remove).is_empty());
        assert_eq!(f.engine.recorded_sandboxes(), both);
        assert_eq!(f.rt.listed(), both);
        assert_eq!(std::fs::read(&identity).unwrap(), b"a");
        // The next suspend checkpoints the same container and succeeds.
        let v = f.engine.suspend(ATESPACE, "a").await.unwrap();
        assert_eq!(v.state, ActorState::Suspended);
        let ck = f.rt.calls_of(Op::Checkpoint);
        assert_eq!(ck.len(), 2);
        assert!(ck[0].failed && !ck[1].failed);
        assert_eq!(
            ck[1].cid, cid,
            "the sandbox is checkpointed through its pause"
        );
        assert!(matches!(v.snapshot, SnapshotSource::Own(_)));
        // ID-10: the identity dir is empty until the next resume.
        assert!(!identity.exists());
    }

    #[tokio::test]
    async fn delete_of_a_running_actor_is_refused() {
        let f = with_ready_template().await;
        let v = f.engine.create_actor(ATESPACE, "a", TEMPLATE).unwrap();
        f.engine.resume(ATESPACE, "a").await.unwrap();
        let e = f.engine.delete_actor(ATESPACE, "a").await.unwrap_err();
        assert_wrong_state(e, "delete", ActorState::Running);
        assert!(f.engine.get_actor(ATESPACE, "a").is_ok());
        f.engine.suspend(ATESPACE, "a").await.unwrap();
        f.engine.delete_actor(ATESPACE, "a").await.unwrap();
        assert!(matches!(
            f.engine.get_actor(ATESPACE, "a").unwrap_err(),
            EngineError::NotFound { kind: "actor", .. }
        ));
        assert!(!v.dirs.root.exists(), "the actor's directories are gone");
    }

    #[tokio::test]
    async fn rewrite_of_a_suspended_actor_is_refused() {
        let f = with_ready_template().await;
        f.engine.create_actor(ATESPACE, "a", TEMPLATE).unwrap();
        let e = f
            .engine
            .rewrite_identity(ATESPACE, "a", vec!["x".into()], 10, Some(1))
            .await
            .unwrap_err();
        assert_wrong_state(e, "rewrite the identity of", ActorState::Suspended);
    }

    #[tokio::test]
    async fn every_container_is_journaled_before_it_starts_and_removed_by_id() {
        let f = with_ready_template().await;
        for id in ["a", "b"] {
            f.engine.create_actor(ATESPACE, id, TEMPLATE).unwrap();
            f.engine.resume(ATESPACE, id).await.unwrap();
        }
        f.engine.suspend(ATESPACE, "a").await.unwrap();
        f.engine.resume(ATESPACE, "a").await.unwrap();
        // A restore that fails: recorded first, removed by its ID after.
        f.engine.create_actor(ATESPACE, "c", TEMPLATE).unwrap();
        f.rt.fail_next(Op::Restore);
        let e = f.engine.resume(ATESPACE, "c").await.unwrap_err();
        assert!(matches!(e, EngineError::Runtime { .. }), "{e:?}");
        assert_eq!(
            f.engine.get_actor(ATESPACE, "c").unwrap().state,
            ActorState::Suspended
        );
        let removed = f.engine.shutdown().await;

        let calls = f.rt.calls();
        let starts: Vec<_> = calls.iter().filter(|c| c.op == Op::Restore).collect();
        // Three resumes of pause and app each, then c's pause restore,
        // which failed: its app was never restored.
        assert_eq!(starts.len(), 7, "{starts:?}");
        assert!(starts[6].failed && starts[..6].iter().all(|c| !c.failed));
        for c in &starts {
            assert!(c.journaled, "{} restored before it was journaled", c.cid);
        }
        // Each sandbox: the pause restored first, then the app, same image.
        for pair in starts[..6].chunks(2) {
            assert!(
                pair[0].bundle.as_ref().unwrap().ends_with("pause/bundle"),
                "{pair:?}"
            );
            assert!(
                !pair[1].bundle.as_ref().unwrap().ends_with("pause/bundle"),
                "{pair:?}"
            );
            assert_eq!(pair[0].image, pair[1].image);
        }
        // Every container started was removed, by its own ID, and its
        // record only after that; a sandbox's app before its pause.
        let removal = |cid: &str| {
            calls
                .iter()
                .position(|r| r.op == Op::Remove && r.cid == cid && r.journaled)
                .unwrap_or_else(|| panic!("{cid} was not removed while still journaled"))
        };
        for pair in starts[..6].chunks(2) {
            assert!(removal(&pair[1].cid) < removal(&pair[0].cid), "{pair:?}");
        }
        removal(&starts[6].cid);
        assert!(f.rt.listed().is_empty(), "left: {:?}", f.rt.listed());
        assert!(f.engine.recorded_sandboxes().is_empty());
        assert_eq!(
            removed.len(),
            4,
            "the two running actors' containers: {removed:?}"
        );
    }

    #[tokio::test]
    async fn a_golden_boot_is_journaled_before_run_and_removed_when_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let bin = dir.path().join("probe");
        fake_binary(&bin);
        let rt = Arc::new(Recording::new(&state.join("sandboxes")));
        let (engine, _) = Engine::open(config(&state, &rt, &bin)).await.unwrap();
        engine
            .create_template(TemplateSpec::new(TEMPLATE, &bin))
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let view = loop {
            let v = engine.template(TEMPLATE).unwrap();
            if v.status.phase == Phase::Failed || std::time::Instant::now() > deadline {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The recording runtime has no relay, so /healthz never answers.
        assert_eq!(view.status.phase, Phase::Failed, "{view:?}");
        let reason = view.status.reason.unwrap_or_default();
        assert!(reason.contains("not healthy"), "{reason}");
        let calls = rt.calls();
        let created: Vec<_> = calls.iter().filter(|c| c.op == Op::Create).collect();
        assert_eq!(created.len(), 2, "pause and app: {calls:?}");
        for c in &created {
            assert!(
                c.journaled,
                "golden container {} created before its record",
                c.cid
            );
        }
        let started: Vec<&str> = calls
            .iter()
            .filter(|c| c.op == Op::Start)
            .map(|c| c.cid.as_str())
            .collect();
        assert_eq!(started, [created[0].cid.as_str(), created[1].cid.as_str()]);
        let removed: Vec<&str> = calls
            .iter()
            .filter(|c| c.op == Op::Remove)
            .map(|c| c.cid.as_str())
            .collect();
        assert_eq!(
            removed,
            [created[1].cid.as_str(), created[0].cid.as_str()],
            "the unhealthy golden's app, then its pause"
        );
        assert!(rt.calls_of(Op::Checkpoint).is_empty());
        assert!(engine.recorded_sandboxes().is_empty());
        assert!(rt.listed().is_empty());
    }

    /// The `config.json` of a bundle dir.
    fn oci_config(bundle: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap()
    }

    /// Mounts of `cfg` at `/run/ate` or under it.
    fn identity_mounts(cfg: &serde_json::Value) -> Vec<serde_json::Value> {
        cfg["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| {
                let d = m["destination"].as_str().unwrap_or("");
                d == "/run/ate" || d.starts_with("/run/ate/")
            })
            .cloned()
            .collect()
    }

    #[tokio::test]
    async fn the_pause_container_gets_its_own_rootfs_and_no_identity() {
        let f = with_ready_template().await;
        f.engine.create_actor(ATESPACE, "a", TEMPLATE).unwrap();
        let v = f.engine.resume(ATESPACE, "a").await.unwrap();
        let [pause, app] = &v.containers[..] else {
            panic!("{:?}", v.containers)
        };
        assert_eq!(
            (pause.role, app.role),
            (ContainerRole::Pause, ContainerRole::App)
        );
        assert_eq!(v.sandbox.as_deref(), Some(pause.id.as_str()));
        let (pc, ac) = (oci_config(&pause.bundle), oci_config(&app.bundle));
        assert!(identity_mounts(&pc).is_empty(), "{pc}");
        assert_eq!(pc["root"]["path"], pause.rootfs.to_str().unwrap());
        assert!(!pause.rootfs.join("run").exists());
        assert!(pause.rootfs.join("pause").is_file());
        assert_eq!(
            pc["process"]["args"],
            serde_json::json!(["/pause", "pause"])
        );
        assert_eq!(
            pc["annotations"]["io.kubernetes.cri.container-type"],
            "sandbox"
        );
        // The app container is in the pause's sandbox, with the identity.
        assert_eq!(
            ac["annotations"]["io.kubernetes.cri.sandbox-id"],
            pause.id.as_str()
        );
        let m = identity_mounts(&ac);
        assert_eq!(m.len(), 1, "{ac}");
        assert_eq!(m[0]["source"], v.dirs.identity.to_str().unwrap());
        assert!(m[0]["options"].as_array().unwrap().contains(&"ro".into()));
        // A request goes through a relay into the app container.
        let req = hyper::Request::get("/whoami")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let e = f.engine.forward(ATESPACE, "a", req).await.unwrap_err();
        assert!(matches!(e, EngineError::Relay(_)), "{e:?}");
        let execs: Vec<String> = f.rt.calls_of(Op::Exec).into_iter().map(|c| c.cid).collect();
        assert_eq!(execs, std::slice::from_ref(&app.id));
    }

    /// An engine on a state dir holding a Ready template, in `fault` mode.
    async fn with_ready_template_in(fault: Option<crate::fault::Fault>) -> Fixture {
        let f = with_ready_template().await;
        let state = f.engine.cfg.state_dir.clone();
        let helper = f.engine.cfg.helper_bin.clone();
        let rt = f.rt.clone();
        drop(f.engine);
        let mut cfg = config(&state, &rt, &helper);
        cfg.fault = fault;
        let (engine, _) = Engine::open(cfg).await.unwrap();
        Fixture {
            _dir: f._dir,
            engine,
            rt,
        }
    }

    #[tokio::test]
    async fn only_identity_on_pause_puts_the_identity_on_the_pause_container() {
        use crate::fault::Fault;
        for fault in std::iter::once(None).chain(Fault::ALL.into_iter().map(Some)) {
            let f = with_ready_template_in(fault).await;
            f.engine.create_actor(ATESPACE, "a", TEMPLATE).unwrap();
            let v = f.engine.resume(ATESPACE, "a").await.unwrap();
            let pause = &v.containers[0];
            let cfg = oci_config(&pause.bundle);
            let mounted = !identity_mounts(&cfg).is_empty();
            let mount_point = pause.rootfs.join("run/ate").exists();
            let on_pause = fault == Some(Fault::IdentityOnPause);
            assert_eq!(mounted, on_pause, "{fault:?}: {cfg}");
            assert_eq!(mount_point, on_pause, "{fault:?}");
            if on_pause {
                assert_eq!(
                    identity_mounts(&cfg)[0]["source"],
                    v.dirs.identity.to_str().unwrap()
                );
            }
        }
    }
}
