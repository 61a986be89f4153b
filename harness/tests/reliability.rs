//! The reliability matrix: the reference agent under concurrent and
//! repeated use, and under bad input, on real gVisor sandboxes. Each test
//! starts its own agent on a temp state dir under `target/`, deploys the
//! probe template, prints its figures on stderr, and ends with
//! [`assert_no_leaks`]: after SIGTERM no sandbox, process or network
//! namespace of that agent remains, and the state dir goes away.
//!
//! Needs root and runsc. Run with
//! `cargo test -p ate-harness --test reliability -- --nocapture --test-threads=1`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use ate_harness::cmd::{Cmd, Spawned};
use ate_harness::fixture::{static_bins, BuildOptions, StaticBins};
use ate_harness::probe::{Counter, Whoami};
use ate_harness::router::{actor_host, RouterClient, ACTOR_DOMAIN};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Name of the template every test deploys.
const TEMPLATE: &str = "probe";
/// How long the golden boot may take.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long background deletions of checkpointed sandboxes may take.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// Grace for the agent to remove its sandboxes on SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(60);
/// The grace the local backend gives its agent on SIGTERM.
const HARNESS_GRACE: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ agent

/// A control API answer, whatever its status.
#[derive(Debug)]
struct Resp {
    status: u16,
    text: String,
    json: Value,
    elapsed: Duration,
}

impl Resp {
    fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }
    fn kind(&self) -> &str {
        self.json["kind"].as_str().unwrap_or("")
    }
}

/// The control API client (cheap to clone into tasks).
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        raw_body: Option<&str>,
    ) -> anyhow::Result<Resp> {
        let mut r = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(b);
        }
        if let Some(b) = raw_body {
            r = r
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_owned());
        }
        let t0 = Instant::now();
        let resp = r
            .send()
            .await
            .with_context(|| format!("{method} {path}: no answer from the control API"))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .with_context(|| format!("{method} {path}: cannot read the body"))?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            text,
            json,
            elapsed: t0.elapsed(),
        })
    }

    /// Any status.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Resp> {
        self.send(method, path, body.as_ref(), None).await
    }

    /// 2xx required; the body as JSON.
    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let r = self.call(method.clone(), path, body).await?;
        if !(200..300).contains(&r.status) {
            bail!("{method} {path} answered {}: {}", r.status, r.text.trim());
        }
        Ok(r.json)
    }
}

/// One `ate-refagent serve` on a temp state dir of its own.
struct Agent {
    /// `None` once [`assert_no_leaks`] has stopped it.
    child: Option<Spawned>,
    api: Api,
    router_addr: SocketAddr,
    instance: String,
    pid: u32,
    /// The temp dir (state dir = `<dir>/state`, log = `<dir>/agent.log`).
    dir: Option<tempfile::TempDir>,
    state: PathBuf,
    log: PathBuf,
    bins: StaticBins,
    /// `ip netns list` before the agent started.
    netns_before: Vec<String>,
}

impl Agent {
    async fn start() -> anyhow::Result<Agent> {
        let t0 = Instant::now();
        let bins = static_bins(&BuildOptions::default()).await?;
        eprintln!("static binaries ready in {} ms", t0.elapsed().as_millis());
        let netns_before = netns_list().await?;
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        std::fs::create_dir_all(&target)?;
        let target = target.canonicalize()?;
        let dir = tempfile::Builder::new()
            .prefix("ate-rel-")
            .tempdir_in(&target)?;
        let state = dir.path().join("state");
        let log = dir.path().join("agent.log");
        let mut child = Cmd::new(&bins.agent)
            .arg("serve")
            .arg("--state-dir")
            .arg(&state)
            .env("NO_COLOR", "1")
            .stderr_file(std::fs::File::create(&log)?)
            .spawn()?;
        let out = child.stdout.take().expect("stdout is piped");
        let line = tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(out).lines().next_line(),
        )
        .await
        .context("the agent printed no line within 30 s")??
        .context("the agent exited before printing its line")?;
        let line: Value =
            serde_json::from_str(&line).with_context(|| format!("agent line {line:?}"))?;
        let addr = |k: &str| -> anyhow::Result<SocketAddr> {
            line[k]
                .as_str()
                .with_context(|| format!("no {k:?} in the agent line {line}"))?
                .parse()
                .with_context(|| format!("bad {k:?} in the agent line {line}"))
        };
        let control = addr("control")?;
        let router_addr = addr("router")?;
        for a in [control, router_addr] {
            assert!(a.ip().is_loopback(), "agent listens off loopback: {line}");
        }
        let instance = line["instance"].as_str().context("no instance")?.to_owned();
        let pid = child.pid();
        assert_eq!(line["pid"].as_u64(), Some(pid as u64), "{line}");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .build()?;
        eprintln!(
            "agent pid {pid} instance {instance} control {control} router {router_addr} state {}",
            state.display()
        );
        Ok(Agent {
            child: Some(child),
            api: Api {
                http,
                base: format!("http://{control}"),
            },
            router_addr,
            instance,
            pid,
            dir: Some(dir),
            state,
            log,
            bins,
            netns_before,
        })
    }

    fn router(&self) -> RouterClient {
        RouterClient::new(self.router_addr)
    }

    /// Deploys the probe template and waits for Ready.
    async fn deploy_probe(&self) -> anyhow::Result<()> {
        let t0 = Instant::now();
        self.api
            .ok(
                Method::POST,
                "/templates",
                Some(json!({ "name": TEMPLATE, "binary": self.bins.probe })),
            )
            .await?;
        let mut last = Value::Null;
        while t0.elapsed() < READY_DEADLINE {
            last = self
                .api
                .ok(Method::GET, &format!("/templates/{TEMPLATE}"), None)
                .await?;
            match last["status"]["phase"].as_str() {
                Some("Ready") => {
                    eprintln!(
                        "template {TEMPLATE} Ready after {} ms (timings {})",
                        t0.elapsed().as_millis(),
                        last["status"]["timings_ms"]
                    );
                    return Ok(());
                }
                Some("Failed") => bail!("the probe template failed: {last}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        bail!("the probe template was not Ready within {READY_DEADLINE:?}; last seen: {last}")
    }

    async fn atespace(&self, name: &str) -> anyhow::Result<()> {
        self.api
            .ok(Method::POST, "/atespaces", Some(json!({ "name": name })))
            .await
            .map(drop)
    }

    async fn create_actor(&self, a: &str, id: &str) -> anyhow::Result<Value> {
        let v = self
            .api
            .ok(
                Method::POST,
                &format!("/atespaces/{a}/actors"),
                Some(json!({ "id": id, "template": TEMPLATE })),
            )
            .await?;
        assert_eq!(v["state"], "SUSPENDED", "a new actor starts SUSPENDED: {v}");
        Ok(v)
    }

    async fn actor(&self, a: &str, id: &str) -> anyhow::Result<Value> {
        self.api
            .ok(Method::GET, &format!("/atespaces/{a}/actors/{id}"), None)
            .await
    }

    async fn sandboxes(&self) -> anyhow::Result<Vec<String>> {
        let v = self.api.ok(Method::GET, "/sandboxes", None).await?;
        let mut ids: Vec<String> = v["sandboxes"]
            .as_array()
            .with_context(|| format!("GET /sandboxes: {v}"))?
            .iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Waits until `GET /sandboxes` is exactly `want` (the golden's and
    /// suspended actors' stopped containers are deleted in the background).
    async fn settle_sandboxes(&self, want: &[String]) -> anyhow::Result<Vec<String>> {
        let mut want = want.to_vec();
        want.sort();
        let t0 = Instant::now();
        loop {
            let got = self.sandboxes().await?;
            if got == want {
                return Ok(got);
            }
            if t0.elapsed() > SETTLE_DEADLINE {
                bail!("GET /sandboxes still lists {got:?} after {SETTLE_DEADLINE:?}; expected exactly {want:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of the agent's log, for failure messages.
    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Agent {
    /// A test that failed before [`assert_no_leaks`]: stop the agent with
    /// SIGTERM (so it removes its sandboxes) before the temp dir goes,
    /// instead of the SIGKILL that dropping the child would send.
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        eprintln!(
            "agent {} stopped by drop (test failed?); last log lines:\n{}",
            self.pid,
            self.log_tail(40)
        );
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let t0 = Instant::now();
        while t0.elapsed() < TERM_GRACE {
            match proc_stat(self.pid) {
                Some(s) if s.state != 'Z' => std::thread::sleep(Duration::from_millis(50)),
                _ => break,
            }
        }
    }
}

// ------------------------------------------------------------- leak checks

/// A process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcStat {
    state: char,
    ppid: u32,
    start: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

fn all_procs() -> HashMap<u32, ProcStat> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Processes whose parent chain leads to `root`, or whose command line
/// names one of `marks`: `(pid, start time, command line)`.
fn agent_processes(root: u32, marks: &[String]) -> Vec<(u32, u64, String)> {
    let procs = all_procs();
    let me = std::process::id();
    let mut out = Vec::new();
    for (&pid, st) in &procs {
        if pid == root || pid == me {
            continue;
        }
        let mut cur = st.ppid;
        let mut under = false;
        for _ in 0..64 {
            if cur == root {
                under = true;
                break;
            }
            match procs.get(&cur) {
                Some(p) if cur > 1 => cur = p.ppid,
                _ => break,
            }
        }
        let cmd = cmdline(pid);
        if under || marks.iter().any(|m| cmd.contains(m.as_str())) {
            out.push((pid, st.start, cmd));
        }
    }
    out.sort();
    out
}

async fn netns_list() -> anyhow::Result<Vec<String>> {
    let out = Cmd::new("ip")
        .args(["netns", "list"])
        .timeout(Duration::from_secs(10))
        .run()
        .await?;
    let mut v: Vec<String> = out
        .stdout_str()
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    Ok(v)
}

async fn runsc_ids() -> anyhow::Result<Vec<String>> {
    let out = Cmd::new("runsc")
        .args(["list", "-quiet"])
        .timeout(Duration::from_secs(20))
        .run()
        .await?;
    Ok(out
        .stdout_str()
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect())
}

/// The last thing every test does: SIGTERM the agent and check it left
/// nothing behind — no runsc container with its instance prefix, no
/// process under it or naming its containers or state dir, no new network
/// namespace, and (after the temp dir is dropped) no state dir.
async fn assert_no_leaks(mut agent: Agent) -> anyhow::Result<()> {
    let prefix = format!("ate-{}-", agent.instance);
    let marks = vec![prefix.clone(), agent.state.display().to_string()];
    let running = runsc_ids().await?;
    let ours_before: Vec<&String> = running.iter().filter(|c| c.starts_with(&prefix)).collect();
    let procs_before = agent_processes(agent.pid, &marks);

    let child = agent.child.take().expect("the agent is running");
    let t0 = Instant::now();
    let status = child.terminate(TERM_GRACE).await?;
    let term_ms = t0.elapsed().as_millis();
    assert!(
        status.success(),
        "the agent did not exit cleanly within {TERM_GRACE:?} of SIGTERM: {status}; log:\n{}",
        agent.log_tail(30)
    );

    if t0.elapsed() > HARNESS_GRACE {
        eprintln!(
            "WARNING: the agent took {term_ms} ms to shut down, longer than the {HARNESS_GRACE:?} the local backend \
             grants it before SIGKILL (harness/src/backend/local.rs)"
        );
    }
    let left: Vec<String> = runsc_ids()
        .await?
        .into_iter()
        .filter(|c| c.starts_with(&prefix))
        .collect();
    assert!(
        left.is_empty(),
        "runsc still lists containers of instance {prefix} after SIGTERM: {left:?}"
    );
    assert!(
        !Path::new(&format!("/proc/{}", agent.pid)).exists(),
        "the agent's pid {} is still in /proc after it was reaped: {:?}",
        agent.pid,
        proc_stat(agent.pid)
    );
    let survivors: Vec<&(u32, u64, String)> = procs_before
        .iter()
        .filter(|(pid, start, _)| proc_stat(*pid).is_some_and(|s| s.start == *start))
        .collect();
    assert!(
        survivors.is_empty(),
        "processes of the agent outlived it: {survivors:?}"
    );
    let now = agent_processes(agent.pid, &marks);
    assert!(
        now.is_empty(),
        "processes under pid {} or naming {marks:?} remain: {now:?}",
        agent.pid
    );
    let netns_after = netns_list().await?;
    assert_eq!(
        netns_after, agent.netns_before,
        "`ip netns list` changed while the agent ran (it must create none)"
    );
    let records: Vec<String> = std::fs::read_dir(agent.state.join("sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        records.is_empty(),
        "sandbox records left in the state dir after SIGTERM: {records:?}"
    );

    let dir = agent.dir.take().expect("the temp dir is there");
    let path = dir.path().to_path_buf();
    drop(dir);
    assert!(
        !path.exists(),
        "the temp state dir {} still exists after its TempDir was dropped",
        path.display()
    );
    eprintln!(
        "no leaks: agent pid {} exited {status} {term_ms} ms after SIGTERM; runsc listed {} container(s) of {prefix} before, 0 after; \
         {} process(es) under the agent or naming its containers/state dir before ({:?}), 0 after; \
         ip netns list {:?} before and after; no sandbox records; temp dir {} removed",
        agent.pid,
        ours_before.len(),
        procs_before.len(),
        procs_before
            .iter()
            .fold(BTreeMap::<String, usize>::new(), |mut m, (_, _, cmd)| {
                let prog = cmd.split_whitespace().next().unwrap_or("?");
                let prog = prog.rsplit('/').next().unwrap_or(prog);
                *m.entry(prog.to_owned()).or_default() += 1;
                m
            }),
        netns_after,
        path.display()
    );
    Ok(())
}

// ------------------------------------------------------------- utilities

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// `(p50, max)` of a list of milliseconds (nearest rank).
fn p50_max(v: &[u64]) -> (u64, u64) {
    let mut s = v.to_vec();
    s.sort_unstable();
    if s.is_empty() {
        return (0, 0);
    }
    (s[s.len().div_ceil(2) - 1], s[s.len() - 1])
}

async fn whoami(r: &RouterClient, a: &str, id: &str) -> anyhow::Result<Whoami> {
    let w: Whoami = r.get_json(a, id, "/whoami").await?;
    Ok(w)
}

/// A response read off a raw socket.
#[derive(Debug)]
struct RawResp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawResp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// `GET path` over a fresh TCP connection, the request written byte for
/// byte: the Host line exactly as given (or none), `Connection: close`.
async fn raw_get(addr: SocketAddr, host: Option<&str>, path: &str) -> anyhow::Result<RawResp> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    if let Some(h) = host {
        req.push_str(&format!("Host: {h}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf))
        .await
        .with_context(|| format!("no complete answer within 60 s to {req:?}"))??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("malformed answer to {req:?}: {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    Ok(RawResp {
        status,
        headers,
        body,
    })
}

// ================================================================== tests

/// 1. Twenty concurrent explicit resumes of one suspended actor: one
///    restore, nineteen 409s; one sandbox; `restores == 1`; own ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_resumes_of_one_actor_make_one_sandbox() -> anyhow::Result<()> {
    const CALLS: usize = 20;
    let agent = Agent::start().await?;
    agent.deploy_probe().await?;
    agent.atespace("rel").await?;
    agent.create_actor("rel", "solo").await?;

    let mut set = tokio::task::JoinSet::new();
    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(CALLS));
    for _ in 0..CALLS {
        let api = agent.api.clone();
        let gate = gate.clone();
        set.spawn(async move {
            gate.wait().await;
            api.call(Method::POST, "/atespaces/rel/actors/solo/resume", None)
                .await
        });
    }
    let mut answers = Vec::new();
    while let Some(r) = set.join_next().await {
        answers.push(r??);
    }
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for r in &answers {
        *statuses.entry(r.status).or_default() += 1;
    }
    let oks: Vec<&Resp> = answers.iter().filter(|r| r.status == 200).collect();
    let others: Vec<&Resp> = answers.iter().filter(|r| r.status != 200).collect();
    assert_eq!(
        oks.len(),
        1,
        "exactly one of {CALLS} concurrent resumes must restore; statuses {statuses:?}"
    );
    assert_eq!(others.len(), CALLS - 1, "statuses {statuses:?}");
    for r in &others {
        assert!(
            r.status == 409
                && r.kind() == "wrong-state"
                && r.error()
                    .contains("cannot resume actor rel/solo: it is RUNNING"),
            "a losing concurrent resume must be 409 wrong-state \"... it is RUNNING\"; got {} {}",
            r.status,
            r.text
        );
    }
    let cid = oks[0].json["sandbox"]
        .as_str()
        .with_context(|| format!("the 200 resume names no sandbox: {}", oks[0].text))?
        .to_owned();

    let sandboxes = agent.settle_sandboxes(std::slice::from_ref(&cid)).await?;
    let prefix = format!("ate-{}-", agent.instance);
    let listed: Vec<String> = runsc_ids()
        .await?
        .into_iter()
        .filter(|c| c.starts_with(&prefix))
        .collect();
    assert_eq!(
        listed,
        vec![cid.clone()],
        "runsc must list exactly the actor's one sandbox for this agent"
    );
    let v = agent.actor("rel", "solo").await?;
    assert_eq!(v["state"], "RUNNING", "{v}");
    assert_eq!(v["sandbox"], cid.as_str(), "{v}");
    assert_eq!(
        v["restores"], 1,
        "20 concurrent resumes must restore once: {v}"
    );
    let w = whoami(&agent.router(), "rel", "solo").await?;
    assert_eq!(w.file, "solo", "whoami through the router: {w:?}");

    eprintln!(
        "concurrent resumes of one actor: calls {CALLS}, statuses {statuses:?}, sandboxes {sandboxes:?} (runsc: {listed:?}), restores {}, whoami {:?}",
        v["restores"], w.file
    );
    assert_no_leaks(agent).await
}

/// 2. Sixteen actors resumed at once: all 200, each reads its own ID, all
///    distinct, sixteen distinct sandboxes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_resumes_of_16_actors_each_read_their_own_id() -> anyhow::Result<()> {
    const N: usize = 16;
    let agent = Agent::start().await?;
    agent.deploy_probe().await?;
    agent.atespace("rel").await?;
    let ids: Vec<String> = (0..N).map(|i| format!("actor-{i:02}")).collect();
    for id in &ids {
        agent.create_actor("rel", id).await?;
    }

    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(N));
    let mut set = tokio::task::JoinSet::new();
    let wall = Instant::now();
    for id in ids.clone() {
        let api = agent.api.clone();
        let gate = gate.clone();
        set.spawn(async move {
            gate.wait().await;
            let r = api
                .call(
                    Method::POST,
                    &format!("/atespaces/rel/actors/{id}/resume"),
                    None,
                )
                .await;
            (id, r)
        });
    }
    let mut per: BTreeMap<String, Resp> = BTreeMap::new();
    while let Some(j) = set.join_next().await {
        let (id, r) = j?;
        per.insert(id, r?);
    }
    let wall_ms = millis(wall.elapsed());
    let failed: Vec<String> = per
        .iter()
        .filter(|(_, r)| r.status != 200)
        .map(|(id, r)| format!("{id}: {} {}", r.status, r.text))
        .collect();
    assert!(failed.is_empty(), "concurrent resumes failed: {failed:?}");
    let ms: Vec<u64> = per.values().map(|r| millis(r.elapsed)).collect();
    let agent_ms: Vec<u64> = per
        .values()
        .filter_map(|r| r.json["last_resume_ms"].as_u64())
        .collect();
    let cids: BTreeSet<String> = per
        .values()
        .filter_map(|r| r.json["sandbox"].as_str().map(String::from))
        .collect();
    assert_eq!(
        cids.len(),
        N,
        "{N} actors must run in {N} distinct sandboxes: {cids:?}"
    );

    let router = agent.router();
    let mut set = tokio::task::JoinSet::new();
    for id in ids.clone() {
        let router = router.clone();
        set.spawn(async move {
            let w = whoami(&router, "rel", &id).await;
            (id, w)
        });
    }
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    while let Some(j) = set.join_next().await {
        let (id, w) = j?;
        seen.insert(id, w?.file);
    }
    let wrong: Vec<(&String, &String)> = seen.iter().filter(|(id, f)| id != f).collect();
    assert!(
        wrong.is_empty(),
        "actors that did not read their own ID (actor, read): {wrong:?}"
    );
    let distinct: BTreeSet<&String> = seen.values().collect();
    assert_eq!(distinct.len(), N, "IDs read are not all distinct: {seen:?}");
    let listed = agent
        .settle_sandboxes(&cids.iter().cloned().collect::<Vec<_>>())
        .await?;

    let (p50, max) = p50_max(&ms);
    let (ap50, amax) = p50_max(&agent_ms);
    eprintln!(
        "16 concurrent resumes: wall {wall_ms} ms; per resume (client) p50 {p50} ms, max {max} ms; \
         agent last_resume_ms p50 {ap50} ms, max {amax} ms; {} distinct IDs read; {} sandboxes",
        distinct.len(),
        listed.len()
    );
    assert_no_leaks(agent).await
}

/// 3. Twenty-five suspend/resume cycles of one actor beside a neighbour
///    cycling too: each time its own ID and its own counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_five_cycles_keep_own_id_and_own_state() -> anyhow::Result<()> {
    const CYCLES: u64 = 25;
    const NEIGHBOUR_COUNT: u64 = 100;
    let agent = Agent::start().await?;
    agent.deploy_probe().await?;
    agent.atespace("rel").await?;
    agent.create_actor("rel", "cycler").await?;
    agent.create_actor("rel", "neighbour").await?;
    let router = agent.router();

    // The neighbour: resumed on demand by its first request, counter 100.
    for i in 1..=NEIGHBOUR_COUNT {
        let c: Counter = router.post_json("rel", "neighbour", "/counter").await?;
        assert_eq!(c.counter, i, "neighbour counter");
    }

    let api = &agent.api;
    let main_loop = async {
        let mut suspend_ms = Vec::new();
        let mut resume_ms = Vec::new();
        for k in 1..=CYCLES {
            let c: Counter = router.post_json("rel", "cycler", "/counter").await?;
            ensure!(
                c.counter == k,
                "cycle {k}: POST /counter gave {}, expected {k}",
                c.counter
            );
            let t = Instant::now();
            let v = api
                .ok(Method::POST, "/atespaces/rel/actors/cycler/suspend", None)
                .await?;
            suspend_ms.push(millis(t.elapsed()));
            ensure!(v["state"] == "SUSPENDED", "cycle {k}: after suspend {v}");
            let t = Instant::now();
            let w = whoami(&router, "rel", "cycler").await?;
            resume_ms.push(millis(t.elapsed()));
            ensure!(
                w.file == "cycler",
                "cycle {k}: the resumed actor read {:?}, not its own ID \"cycler\"",
                w.file
            );
            let c: Counter = router.get_json("rel", "cycler", "/counter").await?;
            ensure!(
                c.counter == k,
                "cycle {k}: counter after resume is {} ({}), expected {k} from its own last snapshot",
                c.counter,
                match c.counter {
                    0 => "the golden's state",
                    NEIGHBOUR_COUNT => "the neighbour's state",
                    _ => "someone else's state",
                }
            );
        }
        Ok::<_, anyhow::Error>((suspend_ms, resume_ms))
    };
    let neighbour_loop = async {
        let mut cycles = 0;
        for k in 1..=CYCLES {
            api.ok(
                Method::POST,
                "/atespaces/rel/actors/neighbour/suspend",
                None,
            )
            .await?;
            let w = whoami(&router, "rel", "neighbour").await?;
            ensure!(
                w.file == "neighbour",
                "neighbour cycle {k}: read {:?}",
                w.file
            );
            let c: Counter = router.get_json("rel", "neighbour", "/counter").await?;
            ensure!(
                c.counter == NEIGHBOUR_COUNT,
                "neighbour cycle {k}: counter {} after resume, expected its own {NEIGHBOUR_COUNT}",
                c.counter
            );
            cycles += 1;
        }
        Ok::<_, anyhow::Error>(cycles)
    };
    let wall = Instant::now();
    let (main, neighbour) = tokio::time::timeout(Duration::from_secs(150), async {
        tokio::join!(main_loop, neighbour_loop)
    })
    .await
    .context("the cycles did not finish within 150 s")?;
    let (suspend_ms, resume_ms) = main?;
    let neighbour_cycles = neighbour?;
    let wall_ms = millis(wall.elapsed());

    let v = agent.actor("rel", "cycler").await?;
    assert_eq!(
        v["restores"],
        CYCLES + 1,
        "one golden restore then {CYCLES} own: {v}"
    );
    assert_eq!(v["last_restore_from"], "own", "{v}");
    let n = agent.actor("rel", "neighbour").await?;
    assert_eq!(n["restores"], CYCLES + 1, "{n}");
    let running: Vec<String> = [&v, &n]
        .iter()
        .filter_map(|x| x["sandbox"].as_str().map(String::from))
        .collect();
    agent.settle_sandboxes(&running).await?;

    let (sp50, smax) = p50_max(&suspend_ms);
    let (rp50, rmax) = p50_max(&resume_ms);
    eprintln!(
        "cycles: {CYCLES} (neighbour {neighbour_cycles} alongside, counter {NEIGHBOUR_COUNT}); wall {wall_ms} ms; \
         suspend ms p50 {sp50} max {smax}: {suspend_ms:?}; resume (routed whoami, on demand) ms p50 {rp50} max {rmax}: {resume_ms:?}"
    );
    assert_no_leaks(agent).await
}

/// 4. At least 10,000 atomic host rewrites of `actor-id` while the actor
///    reads it in a loop: never torn, empty or missing; both values seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_atomic_rewrites_are_never_torn() -> anyhow::Result<()> {
    const WANT: u64 = 10_000;
    let agent = Agent::start().await?;
    agent.deploy_probe().await?;
    agent.atespace("rel").await?;
    let id = "atomic";
    let other = format!("{id}-rewritten");
    agent.create_actor("rel", id).await?;
    agent
        .api
        .ok(
            Method::POST,
            &format!("/atespaces/rel/actors/{id}/resume"),
            None,
        )
        .await?;
    let router = agent.router();
    let path = format!("/atespaces/rel/actors/{id}/identity/rewrite");

    // Does this agent honour `times`? With times = 1 it writes once (plus
    // the final own ID); without it, it rewrites for the whole for_ms.
    let probe = agent
        .api
        .ok(
            Method::POST,
            &path,
            Some(json!({ "values": [id], "for_ms": 300, "times": 1 })),
        )
        .await?;
    let probe_writes = probe["writes"].as_u64().context("writes")?;
    let has_times = probe_writes <= 2;
    eprintln!(
        "rewrite hook: {{times: 1, for_ms: 300}} made {probe_writes} write(s): `times` is {}",
        if has_times {
            "supported"
        } else {
            "not supported yet; looping for_ms"
        }
    );

    let api = agent.api.clone();
    let values = json!([id, other]);
    let writer_path = path.clone();
    let writer = tokio::spawn(async move {
        let mut total = 0u64;
        let mut calls = 0u32;
        let t0 = Instant::now();
        while total < WANT {
            if calls >= 12 || t0.elapsed() > Duration::from_secs(50) {
                bail!(
                    "only {total} rewrites after {calls} calls in {:?}",
                    t0.elapsed()
                );
            }
            let body = if has_times {
                json!({ "values": values, "for_ms": 30000, "times": WANT })
            } else {
                json!({ "values": values, "for_ms": 4000 })
            };
            let r = api.ok(Method::POST, &writer_path, Some(body)).await?;
            total += r["writes"].as_u64().context("writes")?;
            calls += 1;
        }
        Ok::<_, anyhow::Error>((total, calls, t0.elapsed()))
    });

    let mut reads = 0u64;
    let mut errors = 0u64;
    let mut empty = 0u64;
    let mut dropped = 0u64;
    let mut first_error: Option<String> = None;
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut watches = 0;
    while !writer.is_finished() {
        ensure!(watches < 8, "the rewrites outlasted 8 watches of 10 s");
        let w: Value = router
            .get("rel", id, "/identity-watch?ms=10000")
            .await?
            .ok()?
            .json()?;
        watches += 1;
        reads += w["reads"].as_u64().unwrap_or(0);
        errors += w["errors"].as_u64().unwrap_or(0);
        empty += w["empty_reads"].as_u64().unwrap_or(0);
        dropped += w["distinct_dropped"].as_u64().unwrap_or(0);
        if first_error.is_none() {
            first_error = w["first_error"].as_str().map(String::from);
        }
        for d in w["distinct"].as_array().into_iter().flatten() {
            let bytes = ate_harness::probe::unhex(d["value_hex"].as_str().unwrap_or(""))
                .unwrap_or_default();
            *seen
                .entry(String::from_utf8_lossy(&bytes).into_owned())
                .or_default() += d["count"].as_u64().unwrap_or(0);
        }
    }
    let (writes, calls, write_time) = writer.await??;

    eprintln!(
        "atomic rewrites: {writes} writes in {calls} call(s) over {} ms; {reads} reads in {watches} watch(es) of 10 s; \
         values seen {seen:?}; errors {errors}; empty {empty}",
        write_time.as_millis()
    );
    assert!(
        writes >= WANT,
        "only {writes} rewrites, expected at least {WANT}"
    );
    assert!(
        errors == 0 && empty == 0,
        "{errors} failed reads (first: {first_error:?}) and {empty} empty reads in {reads}: the replace is not atomic"
    );
    assert_eq!(
        dropped, 0,
        "the probe dropped {dropped} values: more than 1024 distinct values were read"
    );
    let torn: Vec<(&String, &u64)> = seen
        .iter()
        .filter(|(v, _)| **v != id && **v != other)
        .collect();
    assert!(
        torn.is_empty(),
        "the actor read values other than {id:?} and {other:?}: {torn:?}"
    );
    assert!(
        seen.contains_key(id) && seen.contains_key(&other),
        "both values must be seen in {reads} reads: {seen:?}"
    );
    let w = whoami(&router, "rel", id).await?;
    assert_eq!(
        w.file, id,
        "after the rewrites the actor reads its own ID again"
    );
    assert_no_leaks(agent).await
}

/// One bad control API call: its exact status, kind and a fragment of its
/// message.
struct Bad {
    what: String,
    method: Method,
    path: String,
    body: Option<Value>,
    raw_body: Option<String>,
    status: u16,
    kind: &'static str,
    fragment: String,
}

fn bad(
    what: impl Into<String>,
    method: Method,
    path: impl Into<String>,
    body: Option<Value>,
    status: u16,
    kind: &'static str,
    fragment: impl Into<String>,
) -> Bad {
    Bad {
        what: what.into(),
        method,
        path: path.into(),
        body,
        raw_body: None,
        status,
        kind,
        fragment: fragment.into(),
    }
}

/// Everything a bad call could have changed: templates, atespaces, every
/// atespace's actors, sandboxes, and the agent's template and actor dirs.
async fn world(agent: &Agent) -> anyhow::Result<Value> {
    let api = &agent.api;
    let templates = api.ok(Method::GET, "/templates", None).await?;
    let atespaces = api.ok(Method::GET, "/atespaces", None).await?;
    let mut actors = serde_json::Map::new();
    for a in atespaces["atespaces"].as_array().into_iter().flatten() {
        let a = a.as_str().unwrap_or_default();
        actors.insert(
            a.to_owned(),
            api.ok(Method::GET, &format!("/atespaces/{a}/actors"), None)
                .await?,
        );
    }
    let list = |p: PathBuf| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let mut actor_dirs = BTreeMap::new();
    for a in list(agent.state.join("actors")) {
        actor_dirs.insert(a.clone(), list(agent.state.join("actors").join(&a)));
    }
    Ok(json!({
        "templates": templates,
        "atespaces": atespaces,
        "actors": actors,
        "sandboxes": agent.sandboxes().await?,
        "template_dirs": list(agent.state.join("templates")),
        "actor_dirs": actor_dirs,
    }))
}

/// 5. Bad input is rejected with the exact status and a message naming the
///    problem, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_rejected_exactly_and_changes_nothing() -> anyhow::Result<()> {
    let agent = Agent::start().await?;
    agent.deploy_probe().await?;
    agent.atespace("rel").await?;
    agent.create_actor("rel", "steady").await?;
    agent.create_actor("rel", "idle").await?;
    let v = agent
        .api
        .ok(Method::POST, "/atespaces/rel/actors/steady/resume", None)
        .await?;
    let steady_cid = v["sandbox"].as_str().context("sandbox")?.to_owned();
    let router = agent.router();
    for k in 1..=3 {
        let c: Counter = router.post_json("rel", "steady", "/counter").await?;
        assert_eq!(c.counter, k);
    }
    agent
        .settle_sandboxes(std::slice::from_ref(&steady_cid))
        .await?;

    // ---- the control API table
    const LABEL: &str = "must match ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
    let long = "a".repeat(64);
    let names: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("uppercase", "Upper".into()),
        ("64 chars", long.clone()),
        ("leading -", "-lead".into()),
        ("trailing -", "trail-".into()),
        ("dot", "a.b".into()),
        ("slash", "a/b".into()),
        ("dotdot", "..".into()),
        ("unicode", "é".into()),
        ("NUL", "a\0b".into()),
    ];
    let rule = |v: &str| -> String {
        if v.is_empty() {
            "must not be empty".into()
        } else if v.chars().count() > 63 {
            format!("must be at most 63 characters (got {})", v.chars().count())
        } else {
            LABEL.into()
        }
    };
    let mut cases: Vec<Bad> = Vec::new();
    for (label, v) in &names {
        cases.push(bad(
            format!("atespace name {label}"),
            Method::POST,
            "/atespaces",
            Some(json!({ "name": v })),
            400,
            "invalid",
            format!("invalid atespace {v:?}: {}", rule(v)),
        ));
        cases.push(bad(
            format!("actor id {label}"),
            Method::POST,
            "/atespaces/rel/actors",
            Some(json!({ "id": v, "template": TEMPLATE })),
            400,
            "invalid",
            format!("invalid actor id {v:?}: {}", rule(v)),
        ));
    }
    // Names in the path (percent-encoded where needed).
    for (path, field, value) in [
        ("/atespaces/Rel/actors", "atespace", "Rel"),
        ("/atespaces/rel/actors/Steady", "actor id", "Steady"),
        ("/atespaces/rel/actors/a%2Fb/resume", "actor id", "a/b"),
        ("/atespaces/rel/actors/a%00b", "actor id", "a\0b"),
        ("/atespaces/rel/actors/%C3%A9/suspend", "actor id", "é"),
    ] {
        let method = if path.ends_with("/resume") || path.ends_with("/suspend") {
            Method::POST
        } else {
            Method::GET
        };
        cases.push(bad(
            format!("{field} {value:?} in the path"),
            method,
            path,
            None,
            400,
            "invalid",
            format!("invalid {field} {value:?}: {LABEL}"),
        ));
    }
    cases.push(bad(
        "reserved atespace",
        Method::POST,
        "/atespaces",
        Some(json!({ "name": "ate-golden" })),
        400,
        "invalid",
        "ate-golden is reserved for golden actors",
    ));
    // Template specs.
    let probe = agent.bins.probe.display().to_string();
    let not_exec = agent.dir.as_ref().unwrap().path().join("not-executable");
    std::fs::write(&not_exec, b"#!/bin/false\n")?;
    let not_exec = not_exec.display().to_string();
    for (what, body, fragment) in [
        (
            "missing binary",
            json!({ "name": "t-missing", "binary": "/nonexistent/ate-probe" }),
            "invalid binary \"/nonexistent/ate-probe\": must exist".to_string(),
        ),
        (
            "relative binary path",
            json!({ "name": "t-relative", "binary": "ate-probe" }),
            "invalid binary \"ate-probe\": must be an absolute path".into(),
        ),
        (
            "binary not executable",
            json!({ "name": "t-noexec", "binary": not_exec }),
            format!("invalid binary {not_exec:?}: must be an executable regular file"),
        ),
        (
            "binary is a directory",
            json!({ "name": "t-dir", "binary": "/tmp" }),
            "invalid binary \"/tmp\": must be an executable regular file".into(),
        ),
        (
            "port 0",
            json!({ "name": "t-port0", "binary": probe, "port": 0 }),
            "invalid port \"0\": must be 1..=65535".into(),
        ),
        (
            "port 70000",
            json!({ "name": "t-port70000", "binary": probe, "port": 70000 }),
            "invalid request body".into(),
        ),
        (
            "relative args[0]",
            json!({ "name": "t-args", "binary": probe, "args": ["ate-probe"] }),
            "invalid args[0] \"ate-probe\": must be an absolute path inside the image".into(),
        ),
        (
            "env without =",
            json!({ "name": "t-env", "binary": probe, "env": ["NOEQUALS"] }),
            "invalid env \"NOEQUALS\": entries must be KEY=VALUE".into(),
        ),
        (
            "uppercase template name",
            json!({ "name": "Probe", "binary": probe }),
            "invalid template name \"Probe\": must be a DNS-1123 subdomain".into(),
        ),
        (
            "no binary field",
            json!({ "name": "t-nobinary" }),
            "invalid request body".into(),
        ),
    ] {
        cases.push(bad(
            format!("template: {what}"),
            Method::POST,
            "/templates",
            Some(body),
            400,
            "invalid",
            fragment,
        ));
    }
    let mut not_json = bad(
        "template: body is not JSON",
        Method::POST,
        "/templates",
        None,
        400,
        "invalid",
        "invalid request body",
    );
    not_json.raw_body = Some("{not json".into());
    cases.push(not_json);
    // Conflicts and wrong states.
    for (what, method, path, body, kind, fragment) in [
        (
            "duplicate template",
            Method::POST,
            "/templates",
            Some(json!({ "name": TEMPLATE, "binary": probe })),
            "already-exists",
            "template \"probe\" already exists",
        ),
        (
            "duplicate atespace",
            Method::POST,
            "/atespaces",
            Some(json!({ "name": "rel" })),
            "already-exists",
            "atespace \"rel\" already exists",
        ),
        (
            "duplicate actor",
            Method::POST,
            "/atespaces/rel/actors",
            Some(json!({ "id": "steady", "template": TEMPLATE })),
            "already-exists",
            "actor \"rel/steady\" already exists",
        ),
        (
            "delete a RUNNING actor",
            Method::DELETE,
            "/atespaces/rel/actors/steady",
            None,
            "wrong-state",
            "cannot delete actor rel/steady: it is RUNNING",
        ),
        (
            "resume a RUNNING actor",
            Method::POST,
            "/atespaces/rel/actors/steady/resume",
            None,
            "wrong-state",
            "cannot resume actor rel/steady: it is RUNNING",
        ),
        (
            "suspend a SUSPENDED actor",
            Method::POST,
            "/atespaces/rel/actors/idle/suspend",
            None,
            "wrong-state",
            "cannot suspend actor rel/idle: it is SUSPENDED",
        ),
        (
            "rewrite a SUSPENDED actor's identity",
            Method::POST,
            "/atespaces/rel/actors/idle/identity/rewrite",
            Some(json!({ "values": ["x"], "for_ms": 10 })),
            "wrong-state",
            "it is SUSPENDED; only a RUNNING actor's identity can be rewritten",
        ),
        (
            "delete a non-empty atespace",
            Method::DELETE,
            "/atespaces/rel",
            None,
            "wrong-state",
            "cannot delete atespace rel: it is not empty",
        ),
        (
            "delete a template in use",
            Method::DELETE,
            "/templates/probe",
            None,
            "wrong-state",
            "cannot delete template probe: it is in use by actor rel/",
        ),
    ] {
        cases.push(bad(what, method, path, body, 409, kind, fragment));
    }
    for (what, body, fragment) in [
        (
            "rewrite with for_ms 0",
            json!({ "values": ["x"], "for_ms": 0 }),
            "for_ms 1..=30000",
        ),
        (
            "rewrite with no values",
            json!({ "values": [], "for_ms": 10 }),
            "1 or more values of 1..=255 bytes",
        ),
    ] {
        cases.push(bad(
            what,
            Method::POST,
            "/atespaces/rel/actors/steady/identity/rewrite",
            Some(body),
            400,
            "invalid",
            fragment,
        ));
    }
    // Unknown things.
    for (what, method, path, body, fragment) in [
        (
            "unknown template",
            Method::GET,
            "/templates/nope",
            None,
            "template \"nope\" not found",
        ),
        (
            "delete unknown template",
            Method::DELETE,
            "/templates/nope",
            None,
            "template \"nope\" not found",
        ),
        (
            "unknown atespace",
            Method::GET,
            "/atespaces/nope/actors",
            None,
            "atespace \"nope\" not found",
        ),
        (
            "delete unknown atespace",
            Method::DELETE,
            "/atespaces/nope",
            None,
            "atespace \"nope\" not found",
        ),
        (
            "actor of unknown atespace",
            Method::GET,
            "/atespaces/nope/actors/steady",
            None,
            "atespace \"nope\" not found",
        ),
        (
            "unknown actor",
            Method::GET,
            "/atespaces/rel/actors/nope",
            None,
            "actor \"rel/nope\" not found",
        ),
        (
            "resume unknown actor",
            Method::POST,
            "/atespaces/rel/actors/nope/resume",
            None,
            "actor \"rel/nope\" not found",
        ),
        (
            "suspend unknown actor",
            Method::POST,
            "/atespaces/rel/actors/nope/suspend",
            None,
            "actor \"rel/nope\" not found",
        ),
        (
            "delete unknown actor",
            Method::DELETE,
            "/atespaces/rel/actors/nope",
            None,
            "actor \"rel/nope\" not found",
        ),
        (
            "create actor in unknown atespace",
            Method::POST,
            "/atespaces/nope/actors",
            Some(json!({ "id": "x", "template": TEMPLATE })),
            "atespace \"nope\" not found",
        ),
        (
            "create actor of unknown template",
            Method::POST,
            "/atespaces/rel/actors",
            Some(json!({ "id": "x", "template": "nope" })),
            "template \"nope\" not found",
        ),
    ] {
        cases.push(bad(what, method, path, body, 404, "not-found", fragment));
    }

    let mut rows = Vec::new();
    for c in &cases {
        let before = world(&agent).await?;
        let r = agent
            .api
            .send(
                c.method.clone(),
                &c.path,
                c.body.as_ref(),
                c.raw_body.as_deref(),
            )
            .await?;
        assert!(
            r.status == c.status && r.kind() == c.kind && r.error().contains(&c.fragment),
            "{}: {} {} must answer {} kind {:?} with a message containing {:?}; got {} {}",
            c.what,
            c.method,
            c.path,
            c.status,
            c.kind,
            c.fragment,
            r.status,
            r.text
        );
        let after = world(&agent).await?;
        assert_eq!(
            before, after,
            "{}: {} {} was rejected but changed the agent's state",
            c.what, c.method, c.path
        );
        rows.push(format!("{} {} {}", r.status, c.kind, c.what));
    }

    // ---- Host headers through the router, written byte for byte.
    let d = ACTOR_DOMAIN;
    let h = actor_host("steady", "rel");
    struct HostCase {
        what: &'static str,
        host: Option<String>,
        status: u16,
        fragment: String,
    }
    let host_cases = vec![
        HostCase {
            what: "missing Host",
            host: None,
            status: 400,
            fragment: "missing Host header".into(),
        },
        HostCase {
            what: "empty Host",
            host: Some(String::new()),
            status: 400,
            fragment: "missing host".into(),
        },
        HostCase {
            what: "wrong suffix",
            host: Some("steady.rel.example.com".into()),
            status: 400,
            fragment: format!(
                "host \"steady.rel.example.com\" is not an actor address: must end in \".{d}\""
            ),
        },
        HostCase {
            what: "no atespace",
            host: Some(format!("steady.{d}")),
            status: 400,
            fragment: format!("host \"steady.{d}\" names no atespace"),
        },
        HostCase {
            what: "three labels",
            host: Some(format!("x.{h}")),
            status: 400,
            fragment: "has 3 labels before".into(),
        },
        HostCase {
            what: "port",
            host: Some(format!("{h}:8080")),
            status: 200,
            fragment: String::new(),
        },
        HostCase {
            what: "trailing dot",
            host: Some(format!("{h}.")),
            status: 200,
            fragment: String::new(),
        },
        HostCase {
            what: "trailing dot and port",
            host: Some(format!("{h}.:80")),
            status: 200,
            fragment: String::new(),
        },
        HostCase {
            what: "uppercase",
            host: Some(h.to_ascii_uppercase()),
            status: 200,
            fragment: String::new(),
        },
        HostCase {
            what: "IPv4 literal",
            host: Some("127.0.0.1".into()),
            status: 400,
            fragment: "host \"127.0.0.1\" is an ip address".into(),
        },
        HostCase {
            what: "IPv4 literal with port",
            host: Some(format!("{}", agent.router_addr)),
            status: 400,
            fragment: format!("host \"{}\" is an ip address", agent.router_addr),
        },
        HostCase {
            what: "IPv6 literal",
            host: Some("[::1]:80".into()),
            status: 400,
            fragment: "host \"[::1]:80\" is an ip address".into(),
        },
        HostCase {
            what: "port 0",
            host: Some(format!("{h}:0")),
            status: 400,
            fragment: "invalid port \"0\"".into(),
        },
        HostCase {
            what: "port 70000",
            host: Some(format!("{h}:70000")),
            status: 400,
            fragment: "invalid port \"70000\"".into(),
        },
        HostCase {
            what: "invalid label",
            host: Some(format!("ste_ady.rel.{d}")),
            status: 400,
            fragment: "invalid actor id \"ste_ady\"".into(),
        },
        HostCase {
            what: "unknown actor",
            host: Some(actor_host("nope", "rel")),
            status: 404,
            fragment: "actor \"rel/nope\" not found".into(),
        },
        HostCase {
            what: "unknown atespace",
            host: Some(actor_host("steady", "nope")),
            status: 404,
            fragment: "atespace \"nope\" not found".into(),
        },
    ];
    for c in &host_cases {
        let before = world(&agent).await?;
        let r = raw_get(agent.router_addr, c.host.as_deref(), "/whoami").await?;
        if c.status == 200 {
            let w = r.json();
            assert!(
                r.status == 200
                    && w["file"] == "steady"
                    && r.header("x-ate-actor") == Some("rel/steady"),
                "Host {:?} ({}) must route to rel/steady; got {} x-ate-actor {:?} {}",
                c.host,
                c.what,
                r.status,
                r.header("x-ate-actor"),
                r.body
            );
        } else {
            let j = r.json();
            let msg = j["error"].as_str().unwrap_or("");
            assert!(
                r.status == c.status && msg.contains(&c.fragment),
                "Host {:?} ({}) must answer {} with a message containing {:?}; got {} {}",
                c.host,
                c.what,
                c.status,
                c.fragment,
                r.status,
                r.body
            );
            let want_kind = if c.status == 400 {
                "invalid-host"
            } else {
                "not-found"
            };
            assert_eq!(j["kind"], want_kind, "Host {:?}: {}", c.host, r.body);
        }
        let after = world(&agent).await?;
        assert_eq!(
            before, after,
            "Host {:?} ({}) changed the agent's state",
            c.host, c.what
        );
        rows.push(format!("{} Host {}", r.status, c.what));
    }

    // The actors are as they were.
    let s = agent.actor("rel", "steady").await?;
    assert!(
        s["state"] == "RUNNING" && s["sandbox"] == steady_cid.as_str() && s["restores"] == 1,
        "steady changed: {s}"
    );
    let i = agent.actor("rel", "idle").await?;
    assert!(
        i["state"] == "SUSPENDED" && i["restores"] == 0,
        "idle changed: {i}"
    );
    let c: Counter = router.get_json("rel", "steady", "/counter").await?;
    assert_eq!(c.counter, 3, "steady's in-memory counter changed");
    let w = whoami(&router, "rel", "steady").await?;
    assert_eq!(w.file, "steady");

    eprintln!(
        "bad input: {} control API cases and {} Host cases rejected (or routed) exactly, each changing nothing:\n  {}",
        cases.len(),
        host_cases.len(),
        rows.join("\n  ")
    );
    assert_no_leaks(agent).await
}
