//! Facts about the harness and the machine, for the report's environment
//! fingerprint.

use std::collections::BTreeMap;

/// Harness version and git commit, kernel, machine.
pub fn harness() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("harness_version".into(), env!("CARGO_PKG_VERSION").into());
    let root = crate::paths::workspace_root();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&root)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    m.insert(
        "git_commit".into(),
        commit.unwrap_or_else(|| "unknown (not a git checkout)".into()),
    );
    let u = rustix::system::uname();
    m.insert(
        "kernel".into(),
        format!(
            "{} {}",
            u.sysname().to_string_lossy(),
            u.release().to_string_lossy()
        ),
    );
    m.insert("machine".into(), u.machine().to_string_lossy().into_owned());
    m.insert(
        "cpus".into(),
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_default(),
    );
    m
}
