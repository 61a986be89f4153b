//! The runner, end to end: the identity suite binary run as a user runs it,
//! against real sandboxes, with a deliberately broken probe where a failure
//! is wanted. Needs root and runsc (like the suites).
//!
//! The broken probes are our own static probe with one string patched in
//! the binary: `/run/ate` → `/run/atx` (reads the wrong path: the identity
//! trials must fail) and `/healthz` → `/healthx` (never healthy: the golden
//! wait never ends).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

mod common;
use common::identity_bin;
use std::time::{Duration, Instant};

/// One suite run at a time: each starts its own agent and sandboxes.
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Our static probe (built by the harness fixture) with `from` replaced by
/// `to` (same length) everywhere in the binary.
fn patched_probe(from: &[u8], to: &[u8], dir: &Path) -> PathBuf {
    assert_eq!(from.len(), to.len());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bins = rt
        .block_on(ate_harness::fixture::static_bins(
            &ate_harness::fixture::BuildOptions::default(),
        ))
        .unwrap();
    let mut bytes = std::fs::read(&bins.probe).unwrap();
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(
        n > 0,
        "{:?} not found in the probe binary",
        String::from_utf8_lossy(from)
    );
    let out = dir.join("ate-probe");
    std::fs::write(&out, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    out
}

struct Run {
    code: Option<i32>,
    stderr: String,
}

fn run_suite(args: &[&str], env: &[(&str, &str)], report: &Path) -> Run {
    let mut cmd = Command::new(identity_bin());
    cmd.args(args)
        .env("ATE_REPORT_DIR", report)
        .env_remove("CI")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn runsc_ids() -> Vec<String> {
    let out = Command::new("runsc")
        .args(["list", "-quiet"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The sandboxes runsc still lists of the agent a suite run reported (its
/// instance is in the fingerprint, `... (pid N, instance X)`; container
/// IDs are `ate-<instance>-<n>`), so that other runsc users on the machine
/// do not count.
fn runsc_ids_of_run(rep: &serde_json::Value) -> Vec<String> {
    let agent = rep["suites"][0]["fingerprint"]["agent"]
        .as_str()
        .unwrap_or_else(|| panic!("no agent in the fingerprint: {rep}"));
    let instance = agent
        .rsplit_once("instance ")
        .and_then(|(_, i)| i.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no instance in {agent:?}"));
    let prefix = format!("ate-{instance}-");
    runsc_ids()
        .into_iter()
        .filter(|id| id.starts_with(&prefix))
        .collect()
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display())),
    )
    .unwrap()
}

fn trial<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["suites"][0]["trials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no trial {name}"))
}

#[test]
fn list_starts_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Recording fakes: any call to runsc, the agent or cargo leaves a line.
    let marker = dir.path().join("called");
    let fake = dir.path().join("fake");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$0 $*\" >> {}\nexit 1\n",
            marker.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let report = dir.path().join("report");
    let out = Command::new(identity_bin())
        .args(["--list", "--format", "terse"])
        .env("ATE_RUNSC", &fake)
        .env("ATE_AGENT_BIN", &fake)
        .env("ATE_PROBE_BIN", &fake)
        .env("CARGO", &fake)
        .env("ATE_REPORT_DIR", &report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.contains(&"gate::own_identity_after_restore: test"),
        "{stdout}"
    );
    assert!(
        lines.iter().all(|l| l.ends_with(": test")),
        "stdout must hold only `name: test` lines: {stdout}"
    );
    assert!(
        !marker.exists(),
        "--list ran something: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
    assert!(!report.exists(), "--list wrote a report");
}

#[test]
fn unknown_option_is_named_with_the_valid_ones() {
    let out = Command::new(identity_bin())
        .args(["--bakend", "local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown option \"--bakend\"")
            && err.contains("--backend")
            && err.contains("--keep"),
        "{err}"
    );
}

/// Runs the whole identity suite with one of our probe variants (built
/// with our probe) as `--probe-bin`; `ci` sets CI=true (a skip fails).
/// Asserts exit 0; returns stdout, stderr and report.json.
fn run_with_probe(
    variant: impl Fn(&ate_harness::fixture::StaticBins) -> Option<PathBuf>,
    ci: bool,
) -> (String, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bins = rt
        .block_on(ate_harness::fixture::static_bins(
            &ate_harness::fixture::BuildOptions::default(),
        ))
        .unwrap();
    let probe = variant(&bins).expect("the probe variant is built with ours");
    let mut cmd = Command::new(identity_bin());
    cmd.args(["--probe-bin", probe.to_str().unwrap()])
        .env("ATE_REPORT_DIR", &report)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    if ci {
        cmd.env("CI", "true");
    } else {
        cmd.env_remove("CI");
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let rep = read_json(&report.join("report.json"));
    (stdout, stderr, rep)
}

/// With a probe that serves only `/whoami` and `/healthz` (upstream's
/// shape), every trial still runs and passes under CI=true (a skip would
/// fail the run): everything but `/whoami` is observed by the harness's
/// own checker inside the sandbox. (That a skip found at run time is
/// reported as ignored, never passed, is `ate-harness`'s
/// `suite::tests`, with a stub backend and a 404-ing probe.)
#[test]
fn minimal_probe_gets_every_trial() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (stdout, stderr, rep) = run_with_probe(|b| b.minimal_probe(), true);
    let trials = rep["suites"][0]["trials"].as_array().unwrap();
    assert!(trials.len() >= 10, "{}", trials.len());
    for t in trials {
        assert_eq!(t["verdict"], "pass", "{t}\n{stderr}");
    }
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or_else(|| panic!("no libtest summary: {stdout}"));
    assert!(
        summary.contains(&format!("{} passed; 0 failed; 0 ignored;", trials.len())),
        "{summary}"
    );
    // The observations came from the checker: the minimal probe has none
    // of the endpoints, and no trial asked it for one.
    let phases = |name: &str| -> Vec<String> {
        trial(&rep, name)["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    for (name, observation) in [
        ("mount::read_only", "checker: try-write in "),
        ("mount::directory_bind_not_env", "checker: mounts of "),
        ("mount::directory_bind_not_env", "checker: env of "),
        (
            "gate::restored_from_golden_not_booted",
            "checker: evidence of both actors",
        ),
        (
            "cycle::suspend_then_routed_request_resumes_own_identity",
            "checker: mark ",
        ),
        ("host::atomic_rewrite_is_never_torn", "checker: mounts of "),
    ] {
        let p = phases(name);
        assert!(
            p.iter().any(|x| x.starts_with(observation)),
            "{name}: {p:?}"
        );
        assert!(
            !p.iter().any(|x| x.starts_with("probe: ")),
            "{name} asked the probe: {p:?}"
        );
    }
    let left = runsc_ids_of_run(&rep);
    assert!(left.is_empty(), "sandboxes left: {left:?}");
}

/// The 2022 gVisor cannot checkpoint an epoll-based actor: a runsc that old
/// is refused before anything starts, naming the version found.
#[test]
fn runsc_older_than_20240729_is_refused_with_its_version() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("runsc");
    let marker = dir.path().join("called");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\necho 'runsc version 0.0~20221219.0'\necho 'spec: 1.0.2-dev'\n",
            marker.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let report = dir.path().join("report");
    let r = run_suite(&[], &[("ATE_RUNSC", fake.to_str().unwrap())], &report);
    assert_eq!(
        r.code,
        Some(0),
        "without CI a skip does not fail: {}",
        r.stderr
    );
    let rep = read_json(&report.join("report.json"));
    for t in rep["suites"][0]["trials"].as_array().unwrap() {
        assert_eq!(t["verdict"], "skip", "{t}");
        let m = t["message"].as_str().unwrap();
        assert!(
            m.contains("0.0~20221219.0") && m.contains("older than gVisor 20240729"),
            "{m}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "--version\n",
        "only the version was asked; nothing was run with the old runsc"
    );
}

/// An actor written like a real one (an epoll event loop: tokio + hyper)
/// is checkpointed and restored, and the whole suite passes with it:
/// every trial, none skipped.
#[test]
fn tokio_probe_passes_every_trial() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (stdout, _stderr, rep) = run_with_probe(|b| b.tokio_probe(), true);
    let trials = rep["suites"][0]["trials"].as_array().unwrap();
    assert!(trials.len() >= 10, "{}", trials.len());
    for t in trials {
        assert_eq!(t["verdict"], "pass", "{t}");
    }
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("test result:"))
        .unwrap();
    assert!(
        summary.contains(&format!("{} passed; 0 failed; 0 ignored;", trials.len())),
        "{summary}"
    );
    let left = runsc_ids_of_run(&rep);
    assert!(left.is_empty(), "sandboxes left: {left:?}");
}

#[test]
fn missing_prerequisite_skips_and_fails_under_ci() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let env = [("ATE_RUNSC", "/nonexistent/runsc")];
    let r = run_suite(&[], &env, &report);
    assert_eq!(
        r.code,
        Some(0),
        "without CI a skip does not fail the run: {}",
        r.stderr
    );
    let rep = read_json(&report.join("report.json"));
    let n = rep["suites"][0]["trials"].as_array().unwrap().len();
    assert!(n >= 10, "every trial is recorded: {n}");
    for t in rep["suites"][0]["trials"].as_array().unwrap() {
        assert_eq!(t["verdict"], "skip", "{t}");
        assert!(
            t["message"]
                .as_str()
                .unwrap()
                .contains("runsc not found (/nonexistent/runsc)"),
            "{t}"
        );
    }
    assert!(
        r.stderr
            .contains(&format!("0 passed, 0 failed, {n} skipped")),
        "{}",
        r.stderr
    );
    let r = run_suite(
        &[],
        &[("ATE_RUNSC", "/nonexistent/runsc"), ("CI", "true")],
        &report,
    );
    assert_ne!(r.code, Some(0), "under CI=true a skip fails the run");
    assert!(r.stderr.contains("skips fail this run"), "{}", r.stderr);
    assert_ne!(read_json(&report.join("report.json"))["verdict"], "pass");
}

#[test]
fn failing_trials_leave_reports_and_artifacts() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let probe = patched_probe(b"/run/ate", b"/run/atx", dir.path());
    let report = dir.path().join("report");
    let r = run_suite(&["--probe-bin", probe.to_str().unwrap()], &[], &report);
    assert_ne!(r.code, Some(0), "a failing trial must fail the run");

    let junit = std::fs::read_to_string(report.join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&junit).expect("junit.xml parses");
    let case = doc
        .descendants()
        .find(|n| {
            n.has_tag_name("testcase")
                && n.attribute("name") == Some("gate::own_identity_after_restore")
        })
        .expect("testcase for the gate");
    assert_eq!(case.attribute("classname"), Some("identity"));
    let failure = case
        .children()
        .find(|n| n.has_tag_name("failure"))
        .expect("the gate failed");
    assert!(
        failure.text().unwrap_or_default().contains("ID-3"),
        "{junit}"
    );

    let rep = read_json(&report.join("report.json"));
    let gate = trial(&rep, "gate::own_identity_after_restore");
    assert_eq!(gate["verdict"], "fail");
    assert!(
        gate["message"]
            .as_str()
            .unwrap()
            .contains("/run/ate/actor-id"),
        "{gate}"
    );
    let artifacts: Vec<String> = gate["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    for want in [
        "agent.log",
        "router.log",
        "probe-responses.json",
        ".config.json",
    ] {
        assert!(
            artifacts.iter().any(|a| a.ends_with(want)),
            "no {want} in {artifacts:?}"
        );
    }
    for a in &artifacts {
        assert!(report.join(a).is_file(), "artifact {a} listed but missing");
    }
    let router_log = std::fs::read_to_string(
        report.join(
            artifacts
                .iter()
                .find(|a| a.ends_with("router.log"))
                .unwrap(),
        ),
    )
    .unwrap();
    assert!(
        router_log.contains("/whoami"),
        "router log lines for the actor's Host: {router_log}"
    );
    let responses = std::fs::read_to_string(
        report.join(
            artifacts
                .iter()
                .find(|a| a.ends_with("probe-responses.json"))
                .unwrap(),
        ),
    )
    .unwrap();
    assert!(
        responses.contains("/run/atx/actor-id"),
        "the probe's answer, with its read error: {responses}"
    );

    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.starts_with("# Release gate: FAIL"),
        "{}",
        &md[..md.len().min(300)]
    );
    let id3 = md.lines().find(|l| l.starts_with("| ID-3 |")).unwrap();
    assert!(id3.to_lowercase().contains("fail"), "{id3}");
    // Nothing left behind.
    let instance_left = runsc_ids_of_run(&rep);
    assert!(
        instance_left.is_empty(),
        "sandboxes left: {instance_left:?}"
    );
}

#[test]
fn sigint_during_the_golden_wait_cleans_up_and_says_what() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Never healthy: the golden wait lasts until its 20 s deadline.
    let probe = patched_probe(b"/healthz", b"/healthx", dir.path());
    let report = dir.path().join("report");
    // Our own run ID: the agent records each sandbox under its state dir
    // before starting it, so the test knows which are this run's (other
    // runsc users may share the machine).
    let run = format!("sigint{}", std::process::id() % 1_000_000);
    let records = root().join("target/ate-state").join(&run).join("sandboxes");
    let child = Command::new(identity_bin())
        .args(["--probe-bin", probe.to_str().unwrap(), "--run-id", &run])
        .env("ATE_REPORT_DIR", &report)
        .env_remove("CI")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the golden actor's sandbox exists, then interrupt.
    let start = Instant::now();
    let golden = loop {
        let live = runsc_ids();
        let recorded = std::fs::read_dir(&records)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some(e.path().file_stem()?.to_str()?.to_owned()));
        if let Some(cid) = recorded.into_iter().find(|c| live.contains(c)) {
            break cid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the golden sandbox never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(500));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("SIGINT: stopped the local backend and removed its sandboxes [\"ate-"),
        "{stderr}"
    );
    // Container IDs are `ate-<agent instance>-<n>`: every one of this
    // run's agent is gone.
    let prefix = &golden[..=golden.rfind('-').unwrap()];
    let left: Vec<String> = runsc_ids()
        .into_iter()
        .filter(|id| id.starts_with(prefix))
        .collect();
    assert!(left.is_empty(), "sandboxes left after SIGINT: {left:?}");
    let rep = read_json(&report.join("report.json"));
    assert!(
        rep["suites"][0]["interrupted"]
            .as_str()
            .unwrap()
            .contains("SIGINT"),
        "{rep}"
    );
}

#[test]
fn keep_then_gc_leaves_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let probe = patched_probe(b"/run/ate", b"/run/atx", dir.path());
    let report = dir.path().join("report");
    let r = run_suite(
        &[
            "--probe-bin",
            probe.to_str().unwrap(),
            "--keep",
            "--exact",
            "format::exact_bytes_no_newline",
        ],
        &[],
        &report,
    );
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("--keep: left for inspection"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("remove them with: "), "{}", r.stderr);
    let rep = read_json(&report.join("report.json"));
    let kept = runsc_ids_of_run(&rep);
    assert!(!kept.is_empty(), "--keep kept no sandbox");
    assert!(!rep["suites"][0]["kept"].as_array().unwrap().is_empty());

    // A later run's automatic clean-up leaves kept runs alone...
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bins = rt
        .block_on(ate_harness::fixture::static_bins(
            &ate_harness::fixture::BuildOptions::default(),
        ))
        .unwrap();
    let state_root = root().join("target/ate-state");
    rt.block_on(ate_harness::backend::local::gc_stale_runs(
        &bins.agent,
        &state_root,
        false,
    ))
    .unwrap();
    assert!(
        kept.iter().all(|id| runsc_ids().contains(id)),
        "automatic gc removed a kept run"
    );
    // ...`ate-conformance gc` removes them, saying what it removed.
    let removed = rt
        .block_on(ate_harness::backend::local::gc_stale_runs(
            &bins.agent,
            &state_root,
            true,
        ))
        .unwrap();
    for id in &kept {
        assert!(
            removed.iter().any(|l| l.contains(id.as_str())),
            "gc did not report removing {id}: {removed:?}"
        );
    }
    let left: Vec<String> = runsc_ids()
        .into_iter()
        .filter(|id| kept.contains(id))
        .collect();
    assert!(left.is_empty(), "left after gc: {left:?}");
}
