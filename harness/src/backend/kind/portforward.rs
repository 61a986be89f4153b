//! A local port forwarded to the router Service's pod (CONTRACT.md III
//! "Router"), the way `kubectl port-forward svc/...` does it: the Service's
//! selector picks a Running, Ready, not terminating pod; the Service port's
//! targetPort is resolved against that pod; a listener on `127.0.0.1:0`
//! opens one pod port-forward (WebSocket) per accepted connection.
//!
//! A forward that cannot be opened (the pod is gone, e.g. restarted) is
//! re-resolved once to a ready pod, possibly a new one; what happened is
//! kept in [`RouterForward::events`]. A connection whose forward breaks
//! midway is closed (its bytes cannot be replayed); the next connection
//! finds out and re-resolves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ::kube::api::{Api, ListParams};
use ::kube::Client;
use futures_util::FutureExt as _;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn};

use super::exec::{Executor, NotConnected};
use super::kube::describe_kube_error;
use super::plan::{ApiCall, Step};

/// The namespace of the router Service.
pub const ROUTER_NAMESPACE: &str = "ate-system";
/// The router Service.
pub const ROUTER_SERVICE: &str = "atenet-router";
/// The router Service's port (its targetPort is the pods' port named `http`).
pub const ROUTER_PORT: i32 = 80;

/// Why a forward could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Reading the Service failed.
    #[error("could not get service {namespace}/{service}")]
    GetService {
        /// The Service's namespace.
        namespace: String,
        /// The Service.
        service: String,
        /// The API error.
        #[source]
        source: Box<::kube::Error>,
    },
    /// The Service does not exist.
    #[error("service {namespace}/{service} not found")]
    ServiceNotFound {
        /// The Service's namespace.
        namespace: String,
        /// The Service.
        service: String,
    },
    /// The Service has no selector, so it names no pods to forward to.
    #[error("service {namespace}/{service} has no selector, so no pod to forward to")]
    NoSelector {
        /// The Service's namespace.
        namespace: String,
        /// The Service.
        service: String,
    },
    /// The Service has no port with the requested number.
    #[error("service {namespace}/{service} has no port {port} (its ports: {available:?})")]
    NoSuchPort {
        /// The Service's namespace.
        namespace: String,
        /// The Service.
        service: String,
        /// The port asked for.
        port: i32,
        /// The ports the Service has.
        available: Vec<i32>,
    },
    /// Listing the Service's pods failed.
    #[error("could not list the pods of service {namespace}/{service} (selector {selector})")]
    ListPods {
        /// The Service's namespace.
        namespace: String,
        /// The Service.
        service: String,
        /// The label selector used.
        selector: String,
        /// The API error.
        #[source]
        source: Box<::kube::Error>,
    },
    /// No pod of the Service is Running, Ready and not terminating.
    #[error(
        "no ready pod for service {namespace}/{service} (selector {selector}): {}",
        if .refused.is_empty() { "no pod matches".to_string() } else { .refused.join("; ") }
    )]
    NoReadyPod {
        /// The Service's namespace.
        namespace: String,
        /// The Service.
        service: String,
        /// The label selector used.
        selector: String,
        /// One line per pod seen: its name and why it was refused.
        refused: Vec<String>,
    },
    /// The Service port's targetPort is the number 0.
    #[error("service {namespace}/{service} port {port} has targetPort 0 (pod {pod})")]
    ZeroTargetPort {
        /// The Service's namespace.
        namespace: String,
        /// The Service.
        service: String,
        /// The Service port.
        port: i32,
        /// The pod picked.
        pod: String,
    },
    /// The Service port's targetPort names a port the pod's containers do
    /// not declare.
    #[error(
        "service {namespace}/{service} port {port} has targetPort {name:?}, but pod {pod} \
         declares no container port of that name (its named ports: {named_ports:?})"
    )]
    NamedPortNotFound {
        /// The Service's namespace.
        namespace: String,
        /// The Service.
        service: String,
        /// The Service port.
        port: i32,
        /// The targetPort's name.
        name: String,
        /// The pod picked.
        pod: String,
        /// The pod's named container ports, as `name=number`.
        named_ports: Vec<String>,
    },
    /// The resolved target port is outside 1..=65535.
    #[error(
        "service {namespace}/{service} port {port} resolves to port {value} on pod {pod}, \
         outside 1..=65535"
    )]
    PortOutOfRange {
        /// The Service's namespace.
        namespace: String,
        /// The Service.
        service: String,
        /// The Service port.
        port: i32,
        /// The pod picked.
        pod: String,
        /// The resolved number.
        value: i32,
    },
    /// Binding the local listener failed.
    #[error("could not listen on 127.0.0.1:0")]
    Bind(#[source] std::io::Error),
    /// A real executor without an API client was asked to forward.
    #[error(transparent)]
    NotConnected(#[from] NotConnected),
    /// Opening the pod port-forward (WebSocket) failed.
    #[error("could not open a port-forward to pod {namespace}/{pod} port {port}")]
    Open {
        /// The pod's namespace.
        namespace: String,
        /// The pod.
        pod: String,
        /// The pod port.
        port: u16,
        /// The API error.
        #[source]
        source: Box<::kube::Error>,
    },
    /// The port-forward opened but offered no stream for the port.
    #[error("the port-forward to pod {namespace}/{pod} has no stream for port {port}")]
    NoStream {
        /// The pod's namespace.
        namespace: String,
        /// The pod.
        pod: String,
        /// The pod port.
        port: u16,
    },
}

/// Why a pod cannot be forwarded to, or `None` if it can (Running, not
/// terminating, condition Ready=True).
fn refusal(pod: &Pod) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Some("terminating".to_string());
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
    if phase != "Running" {
        let phase = if phase.is_empty() { "unknown" } else { phase };
        return Some(format!("phase {phase}, not Running"));
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    match ready {
        None => Some("no Ready condition".to_string()),
        Some(c) if c.status != "True" => {
            let mut why = format!("Ready={}", c.status);
            if let Some(reason) = c.reason.as_deref().filter(|r| !r.is_empty()) {
                why.push_str(&format!(" ({reason})"));
            }
            Some(why)
        }
        Some(_) => None,
    }
}

fn named_ports(pod: &Pod) -> Vec<(String, i32)> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| p.name.clone().map(|n| (n, p.container_port)))
        .collect()
}

/// The selector map as a label selector string, `a=b,c=d`.
pub fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Picks the pod and pod port a connection to `svc`'s port `svc_port` goes
/// to, from `pods` (the pods its selector matches), in order: the Service
/// must have a selector and that port; the first pod that is Running, not
/// terminating and Ready, and on which the targetPort resolves (absent: the
/// port itself; a number as is; a name via the pod's container ports).
///
/// Errors: [`ForwardError::NoSelector`], [`ForwardError::NoSuchPort`],
/// [`ForwardError::NoReadyPod`] (listing every pod and why it was refused),
/// and for the first ready pod's targetPort [`ForwardError::ZeroTargetPort`],
/// [`ForwardError::NamedPortNotFound`], [`ForwardError::PortOutOfRange`].
pub fn pick_target(
    svc: &Service,
    svc_port: i32,
    pods: &[Pod],
) -> Result<(String, u16), ForwardError> {
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    let service = svc.metadata.name.clone().unwrap_or_default();
    let spec = svc.spec.as_ref();
    let selector = spec
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ForwardError::NoSelector {
            namespace: namespace.clone(),
            service: service.clone(),
        })?;
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
    let port =
        ports
            .iter()
            .find(|p| p.port == svc_port)
            .ok_or_else(|| ForwardError::NoSuchPort {
                namespace: namespace.clone(),
                service: service.clone(),
                port: svc_port,
                available: ports.iter().map(|p| p.port).collect(),
            })?;

    let mut refused = Vec::new();
    let mut first_error = None;
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Some(why) = refusal(pod) {
            refused.push(format!("{name}: {why}"));
            continue;
        }
        let resolved = match &port.target_port {
            None => svc_port,
            Some(IntOrString::Int(0)) => {
                first_error.get_or_insert(ForwardError::ZeroTargetPort {
                    namespace: namespace.clone(),
                    service: service.clone(),
                    port: svc_port,
                    pod: name.clone(),
                });
                refused.push(format!("{name}: targetPort 0"));
                continue;
            }
            Some(IntOrString::Int(n)) => *n,
            Some(IntOrString::String(port_name)) => {
                let named = named_ports(pod);
                match named.iter().find(|(n, _)| n == port_name) {
                    Some((_, number)) => *number,
                    None => {
                        first_error.get_or_insert(ForwardError::NamedPortNotFound {
                            namespace: namespace.clone(),
                            service: service.clone(),
                            port: svc_port,
                            name: port_name.clone(),
                            pod: name.clone(),
                            named_ports: named.iter().map(|(n, p)| format!("{n}={p}")).collect(),
                        });
                        refused.push(format!("{name}: no container port named {port_name:?}"));
                        continue;
                    }
                }
            }
        };
        return match u16::try_from(resolved) {
            Ok(p) if p > 0 => Ok((name, p)),
            _ => Err(ForwardError::PortOutOfRange {
                namespace,
                service,
                port: svc_port,
                pod: name,
                value: resolved,
            }),
        };
    }
    Err(first_error.unwrap_or(ForwardError::NoReadyPod {
        namespace,
        service,
        selector: selector_string(selector),
        refused,
    }))
}

/// The Service a recording executor answers with: upstream's
/// `atenet-router` Service as shipped (`manifests/ate-install/atenet-router.yaml:199-211`
/// at 86e138f6: selector `app=atenet-router`, port 80 named `http`,
/// targetPort 8080), in the namespace and name asked for.
fn stand_in_service(namespace: &str, service: &str, svc_port: i32) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": service, "namespace": namespace},
        "spec": {
            "selector": {"app": "atenet-router"},
            "ports": [{"name": "http", "port": svc_port, "targetPort": 8080}]
        }
    }))
    .expect("a valid Service")
}

/// The pod a recording executor answers with: one Running, Ready pod named
/// `<ready pod>` with upstream's container port `http` 8080
/// (`manifests/ate-install/atenet-router.yaml:175-176`).
fn stand_in_pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "<ready pod>"},
        "spec": {"containers": [{"name": "atenet-router", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .expect("a valid Pod")
}

/// Reads the Service and its pods through `exec` (one recorded call each)
/// and picks the target ([`pick_target`]).
async fn resolve(
    exec: &Executor,
    namespace: &str,
    service: &str,
    svc_port: i32,
) -> Result<(String, u16), ForwardError> {
    let svc = exec
        .api(
            ApiCall::new(
                "GET",
                format!("/api/v1/namespaces/{namespace}/services/{service}"),
                format!("read service {namespace}/{service}: its selector and port {svc_port}"),
            ),
            |client| async move {
                let services: Api<Service> = Api::namespaced(client, namespace);
                services.get_opt(service).await
            },
            || Ok(Some(stand_in_service(namespace, service, svc_port))),
        )
        .await?
        .map_err(|source| ForwardError::GetService {
            namespace: namespace.to_string(),
            service: service.to_string(),
            source: Box::new(source),
        })?
        .ok_or_else(|| ForwardError::ServiceNotFound {
            namespace: namespace.to_string(),
            service: service.to_string(),
        })?;
    let selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
        .map(selector_string);
    let pods = match selector {
        // pick_target refuses it with the right error.
        None => Vec::new(),
        Some(selector) => exec
            .api(
                ApiCall::new(
                    "GET",
                    format!("/api/v1/namespaces/{namespace}/pods?labelSelector={selector}"),
                    format!(
                        "list the pods of service {namespace}/{service}; pick one Running, Ready, not \
                         terminating; resolve port {svc_port}'s targetPort on it"
                    ),
                ),
                |client| {
                    let selector = selector.clone();
                    async move {
                        let pods: Api<Pod> = Api::namespaced(client, namespace);
                        pods.list(&ListParams::default().labels(&selector)).await
                    }
                },
                || Ok(::kube::api::ObjectList {
                    types: Default::default(),
                    metadata: Default::default(),
                    items: vec![stand_in_pod()],
                }),
            )
            .await?
            .map_err(|source| ForwardError::ListPods {
                namespace: namespace.to_string(),
                service: service.to_string(),
                selector,
                source: Box::new(source),
            })?
            .items,
    };
    pick_target(&svc, svc_port, &pods)
}

/// State shared by the accept loop and its connections.
struct Shared {
    client: Client,
    namespace: String,
    service: String,
    svc_port: i32,
    local_addr: SocketAddr,
    /// The pod and pod port new connections go to.
    target: Mutex<(String, u16)>,
    events: Mutex<Vec<String>>,
}

impl Shared {
    fn event(&self, e: String) {
        self.events.lock().unwrap().push(e);
    }

    fn target(&self) -> (String, u16) {
        self.target.lock().unwrap().clone()
    }
}

/// A local port (`127.0.0.1:<ephemeral>`) forwarded to a Service's ready pod.
///
/// Stops (accept loop and live connections) on [`RouterForward::stop`] or
/// when dropped.
pub struct RouterForward {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RouterForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterForward")
            .field("local_addr", &self.shared.local_addr)
            .field("service", &self.shared.service)
            .field("target", &self.shared.target())
            .finish()
    }
}

impl RouterForward {
    /// Resolves `namespace/service` port `svc_port` to a ready pod and port,
    /// listens on `127.0.0.1:0` and forwards every accepted connection
    /// there, each step through `exec`. A recording executor resolves to
    /// upstream's Service and a stand-in pod `<ready pod>`, and answers
    /// `None`: no listener, no forward.
    pub async fn start(
        exec: &Executor,
        namespace: &str,
        service: &str,
        svc_port: i32,
    ) -> Result<Option<RouterForward>, ForwardError> {
        let (pod, pod_port) = resolve(exec, namespace, service, svc_port).await?;
        let listener = exec
            .local(
                "serve the forward on 127.0.0.1:<port 0>; the router client sends there with Host: <actor>.<atespace>.actors.resources.substrate.ate.dev",
                async {
                    let listener = TcpListener::bind(("127.0.0.1", 0))
                        .await
                        .map_err(ForwardError::Bind)?;
                    let local_addr = listener.local_addr().map_err(ForwardError::Bind)?;
                    Ok::<_, ForwardError>(Some((listener, local_addr)))
                },
                || Ok(None),
            )
            .await?;
        let ws = ApiCall::new(
            "WS",
            format!("/api/v1/namespaces/{namespace}/pods/{pod}/portforward?ports={pod_port}"),
            "one port-forward per connection accepted on 127.0.0.1:<local port>",
        );
        let forward = exec
            .with_client(
                Step::Api(ws),
                |client| async move {
                    let (listener, local_addr) = listener?;
                    info!(local_addr = %local_addr, pod = %pod, pod_port, "port-forward listening");
                    let shared = Arc::new(Shared {
                        client,
                        namespace: namespace.to_string(),
                        service: service.to_string(),
                        svc_port,
                        local_addr,
                        target: Mutex::new((pod.clone(), pod_port)),
                        events: Mutex::new(vec![format!(
                            "forwarding {local_addr} to pod {namespace}/{pod} port {pod_port} \
                             (service {service} port {svc_port})"
                        )]),
                    });
                    let accept = tokio::spawn(accept_loop(listener, shared.clone()));
                    Some(RouterForward {
                        shared,
                        accept: Some(accept),
                    })
                },
                || None,
            )
            .await?;
        Ok(forward)
    }

    /// The local address to connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The pod new connections go to (it changes after a reconnect).
    pub fn pod(&self) -> String {
        self.shared.target().0
    }

    /// What happened so far, in order: the start, every reconnect, every
    /// failed connection and every message from a port-forward's error
    /// channel.
    pub fn events(&self) -> Vec<String> {
        self.shared.events.lock().unwrap().clone()
    }

    /// Stops accepting and closes every live connection.
    pub async fn stop(mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            // Cancelled, by design; the connections go with its JoinSet.
            let _ = accept.await;
        }
    }
}

impl Drop for RouterForward {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Dropping the set (when this task is aborted) aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    conns.spawn(serve_connection(shared.clone(), tcp, peer));
                }
                Err(e) => {
                    warn!(local_addr = %shared.local_addr, error = %e, "accept failed");
                    shared.event(format!("accept on {} failed: {e}", shared.local_addr));
                    // Do not spin on a persistent error.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// A port-forward opened to a pod, with its stream taken.
struct Opened {
    forwarder: AbortOnDrop,
    stream: tokio::io::DuplexStream,
}

/// Aborts the port-forward's background task when the connection ends,
/// including when its task is aborted (stop, drop).
struct AbortOnDrop(::kube::api::Portforwarder);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn open(shared: &Shared, pod: &str, port: u16) -> Result<Opened, ForwardError> {
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &shared.namespace);
    let mut forwarder =
        pods.portforward(pod, &[port])
            .await
            .map_err(|source| ForwardError::Open {
                namespace: shared.namespace.clone(),
                pod: pod.to_string(),
                port,
                source: Box::new(source),
            })?;
    let stream = forwarder.take_stream(port);
    let forwarder = AbortOnDrop(forwarder);
    let stream = stream.ok_or_else(|| ForwardError::NoStream {
        namespace: shared.namespace.clone(),
        pod: pod.to_string(),
        port,
    })?;
    Ok(Opened { forwarder, stream })
}

fn describe_forward_error(e: &ForwardError) -> String {
    match e {
        ForwardError::Open { source, .. }
        | ForwardError::GetService { source, .. }
        | ForwardError::ListPods { source, .. } => {
            format!("{e}: {}", describe_kube_error(source))
        }
        other => other.to_string(),
    }
}

async fn serve_connection(shared: Arc<Shared>, mut tcp: TcpStream, peer: SocketAddr) {
    let (pod, port) = shared.target();
    let (opened, pod, port) = match open(&shared, &pod, port).await {
        Ok(o) => (o, pod, port),
        Err(first) => {
            let cause = describe_forward_error(&first);
            // A throwaway executor: re-resolving is not a step of the
            // run's plan; what happened goes into the forward's events.
            match resolve(
                &Executor::real_with_client(shared.client.clone()),
                &shared.namespace,
                &shared.service,
                shared.svc_port,
            )
            .await
            {
                Err(e) => {
                    let msg = format!(
                        "forward to pod {pod} failed ({cause}); no ready pod to reconnect to \
                         ({}); closed connection from {peer}",
                        describe_forward_error(&e)
                    );
                    warn!(local_addr = %shared.local_addr, pod = %pod, pod_port = port, "{msg}");
                    shared.event(msg);
                    return;
                }
                Ok((new_pod, new_port)) => match open(&shared, &new_pod, new_port).await {
                    Ok(o) => {
                        let msg = format!(
                            "forward to pod {pod} failed ({cause}); reconnected to ready pod \
                             {new_pod} port {new_port}"
                        );
                        warn!(
                            local_addr = %shared.local_addr,
                            pod = %new_pod,
                            pod_port = new_port,
                            "{msg}"
                        );
                        shared.event(msg);
                        *shared.target.lock().unwrap() = (new_pod.clone(), new_port);
                        (o, new_pod, new_port)
                    }
                    Err(e) => {
                        let msg = format!(
                            "forward to pod {pod} failed ({cause}); retry to ready pod {new_pod} \
                             failed too ({}); closed connection from {peer}",
                            describe_forward_error(&e)
                        );
                        warn!(local_addr = %shared.local_addr, pod = %new_pod, pod_port = new_port, "{msg}");
                        shared.event(msg);
                        return;
                    }
                },
            }
        }
    };
    info!(local_addr = %shared.local_addr, peer = %peer, pod = %pod, pod_port = port, "forwarding connection");

    let Opened {
        mut forwarder,
        mut stream,
    } = opened;
    let record_error = |message: String| {
        let msg = format!(
            "port-forward to pod {pod} port {port} reported an error: {message}; \
             closed connection from {peer}"
        );
        warn!(local_addr = %shared.local_addr, pod = %pod, pod_port = port, "{msg}");
        shared.event(msg);
    };
    let mut error_channel = forwarder.0.take_error(port).map(Box::pin);
    let copy = tokio::io::copy_bidirectional(&mut tcp, &mut stream);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            // An error message wins over the end of the copy it caused.
            biased;
            message = async { error_channel.as_mut().expect("guarded").await }, if error_channel.is_some() => {
                error_channel = None;
                if let Some(message) = message {
                    record_error(message);
                    break;
                }
            }
            copied = &mut copy => {
                if let Err(e) = copied {
                    tracing::debug!(pod = %pod, pod_port = port, error = %e, "connection ended with an error");
                }
                // The message may have arrived in the same wake-up.
                if let Some(Some(message)) = error_channel.take().and_then(|e| e.now_or_never()) {
                    record_error(message);
                }
                break;
            }
        }
    }
    drop(forwarder);
}
