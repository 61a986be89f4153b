//! An in-process fake Kubernetes API server for tests: plain HTTP/1.1 on
//! `127.0.0.1:0` (hyper), JSON objects kept in shared state that the test
//! changes while it runs, the pod `portforward` subresource over WebSocket
//! (`v4.channel.k8s.io`), and a record of every request.
//!
//! Use from a test file with
//! `#[path = "support/fake_kube.rs"] mod fake_kube;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The WebSocket subprotocol the fake answers port-forwards with.
pub const PORTFORWARD_PROTOCOL: &str = "v4.channel.k8s.io";

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query's `key=value` pairs, percent-decoded, in order (kube
    /// starts its queries with `&`; empty pairs are dropped).
    pub query: Vec<(String, String)>,
    /// Whether it asked for a WebSocket upgrade.
    pub websocket: bool,
}

impl Recorded {
    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The query re-joined as `a=b&c=d` (decoded).
    pub fn query_string(&self) -> String {
        self.query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// A stored object, with the statuses its next GETs will show.
#[derive(Debug, Clone)]
struct Entry {
    object: Value,
    /// Each GET of the object pops one and makes it the object's `status`;
    /// the last one stays.
    script: VecDeque<Value>,
}

#[derive(Default)]
struct State {
    /// Objects by their full path, e.g. `/api/v1/namespaces/ns/pods/name`.
    objects: BTreeMap<String, Entry>,
    /// Where `(namespace/pod, port)` port-forwards go.
    backends: HashMap<(String, u16), SocketAddr>,
    requests: Vec<Recorded>,
    /// Live port-forward relays by `namespace/pod`, cut when the pod goes.
    pod_streams: HashMap<String, Vec<AbortHandle>>,
    /// Every relay task, aborted when the fake is dropped.
    relays: Vec<AbortHandle>,
}

/// How a fake pod is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Running, condition Ready=True.
    Ready,
    /// Pending, no Ready condition.
    Pending,
    /// Running, condition Ready=False.
    NotReady,
    /// Running and Ready, but with a deletionTimestamp.
    Terminating,
}

/// The fake API server. Stops (with its port-forward relays) when dropped.
pub struct FakeKube {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(state) = self.state.lock() {
            for relay in &state.relays {
                relay.abort();
            }
        }
    }
}

impl FakeKube {
    /// Starts the server on `127.0.0.1:0` on the current tokio runtime.
    pub async fn start() -> FakeKube {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake kube api");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(serve(listener, state.clone()));
        let fake = FakeKube { addr, state, task };
        fake.put_namespace("default");
        fake
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The WebSocket port-forward requests so far, as `(pod, ports)`.
    pub fn portforwards(&self) -> Vec<(String, String)> {
        self.requests()
            .into_iter()
            .filter(|r| r.websocket && r.path.ends_with("/portforward"))
            .map(|r| {
                let pod = r.path.rsplit('/').nth(1).unwrap_or_default().to_string();
                (pod, r.param("ports").unwrap_or_default().to_string())
            })
            .collect()
    }

    /// Stores (or replaces) `object` under `collection/<metadata.name>`,
    /// e.g. collection `/api/v1/namespaces/ns/pods`.
    pub fn put(&self, collection: &str, object: Value) {
        let name = object["metadata"]["name"]
            .as_str()
            .expect("object has metadata.name")
            .to_string();
        self.state.lock().unwrap().objects.insert(
            format!("{collection}/{name}"),
            Entry {
                object,
                script: VecDeque::new(),
            },
        );
    }

    /// Removes the object at `path`; true if it was there.
    pub fn remove(&self, path: &str) -> bool {
        self.state.lock().unwrap().objects.remove(path).is_some()
    }

    /// The object at `path`, as the next GET would show it (without
    /// advancing a script).
    pub fn get(&self, path: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(path)
            .map(|e| e.object.clone())
    }

    /// Adds a namespace.
    pub fn put_namespace(&self, name: &str) {
        self.put(
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        );
    }

    /// Adds a Service (`ports` as Kubernetes JSON, e.g.
    /// `[{"port": 80, "targetPort": "http"}]`; `selector` `None` for none).
    pub fn put_service(
        &self,
        ns: &str,
        name: &str,
        selector: Option<&[(&str, &str)]>,
        ports: Value,
    ) {
        self.put(
            &format!("/api/v1/namespaces/{ns}/services"),
            service(ns, name, selector, ports),
        );
    }

    /// Adds (or replaces) a pod.
    pub fn put_pod(
        &self,
        ns: &str,
        name: &str,
        labels: &[(&str, &str)],
        ports: &[(&str, i32)],
        state: PodState,
    ) {
        self.put(
            &format!("/api/v1/namespaces/{ns}/pods"),
            pod(ns, name, labels, ports, state),
        );
    }

    /// Deletes a pod and cuts its live port-forwards (as a restart would).
    pub fn remove_pod(&self, ns: &str, name: &str) -> bool {
        let mut state = self.state.lock().unwrap();
        for relay in state
            .pod_streams
            .remove(&format!("{ns}/{name}"))
            .unwrap_or_default()
        {
            relay.abort();
        }
        state
            .objects
            .remove(&format!("/api/v1/namespaces/{ns}/pods/{name}"))
            .is_some()
    }

    /// Sends port-forwards to `ns/pod` port `port` to `backend`.
    pub fn set_backend(&self, ns: &str, pod: &str, port: u16, backend: SocketAddr) {
        self.state
            .lock()
            .unwrap()
            .backends
            .insert((format!("{ns}/{pod}"), port), backend);
    }

    /// Adds a Deployment with `ready` of `replicas` replicas ready.
    pub fn put_deployment(&self, ns: &str, name: &str, replicas: i32, ready: i32) {
        self.put(
            &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": name, "image": "example.invalid/x"}]}
                    }
                },
                "status": {"replicas": replicas, "readyReplicas": ready, "observedGeneration": 1}
            }),
        );
    }

    /// Adds a DaemonSet with `ready` of `desired` scheduled pods ready.
    pub fn put_daemonset(&self, ns: &str, name: &str, desired: i32, ready: i32) {
        self.put(
            &format!("/apis/apps/v1/namespaces/{ns}/daemonsets"),
            json!({
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": name, "image": "example.invalid/x"}]}
                    }
                },
                "status": {
                    "currentNumberScheduled": desired,
                    "desiredNumberScheduled": desired,
                    "numberMisscheduled": 0,
                    "numberReady": ready
                }
            }),
        );
    }

    /// Adds a StatefulSet with `ready` of `replicas` replicas ready.
    pub fn put_statefulset(&self, ns: &str, name: &str, replicas: i32, ready: i32) {
        self.put(
            &format!("/apis/apps/v1/namespaces/{ns}/statefulsets"),
            json!({
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "replicas": replicas,
                    "serviceName": name,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": name, "image": "example.invalid/x"}]}
                    }
                },
                "status": {"replicas": replicas, "readyReplicas": ready}
            }),
        );
    }

    /// Adds a CustomResourceDefinition named `<plural>.<group>`.
    pub fn put_crd(&self, name: &str) {
        let (plural, group) = name.split_once('.').expect("crd name is <plural>.<group>");
        let kind = plural.trim_end_matches('s');
        self.put(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": name},
                "spec": {
                    "group": group,
                    "names": {"kind": kind, "plural": plural},
                    "scope": "Namespaced",
                    "versions": [{"name": "v1alpha1", "served": true, "storage": true}]
                },
                "status": {"conditions": [{"type": "Established", "status": "True"}]}
            }),
        );
    }

    /// Everything the preflight wants, healthy: the `ate-system` namespace,
    /// the three Deployments 1/1, `atelet` 1/1, statefulset `valkey-cluster`
    /// 1/1 and the three CRDs (what `hack/install-ate.sh` deploys and waits
    /// for, lines 246 and 296-300).
    pub fn put_healthy_system(&self) {
        self.put_namespace("ate-system");
        for d in [
            "ate-controller",
            "ate-api-server-deployment",
            "atenet-router",
        ] {
            self.put_deployment("ate-system", d, 1, 1);
        }
        self.put_daemonset("ate-system", "atelet", 1, 1);
        self.put_crd("actortemplates.ate.dev");
        self.put_crd("workerpools.ate.dev");
        self.put_statefulset("ate-system", "valkey-cluster", 1, 1);
        self.put_crd("sandboxconfigs.ate.dev");
    }

    /// The path of an ActorTemplate.
    pub fn actor_template_path(ns: &str, name: &str) -> String {
        format!("/apis/ate.dev/v1alpha1/namespaces/{ns}/actortemplates/{name}")
    }

    /// Adds an ActorTemplate whose successive GETs show `statuses` in turn
    /// (the last one stays).
    pub fn script_actor_template(&self, ns: &str, name: &str, statuses: Vec<Value>) {
        let path = Self::actor_template_path(ns, name);
        let object = json!({
            "apiVersion": "ate.dev/v1alpha1",
            "kind": "ActorTemplate",
            "metadata": {"name": name, "namespace": ns, "uid": "00000000-0000-4000-8000-000000000001"},
            "spec": {}
        });
        self.state.lock().unwrap().objects.insert(
            path,
            Entry {
                object,
                script: statuses.into(),
            },
        );
    }

    /// Sets an ActorTemplate's status now (dropping any script left).
    pub fn set_actor_template_status(&self, ns: &str, name: &str, status: Value) {
        let path = Self::actor_template_path(ns, name);
        let mut state = self.state.lock().unwrap();
        let entry = state.objects.get_mut(&path).expect("actor template exists");
        entry.script.clear();
        entry.object["status"] = status;
    }
}

/// A Service object (see [`FakeKube::put_service`]).
pub fn service(ns: &str, name: &str, selector: Option<&[(&str, &str)]>, ports: Value) -> Value {
    let mut spec = json!({"type": "ClusterIP", "ports": ports});
    if let Some(selector) = selector {
        spec["selector"] = labels_json(selector);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec
    })
}

/// A Pod object with one container declaring `ports` (`(name, number)`;
/// an empty name declares an unnamed port).
pub fn pod(
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    ports: &[(&str, i32)],
    state: PodState,
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| {
            if n.is_empty() {
                json!({"containerPort": p, "protocol": "TCP"})
            } else {
                json!({"name": n, "containerPort": p, "protocol": "TCP"})
            }
        })
        .collect();
    let (phase, conditions) = match state {
        PodState::Ready | PodState::Terminating => {
            ("Running", json!([{"type": "Ready", "status": "True"}]))
        }
        PodState::NotReady => (
            "Running",
            json!([{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]),
        ),
        PodState::Pending => ("Pending", json!([])),
    };
    let mut metadata = json!({"name": name, "namespace": ns, "labels": labels_json(labels)});
    if state == PodState::Terminating {
        metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "main", "image": "example.invalid/x", "ports": ports}]},
        "status": {"phase": phase, "conditions": conditions}
    })
}

fn labels_json(labels: &[(&str, &str)]) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

/// Writes a kubeconfig into `dir` with one cluster (`server`), one user
/// with a token, and one context named `context` (also the current one);
/// returns its path.
pub fn write_kubeconfig(dir: &Path, server: &str, context: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake-cluster
  cluster:
    server: {server}
users:
- name: fake-user
  user:
    token: fake-token
contexts:
- name: {context}
  context:
    cluster: fake-cluster
    user: fake-user
    namespace: default
current-context: {context}
"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

/// A local port that nothing listens on (bound, then closed).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

type Body = Full<Bytes>;

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>) {
    // Dropping the set (when this task is aborted) closes every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let state = state.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = code;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// A `Status` object like the API server's.
/// Creates an `ate.dev` object (POST to its collection) as the API server
/// does for a CRD: the body is validated against upstream's
/// `openAPIV3Schema` (`../shared/upstream/crds/`, see [`super::crd_schema`]).
/// An unknown field is `400 BadRequest` with `strict decoding error:
/// unknown field "..."` (kubectl's default `fieldValidation=Strict`); a
/// schema violation is `422 Invalid`, `<Kind>.ate.dev "<name>" is invalid:
/// <field>: <reason>`, as apiextensions-apiserver words them.
fn create_ate_object(state: &Arc<Mutex<State>>, collection: &str, body: &[u8]) -> Response<Body> {
    let obj: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("the body is not JSON: {e}"),
                json!({}),
            )
        }
    };
    let kind = obj["kind"].as_str().unwrap_or("").to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let Some(schema) = super::crd_schema::schema_for(&kind) else {
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource (kind {kind:?})"),
            json!({}),
        );
    };
    let errors = super::crd_schema::validate(&schema, &obj);
    let (unknown, invalid): (Vec<String>, Vec<String>) = errors
        .into_iter()
        .partition(|e| e.starts_with("strict decoding error"));
    if !unknown.is_empty() {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!(
                "{kind} in version \"v1alpha1\" cannot be handled as a {kind}: {}",
                unknown.join(", ")
            ),
            json!({"name": name, "kind": kind}),
        );
    }
    if !invalid.is_empty() {
        return status_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!(
                "{kind}.ate.dev {name:?} is invalid: [{}]",
                invalid.join(", ")
            ),
            json!({"name": name, "group": "ate.dev", "kind": kind}),
        );
    }
    let path = format!("{collection}/{name}");
    let mut st = state.lock().unwrap();
    if st.objects.contains_key(&path) {
        return status_response(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{kind}.ate.dev {name:?} already exists"),
            json!({"name": name, "kind": kind}),
        );
    }
    st.objects.insert(
        path,
        Entry {
            object: obj.clone(),
            script: VecDeque::new(),
        },
    );
    json_response(StatusCode::CREATED, &obj)
}

fn status_response(
    code: StatusCode,
    reason: &str,
    message: String,
    details: Value,
) -> Response<Body> {
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code.as_u16()
        }),
    )
}

fn not_found(path: &str) -> Response<Body> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (kind, name) = match segments.len() {
        n if n >= 2 => (segments[n - 2], segments[n - 1]),
        _ => ("", path),
    };
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{kind} \"{name}\" not found"),
        json!({"name": name, "kind": kind}),
    )
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// What a path names, from the segments after `/api/v1` or `/apis/g/v`.
enum Route {
    Collection,
    Object,
    PortForward { ns: String, pod: String },
    Unknown,
}

fn route(path: &str) -> Route {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => return Route::Unknown,
    };
    match rest {
        ["namespaces", ns, "pods", pod, "portforward"] => Route::PortForward {
            ns: ns.to_string(),
            pod: pod.to_string(),
        },
        [_] | ["namespaces", _, _] => Route::Collection,
        [_, _] | ["namespaces", _, _, _] => Route::Object,
        _ => Route::Unknown,
    }
}

fn label_selector_matches(selector: &str, object: &Value) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (key, value) = match term.split_once("==").or_else(|| term.split_once('=')) {
            Some(kv) => kv,
            None => return object["metadata"]["labels"].get(term).is_some(),
        };
        object["metadata"]["labels"][key.trim()].as_str() == Some(value.trim())
    })
}

async fn handle(
    state: Arc<Mutex<State>>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let websocket = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    state.lock().unwrap().requests.push(Recorded {
        method: req.method().to_string(),
        path: path.clone(),
        query: query.clone(),
        websocket,
    });

    if path == "/version" {
        return Ok(json_response(
            StatusCode::OK,
            &json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
                "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"
            }),
        ));
    }
    if req.method() == Method::POST && path.starts_with("/apis/ate.dev/") {
        use http_body_util::BodyExt as _;
        let body = match req.body_mut().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return Ok(status_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("cannot read the body: {e}"),
                    json!({}),
                ))
            }
        };
        return Ok(create_ate_object(&state, &path, &body));
    }
    if req.method() != Method::GET {
        return Ok(status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the fake serves only GET, not {}", req.method()),
            json!({}),
        ));
    }
    match route(&path) {
        Route::Unknown => Ok(not_found(&path)),
        Route::Object => {
            let mut st = state.lock().unwrap();
            match st.objects.get_mut(&path) {
                None => Ok(not_found(&path)),
                Some(entry) => {
                    if let Some(status) = entry.script.pop_front() {
                        entry.object["status"] = status;
                    }
                    Ok(json_response(StatusCode::OK, &entry.object))
                }
            }
        }
        Route::Collection => {
            let selector = query
                .iter()
                .find(|(k, _)| k == "labelSelector")
                .map(|(_, v)| v.clone());
            let limit = query
                .iter()
                .find(|(k, _)| k == "limit")
                .and_then(|(_, v)| v.parse::<usize>().ok());
            let st = state.lock().unwrap();
            let prefix = format!("{path}/");
            let mut items: Vec<Value> = st
                .objects
                .iter()
                .filter(|(k, _)| {
                    k.strip_prefix(&prefix)
                        .is_some_and(|rest| !rest.contains('/'))
                })
                .map(|(_, e)| e.object.clone())
                .filter(|o| {
                    selector
                        .as_deref()
                        .is_none_or(|s| label_selector_matches(s, o))
                })
                .collect();
            if let Some(limit) = limit.filter(|l| *l > 0) {
                items.truncate(limit);
            }
            let kind = items
                .first()
                .and_then(|o| o["kind"].as_str())
                .map(|k| format!("{k}List"))
                .unwrap_or_else(|| "List".to_string());
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "apiVersion": "v1",
                    "kind": kind,
                    "metadata": {"resourceVersion": "1"},
                    "items": items
                }),
            ))
        }
        Route::PortForward { ns, pod } => {
            let pod_path = format!("/api/v1/namespaces/{ns}/pods/{pod}");
            if !state.lock().unwrap().objects.contains_key(&pod_path) {
                return Ok(not_found(&pod_path));
            }
            let ports: Vec<u16> = query
                .iter()
                .filter(|(k, _)| k == "ports")
                .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
                .filter_map(|p| p.trim().parse().ok())
                .collect();
            let key = req
                .headers()
                .get("sec-websocket-key")
                .map(|k| derive_accept_key(k.as_bytes()));
            let (Some(accept), true, false) = (key, websocket, ports.is_empty()) else {
                return Ok(status_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "portforward needs a websocket upgrade and ports".to_string(),
                    json!({}),
                ));
            };
            let offered = req
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let protocol = offered
                .split(',')
                .map(str::trim)
                .find(|p| *p == PORTFORWARD_PROTOCOL)
                .unwrap_or(PORTFORWARD_PROTOCOL)
                .to_string();
            let backends: Vec<Option<SocketAddr>> = {
                let st = state.lock().unwrap();
                ports
                    .iter()
                    .map(|p| st.backends.get(&(format!("{ns}/{pod}"), *p)).copied())
                    .collect()
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            let relay = tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                relay(ws, ports, backends).await;
            });
            {
                let mut st = state.lock().unwrap();
                st.pod_streams
                    .entry(format!("{ns}/{pod}"))
                    .or_default()
                    .push(relay.abort_handle());
                st.relays.push(relay.abort_handle());
            }
            let mut res = Response::new(Full::new(Bytes::new()));
            *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = res.headers_mut();
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(
                "sec-websocket-accept",
                HeaderValue::from_str(&accept).unwrap(),
            );
            h.insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&protocol).unwrap(),
            );
            Ok(res)
        }
    }
}

enum Out {
    Frame(Vec<u8>),
    BackendClosed,
}

/// Relays a port-forward WebSocket to the backends, one TCP connection per
/// port: `[2i, data..]` frames to backend `i`, its bytes back as
/// `[2i, data..]`; an unreachable backend gets `[2i+1, message]`.
async fn relay<S>(ws: WebSocketStream<S>, ports: Vec<u16>, backends: Vec<Option<SocketAddr>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    for (i, port) in ports.iter().enumerate() {
        let [lo, hi] = port.to_le_bytes();
        let data = (2 * i) as u8;
        for ch in [data, data + 1] {
            if sink.send(Message::binary(vec![ch, lo, hi])).await.is_err() {
                return;
            }
        }
    }
    let (tx, mut rx) = mpsc::channel::<Out>(16);
    let mut writers = Vec::new();
    let mut readers = JoinSet::new();
    let mut open = 0;
    for (i, (port, backend)) in ports.iter().zip(backends).enumerate() {
        let connected = match backend {
            Some(addr) => TcpStream::connect(addr).await.map_err(|e| e.to_string()),
            None => Err("no backend registered".to_string()),
        };
        match connected {
            Ok(tcp) => {
                let (mut r, w) = tcp.into_split();
                writers.push(Some(w));
                open += 1;
                let tx = tx.clone();
                readers.spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let mut frame = Vec::with_capacity(n + 1);
                                frame.push((2 * i) as u8);
                                frame.extend_from_slice(&buf[..n]);
                                if tx.send(Out::Frame(frame)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = tx.send(Out::BackendClosed).await;
                });
            }
            Err(e) => {
                writers.push(None);
                let mut frame = vec![(2 * i + 1) as u8];
                frame.extend_from_slice(
                    format!("error forwarding port {port} to the fake pod: {e}").as_bytes(),
                );
                let _ = sink.send(Message::binary(frame)).await;
            }
        }
    }
    drop(tx);
    if open == 0 {
        let _ = sink.send(Message::Close(None)).await;
        return;
    }
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) if b.len() > 1 => {
                    let i = (b[0] / 2) as usize;
                    if b[0] % 2 == 0 {
                        if let Some(Some(w)) = writers.get_mut(i) {
                            if w.write_all(&b[1..]).await.is_err() {
                                writers[i] = None;
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            out = rx.recv() => match out {
                Some(Out::Frame(f)) => {
                    if sink.send(Message::binary(f)).await.is_err() {
                        break;
                    }
                }
                Some(Out::BackendClosed) => {
                    open -= 1;
                    if open == 0 {
                        let _ = sink.send(Message::Close(None)).await;
                        break;
                    }
                }
                None => break,
            },
        }
    }
}

/// One request the probe stand-in saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Seen {
    /// The `Host` header (empty if none).
    pub host: String,
    /// The method.
    pub method: String,
    /// The path (with the query, if any).
    pub path: String,
}

/// A tiny HTTP server standing in for the probe behind the router: answers
/// every request with 200 and `{"host", "method", "path"}` (Content-Length
/// framed, keep-alive) and records it.
pub struct ProbeStandIn {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for ProbeStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProbeStandIn {
    /// Starts it on `127.0.0.1:0`.
    pub async fn start() -> ProbeStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let recorded = recorded.clone();
                        conns.spawn(async move {
                            let service = service_fn(move |req: Request<Incoming>| {
                                let recorded = recorded.clone();
                                async move {
                                    let seen = Seen {
                                        host: req
                                            .headers()
                                            .get(HOST)
                                            .and_then(|h| h.to_str().ok())
                                            .unwrap_or("")
                                            .to_string(),
                                        method: req.method().to_string(),
                                        path: req
                                            .uri()
                                            .path_and_query()
                                            .map(|p| p.to_string())
                                            .unwrap_or_default(),
                                    };
                                    recorded.lock().unwrap().push(seen.clone());
                                    let body = json!({
                                        "host": seen.host,
                                        "method": seen.method,
                                        "path": seen.path
                                    });
                                    Ok::<_, Infallible>(json_response(StatusCode::OK, &body))
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), service)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        ProbeStandIn { addr, seen, task }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request it saw, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Polls `cond` every 10 ms until it holds or `deadline` passes; on timeout
/// panics naming `what`.
pub async fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + deadline;
    while !cond() {
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
