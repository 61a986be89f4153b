//! What the probe answers, as types (CONTRACT.md II). Fields beyond the
//! upstream `/whoami` shape are optional so another probe can stand in.
//!
//! The answers of `/identity-dir`, `/identity-dir/try-write`, `/env` and
//! `/identity-watch` have the shapes of the harness's own checker's output
//! and are read as its types (re-exported here), so a trial handles one
//! type whichever of the two observed the sandbox.

pub use ate_checker::{
    DirEntry, Env, IdentityDir, IdentityWatch, Mount, TryWrite, WatchValue, WriteAttempt,
};
use serde::Deserialize;

/// `GET /whoami`.
#[derive(Debug, Clone, Deserialize)]
pub struct Whoami {
    /// Contents of `/run/ate/actor-id` (lossy UTF-8), or "" on error.
    pub file: String,
    /// The sandbox's hostname.
    #[serde(default)]
    pub hostname: String,
    /// Read error text; only present when the read failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Exact bytes, lowercase hex (our probe).
    #[serde(default)]
    pub file_hex: Option<String>,
    /// Byte length (our probe).
    #[serde(default)]
    pub file_len: Option<u64>,
}

impl Whoami {
    /// The exact bytes read: from `file_hex` when the probe gives it, else
    /// the `file` string's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match &self.file_hex {
            Some(h) => unhex(h).unwrap_or_else(|| self.file.as_bytes().to_vec()),
            None => self.file.as_bytes().to_vec(),
        }
    }
}

/// Decodes lowercase/uppercase hex; `None` if malformed.
pub fn unhex(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `GET /snapshot`: captured once at process start.
#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    /// Random nonce from process start.
    pub nonce: String,
    /// The identity the process read at start.
    pub identity_at_start: String,
    /// Read error at start, if any.
    #[serde(default)]
    pub identity_at_start_error: Option<String>,
}

/// `GET|POST /counter`.
#[derive(Debug, Clone, Deserialize)]
pub struct Counter {
    /// In-memory counter value.
    pub counter: u64,
}
