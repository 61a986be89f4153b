//! The agent killed with SIGKILL while an actor runs: its sandbox is left
//! behind (runsc still lists it); the next agent on the same state dir
//! removes it by ID and says so, and the actor resumes with its own ID and
//! the in-memory state of its own last snapshot. Real runsc, real agent;
//! needs root.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use ate_harness::cmd::{Cmd, Spawned};
use ate_harness::fixture::{static_bins, BuildOptions};
use ate_harness::probe::{Counter, Whoami};
use ate_harness::router::RouterClient;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

struct Agent {
    child: Spawned,
    line: Value,
}

impl Agent {
    async fn start(bin: &std::path::Path, state: &std::path::Path) -> anyhow::Result<Agent> {
        let mut child = Cmd::new(bin)
            .arg("serve")
            .arg("--state-dir")
            .arg(state)
            .stderr(ate_harness::cmd::Stdio::null())
            .spawn()?;
        let out = child.stdout.take().unwrap();
        let line = tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(out).lines().next_line(),
        )
        .await
        .context("agent printed no line within 30s")??
        .context("agent exited before its line")?;
        Ok(Agent {
            child,
            line: serde_json::from_str(&line)?,
        })
    }
    fn addr(&self, k: &str) -> SocketAddr {
        self.line[k].as_str().unwrap().parse().unwrap()
    }
    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let c = reqwest::Client::builder().no_proxy().build()?;
        let mut r = c.request(
            method.clone(),
            format!("http://{}{path}", self.addr("control")),
        );
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {text}");
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }
}

async fn runsc_ids() -> Vec<String> {
    let out = Cmd::new("runsc")
        .args(["list", "-quiet"])
        .timeout(Duration::from_secs(20))
        .run()
        .await
        .unwrap();
    out.stdout_str()
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_agent_orphans_are_removed_and_actor_resumes_its_own_state() -> anyhow::Result<()>
{
    let bins = static_bins(&BuildOptions::default()).await?;
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&target)?;
    let state = tempfile::Builder::new()
        .prefix("ate-crash-test-")
        .tempdir_in(&target)?;

    let a1 = Agent::start(&bins.agent, state.path()).await?;
    a1.api(
        reqwest::Method::POST,
        "/templates",
        Some(json!({ "name": "probe", "binary": bins.probe })),
    )
    .await?;
    let mut phase = String::new();
    for _ in 0..400 {
        let t = a1
            .api(reqwest::Method::GET, "/templates/probe", None)
            .await?;
        phase = t["status"]["phase"].as_str().unwrap_or_default().to_owned();
        if phase == "Ready" || phase == "Failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(phase, "Ready", "the probe template did not become Ready");
    a1.api(
        reqwest::Method::POST,
        "/atespaces",
        Some(json!({ "name": "crash" })),
    )
    .await?;
    a1.api(
        reqwest::Method::POST,
        "/atespaces/crash/actors",
        Some(json!({ "id": "survivor", "template": "probe" })),
    )
    .await?;
    a1.api(
        reqwest::Method::POST,
        "/atespaces/crash/actors/survivor/resume",
        None,
    )
    .await?;
    let r1 = RouterClient::new(a1.addr("router"));
    let c: Counter = r1.post_json("crash", "survivor", "/counter").await?;
    assert_eq!(c.counter, 1);
    // Its own snapshot now holds counter = 1.
    a1.api(
        reqwest::Method::POST,
        "/atespaces/crash/actors/survivor/suspend",
        None,
    )
    .await?;
    let v = a1
        .api(
            reqwest::Method::POST,
            "/atespaces/crash/actors/survivor/resume",
            None,
        )
        .await?;
    let cid = v["sandbox"].as_str().unwrap().to_owned();
    let c: Counter = r1.post_json("crash", "survivor", "/counter").await?;
    assert_eq!(c.counter, 2, "in-memory only, never checkpointed");

    // SIGKILL: no chance to clean up.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(a1.child.pid() as i32).unwrap(),
        rustix::process::Signal::KILL,
    )?;
    let mut child = a1.child;
    child.wait().await?;
    assert!(
        runsc_ids().await.contains(&cid),
        "the killed agent's sandbox {cid} should still be listed"
    );

    let a2 = Agent::start(&bins.agent, state.path()).await?;
    let orphans: Vec<String> = a2.line["orphans_removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    eprintln!("orphans removed by the new agent: {orphans:?}");
    assert!(
        orphans.contains(&cid),
        "the new agent did not report removing {cid}: {orphans:?}"
    );
    assert!(
        !runsc_ids().await.contains(&cid),
        "orphan {cid} is still listed by runsc"
    );

    let v = a2
        .api(
            reqwest::Method::GET,
            "/atespaces/crash/actors/survivor",
            None,
        )
        .await?;
    assert_eq!(v["state"], "SUSPENDED", "{v}");
    a2.api(
        reqwest::Method::POST,
        "/atespaces/crash/actors/survivor/resume",
        None,
    )
    .await?;
    let r2 = RouterClient::new(a2.addr("router"));
    let w: Whoami = r2.get_json("crash", "survivor", "/whoami").await?;
    assert_eq!(w.file, "survivor", "own ID after the crash");
    let c: Counter = r2.get_json("crash", "survivor", "/counter").await?;
    assert_eq!(
        c.counter, 1,
        "state must come from the actor's own last snapshot"
    );

    let instance = a2.line["instance"].as_str().unwrap().to_owned();
    a2.child.terminate(Duration::from_secs(30)).await?;
    let left: Vec<String> = runsc_ids()
        .await
        .into_iter()
        .filter(|id| id.starts_with(&format!("ate-{instance}-")))
        .collect();
    assert!(left.is_empty(), "sandboxes left after SIGTERM: {left:?}");
    Ok(())
}
