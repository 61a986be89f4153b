//! The adapter binary in front of the real runsc: a flag this runsc lacks
//! is dropped and logged, the rest reaches runsc; a missing config fails
//! naming the file; runsc's own listings are read right.

use std::path::Path;
use std::process::Command;

use ate_runsc_adapter::{supported, Config, Dropped};

const RUNSC: &str = "/usr/bin/runsc";

/// What runsc prints of its flags (on stderr, as Go's flag package does).
fn listing(args: &[&str]) -> String {
    let out = Command::new(RUNSC).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn place(dir: &Path, drop: &[&str]) -> std::path::PathBuf {
    let exe = dir.join(format!("runsc-{}", "0".repeat(64)));
    std::fs::copy(env!("CARGO_BIN_EXE_ate-runsc-adapter"), &exe).unwrap();
    let cfg = Config {
        runsc: RUNSC.into(),
        drop: drop.iter().map(|s| s.to_string()).collect(),
        log: dir.join("dropped.jsonl").display().to_string(),
    };
    std::fs::write(
        format!("{}.adapter.json", exe.display()),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    exe
}

#[test]
fn a_missing_flag_is_dropped_and_logged_and_runsc_runs() {
    assert!(
        Path::new(RUNSC).exists(),
        "{RUNSC} is needed (ci/setup installs it)"
    );
    let flags = listing(&["flags"]);
    assert!(
        supported(&flags, "root"),
        "`runsc flags` lists no -root:\n{flags}"
    );
    // A made-up flag stands for one this runsc lacks, so the test holds
    // for every runsc version.
    let made_up = "ate-no-such-flag";
    assert!(!supported(&flags, made_up));
    let tmp = tempfile::tempdir().unwrap();
    let exe = place(tmp.path(), &[made_up]);
    let out = Command::new(&exe)
        .args([&format!("-{made_up}"), "--version"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("runsc version"));
    let log = std::fs::read_to_string(tmp.path().join("dropped.jsonl")).unwrap();
    let lines: Vec<Dropped> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].dropped, vec![format!("-{made_up}")]);

    // Not configured: the flag reaches runsc, which refuses it, and no
    // line is logged.
    let exe = place(tmp.path(), &[]);
    let out = Command::new(&exe)
        .args([&format!("-{made_up}"), "--version"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("flag provided but not defined"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("dropped.jsonl")).unwrap(),
        log
    );
}

#[test]
fn a_missing_config_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("runsc-x");
    std::fs::copy(env!("CARGO_BIN_EXE_ate-runsc-adapter"), &exe).unwrap();
    let out = Command::new(&exe).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("runsc-x.adapter.json"), "{err}");
}

#[test]
fn runscs_listings_name_the_flags_ateom_relies_on() {
    let flags = listing(&["flags"]);
    assert!(
        supported(&flags, "root") && supported(&flags, "network"),
        "{flags}"
    );
    let help = listing(&["restore", "--help"]);
    assert!(
        supported(&help, "image-path") && supported(&help, "detach"),
        "{help}"
    );
}
