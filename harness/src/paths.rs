//! Where the harness keeps things in the workspace: every `target/ate-*`
//! directory has its name here and nowhere else.

use std::path::{Path, PathBuf};

/// The workspace this crate was compiled in (where `target/` lives).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// `fixtures/` of the workspace.
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("fixtures")
}

/// The default report directory: `target/ate-report`.
pub fn report_dir() -> PathBuf {
    workspace_root().join("target").join("ate-report")
}

/// Parent of every local run's agent state dir: `target/ate-state`.
pub fn state_root() -> PathBuf {
    workspace_root().join("target").join("ate-state")
}

/// Where kind runs keep their records (what each made, for `gc`):
/// `target/ate-state/kind`.
pub fn kind_state_dir() -> PathBuf {
    state_root().join("kind")
}

/// The static probe and agent build, apart from the normal target dir:
/// `target/ate-static`.
pub fn static_target_dir() -> PathBuf {
    workspace_root().join("target").join("ate-static")
}

/// The bench's work and output: `target/ate-bench`.
pub fn bench_dir() -> PathBuf {
    workspace_root().join("target").join("ate-bench")
}
