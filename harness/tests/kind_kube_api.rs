//! The kind backend's Kubernetes API use (client, preflight, golden wait,
//! router port-forward) against an in-process fake API server over real
//! HTTP and WebSocket; no cluster.

#[path = "support/crd_schema.rs"]
mod crd_schema;
#[path = "support/fake_kube.rs"]
mod fake_kube;

use std::future::Future;
use std::time::Duration;

use ate_harness::backend::kind::exec::Executor;
use ate_harness::backend::kind::kube::{
    connect, preflight, preflight_check_names, preflight_cluster, wait_golden, wait_golden_with,
    GoldenWaitError, KubeTarget, API_CHECK, CHECKED_AT_RUN_TIME, NOT_CHECKED_UNREACHABLE,
    STAND_IN_GOLDEN_ACTOR_ID,
};
use ate_harness::backend::kind::plan::{ApiCall, Step};
use ate_harness::backend::kind::portforward::{
    pick_target, ForwardError, RouterForward, ROUTER_NAMESPACE, ROUTER_PORT, ROUTER_SERVICE,
};
use fake_kube::{closed_port, wait_until, write_kubeconfig, FakeKube, PodState, ProbeStandIn};
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::{json, Value};
use tempfile::TempDir;

/// A bound on every step a test waits for; generous for a loaded 2-core
/// machine, short enough that a hang fails the test.
const STEP: Duration = Duration::from_secs(30);

const PROBE_HOST: &str = "probe-alpha.conf-x.actors.resources.substrate.ate.dev";
const ROUTER_SELECTOR: &[(&str, &str)] = &[("app", "atenet-router")];

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?}: {what}"),
    }
}

/// A fake API server and a client for it (context `kind-kind`).
async fn fake_and_client() -> (FakeKube, ::kube::Client, TempDir) {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), &fake.url(), "kind-kind");
    let client = connect(&KubeTarget {
        kubeconfig: Some(kubeconfig),
        context: Some("kind-kind".into()),
    })
    .await
    .expect("connect to the fake");
    (fake, client, dir)
}

// ---------------------------------------------------------------------------
// pick_target: pure
// ---------------------------------------------------------------------------

fn svc(selector: Option<&[(&str, &str)]>, ports: Value) -> Service {
    serde_json::from_value(fake_kube::service(
        ROUTER_NAMESPACE,
        ROUTER_SERVICE,
        selector,
        ports,
    ))
    .unwrap()
}

fn pod(name: &str, ports: &[(&str, i32)], state: PodState) -> Pod {
    serde_json::from_value(fake_kube::pod(
        ROUTER_NAMESPACE,
        name,
        ROUTER_SELECTOR,
        ports,
        state,
    ))
    .unwrap()
}

#[test]
fn pick_target_numeric_target_port_is_used_as_is() {
    let s = svc(
        Some(ROUTER_SELECTOR),
        json!([{"port": 80, "targetPort": 8080}]),
    );
    let pods = [pod("a", &[], PodState::Ready)];
    let (p, port) = pick_target(&s, 80, &pods).unwrap();
    assert_eq!((p.as_str(), port), ("a", 8080));
}

#[test]
fn pick_target_absent_target_port_means_the_service_port() {
    let s = svc(Some(ROUTER_SELECTOR), json!([{"port": 80}]));
    let pods = [pod("a", &[], PodState::Ready)];
    assert_eq!(pick_target(&s, 80, &pods).unwrap(), ("a".to_string(), 80));
}

#[test]
fn pick_target_named_target_port_resolves_via_container_ports() {
    let s = svc(
        Some(ROUTER_SELECTOR),
        json!([{"name": "metrics", "port": 9090, "targetPort": 9090},
               {"name": "http", "port": 80, "targetPort": "http"}]),
    );
    let pods = [
        pod("not-ready", &[("http", 8080)], PodState::NotReady),
        pod(
            "atenet-router-abc",
            &[("metrics", 9090), ("http", 8080)],
            PodState::Ready,
        ),
    ];
    assert_eq!(
        pick_target(&s, 80, &pods).unwrap(),
        ("atenet-router-abc".to_string(), 8080)
    );
}

#[test]
fn pick_target_missing_named_port_names_it_and_the_pods_ports() {
    let s = svc(
        Some(ROUTER_SELECTOR),
        json!([{"port": 80, "targetPort": "web"}]),
    );
    let pods = [pod(
        "atenet-router-abc",
        &[("http", 8080), ("metrics", 9090)],
        PodState::Ready,
    )];
    let err = pick_target(&s, 80, &pods).unwrap_err();
    assert!(
        matches!(err, ForwardError::NamedPortNotFound { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    for want in [
        "\"web\"",
        "atenet-router-abc",
        "http=8080",
        "metrics=9090",
        "ate-system/atenet-router",
        "port 80",
    ] {
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    }
}

#[test]
fn pick_target_zero_target_port_is_an_error() {
    let s = svc(
        Some(ROUTER_SELECTOR),
        json!([{"port": 80, "targetPort": 0}]),
    );
    let pods = [pod("atenet-router-abc", &[], PodState::Ready)];
    let err = pick_target(&s, 80, &pods).unwrap_err();
    assert!(
        matches!(err, ForwardError::ZeroTargetPort { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("targetPort 0"), "{err}");
}

#[test]
fn pick_target_out_of_range_target_port_is_an_error() {
    let s = svc(
        Some(ROUTER_SELECTOR),
        json!([{"port": 80, "targetPort": 70000}]),
    );
    let pods = [pod("atenet-router-abc", &[], PodState::Ready)];
    let err = pick_target(&s, 80, &pods).unwrap_err();
    assert!(
        matches!(err, ForwardError::PortOutOfRange { value: 70000, .. }),
        "{err:?}"
    );
}

#[test]
fn pick_target_refuses_a_service_without_selector() {
    let s = svc(None, json!([{"port": 80, "targetPort": "http"}]));
    let pods = [pod("atenet-router-abc", &[("http", 8080)], PodState::Ready)];
    let err = pick_target(&s, 80, &pods).unwrap_err();
    assert!(matches!(err, ForwardError::NoSelector { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("ate-system/atenet-router has no selector"),
        "{err}"
    );
}

#[test]
fn pick_target_missing_service_port_lists_the_ports() {
    let s = svc(
        Some(ROUTER_SELECTOR),
        json!([{"port": 8081}, {"port": 9090}]),
    );
    let err = pick_target(&s, 80, &[]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ForwardError::NoSuchPort { .. }), "{err:?}");
    assert!(
        msg.contains("no port 80") && msg.contains("8081") && msg.contains("9090"),
        "{msg}"
    );
}

#[test]
fn pick_target_no_ready_pod_lists_each_pod_and_why() {
    let s = svc(
        Some(ROUTER_SELECTOR),
        json!([{"port": 80, "targetPort": "http"}]),
    );
    let ports = [("http", 8080)];
    let pods = [
        pod("pending-1", &ports, PodState::Pending),
        pod("terminating-2", &ports, PodState::Terminating),
        pod("unready-3", &ports, PodState::NotReady),
    ];
    let err = pick_target(&s, 80, &pods).unwrap_err();
    assert!(matches!(err, ForwardError::NoReadyPod { .. }), "{err:?}");
    let msg = err.to_string();
    for want in [
        "app=atenet-router",
        "pending-1: phase Pending",
        "terminating-2: terminating",
        "unready-3: Ready=False",
    ] {
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    }
    let none = pick_target(&s, 80, &[]).unwrap_err().to_string();
    assert!(none.contains("no pod matches"), "{none}");
}

// ---------------------------------------------------------------------------
// RouterForward against the fake
// ---------------------------------------------------------------------------

struct Router {
    fake: FakeKube,
    probe: ProbeStandIn,
    client: ::kube::Client,
    _dir: TempDir,
}

/// The router as CONTRACT III describes it: service ate-system/atenet-router,
/// selector app=atenet-router, port 80 -> targetPort `http` -> 8080 on pod
/// atenet-router-abc, whose backend is the probe stand-in.
async fn router() -> Router {
    let (fake, client, dir) = fake_and_client().await;
    let probe = ProbeStandIn::start().await;
    fake.put_namespace(ROUTER_NAMESPACE);
    fake.put_service(
        ROUTER_NAMESPACE,
        ROUTER_SERVICE,
        Some(ROUTER_SELECTOR),
        json!([{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]),
    );
    fake.put_pod(
        ROUTER_NAMESPACE,
        "atenet-router-abc",
        ROUTER_SELECTOR,
        &[("http", 8080)],
        PodState::Ready,
    );
    // A pod of another app must not be picked.
    fake.put_pod(
        ROUTER_NAMESPACE,
        "other-app-xyz",
        &[("app", "other")],
        &[("http", 8080)],
        PodState::Ready,
    );
    fake.set_backend(ROUTER_NAMESPACE, "atenet-router-abc", 8080, probe.addr());
    Router {
        fake,
        probe,
        client,
        _dir: dir,
    }
}

async fn start_forward(r: &Router) -> RouterForward {
    start_forward_with(&Executor::real_with_client(r.client.clone())).await
}

async fn start_forward_with(exec: &Executor) -> RouterForward {
    within(
        "RouterForward::start",
        RouterForward::start(exec, ROUTER_NAMESPACE, ROUTER_SERVICE, ROUTER_PORT),
    )
    .await
    .expect("start the router forward")
    .expect("a real executor gives a forward")
}

/// The API calls of a plan, as `METHOD path`.
fn api_lines(exec: &Executor) -> Vec<String> {
    exec.plan()
        .steps()
        .iter()
        .filter_map(|s| match s {
            Step::Api(ApiCall { method, path, .. }) => Some(format!("{method} {path}")),
            _ => None,
        })
        .collect()
}

/// A reqwest client that opens a new connection per request.
fn one_shot_http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(STEP)
        .build()
        .unwrap()
}

async fn get_whoami(
    http: &reqwest::Client,
    fwd: &RouterForward,
    path: &str,
) -> reqwest::Result<Value> {
    http.get(format!("http://{}{path}", fwd.local_addr()))
        .header(reqwest::header::HOST, PROBE_HOST)
        .send()
        .await?
        .error_for_status()?
        .json::<Value>()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_start_resolves_named_target_port_through_the_api() {
    let r = router().await;
    let exec = Executor::real_with_client(r.client.clone());
    let fwd = start_forward_with(&exec).await;
    assert_eq!(fwd.pod(), "atenet-router-abc");
    assert!(fwd.local_addr().ip().is_loopback());
    assert_ne!(fwd.local_addr().port(), 0);

    let calls: Vec<String> = r
        .fake
        .requests()
        .iter()
        .map(|c| format!("{} {}?{}", c.method, c.path, c.query_string()))
        .collect();
    assert_eq!(
        calls,
        [
            "GET /api/v1/namespaces/ate-system/services/atenet-router?",
            "GET /api/v1/namespaces/ate-system/pods?labelSelector=app=atenet-router",
        ]
    );
    // The executor recorded exactly those calls, then the forward's
    // WebSocket to the pod and port they resolved to.
    assert_eq!(
        api_lines(&exec),
        [
            "GET /api/v1/namespaces/ate-system/services/atenet-router",
            "GET /api/v1/namespaces/ate-system/pods?labelSelector=app=atenet-router",
            "WS /api/v1/namespaces/ate-system/pods/atenet-router-abc/portforward?ports=8080",
        ]
    );
    // A recording executor records the same calls for upstream's Service
    // (its stand-in), with a stand-in pod, and opens nothing.
    let dry = Executor::recording();
    let none = RouterForward::start(&dry, ROUTER_NAMESPACE, ROUTER_SERVICE, ROUTER_PORT)
        .await
        .unwrap();
    assert!(none.is_none());
    assert_eq!(
        api_lines(&dry),
        [
            "GET /api/v1/namespaces/ate-system/services/atenet-router",
            "GET /api/v1/namespaces/ate-system/pods?labelSelector=app=atenet-router",
            "WS /api/v1/namespaces/ate-system/pods/<ready pod>/portforward?ports=8080",
        ]
    );
    assert_eq!(
        r.fake.requests().len(),
        2,
        "the recording executor called the API"
    );
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_start_errors_come_from_the_service_and_pods() {
    let r = router().await;
    // Named port missing on the pod.
    r.fake.put_service(
        ROUTER_NAMESPACE,
        ROUTER_SERVICE,
        Some(ROUTER_SELECTOR),
        json!([{"port": 80, "targetPort": "web"}]),
    );
    let exec = Executor::real_with_client(r.client.clone());
    let start = || RouterForward::start(&exec, ROUTER_NAMESPACE, ROUTER_SERVICE, ROUTER_PORT);
    let err = within("start", start()).await.unwrap_err();
    assert!(
        matches!(err, ForwardError::NamedPortNotFound { .. }),
        "{err:?}"
    );

    // No selector.
    r.fake.put_service(
        ROUTER_NAMESPACE,
        ROUTER_SERVICE,
        None,
        json!([{"port": 80, "targetPort": "http"}]),
    );
    let err = within("start", start()).await.unwrap_err();
    assert!(matches!(err, ForwardError::NoSelector { .. }), "{err:?}");

    // No ready pod.
    r.fake.put_service(
        ROUTER_NAMESPACE,
        ROUTER_SERVICE,
        Some(ROUTER_SELECTOR),
        json!([{"port": 80, "targetPort": "http"}]),
    );
    r.fake.put_pod(
        ROUTER_NAMESPACE,
        "atenet-router-abc",
        ROUTER_SELECTOR,
        &[("http", 8080)],
        PodState::Terminating,
    );
    let err = within("start", start()).await.unwrap_err();
    assert!(
        err.to_string().contains("atenet-router-abc: terminating"),
        "{err}"
    );
    assert!(!err.to_string().contains("other-app-xyz"), "{err}");

    // No service.
    assert!(r
        .fake
        .remove("/api/v1/namespaces/ate-system/services/atenet-router"));
    let err = within("start", start()).await.unwrap_err();
    assert!(
        matches!(err, ForwardError::ServiceNotFound { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_carries_a_real_request_with_its_host_header() {
    let r = router().await;
    let fwd = start_forward(&r).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(STEP)
        .build()
        .unwrap();
    let body = get_whoami(&http, &fwd, "/whoami")
        .await
        .expect("request through the forward");
    assert_eq!(
        body,
        json!({"host": PROBE_HOST, "method": "GET", "path": "/whoami"})
    );
    let seen = r.probe.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].host, PROBE_HOST);
    assert_eq!(seen[0].path, "/whoami");
    assert_eq!(
        r.fake.portforwards(),
        [("atenet-router-abc".to_string(), "8080".to_string())]
    );
    fwd.stop().await;
}

type HyperSender = hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>;

/// An HTTP/1.1 connection to `addr` driven by hyper's client.
async fn hyper_conn(addr: std::net::SocketAddr) -> HyperSender {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends GET `path` on `sender` and returns the JSON body (read by
/// Content-Length, never to EOF).
async fn hyper_get(sender: &mut HyperSender, path: &str) -> Value {
    sender.ready().await.unwrap();
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, PROBE_HOST)
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_keeps_one_connection_alive_for_sequential_requests() {
    let r = router().await;
    let fwd = start_forward(&r).await;
    let mut conn = hyper_conn(fwd.local_addr()).await;
    let first = within("first request", hyper_get(&mut conn, "/one")).await;
    let second = within("second request", hyper_get(&mut conn, "/two")).await;
    assert_eq!(first["path"], "/one");
    assert_eq!(second["path"], "/two");
    let paths: Vec<String> = r.probe.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/one", "/two"]);
    // One local connection, one port-forward.
    assert_eq!(r.fake.portforwards().len(), 1);
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_serves_two_concurrent_connections() {
    let r = router().await;
    let fwd = start_forward(&r).await;
    // Both connections are open before either request is sent.
    let mut a = hyper_conn(fwd.local_addr()).await;
    let mut b = hyper_conn(fwd.local_addr()).await;
    let (ra, rb) = within("two concurrent requests", async {
        tokio::join!(hyper_get(&mut a, "/a"), hyper_get(&mut b, "/b"))
    })
    .await;
    assert_eq!(
        (ra["path"].as_str(), rb["path"].as_str()),
        (Some("/a"), Some("/b"))
    );
    let mut paths: Vec<String> = r.probe.seen().into_iter().map(|s| s.path).collect();
    paths.sort();
    assert_eq!(paths, ["/a", "/b"]);
    assert!(r.probe.seen().iter().all(|s| s.host == PROBE_HOST));
    assert_eq!(
        r.fake.portforwards().len(),
        2,
        "one port-forward per connection"
    );

    // With reqwest too, at once.
    let http = one_shot_http();
    let (x, y) = within("two reqwest requests", async {
        tokio::join!(get_whoami(&http, &fwd, "/x"), get_whoami(&http, &fwd, "/y"))
    })
    .await;
    assert_eq!(x.unwrap()["path"], "/x");
    assert_eq!(y.unwrap()["path"], "/y");
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_reconnects_once_to_a_new_ready_pod_after_a_restart() {
    let r = router().await;
    let fwd = start_forward(&r).await;
    let http = one_shot_http();
    get_whoami(&http, &fwd, "/before")
        .await
        .expect("first request");

    // "Restart": the pod goes, a new one comes up ready with the same backend.
    assert!(r.fake.remove_pod(ROUTER_NAMESPACE, "atenet-router-abc"));
    r.fake.put_pod(
        ROUTER_NAMESPACE,
        "atenet-router-def",
        ROUTER_SELECTOR,
        &[("http", 8080)],
        PodState::Ready,
    );
    r.fake
        .set_backend(ROUTER_NAMESPACE, "atenet-router-def", 8080, r.probe.addr());

    let body = get_whoami(&http, &fwd, "/after")
        .await
        .expect("request after the restart");
    assert_eq!(body["path"], "/after");
    assert_eq!(fwd.pod(), "atenet-router-def");
    let events = fwd.events();
    assert!(
        events
            .iter()
            .any(|e| e.contains("forward to pod atenet-router-abc failed")
                && e.contains("404")
                && e.contains("reconnected to ready pod atenet-router-def")),
        "{events:#?}"
    );
    let pods: Vec<String> = r.fake.portforwards().into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        pods,
        [
            "atenet-router-abc",
            "atenet-router-abc",
            "atenet-router-def"
        ]
    );

    // The next connection goes straight to the new pod.
    get_whoami(&http, &fwd, "/again")
        .await
        .expect("third request");
    assert_eq!(r.fake.portforwards().len(), 4);

    // No ready pod left: the request fails and the event says why.
    assert!(r.fake.remove_pod(ROUTER_NAMESPACE, "atenet-router-def"));
    let err = get_whoami(&http, &fwd, "/gone").await;
    assert!(err.is_err(), "{err:?}");
    wait_until("the failure event", STEP, || {
        fwd.events()
            .iter()
            .any(|e| e.contains("no ready pod to reconnect to"))
    })
    .await;
    let last = fwd.events().last().cloned().unwrap();
    assert!(
        last.contains("forward to pod atenet-router-def failed")
            && last.contains("no ready pod for service ate-system/atenet-router")
            && last.contains("no pod matches"),
        "{last}"
    );
    let paths: Vec<String> = r.probe.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/before", "/after", "/again"]);
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_records_the_port_forward_error_channel() {
    let r = router().await;
    // A pod whose port nothing listens on: the kubelet (here, the fake)
    // answers on the error channel.
    r.fake.put_pod(
        ROUTER_NAMESPACE,
        "atenet-router-abc",
        ROUTER_SELECTOR,
        &[("http", 8080)],
        PodState::Ready,
    );
    r.fake.set_backend(
        ROUTER_NAMESPACE,
        "atenet-router-abc",
        8080,
        closed_port().await,
    );
    let fwd = start_forward(&r).await;
    let err = get_whoami(&one_shot_http(), &fwd, "/x").await;
    assert!(err.is_err(), "{err:?}");
    wait_until("the error-channel event", STEP, || {
        fwd.events().iter().any(|e| e.contains("reported an error"))
    })
    .await;
    let events = fwd.events();
    assert!(
        events.iter().any(|e| e
            .contains("atenet-router-abc port 8080 reported an error: error forwarding port 8080")),
        "{events:#?}"
    );
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_stop_closes_the_listener() {
    let r = router().await;
    let fwd = start_forward(&r).await;
    let addr = fwd.local_addr();
    let mut conn = hyper_conn(addr).await;
    within("request", hyper_get(&mut conn, "/live")).await;
    fwd.stop().await;
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "still accepting after stop");
    // The live connection was closed too.
    within("the live connection to close", async {
        while !conn.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Golden wait
// ---------------------------------------------------------------------------

const GOLDEN_ID: &str = "3f2a9c4e-8b1d-4e6f-9a7c-2d5b8e1f0a93";

fn waiting_golden() -> Value {
    json!({
        "phase": "WaitGoldenActor",
        "conditions": [{
            "type": "Ready", "status": "False", "reason": "WaitingForGolden",
            "message": "waiting for the golden actor snapshot"
        }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_wait_returns_the_id_and_the_phase_history() {
    let (fake, client, _dir) = fake_and_client().await;
    fake.script_actor_template(
        "conf-x",
        "probe",
        vec![
            json!({}),
            json!({"phase": "ResumeGoldenActor"}),
            waiting_golden(),
            waiting_golden(),
            // Ready without an ID is not ready yet.
            json!({"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}),
            json!({
                "phase": "Ready",
                "goldenActorID": GOLDEN_ID,
                "conditions": [{"type": "Ready", "status": "True", "reason": "GoldenReady"}]
            }),
        ],
    );
    let ready = wait_golden(&client, "conf-x", "probe", STEP, Duration::from_millis(20))
        .await
        .expect("golden ready");
    assert_eq!(ready.golden_actor_id, GOLDEN_ID);
    let phases: Vec<&str> = ready
        .phase_history
        .iter()
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(
        phases,
        ["", "ResumeGoldenActor", "WaitGoldenActor", "Ready"]
    );
    let times: Vec<Duration> = ready.phase_history.iter().map(|(_, t)| *t).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(ready.waited >= *times.last().unwrap());
    // Six GETs, one per poll.
    let path = FakeKube::actor_template_path("conf-x", "probe");
    assert_eq!(fake.requests().iter().filter(|r| r.path == path).count(), 6);

    // Through an executor the wait is one recorded step naming that call,
    // the same for a real and a recording executor; the recording one
    // answers the stand-in golden actor and calls nothing.
    fake.script_actor_template(
        "conf-x",
        "probe",
        vec![json!({
            "phase": "Ready",
            "goldenActorID": GOLDEN_ID,
            "conditions": [{"type": "Ready", "status": "True", "reason": "GoldenReady"}]
        })],
    );
    let real = Executor::real_with_client(client.clone());
    let ready = wait_golden_with(&real, "conf-x", "probe", STEP, Duration::from_millis(20))
        .await
        .unwrap();
    assert_eq!(ready.golden_actor_id, GOLDEN_ID);
    let before = fake.requests().len();
    let dry = Executor::recording();
    let stand_in = wait_golden_with(&dry, "conf-x", "probe", STEP, Duration::from_millis(20))
        .await
        .unwrap();
    assert_eq!(stand_in.golden_actor_id, STAND_IN_GOLDEN_ACTOR_ID);
    assert_eq!(
        fake.requests().len(),
        before,
        "the recording executor called the API"
    );
    assert_eq!(api_lines(&real), [format!("GET {path}")]);
    assert_eq!(api_lines(&dry), api_lines(&real));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_wait_timeout_names_the_last_phase_and_conditions() {
    let (fake, client, _dir) = fake_and_client().await;
    fake.script_actor_template("conf-x", "probe", vec![json!({}), waiting_golden()]);
    let deadline = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = wait_golden(
        &client,
        "conf-x",
        "probe",
        deadline,
        Duration::from_millis(20),
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed >= deadline && elapsed < STEP, "{elapsed:?}");
    let GoldenWaitError::Timeout {
        ref last_phase,
        ref last_conditions,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(last_phase.as_deref(), Some("WaitGoldenActor"));
    assert_eq!(
        last_conditions,
        &["Ready=False (WaitingForGolden: waiting for the golden actor snapshot)"]
    );
    let msg = err.to_string();
    for want in [
        "ActorTemplate conf-x/probe not Ready",
        "last phase seen: \"WaitGoldenActor\"",
        "Ready=False (WaitingForGolden: waiting for the golden actor snapshot)",
        "goldenActorID: unset",
    ] {
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_wait_on_a_template_never_created_says_so() {
    let (_fake, client, _dir) = fake_and_client().await;
    let err = wait_golden(
        &client,
        "conf-x",
        "missing",
        Duration::from_millis(300),
        Duration::from_millis(20),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            GoldenWaitError::Timeout {
                last_phase: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(msg.contains("never seen"), "{msg}");
    assert!(msg.contains("404 NotFound"), "{msg}");
    assert!(
        msg.contains("actortemplates \"missing\" not found"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_wait_stops_at_once_on_failed() {
    let (fake, client, _dir) = fake_and_client().await;
    fake.script_actor_template(
        "conf-x",
        "probe",
        vec![json!({
            "phase": "Failed",
            "conditions": [{"type": "Ready", "status": "False", "reason": "GoldenFailed", "message": "boom"}]
        })],
    );
    let started = std::time::Instant::now();
    let err = wait_golden(&client, "conf-x", "probe", STEP, Duration::from_millis(20))
        .await
        .unwrap_err();
    assert!(started.elapsed() < STEP / 2);
    assert!(matches!(err, GoldenWaitError::Failed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("Ready=False (GoldenFailed: boom)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_wait_picks_up_a_status_set_while_polling() {
    let (fake, client, _dir) = fake_and_client().await;
    fake.script_actor_template("conf-x", "probe", vec![waiting_golden()]);
    let wait = tokio::spawn({
        let client = client.clone();
        async move { wait_golden(&client, "conf-x", "probe", STEP, Duration::from_millis(20)).await }
    });
    let path = FakeKube::actor_template_path("conf-x", "probe");
    wait_until("two polls", STEP, || {
        fake.requests().iter().filter(|r| r.path == path).count() >= 2
    })
    .await;
    fake.set_actor_template_status(
        "conf-x",
        "probe",
        json!({"phase": "Ready", "goldenActorID": GOLDEN_ID,
               "conditions": [{"type": "Ready", "status": "True"}]}),
    );
    let ready = within("golden wait", wait).await.unwrap().unwrap();
    assert_eq!(ready.golden_actor_id, GOLDEN_ID);
}

// ---------------------------------------------------------------------------
// Preflight and connect
// ---------------------------------------------------------------------------

fn failed(checks: &[ate_harness::backend::kind::kube::Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_all_good_and_its_calls_match_the_plan() {
    let (fake, client, _dir) = fake_and_client().await;
    fake.put_healthy_system();
    let exec = Executor::real_with_client(client);
    let checks = preflight_cluster(&exec, STEP).await;
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    let names: Vec<String> = checks.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, preflight_check_names());
    assert_eq!(checks[1].detail, "1/1 replicas ready");

    let mut made: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| {
            if r.query.is_empty() {
                r.path.clone()
            } else {
                format!("{}?{}", r.path, r.query_string())
            }
        })
        .collect();
    let mut planned: Vec<String> = api_lines(&exec)
        .into_iter()
        .map(|l| l.trim_start_matches("GET ").to_owned())
        .collect();
    // The API call comes first; the others run concurrently.
    assert_eq!(made[0], planned[0]);
    // A recording executor plans the same calls, in the order the real
    // one recorded them, makes none, and answers every check passed.
    let dry = Executor::recording();
    let stand_ins = preflight_cluster(&dry, STEP).await;
    assert_eq!(api_lines(&dry), api_lines(&exec));
    assert!(
        stand_ins
            .iter()
            .all(|c| c.ok && c.detail == CHECKED_AT_RUN_TIME),
        "{stand_ins:#?}"
    );
    assert_eq!(fake.requests().len(), made.len());
    made.sort();
    planned.sort();
    assert_eq!(made, planned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_reports_a_deployment_not_ready() {
    let (fake, client, _dir) = fake_and_client().await;
    fake.put_healthy_system();
    fake.put_deployment("ate-system", "ate-controller", 1, 0);
    let checks = preflight_cluster(&Executor::real_with_client(client.clone()), STEP).await;
    assert_eq!(
        failed(&checks),
        ["deployment ate-system/ate-controller ready"]
    );
    let c = checks.iter().find(|c| !c.ok).unwrap();
    assert!(c.detail.contains("0/1"), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_reports_every_missing_piece() {
    let (fake, client, _dir) = fake_and_client().await;
    fake.put_healthy_system();
    assert!(
        fake.remove("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/workerpools.ate.dev")
    );
    let checks = preflight_cluster(&Executor::real_with_client(client.clone()), STEP).await;
    assert_eq!(failed(&checks), ["crd workerpools.ate.dev exists"]);
    assert!(checks
        .iter()
        .find(|c| !c.ok)
        .unwrap()
        .detail
        .contains("workerpools.ate.dev"));

    // Several at once: all are reported, none stops the others. The
    // SandboxConfig CRD and the Valkey statefulset are what upstream's
    // install checks and waits for too (hack/install-ate.sh:246, :299).
    assert!(fake.remove("/apis/apps/v1/namespaces/ate-system/deployments/atenet-router"));
    fake.put_daemonset("ate-system", "atelet", 2, 1);
    fake.put_statefulset("ate-system", "valkey-cluster", 3, 2);
    assert!(fake
        .remove("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sandboxconfigs.ate.dev"));
    let checks = preflight_cluster(&Executor::real_with_client(client.clone()), STEP).await;
    assert_eq!(
        failed(&checks),
        [
            "deployment ate-system/atenet-router ready",
            "daemonset ate-system/atelet ready",
            "statefulset ate-system/valkey-cluster ready",
            "crd workerpools.ate.dev exists",
            "crd sandboxconfigs.ate.dev exists",
        ]
    );
    assert_eq!(checks[5].detail, "2/3 replicas ready");
    assert_eq!(checks[3].detail, "not found in ate-system");
    assert_eq!(checks[4].detail, "1/2 scheduled pods ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_against_a_closed_port_fails_fast_naming_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = format!("http://{}", closed_port().await);
    let kubeconfig = write_kubeconfig(dir.path(), &server, "kind-kind");
    let target = KubeTarget {
        kubeconfig: Some(kubeconfig.clone()),
        context: Some("kind-kind".into()),
    };
    let deadline = Duration::from_secs(5);
    let started = std::time::Instant::now();
    let checks = preflight(&Executor::real(), &target, deadline).await;
    assert!(
        started.elapsed() < deadline + Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(checks[0].name, API_CHECK);
    assert!(!checks[0].ok);
    assert!(checks[0].detail.contains(&server), "{:?}", checks[0]);
    assert!(checks[0].detail.contains("kind-kind"), "{:?}", checks[0]);
    assert_eq!(checks.len(), preflight_check_names().len());
    assert!(
        checks[1..]
            .iter()
            .all(|c| !c.ok && c.detail == NOT_CHECKED_UNREACHABLE),
        "{checks:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_honours_its_deadline_when_the_api_never_answers() {
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), &format!("http://{addr}"), "kind-kind");
    let client = connect(&KubeTarget {
        kubeconfig: Some(kubeconfig),
        context: None,
    })
    .await
    .unwrap();
    let deadline = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let checks = preflight_cluster(&Executor::real_with_client(client.clone()), deadline).await;
    let elapsed = started.elapsed();
    hold.abort();
    assert!(
        elapsed >= deadline && elapsed < deadline + Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(!checks[0].ok);
    assert!(checks[0].detail.contains("no answer"), "{:?}", checks[0]);
    assert!(checks[1..]
        .iter()
        .all(|c| c.detail == NOT_CHECKED_UNREACHABLE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_an_unknown_context_names_it_and_the_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), "http://127.0.0.1:1", "kind-kind");
    let err = connect(&KubeTarget {
        kubeconfig: Some(kubeconfig.clone()),
        context: Some("kind-nope".into()),
    })
    .await
    .err()
    .expect("connect fails");
    let msg = format!("{err:#}");
    assert!(msg.contains("kind-nope"), "{msg}");
    assert!(msg.contains(&kubeconfig.display().to_string()), "{msg}");

    let missing = dir.path().join("no-such-kubeconfig");
    let err = connect(&KubeTarget {
        kubeconfig: Some(missing.clone()),
        context: Some("kind-kind".into()),
    })
    .await
    .err()
    .expect("connect fails");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&missing.display().to_string()) && msg.contains("kind-kind"),
        "{msg}"
    );
}

// A throwaway CA and client certificate (RSA, PKCS#1 key, as kind writes
// them), generated for this test only; they trust and sign nothing else.
const TEST_CA_PEM: &str = r"-----BEGIN CERTIFICATE-----
MIIDDTCCAfWgAwIBAgIUATg5sbzLL9scYFSJ2h65B4357igwDQYJKoZIhvcNAQEL
BQAwFTETMBEGA1UEAwwKa3ViZXJuZXRlczAgFw0yNjExMjgxNjE3NDRaGA8yMTI2
MTEwNDE2MTc0NFowFTETMBEGA1UEAwwKa3ViZXJuZXRlczCCASIwDQYJKoZIhvcN
AQEBBQADggEPADCCAQoCggEBAMeWQ0SMLkvbreZKjA6STParQ86WZUi1BhanvFag
cTIcvW52Z2MVJCdwPBdO/ppa+E/jJXWKsPh5aTmjn69MAvkRJ2tWS27jDdyoUiJA
gBkRLZXwRIQcJ0T8wbp96R8WiioYAAVmE724fymcTtfp5+KmU0hsbNlVMSw+zxoj
WLw3BuZAkR1c4iufspJDVbO7KMphqWz50JTuXxJkDOLj8IbHsAQZf0sprtJUw0zs
sBrpGQyMZvaObbSMZACiWUWQ/RCoZ20+b5qlJXBPKlg04r/zhlsyF57pOHw6AJWn
TIdGO+y1d2nJBrIcgH76wZvB92+kjO7vnDonGJTD9Wkb4OMCAwEAAaNTMFEwHQYD
VR0OBBYEFGV4v7CKEKuUPjOTXZigGKxukV0WMB8GA1UdIwQYMBaAFGV4v7CKEKuU
PjOTXZigGKxukV0WMA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZIhvcNAQELBQADggEB
AJa1bLoLV23NTcZAjRLcwOI9SZlgD1D5uRBO2ixXy+c3EPh16Ihpn2KXn+dUxzAv
HMH6WsuyyEFtAe9dtG5gc/l3u6RinaRlktI2JJS4Qp3mYB0OnS6xlBT73DosKits
4vKWKoY+AhLP2hg/Yni9M7DAtrxYMhCSUqy9f2OCjrrcFS9fEsMQ4vjslTxMecHo
QIxyGkYlNgrkYej+6rFCOUwsoybcrW0O5EZ/7jFrCY2sPKIh0mZwwbjnyOcZzkiC
B8UDjFNZDnkgOXmJXrkZcnnYDcwcmj6gpuG6SfB34ASX+wKrhiN1exEqTO//H7dB
Hu+8qbmDWzHvJkV8ANAzT3o=
-----END CERTIFICATE-----
";
const TEST_CLIENT_CERT_PEM: &str = r"-----BEGIN CERTIFICATE-----
MIIDUzCCAjugAwIBAgIUTJttJtZeKUf39ETIMEss7s/TbLkwDQYJKoZIhvcNAQEL
BQAwFTETMBEGA1UEAwwKa3ViZXJuZXRlczAgFw0yNjExMjgxNjIwNDNaGA8yMTI2
MTEwNDE2MjA0M1owPDEfMB0GA1UECgwWa3ViZWFkbTpjbHVzdGVyLWFkbWluczEZ
MBcGA1UEAwwQa3ViZXJuZXRlcy1hZG1pbjCCASIwDQYJKoZIhvcNAQEBBQADggEP
ADCCAQoCggEBAOAntWif0yxrnRIY98W+P2cdkHUv02A3nJe+dsMPxmk333K0Z6G7
C2eDdhKHG8L4HqUOZVkGwhEyfV/66CEtaqf3hGbLC+XaCpeKi93HEHmuBKtXyE8+
pcjAUpYlGfDs6EwIATYaBhpou3D8wfhUGvZskSJtgDlu6hfmCogfBZmF56cigVRF
JBletQn+tY6Tnn/59PaMuQM1uFYLVNrR/RUjoPrWUpor+V4dxC8fBhqYOw1hVTQR
j4DmBJVCmVkYsziHJhVV94jrnFLZTfmJ4hWovBT0RZ9kuMR/uOayYE3PwqZkBr25
ws88L6B7Y9ybWK0M2sD7lHqxfdgn+CFcMDkCAwEAAaNyMHAwCQYDVR0TBAIwADAO
BgNVHQ8BAf8EBAMCBaAwEwYDVR0lBAwwCgYIKwYBBQUHAwIwHQYDVR0OBBYEFMu4
VXl5+6c9d2z7dTHs8xfSC/N8MB8GA1UdIwQYMBaAFGV4v7CKEKuUPjOTXZigGKxu
kV0WMA0GCSqGSIb3DQEBCwUAA4IBAQAIlzMN9mo1AFIq/X4LtA6VnqblOL768hL7
Iu8z+Pq7LIS9VN/Dvb96DMUwjMe+bJKYGMLe3NR+sPErWZGelod49n3ksW9o31/0
Zw/IAG53TjFgvB5r8sGxSBAlGQ3YFECwBR72yt6DrycxHEqjqlVm7K8ZdDn5ump4
J5IjVGD0mBrY91OQRQ2I1EWMk/IC6JQTLNcxruMnknED/p51mcdCFgXoCwSctkBi
krhbgATfsLv85L5o4GcAJZ2hT/fQa/VvRf7guKncP6i9r4Ex7ie81tjbMWYzye00
wIx0Mug46oJATsSkZ86GddTsOGrgLe0X+TbAR9ificu4mrBNHhgI
-----END CERTIFICATE-----
";
const TEST_CLIENT_KEY_PEM: &str = r"-----BEGIN RSA PRIVATE KEY-----
MIIEpQIBAAKCAQEA4Ce1aJ/TLGudEhj3xb4/Zx2QdS/TYDecl752ww/GaTffcrRn
obsLZ4N2EocbwvgepQ5lWQbCETJ9X/roIS1qp/eEZssL5doKl4qL3ccQea4Eq1fI
Tz6lyMBSliUZ8OzoTAgBNhoGGmi7cPzB+FQa9myRIm2AOW7qF+YKiB8FmYXnpyKB
VEUkGV61Cf61jpOef/n09oy5AzW4VgtU2tH9FSOg+tZSmiv5Xh3ELx8GGpg7DWFV
NBGPgOYElUKZWRizOIcmFVX3iOucUtlN+YniFai8FPRFn2S4xH+45rJgTc/CpmQG
vbnCzzwvoHtj3JtYrQzawPuUerF92Cf4IVwwOQIDAQABAoIBAA9ztU3xzI8gmPqN
JZFoWLsNPu7RHe9hTgZo3wt5zCnnK9xeotEzkWjwl0RWM3v4ejZTHHnrXRft5NYn
t/ZHiPVsuuASKa8N3ZKOPq+KYDCfJhvAqKKL1UZWOas3ggcJcccB+0FlQFv0Mc2r
YtyxQY2QtN2Mcl0jL/h3R20URGDNiPuOEuslom0OS77ng7jCBKaqYCokqBRdLF29
phErgFcXD5vCjFYtnbDOl2ZHJQhFzZNVNtYpx//f/t/85bpmENF5nrWDTRDxxbWT
A32qrqRhCr287gnF7aoT+Rz7uQ09YGZz5HOGQDuYzEI7JLZdj+9g7xxV3ewF7gF5
F5ej6oECgYEA99Rm01pQY3fCvSKDPBi2DxqssM722TblJZ8ZyB2s+3F7KG3u2C29
YQFKz1FtJQK9aEyBudu022eJDjs/QtbN9yaURSChfgecPiho7iig5FmbwrJPWkAU
0KanTyEYYveD6hz5rKB74KT21wDg5miC36C5/3EQ9pcCm8EWRF+1+0ECgYEA54uA
ZRs61EiMCuAzQu7Rez2icaRGCMQZHO0kpPzcY59p7e3AKUByvTpQIf5CwUtfeKl0
SYNdTa6FVh317KCI2x7UVv8aPbzRXRkLUnJsyp5yXrrKq9bDv5m45XmQ3U8h1a9S
eRYpSQHaQb5ANg37srkBMDXApDa8EgU2yTSNTvkCgYEA5hwGmYnLCIBjhd+swLkl
GiMnY0fX9dm9rE/szV2YhyNYOjLQyVK2+4IKpzKwx+OiYFxhO2QfqnSY0mj6lSID
vc7JbuIccHu6fBBjVXbN5Ri6wm1ztpW3fgCvao6NKR8vEcpznPCp9OzW8M01BVrW
4bNH4EFogb23Q01mUngX7cECgYEAgXmxf1gdqm0y2jYKlCgFPbv2ZUOt4eL+A/3b
muLGvnJ7ApAK/0ZJouTDwG50l6/1H/zpyN3LQ9AOQVyZkwsl3Bm+NTOLUfCOxldl
zGGt0hON8sjS4gpDBZYJHVDAH/DLA7l5DbrFtUxy5oZjU5a4I3VuY637Hhh5TD5c
J2Daj8kCgYEAoNIc6C51Y3Psz2lwzq2eQpI6DU/ocCJIg+1r0gv6U2SBPFMbTc4R
huaIeiSP9zAyNWYl2iW9RHNkjOgo0M5GNUldGUSm1gXKHqsdXUkfPbIMXj63fpIc
Cz1DuuXbfgKDCwTA0iubixcGg7qtW46WXsReL3bBGc5kvrsmEQOJZpw=
-----END RSA PRIVATE KEY-----
";

/// kind's kubeconfig shape (https, CA, client certificate and key) builds a
/// client with the ring provider, without a crypto-provider panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_builds_an_https_client_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    for (file, pem) in [
        ("ca.crt", TEST_CA_PEM),
        ("client.crt", TEST_CLIENT_CERT_PEM),
        ("client.key", TEST_CLIENT_KEY_PEM),
    ] {
        std::fs::write(dir.path().join(file), pem).unwrap();
    }
    let server = format!("https://{}", closed_port().await);
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: kind-kind
  cluster:
    server: {server}
    certificate-authority: ca.crt
users:
- name: kind-kind
  user:
    client-certificate: client.crt
    client-key: client.key
contexts:
- name: kind-kind
  context:
    cluster: kind-kind
    user: kind-kind
current-context: kind-kind
"
        ),
    )
    .unwrap();
    let target = KubeTarget {
        kubeconfig: Some(kubeconfig),
        context: Some("kind-kind".into()),
    };
    connect(&target)
        .await
        .expect("https client with client certificates");
    let checks = preflight(&Executor::real(), &target, Duration::from_secs(5)).await;
    assert!(!checks[0].ok);
    assert!(checks[0].detail.contains(&server), "{:?}", checks[0]);
}

// ---------------------------------------------------------------------------
// The probe manifest against upstream's CRD schemas
// ---------------------------------------------------------------------------

/// The probe fixture rendered with the values a run gives it.
fn rendered_probe() -> String {
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/probe/probe.yaml.tmpl");
    let text = std::fs::read_to_string(&src).unwrap();
    let vars: std::collections::BTreeMap<&str, String> = [
        ("NAMESPACE", "ate-conf-s1"),
        ("TEMPLATE", "probe"),
        ("POOL", "probe-s1"),
        (
            "PROBE_IMAGE",
            "localhost:5001/ate-conformance-probe@sha256:2222222222222222222222222222222222222222222222222222222222222222",
        ),
        ("ATEOM_IMAGE", ate_harness::backend::kind::ATEOM_IMAGE),
        ("BUCKET_NAME", "ate-snapshots"),
        ("RUN_ID", "s1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    ate_harness::template::render("probe.yaml.tmpl", &text, &vars).unwrap()
}

/// The `ate.dev` documents of a manifest, as JSON.
fn ate_docs(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| {
            v["apiVersion"]
                .as_str()
                .is_some_and(|a| a.starts_with("ate.dev/"))
        })
        .collect()
}

async fn create(client: &::kube::Client, obj: &Value) -> Result<(), String> {
    let kind = obj["kind"].as_str().unwrap();
    let plural = format!("{}s", kind.to_ascii_lowercase());
    let ar = ::kube::api::ApiResource::from_gvk_with_plural(
        &::kube::api::GroupVersionKind::gvk("ate.dev", "v1alpha1", kind),
        &plural,
    );
    let ns = obj["metadata"]["namespace"].as_str().unwrap();
    let api: ::kube::Api<::kube::api::DynamicObject> =
        ::kube::Api::namespaced_with(client.clone(), ns, &ar);
    let dynamic: ::kube::api::DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    api.create(&::kube::api::PostParams::default(), &dynamic)
        .await
        .map(|_| ())
        .map_err(|e| ate_harness::backend::kind::kube::describe_kube_error(&e))
}

#[tokio::test]
async fn the_rendered_probe_manifest_validates_against_upstreams_crds() {
    assert!(
        crd_schema::crd_dir()
            .join("ate.dev_actortemplates.yaml")
            .is_file(),
        "the upstream CRDs are not at {}",
        crd_schema::crd_dir().display()
    );
    let text = rendered_probe();
    assert_eq!(
        crd_schema::validate_manifest(&text),
        Vec::<String>::new(),
        "{text}"
    );
    let docs = ate_docs(&text);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["WorkerPool", "ActorTemplate"]);
    // And the fake API server, validating as the real one, creates both.
    let (fake, client, _dir) = fake_and_client().await;
    for d in &docs {
        within("create", create(&client, d)).await.unwrap();
    }
    assert!(fake
        .get("/apis/ate.dev/v1alpha1/namespaces/ate-conf-s1/actortemplates/probe")
        .is_some());
}

/// Upstream's probe WorkerPool at the pinned commit
/// (`internal/e2e/fixtures/probe/probe.yaml.tmpl:29-31` at 86e138f6):
/// `replicas: 3`, worker image `ko://.../cmd/ateom-gvisor`. With fewer
/// workers a suite restoring two actors while a third resumes gets "no free
/// workers available" (`cmd/ateapi/internal/controlapi/workflow_resume.go:174`);
/// `docs/upstream.md`, mismatch 15.
const UPSTREAM_PROBE_POOL_REPLICAS: i64 = 3;
/// See [`UPSTREAM_PROBE_POOL_REPLICAS`].
const UPSTREAM_PROBE_POOL_ATEOM_IMAGE: &str =
    "ko://github.com/agent-substrate/substrate/cmd/ateom-gvisor";

#[test]
fn the_probe_worker_pool_keeps_upstreams_replicas_and_worker_image() {
    let docs = ate_docs(&rendered_probe());
    let pools: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "WorkerPool").collect();
    assert_eq!(pools.len(), 1, "{docs:#?}");
    let spec = &pools[0]["spec"];
    assert_eq!(
        spec["replicas"].as_i64(),
        Some(UPSTREAM_PROBE_POOL_REPLICAS),
        "the probe's WorkerPool drifted from upstream's probe pool: {spec:#}"
    );
    assert_eq!(
        spec["ateomImage"], UPSTREAM_PROBE_POOL_ATEOM_IMAGE,
        "{spec:#}"
    );
    // The pool the template runs on is this one.
    let template = docs.iter().find(|d| d["kind"] == "ActorTemplate").unwrap();
    assert_eq!(
        pools[0]["metadata"]["labels"]["workload"], "probe-s1",
        "{:#}",
        pools[0]
    );
    assert_eq!(
        template["metadata"]["namespace"],
        pools[0]["metadata"]["namespace"]
    );
}

#[tokio::test]
async fn the_fake_api_server_rejects_what_upstreams_schema_rejects() {
    let (_fake, client, _dir) = fake_and_client().await;
    let docs = ate_docs(&rendered_probe());
    let (pool, template) = (docs[0].clone(), docs[1].clone());

    // The manifest as it was before this fix: readyz.timeoutSeconds, no pauseImage.
    let mut old = template.clone();
    old["spec"]["containers"][0]["readyz"]["timeoutSeconds"] = json!(60);
    let e = create(&client, &old).await.unwrap_err();
    assert!(e.starts_with("400 BadRequest"), "{e}");
    assert!(
        e.contains(
            "strict decoding error: unknown field \"spec.containers[0].readyz.timeoutSeconds\""
        ),
        "{e}"
    );
    let mut t = template.clone();
    t["metadata"]["name"] = json!("no-pause");
    t["spec"].as_object_mut().unwrap().remove("pauseImage");
    let e = create(&client, &t).await.unwrap_err();
    assert!(
        e.starts_with("422 Invalid") && e.contains("spec.pauseImage: Required value"),
        "{e}"
    );

    // Digest pinning (the CRD's CEL rule), the readyz path pattern, enums.
    let mut t = template.clone();
    t["metadata"]["name"] = json!("tag-only");
    t["spec"]["pauseImage"] = json!("registry.k8s.io/pause:3.10.2");
    t["spec"]["containers"][0]["readyz"]["httpGet"]["path"] = json!("healthz");
    t["spec"]["sandboxClass"] = json!("kata");
    let e = create(&client, &t).await.unwrap_err();
    for want in [
        "spec.pauseImage: Invalid value: \"string\": All images must be pinned",
        "spec.containers[0].readyz.httpGet.path: Invalid value: \"healthz\"",
        "spec.sandboxClass: Unsupported value: \"kata\"",
    ] {
        assert!(e.contains(want), "no {want:?} in {e}");
    }

    // WorkerPool: replicas and ateomImage are required; replicas is an integer >= 0.
    let mut p = pool.clone();
    p["spec"].as_object_mut().unwrap().remove("ateomImage");
    p["spec"]["replicas"] = json!(-1);
    let e = create(&client, &p).await.unwrap_err();
    assert!(e.contains("spec.ateomImage: Required value"), "{e}");
    assert!(e.contains("spec.replicas: Invalid value: -1"), "{e}");
    let mut p = pool.clone();
    p["spec"]["replicas"] = json!("3");
    let e = create(&client, &p).await.unwrap_err();
    assert!(
        e.contains("spec.replicas in body must be of type integer"),
        "{e}"
    );
}
