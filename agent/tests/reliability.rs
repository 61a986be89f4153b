//! The reliability matrix: the reference agent under concurrent and
//! repeated use, and under bad input, on real gVisor sandboxes. Each test
//! starts its own agent through the one client ([`Agent::spawn`]) on a temp
//! state dir under `target/`, deploys the probe template, prints its
//! figures on stderr, and ends with [`assert_no_leaks`]: after SIGTERM no
//! sandbox, process or network namespace of that agent remains, and the
//! state dir goes away.
//!
//! Needs root and runsc. Run with
//! `cargo test -p ate-refagent --test reliability -- --show-output`.
//!
//! [`Agent::spawn`]: ate_agent_api::client::Agent::spawn

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use ate_agent_api::client::{AgentClient, ApiError, Method};
use ate_agent_api::{
    ActorState, ActorView, ErrorKind, IdentityRewrite, Phase, RestoreSource, TemplateSpec,
    TemplateView,
};
use ate_harness::cmd::Cmd;
use ate_harness::fixture::StaticBins;
use ate_harness::probe::{unhex, Counter, IdentityWatch, Whoami};
use ate_harness::router::{actor_host, RouterClient, ACTOR_DOMAIN};
use serde::Deserialize;
use support::{container_ids, proc_stat, runsc_ids_of, Guard, ProcStat, TERM_GRACE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Name of the template every test deploys.
const TEMPLATE: &str = "probe";
/// How long the golden boot may take.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long background deletions of checkpointed sandboxes may take.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// The grace the local backend gives its agent on SIGTERM.
const HARNESS_GRACE: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ agent

/// One `ate-refagent serve` on a temp state dir of its own.
struct Rig {
    agent: Guard,
    api: AgentClient,
    router_addr: SocketAddr,
    instance: String,
    pid: u32,
    /// The temp dir (state dir = `<dir>/state`, log = `<dir>/agent.log`);
    /// `None` once [`assert_no_leaks`] has removed it.
    dir: Option<tempfile::TempDir>,
    state: PathBuf,
    bins: StaticBins,
    /// `ip netns list` before the agent started.
    netns_before: Vec<String>,
}

impl Rig {
    async fn start() -> anyhow::Result<Rig> {
        let bins = support::bins().await?;
        let netns_before = netns_list().await?;
        let dir = support::test_dir("ate-rel-")?;
        let state = dir.path().join("state");
        let agent = support::spawn(&bins, &state, &dir.path().join("agent.log")).await?;
        let line = agent.line().clone();
        for a in [line.control, line.router] {
            assert!(a.ip().is_loopback(), "agent listens off loopback: {line:?}");
        }
        let pid = agent.pid();
        assert_eq!(line.pid, pid, "{line:?}");
        eprintln!(
            "agent pid {pid} instance {} control {} router {} state {}",
            line.instance,
            line.control,
            line.router,
            state.display()
        );
        Ok(Rig {
            api: agent.client().clone(),
            router_addr: line.router,
            instance: line.instance,
            pid,
            agent,
            dir: Some(dir),
            state,
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
        let v = self
            .api
            .deploy_template(
                &TemplateSpec::new(TEMPLATE, &self.bins.probe),
                READY_DEADLINE,
            )
            .await?;
        ensure!(
            v.status.phase == Phase::Ready,
            "the probe template failed: {:?}",
            v.status
        );
        eprintln!(
            "template {TEMPLATE} Ready after {} ms (timings {:?})",
            t0.elapsed().as_millis(),
            v.status.timings_ms
        );
        Ok(())
    }

    async fn create_actor(&self, a: &str, id: &str) -> anyhow::Result<ActorView> {
        let v = self.api.create_actor(a, id, TEMPLATE).await?;
        assert_eq!(
            v.state,
            ActorState::Suspended,
            "a new actor starts SUSPENDED: {v:?}"
        );
        Ok(v)
    }

    async fn sandboxes(&self) -> anyhow::Result<Vec<String>> {
        let mut ids = self.api.sandboxes().await?;
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
}

// ------------------------------------------------------------- leak checks

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

/// The last thing every test does: SIGTERM the agent and check it left
/// nothing behind — no runsc container with its instance prefix, no
/// process under it or naming its containers or state dir, no new network
/// namespace, and (after the temp dir is dropped) no state dir.
async fn assert_no_leaks(mut rig: Rig) -> anyhow::Result<()> {
    let prefix = format!("ate-{}-", rig.instance);
    let marks = vec![prefix.clone(), rig.state.display().to_string()];
    let ours_before = runsc_ids_of(&rig.instance).await?;
    let procs_before = agent_processes(rig.pid, &marks);

    let agent = rig.agent.take();
    let t0 = Instant::now();
    // An unclean exit (or none within the grace, then SIGKILL) is an error
    // quoting the agent's log.
    let status = agent.stop(TERM_GRACE).await.with_context(|| {
        format!("the agent did not exit cleanly within {TERM_GRACE:?} of SIGTERM")
    })?;
    let term_ms = t0.elapsed().as_millis();

    if t0.elapsed() > HARNESS_GRACE {
        eprintln!(
            "WARNING: the agent took {term_ms} ms to shut down, longer than the {HARNESS_GRACE:?} the local backend \
             grants it before SIGKILL (harness/src/backend/local.rs)"
        );
    }
    let left = runsc_ids_of(&rig.instance).await?;
    assert!(
        left.is_empty(),
        "runsc still lists containers of instance {prefix} after SIGTERM: {left:?}"
    );
    assert!(
        !Path::new(&format!("/proc/{}", rig.pid)).exists(),
        "the agent's pid {} is still in /proc after it was reaped: {:?}",
        rig.pid,
        proc_stat(rig.pid)
    );
    let survivors: Vec<&(u32, u64, String)> = procs_before
        .iter()
        .filter(|(pid, start, _)| proc_stat(*pid).is_some_and(|s| s.start == *start))
        .collect();
    assert!(
        survivors.is_empty(),
        "processes of the agent outlived it: {survivors:?}"
    );
    let now = agent_processes(rig.pid, &marks);
    assert!(
        now.is_empty(),
        "processes under pid {} or naming {marks:?} remain: {now:?}",
        rig.pid
    );
    let netns_after = netns_list().await?;
    assert_eq!(
        netns_after, rig.netns_before,
        "`ip netns list` changed while the agent ran (it must create none)"
    );
    let records = list_dir(&rig.state.join("sandboxes"));
    assert!(
        records.is_empty(),
        "sandbox records left in the state dir after SIGTERM: {records:?}"
    );

    let dir = rig.dir.take().expect("the temp dir is there");
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
        rig.pid,
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

/// The names in a directory, sorted (none when it cannot be read).
fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
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
}

/// The router's error body. Its kinds (`invalid-host`, `timeout`, ...)
/// are the router's own, not the control API's [`ErrorKind`].
#[derive(Debug, Deserialize)]
struct RouterError {
    error: String,
    kind: String,
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
    let rig = Rig::start().await?;
    rig.deploy_probe().await?;
    rig.api.create_atespace("rel").await?;
    rig.create_actor("rel", "solo").await?;

    let mut set = tokio::task::JoinSet::new();
    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(CALLS));
    for _ in 0..CALLS {
        let api = rig.api.clone();
        let gate = gate.clone();
        set.spawn(async move {
            gate.wait().await;
            api.resume("rel", "solo").await
        });
    }
    let mut oks: Vec<ActorView> = Vec::new();
    let mut refused: Vec<(u16, ErrorKind, String)> = Vec::new();
    while let Some(r) = set.join_next().await {
        match r? {
            Ok(v) => oks.push(v),
            Err(ApiError::Api {
                status,
                kind,
                message,
                ..
            }) => refused.push((status, kind, message)),
            Err(e) => return Err(e).context("a concurrent resume got no answer"),
        }
    }
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for s in oks
        .iter()
        .map(|_| 200)
        .chain(refused.iter().map(|(s, _, _)| *s))
    {
        *statuses.entry(s).or_default() += 1;
    }
    assert_eq!(
        oks.len(),
        1,
        "exactly one of {CALLS} concurrent resumes must restore; statuses {statuses:?}"
    );
    assert_eq!(refused.len(), CALLS - 1, "statuses {statuses:?}");
    for (status, kind, message) in &refused {
        assert!(
            *status == 409
                && *kind == ErrorKind::WrongState
                && message.contains("cannot resume actor rel/solo: it is RUNNING"),
            "a losing concurrent resume must be 409 wrong-state \"... it is RUNNING\"; got {status} {kind}: {message}"
        );
    }
    let cid = oks[0]
        .sandbox
        .clone()
        .with_context(|| format!("the 200 resume names no sandbox: {:?}", oks[0]))?;

    let containers = container_ids(&oks[0]);
    assert_eq!(containers.len(), 2, "pause and app: {:?}", oks[0]);
    let sandboxes = rig.settle_sandboxes(&containers).await?;
    let listed = runsc_ids_of(&rig.instance).await?;
    assert_eq!(
        listed, containers,
        "runsc must list exactly the actor's one sandbox (pause and app) for this agent"
    );
    let v = rig.api.actor("rel", "solo").await?;
    assert_eq!(v.state, ActorState::Running, "{v:?}");
    assert_eq!(v.sandbox.as_deref(), Some(cid.as_str()), "{v:?}");
    assert_eq!(
        v.restores, 1,
        "20 concurrent resumes must restore once: {v:?}"
    );
    let w = whoami(&rig.router(), "rel", "solo").await?;
    assert_eq!(w.file, "solo", "whoami through the router: {w:?}");

    eprintln!(
        "concurrent resumes of one actor: calls {CALLS}, statuses {statuses:?}, sandboxes {sandboxes:?} (runsc: {listed:?}), restores {}, whoami {:?}",
        v.restores, w.file
    );
    assert_no_leaks(rig).await
}

/// 2. Sixteen actors resumed at once: all 200, each reads its own ID, all
///    distinct, sixteen distinct sandboxes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_resumes_of_16_actors_each_read_their_own_id() -> anyhow::Result<()> {
    const N: usize = 16;
    let rig = Rig::start().await?;
    rig.deploy_probe().await?;
    rig.api.create_atespace("rel").await?;
    let ids: Vec<String> = (0..N).map(|i| format!("actor-{i:02}")).collect();
    for id in &ids {
        rig.create_actor("rel", id).await?;
    }

    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(N));
    let mut set = tokio::task::JoinSet::new();
    let wall = Instant::now();
    for id in ids.clone() {
        let api = rig.api.clone();
        let gate = gate.clone();
        set.spawn(async move {
            gate.wait().await;
            let t0 = Instant::now();
            let r = api.resume("rel", &id).await;
            (id, t0.elapsed(), r)
        });
    }
    let mut per: BTreeMap<String, (Duration, Result<ActorView, ApiError>)> = BTreeMap::new();
    while let Some(j) = set.join_next().await {
        let (id, elapsed, r) = j?;
        per.insert(id, (elapsed, r));
    }
    let wall_ms = millis(wall.elapsed());
    let failed: Vec<String> = per
        .iter()
        .filter_map(|(id, (_, r))| r.as_ref().err().map(|e| format!("{id}: {e}")))
        .collect();
    assert!(failed.is_empty(), "concurrent resumes failed: {failed:?}");
    let views: Vec<&ActorView> = per.values().filter_map(|(_, r)| r.as_ref().ok()).collect();
    let ms: Vec<u64> = per.values().map(|(e, _)| millis(*e)).collect();
    let agent_ms: Vec<u64> = views.iter().filter_map(|v| v.last_resume_ms).collect();
    let cids: BTreeSet<String> = views.iter().filter_map(|v| v.sandbox.clone()).collect();
    assert_eq!(
        cids.len(),
        N,
        "{N} actors must run in {N} distinct sandboxes: {cids:?}"
    );

    let router = rig.router();
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
    let listed = rig
        .settle_sandboxes(
            &views
                .iter()
                .flat_map(|v| container_ids(v))
                .collect::<Vec<_>>(),
        )
        .await?;

    let (p50, max) = p50_max(&ms);
    let (ap50, amax) = p50_max(&agent_ms);
    eprintln!(
        "16 concurrent resumes: wall {wall_ms} ms; per resume (client) p50 {p50} ms, max {max} ms; \
         agent last_resume_ms p50 {ap50} ms, max {amax} ms; {} distinct IDs read; {} sandboxes",
        distinct.len(),
        listed.len()
    );
    assert_no_leaks(rig).await
}

/// 3. Twenty-five suspend/resume cycles of one actor beside a neighbour
///    cycling too: each time its own ID and its own counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_five_cycles_keep_own_id_and_own_state() -> anyhow::Result<()> {
    const CYCLES: u64 = 25;
    const NEIGHBOUR_COUNT: u64 = 100;
    let rig = Rig::start().await?;
    rig.deploy_probe().await?;
    rig.api.create_atespace("rel").await?;
    rig.create_actor("rel", "cycler").await?;
    rig.create_actor("rel", "neighbour").await?;
    let router = rig.router();

    // The neighbour: resumed on demand by its first request, counter 100.
    for i in 1..=NEIGHBOUR_COUNT {
        let c: Counter = router.post_json("rel", "neighbour", "/counter").await?;
        assert_eq!(c.counter, i, "neighbour counter");
    }

    let api = &rig.api;
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
            let v = api.suspend("rel", "cycler").await?;
            suspend_ms.push(millis(t.elapsed()));
            ensure!(
                v.state == ActorState::Suspended,
                "cycle {k}: after suspend {v:?}"
            );
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
            api.suspend("rel", "neighbour").await?;
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

    let v = rig.api.actor("rel", "cycler").await?;
    assert_eq!(
        v.restores,
        CYCLES + 1,
        "one golden restore then {CYCLES} own: {v:?}"
    );
    assert_eq!(v.last_restore_from, Some(RestoreSource::Own), "{v:?}");
    let n = rig.api.actor("rel", "neighbour").await?;
    assert_eq!(n.restores, CYCLES + 1, "{n:?}");
    let running: Vec<String> = [&v, &n].iter().flat_map(|x| container_ids(x)).collect();
    rig.settle_sandboxes(&running).await?;

    let (sp50, smax) = p50_max(&suspend_ms);
    let (rp50, rmax) = p50_max(&resume_ms);
    eprintln!(
        "cycles: {CYCLES} (neighbour {neighbour_cycles} alongside, counter {NEIGHBOUR_COUNT}); wall {wall_ms} ms; \
         suspend ms p50 {sp50} max {smax}: {suspend_ms:?}; resume (routed whoami, on demand) ms p50 {rp50} max {rmax}: {resume_ms:?}"
    );
    assert_no_leaks(rig).await
}

/// 4. At least 10,000 atomic host rewrites of `actor-id` while the actor
///    reads it in a loop: never torn, empty or missing; both values seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_atomic_rewrites_are_never_torn() -> anyhow::Result<()> {
    const WANT: u64 = 10_000;
    let rig = Rig::start().await?;
    rig.deploy_probe().await?;
    rig.api.create_atespace("rel").await?;
    let id = "atomic";
    let other = format!("{id}-rewritten");
    rig.create_actor("rel", id).await?;
    rig.api.resume("rel", id).await?;
    let router = rig.router();

    // Does this agent honour `times`? With times = 1 it writes once (plus
    // the final own ID); without it, it rewrites for the whole for_ms.
    let probe = rig
        .api
        .rewrite_identity(
            "rel",
            id,
            &IdentityRewrite {
                values: vec![id.into()],
                for_ms: 300,
                times: Some(1),
            },
        )
        .await?;
    let probe_writes = probe.writes;
    let has_times = probe_writes <= 2;
    eprintln!(
        "rewrite hook: {{times: 1, for_ms: 300}} made {probe_writes} write(s): `times` is {}",
        if has_times {
            "supported"
        } else {
            "not supported yet; looping for_ms"
        }
    );

    let api = rig.api.clone();
    let values = vec![id.to_owned(), other.clone()];
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
                IdentityRewrite {
                    values: values.clone(),
                    for_ms: 30000,
                    times: Some(WANT),
                }
            } else {
                IdentityRewrite {
                    values: values.clone(),
                    for_ms: 4000,
                    times: None,
                }
            };
            total += api.rewrite_identity("rel", id, &body).await?.writes;
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
        let w: IdentityWatch = router
            .get_json("rel", id, "/identity-watch?ms=10000")
            .await?;
        watches += 1;
        reads += w.reads;
        errors += w.errors;
        empty += w.empty_reads;
        dropped += w.distinct_dropped;
        if first_error.is_none() {
            first_error = w.first_error;
        }
        for d in &w.distinct {
            let bytes = unhex(&d.value_hex).unwrap_or_default();
            *seen
                .entry(String::from_utf8_lossy(&bytes).into_owned())
                .or_default() += d.count;
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
    assert_no_leaks(rig).await
}

/// What a bad call sends.
#[derive(Debug)]
enum Send {
    /// A request the client can spell (a well-formed call the agent must
    /// refuse): through its typed method.
    Client(Call),
    /// Bytes the client would never send (a bad name in the path, a body
    /// that is not a valid request): through `send_raw`, as given.
    Raw {
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
    },
}

/// One typed call of the client.
#[derive(Debug)]
enum Call {
    CreateTemplate(TemplateSpec),
    Template(String),
    DeleteTemplate(String),
    CreateAtespace(String),
    DeleteAtespace(String),
    CreateActor {
        atespace: String,
        id: String,
        template: String,
    },
    Actors(String),
    Actor(String, String),
    Resume(String, String),
    Suspend(String, String),
    DeleteActor(String, String),
    Rewrite(String, String, IdentityRewrite),
}

/// What a refused call answered: status, the kind of the agent's error
/// body (`None`: not an error body), its message, and the whole answer
/// for failure messages.
struct Answer {
    status: u16,
    kind: Option<ErrorKind>,
    message: String,
    text: String,
}

impl Send {
    async fn send(&self, api: &AgentClient) -> anyhow::Result<Answer> {
        let call = match self {
            Send::Raw { method, path, body } => {
                let r = api.send_raw(method.clone(), path, body.clone()).await?;
                let e = r.error_body();
                return Ok(Answer {
                    status: r.status,
                    kind: e.as_ref().map(|e| e.kind),
                    message: e.map(|e| e.error).unwrap_or_default(),
                    text: r.body,
                });
            }
            Send::Client(c) => c,
        };
        let r = match call {
            Call::CreateTemplate(spec) => api.create_template(spec).await.map(|v| format!("{v:?}")),
            Call::Template(n) => api.template(n).await.map(|v| format!("{v:?}")),
            Call::DeleteTemplate(n) => api.delete_template(n).await.map(|v| format!("{v:?}")),
            Call::CreateAtespace(n) => api.create_atespace(n).await.map(|v| format!("{v:?}")),
            Call::DeleteAtespace(n) => api.delete_atespace(n).await.map(|v| format!("{v:?}")),
            Call::CreateActor {
                atespace,
                id,
                template,
            } => api
                .create_actor(atespace, id, template)
                .await
                .map(|v| format!("{v:?}")),
            Call::Actors(a) => api.actors(a).await.map(|v| format!("{v:?}")),
            Call::Actor(a, id) => api.actor(a, id).await.map(|v| format!("{v:?}")),
            Call::Resume(a, id) => api.resume(a, id).await.map(|v| format!("{v:?}")),
            Call::Suspend(a, id) => api.suspend(a, id).await.map(|v| format!("{v:?}")),
            Call::DeleteActor(a, id) => api.delete_actor(a, id).await.map(|v| format!("{v:?}")),
            Call::Rewrite(a, id, rw) => api
                .rewrite_identity(a, id, rw)
                .await
                .map(|v| format!("{v:?}")),
        };
        let text = match &r {
            Ok(v) => format!("accepted: {v}"),
            Err(e) => e.to_string(),
        };
        Ok(match r {
            Err(ApiError::Api {
                status,
                kind,
                message,
                ..
            }) => Answer {
                status,
                kind: Some(kind),
                message,
                text,
            },
            Err(ApiError::NotAnErrorBody { status, .. }) => Answer {
                status,
                kind: None,
                message: String::new(),
                text,
            },
            Ok(_) => Answer {
                status: 200,
                kind: None,
                message: String::new(),
                text,
            },
            Err(e) => return Err(e).context("the agent did not answer"),
        })
    }
}

/// One bad control API call: its exact status, kind and a fragment of its
/// message.
struct Bad {
    what: String,
    send: Send,
    status: u16,
    kind: ErrorKind,
    fragment: String,
}

fn bad(
    what: impl Into<String>,
    send: Send,
    status: u16,
    kind: ErrorKind,
    fragment: impl Into<String>,
) -> Bad {
    Bad {
        what: what.into(),
        send,
        status,
        kind,
        fragment: fragment.into(),
    }
}

fn raw(method: Method, path: impl Into<String>, body: Option<&[u8]>) -> Send {
    Send::Raw {
        method,
        path: path.into(),
        body: body.map(<[u8]>::to_vec),
    }
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// Everything a bad call could have changed: templates, atespaces, every
/// atespace's actors, sandboxes, and the agent's template and actor dirs.
#[derive(Debug, PartialEq)]
struct World {
    templates: Vec<TemplateView>,
    atespaces: Vec<String>,
    actors: BTreeMap<String, Vec<ActorView>>,
    sandboxes: Vec<String>,
    template_dirs: Vec<String>,
    actor_dirs: BTreeMap<String, Vec<String>>,
}

async fn world(rig: &Rig) -> anyhow::Result<World> {
    let api = &rig.api;
    let atespaces = api.atespaces().await?;
    let mut actors = BTreeMap::new();
    for a in &atespaces {
        actors.insert(a.clone(), api.actors(a).await?);
    }
    let mut actor_dirs = BTreeMap::new();
    for a in list_dir(&rig.state.join("actors")) {
        actor_dirs.insert(a.clone(), list_dir(&rig.state.join("actors").join(&a)));
    }
    Ok(World {
        templates: api.templates().await?,
        atespaces,
        actors,
        sandboxes: rig.sandboxes().await?,
        template_dirs: list_dir(&rig.state.join("templates")),
        actor_dirs,
    })
}

/// 5. Bad input is rejected with the exact status and a message naming the
///    problem, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_rejected_exactly_and_changes_nothing() -> anyhow::Result<()> {
    use ErrorKind::{AlreadyExists, Invalid, NotFound, WrongState};
    let rig = Rig::start().await?;
    rig.deploy_probe().await?;
    rig.api.create_atespace("rel").await?;
    rig.create_actor("rel", "steady").await?;
    rig.create_actor("rel", "idle").await?;
    let v = rig.api.resume("rel", "steady").await?;
    let steady_cid = v.sandbox.clone().context("sandbox")?;
    let steady_containers = container_ids(&v);
    let router = rig.router();
    for k in 1..=3 {
        let c: Counter = router.post_json("rel", "steady", "/counter").await?;
        assert_eq!(c.counter, k);
    }
    rig.settle_sandboxes(&steady_containers).await?;

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
    let create_actor = |a: &str, id: &str, template: &str| {
        Send::Client(Call::CreateActor {
            atespace: a.into(),
            id: id.into(),
            template: template.into(),
        })
    };
    let mut cases: Vec<Bad> = Vec::new();
    for (label, v) in &names {
        cases.push(bad(
            format!("atespace name {label}"),
            Send::Client(Call::CreateAtespace(v.clone())),
            400,
            Invalid,
            format!("invalid atespace {v:?}: {}", rule(v)),
        ));
        cases.push(bad(
            format!("actor id {label}"),
            create_actor("rel", v, TEMPLATE),
            400,
            Invalid,
            format!("invalid actor id {v:?}: {}", rule(v)),
        ));
    }
    // Names in the path (percent-encoded where needed): the client would
    // not spell these, so they go raw.
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
            raw(method, path, None),
            400,
            Invalid,
            format!("invalid {field} {value:?}: {LABEL}"),
        ));
    }
    cases.push(bad(
        "reserved atespace",
        Send::Client(Call::CreateAtespace(s("ate-golden"))),
        400,
        Invalid,
        "ate-golden is reserved for golden actors",
    ));
    // Template specs.
    let probe = rig.bins.probe.clone();
    let not_exec = rig.dir.as_ref().unwrap().path().join("not-executable");
    std::fs::write(&not_exec, b"#!/bin/false\n")?;
    let spec = |name: &str, binary: &Path| TemplateSpec::new(name, binary);
    for (what, spec, fragment) in [
        (
            "missing binary",
            spec("t-missing", Path::new("/nonexistent/ate-probe")),
            s("invalid binary \"/nonexistent/ate-probe\": must exist"),
        ),
        (
            "relative binary path",
            spec("t-relative", Path::new("ate-probe")),
            s("invalid binary \"ate-probe\": must be an absolute path"),
        ),
        (
            "binary not executable",
            spec("t-noexec", &not_exec),
            format!(
                "invalid binary {:?}: must be an executable regular file",
                not_exec.display().to_string()
            ),
        ),
        (
            "binary is a directory",
            spec("t-dir", Path::new("/tmp")),
            s("invalid binary \"/tmp\": must be an executable regular file"),
        ),
        (
            "port 0",
            TemplateSpec {
                port: 0,
                ..spec("t-port0", &probe)
            },
            s("invalid port \"0\": must be 1..=65535"),
        ),
        (
            "relative args[0]",
            TemplateSpec {
                args: vec![s("ate-probe")],
                ..spec("t-args", &probe)
            },
            s("invalid args[0] \"ate-probe\": must be an absolute path inside the image"),
        ),
        (
            "env without =",
            TemplateSpec {
                env: vec![s("NOEQUALS")],
                ..spec("t-env", &probe)
            },
            s("invalid env \"NOEQUALS\": entries must be KEY=VALUE"),
        ),
        (
            "uppercase template name",
            spec("Probe", &probe),
            s("invalid template name \"Probe\": must be a DNS-1123 subdomain"),
        ),
    ] {
        cases.push(bad(
            format!("template: {what}"),
            Send::Client(Call::CreateTemplate(spec)),
            400,
            Invalid,
            fragment,
        ));
    }
    // Bodies no `TemplateSpec` can express: deliberately bad bytes.
    let probe_json = serde_json::to_string(&probe)?;
    for (what, body) in [
        (
            "port 70000",
            format!(r#"{{"name": "t-port70000", "binary": {probe_json}, "port": 70000}}"#),
        ),
        ("no binary field", s(r#"{"name": "t-nobinary"}"#)),
        ("body is not JSON", s("{not json")),
    ] {
        cases.push(bad(
            format!("template: {what}"),
            raw(Method::POST, "/templates", Some(body.as_bytes())),
            400,
            Invalid,
            "invalid request body",
        ));
    }
    // Conflicts and wrong states.
    for (what, send, kind, fragment) in [
        (
            "duplicate template",
            Send::Client(Call::CreateTemplate(spec(TEMPLATE, &probe))),
            AlreadyExists,
            "template \"probe\" already exists",
        ),
        (
            "duplicate atespace",
            Send::Client(Call::CreateAtespace(s("rel"))),
            AlreadyExists,
            "atespace \"rel\" already exists",
        ),
        (
            "duplicate actor",
            create_actor("rel", "steady", TEMPLATE),
            AlreadyExists,
            "actor \"rel/steady\" already exists",
        ),
        (
            "delete a RUNNING actor",
            Send::Client(Call::DeleteActor(s("rel"), s("steady"))),
            WrongState,
            "cannot delete actor rel/steady: it is RUNNING",
        ),
        (
            "resume a RUNNING actor",
            Send::Client(Call::Resume(s("rel"), s("steady"))),
            WrongState,
            "cannot resume actor rel/steady: it is RUNNING",
        ),
        (
            "suspend a SUSPENDED actor",
            Send::Client(Call::Suspend(s("rel"), s("idle"))),
            WrongState,
            "cannot suspend actor rel/idle: it is SUSPENDED",
        ),
        (
            "rewrite a SUSPENDED actor's identity",
            Send::Client(Call::Rewrite(
                s("rel"),
                s("idle"),
                IdentityRewrite {
                    values: vec![s("x")],
                    for_ms: 10,
                    times: None,
                },
            )),
            WrongState,
            "it is SUSPENDED; only a RUNNING actor's identity can be rewritten",
        ),
        (
            "delete a non-empty atespace",
            Send::Client(Call::DeleteAtespace(s("rel"))),
            WrongState,
            "cannot delete atespace rel: it is not empty",
        ),
        (
            "delete a template in use",
            Send::Client(Call::DeleteTemplate(s("probe"))),
            WrongState,
            "cannot delete template probe: it is in use by actor rel/",
        ),
    ] {
        cases.push(bad(what, send, 409, kind, fragment));
    }
    for (what, values, for_ms, fragment) in [
        ("rewrite with for_ms 0", vec![s("x")], 0, "for_ms 1..=30000"),
        (
            "rewrite with no values",
            vec![],
            10,
            "1 or more values of 1..=255 bytes",
        ),
    ] {
        cases.push(bad(
            what,
            Send::Client(Call::Rewrite(
                s("rel"),
                s("steady"),
                IdentityRewrite {
                    values,
                    for_ms,
                    times: None,
                },
            )),
            400,
            Invalid,
            fragment,
        ));
    }
    // Unknown things.
    for (what, call, fragment) in [
        (
            "unknown template",
            Call::Template(s("nope")),
            "template \"nope\" not found",
        ),
        (
            "delete unknown template",
            Call::DeleteTemplate(s("nope")),
            "template \"nope\" not found",
        ),
        (
            "unknown atespace",
            Call::Actors(s("nope")),
            "atespace \"nope\" not found",
        ),
        (
            "delete unknown atespace",
            Call::DeleteAtespace(s("nope")),
            "atespace \"nope\" not found",
        ),
        (
            "actor of unknown atespace",
            Call::Actor(s("nope"), s("steady")),
            "atespace \"nope\" not found",
        ),
        (
            "unknown actor",
            Call::Actor(s("rel"), s("nope")),
            "actor \"rel/nope\" not found",
        ),
        (
            "resume unknown actor",
            Call::Resume(s("rel"), s("nope")),
            "actor \"rel/nope\" not found",
        ),
        (
            "suspend unknown actor",
            Call::Suspend(s("rel"), s("nope")),
            "actor \"rel/nope\" not found",
        ),
        (
            "delete unknown actor",
            Call::DeleteActor(s("rel"), s("nope")),
            "actor \"rel/nope\" not found",
        ),
        (
            "create actor in unknown atespace",
            Call::CreateActor {
                atespace: s("nope"),
                id: s("x"),
                template: s(TEMPLATE),
            },
            "atespace \"nope\" not found",
        ),
        (
            "create actor of unknown template",
            Call::CreateActor {
                atespace: s("rel"),
                id: s("x"),
                template: s("nope"),
            },
            "template \"nope\" not found",
        ),
    ] {
        cases.push(bad(what, Send::Client(call), 404, NotFound, fragment));
    }

    let mut rows = Vec::new();
    for c in &cases {
        let before = world(&rig).await?;
        let r = c
            .send
            .send(&rig.api)
            .await
            .with_context(|| c.what.clone())?;
        assert!(
            r.status == c.status && r.kind == Some(c.kind) && r.message.contains(&c.fragment),
            "{}: {:?} must answer {} kind {} with a message containing {:?}; got {} {:?}: {}",
            c.what,
            c.send,
            c.status,
            c.kind,
            c.fragment,
            r.status,
            r.kind,
            r.text
        );
        let after = world(&rig).await?;
        assert_eq!(
            before, after,
            "{}: {:?} was rejected but changed the agent's state",
            c.what, c.send
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
            host: Some(format!("{}", rig.router_addr)),
            status: 400,
            fragment: format!("host \"{}\" is an ip address", rig.router_addr),
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
        let before = world(&rig).await?;
        let r = raw_get(rig.router_addr, c.host.as_deref(), "/whoami").await?;
        if c.status == 200 {
            let w = serde_json::from_str::<Whoami>(&r.body).ok();
            assert!(
                r.status == 200
                    && w.as_ref().is_some_and(|w| w.file == "steady")
                    && r.header("x-ate-actor") == Some("rel/steady"),
                "Host {:?} ({}) must route to rel/steady; got {} x-ate-actor {:?} {}",
                c.host,
                c.what,
                r.status,
                r.header("x-ate-actor"),
                r.body
            );
        } else {
            let e = serde_json::from_str::<RouterError>(&r.body).ok();
            let msg = e.as_ref().map(|e| e.error.as_str()).unwrap_or("");
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
            assert_eq!(
                e.as_ref().map(|e| e.kind.as_str()),
                Some(want_kind),
                "Host {:?}: {}",
                c.host,
                r.body
            );
        }
        let after = world(&rig).await?;
        assert_eq!(
            before, after,
            "Host {:?} ({}) changed the agent's state",
            c.host, c.what
        );
        rows.push(format!("{} Host {}", r.status, c.what));
    }

    // The actors are as they were.
    let st = rig.api.actor("rel", "steady").await?;
    assert!(
        st.state == ActorState::Running
            && st.sandbox.as_deref() == Some(steady_cid.as_str())
            && st.restores == 1,
        "steady changed: {st:?}"
    );
    let i = rig.api.actor("rel", "idle").await?;
    assert!(
        i.state == ActorState::Suspended && i.restores == 0,
        "idle changed: {i:?}"
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
    assert_eq!(
        (cases.len(), host_cases.len()),
        (59, 17),
        "the bad-input table lost or gained cases"
    );
    assert_no_leaks(rig).await
}
