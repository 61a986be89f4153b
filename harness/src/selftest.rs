//! The self-test: a conformance suite that cannot fail is worthless. The
//! suites run against a healthy reference agent (every trial must pass)
//! and against the agent in each fault mode — each a faithful reproduction
//! of one known way to get identity wrong — where at least one named trial
//! must fail *naming the fault's symptom* (the contract statement it
//! breaks). The result is a kill matrix: rows are faults, columns trials.

use std::future::Future;
use std::path::{Path, PathBuf};

use crate::first_line;
use crate::report::{self, Cell, FaultRow, SelfTest, SuiteReport, TrialRecord, Verdict};

/// A fault mode of the reference agent, and the symptoms that catch it.
#[derive(Debug, Clone, Copy)]
pub struct FaultSpec {
    /// `ate-refagent serve --fault NAME`.
    pub name: &'static str,
    /// Contract statements a trial names when this fault breaks it.
    pub symptoms: &'static [&'static str],
    /// What it gets wrong.
    pub description: &'static str,
}

/// Every fault mode the reference agent has.
pub const FAULTS: &[FaultSpec] = &[
    FaultSpec {
        name: "env-identity",
        symptoms: &["ID-3", "ID-4", "ID-7"],
        description: "the ID is passed only as an environment variable at golden boot, with no identity mount: restored actors carry the golden's",
    },
    FaultSpec {
        name: "baked-identity",
        symptoms: &["ID-3", "ID-4"],
        description: "the golden's ID is written into the image at golden time and never rewritten",
    },
    FaultSpec {
        name: "shared-identity-dir",
        symptoms: &["ID-3", "ID-5", "ID-8"],
        description: "one host identity directory for all actors; the last writer wins",
    },
    FaultSpec { name: "writable-mount", symptoms: &["ID-6"], description: "the identity bind mount is read-write" },
    FaultSpec {
        name: "file-mount",
        symptoms: &["ID-7"],
        description: "a single-file bind mount of actor-id instead of the directory",
    },
    FaultSpec {
        name: "no-reset",
        symptoms: &["ID-3", "ID-10"],
        description: "identity dir and bundle are not regenerated on resume: the first actor's bundle is reused",
    },
    FaultSpec {
        name: "torn-write",
        symptoms: &["ID-9"],
        description: "actor-id is truncated and rewritten in small chunks in place, no temp file and no rename",
    },
    FaultSpec {
        name: "symlink-follow",
        symptoms: &["ID-13"],
        description: "the mount point is created following symlinks out of the rootfs",
    },
    FaultSpec { name: "trailing-newline", symptoms: &["ID-2"], description: "the file holds the ID plus a newline" },
];

/// Problems of a run that must be all green.
fn healthy_problems(suites: &[SuiteReport]) -> Vec<String> {
    if suites.is_empty() {
        return vec!["the run wrote no suite report".into()];
    }
    let mut v = Vec::new();
    for s in suites {
        if let Some(e) = &s.teardown_error {
            v.push(format!("{}: teardown failed: {}", s.suite, first_line(e)));
        }
        for t in &s.trials {
            match t.verdict {
                Verdict::Pass => {}
                Verdict::Fail => v.push(format!(
                    "{}/{} failed: {}",
                    s.suite,
                    t.name,
                    first_line(t.message.as_deref().unwrap_or(""))
                )),
                Verdict::Skip => v.push(format!(
                    "{}/{} skipped: {}",
                    s.suite,
                    t.name,
                    first_line(t.message.as_deref().unwrap_or(""))
                )),
            }
        }
    }
    v
}

/// The kill-matrix row of one fault from its run's suite reports.
pub fn fault_row(spec: &FaultSpec, columns: &[String], suites: &[SuiteReport]) -> FaultRow {
    let mut caught_by = Vec::new();
    let cells = columns
        .iter()
        .map(|col| {
            let found = suites
                .iter()
                .flat_map(|s| s.trials.iter().map(move |t| (s, t)))
                .find(|(s, t)| format!("{}/{}", s.suite, t.name) == *col);
            match found {
                None => Cell::NotRun,
                Some((_, t)) => match t.verdict {
                    Verdict::Pass => Cell::Passed,
                    Verdict::Skip => Cell::Skipped,
                    Verdict::Fail => {
                        // Caught: the trial recorded a violation of one of
                        // the fault's symptoms (a structured field, never a
                        // text search).
                        if t.violated
                            .iter()
                            .any(|v| spec.symptoms.contains(&v.as_str()))
                        {
                            caught_by.push((col.clone(), symptom_line(t, spec)));
                            Cell::Caught
                        } else {
                            Cell::FailedOther
                        }
                    }
                },
            }
        })
        .collect();
    let run_error = if suites.is_empty() {
        Some("the fault run wrote no suite report".into())
    } else {
        suites.iter().find_map(|s| {
            s.trials
                .iter()
                .find(|t| t.setup_failed)
                .and_then(|t| t.message.clone())
        })
    };
    FaultRow {
        fault: spec.name.into(),
        description: spec.description.into(),
        symptoms: spec.symptoms.iter().map(|s| s.to_string()).collect(),
        cells,
        caught_by,
        run_error,
    }
}

/// The line of a failed trial's message that shows the violation of one
/// of `spec`'s symptoms (a violation renders as `ID-n: ...`, or
/// `ID-n/ID-m: ...`), for the kill matrix; the first line when none does.
fn symptom_line(t: &TrialRecord, spec: &FaultSpec) -> String {
    let msg = t.message.as_deref().unwrap_or("");
    let names = |l: &str, id: &str| {
        l.match_indices(id)
            .any(|(i, _)| !l[i + id.len()..].starts_with(|c: char| c.is_ascii_digit()))
    };
    msg.lines()
        .find(|l| {
            spec.symptoms
                .iter()
                .any(|id| t.violated.iter().any(|v| v == id) && names(l, id))
        })
        .unwrap_or_else(|| first_line(msg))
        .to_owned()
}

/// Runs the self-test into `dir`: `run(None, dir)` must leave an all-green
/// healthy report there; `run(Some(fault), dir/selftest/<fault>)` runs the
/// suites against each fault. `run` returns once the suite run is over,
/// whatever its exit status (a fault run is expected to fail); an `Err`
/// means it could not run at all. Writes `dir/selftest.json` and the merged
/// reports with the kill matrix; returns the self-test.
pub async fn run<F, Fut>(dir: &Path, faults: &[FaultSpec], run: F) -> anyhow::Result<SelfTest>
where
    F: Fn(Option<&'static str>, PathBuf) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    run(None, dir.to_path_buf()).await?;
    let healthy = report::read_suites(dir)?;
    let columns: Vec<String> = healthy
        .iter()
        .flat_map(|s| {
            s.trials
                .iter()
                .map(move |t| format!("{}/{}", s.suite, t.name))
        })
        .collect();
    let mut rows = Vec::new();
    for spec in faults {
        let fdir = dir.join("selftest").join(spec.name);
        let row = match run(Some(spec.name), fdir.clone()).await {
            Ok(()) => fault_row(
                spec,
                &columns,
                &report::read_suites(&fdir).unwrap_or_default(),
            ),
            Err(e) => {
                let mut r = fault_row(spec, &columns, &[]);
                r.run_error = Some(format!("{e:#}"));
                r
            }
        };
        eprintln!(
            "self-test: fault {:<20} {}",
            spec.name,
            if row.caught() {
                format!(
                    "caught by {}",
                    row.caught_by
                        .iter()
                        .map(|c| c.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                "NOT CAUGHT".into()
            }
        );
        rows.push(row);
    }
    let st = SelfTest {
        trials: columns,
        healthy_problems: healthy_problems(&healthy),
        faults: rows,
    };
    report::write_selftest(dir, &st)?;
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(message: &str, violated: &[&str]) -> TrialRecord {
        TrialRecord {
            suite: "identity".into(),
            name: "t".into(),
            covers: vec![],
            verdict: Verdict::Fail,
            duration_ms: 1.0,
            message: Some(message.into()),
            log: String::new(),
            phases: vec![],
            artifacts: vec![],
            violated: violated.iter().map(|s| s.to_string()).collect(),
            setup_failed: false,
            waived: None,
        }
    }

    fn one_suite(t: TrialRecord) -> Vec<SuiteReport> {
        vec![SuiteReport {
            suite: "identity".into(),
            run_id: "r".into(),
            backend: "local".into(),
            started_unix_ms: 0,
            ended_unix_ms: 0,
            wall_ms: 0,
            fingerprint: Default::default(),
            golden: None,
            teardown_error: None,
            interrupted: None,
            kept: vec![],
            filtered_out: 0,
            fail_on_skip: false,
            trials: vec![t],
        }]
    }

    #[test]
    fn caught_means_a_recorded_violation_of_a_symptom() {
        let spec = FAULTS.iter().find(|f| f.name == "symlink-follow").unwrap();
        let cols = vec!["identity/t".to_string()];
        // Recorded ID-13: caught, with the line that shows it (not the
        // context line above it).
        let row = fault_row(
            spec,
            &cols,
            &one_suite(failed(
                "after x\ncaused by: ID-13: wrote outside",
                &["ID-13"],
            )),
        );
        assert_eq!(row.cells, [Cell::Caught]);
        assert_eq!(row.caught_by[0].1, "caused by: ID-13: wrote outside");
        // ID-1 recorded, the text mentions ID-13: not caught (the text is
        // never searched for the verdict).
        let row = fault_row(
            spec,
            &cols,
            &one_suite(failed("ID-1: x (see ID-13)", &["ID-1"])),
        );
        assert_eq!(row.cells, [Cell::FailedOther]);
        assert!(!row.caught());
        // A setup failure is the run's error, read from the field.
        let mut t = failed("backend local could not be set up: boom", &[]);
        t.setup_failed = true;
        let row = fault_row(spec, &cols, &one_suite(t));
        assert!(row.run_error.as_deref().unwrap().contains("boom"));
    }

    #[test]
    fn fault_names_are_unique_and_symptoms_are_contract_ids() {
        let mut names: Vec<&str> = FAULTS.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FAULTS.len());
        for f in FAULTS {
            assert!(!f.symptoms.is_empty());
            for s in f.symptoms {
                assert!(report::CONTRACT.iter().any(|(id, _)| id == s), "{s}");
            }
        }
    }
}
