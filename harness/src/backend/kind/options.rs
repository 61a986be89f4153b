//! The kind backend's options: its flag group (`--cluster`, `--context`,
//! ...), their defaults and validation, and the options the backend is
//! built from.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::flags::{Spec, Values};
use crate::run_id::RunId;

/// The kind backend's flags.
pub const FLAGS: &[Spec] = &[
    Spec {
        flag: "--kubeconfig",
        env: "KUBECONFIG",
        value: Some("PATH"),
        help: "kubeconfig (default: kube's own lookup)",
    },
    Spec {
        flag: "--context",
        env: "ATE_KUBE_CONTEXT",
        value: Some("NAME"),
        help: "kube context (KUBECTL_CONTEXT also works; default kind-<cluster>)",
    },
    Spec {
        flag: "--substrate-root",
        env: "ATE_SUBSTRATE_ROOT",
        value: Some("DIR"),
        help: "Agent Substrate checkout (ko apply runs there)",
    },
    Spec {
        flag: "--cluster",
        env: "ATE_KIND_CLUSTER",
        value: Some("NAME"),
        help: "kind cluster name (default kind)",
    },
    Spec {
        flag: "--create-cluster",
        env: "ATE_CREATE_CLUSTER",
        value: None,
        help: "create the kind cluster and its registry if missing (deleted again at the end)",
    },
    Spec {
        flag: "--install",
        env: "ATE_INSTALL",
        value: None,
        help: "install Agent Substrate with the checkout's hack/install-ate-kind.sh --deploy-ate-system first",
    },
    Spec {
        flag: "--deploy-agent",
        env: "ATE_DEPLOY_AGENT",
        value: None,
        help: "build and deploy atelet from the checkout (kubectl kustomize | ko resolve | kubectl apply) and check every atelet pod runs that digest",
    },
    Spec {
        flag: "--bucket-name",
        env: "BUCKET_NAME",
        value: Some("NAME"),
        help: "snapshot bucket",
    },
    Spec {
        flag: "--ko-docker-repo",
        env: "KO_DOCKER_REPO",
        value: Some("REPO"),
        help: "registry for the probe image and ko builds",
    },
    Spec {
        flag: "--dry-run",
        env: "ATE_DRY_RUN",
        value: None,
        help: "print every command and API call the kind backend would make; start nothing",
    },
];

/// What the kind flags say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindFlags {
    /// Kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Kube context.
    pub context: Option<String>,
    /// Agent Substrate checkout.
    pub substrate_root: Option<PathBuf>,
    /// kind cluster name.
    pub cluster: String,
    /// Create the cluster when it is missing.
    pub create_cluster: bool,
    /// Install Agent Substrate with the checkout's install script.
    pub install: bool,
    /// Build and deploy atelet from the checkout.
    pub deploy_agent: bool,
    /// Snapshot bucket (`BUCKET_NAME`; empty is missing).
    pub bucket_name: Option<String>,
    /// Registry for the probe image and ko (`KO_DOCKER_REPO`).
    pub ko_docker_repo: Option<String>,
    /// Print the plan, run nothing.
    pub dry_run: bool,
}

impl KindFlags {
    /// Reads and checks the group.
    pub fn from_values(v: &Values<'_>) -> anyhow::Result<KindFlags> {
        let cluster = v.get("--cluster").unwrap_or_else(|| "kind".into());
        if !valid_cluster_name(&cluster) {
            anyhow::bail!(
                "invalid kind cluster name {cluster:?}: use 1 to 50 of a-z, 0-9 and -, starting and ending with a letter or digit"
            );
        }
        Ok(KindFlags {
            kubeconfig: v.get("--kubeconfig").map(PathBuf::from),
            context: v.get("--context").or_else(|| v.env("KUBECTL_CONTEXT")),
            substrate_root: v.get("--substrate-root").map(PathBuf::from),
            cluster,
            create_cluster: v.switch("--create-cluster")?,
            install: v.switch("--install")?,
            deploy_agent: v.switch("--deploy-agent")?,
            bucket_name: v.get("--bucket-name"),
            ko_docker_repo: v.get("--ko-docker-repo"),
            dry_run: v.switch("--dry-run")?,
        })
    }
}

/// A kind cluster name: a DNS label of at most 50 characters (kind adds
/// suffixes to it for node names).
fn valid_cluster_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 50
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// How to reach and drive the cluster.
#[derive(Debug, Clone)]
pub struct KindOptions {
    /// This run's ID (names every resource).
    pub run_id: RunId,
    /// kind cluster name.
    pub cluster: String,
    /// Create the cluster (and the local registry) when it is missing.
    pub create_cluster: bool,
    /// Run the checkout's `hack/install-ate-kind.sh --deploy-ate-system`
    /// before the preflight.
    pub install: bool,
    /// Build and deploy atelet from the checkout before the preflight, and
    /// check every atelet pod runs the digest just built.
    pub deploy_agent: bool,
    /// Kube context (default `kind-<cluster>`).
    pub context: Option<String>,
    /// Kubeconfig (default: kube's own lookup).
    pub kubeconfig: Option<PathBuf>,
    /// The Agent Substrate checkout (`ko apply` runs there).
    pub substrate_root: Option<PathBuf>,
    /// Snapshot bucket.
    pub bucket_name: Option<String>,
    /// Registry for the probe image and ko.
    pub ko_docker_repo: Option<String>,
    /// Another probe binary (static).
    pub probe_bin: Option<PathBuf>,
    /// `fixtures/` of this workspace.
    pub fixtures_dir: PathBuf,
    /// Where rendered manifests and logs go.
    pub work_dir: PathBuf,
    /// Where the tools are looked up (default `PATH`).
    pub search_path: Option<OsString>,
    /// Time limit of one command (long ones get more).
    pub command_timeout: Duration,
    /// Time limit of the cluster preflight.
    pub preflight_deadline: Duration,
    /// Record the plan; make no call.
    pub dry_run: bool,
    /// Where the run's record (what it made, for `gc`) is kept; `None`:
    /// no record.
    pub state_dir: Option<PathBuf>,
}

impl KindOptions {
    /// The context commands and kube-rs use.
    pub fn context(&self) -> String {
        self.context
            .clone()
            .unwrap_or_else(|| format!("kind-{}", self.cluster))
    }

    /// The run's namespace.
    pub fn namespace(&self) -> String {
        self.run_id.namespace()
    }

    /// The run's WorkerPool (also its `workload` label).
    pub fn pool(&self) -> String {
        self.run_id.unique("probe")
    }
}
