//! The identity suite binary with `--backend node`, as a platform developer
//! runs it, against the in-repo stand-in for upstream's atelet and
//! ateom-gvisor (`standin/`: the same flags, gRPC API with reflection, node
//! paths and network path, over real runsc; CI never builds or runs
//! upstream code). By hand, the same suite runs against upstream's own
//! binaries: `cargo test --test identity -- --backend node --atelet-bin A
//! --ateom-bin B` (README).
//!
//! Each test checks from outside that the run left nothing: the run's
//! directory is gone and no process it recorded (namespace holders, the
//! registry, atelet, each ateom) or any sandbox of its runsc state runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::identity_bin;

/// One node run at a time: each makes namespaces, five workers and
/// sandboxes; two at once would only compete for two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A binary of this workspace, built by the same `cargo test
/// --workspace --all-targets` next to the test binaries.
fn workspace_bin(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let dir = deps.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the workspace's binaries first (cargo test --workspace --all-targets builds them)",
        p.display()
    );
    p
}

/// The binaries under test: the stand-in's, unless `ATE_ATELET_BIN` and
/// `ATE_ATEOM_BIN` name others (upstream's, by hand: these tests then
/// check the real atelet).
fn under_test() -> (PathBuf, PathBuf) {
    match (
        std::env::var_os("ATE_ATELET_BIN"),
        std::env::var_os("ATE_ATEOM_BIN"),
    ) {
        (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => (a.into(), b.into()),
        _ => (
            workspace_bin("ate-standin-atelet"),
            workspace_bin("ate-standin-ateom"),
        ),
    }
}

fn stand_in() -> [String; 4] {
    let (atelet, ateom) = under_test();
    [
        "--atelet-bin".into(),
        atelet.display().to_string(),
        "--ateom-bin".into(),
        ateom.display().to_string(),
    ]
}

fn run_dir(run: &str) -> PathBuf {
    root().join("target/ate-state/node").join(run)
}

fn suite(run: &str, report: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(identity_bin());
    cmd.args(["--backend", "node", "--run-id", run])
        .args(stand_in())
        .args(extra)
        .env("ATE_REPORT_DIR", report)
        .env_remove("CI")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// Every process whose command line mentions `needle` (the run's ID is in
/// every worker's pod UID, template, actor and runsc root).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(needle).then(|| format!("{pid}: {cmd}"))
        })
        .collect()
}

/// The PIDs a run recorded, with their start times.
fn recorded(run: &str) -> Vec<(String, u32, u64)> {
    let Ok(b) = std::fs::read(run_dir(run).join("record.json")) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
    v["procs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["what"].as_str().unwrap_or_default().to_owned(),
                p["pid"].as_u64().unwrap_or(0) as u32,
                p["start"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

fn assert_nothing_left(run: &str, procs: &[(String, u32, u64)]) {
    let alive: Vec<_> = procs
        .iter()
        .filter(|(_, pid, start)| start_time(*pid) == Some(*start))
        .collect();
    assert!(
        alive.is_empty(),
        "processes of run {run} still alive: {alive:?}"
    );
    let left = processes_mentioning(run);
    assert!(
        left.is_empty(),
        "processes of run {run} still running: {left:?}"
    );
    assert!(
        !run_dir(run).exists(),
        "{} was not removed",
        run_dir(run).display()
    );
}

/// Waits until the run has recorded its atelet and the golden's sandbox
/// runs (a runsc state file in the golden's actor directory).
fn wait_until_golden_runs(run: &str, child: &mut std::process::Child) {
    let start = Instant::now();
    loop {
        let has_atelet = recorded(run).iter().any(|(w, ..)| w == "atelet");
        let actors = run_dir(run).join("node/var-lib-ateom-gvisor/actors");
        let golden_state = std::fs::read_dir(&actors)
            .into_iter()
            .flatten()
            .flatten()
            .any(|a| {
                a.file_name()
                    .to_string_lossy()
                    .contains(&format!("golden-{run}"))
                    && std::fs::read_dir(a.path().join("runsc-state"))
                        .into_iter()
                        .flatten()
                        .flatten()
                        .any(|f| f.path().extension().is_some_and(|e| e == "state"))
            });
        if has_atelet && golden_state {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the suite exited ({status}) before the golden ran");
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the golden never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_identity_suite_passes_against_the_stand_in_and_leaves_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let run = format!("nodeok{}", std::process::id() % 100_000);
    let out = suite(&run, &report, &[]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rep: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("suites/identity.json")).unwrap())
            .unwrap();
    let trials = rep["trials"].as_array().unwrap();
    let verdict = |name: &str| {
        trials
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["verdict"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("no trial {name} in {rep}"))
    };
    for t in trials {
        let name = t["name"].as_str().unwrap();
        if name == "host::atomic_rewrite_is_never_torn" {
            assert_eq!(verdict(name), "skip", "{t}");
            assert!(t.to_string().contains("no hook to rewrite it"), "{t}");
        } else {
            assert_eq!(verdict(name), "pass", "{name}: {t}\n{stdout}\n{stderr}");
        }
    }
    assert_eq!(trials.len(), 11, "{rep}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // The per-phase lines a developer reads.
    assert!(
        stderr.contains("node: up in") && stderr.contains("node: golden golden-"),
        "{stderr}"
    );
    // The fingerprint names the binaries under test, and the adapter's drops.
    let fp = rep["fingerprint"].to_string();
    let atelet = under_test().0;
    let atelet_name = atelet.file_name().unwrap().to_string_lossy();
    assert!(fp.contains(&*atelet_name) && fp.contains("sha256"), "{fp}");
    assert!(fp.contains("start -allow-connected-on-save x"), "{fp}");
    assert!(fp.contains("restore -background x"), "{fp}");
    assert_nothing_left(&run, &[]);
}

#[test]
fn without_the_binaries_every_trial_fails_naming_the_flag() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let out = Command::new(identity_bin())
        .args(["--backend", "node", "gate::own_identity_after_restore"])
        .env("ATE_REPORT_DIR", &report)
        .env_remove("CI")
        .env_remove("ATE_ATELET_BIN")
        .env_remove("ATE_ATEOM_BIN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("--atelet-bin PATH (or ATE_ATELET_BIN)"),
        "{all}"
    );
    assert!(all.contains("1 failed"), "{all}");
}

#[test]
fn sigint_mid_run_tears_the_node_down() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let run = format!("nodeint{}", std::process::id() % 100_000);
    let mut child = suite(&run, &report, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_golden_runs(&run, &mut child);
    let procs = recorded(&run);
    assert!(procs.len() >= 3, "{procs:?}");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert_nothing_left(&run, &procs);
}

#[test]
fn after_sigkill_the_next_run_removes_what_it_left_and_says_so() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let run = format!("nodekill{}", std::process::id() % 100_000);
    let mut child = suite(&run, &dir.path().join("r1"), &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_golden_runs(&run, &mut child);
    let procs = recorded(&run);
    child.kill().unwrap();
    child.wait().unwrap();
    // SIGKILL gave the run no chance: its atelet and ateoms still run.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !processes_mentioning(&run).is_empty(),
        "nothing of the killed run is left, so this test would prove nothing"
    );
    let next = format!("nodenext{}", std::process::id() % 100_000);
    let out = suite(
        &next,
        &dir.path().join("r2"),
        &["--exact", "format::exact_bytes_no_newline"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("gc: node run {run}: killed atelet")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("gc: node run {run}: removed")),
        "{stderr}"
    );
    assert_nothing_left(&run, &procs);
    assert_nothing_left(&next, &[]);
}
