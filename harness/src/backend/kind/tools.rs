//! The command-line tools the kind backend drives, as command values:
//! `kind`, `docker` (only to create a cluster's local registry), `ko`,
//! `kubectl` and the `kubectl ate` plugin. Each function returns an
//! [`ate_cmd::Cmd`] (program, argument vector, environment, working
//! directory); nothing here runs anything, so the dry run prints exactly the
//! vectors a real run executes.
//!
//! **Invariants.** No shell, ever: every command is an argument vector.
//! Every `kubectl` and `kubectl ate` command names its context
//! (`--context=<ctx>`), and its kubeconfig when one was given. `ko apply`
//! runs in the Agent Substrate checkout with `KO_CONFIG_PATH` set to it.

use crate::backend::ActorState;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ate_cmd::Cmd;

/// The local registry container kind's nodes pull from (CONTRACT.md III).
pub const REGISTRY_CONTAINER: &str = "kind-registry";
/// Where the local registry is published on the host.
pub const REGISTRY_HOST_PORT: &str = "127.0.0.1:5001";
/// Also published on IPv6 loopback (`hack/create-kind-cluster.sh:40`).
pub const REGISTRY_HOST_PORT_V6: &str = "[::1]:5001";
/// The registry image (`hack/create-kind-cluster.sh:42`).
pub const REGISTRY_IMAGE: &str = "registry:3";
/// The label marking a registry container made for Agent Substrate.
pub const REGISTRY_LABEL: &str = "created-by=agent-substrate";
/// The kind version upstream pins (`hack/tools/kind/go.mod`).
pub const KIND_VERSION: &str = "v0.32.0";
/// The kustomize overlay upstream's `deploy_atelet` renders on kind
/// (`hack/install-ate.sh:344`).
pub const ATELET_KIND_OVERLAY: &str = "manifests/ate-install/kind/atelet";
/// The registry name nodes and `KO_DOCKER_REPO` use.
pub const REGISTRY_NAME: &str = "localhost:5001";

/// The tools, and the cluster coordinates every command carries.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `kind` program (a name looked up on the search path, or a path).
    pub kind: PathBuf,
    /// `docker` program.
    pub docker: PathBuf,
    /// `ko` program.
    pub ko: PathBuf,
    /// `kubectl` program (also runs the `ate` plugin).
    pub kubectl: PathBuf,
    /// `git` program (reads the checkout's commit for the fingerprint).
    pub git: PathBuf,
    /// Kube context.
    pub context: String,
    /// Kubeconfig, when not the default.
    pub kubeconfig: Option<PathBuf>,
    /// Time limit of one command.
    pub timeout: Duration,
}

impl Tools {
    /// Tools found as `kind`, `docker`, `ko`, `kubectl`.
    pub fn new(context: String, kubeconfig: Option<PathBuf>, timeout: Duration) -> Tools {
        Tools {
            kind: "kind".into(),
            docker: "docker".into(),
            ko: "ko".into(),
            kubectl: "kubectl".into(),
            git: "git".into(),
            context,
            kubeconfig,
            timeout,
        }
    }

    /// Resolves every program on `search_path` (`PATH` when `None`) to an
    /// absolute path; a program not found keeps its name (the preflight
    /// reports it).
    pub fn resolved(mut self, search_path: Option<&OsString>) -> Tools {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let path = search_path
            .cloned()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        for p in [
            &mut self.kind,
            &mut self.docker,
            &mut self.ko,
            &mut self.kubectl,
            &mut self.git,
        ] {
            if let Ok(found) = which::which_in(&*p, Some(&path), &cwd) {
                *p = found;
            }
        }
        self
    }

    fn cmd(&self, program: &Path) -> Cmd {
        Cmd::new(program).timeout(self.timeout)
    }

    // ---- kind ---------------------------------------------------------

    /// `kind get clusters`.
    pub fn kind_get_clusters(&self) -> Cmd {
        self.cmd(&self.kind).args(["get", "clusters"])
    }

    /// `kind create cluster --name <n> --config <config> [--kubeconfig <k>] --wait 120s`.
    pub fn kind_create_cluster(&self, name: &str, config: &Path) -> Cmd {
        let mut c = self
            .cmd(&self.kind)
            .args(["create", "cluster", "--name", name, "--config"])
            .arg(config);
        if let Some(k) = &self.kubeconfig {
            c = c.arg("--kubeconfig").arg(k);
        }
        c.args(["--wait", "120s"])
            .timeout(self.timeout.max(Duration::from_secs(600)))
    }

    /// `kind get nodes --name <n>`.
    pub fn kind_get_nodes(&self, name: &str) -> Cmd {
        self.cmd(&self.kind).args(["get", "nodes", "--name", name])
    }

    /// `kind delete cluster --name <n> [--kubeconfig <k>]`.
    pub fn kind_delete_cluster(&self, name: &str) -> Cmd {
        let mut c = self
            .cmd(&self.kind)
            .args(["delete", "cluster", "--name", name]);
        if let Some(k) = &self.kubeconfig {
            c = c.arg("--kubeconfig").arg(k);
        }
        c.timeout(self.timeout.max(Duration::from_secs(300)))
    }

    /// `kind version`.
    pub fn kind_version(&self) -> Cmd {
        self.cmd(&self.kind).arg("version")
    }

    // ---- docker (the local registry of a cluster this run creates) ----

    /// `docker inspect --format {{.State.Running}} kind-registry`.
    pub fn registry_inspect(&self) -> Cmd {
        self.cmd(&self.docker).args([
            "inspect",
            "--format",
            "{{.State.Running}}",
            REGISTRY_CONTAINER,
        ])
    }

    /// `docker run -d --restart=always --label created-by=agent-substrate -p
    /// 127.0.0.1:5001:5000 -p [::1]:5001:5000 --network bridge --name
    /// kind-registry registry:3`, as `hack/create-kind-cluster.sh:36-42`
    /// (the label is what `hack/delete-kind-cluster.sh:41-42` keys on).
    pub fn registry_run(&self) -> Cmd {
        self.cmd(&self.docker).args([
            "run",
            "-d",
            "--restart=always",
            "--label",
            REGISTRY_LABEL,
            "-p",
            &format!("{REGISTRY_HOST_PORT}:5000"),
            "-p",
            &format!("{REGISTRY_HOST_PORT_V6}:5000"),
            "--network",
            "bridge",
            "--name",
            REGISTRY_CONTAINER,
            REGISTRY_IMAGE,
        ])
    }

    /// `docker exec <node> sysctl net.ipv4.conf.all.proxy_arp=1`: gVisor
    /// loopback pod-to-pod networking needs it
    /// (`hack/create-kind-cluster.sh:94-98`).
    pub fn node_proxy_arp(&self, node: &str) -> Cmd {
        self.cmd(&self.docker)
            .args(["exec", node, "sysctl", "net.ipv4.conf.all.proxy_arp=1"])
    }

    /// `kubectl --context=<ctx> apply -f -` with the `local-registry-hosting`
    /// ConfigMap on standard input (`hack/create-kind-cluster.sh:126-138`).
    pub fn registry_hosting_configmap(&self) -> Cmd {
        self.kubectl(["apply", "-f", "-"]).stdin_bytes(format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local-registry-hosting\n  namespace: kube-public\ndata:\n  localRegistryHosting.v1: |\n    host: \"{REGISTRY_NAME}\"\n    help: \"https://kind.sigs.k8s.io/docs/user/local-registry/\"\n"
        ))
    }

    /// `docker start kind-registry`.
    pub fn registry_start(&self) -> Cmd {
        self.cmd(&self.docker).args(["start", REGISTRY_CONTAINER])
    }

    /// `docker network connect kind kind-registry`.
    pub fn registry_connect(&self) -> Cmd {
        self.cmd(&self.docker)
            .args(["network", "connect", "kind", REGISTRY_CONTAINER])
    }

    /// `docker rm -f kind-registry`.
    pub fn registry_remove(&self) -> Cmd {
        self.cmd(&self.docker)
            .args(["rm", "-f", REGISTRY_CONTAINER])
    }

    /// `docker exec <node> mkdir -p /etc/containerd/certs.d/localhost:5001`.
    pub fn node_registry_dir(&self, node: &str) -> Cmd {
        self.cmd(&self.docker).args([
            "exec",
            node,
            "mkdir",
            "-p",
            &format!("/etc/containerd/certs.d/{REGISTRY_NAME}"),
        ])
    }

    /// `docker exec -i <node> cp /dev/stdin /etc/containerd/certs.d/localhost:5001/hosts.toml`,
    /// the file's content on standard input: nodes reach the registry as
    /// `kind-registry:5000`.
    pub fn node_registry_hosts(&self, node: &str) -> Cmd {
        self.cmd(&self.docker)
            .args([
                "exec",
                "-i",
                node,
                "cp",
                "/dev/stdin",
                &format!("/etc/containerd/certs.d/{REGISTRY_NAME}/hosts.toml"),
            ])
            .stdin_bytes(format!("[host.\"http://{REGISTRY_CONTAINER}:5000\"]\n"))
    }

    // ---- ko -------------------------------------------------------------

    /// `ko version`.
    pub fn ko_version(&self) -> Cmd {
        self.cmd(&self.ko).arg("version")
    }

    /// `ko apply -f <manifest> -- --context=<ctx> [--kubeconfig=<k>]`, run
    /// in the Agent Substrate checkout with `KO_CONFIG_PATH` set to it (ko
    /// reads `.ko.yaml` from there; without it ko silently builds amd64
    /// only) and `KO_DOCKER_REPO` set.
    pub fn ko_apply(&self, manifest: &Path, substrate_root: &Path, ko_docker_repo: &str) -> Cmd {
        let mut c = self
            .cmd(&self.ko)
            .arg("apply")
            .arg("-f")
            .arg(manifest)
            .arg("--")
            .arg(format!("--context={}", self.context));
        if let Some(k) = &self.kubeconfig {
            c = c.arg(format!("--kubeconfig={}", k.display()));
        }
        ko_env(c, substrate_root, ko_docker_repo)
            .timeout(self.timeout.max(Duration::from_secs(600)))
    }

    /// `ko resolve -f -` in the checkout, with ko's environment: the middle
    /// of upstream's `deploy_atelet` pipeline (`hack/install-ate.sh:344`).
    /// No `-- --context=...`: only ko's apply, create, delete and run take
    /// kubectl arguments (`hack/install-ate.sh:113-123`).
    pub fn ko_resolve_stdin(&self, substrate_root: &Path, ko_docker_repo: &str) -> Cmd {
        let c = self.cmd(&self.ko).args(["resolve", "-f", "-"]);
        ko_env(c, substrate_root, ko_docker_repo)
            .timeout(self.timeout.max(Duration::from_secs(900)))
    }

    /// `kubectl kustomize <overlay> --load-restrictor LoadRestrictionsNone`
    /// in the checkout (local rendering: upstream calls it without
    /// `run_kubectl`, so without a context; `hack/install-ate.sh:344`).
    pub fn kubectl_kustomize(&self, substrate_root: &Path, overlay: &str) -> Cmd {
        self.cmd(&self.kubectl)
            .args([
                "kustomize",
                overlay,
                "--load-restrictor",
                "LoadRestrictionsNone",
            ])
            .cwd(substrate_root)
    }

    /// `kubectl --context=<ctx> apply -f -` (the manifest on standard input;
    /// `hack/install-ate.sh:349`).
    pub fn kubectl_apply_stdin(&self) -> Cmd {
        self.kubectl(["apply", "-f", "-"])
    }

    /// `kubectl --context=<ctx> rollout status <what> -n ate-system
    /// --timeout=120s` (`hack/install-ate.sh:296-300`, `:350`).
    pub fn kubectl_rollout_status(&self, what: &str) -> Cmd {
        self.kubectl([
            "rollout",
            "status",
            what,
            "-n",
            "ate-system",
            "--timeout=120s",
        ])
        .timeout(self.timeout.max(Duration::from_secs(150)))
    }

    /// `kubectl --context=<ctx> get pods -n ate-system -l app=atelet -o json`
    /// (the DaemonSet's pod label, `manifests/ate-install/atelet.yaml:57-61`).
    pub fn kubectl_atelet_pods(&self) -> Cmd {
        self.kubectl([
            "get",
            "pods",
            "-n",
            "ate-system",
            "-l",
            "app=atelet",
            "-o",
            "json",
        ])
    }

    /// `<checkout>/hack/install-ate-kind.sh --deploy-ate-system`, run in the
    /// checkout with `KUBECTL_CONTEXT` (which `hack/install-ate.sh:100-104`
    /// passes to every kubectl) and `KO_DOCKER_REPO`; the one upstream
    /// script the harness runs, as an argument vector.
    pub fn install_ate_kind(&self, substrate_root: &Path, ko_docker_repo: &str) -> Cmd {
        let mut c = Cmd::new(substrate_root.join("hack/install-ate-kind.sh"))
            .arg("--deploy-ate-system")
            .env("KUBECTL_CONTEXT", &self.context)
            .env("KO_DOCKER_REPO", ko_docker_repo)
            .cwd(substrate_root)
            .timeout(self.timeout.max(Duration::from_secs(1800)));
        if let Some(k) = &self.kubeconfig {
            c = c.env("KUBECONFIG", k);
        }
        c
    }

    /// `git -C <checkout> rev-parse HEAD`.
    pub fn git_head(&self, substrate_root: &Path) -> Cmd {
        self.cmd(&self.git)
            .arg("-C")
            .arg(substrate_root)
            .args(["rev-parse", "HEAD"])
    }

    /// `git -C <checkout> status --porcelain` (empty: not dirty).
    pub fn git_status(&self, substrate_root: &Path) -> Cmd {
        self.cmd(&self.git)
            .arg("-C")
            .arg(substrate_root)
            .args(["status", "--porcelain"])
    }

    // ---- kubectl --------------------------------------------------------

    /// `kubectl --context=<ctx> [--kubeconfig=<k>] <args...>`.
    pub fn kubectl<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = self
            .cmd(&self.kubectl)
            .arg(format!("--context={}", self.context));
        if let Some(k) = &self.kubeconfig {
            c = c.arg(format!("--kubeconfig={}", k.display()));
        }
        c.args(args)
    }

    /// `kubectl version --client -o json`.
    pub fn kubectl_version(&self) -> Cmd {
        self.cmd(&self.kubectl)
            .args(["version", "--client", "-o", "json"])
    }

    /// `kubectl --context=<ctx> delete --ignore-not-found -f <manifest>`
    /// (`ko delete` rejects that shape).
    pub fn kubectl_delete_manifest(&self, manifest: &Path) -> Cmd {
        self.kubectl(["delete", "--ignore-not-found", "--wait=true", "-f"])
            .arg(manifest)
            .timeout(self.timeout.max(Duration::from_secs(300)))
    }

    // ---- kubectl ate ----------------------------------------------------

    /// `kubectl ate <args...> --context=<ctx> [--kubeconfig=<k>]`.
    pub fn ate<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = self.cmd(&self.kubectl).arg("ate").args(args);
        c = c.arg(format!("--context={}", self.context));
        if let Some(k) = &self.kubeconfig {
            c = c.arg(format!("--kubeconfig={}", k.display()));
        }
        c
    }

    /// `kubectl ate --version`: the plugin has no `version` subcommand; its
    /// cobra root sets `Version` (`cmd/kubectl-ate/internal/cmd/root.go:38`),
    /// which gives the root a `--version` flag printing `kubectl-ate version
    /// <version.String()>` (`internal/version/version.go:44`).
    pub fn ate_version(&self) -> Cmd {
        self.cmd(&self.kubectl).args(["ate", "--version"])
    }

    /// `kubectl ate create atespace <a>`.
    pub fn ate_create_atespace(&self, atespace: &str) -> Cmd {
        self.ate(["create", "atespace", atespace])
    }

    /// `kubectl ate delete atespace <a>`.
    pub fn ate_delete_atespace(&self, atespace: &str) -> Cmd {
        self.ate(["delete", "atespace", atespace])
    }

    /// `kubectl ate create actor <id> --template <ns>/<name> -a <a>`.
    pub fn ate_create_actor(&self, atespace: &str, id: &str, template: &str) -> Cmd {
        self.ate([
            "create",
            "actor",
            id,
            "--template",
            template,
            "-a",
            atespace,
        ])
    }

    /// `kubectl ate resume actor <id> -a <a>` (returns once RUNNING).
    pub fn ate_resume(&self, atespace: &str, id: &str) -> Cmd {
        self.ate(["resume", "actor", id, "-a", atespace])
    }

    /// `kubectl ate suspend actor <id> -a <a>`.
    pub fn ate_suspend(&self, atespace: &str, id: &str) -> Cmd {
        self.ate(["suspend", "actor", id, "-a", atespace])
    }

    /// `kubectl ate delete actor <id> -a <a>` (only a suspended actor).
    pub fn ate_delete_actor(&self, atespace: &str, id: &str) -> Cmd {
        self.ate(["delete", "actor", id, "-a", atespace])
    }

    /// `kubectl ate get actor <id> -a <a> -o json`.
    pub fn ate_get_actor(&self, atespace: &str, id: &str) -> Cmd {
        self.ate(["get", "actor", id, "-a", atespace, "-o", "json"])
    }
}

/// ko's environment, as upstream's kind install sets it: `KO_CONFIG_PATH`
/// (the checkout: `.ko.yaml` is read from there), `KO_DOCKER_REPO`, and
/// `KO_DEFAULTPLATFORMS=linux/<host arch>` (`hack/install-ate-kind.sh:28-30`:
/// without it `.ko.yaml`'s `defaultPlatforms` builds amd64 and arm64);
/// the working directory is the checkout (ko:// paths resolve only there).
fn ko_env(c: Cmd, substrate_root: &Path, ko_docker_repo: &str) -> Cmd {
    c.env("KO_CONFIG_PATH", substrate_root)
        .env("KO_DOCKER_REPO", ko_docker_repo)
        .env("KO_DEFAULTPLATFORMS", format!("linux/{}", go_arch()))
        .cwd(substrate_root)
}

/// The host architecture in Go's spelling (`go env GOARCH`).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The image digests a `ko resolve` output names for `image:` lines whose
/// reference contains `name` (e.g. `atelet`): ko resolves each `ko://`
/// reference to `<repo>/<name>-<hash>@sha256:<digest>`.
pub fn resolved_digests(manifest: &str, name: &str) -> Vec<String> {
    let mut out: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("image:"))
        .map(|r| r.trim().trim_matches('"'))
        .filter(|r| r.contains(name))
        .filter_map(|r| r.split_once('@').map(|(_, d)| d.to_owned()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every atelet pod's running image digest from `kubectl get pods -o json`:
/// `(pod, spec digest, running digest)`; the running one is
/// `status.containerStatuses[name=atelet].imageID` after its `@`.
pub fn atelet_pod_digests(json: &str) -> Result<Vec<(String, String, String)>, String> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| format!("`kubectl get pods -l app=atelet -o json` printed no JSON ({e})"))?;
    let items = v
        .get("items")
        .and_then(|i| i.as_array())
        .ok_or("`kubectl get pods -o json` printed no items")?;
    let digest = |r: &str| {
        r.split_once('@')
            .map(|(_, d)| d.to_owned())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for p in items {
        let name = p
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or("?");
        let spec = p
            .pointer("/spec/containers")
            .and_then(|c| c.as_array())
            .and_then(|c| {
                c.iter()
                    .find(|c| c.get("name").and_then(|n| n.as_str()) == Some("atelet"))
            })
            .and_then(|c| c.get("image"))
            .and_then(|i| i.as_str())
            .unwrap_or("");
        let running = p
            .pointer("/status/containerStatuses")
            .and_then(|c| c.as_array())
            .and_then(|c| {
                c.iter()
                    .find(|c| c.get("name").and_then(|n| n.as_str()) == Some("atelet"))
            })
            .and_then(|c| c.get("imageID"))
            .and_then(|i| i.as_str())
            .unwrap_or("");
        out.push((name.to_owned(), digest(spec), digest(running)));
    }
    Ok(out)
}

/// The status upstream prints for an actor whose `status` field is absent:
/// protojson omits zero values, and `STATUS_UNSPECIFIED` is 0
/// (`pkg/proto/ateapipb/ateapi.proto:107`).
pub const STATUS_UNSPECIFIED: &str = "STATUS_UNSPECIFIED";

/// An actor's status as `kubectl ate get actor <id> -a <a> -o json` prints
/// it: always a list, the protojson of `ListActorsResponse`
/// (`cmd/kubectl-ate/internal/printer/printer.go:57`, `PrintActor` at :129
/// prints a list of one), `{"actors":[{"actorId":..,"atespace":..,
/// "status":"STATUS_RUNNING",..}]}`. The actor is found by `actorId` (and
/// `atespace` when printed); an absent `status` is `STATUS_UNSPECIFIED`.
/// Any other shape is an error naming what was printed.
pub fn parse_actor_state(json: &str, atespace: &str, id: &str) -> Result<String, String> {
    let shown = || crate::cmd::tail(json.as_bytes());
    let v: serde_json::Value = serde_json::from_str(json.trim()).map_err(|e| {
        format!(
            "`kubectl ate get actor {id} -a {atespace} -o json` printed no JSON ({e}): {}",
            shown()
        )
    })?;
    let list = v.get("actors").and_then(|a| a.as_array()).ok_or_else(|| {
        format!(
            "`kubectl ate get actor {id} -a {atespace} -o json` printed no \"actors\" list (upstream prints a ListActorsResponse): {}",
            shown()
        )
    })?;
    let actor = list
        .iter()
        .find(|a| {
            a.get("actorId").and_then(|x| x.as_str()) == Some(id)
                && a.get("atespace")
                    .and_then(|x| x.as_str())
                    .is_none_or(|x| x == atespace)
        })
        .ok_or_else(|| {
            format!(
                "`kubectl ate get actor {id} -a {atespace}` listed {} actor(s), none with actorId {id:?} in atespace {atespace:?}: {}",
                list.len(),
                shown()
            )
        })?;
    match actor.get("status") {
        None => Ok(STATUS_UNSPECIFIED.to_owned()),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "actor {atespace}/{id}: status is {other}, not one of upstream's STATUS_* names"
        )),
    }
}

/// The seam's state for an upstream status name, exactly as
/// `pkg/proto/ateapipb/ateapi.proto:106-114` spells them (`STATUS_RUNNING`,
/// ...). `STATUS_UNSPECIFIED` and anything else stay
/// [`ActorState::Unknown`] with the raw text.
pub fn actor_state(name: &str) -> ActorState {
    match name {
        "STATUS_RESUMING" => ActorState::Resuming,
        "STATUS_RUNNING" => ActorState::Running,
        "STATUS_SUSPENDING" => ActorState::Suspending,
        "STATUS_SUSPENDED" => ActorState::Suspended,
        "STATUS_PAUSING" | "STATUS_PAUSED" => ActorState::Paused,
        _ => ActorState::Unknown(name.to_owned()),
    }
}

/// Whether a failed `kubectl ate` call's error text says the actor is gone:
/// ateapi answers `codes.NotFound` with "Actor <id> not found"
/// (`cmd/ateapi/internal/controlapi/get_actor.go:34`), which the plugin
/// prints as `... rpc error: code = NotFound desc = Actor <id> not found`.
pub fn is_actor_not_found(error_text: &str, id: &str) -> bool {
    error_text.contains("code = NotFound") && error_text.contains(&format!("Actor {id} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &Cmd) -> Vec<String> {
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn tools(kubeconfig: Option<&str>) -> Tools {
        Tools::new(
            "kind-kind".into(),
            kubeconfig.map(PathBuf::from),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn ko_apply_has_the_context_after_the_separator_and_runs_in_the_checkout() {
        let c = tools(None).ko_apply(
            Path::new("/r/probe.yaml"),
            Path::new("/src/substrate"),
            "localhost:5001",
        );
        assert_eq!(
            argv(&c),
            [
                "ko",
                "apply",
                "-f",
                "/r/probe.yaml",
                "--",
                "--context=kind-kind"
            ]
        );
        let env: Vec<_> = c.get_envs().collect();
        assert_eq!(env[0].0, "KO_CONFIG_PATH");
        assert_eq!(env[0].1, "/src/substrate");
        assert_eq!(c.get_cwd(), Some(Path::new("/src/substrate")));
        let c = tools(Some("/k/config")).ko_apply(Path::new("/m"), Path::new("/s"), "r");
        assert_eq!(
            argv(&c)[4..],
            ["--", "--context=kind-kind", "--kubeconfig=/k/config"]
        );
    }

    #[test]
    fn kubectl_and_ate_carry_context_and_kubeconfig() {
        let t = tools(Some("/k"));
        assert_eq!(
            argv(&t.kubectl_delete_manifest(Path::new("/m.yaml"))),
            [
                "kubectl",
                "--context=kind-kind",
                "--kubeconfig=/k",
                "delete",
                "--ignore-not-found",
                "--wait=true",
                "-f",
                "/m.yaml"
            ]
        );
        assert_eq!(
            argv(&t.ate_create_actor("conf-1", "probe-alpha-1", "ns/probe")),
            [
                "kubectl",
                "ate",
                "create",
                "actor",
                "probe-alpha-1",
                "--template",
                "ns/probe",
                "-a",
                "conf-1",
                "--context=kind-kind",
                "--kubeconfig=/k"
            ]
        );
        assert_eq!(
            argv(&tools(None).ate_get_actor("a", "x")),
            [
                "kubectl",
                "ate",
                "get",
                "actor",
                "x",
                "-a",
                "a",
                "-o",
                "json",
                "--context=kind-kind"
            ]
        );
    }

    #[test]
    fn actor_status_is_read_from_upstreams_list_shape() {
        // printer.go:57 prints a ListActorsResponse even for one actor.
        let one = r#"{"actors":[{"actorId":"x","version":"3","actorTemplateNamespace":"ns","actorTemplateName":"t","status":"STATUS_RUNNING","atespace":"a"}]}"#;
        assert_eq!(parse_actor_state(one, "a", "x").unwrap(), "STATUS_RUNNING");
        assert_eq!(actor_state("STATUS_RUNNING"), ActorState::Running);
        let two = r#"{"actors":[{"actorId":"y","status":"STATUS_RUNNING","atespace":"a"},{"actorId":"x","status":"STATUS_SUSPENDED","atespace":"a"}]}"#;
        assert_eq!(
            actor_state(&parse_actor_state(two, "a", "x").unwrap()),
            ActorState::Suspended
        );
        // protojson omits the zero value: no status is STATUS_UNSPECIFIED.
        let zero = r#"{"actors":[{"actorId":"x","atespace":"a"}]}"#;
        assert_eq!(
            parse_actor_state(zero, "a", "x").unwrap(),
            STATUS_UNSPECIFIED
        );
        assert_eq!(
            actor_state(STATUS_UNSPECIFIED),
            ActorState::Unknown("STATUS_UNSPECIFIED".into())
        );
        for (name, want) in [
            ("STATUS_RESUMING", ActorState::Resuming),
            ("STATUS_SUSPENDING", ActorState::Suspending),
            ("STATUS_PAUSING", ActorState::Paused),
            ("STATUS_PAUSED", ActorState::Paused),
        ] {
            assert_eq!(actor_state(name), want, "{name}");
        }
    }

    #[test]
    fn shapes_upstream_never_prints_are_errors_naming_the_output() {
        // The old invented prefix is not upstream's: it must not map.
        assert_eq!(
            actor_state("ACTOR_STATE_RUNNING"),
            ActorState::Unknown("ACTOR_STATE_RUNNING".into())
        );
        let e = parse_actor_state("not json", "a", "x").unwrap_err();
        assert!(
            e.contains("printed no JSON") && e.contains("not json"),
            "{e}"
        );
        let e = parse_actor_state(r#"{"status":{"state":"RUNNING"}}"#, "a", "x").unwrap_err();
        assert!(e.contains("no \"actors\" list"), "{e}");
        let e = parse_actor_state(r#"{"actors":[]}"#, "a", "x").unwrap_err();
        assert!(e.contains("listed 0 actor(s)"), "{e}");
        let e = parse_actor_state(r#"{"actors":[{"actorId":"x","atespace":"b"}]}"#, "a", "x")
            .unwrap_err();
        assert!(e.contains("in atespace \"a\""), "{e}");
    }

    #[test]
    fn ate_version_is_the_root_flag() {
        assert_eq!(
            argv(&tools(None).ate_version()),
            ["kubectl", "ate", "--version"]
        );
    }

    #[test]
    fn not_found_is_read_from_ateapis_text() {
        let t = "Error: failed to get actor: rpc error: code = NotFound desc = Actor x not found";
        assert!(is_actor_not_found(t, "x"));
        assert!(!is_actor_not_found(t, "y"));
        assert!(!is_actor_not_found("Error: connection refused", "x"));
    }
}
