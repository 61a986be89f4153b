//! `ate-conformance bench --node`: what a restore costs on the node
//! backend, against the runtime's own part of it, on one golden snapshot.
//!
//! One run brings up the node backend with the user's atelet and
//! ateom-gvisor (or the in-repo stand-in), deploys the probe (golden Run +
//! Checkpoint to S3), then restores `n` actors one after the other and `n`
//! more `concurrency` at a time, each then asked `/whoami` through the
//! routing front (it must read its own ID), suspended and deleted. Per
//! restore it records three numbers:
//!
//! - **node**: the `Restore` call as the harness (the control plane) sees
//!   it, end to end;
//! - **atelet**: atelet's own `Restore timing breakdown` log line
//!   (`download`, `oci_unpack`, `ateom_restore`, `total`; upstream
//!   `cmd/atelet/main.go`, Restore), when the atelet under test writes it;
//! - the ratio node / `ateom_restore`: what everything above the runtime's
//!   restore of the pause and app containers (download, unpack, gRPC,
//!   atelet, the harness) adds.
//!
//! A raw `runsc restore` of the same snapshot outside ateom is not made
//! (not attempted): the checkpoint was taken with the actor veth ateom
//! makes for each actor in its interior netns
//! (`cmd/ateom-gvisor/main.go:446-590`) and torn down after it, so a raw
//! restore would first have to rebuild that network by hand.
//! `ateom_restore` is the closest measured runtime figure. Nothing here
//! asserts timings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ate_harness::backend::node::{NodeBackend, NodeFlags, NodeOptions};
use ate_harness::backend::Backend;
use ate_harness::probe::Whoami;
use ate_harness::run_id::RunId;
use serde::Serialize;

use crate::stats::Stats;

/// What the node bench measures.
#[derive(Debug, Clone)]
pub struct NodeBenchOptions {
    /// The binaries, workers and runsc.
    pub flags: NodeFlags,
    /// Actors per pass (sequential, then concurrent).
    pub n: usize,
    /// Restores at once in the concurrent pass.
    pub concurrency: usize,
    /// Logs and state go below this.
    pub work_root: PathBuf,
}

/// One restore.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSample {
    /// `sequential` or `concurrent`.
    pub pass: &'static str,
    /// The `Restore` call at the harness, ms.
    pub node_ms: f64,
    /// The first `/whoami` after it through the front, ms.
    pub first_whoami_ms: f64,
}

/// atelet's own breakdown of one Restore, ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AteletRestore {
    /// Snapshot download.
    pub download_ms: f64,
    /// Image unpack.
    pub oci_unpack_ms: f64,
    /// ateom's restore (runsc restore of pause and app, network set-up).
    pub ateom_restore_ms: f64,
    /// atelet's total.
    pub total_ms: f64,
}

/// The node bench's report.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// The backend's fingerprint (binaries, sha256, versions, runsc).
    pub fingerprint: Vec<(String, String)>,
    /// Golden deploy (Run + Checkpoint), ms.
    pub golden_ms: f64,
    /// Every restore.
    pub samples: Vec<NodeSample>,
    /// atelet's lines, in order (empty when it writes none).
    pub atelet: Vec<AteletRestore>,
    /// Node restore, sequential pass.
    pub sequential: Stats,
    /// Node restore, concurrent pass.
    pub concurrent: Stats,
    /// Wall time of the concurrent pass, ms.
    pub concurrent_wall_ms: f64,
    /// First `/whoami` after a restore.
    pub first_whoami: Stats,
    /// atelet's `ateom_restore`, when present.
    pub ateom_restore: Option<Stats>,
    /// p50 node restore / p50 `ateom_restore` (sequential pass).
    pub node_over_ateom_restore: Option<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// atelet's `Restore timing breakdown` lines in `log` (nanoseconds in the
/// JSON), in order.
pub fn atelet_breakdowns(log: &str) -> Vec<AteletRestore> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["msg"] == "Restore timing breakdown")
        .map(|v| {
            let f = |k: &str| v[k].as_f64().unwrap_or(0.0) / 1e6;
            AteletRestore {
                download_ms: f("download"),
                oci_unpack_ms: f("oci_unpack"),
                ateom_restore_ms: f("ateom_restore"),
                total_ms: f("total"),
            }
        })
        .collect()
}

async fn one(
    node: &NodeBackend,
    atespace: &str,
    template: &str,
    id: String,
    pass: &'static str,
) -> Result<NodeSample> {
    node.create_actor(atespace, &id, template).await?;
    let t = Instant::now();
    let info = node.resume(atespace, &id).await?;
    let node_ms = ms(t.elapsed());
    ensure!(
        info.state.is_running(),
        "actor {id} is {} after resume",
        info.state
    );
    let t = Instant::now();
    let w: Whoami = node.router().get_json(atespace, &id, "/whoami").await?;
    let first_whoami_ms = ms(t.elapsed());
    ensure!(
        w.file == id,
        "actor {id} read {:?} from /run/ate/actor-id",
        w.file
    );
    node.suspend(atespace, &id).await?;
    node.delete_actor(atespace, &id).await?;
    Ok(NodeSample {
        pass,
        node_ms,
        first_whoami_ms,
    })
}

/// Runs the node bench.
pub async fn run_node(opts: &NodeBenchOptions) -> Result<NodeReport> {
    let run_id = RunId::random();
    let log_dir = opts.work_root.join(format!("node-{run_id}")).join("logs");
    let node = Arc::new(NodeBackend::new(NodeOptions {
        run_id: run_id.clone(),
        flags: opts.flags.clone(),
        probe_bin: None,
        state_root: ate_harness::paths::state_root().join("node"),
        log_dir: log_dir.clone(),
        start_timeout: Duration::from_secs(30),
    }));
    let result = async {
        node.bring_up().await?;
        let t = Instant::now();
        let golden = node.deploy_probe(Duration::from_secs(60)).await?;
        let golden_ms = ms(t.elapsed());
        let atespace = run_id.atespace();
        let mut samples = Vec::new();
        for i in 0..opts.n {
            samples.push(
                one(
                    &node,
                    &atespace,
                    &golden.template,
                    run_id.unique(&format!("seq{i}")),
                    "sequential",
                )
                .await?,
            );
        }
        let t = Instant::now();
        let mut next = 0;
        while next < opts.n {
            let batch: Vec<_> = (next..(next + opts.concurrency).min(opts.n))
                .map(|i| {
                    one(
                        &node,
                        &atespace,
                        &golden.template,
                        run_id.unique(&format!("par{i}")),
                        "concurrent",
                    )
                })
                .collect();
            for s in futures_util::future::join_all(batch).await {
                samples.push(s?);
            }
            next += opts.concurrency;
        }
        let concurrent_wall_ms = ms(t.elapsed());
        let atelet = atelet_breakdowns(
            &std::fs::read_to_string(log_dir.join("atelet.log")).unwrap_or_default(),
        );
        let of = |pass: &str| {
            let v: Vec<f64> = samples
                .iter()
                .filter(|s| s.pass == pass)
                .map(|s| s.node_ms)
                .collect();
            Stats::of(&v)
        };
        let sequential = of("sequential");
        let ateom_restore = (!atelet.is_empty()).then(|| {
            Stats::of(
                &atelet
                    .iter()
                    .map(|a| a.ateom_restore_ms)
                    .collect::<Vec<_>>(),
            )
        });
        let seq_ateom: Vec<f64> = atelet
            .iter()
            .take(opts.n)
            .map(|a| a.ateom_restore_ms)
            .collect();
        let node_over_ateom_restore =
            (!seq_ateom.is_empty()).then(|| sequential.p50_ms / Stats::of(&seq_ateom).p50_ms);
        Ok::<_, anyhow::Error>(NodeReport {
            fingerprint: node.fingerprint(),
            golden_ms,
            first_whoami: Stats::of(
                &samples
                    .iter()
                    .map(|s| s.first_whoami_ms)
                    .collect::<Vec<_>>(),
            ),
            concurrent: of("concurrent"),
            sequential,
            samples,
            atelet,
            concurrent_wall_ms,
            ateom_restore,
            node_over_ateom_restore,
        })
    }
    .await;
    let down = node.teardown().await.context("node teardown");
    let report = result?;
    down?;
    Ok(report)
}

/// The report as a Markdown table.
pub fn render_node(r: &NodeReport, n: usize, concurrency: usize) -> String {
    let mut s = String::new();
    let row = |s: &mut String, what: &str, st: &Stats| {
        s.push_str(&format!(
            "| {what} | {} | {:.1} | {:.1} | {:.1} |\n",
            st.n, st.p50_ms, st.p95_ms, st.max_ms
        ))
    };
    s.push_str(&format!(
        "node bench: {n} restores sequential, {n} at {concurrency} at once; golden Run + Checkpoint {:.0} ms\n\n",
        r.golden_ms
    ));
    s.push_str("| what | n | p50 ms | p95 ms | max ms |\n| --- | --- | --- | --- | --- |\n");
    row(&mut s, "node Restore (harness), sequential", &r.sequential);
    row(&mut s, "node Restore (harness), concurrent", &r.concurrent);
    row(&mut s, "first /whoami after restore", &r.first_whoami);
    match &r.ateom_restore {
        Some(a) => row(&mut s, "atelet: ateom_restore (runsc restore of pause + app)", a),
        None => s.push_str("| atelet: ateom_restore | - | the atelet under test logs no `Restore timing breakdown` | | |\n"),
    }
    s.push_str(&format!(
        "\nconcurrent pass: {:.0} ms wall\n",
        r.concurrent_wall_ms
    ));
    if let Some(x) = r.node_over_ateom_restore {
        s.push_str(&format!(
            "node restore / ateom_restore (p50, sequential): {x:.2}\n"
        ));
    }
    s
}
