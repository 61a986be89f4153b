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
pub const TOOLS: &[&str] = &["kind", "docker", "ko", "kubectl", "kubectl-ate"];
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
}

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
        "kubectl" => kubectl(&a, st),
        "kubectl-ate" => ate(&a, st),
        _ => fail("unknown fake\n"),
    }
}

fn flag<'a>(a: &[&'a str], name: &str) -> Option<&'a str> {
    a.iter()
        .position(|x| *x == name)
        .and_then(|i| a.get(i + 1).copied())
}

fn kind(a: &[&str], st: &mut State) -> Answer {
    match a {
        ["version"] => ok("kind v0.27.0 go1.24.0 linux/amd64\n"),
        ["get", "clusters"] if st.clusters.is_empty() => {
            (0, String::new(), "No kind clusters found.\n".into())
        }
        ["get", "clusters"] => ok(st.clusters.join("\n") + "\n"),
        ["get", "nodes", ..] => {
            let n = flag(a, "--name").unwrap_or("kind");
            if !st.clusters.iter().any(|c| c == n) {
                return fail(format!("ERROR: no nodes found for cluster \"{n}\"\n"));
            }
            ok(format!("{n}-control-plane\n{n}-worker\n"))
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

fn ko(a: &[&str], call: &Call, st: &mut State) -> Answer {
    match a {
        ["version"] => ok("0.17.1\n"),
        ["apply", "-f", file, "--", rest @ ..] => {
            if !rest.iter().any(|r| r.starts_with("--context=")) {
                return fail("fake ko: no --context after --\n");
            }
            let path = call.cwd.join(file);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    st.applied.insert(file.to_string(), text);
                    ok("namespace/x created\nworkerpool.ate.dev/x created\nactortemplate.ate.dev/probe created\n")
                }
                Err(e) => fail(format!("Error: open {file}: {e}\n")),
            }
        }
        _ => fail(format!("fake ko: unexpected arguments {a:?}\n")),
    }
}

fn kubectl(a: &[&str], st: &mut State) -> Answer {
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
    if !has_context && !matches!(rest.as_slice(), ["version", ..]) {
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

fn ate(a: &[&str], st: &mut State) -> Answer {
    let args: Vec<&str> = a
        .iter()
        .copied()
        .filter(|x| !x.starts_with("--context=") && !x.starts_with("--kubeconfig="))
        .collect();
    if args.first() != Some(&"version") && args.len() == a.len() {
        return fail("fake kubectl-ate: no --context\n");
    }
    let key = |id: &str, atespace: &str| format!("{atespace}/{id}");
    match args.as_slice() {
        ["version"] => ok("kubectl-ate v0.0.0-fake\n"),
        ["create", "atespace", name] => {
            if st.atespaces.iter().any(|x| x == name) {
                return fail(format!("Error: atespace {name} already exists\n"));
            }
            st.atespaces.push(name.to_string());
            ok(format!("atespace/{name} created\n"))
        }
        ["delete", "atespace", name] => {
            if st.actors.keys().any(|k| k.starts_with(&format!("{name}/"))) {
                return fail(format!("Error: atespace {name} is not empty\n"));
            }
            let before = st.atespaces.len();
            st.atespaces.retain(|x| x != name);
            if before == st.atespaces.len() {
                return fail(format!("Error: atespace {name} not found\n"));
            }
            ok(format!("atespace/{name} deleted\n"))
        }
        ["create", "actor", id, "--template", template, "-a", atespace] => {
            if !st.atespaces.iter().any(|x| x == atespace) {
                return fail(format!("Error: atespace {atespace} not found\n"));
            }
            let k = key(id, atespace);
            if st.actors.contains_key(&k) {
                return fail(format!("Error: actor {k} already exists\n"));
            }
            st.actors
                .insert(k, (template.to_string(), "ACTOR_STATE_SUSPENDED".into()));
            ok(format!("actor/{id} created\n"))
        }
        [verb @ ("resume" | "suspend" | "delete"), "actor", id, "-a", atespace] => {
            let k = key(id, atespace);
            let Some((_, state)) = st.actors.get_mut(&k) else {
                return fail(format!("Error: actor {k} not found\n"));
            };
            match (*verb, state.as_str()) {
                ("resume", "ACTOR_STATE_SUSPENDED") => *state = "ACTOR_STATE_RUNNING".into(),
                ("suspend", "ACTOR_STATE_RUNNING") => *state = "ACTOR_STATE_SUSPENDED".into(),
                ("delete", "ACTOR_STATE_SUSPENDED") => {
                    st.actors.remove(&k);
                }
                (v, s) => {
                    return fail(format!(
                        "Error: rpc error: code = FailedPrecondition desc = cannot {v} actor {k} in state {s}\n"
                    ))
                }
            }
            ok(format!("actor/{id} {verb}d\n"))
        }
        ["get", "actor", id, "-a", atespace, "-o", "json"] => {
            let k = key(id, atespace);
            match st.actors.get(&k) {
                None => fail(format!("Error: actor {k} not found\n")),
                Some((template, state)) => ok(serde_json::to_string_pretty(&serde_json::json!({
                    "actors": [{
                        "atespace": atespace,
                        "actorId": id,
                        "actorTemplateName": template,
                        "status": state,
                    }]
                }))
                .unwrap()
                    + "\n"),
            }
        }
        _ => fail(format!("fake kubectl-ate: unexpected arguments {args:?}\n")),
    }
}
