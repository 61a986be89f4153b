//! What a run found: the report's types, the targets it is judged
//! against, the table and the JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::run::Measured;
use crate::stats::Stats;

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores available to this process.
    pub cores: usize,
    /// CPU model (`/proc/cpuinfo`).
    pub cpu: String,
    /// `MemTotal` from `/proc/meminfo`, KiB.
    pub memory_kib: u64,
    /// Kernel release.
    pub kernel: String,
    /// `runsc --version`, first line.
    pub runsc: String,
}

/// The golden image all restores of the run come from.
#[derive(Debug, Clone, Serialize)]
pub struct GoldenInfo {
    /// Template name.
    pub template: String,
    /// The golden actor's ID.
    pub golden_actor_id: String,
    /// The snapshot image directory.
    pub snapshot: PathBuf,
    /// Bytes of the snapshot image.
    pub snapshot_bytes: u64,
    /// Bytes of the image (the probe binary: the whole rootfs content).
    pub rootfs_bytes: u64,
    /// The agent's golden timings (boot, health, checkpoint), ms.
    pub timings_ms: BTreeMap<String, u64>,
}

/// One fan-out step: N actors restored by one path in one mode.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutRow {
    /// `raw` (runsc restore driven directly) or `agent` (API resume).
    pub path: String,
    /// Actors restored.
    pub n: usize,
    /// Restores in flight at once.
    pub concurrency: usize,
    /// First restore started to last one done, ms.
    pub wall_ms: f64,
    /// Per restore: raw = `runsc restore`; agent = the API resume call.
    pub restore: Stats,
    /// The same, every sample in the order the restores were started.
    pub restore_samples_ms: Vec<f64>,
    /// Agent only: its own `last_restore_ms` (runsc restore alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_restore: Option<Stats>,
    /// Agent only: its own `last_resume_ms` (dirs, bundle, restore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_resume: Option<Stats>,
    /// N / wall.
    pub actors_per_s: f64,
    /// Mean VmRSS per sandbox (runsc-sandbox + runsc-gofer), KiB.
    pub rss_kib_per_sandbox: f64,
    /// Largest VmRSS of one sandbox, KiB.
    pub rss_kib_max: f64,
    /// Mean PSS per sandbox (shared pages split), KiB, when readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pss_kib_per_sandbox: Option<f64>,
    /// Host processes per sandbox (mean).
    pub processes_per_sandbox: f64,
    /// Agent only: mean VmRSS of the host side of one relay (`runsc exec`)
    /// kept open per actor after its first routed request, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_rss_kib_per_actor: Option<f64>,
    /// Mean bytes under an actor's directory (every file and dir).
    pub disk_apparent_bytes: f64,
    /// Mean bytes under an actor's directory not shared with the template
    /// (files with one link, plus directories).
    pub disk_unique_bytes: f64,
    /// Raw only: preparing the N bundles (not part of the restore times).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepare_ms: Option<f64>,
    /// Removing the N sandboxes (raw: kill + delete; agent: suspend +
    /// delete and the background deletions settled).
    pub teardown_ms: f64,
}

/// The router's on-demand path: a suspended actor's first routed request.
#[derive(Debug, Clone, Serialize)]
pub struct OnDemand {
    /// From the actor's own snapshot (created, resumed, suspended): first
    /// response byte.
    pub own_first_byte: Stats,
    /// The same, complete response.
    pub own_complete: Stats,
    /// A fresh actor (restored from the golden on its first request):
    /// first response byte.
    pub golden_first_byte: Stats,
    /// The same, complete response.
    pub golden_complete: Stats,
    /// An actor just resumed through the API (its restore done): the
    /// first routed request right after, first response byte. This is
    /// what a client pays on top of the resume (the relay into the
    /// sandbox, unless the agent has it ready).
    pub after_resume_first_byte: Stats,
    /// The same, complete response.
    pub after_resume_complete: Stats,
}

/// Interleaved pairs: a raw restore and an agent resume one after the
/// other (alternating which goes first), so drift in the machine's speed
/// weighs on both alike.
#[derive(Debug, Clone, Serialize)]
pub struct Paired {
    /// Raw `runsc restore`.
    pub raw: Stats,
    /// Agent resume, the API call.
    pub api_resume: Stats,
    /// The agent's own `last_resume_ms`.
    pub agent_resume: Stats,
    /// The agent's own `last_restore_ms` (its runsc restore alone).
    pub agent_restore: Stats,
}

/// Agent over raw, median against median.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Interleaved pairs: API resume p50 / raw `runsc restore` p50 (the
    /// target's measure).
    pub paired_api_resume: f64,
    /// Interleaved pairs: the agent's own `last_resume_ms` p50 / raw p50.
    pub paired_agent_resume: f64,
    /// Interleaved pairs: the agent's own `last_restore_ms` p50 / raw p50.
    pub paired_agent_restore: f64,
    /// Fan-out, sequential, all N pooled: API resume p50 / raw p50 (blocks
    /// of N raw then N agent restores: drift between blocks shows here).
    pub sequential_api_resume: f64,
    /// The same, the agent's own `last_resume_ms`.
    pub sequential_agent_resume: f64,
    /// The same, the agent's own `last_restore_ms`.
    pub sequential_agent_restore: f64,
    /// Fan-out, concurrent, all N pooled: API resume p50 / raw p50.
    pub concurrent_api_resume: f64,
    /// Raw sequential restore, all N pooled.
    pub raw_sequential: Stats,
    /// API resume sequential, all N pooled.
    pub agent_sequential: Stats,
}

/// One target of the issue and how this run did.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is measured.
    pub what: String,
    /// The measured value.
    pub value: f64,
    /// The limit.
    pub limit: f64,
    /// Whether it is met.
    pub met: bool,
}

/// What one agent-path actor answered.
#[derive(Debug, Clone, Serialize)]
pub struct ActorCheck {
    /// Atespace.
    pub atespace: String,
    /// Actor ID.
    pub id: String,
    /// Its container.
    pub cid: String,
    /// `last_restore_from` of its view.
    pub restored_from: String,
    /// `/whoami` `file` through the router.
    pub whoami: String,
    /// `/snapshot` nonce.
    pub nonce: String,
    /// `/snapshot` identity at process start.
    pub identity_at_start: String,
}

/// What one raw container showed.
#[derive(Debug, Clone, Serialize)]
pub struct RawCheck {
    /// Container ID (also the ID in its identity dir).
    pub cid: String,
    /// `runsc state` status.
    pub state: String,
    /// `/whoami` `file` over `runsc exec ... relay`, when asked.
    pub whoami: Option<String>,
    /// `/snapshot` nonce, when asked.
    pub nonce: Option<String>,
    /// `/snapshot` identity at start, when asked.
    pub identity_at_start: Option<String>,
}

/// The correctness evidence of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    /// The one start nonce every restored process reported (the golden
    /// process's).
    pub golden_nonce: String,
    /// Every agent-path actor of the fan-out.
    pub agent_actors: Vec<ActorCheck>,
    /// Every raw container.
    pub raw_containers: Vec<RawCheck>,
    /// Warm `/whoami` answers that were the actor's own ID (all of them).
    pub warm_whoami_own: usize,
}

/// What was left afterwards.
#[derive(Debug, Clone, Serialize)]
pub struct Cleanup {
    /// `runsc list` entries of this run (raw prefix or agent instance)
    /// after everything was removed: must be empty.
    pub runsc_left: Vec<String>,
    /// The agent's instance (its container IDs are `ate-<instance>-<k>`).
    pub agent_instance: String,
    /// The agent's exit status on SIGTERM.
    pub agent_exit: String,
    /// Raw containers created and removed by ID.
    pub raw_removed: usize,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Run ID (part of the raw container IDs).
    pub run: String,
    /// When it ran (UTC).
    pub date: String,
    /// The machine.
    pub machine: Machine,
    /// Fan-out sizes, concurrency and request counts used.
    pub options: Value,
    /// The golden image.
    pub golden: GoldenInfo,
    /// One row per (N, mode, path).
    pub fanout: Vec<FanoutRow>,
    /// Router on-demand path.
    pub on_demand: OnDemand,
    /// Warm `/whoami` round-trips through the router.
    pub warm_whoami: Stats,
    /// Interleaved raw/agent pairs.
    pub paired: Paired,
    /// Agent/raw ratios.
    pub ratio: Ratio,
    /// The targets.
    pub targets: Vec<Target>,
    /// Correctness evidence.
    pub checks: Checks,
    /// Cleanup evidence.
    pub cleanup: Cleanup,
    /// The whole run, s.
    pub total_s: f64,
}

/// Writes the report as pretty JSON (parent dirs created).
pub fn write_json(report: &Report, out: &Path) -> Result<()> {
    if let Some(p) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(out, text + "\n").with_context(|| format!("cannot write {}", out.display()))
}

/// The targets (issue 12's, on 2 cores with runsc 20240729 or newer), for
/// this run. A target is reported, never asserted: the bench prints where
/// each stands.
pub(crate) fn targets(m: &Measured) -> Vec<Target> {
    let below = |what: &str, value: f64, limit: f64| Target {
        what: what.into(),
        value,
        limit,
        met: value < limit,
    };
    let mut t = vec![Target {
        what: "agent resume / raw runsc restore, p50 vs p50 (interleaved pairs, API resume call)"
            .into(),
        value: m.ratio.paired_api_resume,
        limit: 1.05,
        met: m.ratio.paired_api_resume <= 1.05,
    }];
    let fan64 = m
        .fanout
        .iter()
        .filter(|r| r.path == "agent" && r.n == 64)
        .map(|r| r.wall_ms / 1000.0)
        .fold(f64::INFINITY, f64::min);
    if fan64.is_finite() {
        t.push(below(
            "64 actors from one golden through the agent, wall s (best mode)",
            fan64,
            10.0,
        ));
    }
    t.push(below(
        "first routed request right after a resume (restore done), complete, p50 ms",
        m.on_demand.after_resume_complete.p50_ms,
        20.0,
    ));
    t.push(below(
        "warm /whoami through the router, p50 ms",
        m.warm.p50_ms,
        20.0,
    ));
    let unique = m
        .fanout
        .iter()
        .filter(|r| r.path == "agent")
        .map(|r| r.disk_unique_bytes)
        .fold(0.0, f64::max);
    t.push(below(
        "per-actor unique disk bytes (agent), must stay below one rootfs copy",
        unique,
        m.golden.rootfs_bytes as f64,
    ));
    t
}

pub(crate) fn row_line(r: &FanoutRow) -> String {
    format!(
        "{} N={} conc={}: wall {:.2} s, restore p50 {:.1} ms p95 {:.1} ms max {:.1} ms, {:.1} actors/s, RSS {:.1} MiB/sandbox, disk {:.0}/{:.0} KiB",
        r.path,
        r.n,
        r.concurrency,
        r.wall_ms / 1000.0,
        r.restore.p50_ms,
        r.restore.p95_ms,
        r.restore.max_ms,
        r.actors_per_s,
        r.rss_kib_per_sandbox / 1024.0,
        r.disk_apparent_bytes / 1024.0,
        r.disk_unique_bytes / 1024.0
    )
}

/// The report as one Markdown table, with the machine above it and the
/// ratio and targets below.
pub fn render_table(r: &Report) -> String {
    let m = &r.machine;
    let mut out = format!(
        "ate-conformance bench, run {} on {}: {} cores ({}), {:.1} GiB, kernel {}, {}\n\
         golden: {} KiB snapshot, {} KiB rootfs (the probe binary); agent golden boot {} ms, checkpoint {} ms\n\n",
        r.run,
        r.date,
        m.cores,
        m.cpu,
        m.memory_kib as f64 / 1024.0 / 1024.0,
        m.kernel,
        m.runsc,
        r.golden.snapshot_bytes / 1024,
        r.golden.rootfs_bytes / 1024,
        r.golden.timings_ms.get("boot").copied().unwrap_or_default(),
        r.golden.timings_ms.get("checkpoint").copied().unwrap_or_default(),
    );
    let header = [
        "what",
        "N",
        "conc",
        "wall s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "actors/s",
        "RSS (PSS) MiB/sandbox",
        "disk KiB/actor (all/unique)",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    let f1 = |x: f64| format!("{x:.1}");
    for f in &r.fanout {
        let what = if f.path == "raw" {
            "raw `runsc restore`".to_owned()
        } else {
            let (a, b) = (
                f.agent_restore.as_ref().map_or(0.0, |s| s.p50_ms),
                f.agent_resume.as_ref().map_or(0.0, |s| s.p50_ms),
            );
            format!("agent resume (API; agent's own p50 restore {a:.0} / resume {b:.0} ms)")
        };
        rows.push(vec![
            what,
            f.n.to_string(),
            f.concurrency.to_string(),
            format!("{:.2}", f.wall_ms / 1000.0),
            f1(f.restore.p50_ms),
            f1(f.restore.p95_ms),
            "".into(),
            f1(f.restore.max_ms),
            f1(f.actors_per_s),
            match f.pss_kib_per_sandbox {
                Some(p) => format!("{:.1} ({:.1})", f.rss_kib_per_sandbox / 1024.0, p / 1024.0),
                None => f1(f.rss_kib_per_sandbox / 1024.0),
            },
            format!(
                "{:.0} / {:.0}",
                f.disk_apparent_bytes / 1024.0,
                f.disk_unique_bytes / 1024.0
            ),
        ]);
    }
    let lat = |what: &str, s: &Stats| -> Vec<String> {
        vec![
            what.to_owned(),
            s.n.to_string(),
            "1".into(),
            "".into(),
            f1(s.p50_ms),
            f1(s.p95_ms),
            f1(s.p99_ms),
            f1(s.max_ms),
            "".into(),
            "".into(),
            "".into(),
        ]
    };
    let p = &r.paired;
    rows.push(lat("interleaved pairs: raw `runsc restore`", &p.raw));
    rows.push(lat(
        &format!(
            "interleaved pairs: agent resume (API; own p50 restore {:.0} / resume {:.0} ms)",
            p.agent_restore.p50_ms, p.agent_resume.p50_ms
        ),
        &p.api_resume,
    ));
    let od = &r.on_demand;
    rows.push(lat(
        "router on demand, own snapshot: first byte of `/whoami`",
        &od.own_first_byte,
    ));
    rows.push(lat(
        "router on demand, own snapshot: complete",
        &od.own_complete,
    ));
    rows.push(lat(
        "router on demand, fresh actor (golden): first byte",
        &od.golden_first_byte,
    ));
    rows.push(lat(
        "router on demand, fresh actor (golden): complete",
        &od.golden_complete,
    ));
    rows.push(lat(
        "first routed request right after an API resume: first byte",
        &od.after_resume_first_byte,
    ));
    rows.push(lat(
        "first routed request right after an API resume: complete",
        &od.after_resume_complete,
    ));
    rows.push(lat("warm `/whoami` through the router", &r.warm_whoami));

    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::from("|");
        for (k, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - c.chars().count();
            if k == 0 {
                s.push_str(&format!(" {c}{} |", " ".repeat(pad)));
            } else {
                s.push_str(&format!(" {}{c} |", " ".repeat(pad)));
            }
        }
        s + "\n"
    };
    out.push_str(&line(header.iter().map(|h| h.to_string()).collect()));
    out.push_str(&line(
        widths
            .iter()
            .enumerate()
            .map(|(k, w)| {
                if k == 0 {
                    "-".repeat(*w)
                } else {
                    format!("{}:", "-".repeat(w - 1))
                }
            })
            .collect(),
    ));
    for row in rows {
        out.push_str(&line(row));
    }
    let q = &r.ratio;
    out.push_str(&format!(
        "\nagent/raw restore, p50 vs p50: interleaved pairs {:.3} (agent's own resume {:.3}, its runsc restore alone {:.3}); \
         fan-out, all N pooled: sequential {:.3} (API resume {:.1} ms vs runsc restore {:.1} ms; own resume {:.3}, restore {:.3}), concurrent {:.3}\n",
        q.paired_api_resume,
        q.paired_agent_resume,
        q.paired_agent_restore,
        q.sequential_api_resume,
        q.agent_sequential.p50_ms,
        q.raw_sequential.p50_ms,
        q.sequential_agent_resume,
        q.sequential_agent_restore,
        q.concurrent_api_resume
    ));
    for t in &r.targets {
        out.push_str(&format!(
            "target {}: {:.3} (limit {:.2}) {}\n",
            t.what,
            t.value,
            t.limit,
            if t.met { "MET" } else { "MISSED" }
        ));
    }
    out
}
