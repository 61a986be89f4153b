//! Fake `kind`, `docker`, `ko`, `kubectl` (with the `ate` plugin) and
//! `kubectl-ate` executables, plus fake `sh`, `bash` and `dash` that only
//! record that a shell was spawned.
//!
//! The fakes are the test binary itself, hard-linked (or copied) under each
//! tool's name into a directory of the test's; the test binary's `main`
//! calls [`dispatch`] first, which runs the fake when `argv[0]` names one.
//! Each call appends one JSON line to `<dir>/calls.jsonl` (argv, cwd, the
//! whole environment, standard input) and answers like the real tool from
//! the state in `<dir>/state.json` (clusters, registry, atespaces, actors
//! and their states), so a backend driving them sees realistic outputs and
//! realistic refusals (deleting a running actor fails, as upstream).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Tool names the test binary answers to.
pub const TOOLS: &[&str] = &[
    "kind",
    "docker",
    "ko",
    "kubectl",
    "kubectl-ate",
    "git",
    INSTALL_SCRIPT,
];

/// The checkout's install script (`hack/install-ate-kind.sh`): a fake
/// checkout links it to this fake with [`FakeTools::link_install_script`].
pub const INSTALL_SCRIPT: &str = "install-ate-kind.sh";

/// The commit the fake `git rev-parse HEAD` prints.
pub const FAKE_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// Shells: any call is recorded as a defect.
pub const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh"];

/// One recorded call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call {
    /// The fake's name (`kubectl`, ...).
    pub tool: String,
    /// Arguments after the program.
    pub args: Vec<String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// The whole environment.
    pub env: BTreeMap<String, String>,
    /// Standard input, when the caller gave any.
    pub stdin: String,
}

/// What the fakes know, and what the test may set up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// kind clusters that exist.
    pub clusters: Vec<String>,
    /// Whether the kind-registry container runs.
    pub registry_running: bool,
    /// Whether it exists (stopped, unless running).
    pub registry_exists: bool,
    /// Atespaces.
    pub atespaces: Vec<String>,
    /// `atespace/id` → (template, state).
    pub actors: BTreeMap<String, (String, String)>,
    /// Pods `kubectl get pods -n <ns> -o name` lists, per namespace.
    pub pods: BTreeMap<String, Vec<String>>,
    /// Files `ko apply -f` was given (path → content at the time).
    pub applied: BTreeMap<String, String>,
    /// Files `kubectl delete -f` was given.
    pub deleted: Vec<String>,
    /// How long `kind create cluster` takes after the cluster exists (its
    /// nodes are up, the rest is still being set up).
    pub create_delay_ms: u64,
    /// The digest `ko resolve` gives every `ko://` image
    /// (`sha256:<64 hex>`; empty: a fixed one).
    #[serde(default)]
    pub ko_digest: String,
    /// What `kubectl apply -f -` was given on standard input, in order.
    #[serde(default)]
    pub applied_stdin: Vec<String>,
    /// The atelet image the DaemonSet names (set by `kubectl apply -f -` of
    /// a DaemonSet `atelet`).
    #[serde(default)]
    pub atelet_image: Option<String>,
    /// When set, the digest the atelet pods really run (a stale pod or a
    /// mutated tag), instead of the applied one.
    #[serde(default)]
    pub atelet_running_digest: Option<String>,
    /// Lines the fake `git status --porcelain` prints (empty: clean).
    #[serde(default)]
    pub git_status: Vec<String>,
    /// When set, the fake install script prints this on standard output
    /// and fails (exit 3), the way a failing `hack/install-ate.sh` step does.
    #[serde(default)]
    pub install_failure: Option<String>,
    /// Set by a successful `hack/install-ate-kind.sh --deploy-ate-system`.
    #[serde(default)]
    pub installed: bool,
}

/// The digest the fake `ko resolve` uses unless the state names one.
pub const FAKE_KO_DIGEST: &str =
    "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// A directory of fakes.
pub struct FakeTools {
    /// The directory (put it first on the search path).
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl FakeTools {
    /// Links the running test binary under every tool and shell name into
    /// a new temp directory (under `target/`, so hard links work).
    pub fn new(state: &State) -> FakeTools {
        let exe = std::env::current_exe().expect("current_exe");
        let base = exe
            .ancestors()
            .find(|p| p.ends_with("target"))
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let tmp = tempfile::Builder::new()
            .prefix("fake-tools-")
            .tempdir_in(&base)
            .expect("temp dir for fakes");
        let dir = tmp.path().to_path_buf();
        for name in TOOLS.iter().chain(SHELLS) {
            let to = dir.join(name);
            if std::fs::hard_link(&exe, &to).is_err() {
                std::fs::copy(&exe, &to).expect("copy the fake");
            }
        }
        let fakes = FakeTools { dir, _tmp: tmp };
        fakes.set_state(state);
        fakes
    }

    /// Makes `<checkout>/hack/install-ate-kind.sh` this fake: a symlink to
    /// its hard link here, so the fake (`/proc/self/exe` resolves the
    /// symlink) records into this directory while its `argv[0]` is the
    /// checkout's path.
    pub fn link_install_script(&self, checkout: &Path) -> PathBuf {
        let hack = checkout.join("hack");
        std::fs::create_dir_all(&hack).expect("hack dir");
        let script = hack.join(INSTALL_SCRIPT);
        std::os::unix::fs::symlink(self.dir.join(INSTALL_SCRIPT), &script)
            .expect("link the install script");
        script
    }

    /// Replaces the fakes' state.
    pub fn set_state(&self, state: &State) {
        std::fs::write(
            self.dir.join("state.json"),
            serde_json::to_vec_pretty(state).unwrap(),
        )
        .unwrap();
    }

    /// The fakes' state now.
    pub fn state(&self) -> State {
        read_state(&self.dir)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        std::fs::read_to_string(self.dir.join("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a call line"))
            .collect()
    }

    /// The calls as `tool arg arg ...` lines (for readable assertions).
    pub fn call_lines(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| {
                std::iter::once(c.tool.clone())
                    .chain(c.args.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    /// `PATH` with the fakes' directory first: they shadow any real tool
    /// (this machine may well have a real `kubectl`).
    pub fn search_path(&self) -> std::ffi::OsString {
        let rest = std::env::var_os("PATH").unwrap_or_default();
        std::env::join_paths(std::iter::once(self.dir.clone()).chain(std::env::split_paths(&rest)))
            .expect("a valid PATH")
    }
}

fn read_state(dir: &Path) -> State {
    std::fs::read(dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Runs the fake named by `argv[0]` and exits, or returns when `argv[0]`
/// is not a fake's name (the test binary runs its tests then).
pub fn dispatch() {
    let argv: Vec<String> = std::env::args().collect();
    let name = Path::new(&argv[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !TOOLS.contains(&name.as_str()) && !SHELLS.contains(&name.as_str()) {
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("fake dir").to_path_buf();
    // Serialize the fakes of one directory: the state is read, changed and
    // written whole.
    let lock = std::fs::File::create(dir.join(".lock")).expect("lock file");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    // The backend's commands get /dev/null unless they pass input.
    let mut stdin = String::new();
    let _ = std::io::stdin().read_to_string(&mut stdin);
    let call = Call {
        tool: name.clone(),
        args: argv[1..].to_vec(),
        cwd: std::env::current_dir().unwrap_or_default(),
        env: std::env::vars().collect(),
        stdin,
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("calls.jsonl"))
        .expect("calls.jsonl");
    writeln!(log, "{}", serde_json::to_string(&call).unwrap()).expect("record the call");
    let mut state = read_state(&dir);
    let (code, out, err) = answer(&name, &call, &mut state);
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_vec_pretty(&state).unwrap(),
    )
    .expect("write state");
    if name == "kind" && call.args.first().map(String::as_str) == Some("create") {
        // The slow part of a creation, outside the lock (others may run).
        drop(lock);
        std::thread::sleep(std::time::Duration::from_millis(state.create_delay_ms));
    }
    print!("{out}");
    eprint!("{err}");
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

type Answer = (i32, String, String);

fn ok(out: impl Into<String>) -> Answer {
    (0, out.into(), String::new())
}

fn fail(err: impl Into<String>) -> Answer {
    (1, String::new(), err.into())
}

fn answer(name: &str, call: &Call, st: &mut State) -> Answer {
    let a: Vec<&str> = call.args.iter().map(String::as_str).collect();
    match name {
        n if SHELLS.contains(&n) => (
            127,
            String::new(),
            format!("fake {n}: a shell was spawned\n"),
        ),
        "kind" => kind(&a, st),
        "docker" => docker(&a, st),
        "ko" => ko(&a, call, st),
        "kubectl" => kubectl(&a, call, st),
        "kubectl-ate" => ate(&a, st),
        INSTALL_SCRIPT => install_script(&a, st),
        "git" => match a.as_slice() {
            ["-C", _, "rev-parse", "HEAD"] => ok(format!("{FAKE_COMMIT}\n")),
            ["-C", _, "status", "--porcelain"] => ok(st
                .git_status
                .iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>()),
            _ => fail(format!("fake git: unexpected arguments {a:?}\n")),
        },
        _ => fail("unknown fake\n"),
    }
}

/// `hack/install-ate-kind.sh` hands its arguments to `hack/install-ate.sh`
/// (`hack/install-ate-kind.sh:38` at 86e138f6), which prints its usage and
/// exits 1 without any (`hack/install-ate.sh:498-501`).
fn install_script(a: &[&str], st: &mut State) -> Answer {
    match a {
        ["--deploy-ate-system"] => match &st.install_failure {
            Some(out) => (
                3,
                out.clone(),
                "fake install-ate-kind.sh: the install failed\n".into(),
            ),
            None => {
                st.installed = true;
                ok("ate-system deployed\n")
            }
        },
        [] => (
            1,
            String::new(),
            "Usage: hack/install-ate.sh [flags]\n".into(),
        ),
        other => fail(format!(
            "fake install-ate-kind.sh: unexpected arguments {other:?}\n"
        )),
    }
}

fn flag<'a>(a: &[&'a str], name: &str) -> Option<&'a str> {
    a.iter()
        .position(|x| *x == name)
        .and_then(|i| a.get(i + 1).copied())
}

fn kind(a: &[&str], st: &mut State) -> Answer {
    match a {
        ["version"] => ok("kind v0.32.0 go1.25.0 linux/amd64\n"),
        ["get", "clusters"] if st.clusters.is_empty() => {
            (0, String::new(), "No kind clusters found.\n".into())
        }
        ["get", "clusters"] => ok(st.clusters.join("\n") + "\n"),
        ["get", "nodes", ..] => {
            let n = flag(a, "--name").unwrap_or("kind");
            if !st.clusters.iter().any(|c| c == n) {
                return fail(format!("ERROR: no nodes found for cluster \"{n}\"\n"));
            }
            // One control-plane node: upstream's cluster config
            // (hack/create-kind-cluster.sh:62-66).
            ok(format!("{n}-control-plane\n"))
        }
        ["create", "cluster", ..] => {
            let n = flag(a, "--name").unwrap_or("kind").to_owned();
            if st.clusters.contains(&n) {
                return fail(format!(
                    "ERROR: failed to create cluster: node(s) already exist for a cluster with the name \"{n}\"\n"
                ));
            }
            st.clusters.push(n.clone());
            (0, String::new(), format!("Creating cluster \"{n}\" ...\n"))
        }
        ["delete", "cluster", ..] => {
            let n = flag(a, "--name").unwrap_or("kind");
            st.clusters.retain(|c| c != n);
            (0, String::new(), format!("Deleting cluster \"{n}\" ...\n"))
        }
        _ => fail(format!("fake kind: unexpected arguments {a:?}\n")),
    }
}

fn docker(a: &[&str], st: &mut State) -> Answer {
    match a {
        ["inspect", .., "kind-registry"] if st.registry_running => ok("true\n"),
        ["inspect", .., "kind-registry"] if st.registry_exists => ok("false\n"),
        ["inspect", .., obj] => fail(format!("Error: No such object: {obj}\n")),
        ["run", ..] if st.registry_exists || st.registry_running => fail(
            "docker: Error response from daemon: Conflict. The container name \"/kind-registry\" is already in use\n",
        ),
        ["run", ..] => {
            st.registry_running = true;
            st.registry_exists = true;
            ok("4f1c0ffee\n")
        }
        ["start", "kind-registry"] if st.registry_exists => {
            st.registry_running = true;
            ok("kind-registry\n")
        }
        ["network", "connect", ..] | ["exec", ..] => ok(""),
        ["rm", "-f", "kind-registry"] => {
            st.registry_running = false;
            st.registry_exists = false;
            ok("kind-registry\n")
        }
        _ => fail(format!("fake docker: unexpected arguments {a:?}\n")),
    }
}

/// The fake `ko`. `apply` validates every `ate.dev` object against
/// upstream's CRD schema, as the API server behind ko's `kubectl apply`
/// does (strict field validation is kubectl's default), and fails with the
/// API server's wording; `resolve -f -` replaces each `ko://` reference on
/// standard input with `localhost:5001/<name>-<hash>@<digest>`, as ko does
/// (the image ref shape ko prints; `KO_DOCKER_REPO` is the repo).
fn ko(a: &[&str], call: &Call, st: &mut State) -> Answer {
    match a {
        ["version"] => ok("0.18.0\n"),
        ["apply", "-f", file, "--", rest @ ..] => {
            if !rest.iter().any(|r| r.starts_with("--context=")) {
                return fail("fake ko: no --context after --\n");
            }
            let path = call.cwd.join(file);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let errors = super::crd_schema::validate_manifest(&text);
                    if !errors.is_empty() {
                        return fail(format!(
                            "Error from server (BadRequest): error when creating \"{file}\": {}\nError: error executing 'kubectl apply': exit status 1\n",
                            errors.join("; ")
                        ));
                    }
                    st.applied.insert(file.to_string(), text);
                    ok("namespace/x created\nworkerpool.ate.dev/x created\nactortemplate.ate.dev/probe created\n")
                }
                Err(e) => fail(format!("Error: open {file}: {e}\n")),
            }
        }
        ["resolve", "-f", "-"] => {
            let Some(repo) = call.env.get("KO_DOCKER_REPO").filter(|r| !r.is_empty()) else {
                return fail("Error: KO_DOCKER_REPO environment variable is unset\n");
            };
            let digest = if st.ko_digest.is_empty() {
                FAKE_KO_DIGEST.to_owned()
            } else {
                st.ko_digest.clone()
            };
            let out: String = call
                .stdin
                .lines()
                .map(|l| match l.split_once("ko://") {
                    Some((head, path)) => {
                        let path = path.trim().trim_matches('"');
                        let name = path.rsplit('/').next().unwrap_or(path);
                        format!("{head}{repo}/{name}-0123abcd@{digest}\n")
                    }
                    None => format!("{l}\n"),
                })
                .collect();
            ok(out)
        }
        ["resolve", ..] if a.contains(&"--") => {
            fail("Error: unknown command \"--context=...\" for \"ko resolve\"\n")
        }
        _ => fail(format!("fake ko: unexpected arguments {a:?}\n")),
    }
}

fn kubectl(a: &[&str], call: &Call, st: &mut State) -> Answer {
    // Global flags first (--context=, --kubeconfig=), as the backend puts
    // them; the plugin takes its flags itself.
    if let ["ate", rest @ ..] = a {
        return ate(rest, st);
    }
    let rest: Vec<&str> = a
        .iter()
        .copied()
        .skip_while(|x| x.starts_with("--context=") || x.starts_with("--kubeconfig="))
        .collect();
    let has_context = a[..a.len() - rest.len()]
        .iter()
        .any(|x| x.starts_with("--context="));
    if !has_context && !matches!(rest.as_slice(), ["version", ..] | ["kustomize", ..]) {
        return fail("fake kubectl: no --context before the verb\n");
    }
    match rest.as_slice() {
        ["version", "--client", "-o", "json"] => {
            ok("{\"clientVersion\":{\"gitVersion\":\"v1.33.1\"}}\n")
        }
        ["delete", "--ignore-not-found", "--wait=true", "-f", file] => {
            st.deleted.push(file.to_string());
            ok("namespace \"x\" deleted\n")
        }
        // Local rendering of upstream's kind overlay
        // (manifests/ate-install/kind/atelet, on atelet.yaml:48-69).
        ["kustomize", dir, "--load-restrictor", "LoadRestrictionsNone"] => {
            if !call.cwd.join(dir).is_dir() {
                return fail(format!("error: must build at directory: not a valid directory: evalsymlink failure on '{dir}'\n"));
            }
            ok("apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: atelet\n  namespace: ate-system\nspec:\n  template:\n    spec:\n      containers:\n      - name: atelet\n        image: ko://github.com/agent-substrate/substrate/cmd/atelet\n")
        }
        ["apply", "-f", "-"] => {
            st.applied_stdin.push(call.stdin.clone());
            if call.stdin.contains("kind: DaemonSet") && call.stdin.contains("name: atelet") {
                st.atelet_image = call
                    .stdin
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("image:"))
                    .map(|i| i.trim().to_owned());
                return ok("daemonset.apps/atelet configured\n");
            }
            ok("configmap/local-registry-hosting created\n")
        }
        ["rollout", "status", what, "-n", "ate-system", "--timeout=120s"] => {
            ok(format!("{what} successfully rolled out\n"))
        }
        ["get", "pods", "-n", "ate-system", "-l", "app=atelet", "-o", "json"] => {
            let image = st.atelet_image.clone().unwrap_or_default();
            let running = match &st.atelet_running_digest {
                Some(d) => format!("{}@{d}", image.split('@').next().unwrap_or("")),
                None => image.clone(),
            };
            ok(serde_json::to_string_pretty(&serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": [{
                    "metadata": {"name": "atelet-x7k2p", "namespace": "ate-system"},
                    "spec": {"containers": [{"name": "atelet", "image": image}]},
                    "status": {"containerStatuses": [{"name": "atelet", "image": image, "imageID": running}]}
                }]
            }))
            .unwrap())
        }
        ["get", "pods", "-n", ns, "-o", "name"] => ok(st
            .pods
            .get(*ns)
            .map(|p| p.iter().map(|p| format!("pod/{p}\n")).collect::<String>())
            .unwrap_or_default()),
        ["logs", "-n", ns, pod, ..] => ok(format!("log line of {ns}/{pod}\n")),
        ["get", "events", "-n", ns, ..] => ok(format!(
            "LAST SEEN   TYPE   REASON   OBJECT   MESSAGE\n1s   Normal   Test   {ns}   event\n"
        )),
        ["describe", ..] => ok(format!("Name: {}\n", rest.last().unwrap())),
        _ => fail(format!("fake kubectl: unexpected arguments {rest:?}\n")),
    }
}

/// The fake `kubectl-ate`, imitating upstream's plugin at 86e138f6:
/// cobra's root with `Version` set (`cmd/kubectl-ate/internal/cmd/root.go:38`:
/// `--version`, no `version` subcommand), the printer's protojson list
/// (`cmd/kubectl-ate/internal/printer/printer.go:57`, zero values omitted),
/// STATUS_* names (`pkg/proto/ateapipb/ateapi.proto:106-114`) and ateapi's
/// error texts (`cmd/ateapi/internal/controlapi/*.go`), wrapped the way
/// each subcommand wraps them (`failed to get actor: %w`, ...) and printed
/// by cobra as `Error: ...`.
fn ate(a: &[&str], st: &mut State) -> Answer {
    let args: Vec<&str> = a
        .iter()
        .copied()
        .filter(|x| !x.starts_with("--context=") && !x.starts_with("--kubeconfig="))
        .collect();
    if args.first() != Some(&"--version") && args.len() == a.len() {
        return fail("fake kubectl-ate: no --context\n");
    }
    let key = |id: &str, atespace: &str| format!("{atespace}/{id}");
    let rpc = |wrap: &str, code: &str, desc: String| {
        let wrap = if wrap.is_empty() {
            String::new()
        } else {
            format!("{wrap}: ")
        };
        fail(format!(
            "Error: {wrap}rpc error: code = {code} desc = {desc}\n"
        ))
    };
    match args.as_slice() {
        // cobra's default version template: "{{.Name}} version {{.Version}}".
        ["--version"] => ok("kubectl-ate version v0.0.0-fake commit=fake built=unknown linux/amd64\n"),
        [cmd, ..] if !matches!(*cmd, "create" | "delete" | "get" | "resume" | "suspend" | "pause" | "logs" | "admin") => fail(format!(
            "Error: unknown command \"{cmd}\" for \"kubectl-ate\"\nRun 'kubectl-ate --help' for usage.\n"
        )),
        ["create", "atespace", name] => {
            if st.atespaces.iter().any(|x| x == name) {
                // create_atespace.go:37
                return rpc("failed to create atespace", "AlreadyExists", format!("Atespace {name} already exists"));
            }
            st.atespaces.push(name.to_string());
            ok(format!("{{\n  \"atespaces\": [\n    {{\n      \"name\": \"{name}\"\n    }}\n  ]\n}}\n"))
        }
        ["delete", "atespace", name] => {
            if !st.atespaces.iter().any(|x| x == name) {
                // delete_atespace.go:36
                return rpc("failed to delete atespace", "NotFound", format!("Atespace {name} not found"));
            }
            if st.actors.keys().any(|k| k.starts_with(&format!("{name}/"))) {
                // delete_atespace.go:39
                return rpc("failed to delete atespace", "FailedPrecondition", format!("Atespace {name} is not empty"));
            }
            st.atespaces.retain(|x| x != name);
            ok(format!("atespace \"{name}\" deleted\n"))
        }
        ["create", "actor", id, "--template", template, "-a", atespace] => {
            if !st.atespaces.iter().any(|x| x == atespace) {
                // create_actor.go:50
                return rpc("failed to create actor", "FailedPrecondition", format!("Atespace {atespace} not found"));
            }
            let k = key(id, atespace);
            if st.actors.contains_key(&k) {
                // create_actor.go:66
                return rpc("failed to create actor", "AlreadyExists", format!("Actor {id} already exists"));
            }
            st.actors
                .insert(k, (template.to_string(), "STATUS_SUSPENDED".into()));
            ok(actor_json(atespace, id, template, "STATUS_SUSPENDED"))
        }
        [verb @ ("resume" | "suspend" | "delete"), "actor", id, "-a", atespace] => {
            let k = key(id, atespace);
            // delete_actor.go returns the bare error; the others wrap it.
            let wrap = match *verb {
                "resume" => "failed to resume actor",
                "suspend" => "failed to suspend actor",
                _ => "",
            };
            let Some((template, state)) = st.actors.get_mut(&k) else {
                // get_actor.go:34, resume_actor.go:38, suspend_actor.go:38, delete_actor.go:36
                return rpc(wrap, "NotFound", format!("Actor {id} not found"));
            };
            let template = template.clone();
            match (*verb, state.as_str()) {
                ("resume", "STATUS_SUSPENDED" | "STATUS_RUNNING") => *state = "STATUS_RUNNING".into(),
                ("suspend", "STATUS_RUNNING" | "STATUS_SUSPENDED") => *state = "STATUS_SUSPENDED".into(),
                ("delete", "STATUS_SUSPENDED") => {
                    st.actors.remove(&k);
                    // delete_actor.go:47
                    return ok(format!("actor \"{id}\" deleted\n"));
                }
                // delete_actor.go:41
                ("delete", s) => {
                    return rpc("", "FailedPrecondition", format!("Actor {id} is not suspended (status: {s})"))
                }
                (_, s) => {
                    return rpc(wrap, "FailedPrecondition", format!("Actor {id} is in status {s}"))
                }
            }
            let state = state.clone();
            ok(actor_json(atespace, id, &template, &state))
        }
        ["get", "actor" | "actors", id, "-a", atespace, "-o", "json"] => {
            let k = key(id, atespace);
            match st.actors.get(&k) {
                // get_actor.go:34 through get_actors.go:57
                None => rpc("failed to get actor", "NotFound", format!("Actor {id} not found")),
                Some((template, state)) => ok(actor_json(atespace, id, template, state)),
            }
        }
        _ => fail(format!("fake kubectl-ate: unexpected arguments {args:?}\n")),
    }
}

/// One actor as the printer prints it: a `ListActorsResponse` of one,
/// camelCase, int64 as a string, zero values (STATUS_UNSPECIFIED) omitted,
/// indented by two (printer.go:57, :168-181).
fn actor_json(atespace: &str, id: &str, template: &str, status: &str) -> String {
    let (ns, name) = template.split_once('/').unwrap_or(("", template));
    let mut actor = serde_json::json!({
        "actorId": id,
        "version": "1",
        "actorTemplateNamespace": ns,
        "actorTemplateName": name,
        "atespace": atespace,
    });
    if status != "STATUS_UNSPECIFIED" {
        actor["status"] = serde_json::Value::String(status.to_owned());
    }
    serde_json::to_string_pretty(&serde_json::json!({ "actors": [actor] })).unwrap() + "\n"
}
