//! What the probe answers, as types (CONTRACT.md II). Fields beyond the
//! upstream `/whoami` shape are optional so another probe can stand in.

use std::collections::BTreeMap;

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

/// One entry of `/run/ate`.
#[derive(Debug, Clone, Deserialize)]
pub struct DirEntry {
    /// File name.
    pub name: String,
    /// `file`, `dir`, `symlink`, `other`.
    pub kind: String,
    /// Octal mode, e.g. `0644`.
    pub mode: String,
}

/// One mount at or under `/run/ate`, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, Deserialize)]
pub struct Mount {
    /// Mount point.
    pub mount_point: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Per-mount options (`ro`, ...).
    pub mount_options: String,
    /// Superblock options.
    #[serde(default)]
    pub super_options: String,
}

impl Mount {
    /// True when the per-mount options include `ro`.
    pub fn read_only(&self) -> bool {
        self.mount_options.split(',').any(|o| o == "ro")
    }
}

/// `GET /identity-dir`.
#[derive(Debug, Clone, Deserialize)]
pub struct IdentityDir {
    /// Entries of `/run/ate`.
    #[serde(default)]
    pub entries: Vec<DirEntry>,
    /// Listing error.
    #[serde(default)]
    pub entries_error: Option<String>,
    /// Mounts at or under `/run/ate`.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// mountinfo error.
    #[serde(default)]
    pub mountinfo_error: Option<String>,
}

/// One attempt of `POST /identity-dir/try-write`.
#[derive(Debug, Clone, Deserialize)]
pub struct WriteAttempt {
    /// `write-actor-id`, `create`, `unlink`, `rename`, `mkdir`.
    pub op: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// errno when it failed.
    pub errno: Option<i32>,
    /// Error text when it failed.
    pub error: Option<String>,
}

/// `POST /identity-dir/try-write`.
#[derive(Debug, Clone, Deserialize)]
pub struct TryWrite {
    /// Every attempt, in order.
    pub attempts: Vec<WriteAttempt>,
}

/// `GET /env`.
#[derive(Debug, Clone, Deserialize)]
pub struct Env {
    /// The process environment.
    pub env: BTreeMap<String, String>,
}

/// `GET|POST /counter`.
#[derive(Debug, Clone, Deserialize)]
pub struct Counter {
    /// In-memory counter value.
    pub counter: u64,
}

/// One distinct value seen by `/identity-watch`.
#[derive(Debug, Clone, Deserialize)]
pub struct WatchValue {
    /// The bytes read, lowercase hex.
    pub value_hex: String,
    /// How many reads returned it.
    pub count: u64,
}

/// `GET /identity-watch?ms=N`: the probe reads `actor-id` in a loop.
#[derive(Debug, Clone, Deserialize)]
pub struct IdentityWatch {
    /// Reads made (failed ones included).
    pub reads: u64,
    /// Distinct values read, in order of first appearance.
    pub distinct: Vec<WatchValue>,
    /// Reads whose value was not listed because `distinct` was full (our
    /// probe; 0 when absent).
    #[serde(default)]
    pub distinct_dropped: u64,
    /// Failed reads.
    pub errors: u64,
    /// Reads that returned no bytes.
    pub empty_reads: u64,
    /// The first read error.
    #[serde(default)]
    pub first_error: Option<String>,
}
