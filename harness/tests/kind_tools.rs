//! The kind backend end to end, with everything real except the cluster:
//! fake `kind`, `docker`, `ko`, `kubectl` and `kubectl ate` executables
//! (this test binary, linked under their names into a directory first on
//! the backend's search path; they record argv, env and cwd as JSON lines
//! and answer like the real tools), an in-process fake Kubernetes API
//! server speaking real HTTP and the WebSocket port-forward protocol, and a
//! real OCI registry (Debian's `docker-registry`) on loopback.
//!
//! A cluster cannot run on these machines; these are the strongest tests
//! that can. They assert the exact command vectors, `KO_CONFIG_PATH` and
//! the working directory of `ko apply`, the `-- --context=` shape, that
//! teardown uses `kubectl delete`, that no shell is ever spawned, that a
//! user's cluster is never deleted, and that the dry run plans exactly the
//! commands a real run makes.

#[path = "support/crd_schema.rs"]
mod crd_schema;
#[path = "support/fake_kube.rs"]
mod fake_kube;
#[path = "support/fake_tools.rs"]
mod fake_tools;
#[path = "support/registry.rs"]
mod registry;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ate_harness::backend::kind::plan::Step;
use ate_harness::backend::kind::{KindBackend, KindOptions};
use ate_harness::backend::{ActorState, Backend};
use ate_harness::run_id::RunId;
use fake_kube::{FakeKube, PodState, ProbeStandIn};
use fake_tools::{FakeTools, State, INSTALL_SCRIPT};
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::json;

const RUN: &str = "t0k1nd";
const NS: &str = "ate-conf-t0k1nd";
const CONTEXT: &str = "kind-kind";
/// The golden actor the scripted controller reports (a UUID, as
/// actortemplate_controller.go:83 makes).
const GOLDEN: &str = "5b1f0f7e-3c2a-4d6b-9a1e-2f4c8d9e0a11";
/// Where the scripted controller says the golden snapshot is
/// (`status.goldenSnapshot`, actortemplate_controller.go:159).
const GOLDEN_SNAPSHOT: &str =
    "gs://ate-snapshots/ate-conf-t0k1nd/ate-golden/5b1f0f7e-3c2a-4d6b-9a1e-2f4c8d9e0a11/1/";

fn main() -> std::process::ExitCode {
    // When run as `kubectl`, `ko`, ...: be that fake, and exit.
    fake_tools::dispatch();
    let args = Arguments::from_args();
    let tests = vec![
        trial("a_full_run_makes_exactly_these_calls", full_run),
        trial(
            "the_dry_run_plans_every_step_a_real_run_makes",
            dry_run_matches_real_run,
        ),
        trial(
            "placeholders_match_only_what_they_stand_for",
            placeholders_match_only_what_they_stand_for,
        ),
        trial(
            "a_missing_cluster_is_created_only_when_asked",
            missing_cluster,
        ),
        trial(
            "a_created_cluster_and_registry_are_removed_again",
            created_cluster,
        ),
        trial(
            "a_failed_preflight_after_creating_removes_the_cluster",
            failed_preflight_after_create,
        ),
        trial(
            "preflight_names_every_missing_piece",
            preflight_names_everything,
        ),
        trial(
            "gc_removes_what_a_crashed_run_made_and_leaves_a_live_one",
            gc_after_a_crash,
        ),
        trial(
            "an_interrupt_during_cluster_creation_removes_the_cluster",
            interrupted_creation,
        ),
        trial(
            "actor_refusals_carry_the_command_and_its_output",
            actor_refusals,
        ),
        trial(
            "artifacts_hold_logs_events_descriptions_and_actors",
            artifacts,
        ),
        trial(
            "teardown_of_an_actor_already_gone_is_not_a_failure",
            actor_already_gone,
        ),
        trial(
            "deploy_agent_pipes_kustomize_into_ko_resolve_into_kubectl_apply",
            deploy_agent,
        ),
        trial(
            "deploy_agent_fails_naming_both_digests_when_a_pod_runs_another",
            deploy_agent_digest_mismatch,
        ),
        trial(
            "install_runs_the_checkouts_script_as_an_argument_vector",
            install_runs_the_script,
        ),
        trial(
            "a_failed_install_shows_the_scripts_output",
            install_failure_shows_output,
        ),
    ];
    libtest_mimic::run(&args, tests).exit_code()
}

fn trial<F, Fut>(name: &'static str, f: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    Trial::test(name, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Failed::from(e.to_string()))?;
        rt.block_on(f());
        Ok(())
    })
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A fake cluster, fake tools, a substrate checkout and a kubeconfig.
struct World {
    kube: FakeKube,
    probe: ProbeStandIn,
    tools: FakeTools,
    root: PathBuf,
    kubeconfig: PathBuf,
    work: PathBuf,
    /// The runs' records (for gc).
    records: PathBuf,
    _tmp: tempfile::TempDir,
}

impl World {
    async fn new(mut state: State) -> World {
        // The controller made the golden actor in `ate-golden` and suspended
        // it once the snapshot was taken (actortemplate_controller.go:86-160).
        if !state.atespaces.iter().any(|a| a == "ate-golden") {
            state.atespaces.push("ate-golden".into());
        }
        state.actors.insert(
            format!("ate-golden/{GOLDEN}"),
            (format!("{NS}/probe"), "STATUS_SUSPENDED".into()),
        );
        let tmp = tempfile::tempdir().unwrap();
        let kube = FakeKube::start().await;
        kube.put_healthy_system();
        let probe = ProbeStandIn::start().await;
        kube.put_service(
            "ate-system",
            "atenet-router",
            Some(&[("app", "atenet-router")]),
            json!([{"name": "http", "port": 80, "targetPort": "http"}]),
        );
        kube.put_pod(
            "ate-system",
            "atenet-router-7f9c",
            &[("app", "atenet-router")],
            &[("http", 8080)],
            PodState::Ready,
        );
        kube.set_backend("ate-system", "atenet-router-7f9c", 8080, probe.addr());
        kube.script_actor_template(
            NS,
            "probe",
            vec![
                json!({"phase": ""}),
                json!({"phase": "ResumeGoldenActor", "goldenActorID": GOLDEN}),
                json!({"phase": "WaitGoldenActor", "goldenActorID": GOLDEN}),
                // actortemplate_controller.go:159-166
                json!({
                    "phase": "Ready",
                    "goldenActorID": GOLDEN,
                    "goldenSnapshot": GOLDEN_SNAPSHOT,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                                    "message": "Actor template is ready for use"}]
                }),
            ],
        );
        let kubeconfig = fake_kube::write_kubeconfig(tmp.path(), &kube.url(), CONTEXT);
        let root = tmp.path().join("substrate");
        std::fs::create_dir_all(root.join("manifests/ate-install/kind/atelet")).unwrap();
        std::fs::write(
            root.join("go.mod"),
            "module github.com/agent-substrate/substrate\n\ngo 1.24\n",
        )
        .unwrap();
        std::fs::write(
            root.join(".ko.yaml"),
            "defaultPlatforms:\n- linux/amd64\n- linux/arm64\n",
        )
        .unwrap();
        let work = tmp.path().join("work");
        let records = tmp.path().join("records");
        World {
            records,
            kube,
            probe,
            tools: FakeTools::new(&state),
            root,
            kubeconfig,
            work,
            _tmp: tmp,
        }
    }

    fn options(&self, registry: &str) -> KindOptions {
        KindOptions {
            run_id: RunId::parse(RUN).unwrap(),
            cluster: "kind".into(),
            create_cluster: false,
            install: false,
            deploy_agent: false,
            context: None,
            kubeconfig: Some(self.kubeconfig.clone()),
            substrate_root: Some(self.root.clone()),
            bucket_name: Some("ate-snapshots".into()),
            ko_docker_repo: Some(registry.into()),
            probe_bin: None,
            fixtures_dir: workspace().join("fixtures"),
            work_dir: self.work.clone(),
            search_path: Some(self.tools.search_path()),
            command_timeout: Duration::from_secs(60),
            preflight_deadline: Duration::from_secs(10),
            dry_run: false,
            state_dir: Some(self.records.clone()),
        }
    }

    /// The record files left in the records dir.
    fn records_left(&self) -> Vec<String> {
        std::fs::read_dir(&self.records)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// No shell was ever run (the fake shells shadow the real ones), and
    /// nothing was handed a `-c` script.
    fn assert_no_shell(&self) {
        for c in self.tools.calls() {
            assert!(
                !fake_tools::SHELLS.contains(&c.tool.as_str()),
                "a shell was spawned: {c:?}"
            );
            assert!(
                !c.args.iter().any(|a| a == "-c"),
                "a `-c` argument (shell string?) was passed: {c:?}"
            );
        }
    }
}

fn reused_cluster() -> State {
    State {
        clusters: vec!["kind".into()],
        ..State::default()
    }
}

/// The run a suite makes: start, deploy, atespace, one actor's life,
/// teardown.
async fn drive(backend: &KindBackend) -> String {
    let golden = backend.deploy_probe(Duration::from_secs(30)).await.unwrap();
    assert_eq!(golden.template, format!("{NS}/probe"));
    assert_eq!(golden.golden_actor_id, GOLDEN);
    // The location the controller reports, never one made up from the bucket.
    assert_eq!(golden.snapshot.as_deref(), Some(GOLDEN_SNAPSHOT));
    let a = format!("conf-{RUN}");
    backend.create_atespace(&a).await.unwrap();
    let id = format!("probe-alpha-{RUN}");
    let info = backend
        .create_actor(&a, &id, &golden.template)
        .await
        .unwrap();
    assert_eq!(info.state, ActorState::Suspended);
    let info = backend.resume(&a, &id).await.unwrap();
    assert_eq!(info.state, ActorState::Running);
    let body = backend
        .router()
        .get(&a, &id, "/whoami")
        .await
        .unwrap()
        .ok()
        .unwrap()
        .body_text();
    let info = backend.suspend(&a, &id).await.unwrap();
    assert_eq!(info.state, ActorState::Suspended);
    backend.delete_actor(&a, &id).await.unwrap();
    backend.delete_atespace(&a).await.unwrap();
    backend.teardown().await.unwrap();
    let _ = golden;
    body
}

async fn full_run() {
    let reg = registry::TestRegistry::start().await.unwrap();
    let w = World::new(reused_cluster()).await;
    let backend = KindBackend::start(w.options(&reg.addr.to_string()))
        .await
        .unwrap();
    let body = drive(&backend).await;

    // The request went through the port-forward with the actor's name.
    let host = format!("probe-alpha-{RUN}.conf-{RUN}.actors.resources.substrate.ate.dev");
    let seen = w.probe.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].host, host);
    assert_eq!(seen[0].path, "/whoami");
    assert!(body.contains(&host), "{body}");
    assert_eq!(
        w.kube.portforwards(),
        [("atenet-router-7f9c".to_string(), "8080".to_string())]
    );

    // Exactly these commands, in this order.
    let d = w.tools.dir.display().to_string();
    let rendered = w.work.join(format!("probe-{RUN}.yaml"));
    let kc = format!("--kubeconfig={}", w.kubeconfig.display());
    let ctx = format!("--context={CONTEXT}");
    let ate = |args: &str| format!("kubectl ate {args} {ctx} {kc}");
    assert_eq!(
        w.tools.call_lines(),
        [
            "kind get clusters".to_string(),
            "kind version".into(),
            "ko version".into(),
            "kubectl version --client -o json".into(),
            "kubectl ate --version".into(),
            format!("ko apply -f {} -- {ctx} {kc}", rendered.display()),
            ate(&format!("create atespace conf-{RUN}")),
            ate(&format!(
                "create actor probe-alpha-{RUN} --template {NS}/probe -a conf-{RUN}"
            )),
            ate(&format!(
                "get actor probe-alpha-{RUN} -a conf-{RUN} -o json"
            )),
            ate(&format!("resume actor probe-alpha-{RUN} -a conf-{RUN}")),
            ate(&format!(
                "get actor probe-alpha-{RUN} -a conf-{RUN} -o json"
            )),
            ate(&format!("suspend actor probe-alpha-{RUN} -a conf-{RUN}")),
            ate(&format!(
                "get actor probe-alpha-{RUN} -a conf-{RUN} -o json"
            )),
            ate(&format!("delete actor probe-alpha-{RUN} -a conf-{RUN}")),
            ate(&format!("delete atespace conf-{RUN}")),
            format!(
                "kubectl {ctx} {kc} delete --ignore-not-found --wait=true -f {}",
                rendered.display()
            ),
            // The golden actor outlives its template: removed by name.
            ate(&format!("get actor {GOLDEN} -a ate-golden -o json")),
            ate(&format!("delete actor {GOLDEN} -a ate-golden")),
        ],
        "fakes in {d}"
    );
    w.assert_no_shell();
    assert!(
        !w.tools
            .state()
            .actors
            .keys()
            .any(|k| k.starts_with("ate-golden/")),
        "the golden actor leaked: {:?}",
        w.tools.state().actors
    );

    // ko apply: in the checkout, with KO_CONFIG_PATH pointing there.
    let calls = w.tools.calls();
    let ko = calls
        .iter()
        .find(|c| c.tool == "ko" && c.args[0] == "apply")
        .unwrap();
    assert_eq!(ko.cwd, w.root);
    assert_eq!(
        ko.env.get("KO_CONFIG_PATH"),
        Some(&w.root.display().to_string())
    );
    assert_eq!(ko.env.get("KO_DOCKER_REPO"), Some(&reg.addr.to_string()));
    let sep = ko.args.iter().position(|a| a == "--").unwrap();
    assert_eq!(ko.args[sep + 1], ctx, "the context right after `--`");
    // Nothing else ran in the checkout or got KO_CONFIG_PATH from us.
    for c in calls
        .iter()
        .filter(|c| !(c.tool == "ko" && c.args[0] == "apply"))
    {
        assert_ne!(c.cwd, w.root, "{c:?}");
    }
    // Teardown deleted with kubectl, never `ko delete`.
    assert!(!calls
        .iter()
        .any(|c| c.tool == "ko" && c.args[0] == "delete"));
    assert_eq!(w.tools.state().deleted, [rendered.display().to_string()]);
    // The user's cluster was reused and left alone.
    assert!(!calls
        .iter()
        .any(|c| c.tool == "kind" && c.args[0] != "get" && c.args[0] != "version"));
    assert_eq!(w.tools.state().clusters, ["kind"]);
    // Everything it made is gone, so is its record.
    assert!(w.records_left().is_empty(), "{:?}", w.records_left());

    // The manifest ko applied: per-run names, the probe image by digest,
    // and that image is in the registry.
    let applied = w.tools.state().applied;
    let text = applied
        .get(&rendered.display().to_string())
        .expect("applied the rendered file");
    assert!(!text.contains("${"), "unrendered placeholder:\n{text}");
    assert!(text.contains(&format!("namespace: {NS}")), "{text}");
    assert!(text.contains("ateomImage: ko://github.com/agent-substrate/substrate/cmd/ateom-gvisor"));
    assert!(text.contains(&format!("location: gs://ate-snapshots/{NS}/")));
    let image = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .expect("image line");
    let (repo, digest) = image.split_once('@').expect("image by digest");
    assert_eq!(repo, format!("{}/ate-conformance-probe", reg.addr));
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!(
            "{}/v2/ate-conformance-probe/manifests/{digest}",
            reg.base_url()
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the pushed image is in the registry");

    // The report's fingerprint names the tools' versions and the image.
    let fp: std::collections::BTreeMap<String, String> =
        backend.fingerprint().into_iter().collect();
    for (k, v) in [
        ("kind_version", "kind v0.32.0 go1.25.0 linux/amd64"),
        ("ko_version", "0.18.0"),
        ("kubectl_version", "v1.33.1"),
        (
            "kubectl-ate_version",
            "kubectl-ate version v0.0.0-fake commit=fake built=unknown linux/amd64",
        ),
        ("probe_image", image),
        ("kube_context", CONTEXT),
        ("kind_cluster_created_by_run", "false"),
    ] {
        assert_eq!(fp.get(k).map(String::as_str), Some(v), "{k} in {fp:#?}");
    }

    // API calls: the preflight's, the golden wait's, the forward's.
    let paths: Vec<String> = w.kube.requests().iter().map(|r| r.path.clone()).collect();
    for want in [
        "/apis/apps/v1/namespaces/ate-system/deployments/ate-controller".to_string(),
        "/apis/apps/v1/namespaces/ate-system/daemonsets/atelet".into(),
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/actortemplates.ate.dev".into(),
        format!("/apis/ate.dev/v1alpha1/namespaces/{NS}/actortemplates/probe"),
        "/api/v1/namespaces/ate-system/services/atenet-router".into(),
    ] {
        assert!(paths.contains(&want), "no {want} in {paths:#?}");
    }
    reg.stop().await.unwrap();
}

/// Commands as `tool arg...` lines from a plan, program names reduced to
/// their file names.
fn planned_lines(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Command { argv, .. } => Some(
                std::iter::once(
                    Path::new(&argv[0])
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                )
                .chain(argv[1..].iter().cloned())
                .collect::<Vec<_>>()
                .join(" "),
            ),
            _ => None,
        })
        .collect()
}

/// A step as one comparable line: a command's argv (program by file
/// name), an API call's method and path, a registry request's method and
/// purpose (its upload URL is the registry's answer), a local step's
/// purpose.
fn step_shape(step: &Step) -> String {
    match step {
        Step::Command { .. } => format!("run {}", planned_lines(std::slice::from_ref(step))[0]),
        Step::Api(c) => format!("api {} {}", c.method, c.path),
        Step::Registry(c) => format!("oci {} ({})", c.method, c.purpose),
        Step::Local { purpose } => format!("local {purpose}"),
    }
}

/// Whether `real` is `dry` with each `<placeholder>` of `dry` standing for
/// some text: the literal pieces between placeholders appear in `real` in
/// order, the first at its start and the last at its end.
fn placeholders_match(dry: &str, real: &str) -> bool {
    let mut pieces = Vec::new();
    let mut rest = dry;
    while let Some(open) = rest.find('<') {
        match rest[open..].find('>') {
            Some(close) => {
                pieces.push(&rest[..open]);
                rest = &rest[open + close + 1..];
            }
            None => break,
        }
    }
    pieces.push(rest);
    if pieces.len() == 1 {
        return dry == real;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !real.starts_with(first) || !real[first.len()..].ends_with(last) {
        return false;
    }
    let mut at = first.len();
    let end = real.len() - last.len();
    for piece in &pieces[1..pieces.len() - 1] {
        match real[at..end].find(piece) {
            Some(i) => at += i + piece.len(),
            None => return false,
        }
    }
    true
}

async fn placeholders_match_only_what_they_stand_for() {
    assert!(placeholders_match("api GET /a/<x>/b", "api GET /a/pod-1/b"));
    assert!(placeholders_match(
        "local pack <p> into",
        "local pack /t/probe into"
    ));
    assert!(!placeholders_match(
        "api GET /a/<x>/b",
        "api GET /a/pod-1/c"
    ));
    assert!(!placeholders_match(
        "run kind get clusters",
        "run kind get nodes"
    ));
    assert!(!placeholders_match("oci PUT (<d>)", "oci POST (x)"));
}

async fn dry_run_matches_real_run() {
    let reg = registry::TestRegistry::start().await.unwrap();
    let w = World::new(reused_cluster()).await;
    let mut opts = w.options(&reg.addr.to_string());
    opts.dry_run = true;
    let dry = KindBackend::start(opts.clone()).await.unwrap();
    drive_dry(&dry).await;
    // A dry run runs nothing and calls no API.
    assert!(w.tools.calls().is_empty(), "{:?}", w.tools.call_lines());
    assert!(w.kube.requests().is_empty(), "{:?}", w.kube.requests());
    // The golden actor's ID is read at run time; the plan names the field.
    let planned: Vec<String> = planned_lines(&dry.plan().steps())
        .into_iter()
        .map(|l| l.replace("<status.goldenActorID>", GOLDEN))
        .collect();

    opts.dry_run = false;
    let real = KindBackend::start(opts).await.unwrap();
    drive(&real).await;
    assert_eq!(planned, w.tools.call_lines());
    // Not only the commands: every step the real run recorded (commands,
    // API calls, registry requests, local work), in order, is in the dry
    // run's plan, with the dry run's placeholders standing for what only
    // the real run knows. A step made by the real run and missing from the
    // dry run fails here.
    let (dry_steps, real_steps) = (dry.plan().steps(), real.plan().steps());
    let dry_shapes: Vec<String> = dry_steps.iter().map(step_shape).collect();
    let real_shapes: Vec<String> = real_steps.iter().map(step_shape).collect();
    assert_eq!(
        dry_shapes.len(),
        real_shapes.len(),
        "dry:\n{}\nreal:\n{}",
        dry_shapes.join("\n"),
        real_shapes.join("\n")
    );
    for (d, r) in dry_shapes.iter().zip(&real_shapes) {
        assert!(
            placeholders_match(d, r),
            "dry run step\n  {d}\nis not the real run's\n  {r}"
        );
    }
    for kind in [
        "api GET", "api WS", "oci HEAD", "oci POST", "oci PUT", "local",
    ] {
        assert!(
            real_shapes.iter().any(|s| s.starts_with(kind)),
            "the real run recorded no {kind} step"
        );
    }
    // The registry requests and API calls are planned too.
    let steps = dry.plan().steps();
    assert!(steps.iter().any(
        |s| matches!(s, Step::Registry(c) if c.method == "PUT" && c.path.contains("/manifests/"))
    ));
    assert!(steps
        .iter()
        .any(|s| matches!(s, Step::Api(c) if c.path.contains("/actortemplates/probe"))));
    assert!(steps
        .iter()
        .any(|s| matches!(s, Step::Api(c) if c.path.contains("/portforward"))));
    // And ko apply's environment and working directory are shown.
    let ko = steps
        .iter()
        .find_map(|s| match s {
            Step::Command { argv, env, cwd, .. } if argv[1] == "apply" => {
                Some((env.clone(), cwd.clone()))
            }
            _ => None,
        })
        .unwrap();
    assert!(ko
        .0
        .contains(&("KO_CONFIG_PATH".to_string(), w.root.display().to_string())));
    assert_eq!(ko.1.as_deref(), Some(w.root.as_path()));
    reg.stop().await.unwrap();
}

/// Deploys the probe, creates the run's atespace and an actor named
/// `<base>-<run>`, and resumes it; returns (atespace, actor).
async fn deploy_and_resume(backend: &KindBackend, base: &str) -> (String, String) {
    let golden = backend.deploy_probe(Duration::from_secs(30)).await.unwrap();
    let a = format!("conf-{RUN}");
    backend.create_atespace(&a).await.unwrap();
    let id = format!("{base}-{RUN}");
    backend
        .create_actor(&a, &id, &golden.template)
        .await
        .unwrap();
    backend.resume(&a, &id).await.unwrap();
    (a, id)
}

/// The dry-run counterpart of [`drive`].
async fn drive_dry(backend: &KindBackend) {
    let (a, id) = deploy_and_resume(backend, "probe-alpha").await;
    backend.suspend(&a, &id).await.unwrap();
    backend.delete_actor(&a, &id).await.unwrap();
    backend.delete_atespace(&a).await.unwrap();
    backend.teardown().await.unwrap();
}

async fn missing_cluster() {
    let w = World::new(State::default()).await;
    let err = KindBackend::start(w.options("127.0.0.1:1"))
        .await
        .err()
        .expect("no cluster, not asked to create one");
    let msg = format!("{err:#}");
    assert!(msg.contains("no kind cluster named \"kind\""), "{msg}");
    assert!(msg.contains("--create-cluster"), "{msg}");
    assert_eq!(w.tools.call_lines(), ["kind get clusters"]);
    w.assert_no_shell();
}

async fn created_cluster() {
    let w = World::new(State::default()).await;
    let mut opts = w.options("127.0.0.1:1");
    opts.create_cluster = true;
    let backend = KindBackend::start(opts).await.unwrap();
    let config = workspace().join("fixtures/kind/cluster.yaml");
    let kc = w.kubeconfig.display().to_string();
    let lines = w.tools.call_lines();
    assert_eq!(
        lines[..10],
        [
            "kind get clusters".to_string(),
            "docker inspect --format {{.State.Running}} kind-registry".into(),
            // hack/create-kind-cluster.sh:36-42
            "docker run -d --restart=always --label created-by=agent-substrate -p 127.0.0.1:5001:5000 -p [::1]:5001:5000 --network bridge --name kind-registry registry:3".into(),
            format!("kind create cluster --name kind --config {} --kubeconfig {kc} --wait 120s", config.display()),
            "docker network connect kind kind-registry".into(),
            "kind get nodes --name kind".into(),
            "docker exec kind-control-plane mkdir -p /etc/containerd/certs.d/localhost:5001".into(),
            "docker exec -i kind-control-plane cp /dev/stdin /etc/containerd/certs.d/localhost:5001/hosts.toml".into(),
            // hack/create-kind-cluster.sh:97
            "docker exec kind-control-plane sysctl net.ipv4.conf.all.proxy_arp=1".into(),
            // hack/create-kind-cluster.sh:128-138
            format!("kubectl --context={CONTEXT} --kubeconfig={kc} apply -f -"),
        ],
        "{lines:#?}"
    );
    let cm = w
        .tools
        .calls()
        .into_iter()
        .find(|c| c.args.iter().any(|a| a == "apply"))
        .unwrap();
    assert!(
        cm.stdin.contains("name: local-registry-hosting")
            && cm.stdin.contains("host: \"localhost:5001\""),
        "{}",
        cm.stdin
    );
    // The config has what upstream's install needs.
    let cfg = std::fs::read_to_string(&config).unwrap();
    for want in [
        "ClusterTrustBundle: true",
        "ClusterTrustBundleProjection: true",
        "PodCertificateRequest: true",
        "\"certificates.k8s.io/v1beta1\": \"true\"",
    ] {
        assert!(cfg.contains(want), "no {want} in {cfg}");
    }
    assert_eq!(
        cfg.matches("- role:").count(),
        1,
        "one control-plane node, as upstream: {cfg}"
    );
    let hosts = w
        .tools
        .calls()
        .into_iter()
        .find(|c| c.args.iter().any(|a| a.ends_with("hosts.toml")))
        .unwrap();
    assert_eq!(hosts.stdin, "[host.\"http://kind-registry:5000\"]\n");
    assert_eq!(w.tools.state().clusters, ["kind"]);
    backend.teardown().await.unwrap();
    let lines = w.tools.call_lines();
    assert_eq!(
        lines[lines.len() - 2..],
        [
            format!("kind delete cluster --name kind --kubeconfig {kc}"),
            "docker rm -f kind-registry".to_string(),
        ]
    );
    assert!(w.tools.state().clusters.is_empty());
    assert!(!w.tools.state().registry_running);
    // Teardown twice deletes nothing twice.
    backend.teardown().await.unwrap();
    assert_eq!(w.tools.call_lines().len(), lines.len());
    w.assert_no_shell();

    // A stopped registry container that was there before is someone
    // else's: started, used, and never removed.
    let w = World::new(State {
        registry_exists: true,
        ..State::default()
    })
    .await;
    let mut opts = w.options("127.0.0.1:1");
    opts.create_cluster = true;
    let backend = KindBackend::start(opts).await.unwrap();
    backend.teardown().await.unwrap();
    let lines = w.tools.call_lines();
    assert_eq!(lines[2], "docker start kind-registry", "{lines:#?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("docker run") || l.starts_with("docker rm")),
        "{lines:#?}"
    );
    assert!(w.tools.state().registry_exists);
    assert!(
        w.tools.state().clusters.is_empty(),
        "the cluster it created is gone"
    );
}

async fn failed_preflight_after_create() {
    let w = World::new(State::default()).await;
    // The new cluster has no Agent Substrate.
    w.kube
        .remove("/apis/apps/v1/namespaces/ate-system/deployments/ate-controller");
    let mut opts = w.options("127.0.0.1:1");
    opts.create_cluster = true;
    let err = KindBackend::start(opts)
        .await
        .err()
        .expect("preflight fails");
    let msg = format!("{err:#}");
    assert!(msg.contains("ate-controller"), "{msg}");
    let lines = w.tools.call_lines();
    let delete = format!(
        "kind delete cluster --name kind --kubeconfig {}",
        w.kubeconfig.display()
    );
    assert!(lines.contains(&delete), "{lines:#?}");
    assert!(
        lines.contains(&"docker rm -f kind-registry".to_string()),
        "{lines:#?}"
    );
    assert!(w.tools.state().clusters.is_empty());
}

async fn preflight_names_everything() {
    let w = World::new(reused_cluster()).await;
    std::fs::remove_file(w.tools.dir.join("ko")).unwrap();
    std::fs::remove_file(w.tools.dir.join("kubectl-ate")).unwrap();
    let closed = fake_kube::closed_port().await;
    let kubeconfig = fake_kube::write_kubeconfig(
        &w.work.parent().unwrap().join("kc2").tap_mkdir(),
        &format!("http://{closed}"),
        CONTEXT,
    );
    let mut opts = w.options("");
    // Only the fakes: a real `ko` elsewhere on this machine's PATH must not
    // stand in for the one removed.
    opts.search_path = Some(w.tools.dir.clone().into_os_string());
    opts.ko_docker_repo = None;
    opts.bucket_name = Some(String::new());
    opts.substrate_root = None;
    opts.kubeconfig = Some(kubeconfig);
    let start = std::time::Instant::now();
    let err = KindBackend::start(opts)
        .await
        .err()
        .expect("preflight fails");
    let msg = format!("{err:#}");
    for want in [
        "BUCKET_NAME: not set",
        "KO_DOCKER_REPO: not set",
        "ATE_SUBSTRATE_ROOT: not set",
        "ko: `ko` not found",
        "`kubectl-ate` not found",
        &format!("http://{closed}"),
        "not checked: the API server is unreachable",
    ] {
        assert!(msg.contains(want), "no {want:?} in:\n{msg}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    // The tools that are there were still checked, with versions.
    assert!(msg.contains("ok   kubectl:"), "{msg}");
    // A checkout without .ko.yaml is refused with the reason.
    let w = World::new(reused_cluster()).await;
    std::fs::remove_file(w.root.join(".ko.yaml")).unwrap();
    let err = KindBackend::start(w.options("127.0.0.1:1"))
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("has no .ko.yaml"), "{err:#}");
}

trait TapMkdir {
    fn tap_mkdir(self) -> PathBuf;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// The reused cluster with a running actor `conf-x/<id>` that this run
/// did not create.
fn with_running_actor(id: &str) -> State {
    let mut state = reused_cluster();
    state.atespaces = vec!["conf-x".into()];
    state.actors.insert(
        format!("conf-x/{id}"),
        (format!("{NS}/probe"), "STATUS_RUNNING".into()),
    );
    state
}

async fn actor_refusals() {
    let w = World::new(with_running_actor("busy")).await;
    let backend = KindBackend::start(w.options("127.0.0.1:1")).await.unwrap();
    let err = backend.delete_actor("conf-x", "busy").await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("delete actor conf-x/busy"), "{msg}");
    assert!(
        msg.contains("kubectl ate delete actor busy -a conf-x"),
        "{msg}"
    );
    // ateapi's text (delete_actor.go:41), as the plugin prints it.
    assert!(
        msg.contains("rpc error: code = FailedPrecondition desc = Actor busy is not suspended (status: STATUS_RUNNING)"),
        "{msg}"
    );
    let err = backend.get_actor("conf-x", "nobody").await.unwrap_err();
    // get_actor.go:34 wrapped by get_actors.go:57.
    assert!(
        format!("{err:#}").contains(
            "failed to get actor: rpc error: code = NotFound desc = Actor nobody not found"
        ),
        "{err:#}"
    );
    backend.teardown().await.unwrap();
}

async fn artifacts() {
    let mut state = with_running_actor("a1");
    state.pods.insert(
        "ate-system".into(),
        vec!["atelet-x1".into(), "ate-controller-0".into()],
    );
    state.pods.insert(NS.into(), vec!["probe-pool-w0".into()]);
    let w = World::new(state).await;
    let backend = KindBackend::start(w.options("127.0.0.1:1")).await.unwrap();
    let dir = w.work.join("artifacts");
    let files = backend
        .collect_artifacts(
            &[ate_harness::backend::ActorRef {
                atespace: "conf-x".into(),
                id: "a1".into(),
            }],
            &dir,
        )
        .await
        .unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&dir).unwrap().display().to_string())
        .collect();
    for want in [
        "ate-system/atelet-x1.log",
        "ate-system/ate-controller-0.log",
        "workers/probe-pool-w0.log",
        "events-ate-system.txt",
        &format!("events-{NS}.txt"),
        "describe-namespace.txt",
        "describe-actortemplate.txt",
        "describe-workerpool.txt",
        "actor-conf-x-a1.json",
        "kind-steps.txt",
    ] {
        assert!(names.iter().any(|n| n == want), "no {want} in {names:#?}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("ate-system/atelet-x1.log")).unwrap(),
        "log line of ate-system/pod/atelet-x1\n"
    );
    assert!(std::fs::read_to_string(dir.join("actor-conf-x-a1.json"))
        .unwrap()
        .contains("\"status\": \"STATUS_RUNNING\""));
    let steps = std::fs::read_to_string(dir.join("kind-steps.txt")).unwrap();
    assert!(
        steps.contains(r#""ate", "get", "actor", "a1", "-a", "conf-x", "-o", "json""#),
        "{steps}"
    );
    backend.teardown().await.unwrap();
    w.assert_no_shell();
}

/// What the suite's interrupt handler does: the backend was registered
/// before it made anything, `bring_up` is cut off mid-creation, and
/// `teardown` removes the half-made cluster and the registry.
async fn interrupted_creation() {
    let w = World::new(State {
        create_delay_ms: 60_000,
        ..State::default()
    })
    .await;
    let mut opts = w.options("127.0.0.1:1");
    opts.create_cluster = true;
    let backend = std::sync::Arc::new(KindBackend::new(opts));
    let up = tokio::spawn({
        let b = backend.clone();
        async move { b.bring_up().await }
    });
    fake_kube::wait_until(
        "kind create cluster has started",
        Duration::from_secs(20),
        || w.tools.state().clusters == ["kind"],
    )
    .await;
    // The interrupt: the setup task goes away (its command is killed by
    // its process group), then teardown runs.
    up.abort();
    assert!(up.await.unwrap_err().is_cancelled());
    backend.teardown().await.unwrap();
    let lines = w.tools.call_lines();
    let kc = w.kubeconfig.display();
    assert!(
        lines.contains(&format!(
            "kind delete cluster --name kind --kubeconfig {kc}"
        )),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"docker rm -f kind-registry".to_string()),
        "{lines:#?}"
    );
    assert!(w.tools.state().clusters.is_empty());
    assert!(!w.tools.state().registry_running);
    w.assert_no_shell();
}

/// A run dies without teardown (its process is gone: the backend is
/// dropped, its record lock freed, and its report directory cleared).
/// `gc` removes exactly what the record lists; a live run is left alone.
async fn gc_after_a_crash() {
    let reg = registry::TestRegistry::start().await.unwrap();
    let w = World::new(reused_cluster()).await;
    let opts = w.options(&reg.addr.to_string());
    let crashed = KindBackend::start(opts.clone()).await.unwrap();
    let (a, id) = deploy_and_resume(&crashed, "probe-crash").await;
    drop(crashed);
    std::fs::remove_dir_all(&w.work).unwrap();
    assert_eq!(w.records_left().len(), 2, "{:?}", w.records_left());

    // Another run, alive, with its own record.
    let mut live_opts = opts.clone();
    live_opts.run_id = RunId::parse("l1ve").unwrap();
    let live = KindBackend::start(live_opts).await.unwrap();
    live.create_atespace("conf-l1ve").await.unwrap();

    let before = w.tools.call_lines().len();
    let lines = ate_harness::backend::kind::gc_stale_runs(
        &w.records,
        Some(w.tools.search_path()),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l == "run l1ve: still running, left alone"),
        "{lines:#?}"
    );
    let removed = lines
        .iter()
        .find(|l| l.starts_with(&format!("run {RUN} ")))
        .unwrap();
    for want in [
        &format!("actor {a}/{id}"),
        &format!("atespace {a}"),
        &format!("golden actor ate-golden/{GOLDEN}"),
        &format!("namespace {NS}"),
    ] {
        assert!(removed.contains(want.as_str()), "{removed}");
    }
    let rendered = w.work.join(format!("probe-{RUN}.yaml"));
    let kc = format!("--kubeconfig={}", w.kubeconfig.display());
    let ctx = format!("--context={CONTEXT}");
    let ate = |args: &str| format!("kubectl ate {args} {ctx} {kc}");
    assert_eq!(
        w.tools.call_lines()[before..],
        [
            ate(&format!("get actor {id} -a {a} -o json")),
            ate(&format!("suspend actor {id} -a {a}")),
            ate(&format!("get actor {id} -a {a} -o json")),
            ate(&format!("delete actor {id} -a {a}")),
            ate(&format!("delete atespace {a}")),
            format!(
                "kubectl {ctx} {kc} delete --ignore-not-found --wait=true -f {}",
                rendered.display()
            ),
            ate(&format!("get actor {GOLDEN} -a ate-golden -o json")),
            ate(&format!("delete actor {GOLDEN} -a ate-golden")),
        ]
    );
    // The manifest came back from the record to be deleted.
    assert!(w
        .tools
        .state()
        .deleted
        .contains(&rendered.display().to_string()));
    assert!(w.tools.state().actors.is_empty());
    // ate-golden is the controller's (reserved, shared): never deleted.
    assert_eq!(w.tools.state().atespaces, ["ate-golden", "conf-l1ve"]);
    let mut left = w.records_left();
    left.sort();
    assert_eq!(left, ["l1ve.json", "l1ve.lock"]);

    // gc again: nothing more of the crashed run; the live one still alone.
    let lines = ate_harness::backend::kind::gc_stale_runs(
        &w.records,
        Some(w.tools.search_path()),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(lines, ["run l1ve: still running, left alone"]);
    live.teardown().await.unwrap();
    assert!(w.records_left().is_empty(), "{:?}", w.records_left());
    w.assert_no_shell();
    reg.stop().await.unwrap();
}

/// `--deploy-agent` against the fakes: the three stages really run, each
/// one's standard output is the next one's standard input, ko runs in the
/// checkout with its environment, and the fingerprint names the build.
async fn deploy_agent() {
    let w = World::new(State {
        git_status: vec![" M cmd/atelet/main.go".into()],
        ..reused_cluster()
    })
    .await;
    let mut opts = w.options("localhost:5001");
    opts.deploy_agent = true;
    let backend = KindBackend::start(opts).await.unwrap();
    let calls = w.tools.calls();
    let kc = format!("--kubeconfig={}", w.kubeconfig.display());
    let ctx = format!("--context={CONTEXT}");
    let lines = w.tools.call_lines();
    let root = w.root.display().to_string();
    let at = |l: &str| {
        lines
            .iter()
            .position(|x| x == l)
            .unwrap_or_else(|| panic!("no {l:?} in {lines:#?}"))
    };
    let order = [
        at(&format!("git -C {root} rev-parse HEAD")),
        at(&format!("git -C {root} status --porcelain")),
        at("kubectl kustomize manifests/ate-install/kind/atelet --load-restrictor LoadRestrictionsNone"),
        at("ko resolve -f -"),
        at(&format!("kubectl {ctx} {kc} apply -f -")),
        at(&format!("kubectl {ctx} {kc} rollout status daemonset/atelet -n ate-system --timeout=120s")),
        at(&format!("kubectl {ctx} {kc} get pods -n ate-system -l app=atelet -o json")),
        // The deploy comes before the preflight that checks the rollout.
        at("kind version"),
    ];
    assert!(
        order.windows(2).all(|p| p[0] < p[1]),
        "{order:?} in {lines:#?}"
    );
    let find = |tool: &str, first: &str| {
        calls
            .iter()
            .find(|c| c.tool == tool && c.args.iter().any(|a| a == first))
            .unwrap()
            .clone()
    };
    let kustomize = find("kubectl", "kustomize");
    assert_eq!(kustomize.cwd, w.root);
    let resolve = find("ko", "resolve");
    assert_eq!(resolve.cwd, w.root);
    assert_eq!(resolve.env.get("KO_CONFIG_PATH"), Some(&root));
    assert_eq!(
        resolve.env.get("KO_DOCKER_REPO").map(String::as_str),
        Some("localhost:5001")
    );
    assert!(resolve
        .env
        .get("KO_DEFAULTPLATFORMS")
        .is_some_and(|p| p.starts_with("linux/")));
    // Standard input really flowed: what kustomize printed went into ko,
    // what ko printed went into kubectl apply.
    assert!(
        resolve
            .stdin
            .contains("image: ko://github.com/agent-substrate/substrate/cmd/atelet"),
        "{}",
        resolve.stdin
    );
    let apply = calls
        .iter()
        .find(|c| {
            c.tool == "kubectl"
                && c.args.ends_with(&["apply".into(), "-f".into(), "-".into()])
                && c.stdin.contains("DaemonSet")
        })
        .unwrap();
    let built = format!(
        "localhost:5001/atelet-0123abcd@{}",
        fake_tools::FAKE_KO_DIGEST
    );
    assert!(
        apply.stdin.contains(&format!("image: {built}")),
        "{}",
        apply.stdin
    );
    assert!(!apply.stdin.contains("ko://"));
    w.assert_no_shell();
    let fp: std::collections::BTreeMap<String, String> =
        backend.fingerprint().into_iter().collect();
    assert_eq!(
        fp.get("substrate_commit").map(String::as_str),
        Some(fake_tools::FAKE_COMMIT)
    );
    assert_eq!(fp.get("substrate_dirty").map(String::as_str), Some("true"));
    assert_eq!(
        fp.get("atelet_digest").map(String::as_str),
        Some(fake_tools::FAKE_KO_DIGEST)
    );
    backend.teardown().await.unwrap();
}

/// A pod still running an older atelet fails the run, naming both digests.
async fn deploy_agent_digest_mismatch() {
    let stale = "sha256:9999999999999999999999999999999999999999999999999999999999999999";
    let w = World::new(State {
        atelet_running_digest: Some(stale.into()),
        ..reused_cluster()
    })
    .await;
    let mut opts = w.options("localhost:5001");
    opts.deploy_agent = true;
    let err = KindBackend::start(opts)
        .await
        .err()
        .expect("a stale atelet pod must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains(fake_tools::FAKE_KO_DIGEST), "{msg}");
    assert!(msg.contains(stale), "{msg}");
    assert!(msg.contains("pod atelet-x7k2p"), "{msg}");
    // It stopped there: no preflight, no probe.
    assert!(!w
        .tools
        .call_lines()
        .iter()
        .any(|l| l.starts_with("ko apply")));
}

/// An actor deleted behind the run's back: `get` answers ateapi's NotFound
/// (get_actor.go:34), and teardown treats it as gone rather than failing.
async fn actor_already_gone() {
    let w = World::new(reused_cluster()).await;
    let backend = KindBackend::start(w.options("127.0.0.1:1")).await.unwrap();
    let a = format!("conf-{RUN}");
    backend.create_atespace(&a).await.unwrap();
    backend
        .create_actor(&a, "ghost", &format!("{NS}/probe"))
        .await
        .unwrap();
    let mut st = w.tools.state();
    st.actors.remove(&format!("{a}/ghost"));
    w.tools.set_state(&st);
    backend.teardown().await.unwrap();
    let lines = w.tools.call_lines();
    assert!(
        !lines.iter().any(|l| l.contains("delete actor ghost")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("delete atespace {a}"))),
        "{lines:#?}"
    );
    assert!(w.records_left().is_empty(), "{:?}", w.records_left());
}

/// `--install` runs the checkout's `hack/install-ate-kind.sh
/// --deploy-ate-system` (upstream CI's install, `pr-workflow.yaml:88-91`)
/// as an argument vector: no shell, cwd the checkout, the context and
/// registry in its environment; before the preflight that checks its work.
async fn install_runs_the_script() {
    let w = World::new(reused_cluster()).await;
    let script = w.tools.link_install_script(&w.root);
    let mut opts = w.options("localhost:5001");
    opts.install = true;
    let backend = KindBackend::start(opts).await.unwrap();
    let calls = w.tools.calls();
    let installs: Vec<_> = calls.iter().filter(|c| c.tool == INSTALL_SCRIPT).collect();
    assert_eq!(installs.len(), 1, "{:#?}", w.tools.call_lines());
    let c = installs[0];
    assert_eq!(c.args, ["--deploy-ate-system"]);
    assert_eq!(c.cwd, w.root);
    let env = |k: &str| c.env.get(k).map(String::as_str);
    assert_eq!(env("KUBECTL_CONTEXT"), Some(CONTEXT));
    assert_eq!(env("KO_DOCKER_REPO"), Some("localhost:5001"));
    let kubeconfig = w.kubeconfig.display().to_string();
    assert_eq!(env("KUBECONFIG"), Some(kubeconfig.as_str()));
    assert!(w.tools.state().installed);
    w.assert_no_shell();
    // The plan names the script itself as the program.
    let planned = backend
        .plan()
        .steps()
        .into_iter()
        .find_map(|s| match s {
            Step::Command { argv, cwd, .. } if argv[0].ends_with(INSTALL_SCRIPT) => {
                Some((argv, cwd))
            }
            _ => None,
        })
        .expect("the install step");
    assert_eq!(
        planned.0,
        [
            script.display().to_string(),
            "--deploy-ate-system".to_owned()
        ]
    );
    assert_eq!(planned.1.as_deref(), Some(w.root.as_path()));
    // After the cluster is found, before the preflight.
    let lines = w.tools.call_lines();
    let at = |l: &str| {
        lines
            .iter()
            .position(|x| x == l)
            .unwrap_or_else(|| panic!("no {l:?} in {lines:#?}"))
    };
    let install = at(&format!("{INSTALL_SCRIPT} --deploy-ate-system"));
    assert!(
        at("kind get clusters") < install && install < at("kind version"),
        "{lines:#?}"
    );
    backend.teardown().await.unwrap();
}

/// A failing install stops the run before the preflight, and its error
/// carries the script's output (captured, its tail shown) and status.
async fn install_failure_shows_output() {
    let w = World::new(State {
        install_failure: Some(
            "deploying ate-system\nerror: timed out waiting for deployment/ate-controller\n".into(),
        ),
        ..reused_cluster()
    })
    .await;
    w.tools.link_install_script(&w.root);
    let mut opts = w.options("localhost:5001");
    opts.install = true;
    let err = KindBackend::start(opts)
        .await
        .err()
        .expect("the install fails");
    let msg = format!("{err:#}");
    for want in [
        "install Agent Substrate from the checkout",
        "hack/install-ate-kind.sh",
        "error: timed out waiting for deployment/ate-controller",
        "fake install-ate-kind.sh: the install failed",
    ] {
        assert!(msg.contains(want), "no {want:?} in:\n{msg}");
    }
    assert!(!w.tools.state().installed);
    let lines = w.tools.call_lines();
    assert!(
        !lines.iter().any(|l| l == "kind version"),
        "the preflight ran: {lines:#?}"
    );
    w.assert_no_shell();
}
