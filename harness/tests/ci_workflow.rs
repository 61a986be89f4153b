//! Structure of the nightly workflow (`.github/workflows/nightly.yml`) and
//! behaviour of `ci/release-gate` before it reaches cargo.
//!
//! The workflow is parsed with a real YAML parser (serde_norway), so a
//! mis-indented step or a key in the wrong place fails here, not at 2 a.m.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::{Mapping, Value};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness has a parent dir")
        .to_path_buf()
}

fn workflow() -> Value {
    let path = workspace_root().join(".github/workflows/nightly.yml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn map<'a>(v: &'a Value, what: &str) -> &'a Mapping {
    v.as_mapping()
        .unwrap_or_else(|| panic!("{what} is not a mapping: {v:?}"))
}

fn get<'a>(v: &'a Value, key: &str, what: &str) -> &'a Value {
    map(v, what)
        .get(key)
        .unwrap_or_else(|| panic!("{what} has no key `{key}`"))
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v:?}"))
}

/// The `on:` mapping. YAML 1.1 parsers read a bare `on` key as boolean true.
fn triggers(wf: &Value) -> &Value {
    let m = map(wf, "workflow");
    m.get("on")
        .or_else(|| m.get(Value::Bool(true)))
        .expect("workflow has no `on` key (neither the string \"on\" nor YAML 1.1 `true`)")
}

fn job<'a>(wf: &'a Value, name: &str) -> &'a Value {
    get(get(wf, "jobs", "workflow"), name, "jobs")
}

fn steps<'a>(wf: &'a Value, job_name: &str) -> &'a [Value] {
    get(job(wf, job_name), "steps", job_name)
        .as_sequence()
        .unwrap_or_else(|| panic!("job {job_name}: steps is not a sequence"))
}

fn step_name(step: &Value) -> &str {
    step.get("name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
}

fn step_str<'a>(step: &'a Value, key: &str) -> Option<&'a str> {
    step.get(key).and_then(Value::as_str)
}

/// An `if:` condition without the optional `${{ }}` wrapper and spaces.
fn condition(step: &Value) -> Option<String> {
    let raw = step_str(step, "if")?.trim();
    let inner = raw
        .strip_prefix("${{")
        .and_then(|s| s.strip_suffix("}}"))
        .unwrap_or(raw);
    Some(inner.chars().filter(|c| !c.is_whitespace()).collect())
}

fn is_always(step: &Value) -> bool {
    condition(step).as_deref() == Some("always()")
}

fn all_jobs(wf: &Value) -> Vec<(String, &Value)> {
    map(get(wf, "jobs", "workflow"), "jobs")
        .iter()
        .map(|(k, v)| (str_of(k, "job id").to_string(), v))
        .collect()
}

#[test]
fn triggers_are_nightly_schedule_and_manual_dispatch() {
    let wf = workflow();
    let on = triggers(&wf);

    let schedule = get(on, "schedule", "on")
        .as_sequence()
        .expect("on.schedule is a sequence");
    assert!(!schedule.is_empty(), "on.schedule is empty");
    for entry in schedule {
        let cron = str_of(get(entry, "cron", "schedule entry"), "cron");
        assert_eq!(
            cron.split_whitespace().count(),
            5,
            "cron `{cron}` does not have 5 fields"
        );
    }

    let dispatch = get(on, "workflow_dispatch", "on");
    let inputs = map(get(dispatch, "inputs", "workflow_dispatch"), "inputs");
    assert!(
        inputs
            .keys()
            .filter_map(Value::as_str)
            .any(|k| k.contains("substrate")),
        "workflow_dispatch has no substrate ref input: {inputs:?}"
    );
}

#[test]
fn permissions_and_concurrency() {
    let wf = workflow();
    let perms = get(&wf, "permissions", "workflow");
    assert_eq!(
        str_of(
            get(perms, "contents", "permissions"),
            "permissions.contents"
        ),
        "read"
    );
    let conc = get(&wf, "concurrency", "workflow");
    assert!(
        !str_of(get(conc, "group", "concurrency"), "concurrency.group").is_empty(),
        "empty concurrency group"
    );
    assert_eq!(
        get(conc, "cancel-in-progress", "concurrency").as_bool(),
        Some(false),
        "a running nightly must not be cancelled by the next one"
    );
}

#[test]
fn jobs_have_runner_timeout_and_named_steps() {
    let wf = workflow();
    for name in ["local", "kind"] {
        let j = job(&wf, name);
        assert!(
            !str_of(get(j, "runs-on", name), "runs-on").is_empty(),
            "job {name}: empty runs-on"
        );
        let t = get(j, "timeout-minutes", name)
            .as_u64()
            .unwrap_or_else(|| panic!("job {name}: timeout-minutes is not a positive integer"));
        assert!(t > 0 && t <= 360, "job {name}: timeout-minutes {t}");
        let steps = steps(&wf, name);
        assert!(!steps.is_empty(), "job {name} has no steps");
        for (i, step) in steps.iter().enumerate() {
            let n = step_str(step, "name")
                .unwrap_or_else(|| panic!("job {name}: step {i} has no name: {step:?}"));
            assert!(
                !n.trim().is_empty(),
                "job {name}: step {i} has an empty name"
            );
            assert!(
                step.get("run").is_some() != step.get("uses").is_some(),
                "job {name}: step `{n}` must have exactly one of run/uses"
            );
        }
    }
}

#[test]
fn uploads_always_carry_the_report() {
    let wf = workflow();
    let mut uploads = 0;
    for (job_name, _) in all_jobs(&wf) {
        let mut job_uploads = 0;
        for step in steps(&wf, &job_name) {
            let Some(uses) = step_str(step, "uses") else {
                continue;
            };
            if !uses.starts_with("actions/upload-artifact@") {
                continue;
            }
            job_uploads += 1;
            let n = step_name(step);
            assert!(
                is_always(step),
                "job {job_name}: upload `{n}` lacks `if: always()`"
            );
            let with = get(step, "with", n);
            let paths: Vec<&str> = str_of(get(with, "path", n), "with.path")
                .lines()
                .map(|l| l.trim().trim_end_matches('/'))
                .filter(|l| !l.is_empty())
                .collect();
            for wanted in ["junit.xml", "report.md", "report.json", "artifacts"] {
                assert!(
                    paths.iter().any(|p| p.rsplit('/').next() == Some(wanted)),
                    "job {job_name}: upload `{n}` does not upload {wanted}: {paths:?}"
                );
            }
        }
        assert!(job_uploads > 0, "job {job_name} uploads nothing");
        uploads += job_uploads;
    }
    assert!(uploads >= 2);
}

#[test]
fn report_dir_is_the_uploaded_dir() {
    let wf = workflow();
    for name in ["local", "kind"] {
        let env = get(job(&wf, name), "env", name);
        let dir = str_of(get(env, "ATE_REPORT_DIR", "env"), "ATE_REPORT_DIR");
        assert_eq!(
            dir, "${{ github.workspace }}/ate-report",
            "job {name}: ATE_REPORT_DIR must be the dir the upload step names"
        );
    }
}

#[test]
fn every_job_runs_the_release_gate() {
    let wf = workflow();
    for name in ["local", "kind"] {
        let gate = steps(&wf, name)
            .iter()
            .find(|s| step_str(s, "run").is_some_and(|r| r.contains("ci/release-gate")))
            .unwrap_or_else(|| panic!("job {name} never runs ci/release-gate"));
        // It must still run (and explain) when the suites failed.
        let cond = condition(gate).unwrap_or_default();
        assert!(
            cond == "!cancelled()" || cond == "always()",
            "job {name}: release gate step has `if: {cond}`"
        );
    }
}

#[test]
fn local_job_runs_ci_conformance_as_root() {
    let wf = workflow();
    let run = steps(&wf, "local")
        .iter()
        .filter_map(|s| step_str(s, "run"))
        .find(|r| r.contains("ci/conformance"))
        .expect("local job never runs ci/conformance");
    assert!(
        run.contains("sudo -E"),
        "ci/conformance must run with sudo -E: {run}"
    );
    assert!(
        steps(&wf, "local").iter().any(|s| step_str(s, "run")
            .is_some_and(|r| r.contains("GITHUB_STEP_SUMMARY") && r.contains("report.md"))
            && is_always(s)),
        "local job does not always publish report.md to the step summary"
    );
}

#[test]
fn kind_job_shape() {
    let wf = workflow();
    let steps = steps(&wf, "kind");
    let runs: Vec<&str> = steps.iter().filter_map(|s| step_str(s, "run")).collect();
    let any_run = |needle: &str| runs.iter().any(|r| r.contains(needle));

    // The same steps as upstream CI (agent-substrate/substrate
    // .github/workflows/pr-workflow.yaml:88-91 at 86e138f6): the checkout's
    // create script, then its kind install of the whole system, both run in
    // the checkout; never the `hack/install-kind.sh` that does not exist.
    let in_substrate = |needle: &str| {
        steps.iter().position(|s| {
            step_str(s, "run").is_some_and(|r| r.trim() == needle)
                && step_str(s, "working-directory") == Some("substrate")
        })
    };
    let create = in_substrate("hack/create-kind-cluster.sh")
        .expect("kind job does not run substrate's hack/create-kind-cluster.sh in substrate/");
    let install = in_substrate("hack/install-ate-kind.sh --deploy-ate-system --auth-mode=mtls")
        .expect("kind job does not run hack/install-ate-kind.sh --deploy-ate-system in substrate/");
    assert!(
        create < install,
        "the install runs before the cluster exists"
    );
    assert!(
        !any_run("install-kind.sh"),
        "hack/install-kind.sh does not exist upstream"
    );
    assert_eq!(
        get(&wf, "env", "workflow")
            .get("KIND_VERSION")
            .and_then(Value::as_str),
        Some("v0.32.0"),
        "kind is not upstream's pin (hack/tools/kind/go.mod)"
    );
    assert!(
        steps.iter().any(|s| step_str(s, "uses")
            .is_some_and(|u| u.starts_with("actions/checkout@"))
            && s.get("with")
                .and_then(|w| w.get("repository"))
                .and_then(Value::as_str)
                == Some("agent-substrate/substrate")
            && s.get("with")
                .and_then(|w| w.get("path"))
                .and_then(Value::as_str)
                == Some("substrate")),
        "substrate is not checked out into substrate/"
    );
    assert!(
        steps
            .iter()
            .any(|s| step_str(s, "uses").is_some_and(|u| u.starts_with("actions/setup-go@"))),
        "Go is not installed with actions/setup-go"
    );
    // Tools are pinned: `go install MODULE@${VAR}` with VAR a vX.Y.Z in the
    // workflow env, or a literal @vX.Y.Z.
    let wf_env = get(&wf, "env", "workflow");
    let is_version = |v: &str| {
        v.strip_prefix('v').is_some_and(|r| {
            r.split('.').count() == 3
                && r.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    for (module, var) in [
        ("sigs.k8s.io/kind", "KIND_VERSION"),
        ("github.com/google/ko", "KO_VERSION"),
    ] {
        let by_var = any_run(&format!("go install \"{module}@${{{var}}}\""))
            && wf_env
                .get(var)
                .and_then(Value::as_str)
                .is_some_and(is_version);
        let literal = runs.iter().any(|r| {
            r.lines().any(|l| {
                l.trim()
                    .strip_prefix(&format!("go install {module}@"))
                    .is_some_and(is_version)
            })
        });
        assert!(
            by_var || literal,
            "{module} is not installed at a pinned version"
        );
    }
    assert!(
        wf_env
            .get("KUBECTL_VERSION")
            .and_then(Value::as_str)
            .is_some_and(is_version)
            && any_run("${KUBECTL_VERSION}"),
        "kubectl is not pinned"
    );

    let is_run = |r: &&&str| r.contains("ate-conformance") && r.contains(" run");
    let suite_run_at = runs
        .iter()
        .position(|r| is_run(&r) && !r.contains("--dry-run"))
        .expect("kind job never runs `ate-conformance run`");
    let suite_run = runs[suite_run_at];
    // The plan is printed first (it runs nothing), so a failure shows
    // what was about to happen.
    let dry_run_at = runs
        .iter()
        .position(|r| is_run(&r) && r.contains("--dry-run") && r.contains("--backend kind"))
        .expect("kind job does not print the plan with --dry-run");
    assert!(dry_run_at < suite_run_at, "the dry run comes after the run");
    let suite_step = steps
        .iter()
        .position(|s| step_str(s, "run") == Some(suite_run))
        .unwrap();
    assert!(install < suite_step, "the suites run before the install");
    for needle in [
        "--backend kind",
        "--report-dir",
        "ATE_SUBSTRATE_ROOT",
        "KUBECTL_CONTEXT=kind-kind",
        // The job declares its waivers: under CI=true only an unwaived skip fails.
        "--waivers ci/waivers/kind.txt",
    ] {
        assert!(
            suite_run.contains(needle),
            "suite run lacks `{needle}`: {suite_run}"
        );
    }

    // The waivers file names contract statements, each with a reason.
    let waivers = std::fs::read_to_string(workspace_root().join("ci/waivers/kind.txt"))
        .expect("ci/waivers/kind.txt");
    let declared: Vec<&str> = waivers
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(!declared.is_empty(), "no waiver declared");
    for l in declared {
        let (id, reason) = l.split_once(':').expect("`ID-n: reason`");
        assert!(id.starts_with("ID-") && !reason.trim().is_empty(), "{l}");
    }

    let collect = steps
        .iter()
        .find(|s| step_str(s, "run").is_some_and(|r| r.contains("kind export logs")))
        .expect("kind job does not collect cluster state");
    assert_eq!(condition(collect).as_deref(), Some("failure()"));
    let c = step_str(collect, "run").unwrap();
    for needle in ["get all -A", "describe pods -n ate-system", "get events -A"] {
        assert!(c.contains(needle), "cluster state lacks `kubectl {needle}`");
    }
    let upload_pos = steps
        .iter()
        .position(|s| {
            step_str(s, "uses").is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("kind job uploads nothing");
    let collect_pos = steps.iter().position(|s| std::ptr::eq(s, collect)).unwrap();
    assert!(
        collect_pos < upload_pos,
        "cluster state is collected after the upload"
    );
    let upload_paths = str_of(
        get(get(&steps[upload_pos], "with", "upload"), "path", "with"),
        "path",
    );
    assert!(
        upload_paths.contains("cluster-state"),
        "cluster state is not uploaded"
    );

    let delete = steps
        .iter()
        .position(|s| step_str(s, "run").is_some_and(|r| r.contains("kind delete cluster")))
        .expect("kind job never deletes the cluster");
    assert!(
        is_always(&steps[delete]),
        "cluster deletion lacks `if: always()`"
    );
    assert_eq!(
        delete,
        steps.len() - 1,
        "cluster deletion must be the last step"
    );
}

/// `sh -c "..."`, `bash -ec '...'` and the like: a command string handed to
/// a shell inside a step, instead of the step's own script.
fn shell_dash_c(run: &str) -> Option<String> {
    let tokens: Vec<&str> = run.split_whitespace().collect();
    tokens.windows(2).find_map(|w| {
        let prog = w[0].rsplit('/').next().unwrap_or(w[0]);
        let is_shell = matches!(prog, "sh" | "bash" | "dash" | "zsh");
        let flag = w[1];
        let is_c = flag.starts_with('-') && !flag.starts_with("--") && flag[1..].contains('c');
        (is_shell && is_c).then(|| format!("{} {}", w[0], w[1]))
    })
}

#[test]
fn no_step_hands_a_command_string_to_a_shell() {
    assert!(shell_dash_c("sudo bash -c 'x'").is_some());
    assert!(shell_dash_c("/bin/sh -ec x").is_some());
    assert!(shell_dash_c("sudo -E bash ci/conformance").is_none());
    let wf = workflow();
    for (job_name, _) in all_jobs(&wf) {
        for step in steps(&wf, &job_name) {
            if let Some(run) = step_str(step, "run") {
                if let Some(hit) = shell_dash_c(run) {
                    panic!(
                        "job {job_name}: step `{}` runs `{hit} ...`",
                        step_name(step)
                    );
                }
            }
        }
    }
}

fn release_gate() -> PathBuf {
    workspace_root().join("ci/release-gate")
}

#[test]
fn release_gate_is_an_executable_bash_script() {
    let path = release_gate();
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(meta.is_file());
    assert!(
        meta.permissions().mode() & 0o111 != 0,
        "{} is not executable",
        path.display()
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first == "#!/usr/bin/env bash" || first == "#!/bin/bash",
        "{} starts with `{first}`, not a bash shebang",
        path.display()
    );
    assert!(text.contains("set -euo pipefail"));
    let out = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("run bash -n");
    assert!(
        out.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn release_gate_rejects_a_missing_report_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-report");
    let out = Command::new(release_gate())
        .arg(&missing)
        .output()
        .expect("run ci/release-gate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit 0 on a missing dir; stderr: {stderr}"
    );
    assert!(
        stderr.contains(missing.to_str().unwrap()),
        "message does not name {}: {stderr}",
        missing.display()
    );
    assert!(
        stderr.contains("ci/conformance"),
        "message does not say how to produce it: {stderr}"
    );
}

#[test]
fn release_gate_rejects_a_dir_without_report_json() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(release_gate())
        .arg(tmp.path())
        .output()
        .expect("run ci/release-gate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit 0 without report.json; stderr: {stderr}"
    );
    assert!(
        stderr.contains("report.json"),
        "message does not name report.json: {stderr}"
    );
}
