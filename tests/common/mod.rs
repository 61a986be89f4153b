//! What the root package's end-to-end tests share.

use std::path::PathBuf;

/// The identity suite's test binary, built by the same `cargo test` next to
/// the running test (the newest `identity-<hash>`). Run alone, a test that
/// uses it needs `--test identity` as well so that binary is fresh.
pub fn identity_bin() -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&deps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("identity-")
                && p.extension().is_none()
        })
        .map(|p| (p.metadata().unwrap().modified().unwrap(), p))
        .collect();
    found.sort();
    found
        .pop()
        .expect("the identity suite binary is built by `cargo test`")
        .1
}
