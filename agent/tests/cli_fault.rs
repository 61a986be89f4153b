//! `ate-refagent serve --fault NAME`: an unknown name is a usage error
//! (exit 2) that lists every valid fault mode, before anything starts.

use ate_refagent::fault::Fault;

#[test]
fn unknown_fault_is_a_usage_error_listing_the_valid_names() {
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ate-refagent"))
        .args(["serve", "--state-dir"])
        .arg(state.path().join("never-made"))
        .args(["--runsc", "/nonexistent/runsc", "--fault", "no-such-fault"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no-such-fault"), "{stderr}");
    for f in Fault::ALL {
        assert!(stderr.contains(f.name()), "{stderr} lacks {f}");
    }
    assert!(out.stdout.is_empty());
    assert!(!state.path().join("never-made").exists());
}

#[test]
fn help_lists_the_fault_modes() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ate-refagent"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for f in Fault::ALL {
        assert!(stdout.contains(f.name()), "{stdout} lacks {f}");
    }
}
