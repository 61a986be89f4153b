//! The release gate: passes only a complete, clean run, and names every
//! problem otherwise.

use std::collections::BTreeMap;

use ate_harness::report::{
    self, RunReport, RunVerdict, SuiteReport, TrialRecord, Verdict, CONTRACT,
};

fn trial(name: &str, covers: &[&str]) -> TrialRecord {
    TrialRecord {
        suite: "identity".into(),
        name: name.into(),
        covers: covers.iter().map(|c| c.to_string()).collect(),
        verdict: Verdict::Pass,
        duration_ms: 1.0,
        message: None,
        log: String::new(),
        phases: vec![],
        artifacts: vec![],
        violated: vec![],
        setup_failed: false,
        waived: None,
    }
}

/// A suite whose trials cover every contract statement, all passing.
fn complete() -> SuiteReport {
    SuiteReport {
        suite: "identity".into(),
        run_id: "run-1".into(),
        backend: "local".into(),
        started_unix_ms: 1_000,
        ended_unix_ms: 3_000,
        wall_ms: 2_000,
        fingerprint: BTreeMap::new(),
        golden: None,
        teardown_error: None,
        interrupted: None,
        kept: vec![],
        filtered_out: 0,
        fail_on_skip: false,
        trials: CONTRACT
            .iter()
            .map(|(id, _)| trial(&format!("covers_{id}"), &[id]))
            .collect(),
    }
}

fn problems(suites: Vec<SuiteReport>) -> (RunVerdict, Vec<String>) {
    let run = RunReport::from_suites(suites);
    let verdict = run.verdict;
    let gate = report::gate(&run);
    assert_eq!(
        verdict == RunVerdict::Pass,
        gate.is_ok(),
        "verdict and gate agree"
    );
    (verdict, gate.err().unwrap_or_default())
}

fn has(problems: &[String], needle: &str) -> bool {
    problems.iter().any(|p| p.contains(needle))
}

#[test]
fn a_complete_clean_run_passes() {
    let (v, p) = problems(vec![complete()]);
    assert_eq!(v, RunVerdict::Pass);
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn the_gate_holds_for_a_report_read_back_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    report::write_suite(dir.path(), &complete()).unwrap();
    let run: RunReport =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report::gate(&run), Ok(()));
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.starts_with("# Release gate: PASS\n"));
    assert!(!md.contains("Why not PASS"));
}

#[test]
fn a_failed_trial_fails_the_run_and_its_statements() {
    let mut s = complete();
    s.trials[5].verdict = Verdict::Fail;
    s.trials[5].message = Some("write succeeded\ncaused by:\n    mount is rw".into());
    let (v, p) = problems(vec![s]);
    assert_eq!(v, RunVerdict::Fail);
    assert!(
        has(&p, "trial identity/covers_ID-6 failed: write succeeded"),
        "{p:?}"
    );
    assert!(
        has(&p, "ID-6 does not hold: identity/covers_ID-6 failed"),
        "{p:?}"
    );
    assert!(!has(&p, "caused by"), "one line per problem: {p:?}");
}

#[test]
fn a_skipped_trial_leaves_the_run_incomplete() {
    let mut s = complete();
    s.trials[11].verdict = Verdict::Skip;
    s.trials[11].message = Some("backend has no pause container".into());
    let (v, p) = problems(vec![s.clone()]);
    assert_eq!(v, RunVerdict::Incomplete);
    assert!(
        has(
            &p,
            "trial identity/covers_ID-12 skipped: backend has no pause container"
        ),
        "{p:?}"
    );
    assert!(has(&p, "ID-12 not fully checked"), "{p:?}");

    s.fail_on_skip = true;
    let (v, _) = problems(vec![s]);
    assert_eq!(v, RunVerdict::Fail);
}

#[test]
fn an_uncovered_statement_is_named() {
    let mut s = complete();
    s.trials.retain(|t| !t.covers.contains(&"ID-6".to_owned()));
    let (v, p) = problems(vec![s]);
    assert_eq!(v, RunVerdict::Incomplete);
    assert_eq!(p, ["ID-6 not covered by any trial in this run"]);
}

#[test]
fn a_teardown_error_fails_the_run() {
    let mut s = complete();
    s.teardown_error = Some("cannot delete atespace e2e-1\ncaused by:\n    timeout".into());
    let (v, p) = problems(vec![s]);
    assert_eq!(v, RunVerdict::Fail);
    assert_eq!(
        p,
        ["suite identity: teardown failed: cannot delete atespace e2e-1"]
    );
}

#[test]
fn an_interruption_fails_the_run() {
    let mut s = complete();
    s.interrupted = Some("SIGINT: cleaned up 2 actors".into());
    let (v, p) = problems(vec![s]);
    assert_eq!(v, RunVerdict::Fail);
    assert_eq!(
        p,
        ["suite identity: interrupted: SIGINT: cleaned up 2 actors"]
    );
}

#[test]
fn filtered_trials_leave_the_run_incomplete() {
    let mut s = complete();
    s.filtered_out = 3;
    let (v, p) = problems(vec![s]);
    assert_eq!(v, RunVerdict::Incomplete);
    assert_eq!(
        p,
        ["suite identity: 3 trial(s) filtered out by name filters"]
    );
}

#[test]
fn suites_of_different_runs_leave_the_run_incomplete() {
    let mut other = complete();
    other.suite = "kind".into();
    other.run_id = "run-0".into();
    let (v, p) = problems(vec![complete(), other]);
    assert_eq!(v, RunVerdict::Incomplete);
    assert_eq!(p, ["the report directory mixes 2 runs: run-0, run-1"]);
}

#[test]
fn an_empty_run_is_not_a_pass() {
    let (v, p) = problems(vec![]);
    assert_eq!(v, RunVerdict::Incomplete);
    assert!(has(&p, "no suite reports"));
    assert_eq!(p.iter().filter(|p| p.contains("not covered")).count(), 15);
}

#[test]
fn a_truncated_contract_table_fails_the_gate() {
    let mut run = RunReport::from_suites(vec![complete()]);
    run.contract.pop();
    let p = report::gate(&run).unwrap_err();
    assert_eq!(p, ["ID-15 missing from the report"]);
}

fn fault_row(name: &str, caught: bool) -> report::FaultRow {
    report::FaultRow {
        fault: name.into(),
        description: format!("{name} breaks it"),
        symptoms: vec!["ID-6".into()],
        cells: vec![if caught {
            report::Cell::Caught
        } else {
            report::Cell::Passed
        }],
        caught_by: if caught {
            vec![(
                "identity/covers_ID-6".into(),
                "ID-6: /run/ate is not read-only".into(),
            )]
        } else {
            vec![]
        },
        run_error: None,
    }
}

#[test]
fn selftest_kill_matrix_gates_and_renders() {
    let st = report::SelfTest {
        trials: vec!["identity/covers_ID-6".into()],
        healthy_problems: vec![],
        faults: vec![fault_row("writable-mount", true)],
    };
    let run = RunReport::from_suites(vec![complete()]).with_selftest(st.clone());
    assert_eq!(run.verdict, RunVerdict::Pass, "{:?}", report::gate(&run));
    let md = report::markdown_report(&run);
    assert!(md.contains("## Self-test: kill matrix (PASS)"), "{md}");
    assert!(md.contains("| `writable-mount` | **yes** | X |"), "{md}");

    // A fault no trial catches fails the gate, named.
    let mut bad = st.clone();
    bad.faults.push(fault_row("file-mount", false));
    let run = RunReport::from_suites(vec![complete()]).with_selftest(bad);
    assert_eq!(run.verdict, RunVerdict::Fail);
    let problems = report::gate(&run).unwrap_err();
    assert!(
        has(
            &problems,
            "self-test: fault file-mount is caught by no trial"
        ),
        "{problems:?}"
    );
    assert!(report::markdown_report(&run).contains("| `file-mount` | **NO** | . |"));

    // A healthy run that is not green fails it too.
    let mut unhealthy = st;
    unhealthy
        .healthy_problems
        .push("identity/covers_ID-6 failed: boom".into());
    let run = RunReport::from_suites(vec![complete()]).with_selftest(unhealthy);
    assert!(has(
        &report::gate(&run).unwrap_err(),
        "self-test: healthy agent: identity/covers_ID-6 failed"
    ));
}
