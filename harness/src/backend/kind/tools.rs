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

    /// `docker run -d --restart=always -p 127.0.0.1:5001:5000 --network bridge --name kind-registry registry:2`.
    pub fn registry_run(&self) -> Cmd {
        self.cmd(&self.docker).args([
            "run",
            "-d",
            "--restart=always",
            "-p",
            &format!("{REGISTRY_HOST_PORT}:5000"),
            "--network",
            "bridge",
            "--name",
            REGISTRY_CONTAINER,
            "registry:2",
        ])
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
        c.env("KO_CONFIG_PATH", substrate_root)
            .env("KO_DOCKER_REPO", ko_docker_repo)
            .cwd(substrate_root)
            .timeout(self.timeout.max(Duration::from_secs(600)))
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

    /// `kubectl ate version`.
    pub fn ate_version(&self) -> Cmd {
        self.cmd(&self.kubectl).args(["ate", "version"])
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

/// An actor's state as `kubectl ate get actor -o json` prints it, in the
/// names the backend seam uses (`RUNNING`, `SUSPENDED`, ...).
///
/// The plugin prints protojson, either one actor or a list (`{"actors":
/// [...]}`), and the state either as `status.state` or as `status` itself,
/// with or without the `ACTOR_STATE_` prefix; all shapes are read.
pub fn parse_actor_state(json: &str, id: &str) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).map_err(|e| {
        format!(
            "`kubectl ate get actor {id} -o json` printed no JSON ({e}): {}",
            crate::cmd::tail(json.as_bytes())
        )
    })?;
    let actor = match v.get("actors").and_then(|a| a.as_array()) {
        Some(list) => match list.as_slice() {
            [one] => one.clone(),
            [] => return Err(format!("`kubectl ate get actor {id}` listed no actor")),
            many => many
                .iter()
                .find(|a| actor_name(a).as_deref() == Some(id))
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "`kubectl ate get actor {id}` listed {} actors, none named {id}",
                        many.len()
                    )
                })?,
        },
        None => v,
    };
    let state = actor
        .pointer("/status/state")
        .or_else(|| actor.get("status").filter(|s| s.is_string()))
        .or_else(|| actor.get("state"))
        .and_then(|s| s.as_str())
        .ok_or_else(|| {
            format!(
                "no status.state in `kubectl ate get actor {id} -o json`: {}",
                crate::cmd::tail(json.as_bytes())
            )
        })?;
    Ok(state
        .strip_prefix("ACTOR_STATE_")
        .unwrap_or(state)
        .to_ascii_uppercase())
}

/// The seam's state for a state name [`parse_actor_state`] read: upstream
/// prints `STATUS_RUNNING` ... (`pkg/proto/ateapipb/ateapi.proto`); the bare
/// names are accepted too.
pub fn actor_state(name: &str) -> ActorState {
    match name.strip_prefix("STATUS_").unwrap_or(name) {
        "RESUMING" => ActorState::Resuming,
        "RUNNING" => ActorState::Running,
        "SUSPENDING" => ActorState::Suspending,
        "SUSPENDED" => ActorState::Suspended,
        "PAUSING" | "PAUSED" => ActorState::Paused,
        _ => ActorState::Unknown(name.to_owned()),
    }
}

fn actor_name(a: &serde_json::Value) -> Option<String> {
    a.pointer("/metadata/name")
        .or_else(|| a.get("actorId"))
        .or_else(|| a.get("name"))
        .and_then(|s| s.as_str())
        .map(String::from)
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
    fn actor_state_in_every_shape() {
        for (json, want) in [
            (r#"{"status":{"state":"ACTOR_STATE_RUNNING"}}"#, "RUNNING"),
            (
                r#"{"actors":[{"actorId":"x","status":"ACTOR_STATE_SUSPENDED"}]}"#,
                "SUSPENDED",
            ),
            (
                r#"{"actors":[{"metadata":{"name":"y"},"status":{"state":"RUNNING"}},{"metadata":{"name":"x"},"status":{"state":"ACTOR_STATE_RESUMING"}}]}"#,
                "RESUMING",
            ),
        ] {
            assert_eq!(parse_actor_state(json, "x").unwrap(), want, "{json}");
        }
        let e = parse_actor_state("not json", "x").unwrap_err();
        assert!(
            e.contains("printed no JSON") && e.contains("not json"),
            "{e}"
        );
        let e = parse_actor_state(r#"{"actors":[]}"#, "x").unwrap_err();
        assert!(e.contains("listed no actor"), "{e}");
        let e = parse_actor_state(r#"{"metadata":{}}"#, "x").unwrap_err();
        assert!(e.contains("no status.state"), "{e}");
    }
}
