//! Talking to the kind cluster's Kubernetes API with kube-rs: the client
//! (kubeconfig + context), the preflight checks (CONTRACT.md III
//! "Preflight") and the wait for an ActorTemplate's golden actor
//! (CONTRACT.md III "Golden ready").
//!
//! Every wait takes its deadline from the caller, polls with a short interval
//! and, on timeout, says what it waited for and what it last saw.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ::kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::{Client, Config};
use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use tokio::time::{timeout_at, Instant};

use futures_util::FutureExt as _;

use super::exec::{Executor, NotConnected};
use super::plan::ApiCall;

/// The namespace the Agent Substrate system components run in.
pub const SYSTEM_NAMESPACE: &str = "ate-system";

/// The Deployments the preflight requires to be ready, in check order (the
/// rollouts upstream's install waits for, `hack/install-ate.sh:296-298`).
pub const SYSTEM_DEPLOYMENTS: [&str; 3] = [
    "ate-controller",
    "ate-api-server-deployment",
    "atenet-router",
];

/// The DaemonSet the preflight requires to be ready.
pub const SYSTEM_DAEMONSET: &str = "atelet";

/// The StatefulSet the preflight requires to be ready: the Valkey cluster
/// ateapi keeps actors in (`hack/install-ate.sh:299`).
pub const SYSTEM_STATEFULSET: &str = "valkey-cluster";

/// The CustomResourceDefinitions the preflight requires, in check order:
/// the three upstream's install checks for (`hack/install-ate.sh:246`).
pub const SYSTEM_CRDS: [&str; 3] = [
    "actortemplates.ate.dev",
    "workerpools.ate.dev",
    "sandboxconfigs.ate.dev",
];

/// How quickly the API server must answer the first preflight call
/// (upstream's preflight asks for 10 s).
pub const API_ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// What the preflight reports for every check after the API check failed.
pub const NOT_CHECKED_UNREACHABLE: &str = "not checked: the API server is unreachable";

/// Which cluster to talk to: a kubeconfig file and a context in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeTarget {
    /// The kubeconfig file; `None` means kube's default lookup
    /// (`KUBECONFIG`, else `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The context to use; `None` means the kubeconfig's `current-context`.
    pub context: Option<String>,
}

impl KubeTarget {
    /// The kubeconfig as a person would name it in an error message.
    pub fn kubeconfig_display(&self) -> String {
        match &self.kubeconfig {
            Some(p) => p.display().to_string(),
            None => match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
                Some(v) => format!("$KUBECONFIG ({})", v.to_string_lossy()),
                None => "the default kubeconfig (~/.kube/config)".to_string(),
            },
        }
    }

    /// The context as a person would name it in an error message.
    pub fn context_display(&self) -> String {
        match &self.context {
            Some(c) => format!("context {c:?}"),
            None => "the current context".to_string(),
        }
    }
}

/// Loads the kubeconfig and selects the context, without connecting.
///
/// Errors name the kubeconfig and the context.
pub async fn load_config(t: &KubeTarget) -> anyhow::Result<Config> {
    let where_ = || {
        format!(
            "kubeconfig {}, {}",
            t.kubeconfig_display(),
            t.context_display()
        )
    };
    let kubeconfig = match &t.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    }
    .with_context(|| format!("could not read {}", where_()))?;
    let options = KubeConfigOptions {
        context: t.context.clone(),
        ..KubeConfigOptions::default()
    };
    Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("could not load {}", where_()))
}

/// Builds a client for the cluster `t` names.
///
/// Works for a plain `http://` server and for kind's `https://` server with
/// client certificates (the workspace compiles exactly one rustls crypto
/// provider, ring, so rustls selects it by itself; nothing is installed
/// process-wide). Errors name the kubeconfig and the context.
pub async fn connect(t: &KubeTarget) -> anyhow::Result<Client> {
    let config = load_config(t).await?;
    let server = config.cluster_url.to_string();
    Client::try_from(config).with_context(|| {
        format!(
            "could not build a client for server {server} (kubeconfig {}, {})",
            t.kubeconfig_display(),
            t.context_display()
        )
    })
}

/// One preflight check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// What was checked, e.g. `deployment ate-system/ate-controller ready`.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was seen, e.g. `0/1 replicas ready` or `not found in ate-system`.
    pub detail: String,
}

impl Check {
    fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{verdict} {}: {}", self.name, self.detail)
    }
}

/// The name of the API reachability check.
pub const API_CHECK: &str = "kubernetes API reachable";

fn deployment_check_name(name: &str) -> String {
    format!("deployment {SYSTEM_NAMESPACE}/{name} ready")
}

fn daemonset_check_name(name: &str) -> String {
    format!("daemonset {SYSTEM_NAMESPACE}/{name} ready")
}

fn statefulset_check_name(name: &str) -> String {
    format!("statefulset {SYSTEM_NAMESPACE}/{name} ready")
}

fn crd_check_name(name: &str) -> String {
    format!("crd {name} exists")
}

/// The names of every preflight check, in order.
pub fn preflight_check_names() -> Vec<String> {
    let mut names = vec![API_CHECK.to_string()];
    names.extend(SYSTEM_DEPLOYMENTS.iter().map(|d| deployment_check_name(d)));
    names.push(daemonset_check_name(SYSTEM_DAEMONSET));
    names.push(statefulset_check_name(SYSTEM_STATEFULSET));
    names.extend(SYSTEM_CRDS.iter().map(|c| crd_check_name(c)));
    names
}

/// What a recording executor answers for every cluster check: passed, the
/// detail saying it is read at run time.
pub const CHECKED_AT_RUN_TIME: &str = "<checked at run time>";

fn get(path: String, purpose: String) -> ApiCall {
    ApiCall::new("GET", path, purpose)
}

/// Runs every preflight check against the cluster through `exec` (one
/// recorded API call each), all of them (none stops at the first
/// failure), within `deadline` for the whole call. A recording executor
/// answers every check passed ([`CHECKED_AT_RUN_TIME`]).
///
/// Checks, in order: the API answers a namespace list (within `deadline`
/// and [`API_ANSWER_WITHIN`]); the Deployments in [`SYSTEM_DEPLOYMENTS`]
/// exist in `ate-system` and have all replicas ready (at least one); the
/// DaemonSet `atelet` is ready on every node it is scheduled on (at least
/// one); the CRDs in [`SYSTEM_CRDS`] exist. When the API check fails, the
/// others are reported failed with [`NOT_CHECKED_UNREACHABLE`].
pub async fn preflight_cluster(exec: &Executor, deadline: Duration) -> Vec<Check> {
    let started = Instant::now();
    let end = started + deadline;
    let api_end = end.min(started + API_ANSWER_WITHIN);
    let not_connected = |name: String| move |e: NotConnected| Check::fail(name, e.to_string());

    let api_check = exec
        .api(
            get(
                "/api/v1/namespaces?limit=1".into(),
                format!(
                    "the API server answers (list namespaces) within {} s",
                    API_ANSWER_WITHIN.as_secs()
                ),
            ),
            |client| async move {
                let namespaces: Api<Namespace> = Api::all(client);
                match timeout_at(api_end, namespaces.list(&ListParams::default().limit(1))).await {
                    Ok(Ok(_)) => Check::pass(
                        API_CHECK,
                        format!("answered in {} ms", started.elapsed().as_millis()),
                    ),
                    Ok(Err(e)) => Check::fail(
                        API_CHECK,
                        format!("list namespaces failed: {}", describe_kube_error(&e)),
                    ),
                    Err(_) => Check::fail(
                        API_CHECK,
                        format!(
                            "no answer to list namespaces within {}",
                            fmt_secs(api_end - started)
                        ),
                    ),
                }
            },
            || Check::pass(API_CHECK, CHECKED_AT_RUN_TIME),
        )
        .await
        .unwrap_or_else(not_connected(API_CHECK.to_string()));
    if !api_check.ok {
        let mut checks = vec![api_check];
        checks.extend(
            preflight_check_names()
                .into_iter()
                .skip(1)
                .map(|n| Check::fail(n, NOT_CHECKED_UNREACHABLE)),
        );
        return checks;
    }

    let late = |what: &str| {
        format!(
            "no answer to {what} before the preflight deadline ({})",
            fmt_secs(deadline)
        )
    };

    let deployment_checks = futures_util::future::join_all(SYSTEM_DEPLOYMENTS.iter().map(|d| {
        let late = &late;
        let name = deployment_check_name(d);
        exec.api(
            get(
                format!("/apis/apps/v1/namespaces/{SYSTEM_NAMESPACE}/deployments/{d}"),
                format!("deployment {SYSTEM_NAMESPACE}/{d} has all its replicas ready"),
            ),
            {
                let name = name.clone();
                move |client| async move {
                    let deployments: Api<Deployment> = Api::namespaced(client, SYSTEM_NAMESPACE);
                    match timeout_at(end, deployments.get_opt(d)).await {
                        Err(_) => Check::fail(name, late("get deployment")),
                        Ok(Err(e)) => Check::fail(
                            name,
                            format!("could not read it: {}", describe_kube_error(&e)),
                        ),
                        Ok(Ok(None)) => {
                            Check::fail(name, format!("not found in {SYSTEM_NAMESPACE}"))
                        }
                        Ok(Ok(Some(dep))) => deployment_readiness(name, &dep),
                    }
                }
            },
            {
                let name = name.clone();
                move || Check::pass(name, CHECKED_AT_RUN_TIME)
            },
        )
        .map(move |r| r.unwrap_or_else(not_connected(name)))
    }));

    let daemonset_check = {
        let name = daemonset_check_name(SYSTEM_DAEMONSET);
        exec.api(
            get(
                format!(
                    "/apis/apps/v1/namespaces/{SYSTEM_NAMESPACE}/daemonsets/{SYSTEM_DAEMONSET}"
                ),
                format!("daemonset {SYSTEM_NAMESPACE}/{SYSTEM_DAEMONSET} is ready on every node"),
            ),
            {
                let name = name.clone();
                let late = &late;
                move |client| async move {
                    let daemonsets: Api<DaemonSet> = Api::namespaced(client, SYSTEM_NAMESPACE);
                    match timeout_at(end, daemonsets.get_opt(SYSTEM_DAEMONSET)).await {
                        Err(_) => Check::fail(name, late("get daemonset")),
                        Ok(Err(e)) => Check::fail(
                            name,
                            format!("could not read it: {}", describe_kube_error(&e)),
                        ),
                        Ok(Ok(None)) => {
                            Check::fail(name, format!("not found in {SYSTEM_NAMESPACE}"))
                        }
                        Ok(Ok(Some(ds))) => daemonset_readiness(name, &ds),
                    }
                }
            },
            {
                let name = name.clone();
                move || Check::pass(name, CHECKED_AT_RUN_TIME)
            },
        )
        .map(move |r| r.unwrap_or_else(not_connected(name)))
    };

    let statefulset_check = {
        let name = statefulset_check_name(SYSTEM_STATEFULSET);
        exec.api(
            get(
                format!(
                    "/apis/apps/v1/namespaces/{SYSTEM_NAMESPACE}/statefulsets/{SYSTEM_STATEFULSET}"
                ),
                format!(
                    "statefulset {SYSTEM_NAMESPACE}/{SYSTEM_STATEFULSET} has all its replicas ready"
                ),
            ),
            {
                let name = name.clone();
                let late = &late;
                move |client| async move {
                    let statefulsets: Api<StatefulSet> = Api::namespaced(client, SYSTEM_NAMESPACE);
                    match timeout_at(end, statefulsets.get_opt(SYSTEM_STATEFULSET)).await {
                        Err(_) => Check::fail(name, late("get statefulset")),
                        Ok(Err(e)) => Check::fail(
                            name,
                            format!("could not read it: {}", describe_kube_error(&e)),
                        ),
                        Ok(Ok(None)) => {
                            Check::fail(name, format!("not found in {SYSTEM_NAMESPACE}"))
                        }
                        Ok(Ok(Some(sts))) => statefulset_readiness(name, &sts),
                    }
                }
            },
            {
                let name = name.clone();
                move || Check::pass(name, CHECKED_AT_RUN_TIME)
            },
        )
        .map(move |r| r.unwrap_or_else(not_connected(name)))
    };

    let crd_checks = futures_util::future::join_all(SYSTEM_CRDS.iter().map(|c| {
        let late = &late;
        let name = crd_check_name(c);
        exec.api(
            get(
                format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{c}"),
                format!("crd {c} is installed"),
            ),
            {
                let name = name.clone();
                move |client| async move {
                    let crds: Api<CustomResourceDefinition> = Api::all(client);
                    match timeout_at(end, crds.get_opt(c)).await {
                        Err(_) => Check::fail(name, late("get crd")),
                        Ok(Err(e)) => Check::fail(
                            name,
                            format!("could not read crd {c}: {}", describe_kube_error(&e)),
                        ),
                        Ok(Ok(None)) => Check::fail(name, format!("crd {c} is not installed")),
                        Ok(Ok(Some(_))) => Check::pass(name, "installed"),
                    }
                }
            },
            {
                let name = name.clone();
                move || Check::pass(name, CHECKED_AT_RUN_TIME)
            },
        )
        .map(move |r| r.unwrap_or_else(not_connected(name)))
    }));

    let (deployment_checks, daemonset_check, statefulset_check, crd_checks) = tokio::join!(
        deployment_checks,
        daemonset_check,
        statefulset_check,
        crd_checks
    );
    let mut checks = vec![api_check];
    checks.extend(deployment_checks);
    checks.push(daemonset_check);
    checks.push(statefulset_check);
    checks.extend(crd_checks);
    checks
}

/// Connects `exec` to `t` (kubeconfig + context) and runs
/// [`preflight_cluster`], all within `deadline`. A kubeconfig that cannot
/// be loaded fails the API check with that error; a failed API check names
/// the server URL, the kubeconfig and the context.
pub async fn preflight(exec: &Executor, t: &KubeTarget, deadline: Duration) -> Vec<Check> {
    if let Err(e) = exec.connect(t).await {
        let mut checks = vec![Check::fail(API_CHECK, format!("{e:#}"))];
        checks.extend(
            preflight_check_names()
                .into_iter()
                .skip(1)
                .map(|n| Check::fail(n, NOT_CHECKED_UNREACHABLE)),
        );
        return checks;
    }
    let mut checks = Box::pin(preflight_cluster(exec, deadline)).await;
    if let Some(api) = checks.first_mut().filter(|c| !c.ok) {
        // Only to name the server: the kubeconfig loaded a moment ago.
        let server = match Box::pin(load_config(t)).await {
            Ok(c) => c.cluster_url.to_string(),
            Err(_) => "(unknown)".to_string(),
        };
        api.detail = format!(
            "server {server} (kubeconfig {}, {}): {}",
            t.kubeconfig_display(),
            t.context_display(),
            api.detail
        );
    }
    checks
}

fn deployment_readiness(name: String, dep: &Deployment) -> Check {
    let wanted = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = dep
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let detail = format!("{ready}/{wanted} replicas ready");
    if wanted < 1 {
        Check::fail(name, format!("{detail} (scaled to zero)"))
    } else if ready >= wanted {
        Check::pass(name, detail)
    } else {
        Check::fail(name, detail)
    }
}

fn daemonset_readiness(name: String, ds: &DaemonSet) -> Check {
    let (ready, desired) = ds
        .status
        .as_ref()
        .map(|s| (s.number_ready, s.desired_number_scheduled))
        .unwrap_or((0, 0));
    let detail = format!("{ready}/{desired} scheduled pods ready");
    if desired < 1 {
        Check::fail(name, format!("{detail} (scheduled on no node)"))
    } else if ready == desired {
        Check::pass(name, detail)
    } else {
        Check::fail(name, detail)
    }
}

fn statefulset_readiness(name: String, sts: &StatefulSet) -> Check {
    let wanted = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = sts
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let detail = format!("{ready}/{wanted} replicas ready");
    if wanted >= 1 && ready >= wanted {
        Check::pass(name, detail)
    } else {
        Check::fail(name, detail)
    }
}

/// Renders a kube error in one line: an API error as `404 NotFound: <message>`,
/// anything else as its message followed by the causes it does not already
/// repeat.
pub fn describe_kube_error(e: &::kube::Error) -> String {
    if let ::kube::Error::Api(status) = e {
        let reason = if status.reason.is_empty() {
            "error"
        } else {
            status.reason.as_str()
        };
        return format!("{} {reason}: {}", status.code, status.message);
    }
    describe_error_chain(e)
}

/// An error and the causes its message does not already contain, joined
/// with `": "`.
pub(crate) fn describe_error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A duration for messages: `300 s`, `0.3 s`.
pub(crate) fn fmt_secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The ActorTemplate custom resource (`ate.dev/v1alpha1`, plural
/// `actortemplates`).
pub fn actor_template_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ate.dev", "v1alpha1", "ActorTemplate"),
        "actortemplates",
    )
}

/// The phase an ActorTemplate reaches once its golden actor is snapshotted.
pub const PHASE_READY: &str = "Ready";

/// A phase that exists in the API but that upstream never sets; seeing it
/// ends the wait at once.
pub const PHASE_FAILED: &str = "Failed";

/// An ActorTemplate whose golden actor is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldenReady {
    /// `status.goldenActorID` (a UUID in the reserved atespace `ate-golden`).
    pub golden_actor_id: String,
    /// `status.goldenSnapshot`: the snapshot's real location, set with
    /// phase Ready from the golden actor's external snapshot URI prefix
    /// (`cmd/atecontroller/internal/controllers/actortemplate_controller.go:159`).
    pub golden_snapshot: Option<String>,
    /// Each phase seen, in order, with when it was first seen (since the wait
    /// began); `""` is the phase of a template without one yet.
    pub phase_history: Vec<(String, Duration)>,
    /// How long the wait took.
    pub waited: Duration,
}

/// Why [`wait_golden`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum GoldenWaitError {
    /// The deadline passed before the template was Ready (phase `Ready`,
    /// condition `Ready=True` and `status.goldenActorID` set).
    #[error("{}", timeout_message(.namespace, .name, *.waited, .last_phase, .last_conditions, .last_golden_actor_id, .last_error))]
    Timeout {
        /// The template's namespace.
        namespace: String,
        /// The template's name.
        name: String,
        /// How long the wait lasted.
        waited: Duration,
        /// The last `status.phase` seen (`Some("")` for a template without a
        /// phase yet); `None` if the template was never read.
        last_phase: Option<String>,
        /// The last conditions seen, each as `Type=Status (Reason: message)`.
        last_conditions: Vec<String>,
        /// The last `status.goldenActorID` seen, if any.
        last_golden_actor_id: Option<String>,
        /// The error of the last poll, if it failed (`404 NotFound: ...` while
        /// the template is not created yet).
        last_error: Option<String>,
    },
    /// The template reports phase `Failed` (which upstream never sets, so
    /// this is worth stopping for).
    #[error(
        "ActorTemplate {namespace}/{name} reports phase Failed after {}; conditions: {}",
        fmt_secs(*.waited),
        conditions_text(.conditions)
    )]
    Failed {
        /// The template's namespace.
        namespace: String,
        /// The template's name.
        name: String,
        /// How long the wait lasted.
        waited: Duration,
        /// The conditions seen with the `Failed` phase.
        conditions: Vec<String>,
    },
}

fn conditions_text(conditions: &[String]) -> String {
    if conditions.is_empty() {
        "none".to_string()
    } else {
        conditions.join(", ")
    }
}

fn timeout_message(
    namespace: &str,
    name: &str,
    waited: Duration,
    last_phase: &Option<String>,
    last_conditions: &[String],
    last_golden_actor_id: &Option<String>,
    last_error: &Option<String>,
) -> String {
    let mut out = format!(
        "ActorTemplate {namespace}/{name} not Ready (phase Ready, condition Ready=True, \
         status.goldenActorID set) after {}",
        fmt_secs(waited)
    );
    match last_phase {
        None => out.push_str("; never seen: no poll returned the template"),
        Some(phase) => {
            out.push_str(&format!(
                "; last phase seen: {phase:?}; conditions: {}; goldenActorID: {}",
                conditions_text(last_conditions),
                last_golden_actor_id.as_deref().unwrap_or("unset")
            ));
        }
    }
    if let Some(e) = last_error {
        out.push_str(&format!("; last poll failed: {e}"));
    }
    out
}

/// What one poll saw of an ActorTemplate's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TemplateStatus {
    phase: String,
    conditions: Vec<String>,
    ready_true: bool,
    golden_actor_id: Option<String>,
    golden_snapshot: Option<String>,
}

fn template_status(obj: &DynamicObject) -> TemplateStatus {
    let status = obj.data.get("status");
    let phase = status
        .and_then(|s| s.get("phase"))
        .and_then(|p| p.as_str())
        .unwrap_or("")
        .to_string();
    let mut conditions = Vec::new();
    let mut ready_true = false;
    for c in status
        .and_then(|s| s.get("conditions"))
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
    {
        let field = |k: &str| c.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let (type_, state, reason, message) = (
            field("type"),
            field("status"),
            field("reason"),
            field("message"),
        );
        if type_ == "Ready" && state == "True" {
            ready_true = true;
        }
        let mut text = format!("{type_}={state}");
        match (reason.is_empty(), message.is_empty()) {
            (true, true) => {}
            (false, true) => text.push_str(&format!(" ({reason})")),
            (true, false) => text.push_str(&format!(" ({message})")),
            (false, false) => text.push_str(&format!(" ({reason}: {message})")),
        }
        conditions.push(text);
    }
    let golden_actor_id = status
        .and_then(|s| s.get("goldenActorID"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let golden_snapshot = status
        .and_then(|s| s.get("goldenSnapshot"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    TemplateStatus {
        phase,
        conditions,
        ready_true,
        golden_actor_id,
        golden_snapshot,
    }
}

/// Polls the ActorTemplate `namespace/name` every `poll` until it is Ready
/// (phase `Ready`, condition `Ready=True`, `status.goldenActorID` set), or
/// `deadline` passes.
///
/// Failed polls (404 while the template is not created yet, transient
/// errors) are remembered, not fatal. On timeout the error carries the last
/// phase, conditions and error seen; phase `Failed` ends the wait at once.
pub async fn wait_golden(
    client: &Client,
    namespace: &str,
    name: &str,
    deadline: Duration,
    poll: Duration,
) -> Result<GoldenReady, GoldenWaitError> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &actor_template_resource());
    let started = Instant::now();
    let end = started + deadline;
    let mut history: Vec<(String, Duration)> = Vec::new();
    let mut last: Option<TemplateStatus> = None;
    let mut last_error: Option<String> = None;
    loop {
        match timeout_at(end, api.get(name)).await {
            Err(_) => break,
            Ok(Err(e)) => last_error = Some(describe_kube_error(&e)),
            Ok(Ok(obj)) => {
                let seen_at = started.elapsed();
                let status = template_status(&obj);
                last_error = None;
                if history.last().map(|(p, _)| p) != Some(&status.phase) {
                    tracing::debug!(namespace, name, phase = %status.phase, "actor template phase");
                    history.push((status.phase.clone(), seen_at));
                }
                if status.phase == PHASE_FAILED {
                    return Err(GoldenWaitError::Failed {
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                        waited: seen_at,
                        conditions: status.conditions,
                    });
                }
                if status.phase == PHASE_READY && status.ready_true {
                    if let Some(id) = &status.golden_actor_id {
                        return Ok(GoldenReady {
                            golden_actor_id: id.clone(),
                            golden_snapshot: status.golden_snapshot.clone(),
                            phase_history: history,
                            waited: seen_at,
                        });
                    }
                }
                last = Some(status);
            }
        }
        let next = Instant::now() + poll;
        if next >= end {
            tokio::time::sleep_until(end).await;
            break;
        }
        tokio::time::sleep_until(next).await;
    }
    let (last_phase, last_conditions, last_golden_actor_id) = match last {
        Some(s) => (Some(s.phase), s.conditions, s.golden_actor_id),
        None => (None, Vec::new(), None),
    };
    Err(GoldenWaitError::Timeout {
        namespace: namespace.to_string(),
        name: name.to_string(),
        waited: started.elapsed(),
        last_phase,
        last_conditions,
        last_golden_actor_id,
        last_error,
    })
}

/// What a recording executor answers for the golden wait: the fields the
/// real one reads, named.
pub const STAND_IN_GOLDEN_ACTOR_ID: &str = "<status.goldenActorID>";
/// See [`STAND_IN_GOLDEN_ACTOR_ID`].
pub const STAND_IN_GOLDEN_SNAPSHOT: &str = "<status.goldenSnapshot>";

/// [`wait_golden`] through `exec`: one recorded step for the whole wait
/// (the same `GET`, every `poll`). A recording executor answers a golden
/// actor [`STAND_IN_GOLDEN_ACTOR_ID`] with snapshot
/// [`STAND_IN_GOLDEN_SNAPSHOT`].
pub async fn wait_golden_with(
    exec: &Executor,
    namespace: &str,
    name: &str,
    deadline: Duration,
    poll: Duration,
) -> anyhow::Result<GoldenReady> {
    let call = ApiCall::new(
        "GET",
        format!("/apis/ate.dev/v1alpha1/namespaces/{namespace}/actortemplates/{name}"),
        format!(
            "poll until ActorTemplate {namespace}/{name} is Ready (phase Ready, condition \
             Ready=True, status.goldenActorID set)"
        ),
    );
    let ready = exec
        .api(
            call,
            |client| async move {
                wait_golden(&client, namespace, name, deadline, poll)
                    .await
                    .map_err(anyhow::Error::from)
            },
            || {
                Ok(GoldenReady {
                    golden_actor_id: STAND_IN_GOLDEN_ACTOR_ID.to_owned(),
                    golden_snapshot: Some(STAND_IN_GOLDEN_SNAPSHOT.to_owned()),
                    phase_history: Vec::new(),
                    waited: Duration::ZERO,
                })
            },
        )
        .await?;
    ready
}
