//! Reports: what a run found, for machines (`report.json`, `junit.xml`) and
//! for the release manager (`report.md`).
//!
//! Several suite binaries of one run write into one report directory,
//! possibly at the same time. Each writes its own `suites/<suite>.json`
//! (temp file + rename), then, under an exclusive `flock` on
//! `<dir>/.report.lock`, regenerates the merged outputs from every
//! `suites/*.json` in the directory:
//!
//! - `report.json`: the [`RunReport`];
//! - `junit.xml`: one `<testsuite>` per suite, one `<testcase>` per trial;
//! - `report.md`: the release gate, one row per contract statement.
//!
//! **Invariant:** the merged files are a pure function of `suites/*.json`;
//! [`merge_dir`] rebuilds them at any time. **Invariant:** a run passes
//! ([`RunVerdict::Pass`], [`gate`] is `Ok`) only if every statement ID-1..ID-15
//! was checked and held, and nothing failed, was skipped, filtered out or
//! interrupted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::backend::Golden;

/// The contract statements of CONTRACT.md section I, in order, with short
/// titles. Every [`RunReport`] has one [`ContractRow`] per entry.
pub const CONTRACT: [(&str, &str); 15] = [
    ("ID-1", "Location: the ID is in /run/ate/actor-id"),
    ("ID-2", "Format: raw ID bytes, no newline, nothing else"),
    ("ID-3", "A restored actor reads its own ID"),
    ("ID-4", "No restored actor reads the golden actor's ID"),
    ("ID-5", "Two actors from one snapshot read different IDs"),
    (
        "ID-6",
        "/run/ate is read-only; writes change nothing on the host",
    ),
    (
        "ID-7",
        "A directory bind mount, not a file or an env variable",
    ),
    ("ID-8", "Each actor has its own host identity directory"),
    ("ID-9", "actor-id is replaced atomically; no torn reads"),
    (
        "ID-10",
        "Per-actor directories reset on run, restore and resume",
    ),
    ("ID-11", "The own ID survives suspend/resume cycles"),
    ("ID-12", "The pause container gets no identity mount"),
    ("ID-13", "No symlink escape when creating run/ate"),
    (
        "ID-14",
        "Invalid actor, atespace and template names are rejected",
    ),
    ("ID-15", "DNS name routing by Host; resume on demand"),
];

/// A trial's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every assertion held.
    Pass,
    /// An assertion failed, or the trial could not run.
    Fail,
    /// The trial did not check anything (a missing precondition); the
    /// message says why.
    Skip,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
}

/// One timed phase of a trial.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseTime {
    /// What was done.
    pub name: String,
    /// Milliseconds.
    pub ms: f64,
}

/// What one trial did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrialRecord {
    /// The suite the trial belongs to.
    #[serde(default)]
    pub suite: String,
    /// Trial name.
    pub name: String,
    /// Contract statements it covers (`ID-3`, ...).
    #[serde(default)]
    pub covers: Vec<String>,
    /// Verdict.
    pub verdict: Verdict,
    /// Wall time.
    pub duration_ms: f64,
    /// Fail: the failure with its full cause chain (`caused by:` lines);
    /// Skip: the reason.
    #[serde(default)]
    pub message: Option<String>,
    /// The trial's own log lines (phases, notes).
    #[serde(default)]
    pub log: String,
    /// Timed phases in order.
    #[serde(default)]
    pub phases: Vec<PhaseTime>,
    /// Files kept for this trial, relative to the report directory.
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Fail: the contract statements the trial found violated, in the
    /// order it found them (the self-test's kill matrix reads this).
    #[serde(default)]
    pub violated: Vec<String>,
    /// Skip: the declared waiver of every statement the trial covers
    /// (`--waive ID=REASON`, `--waivers FILE`), as `ID-9: reason`; a waived
    /// skip does not fail a run under `--fail-on-skip`/`CI=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waived: Option<String>,
    /// Fail: the backend could not be set up, so the trial never ran.
    #[serde(default)]
    pub setup_failed: bool,
}

/// One suite binary's run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteReport {
    /// Suite name (also the file name `suites/<suite>.json`).
    pub suite: String,
    /// Run ID.
    pub run_id: String,
    /// Backend name.
    pub backend: String,
    /// Start time.
    pub started_unix_ms: u64,
    /// End time.
    #[serde(default)]
    pub ended_unix_ms: u64,
    /// Wall time of the whole suite (setup, trials, teardown).
    pub wall_ms: u64,
    /// Versions and facts of the system under test.
    #[serde(default)]
    pub fingerprint: BTreeMap<String, String>,
    /// The golden snapshot the trials restored from.
    #[serde(default)]
    pub golden: Option<Golden>,
    /// Teardown failure, if any (fails the run).
    #[serde(default)]
    pub teardown_error: Option<String>,
    /// Set when the run was interrupted (fails the run), e.g.
    /// `SIGINT: cleaned up ...`.
    #[serde(default)]
    pub interrupted: Option<String>,
    /// Resources left on purpose by `--keep`, one line each.
    #[serde(default)]
    pub kept: Vec<String>,
    /// Trials not run because of name filters.
    #[serde(default)]
    pub filtered_out: u64,
    /// A skipped trial fails the run.
    #[serde(default)]
    pub fail_on_skip: bool,
    /// Every trial that ran.
    #[serde(default)]
    pub trials: Vec<TrialRecord>,
}

impl TrialRecord {
    /// A record of trial `name` of `suite` covering `covers`, with
    /// `verdict` and nothing else yet.
    pub fn new(suite: &str, name: &str, covers: &[&str], verdict: Verdict) -> TrialRecord {
        TrialRecord {
            suite: suite.to_owned(),
            name: name.to_owned(),
            covers: covers.iter().map(|c| c.to_string()).collect(),
            verdict,
            duration_ms: 0.0,
            message: None,
            log: String::new(),
            phases: vec![],
            artifacts: vec![],
            violated: vec![],
            setup_failed: false,
            waived: None,
        }
    }
}

impl SuiteReport {
    /// How many trials got `verdict`.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.trials.iter().filter(|t| t.verdict == verdict).count()
    }

    /// Skipped trials without a waiver.
    pub fn unwaived_skips(&self) -> usize {
        self.trials
            .iter()
            .filter(|t| t.verdict == Verdict::Skip && t.waived.is_none())
            .count()
    }

    /// The suite failed: a trial failed, teardown failed, or it was
    /// interrupted; unwaived skips count only under `fail_on_skip`.
    pub fn failed(&self) -> bool {
        self.count(Verdict::Fail) > 0
            || self.teardown_error.is_some()
            || self.interrupted.is_some()
            || (self.fail_on_skip && self.unwaived_skips() > 0)
    }
}

/// What the run says about one contract statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContractVerdict {
    /// Covered, and every covering trial passed.
    Pass,
    /// A covering trial failed.
    Fail,
    /// No covering trial failed, but at least one was skipped without a
    /// waiver: the statement was not fully checked.
    Skip,
    /// No covering trial failed, and every skipped one was skipped under a
    /// declared waiver (`--waive`, `--waivers`; the reasons are in
    /// [`ContractRow::waivers`]): not checked, on purpose.
    Waived,
    /// No trial of this run covers the statement.
    NotCovered,
}

/// One contract statement and the trials of this run that cover it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContractRow {
    /// `ID-1` .. `ID-15`.
    pub id: String,
    /// Short title.
    pub title: String,
    /// Covering trials: (suite, trial, verdict).
    pub trials: Vec<(String, String, Verdict)>,
    /// The waivers of the covering trials skipped under one:
    /// `suite/trial` → the waiver (`ID-9: reason`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waivers: BTreeMap<String, String>,
    /// The statement's verdict.
    pub verdict: ContractVerdict,
}

/// The verdict of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunVerdict {
    /// Every statement checked and held; nothing failed, skipped, filtered
    /// out or interrupted.
    Pass,
    /// A trial failed, a teardown failed, the run was interrupted, or a
    /// trial was skipped under `fail_on_skip`.
    Fail,
    /// Nothing failed, but not everything was checked (skips, statements
    /// not covered, filtered trials, reports of several runs).
    Incomplete,
}

impl RunVerdict {
    fn word(self) -> &'static str {
        match self {
            RunVerdict::Pass => "PASS",
            RunVerdict::Fail => "FAIL",
            RunVerdict::Incomplete => "INCOMPLETE",
        }
    }
}

/// Every suite of one report directory, merged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The run ID most suites carry (see [`RunReport::run_ids`]).
    pub run_id: String,
    /// Distinct backends, sorted.
    pub backends: Vec<String>,
    /// Earliest suite start.
    pub started_unix_ms: u64,
    /// Latest suite end.
    pub ended_unix_ms: u64,
    /// The run's verdict; `Pass` exactly when [`gate`] is `Ok`.
    pub verdict: RunVerdict,
    /// Suite reports, by suite name.
    pub suites: Vec<SuiteReport>,
    /// One row per statement ID-1..ID-15, in order.
    pub contract: Vec<ContractRow>,
    /// The self-test's kill matrix, when `selftest.json` is in the dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selftest: Option<SelfTest>,
}

/// What one trial did against one fault mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cell {
    /// Failed, naming the fault's symptom: the fault is caught here.
    Caught,
    /// Failed for another reason.
    FailedOther,
    /// Passed: this trial does not see the fault.
    Passed,
    /// Skipped.
    Skipped,
    /// Did not run (filtered, or the run broke first).
    NotRun,
}

/// One fault mode's row of the kill matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRow {
    /// Fault mode name (`ate-refagent serve --fault NAME`).
    pub fault: String,
    /// What it gets wrong.
    pub description: String,
    /// Contract statements whose failure is this fault's symptom.
    pub symptoms: Vec<String>,
    /// One cell per column of [`SelfTest::trials`].
    pub cells: Vec<Cell>,
    /// The trials that caught it, with their first failure line.
    pub caught_by: Vec<(String, String)>,
    /// The run itself broke (not a trial verdict).
    pub run_error: Option<String>,
}

impl FaultRow {
    /// Caught by at least one named assertion.
    pub fn caught(&self) -> bool {
        !self.caught_by.is_empty()
    }
}

/// The self-test: every suite against a healthy agent (all must pass) and
/// against each fault mode (some named trial must fail with the fault's
/// symptom).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelfTest {
    /// Columns: `suite/trial`.
    pub trials: Vec<String>,
    /// Problems of the healthy run (empty: all green).
    pub healthy_problems: Vec<String>,
    /// One row per fault mode.
    pub faults: Vec<FaultRow>,
}

impl SelfTest {
    /// Everything the self-test requires, as problems (empty: it passes).
    pub fn problems(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .healthy_problems
            .iter()
            .map(|p| format!("self-test: healthy agent: {p}"))
            .collect();
        for f in &self.faults {
            if !f.caught() {
                v.push(format!(
                    "self-test: fault {} is caught by no trial (symptoms {}){}",
                    f.fault,
                    f.symptoms.join("/"),
                    f.run_error
                        .as_ref()
                        .map(|e| format!("; run error: {}", first_line(e)))
                        .unwrap_or_default()
                ));
            }
        }
        v
    }
}

impl RunReport {
    /// Merges suite reports: contract rows, verdict, run ID, times.
    pub fn from_suites(mut suites: Vec<SuiteReport>) -> RunReport {
        suites.sort_by(|a, b| {
            (&a.suite, a.started_unix_ms, &a.run_id).cmp(&(&b.suite, b.started_unix_ms, &b.run_id))
        });
        let contract = CONTRACT
            .iter()
            .map(|(id, title)| {
                let covering: Vec<_> = suites
                    .iter()
                    .flat_map(|s| s.trials.iter().map(move |t| (s, t)))
                    .filter(|(_, t)| t.covers.iter().any(|c| c.trim() == *id))
                    .collect();
                let trials: Vec<_> = covering
                    .iter()
                    .map(|(s, t)| (s.suite.clone(), t.name.clone(), t.verdict))
                    .collect();
                let waivers: BTreeMap<String, String> = covering
                    .iter()
                    .filter(|(_, t)| t.verdict == Verdict::Skip)
                    .filter_map(|(s, t)| {
                        let w = t.waived.clone()?;
                        Some((format!("{}/{}", s.suite, t.name), w))
                    })
                    .collect();
                let has = |v| trials.iter().any(|t| t.2 == v);
                let skips = trials.iter().filter(|t| t.2 == Verdict::Skip).count();
                let verdict = if trials.is_empty() {
                    ContractVerdict::NotCovered
                } else if has(Verdict::Fail) {
                    ContractVerdict::Fail
                } else if skips > 0 && skips == waivers.len() {
                    ContractVerdict::Waived
                } else if skips > 0 {
                    ContractVerdict::Skip
                } else {
                    ContractVerdict::Pass
                };
                ContractRow {
                    id: (*id).to_owned(),
                    title: (*title).to_owned(),
                    trials,
                    waivers,
                    verdict,
                }
            })
            .collect();
        let mut run = RunReport {
            run_id: majority_run_id(&suites),
            backends: suites
                .iter()
                .map(|s| s.backend.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            started_unix_ms: suites.iter().map(|s| s.started_unix_ms).min().unwrap_or(0),
            ended_unix_ms: suites.iter().map(suite_end).max().unwrap_or(0),
            verdict: RunVerdict::Incomplete,
            suites,
            contract,
            selftest: None,
        };
        run.judge();
        run
    }

    /// Attaches the self-test's kill matrix and judges the run again.
    pub fn with_selftest(mut self, selftest: SelfTest) -> RunReport {
        self.selftest = Some(selftest);
        self.judge();
        self
    }

    fn judge(&mut self) {
        let (hard, soft) = problems(self);
        self.verdict = if !hard.is_empty() {
            RunVerdict::Fail
        } else if !soft.is_empty() {
            RunVerdict::Incomplete
        } else {
            RunVerdict::Pass
        };
    }

    /// Every distinct run ID among the suites, sorted. More than one means
    /// the directory mixes runs (a stale suite file, or a reused dir).
    pub fn run_ids(&self) -> Vec<String> {
        self.suites
            .iter()
            .map(|s| s.run_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Wall time from the first suite's start to the last one's end.
    pub fn wall_ms(&self) -> u64 {
        self.ended_unix_ms.saturating_sub(self.started_unix_ms)
    }

    fn count(&self, v: Verdict) -> usize {
        self.suites
            .iter()
            .flat_map(|s| &s.trials)
            .filter(|t| t.verdict == v)
            .count()
    }
}

fn suite_end(s: &SuiteReport) -> u64 {
    if s.ended_unix_ms >= s.started_unix_ms {
        s.ended_unix_ms
    } else {
        s.started_unix_ms + s.wall_ms
    }
}

/// The most frequent run ID; a tie goes to the run that started last.
fn majority_run_id(suites: &[SuiteReport]) -> String {
    let mut count: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for s in suites {
        let e = count.entry(&s.run_id).or_default();
        e.0 += 1;
        e.1 = e.1.max(s.started_unix_ms);
    }
    count
        .into_iter()
        .max_by_key(|(_, k)| *k)
        .map(|(id, _)| id.to_owned())
        .unwrap_or_default()
}

/// The run's problems: (those that fail it, those that leave it incomplete).
fn problems(run: &RunReport) -> (Vec<String>, Vec<String>) {
    let (mut hard, mut soft) = (Vec::new(), Vec::new());
    if run.suites.is_empty() {
        soft.push("no suite reports".to_owned());
    }
    for row in &run.contract {
        let list = |v: Verdict| {
            row.trials
                .iter()
                .filter(|t| t.2 == v)
                .map(|t| format!("{}/{}", t.0, t.1))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match row.verdict {
            ContractVerdict::Pass => {}
            ContractVerdict::Fail => hard.push(format!(
                "{} does not hold: {} failed",
                row.id,
                list(Verdict::Fail)
            )),
            ContractVerdict::Skip => soft.push(format!(
                "{} not fully checked: {} skipped",
                row.id,
                list(Verdict::Skip)
            )),
            ContractVerdict::Waived => soft.push(format!(
                "{} not checked, waived: {}",
                row.id,
                row.waivers
                    .iter()
                    .map(|(t, w)| format!("{t} ({w})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            ContractVerdict::NotCovered => {
                soft.push(format!("{} not covered by any trial in this run", row.id))
            }
        }
    }
    if let Some(st) = &run.selftest {
        hard.extend(st.problems());
    }
    let fail_on_skip = run.suites.iter().any(|s| s.fail_on_skip);
    for s in &run.suites {
        for t in &s.trials {
            match t.verdict {
                Verdict::Pass => {}
                Verdict::Fail => hard.push(format!(
                    "trial {}/{} failed: {}",
                    s.suite,
                    t.name,
                    first_line(t.message.as_deref().unwrap_or("(no message recorded)"))
                )),
                Verdict::Skip => {
                    let p = format!(
                        "trial {}/{} skipped: {}",
                        s.suite,
                        t.name,
                        first_line(t.message.as_deref().unwrap_or("(no reason recorded)"))
                    );
                    // A declared waiver keeps a skip from failing the
                    // run, as it does for the suite's own verdict.
                    match &t.waived {
                        Some(w) => soft.push(format!("{p} (waived: {w})")),
                        None if fail_on_skip => hard.push(p),
                        None => soft.push(p),
                    }
                }
            }
        }
        if let Some(e) = &s.teardown_error {
            hard.push(format!(
                "suite {}: teardown failed: {}",
                s.suite,
                first_line(e)
            ));
        }
        if let Some(i) = &s.interrupted {
            hard.push(format!("suite {}: interrupted: {}", s.suite, first_line(i)));
        }
        if s.filtered_out > 0 {
            soft.push(format!(
                "suite {}: {} trial(s) filtered out by name filters",
                s.suite, s.filtered_out
            ));
        }
    }
    let ids = run.run_ids();
    if ids.len() > 1 {
        soft.push(format!(
            "the report directory mixes {} runs: {}",
            ids.len(),
            ids.join(", ")
        ));
    }
    (hard, soft)
}

/// The release gate: `Ok` only if every statement ID-1..ID-15 passed, no
/// trial failed, was skipped or filtered out, no teardown failed, the run
/// was not interrupted and the directory holds one run. `Err` lists each
/// problem on one line, those that fail the run first.
pub fn gate(run: &RunReport) -> Result<(), Vec<String>> {
    let (mut hard, soft) = problems(run);
    // A report read back from JSON may have fewer rows than the contract.
    for (id, _) in CONTRACT {
        if !run.contract.iter().any(|r| r.id == id) {
            hard.push(format!("{id} missing from the report"));
        }
    }
    hard.extend(soft);
    if hard.is_empty() {
        Ok(())
    } else {
        Err(hard)
    }
}

/// Paths written by [`write_suite`], and the merged run.
#[derive(Debug, Clone)]
pub struct Written {
    /// `suites/<suite>.json`.
    pub suite_json: PathBuf,
    /// `report.json`.
    pub report_json: PathBuf,
    /// `junit.xml`.
    pub junit: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
    /// Every suite in the directory, merged.
    pub run: RunReport,
}

/// Paths written by [`merge_dir`], and the merged run.
#[derive(Debug, Clone)]
pub struct Merged {
    /// `report.json`.
    pub report_json: PathBuf,
    /// `junit.xml`.
    pub junit: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
    /// Every suite in the directory, merged.
    pub run: RunReport,
}

/// The self-test's kill matrix in a report dir (merged into the reports).
pub const SELFTEST_FILE: &str = "selftest.json";

/// Writes `<dir>/selftest.json` and regenerates the merged reports.
pub fn write_selftest(dir: &Path, st: &SelfTest) -> anyhow::Result<Merged> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(&dir.join(SELFTEST_FILE), &serde_json::to_vec_pretty(st)?)?;
    merge_locked(dir)
}

/// Writes `<dir>/suites/<suite>.json`, then regenerates `report.json`,
/// `junit.xml` and `report.md` from every suite file in `dir`.
pub fn write_suite(dir: &Path, rep: &SuiteReport) -> anyhow::Result<Written> {
    check_suite_name(&rep.suite)?;
    let suites = dir.join("suites");
    fs::create_dir_all(&suites).with_context(|| format!("cannot create {}", suites.display()))?;
    let suite_json = suites.join(format!("{}.json", rep.suite));
    write_atomic(&suite_json, &serde_json::to_vec_pretty(rep)?)?;
    let m = merge_locked(dir)?;
    Ok(Written {
        suite_json,
        report_json: m.report_json,
        junit: m.junit,
        markdown: m.markdown,
        run: m.run,
    })
}

/// Regenerates `report.json`, `junit.xml` and `report.md` from
/// `<dir>/suites/*.json` (for `ate-conformance report`).
pub fn merge_dir(dir: &Path) -> anyhow::Result<Merged> {
    if !dir.join("suites").is_dir() {
        bail!(
            "no suite reports in {}: {} does not exist",
            dir.display(),
            dir.join("suites").display()
        );
    }
    merge_locked(dir)
}

/// Reads every `<dir>/suites/*.json`, sorted by file name.
pub fn read_suites(dir: &Path) -> anyhow::Result<Vec<SuiteReport>> {
    let suites = dir.join("suites");
    let mut paths = Vec::new();
    for e in fs::read_dir(&suites).with_context(|| format!("cannot read {}", suites.display()))? {
        let p = e
            .with_context(|| format!("cannot read {}", suites.display()))?
            .path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".json") && !name.starts_with('.') && p.is_file() {
            paths.push(p);
        }
    }
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let bytes = fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a suite report", p.display()))
        })
        .collect()
}

fn merge_locked(dir: &Path) -> anyhow::Result<Merged> {
    let lock_path = dir.join(".report.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let suites = read_suites(dir)?;
    if suites.is_empty() {
        bail!("no suite reports in {}", dir.join("suites").display());
    }
    let mut run = RunReport::from_suites(suites);
    let st_path = dir.join(SELFTEST_FILE);
    if st_path.exists() {
        let st: SelfTest = serde_json::from_slice(
            &fs::read(&st_path).with_context(|| format!("cannot read {}", st_path.display()))?,
        )
        .with_context(|| format!("{} is not a self-test report", st_path.display()))?;
        run = run.with_selftest(st);
    }
    let report_json = dir.join("report.json");
    let junit = dir.join("junit.xml");
    let markdown = dir.join("report.md");
    write_atomic(&report_json, &serde_json::to_vec_pretty(&run)?)?;
    write_atomic(&junit, junit_xml(&run)?.as_bytes())?;
    write_atomic(&markdown, markdown_report(&run).as_bytes())?;
    drop(lock);
    Ok(Merged {
        report_json,
        junit,
        markdown,
        run,
    })
}

fn check_suite_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("invalid suite name {name:?}: want [A-Za-z0-9._-]+, not starting with '.'");
    }
    Ok(())
}

/// Writes `path` through a temp file in the same directory and a rename, so
/// a reader sees the old file or the new one.
fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("report");
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_data()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

// ---------------------------------------------------------------- text --

fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// Text safe for XML 1.0 and Markdown: ANSI escape sequences removed, other
/// characters XML 1.0 does not allow (NUL, ESC, ...) replaced by U+FFFD.
pub fn clean_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            match it.peek() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    it.next();
                    while let Some(&n) = it.peek() {
                        it.next();
                        if ('\x40'..='\x7e').contains(&n) {
                            break;
                        }
                        if !('\x20'..='\x3f').contains(&n) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    it.next();
                    while let Some(n) = it.next() {
                        if n == '\x07' {
                            break;
                        }
                        if n == '\x1b' {
                            if it.peek() == Some(&'\\') {
                                it.next();
                            }
                            break;
                        }
                    }
                }
                Some(&n) if ('\x40'..='\x5f').contains(&n) => {
                    it.next();
                }
                _ => out.push('\u{fffd}'),
            }
            continue;
        }
        let allowed = matches!(c, '\t' | '\n' | '\r')
            || ('\u{20}'..='\u{d7ff}').contains(&c)
            || ('\u{e000}'..='\u{fffd}').contains(&c)
            || c >= '\u{10000}';
        out.push(if allowed { c } else { '\u{fffd}' });
    }
    out
}

fn secs(ms: f64) -> Duration {
    if ms.is_finite() && ms > 0.0 {
        Duration::from_secs_f64(ms / 1000.0)
    } else {
        Duration::ZERO
    }
}

fn timestamp(unix_ms: u64) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::from_timestamp_millis(i64::try_from(unix_ms).ok()?).map(|t| t.fixed_offset())
}

fn utc(unix_ms: u64) -> String {
    timestamp(unix_ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "?".to_owned())
}

// --------------------------------------------------------------- junit --

/// The JUnit XML of a run: one `<testsuite>` per suite, one `<testcase>`
/// per trial. A teardown failure or an interruption becomes a failed
/// `[teardown]` / `[interrupted]` testcase, so CI tools show the run red.
pub fn junit_xml(run: &RunReport) -> anyhow::Result<String> {
    use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

    let failure = |message: &str| {
        let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
        let text = clean_text(message);
        st.set_message(first_line(&text).to_owned())
            .set_type("assertion")
            .set_description(text);
        st
    };
    let mut report = Report::new("ate-conformance");
    report.set_time(Duration::from_millis(run.wall_ms()));
    if let Some(t) = timestamp(run.started_unix_ms) {
        report.set_timestamp(t);
    }
    for s in &run.suites {
        let mut ts = TestSuite::new(clean_text(&s.suite));
        ts.set_time(Duration::from_millis(s.wall_ms));
        if let Some(t) = timestamp(s.started_unix_ms) {
            ts.set_timestamp(t);
        }
        ts.add_property(Property::new("run_id", clean_text(&s.run_id)));
        ts.add_property(Property::new("backend", clean_text(&s.backend)));
        for (k, v) in &s.fingerprint {
            ts.add_property(Property::new(clean_text(k), clean_text(v)));
        }
        if let Some(g) = &s.golden {
            ts.add_property(Property::new("golden_template", clean_text(&g.template)));
        }
        ts.add_property(Property::new("filtered_out", s.filtered_out.to_string()));
        ts.add_property(Property::new("fail_on_skip", s.fail_on_skip.to_string()));
        for k in &s.kept {
            ts.add_property(Property::new("kept", clean_text(k)));
        }
        for t in &s.trials {
            let status = match t.verdict {
                Verdict::Pass => TestCaseStatus::success(),
                Verdict::Fail => failure(
                    t.message
                        .as_deref()
                        .unwrap_or("failed (no message recorded)"),
                ),
                Verdict::Skip => {
                    let mut st = TestCaseStatus::skipped();
                    st.set_message(clean_text(first_line(
                        t.message
                            .as_deref()
                            .unwrap_or("skipped (no reason recorded)"),
                    )));
                    st
                }
            };
            let mut tc = TestCase::new(clean_text(&t.name), status);
            tc.set_classname(clean_text(&s.suite));
            tc.set_time(secs(t.duration_ms));
            let mut out = clean_text(&t.log);
            if !t.covers.is_empty() {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                let _ = writeln!(out, "covers: {}", clean_text(&t.covers.join(", ")));
            }
            if !t.artifacts.is_empty() {
                let _ = writeln!(out, "artifacts (relative to the report directory):");
                for a in &t.artifacts {
                    let _ = writeln!(out, "  {}", clean_text(a));
                }
            }
            tc.set_system_out(out);
            ts.add_test_case(tc);
        }
        for (name, what) in [
            (
                "[teardown]",
                s.teardown_error
                    .as_deref()
                    .map(|e| format!("teardown failed: {e}")),
            ),
            (
                "[interrupted]",
                s.interrupted
                    .as_deref()
                    .map(|i| format!("run interrupted: {i}")),
            ),
        ] {
            if let Some(msg) = what {
                let mut tc = TestCase::new(name, failure(&msg));
                tc.set_classname(clean_text(&s.suite));
                tc.set_time(Duration::ZERO);
                ts.add_test_case(tc);
            }
        }
        report.add_test_suite(ts);
    }
    report
        .to_string()
        .context("cannot serialize the JUnit report")
}

// ------------------------------------------------------------ markdown --

/// Plain text for Markdown (a table cell, a list item): one line, with
/// the characters that would turn into markup escaped.
fn cell(s: &str) -> String {
    let mut out = String::new();
    for c in clean_text(s).chars() {
        match c {
            '\\' | '|' | '*' | '`' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// An inline code span (backslash escapes do not work in code spans; GFM
/// tables still need `|` escaped).
fn code(s: &str) -> String {
    let s = clean_text(s).replace('|', "\\|").replace(['\n', '\r'], " ");
    if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

/// A fenced code block that survives fences in `s`.
fn fenced(out: &mut String, s: &str) {
    let s = clean_text(s);
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat((longest + 1).max(3));
    let _ = writeln!(out, "{fence}text\n{}\n{fence}\n", s.trim_end_matches('\n'));
}

/// A relative Markdown link to an artifact.
fn link(path: &str) -> String {
    let text = Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path);
    let mut url = String::new();
    for c in clean_text(path).chars() {
        match c {
            '%' => url.push_str("%25"),
            '#' => url.push_str("%23"),
            '?' => url.push_str("%3F"),
            ' ' => url.push_str("%20"),
            '(' => url.push_str("%28"),
            ')' => url.push_str("%29"),
            '<' => url.push_str("%3C"),
            '>' => url.push_str("%3E"),
            '|' => url.push_str("%7C"),
            '[' => url.push_str("%5B"),
            ']' => url.push_str("%5D"),
            c => url.push(c),
        }
    }
    format!("[{}]({url})", cell(text))
}

fn contract_word(v: ContractVerdict) -> &'static str {
    match v {
        ContractVerdict::Pass => "pass",
        ContractVerdict::Fail => "**FAIL**",
        ContractVerdict::Skip => "*skipped*",
        ContractVerdict::Waived => "*waived*",
        ContractVerdict::NotCovered => "*not covered*",
    }
}

fn trial_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "**FAIL**",
        Verdict::Skip => "*skip*",
    }
}

fn suite_verdict(s: &SuiteReport) -> RunVerdict {
    let any = |v| s.trials.iter().any(|t| t.verdict == v);
    if any(Verdict::Fail)
        || s.teardown_error.is_some()
        || s.interrupted.is_some()
        || (s.fail_on_skip && any(Verdict::Skip))
    {
        RunVerdict::Fail
    } else if any(Verdict::Skip) || s.trials.is_empty() || s.filtered_out > 0 {
        RunVerdict::Incomplete
    } else {
        RunVerdict::Pass
    }
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// `report.md`: the release gate first, then one row per contract
/// statement, the suites, failures, skips, and the environment.
pub fn markdown_report(run: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Release gate: {}\n", run.verdict.word());
    let (pass, fail, skip) = (
        run.count(Verdict::Pass),
        run.count(Verdict::Fail),
        run.count(Verdict::Skip),
    );
    let held = run
        .contract
        .iter()
        .filter(|r| r.verdict == ContractVerdict::Pass)
        .count();
    let _ = writeln!(
        s,
        "**{}**: {pass} passed, {fail} failed, {skip} skipped; {held}/{} contract statements hold; \
         run {}; backend{} {}; wall {}; started {}\n",
        run.verdict.word(),
        CONTRACT.len(),
        code(&run.run_id),
        if run.backends.len() == 1 { "" } else { "s" },
        run.backends.iter().map(|b| code(b)).collect::<Vec<_>>().join(", "),
        seconds(run.wall_ms()),
        utc(run.started_unix_ms),
    );
    let ids = run.run_ids();
    if ids.len() > 1 {
        let _ = writeln!(
            s,
            "> **Warning:** this directory holds suite reports of {} different runs; \
             stale results may be mixed in:\n>",
            ids.len()
        );
        for id in &ids {
            let names: Vec<_> = run
                .suites
                .iter()
                .filter(|x| &x.run_id == id)
                .map(|x| code(&x.suite))
                .collect();
            let _ = writeln!(s, "> - run {}: {}", code(id), names.join(", "));
        }
        s.push('\n');
    }
    if let Err(problems) = gate(run) {
        let _ = writeln!(s, "## Why not PASS\n");
        for p in problems {
            let _ = writeln!(s, "- {}", cell(&p));
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## Identity contract\n");
    let _ = writeln!(s, "| ID | statement | verdict | covering trials |");
    let _ = writeln!(s, "| --- | --- | --- | --- |");
    for r in &run.contract {
        let trials = if r.trials.is_empty() {
            "—".to_owned()
        } else {
            r.trials
                .iter()
                .map(|(su, t, v)| {
                    let name = format!("{su}/{t}");
                    let word = match r.waivers.get(&name) {
                        Some(_) if *v == Verdict::Skip => "*waived*",
                        _ => trial_word(*v),
                    };
                    format!("{} {word}", code(&name))
                })
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let verdict = match r.verdict {
            ContractVerdict::Waived => {
                let reasons: BTreeSet<&str> = r.waivers.values().map(String::as_str).collect();
                format!(
                    "*waived* ({})",
                    cell(&reasons.into_iter().collect::<Vec<_>>().join("; "))
                )
            }
            other => contract_word(other).to_owned(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {verdict} | {} |",
            cell(&r.id),
            cell(&r.title),
            trials
        );
    }
    s.push('\n');
    let known: BTreeSet<&str> = CONTRACT.iter().map(|c| c.0).collect();
    let unknown: Vec<String> = run
        .suites
        .iter()
        .flat_map(|su| su.trials.iter().map(move |t| (su, t)))
        .flat_map(|(su, t)| {
            t.covers
                .iter()
                .filter(|c| !known.contains(c.trim()))
                .map(move |c| {
                    format!(
                        "{} covers unknown statement {}",
                        code(&format!("{}/{}", su.suite, t.name)),
                        code(c)
                    )
                })
        })
        .collect();
    if !unknown.is_empty() {
        let _ = writeln!(
            s,
            "> **Warning:** trials cite statements that are not in the contract:\n>"
        );
        for u in unknown {
            let _ = writeln!(s, "> - {u}");
        }
        s.push('\n');
    }

    for su in &run.suites {
        let _ = writeln!(
            s,
            "## Suite {}: {}\n",
            code(&su.suite),
            suite_verdict(su).word()
        );
        let mut facts = vec![
            format!("backend {}", code(&su.backend)),
            format!("run {}", code(&su.run_id)),
            format!("wall {}", seconds(su.wall_ms)),
            plural(su.trials.len(), "trial"),
        ];
        if su.filtered_out > 0 {
            facts.push(format!("{} filtered out", su.filtered_out));
        }
        if su.fail_on_skip {
            facts.push("skips fail the run".to_owned());
        }
        let _ = writeln!(s, "{}\n", facts.join(" · "));
        if let Some(g) = &su.golden {
            let _ = writeln!(
                s,
                "Golden: template {}, golden actor {}{}, ready after {:.1} s\n",
                code(&g.template),
                code(&g.golden_actor_id),
                g.snapshot
                    .as_deref()
                    .map(|p| format!(", snapshot {}", code(p)))
                    .unwrap_or_default(),
                g.ready_after.as_secs_f64()
            );
        }
        if su.trials.is_empty() {
            let _ = writeln!(s, "No trial ran.\n");
            continue;
        }
        let _ = writeln!(s, "| trial | covers | verdict | time (ms) | artifacts |");
        let _ = writeln!(s, "| --- | --- | --- | ---: | --- |");
        for t in &su.trials {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {} |",
                code(&t.name),
                cell(&t.covers.join(", ")),
                match &t.waived {
                    Some(w) if t.verdict == Verdict::Skip => format!("*waived* ({})", cell(w)),
                    _ => trial_word(t.verdict).to_owned(),
                },
                t.duration_ms,
                t.artifacts
                    .iter()
                    .map(|a| link(a))
                    .collect::<Vec<_>>()
                    .join("<br>")
            );
        }
        s.push('\n');
    }

    let failed: Vec<_> = run
        .suites
        .iter()
        .flat_map(|su| su.trials.iter().map(move |t| (su, t)))
        .filter(|(_, t)| t.verdict == Verdict::Fail)
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "## Failures\n");
        for (su, t) in failed {
            let _ = writeln!(s, "### {}\n", code(&format!("{}/{}", su.suite, t.name)));
            if !t.covers.is_empty() {
                let _ = writeln!(s, "Covers {}.\n", cell(&t.covers.join(", ")));
            }
            fenced(
                &mut s,
                t.message.as_deref().unwrap_or("(no message recorded)"),
            );
            if !t.artifacts.is_empty() {
                let _ = writeln!(
                    s,
                    "Artifacts: {}\n",
                    t.artifacts
                        .iter()
                        .map(|a| link(a))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if !t.log.trim().is_empty() {
                let _ = writeln!(s, "<details><summary>trial log</summary>\n");
                fenced(&mut s, &t.log);
                let _ = writeln!(s, "</details>\n");
            }
        }
    }

    let skipped: Vec<_> = run
        .suites
        .iter()
        .flat_map(|su| su.trials.iter().map(move |t| (su, t)))
        .filter(|(_, t)| t.verdict == Verdict::Skip)
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(s, "## Skipped\n");
        for (su, t) in skipped {
            let _ = writeln!(
                s,
                "- {}: {}",
                code(&format!("{}/{}", su.suite, t.name)),
                cell(t.message.as_deref().unwrap_or("(no reason recorded)"))
            );
        }
        s.push('\n');
    }

    let mut section = |title: &str, items: Vec<(&SuiteReport, &str)>, as_code: bool| {
        if items.is_empty() {
            return;
        }
        let _ = writeln!(s, "## {title}\n");
        for (su, text) in items {
            if as_code {
                let _ = writeln!(s, "Suite {}:\n", code(&su.suite));
                fenced(&mut s, text);
            } else {
                let _ = writeln!(s, "- {}: {}", code(&su.suite), cell(text));
            }
        }
        if !as_code {
            s.push('\n');
        }
    };
    section(
        "Interrupted",
        run.suites
            .iter()
            .filter_map(|su| su.interrupted.as_deref().map(|i| (su, i)))
            .collect(),
        false,
    );
    section(
        "Teardown errors",
        run.suites
            .iter()
            .filter_map(|su| su.teardown_error.as_deref().map(|e| (su, e)))
            .collect(),
        true,
    );
    section(
        "Kept resources (--keep)",
        run.suites
            .iter()
            .flat_map(|su| su.kept.iter().map(move |k| (su, k.as_str())))
            .collect(),
        false,
    );

    if let Some(st) = &run.selftest {
        selftest_markdown(&mut s, st);
    }
    environment(&mut s, run);
    s
}

/// The fingerprint table: one value column, or one per suite when they
/// differ.
fn environment(s: &mut String, run: &RunReport) {
    let keys: BTreeSet<&String> = run
        .suites
        .iter()
        .flat_map(|su| su.fingerprint.keys())
        .collect();
    if keys.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Environment\n");
    let same = run
        .suites
        .windows(2)
        .all(|w| w[0].fingerprint == w[1].fingerprint);
    let cols: Vec<&SuiteReport> = if same {
        run.suites.iter().take(1).collect()
    } else {
        run.suites.iter().collect()
    };
    if same {
        let _ = writeln!(s, "| fact | value |\n| --- | --- |");
    } else {
        let _ = writeln!(
            s,
            "| fact | {} |\n| --- |{}",
            cols.iter()
                .map(|c| code(&c.suite))
                .collect::<Vec<_>>()
                .join(" | "),
            " --- |".repeat(cols.len())
        );
    }
    for k in keys {
        let vals: Vec<String> = cols
            .iter()
            .map(|c| {
                c.fingerprint
                    .get(k)
                    .map(|v| code(v))
                    .unwrap_or_else(|| "—".to_owned())
            })
            .collect();
        let _ = writeln!(s, "| {} | {} |", cell(k), vals.join(" | "));
    }
    s.push('\n');
}

// ------------------------------------------------------------- console --

/// What a suite binary prints on stderr at the end: the suite's verdict and
/// wall time, each trial with its time and phases, skip reasons, the run's
/// verdict, and where the reports are.
pub fn console_summary(run: &RunReport, suite: &SuiteReport, written: &Written) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nsuite {} on {}: {} in {:.2} s wall (run {})",
        suite.suite,
        suite.backend,
        suite_verdict(suite).word(),
        suite.wall_ms as f64 / 1000.0,
        suite.run_id
    );
    let width = suite
        .trials
        .iter()
        .map(|t| t.name.chars().count())
        .chain(
            suite
                .trials
                .iter()
                .flat_map(|t| &t.phases)
                .map(|p| p.name.chars().count() + 2),
        )
        .max()
        .unwrap_or(0)
        .max("golden ready".len());
    if let Some(g) = &suite.golden {
        let _ = writeln!(
            s,
            "       {:<width$} {:>9.1} ms  (template {}, golden actor {})",
            "golden ready",
            g.ready_after.as_secs_f64() * 1000.0,
            g.template,
            g.golden_actor_id
        );
    }
    // Continuation lines of a multi-line text, indented under its label.
    let indented = |text: &str| clean_text(text).trim_end().replace('\n', "\n           ");
    for t in &suite.trials {
        let _ = writeln!(
            s,
            "  {:<4} {:<width$} {:>9.1} ms",
            t.verdict.word(),
            t.name,
            t.duration_ms
        );
        for p in &t.phases {
            let _ = writeln!(s, "         {:<w$} {:>9.1} ms", p.name, p.ms, w = width - 2);
        }
        match (t.verdict, t.message.as_deref()) {
            (Verdict::Skip, m) => {
                let _ = writeln!(
                    s,
                    "         skipped: {}",
                    indented(m.unwrap_or("(no reason recorded)"))
                );
            }
            (Verdict::Fail, Some(m)) => {
                let _ = writeln!(s, "         failed: {}", clean_text(first_line(m)));
            }
            _ => {}
        }
    }
    if suite.filtered_out > 0 {
        let _ = writeln!(
            s,
            "  {} filtered out",
            plural(suite.filtered_out as usize, "trial")
        );
    }
    if let Some(e) = &suite.teardown_error {
        let _ = writeln!(s, "  teardown failed: {}", indented(e));
    }
    if let Some(i) = &suite.interrupted {
        let _ = writeln!(s, "  interrupted: {}", indented(i));
    }
    for k in &suite.kept {
        let _ = writeln!(s, "  kept: {}", clean_text(k));
    }
    let _ = writeln!(
        s,
        "run {} so far ({} in the report directory): {}",
        run.run_id,
        plural(run.suites.len(), "suite"),
        run.verdict.word()
    );
    let _ = write!(
        s,
        "reports: {}\n         {}\n         {}\n         {}",
        written.markdown.display(),
        written.junit.display(),
        written.report_json.display(),
        written.suite_json.display()
    );
    s
}

fn selftest_markdown(s: &mut String, st: &SelfTest) {
    let caught = st.faults.iter().filter(|f| f.caught()).count();
    let verdict = if st.problems().is_empty() {
        "PASS"
    } else {
        "FAIL"
    };
    let _ = writeln!(
        s,
        "## Self-test: kill matrix ({verdict})\n\nThe suites against the reference agent in each fault mode: {caught}/{} faults caught; \
         healthy agent {}.\n\n`X` caught (failed naming the fault's symptom), `f` failed otherwise, `.` passed, `s` skipped, ` ` not run.\n",
        st.faults.len(),
        if st.healthy_problems.is_empty() { "all green".to_string() } else { format!("NOT green: {}", st.healthy_problems.join("; ")) }
    );
    let _ = write!(s, "| fault | caught |");
    for (i, _) in st.trials.iter().enumerate() {
        let _ = write!(s, " {} |", i + 1);
    }
    let _ = write!(s, "\n| --- | --- |");
    for _ in &st.trials {
        let _ = write!(s, " :-: |");
    }
    let _ = writeln!(s);
    for f in &st.faults {
        let _ = write!(
            s,
            "| `{}` | {} |",
            f.fault,
            if f.caught() { "**yes**" } else { "**NO**" }
        );
        for c in &f.cells {
            let mark = match c {
                Cell::Caught => "X",
                Cell::FailedOther => "f",
                Cell::Passed => ".",
                Cell::Skipped => "s",
                Cell::NotRun => " ",
            };
            let _ = write!(s, " {mark} |");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "\nColumns:\n");
    for (i, t) in st.trials.iter().enumerate() {
        let _ = writeln!(s, "{}. `{t}`", i + 1);
    }
    let _ = writeln!(
        s,
        "\n| fault | what it gets wrong | symptom | caught by |\n| --- | --- | --- | --- |"
    );
    for f in &st.faults {
        let by = if f.caught_by.is_empty() {
            format!(
                "**nothing**{}",
                f.run_error
                    .as_ref()
                    .map(|e| format!(" (run error: {})", first_line(e)))
                    .unwrap_or_default()
            )
        } else {
            f.caught_by
                .iter()
                .map(|(t, m)| format!("`{t}`: {}", md_cell(m)))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {by} |",
            f.fault,
            md_cell(&f.description),
            f.symptoms.join(", ")
        );
    }
    let _ = writeln!(s);
}

fn md_cell(text: &str) -> String {
    let line = first_line(text);
    let short: String = line.chars().take(240).collect();
    short.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(name: &str, covers: &[&str], verdict: Verdict) -> TrialRecord {
        TrialRecord {
            duration_ms: 1.0,
            ..TrialRecord::new("s", name, covers, verdict)
        }
    }

    fn suite(trials: Vec<TrialRecord>) -> SuiteReport {
        SuiteReport {
            suite: "s".into(),
            run_id: "r".into(),
            backend: "local".into(),
            started_unix_ms: 1000,
            ended_unix_ms: 2000,
            wall_ms: 1000,
            fingerprint: BTreeMap::new(),
            golden: None,
            teardown_error: None,
            interrupted: None,
            kept: vec![],
            filtered_out: 0,
            fail_on_skip: false,
            trials,
        }
    }

    #[test]
    fn clean_text_strips_ansi_and_replaces_controls() {
        assert_eq!(clean_text("\x1b[31mred\x1b[0m"), "red");
        assert_eq!(clean_text("a\0b"), "a\u{fffd}b");
        assert_eq!(clean_text("t\tn\nr\r"), "t\tn\nr\r");
        assert_eq!(clean_text("\x1b]0;title\x07x"), "x");
        assert_eq!(clean_text("end\x1b"), "end\u{fffd}");
        assert_eq!(clean_text("\u{fffe}"), "\u{fffd}");
    }

    #[test]
    fn contract_verdicts() {
        let run = RunReport::from_suites(vec![suite(vec![
            trial("a", &["ID-1", "ID-2"], Verdict::Pass),
            trial("b", &["ID-2"], Verdict::Fail),
            trial("c", &["ID-3"], Verdict::Skip),
            trial("d", &["ID-3"], Verdict::Pass),
        ])]);
        let v = |id: &str| run.contract.iter().find(|r| r.id == id).unwrap().verdict;
        assert_eq!(run.contract.len(), 15);
        assert_eq!(v("ID-1"), ContractVerdict::Pass);
        assert_eq!(v("ID-2"), ContractVerdict::Fail);
        assert_eq!(v("ID-3"), ContractVerdict::Skip);
        assert_eq!(v("ID-4"), ContractVerdict::NotCovered);
        assert_eq!(run.verdict, RunVerdict::Fail);
    }

    #[test]
    fn a_statement_whose_skips_are_all_waived_is_waived_in_json_and_markdown() {
        let mut waived = trial("w", &["ID-9"], Verdict::Skip);
        waived.waived = Some("ID-9: no host access into kind nodes".into());
        let mut also = trial("w2", &["ID-8"], Verdict::Skip);
        also.waived = Some("ID-8: no host access".into());
        let mut s = suite(vec![
            waived,
            also,
            trial("u", &["ID-8"], Verdict::Skip),
            trial("p", &["ID-9"], Verdict::Pass),
        ]);
        s.fail_on_skip = true;
        let run = RunReport::from_suites(vec![s]);
        let row = |id: &str| run.contract.iter().find(|r| r.id == id).unwrap();
        assert_eq!(row("ID-9").verdict, ContractVerdict::Waived);
        // One unwaived skip keeps the statement a plain skip.
        assert_eq!(row("ID-8").verdict, ContractVerdict::Skip);
        // An unwaived skip under fail_on_skip still fails the run.
        assert_eq!(run.verdict, RunVerdict::Fail);

        let json = serde_json::to_value(&run).unwrap();
        let id9 = &json["contract"][8];
        assert_eq!(id9["id"], "ID-9");
        assert_eq!(id9["verdict"], "waived");
        assert_eq!(
            id9["waivers"]["s/w"],
            "ID-9: no host access into kind nodes"
        );

        let md = markdown_report(&run);
        let line = |id: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| {id} |")))
                .unwrap()
                .to_owned()
        };
        let id9 = line("ID-9");
        assert!(
            id9.contains("| *waived* (ID-9: no host access into kind nodes) |"),
            "{id9}"
        );
        assert!(id9.contains("`s/w` *waived*"), "{id9}");
        assert!(id9.contains("`s/p` pass"), "{id9}");
        let id8 = line("ID-8");
        assert!(id8.contains("| *skipped* |"), "{id8}");
        assert!(
            id8.contains("`s/w2` *waived*") && id8.contains("`s/u` *skip*"),
            "{id8}"
        );
    }

    #[test]
    fn waived_skips_alone_do_not_fail_a_fail_on_skip_run() {
        let mut w = trial("w", &["ID-9"], Verdict::Skip);
        w.waived = Some("ID-9: reason".into());
        let mut s = suite(vec![w]);
        s.fail_on_skip = true;
        let run = RunReport::from_suites(vec![s]);
        // Not checked, so not PASS either: incomplete, with the waiver.
        assert_eq!(run.verdict, RunVerdict::Incomplete);
        let problems = gate(&run).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("ID-9 not checked, waived: s/w (ID-9: reason)")),
            "{problems:?}"
        );
    }

    #[test]
    fn only_skips_and_gaps_are_incomplete_unless_fail_on_skip() {
        let mut s = suite(vec![trial("c", &["ID-3"], Verdict::Skip)]);
        assert_eq!(
            RunReport::from_suites(vec![s.clone()]).verdict,
            RunVerdict::Incomplete
        );
        s.fail_on_skip = true;
        assert_eq!(RunReport::from_suites(vec![s]).verdict, RunVerdict::Fail);
    }

    #[test]
    fn majority_run_id_wins() {
        let mut a = suite(vec![]);
        a.suite = "a".into();
        let mut b = a.clone();
        b.suite = "b".into();
        let mut c = a.clone();
        c.suite = "c".into();
        c.run_id = "old".into();
        let run = RunReport::from_suites(vec![c, a, b]);
        assert_eq!(run.run_id, "r");
        assert_eq!(run.run_ids(), vec!["old".to_owned(), "r".to_owned()]);
        assert_eq!(run.suites[0].suite, "a");
    }

    #[test]
    fn fences_survive_backticks() {
        let mut s = String::new();
        fenced(&mut s, "a ```` b");
        assert!(s.starts_with("`````text\n"));
    }

    #[test]
    fn suite_names_are_checked() {
        assert!(check_suite_name("identity").is_ok());
        assert!(check_suite_name("../x").is_err());
        assert!(check_suite_name("").is_err());
        assert!(check_suite_name(".hidden").is_err());
    }
}
