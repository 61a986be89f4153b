//! The static-binary checks of `fixture`, on files this machine has.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ate_harness::fixture::{
    elf_linkage, static_bins, BinOverride, BuildOptions, FixtureError, Linkage, StaticBins,
};

const BUSYBOX: &str = "/usr/bin/busybox";

/// Options that never build: a build would fail at once on this cargo. The
/// checker is always given (busybox).
fn no_build(probe: Option<&Path>, agent: Option<&Path>) -> BuildOptions {
    let given = |path: Option<&Path>, origin: &str| {
        path.map(|path| BinOverride {
            path: path.to_owned(),
            origin: origin.to_owned(),
        })
    };
    BuildOptions {
        probe_bin: given(probe, "ATE_PROBE_BIN"),
        agent_bin: given(agent, "ATE_AGENT_BIN"),
        checker_bin: given(Some(Path::new(BUSYBOX)), "ATE_CHECKER_BIN"),
        cargo: "/nonexistent-ate/cargo".into(),
        ..BuildOptions::from_env()
    }
}

#[test]
fn ls_is_dynamic() {
    let linkage = elf_linkage(Path::new("/bin/ls")).unwrap();
    let Linkage::Dynamic { interpreter } = linkage else {
        panic!("/bin/ls reported static")
    };
    assert!(interpreter.contains("ld-linux"), "{interpreter}");
}

#[test]
fn busybox_static_is_static() {
    assert_eq!(elf_linkage(Path::new(BUSYBOX)).unwrap(), Linkage::Static);
}

#[test]
fn non_elf_files_are_rejected() {
    let err = elf_linkage(Path::new("/etc/passwd")).unwrap_err();
    assert!(matches!(err, FixtureError::NotElf { .. }), "{err:?}");
    let empty = tempfile::NamedTempFile::new().unwrap();
    let err = elf_linkage(empty.path()).unwrap_err();
    assert!(matches!(err, FixtureError::NotElf { .. }), "{err:?}");
    let err = elf_linkage(Path::new("/nonexistent-ate")).unwrap_err();
    assert!(matches!(err, FixtureError::Read { .. }), "{err:?}");
}

#[tokio::test]
async fn valid_overrides_are_used_as_is() {
    let busybox = Path::new(BUSYBOX);
    let bins = static_bins(&no_build(Some(busybox), Some(busybox)))
        .await
        .unwrap();
    assert_eq!(
        bins,
        StaticBins {
            probe: busybox.into(),
            agent: busybox.into(),
            checker: busybox.into(),
        }
    );
}

#[tokio::test]
async fn missing_override_names_the_variable() {
    let opts = no_build(
        Some(Path::new("/nonexistent-ate/probe")),
        Some(Path::new(BUSYBOX)),
    );
    let err = static_bins(&opts).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "ATE_PROBE_BIN is set to `/nonexistent-ate/probe`, which does not exist"
    );
}

#[tokio::test]
async fn unusable_overrides_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("probe");
    std::fs::copy(BUSYBOX, &not_executable).unwrap();
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let cases: [(PathBuf, &str); 4] = [
        (
            "/bin/ls".into(),
            "which is dynamically linked (it needs the loader `/lib64/ld-linux",
        ),
        (dir.path().into(), "which is not a regular file"),
        (not_executable, "which is not executable"),
        (
            script,
            "which is not an ELF64 little-endian executable: no ELF magic",
        ),
    ];
    for (path, expected) in cases {
        let err = static_bins(&no_build(Some(Path::new(BUSYBOX)), Some(&path)))
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("ATE_AGENT_BIN is set to `"),
            "{message}"
        );
        assert!(message.contains(expected), "{message}");
    }
}

#[tokio::test]
async fn a_build_failure_is_reported() {
    // Only the agent is missing, so a build is attempted, with this cargo.
    let err = static_bins(&no_build(Some(Path::new(BUSYBOX)), None))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "building the static probe, agent and checker failed"
    );
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(
        source,
        "command not found: `/nonexistent-ate/cargo` (install it with: rustup toolchain install stable)"
    );
}

/// Builds both for real (a minute or more the first time).
#[tokio::test]
#[ignore = "slow: runs the full static cargo build"]
async fn builds_static_probe_and_agent() {
    let opts = BuildOptions {
        probe_bin: None,
        agent_bin: None,
        checker_bin: None,
        ..BuildOptions::from_env()
    };
    let bins = static_bins(&opts).await.unwrap();
    for bin in [&bins.probe, &bins.agent, &bins.checker] {
        assert!(bin.starts_with(&opts.target_dir), "{}", bin.display());
        assert_eq!(
            elf_linkage(bin).unwrap(),
            Linkage::Static,
            "{}",
            bin.display()
        );
    }
    assert!(opts.target_dir.join(".ate-build.lock").is_file());
}
