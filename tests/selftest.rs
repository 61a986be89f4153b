//! The self-test as a test target: the identity suite against a healthy
//! reference agent (all green) and against every fault mode (each caught
//! by a named trial whose failure names the fault's symptom). Runs the
//! identity suite binary built next to this test; needs root and runsc.
//! Prints the kill matrix.

use std::process::{Command, Stdio};

mod common;
use common::identity_bin;

#[test]
fn every_fault_is_caught_and_the_healthy_agent_is_green() {
    let dir = tempfile::tempdir().unwrap();
    let bin = identity_bin();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let st = rt
        .block_on(ate_harness::selftest::run(
            dir.path(),
            &ate_harness::selftest::faults(),
            |fault, report| {
                let bin = bin.clone();
                async move {
                    let mut cmd = Command::new(&bin);
                    cmd.arg("--report-dir")
                        .arg(&report)
                        .env_remove("CI")
                        .env("NO_COLOR", "1")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    if let Some(f) = fault {
                        cmd.args(["--agent-fault", f]);
                    }
                    let status = cmd.status()?;
                    eprintln!("  suite run {} -> {status}", fault.unwrap_or("healthy"));
                    Ok(())
                }
            },
        ))
        .unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    let matrix = &md[md
        .find("## Self-test")
        .expect("report.md shows the kill matrix")..];
    eprintln!(
        "{}",
        &matrix[..matrix.find("## Environment").unwrap_or(matrix.len())]
    );
    let problems = st.problems();
    assert!(
        problems.is_empty(),
        "self-test problems:\n{}",
        problems.join("\n")
    );
    assert_eq!(st.faults.len(), ate_harness::selftest::faults().len());
    // Nothing left running of the agents these runs started (their
    // instance is in each report's fingerprint, `... (pid N, instance X)`,
    // and container IDs are `ate-<instance>-<n>`; other runsc users may
    // share the machine).
    let mut prefixes = Vec::new();
    let faults = ate_harness::selftest::faults();
    let dirs = std::iter::once(dir.path().to_path_buf()).chain(
        faults
            .iter()
            .map(|f| dir.path().join("selftest").join(f.name)),
    );
    for d in dirs {
        for suite in ate_harness::report::read_suites(&d).unwrap() {
            let agent = suite.fingerprint.get("agent").cloned().unwrap_or_default();
            let instance = agent
                .rsplit_once("instance ")
                .and_then(|(_, i)| i.strip_suffix(')'))
                .unwrap_or_else(|| panic!("no agent instance in {}: {agent:?}", d.display()))
                .to_owned();
            prefixes.push(format!("ate-{instance}-"));
        }
    }
    assert_eq!(prefixes.len(), 1 + faults.len());
    let out = Command::new("runsc")
        .args(["list", "-quiet"])
        .output()
        .unwrap();
    let left: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|id| prefixes.iter().any(|p| id.starts_with(p.as_str())))
        .map(String::from)
        .collect();
    assert!(left.is_empty(), "sandboxes left: {left:?}");
}
