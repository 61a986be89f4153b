//! Reports: one JSON file per suite run and a Markdown summary of every
//! suite in the report directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::backend::Golden;

/// A trial's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every assertion held.
    Pass,
    /// An assertion failed, or the trial could not run.
    Fail,
}

/// One timed phase of a trial.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseTime {
    /// What was done.
    pub name: String,
    /// Milliseconds.
    pub ms: f64,
}

/// What a trial did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Trial name.
    pub name: String,
    /// Contract statements it covers.
    pub covers: Vec<String>,
    /// Verdict.
    pub verdict: Verdict,
    /// Wall time.
    pub duration_ms: f64,
    /// The failure with its cause chain.
    pub message: Option<String>,
    /// Timed phases in order.
    pub phases: Vec<PhaseTime>,
}

/// One suite run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteReport {
    /// Suite name.
    pub suite: String,
    /// Run ID.
    pub run_id: String,
    /// Backend name.
    pub backend: String,
    /// Start time.
    pub started_unix_ms: u64,
    /// Wall time of the whole suite (setup, trials, teardown).
    pub wall_ms: u64,
    /// Versions and facts of the system under test.
    pub fingerprint: Vec<(String, String)>,
    /// The golden snapshot the trials restored from.
    pub golden: Option<Golden>,
    /// Teardown failure, if any (fails the run).
    pub teardown_error: Option<String>,
    /// Trials not run because of name filters.
    pub filtered_out: u64,
    /// Every trial that ran.
    pub trials: Vec<TrialRecord>,
}

/// Paths written for one suite run.
#[derive(Debug)]
pub struct Written {
    /// `<suite>.json`.
    pub json: PathBuf,
    /// `summary.md` (all suites in the directory).
    pub summary: PathBuf,
}

/// Writes `<dir>/<suite>.json` and regenerates `<dir>/summary.md` from
/// every suite JSON in `dir`.
pub fn write_suite(dir: &Path, rep: &SuiteReport) -> anyhow::Result<Written> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = dir.join(format!("{}.json", rep.suite));
    let tmp = dir.join(format!(".{}.json.tmp", rep.suite));
    std::fs::write(&tmp, serde_json::to_vec_pretty(rep)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &json).with_context(|| format!("cannot write {}", json.display()))?;
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            if let Ok(r) = serde_json::from_slice::<SuiteReport>(&std::fs::read(&p)?) {
                all.push(r);
            }
        }
    }
    all.sort_by(|a, b| a.suite.cmp(&b.suite));
    let summary = dir.join("summary.md");
    std::fs::write(&summary, markdown(&all))
        .with_context(|| format!("cannot write {}", summary.display()))?;
    Ok(Written { json, summary })
}

fn verdict_of(r: &SuiteReport) -> &'static str {
    if r.teardown_error.is_none()
        && !r.trials.is_empty()
        && r.trials.iter().all(|t| t.verdict == Verdict::Pass)
    {
        "PASS"
    } else {
        "FAIL"
    }
}

/// The Markdown summary of several suite runs.
pub fn markdown(all: &[SuiteReport]) -> String {
    let mut s = String::from("# ate-conformance summary\n\n");
    let overall = if !all.is_empty() && all.iter().all(|r| verdict_of(r) == "PASS") {
        "PASS"
    } else {
        "FAIL"
    };
    let _ = writeln!(s, "**Verdict: {overall}**\n");
    for r in all {
        let passed = r
            .trials
            .iter()
            .filter(|t| t.verdict == Verdict::Pass)
            .count();
        let _ = writeln!(
            s,
            "## Suite `{}`: {} ({passed}/{} passed, backend {}, run {}, wall {:.2} s)\n",
            r.suite,
            verdict_of(r),
            r.trials.len(),
            r.backend,
            r.run_id,
            r.wall_ms as f64 / 1000.0
        );
        if let Some(g) = &r.golden {
            let _ = writeln!(
                s,
                "Golden: template `{}`, actor `{}`, ready after {:.2} s\n",
                g.template,
                g.golden_actor_id,
                g.ready_after.as_secs_f64()
            );
        }
        let _ = writeln!(
            s,
            "| trial | covers | verdict | time (ms) |\n| --- | --- | --- | --- |"
        );
        for t in &r.trials {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {:.0} |",
                t.name,
                t.covers.join(", "),
                if t.verdict == Verdict::Pass {
                    "pass"
                } else {
                    "**FAIL**"
                },
                t.duration_ms
            );
        }
        for t in r.trials.iter().filter(|t| t.verdict == Verdict::Fail) {
            let _ = writeln!(
                s,
                "\n### `{}` failed\n\n```text\n{}\n```",
                t.name,
                t.message.as_deref().unwrap_or("")
            );
        }
        if let Some(e) = &r.teardown_error {
            let _ = writeln!(s, "\n### Teardown failed\n\n```text\n{e}\n```");
        }
        if !r.fingerprint.is_empty() {
            let _ = writeln!(s, "\n| environment | |\n| --- | --- |");
            for (k, v) in &r.fingerprint {
                let _ = writeln!(s, "| {k} | {v} |");
            }
        }
        s.push('\n');
    }
    s
}

/// What the suite prints at the end: wall time, each trial's phases, and
/// where the report went.
pub fn console_summary(r: &SuiteReport, w: &Written) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nsuite {} on {}: {} in {:.2} s wall (run {})",
        r.suite,
        r.backend,
        verdict_of(r),
        r.wall_ms as f64 / 1000.0,
        r.run_id
    );
    if let Some(g) = &r.golden {
        let _ = writeln!(
            s,
            "  golden ready: {:>8.1} ms  (template {}, golden actor {})",
            g.ready_after.as_secs_f64() * 1000.0,
            g.template,
            g.golden_actor_id
        );
    }
    for t in &r.trials {
        let _ = writeln!(
            s,
            "  {} {} ({:.1} ms)",
            if t.verdict == Verdict::Pass {
                "pass"
            } else {
                "FAIL"
            },
            t.name,
            t.duration_ms
        );
        for p in &t.phases {
            let _ = writeln!(s, "      {:>8.1} ms  {}", p.ms, p.name);
        }
    }
    let _ = write!(
        s,
        "report: {} and {}",
        w.json.display(),
        w.summary.display()
    );
    s
}
