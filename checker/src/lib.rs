//! The harness's own checker, run inside an actor's sandbox through the
//! runtime (`runsc exec <cid> /.ate/ate-check <subcommand>`), so that every
//! part of the identity contract except the `/whoami` answer is observed by
//! code the harness owns, whatever the actor's program serves (a probe with
//! only `/whoami` and `/healthz` gets every trial).
//!
//! This library is the JSON the `ate-check` binary prints, one object per
//! subcommand, and the observations that fill it. The harness and the agent
//! parse exactly these types. Field names match our probe's endpoints
//! (`GET /identity-dir`, `POST /identity-dir/try-write`, `GET /env`,
//! `GET /identity-watch`), so the same types read the probe's answers where
//! a backend offers no way into the sandbox.
//!
//! **Invariants.** An observation never fails as a whole: what could not be
//! read is an `*_error` field next to what could, so the binary always
//! prints one object and exits 0 (a usage error exits 2). The checker
//! changes nothing in the sandbox except what `try-write` attempts inside
//! the identity directory and the token `mark` plants in
//! [`TOKEN_FILE`], a memory-backed file outside the actor's view of its
//! identity.
//!
//! Measured by hand on runsc 0.0~20240729 (2026-12-02; one golden run +
//! checkpoint, two restores with different `/run/ate` binds, one cold boot
//! of the same bundle, one own-snapshot cycle):
//! - an exec'd process shares the app's mount and PID namespaces: the app
//!   is PID 1, `/proc/self/mountinfo` shows the app's `/run/ate` bind (9p,
//!   `ro`), `/proc/1/environ` is readable; `readlink /proc/1/exe` is
//!   refused, so helpers are also told by `argv[0]`;
//! - a file in `/dev/shm` (tmpfs, sentry memory) planted in the golden
//!   before the checkpoint is there in both restores, and a token planted
//!   before an actor's own checkpoint is there after its restore; a cold
//!   boot has none;
//! - `boot_id` is the golden's in every restore and a new one at a cold
//!   boot; PID (1) and start time (3 ticks) are the golden's too, but a
//!   cold boot gives PID 1 and 4 ticks, so they corroborate, never prove;
//! - one `runsc exec … ate-check evidence` takes 30-70 ms (10 runs).

pub mod mountinfo;
pub mod observe;
pub mod procfs;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The binary's file name, next to the agent's in its helper directory.
pub const BIN_NAME: &str = "ate-check";
/// The identity directory inside the sandbox (ID-1).
pub const IDENTITY_DIR: &str = "/run/ate";
/// The identity file's name.
pub const ACTOR_ID_FILE: &str = "actor-id";
/// Where `mark` plants its token: tmpfs, so it lives in the sandbox's
/// memory and is saved with it by a checkpoint.
pub const TOKEN_FILE: &str = "/dev/shm/.ate-check-token";
/// Bounds of `watch --ms N`.
pub const WATCH_MS: std::ops::RangeInclusive<u64> = 1..=10_000;
/// At most this many distinct values are listed by `watch`.
pub const WATCH_MAX_DISTINCT: usize = 1024;
/// Longest token `mark` takes.
pub const TOKEN_MAX_LEN: usize = 128;

/// One entry of the identity directory (`lstat`, never followed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// File name.
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    /// Octal permission bits, e.g. `0644`.
    pub mode: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: u64,
    /// `lstat` error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One mount at or under the identity directory, from
/// `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Mount point (escapes decoded).
    pub mount_point: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Per-mount options (`ro,nosuid,...`).
    pub mount_options: String,
    /// Superblock options.
    #[serde(default)]
    pub super_options: String,
    /// Mount source.
    #[serde(default)]
    pub source: String,
    /// Root of the mount within its filesystem.
    #[serde(default)]
    pub root: String,
}

impl Mount {
    /// True when the per-mount options include `ro`.
    pub fn read_only(&self) -> bool {
        self.mount_options.split(',').any(|o| o == "ro")
    }
}

/// `ate-check mounts` (and the probe's `GET /identity-dir`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityDir {
    /// The directory looked at.
    #[serde(default)]
    pub path: String,
    /// Its entries, sorted by name.
    #[serde(default)]
    pub entries: Vec<DirEntry>,
    /// Why it could not be listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_error: Option<String>,
    /// Mounts at or under it.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Why mountinfo could not be read or parsed (the first bad line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountinfo_error: Option<String>,
}

/// One attempt to change the identity directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteAttempt {
    /// `write-actor-id`, `create`, `unlink`, `rename` or `mkdir`.
    pub op: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// errno when it failed.
    #[serde(default)]
    pub errno: Option<i32>,
    /// Error text when it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// `ate-check try-write` (and the probe's `POST /identity-dir/try-write`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TryWrite {
    /// Every attempt, in order.
    pub attempts: Vec<WriteAttempt>,
}

/// `ate-check env`: the environment of the actor's process (the probe's
/// `GET /env` has only `env`, its own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Env {
    /// The PID (in the sandbox) whose environment this is.
    #[serde(default)]
    pub pid: Option<u32>,
    /// `NAME` → value (lossy UTF-8).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Why the actor's process or its environment could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One distinct value `watch` read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchValue {
    /// The bytes, lowercase hex.
    pub value_hex: String,
    /// How many reads returned them.
    pub count: u64,
}

/// `ate-check watch --ms N` (and the probe's `GET /identity-watch?ms=N`):
/// `actor-id` read in a tight loop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityWatch {
    /// Reads made, failed ones included.
    pub reads: u64,
    /// Distinct values, in order of first appearance.
    pub distinct: Vec<WatchValue>,
    /// Reads not listed because `distinct` was full.
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

/// The actor's process, as `/proc` shows it inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorProcess {
    /// PID in the container's PID namespace.
    pub pid: u32,
    /// `comm` (field 2 of `/proc/<pid>/stat`).
    pub comm: String,
    /// Start time in clock ticks after the sandbox kernel's boot (field 22).
    pub start_ticks: u64,
    /// `/proc/<pid>/exe`, when readable (runsc 20240729 refuses it for
    /// another process).
    #[serde(default)]
    pub exe: Option<String>,
    /// `argv[0]` from `/proc/<pid>/cmdline`.
    #[serde(default)]
    pub argv0: Option<String>,
}

/// `ate-check evidence` and `ate-check mark --token T`: what says which
/// process image an actor runs. A restore carries its image's values
/// (token, PID, start time, `boot_id`); a cold boot has no token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The actor's process.
    #[serde(default)]
    pub actor: Option<ActorProcess>,
    /// Why it was not found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_error: Option<String>,
    /// The token planted in [`TOKEN_FILE`] (`None`: no token there).
    #[serde(default)]
    pub token: Option<String>,
    /// Why the token could not be read or planted (a missing file is no
    /// error: `token` is `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_error: Option<String>,
    /// `/proc/sys/kernel/random/boot_id` of the sandbox kernel.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Why `boot_id` could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id_error: Option<String>,
}

/// A subcommand and its arguments, as parsed from argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `mounts`.
    Mounts,
    /// `try-write`.
    TryWrite,
    /// `env`.
    Env,
    /// `watch --ms N`.
    Watch {
        /// How long to read, in ms.
        ms: u64,
    },
    /// `evidence`.
    Evidence,
    /// `mark --token T`.
    Mark {
        /// The token to plant.
        token: String,
    },
}

/// What `ate-check` says about argv it cannot take (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n\n{USAGE}", self.0)
    }
}

/// The binary's usage text.
pub const USAGE: &str =
    "usage: ate-check mounts | try-write | env | watch --ms N | evidence | mark --token T\n\
     (N in 1..=10000; T is 1..=128 characters of [A-Za-z0-9_-]); each prints one JSON object";

impl Command {
    /// The argument vector for this subcommand (what a caller passes after
    /// the program): the inverse of [`Command::parse`].
    pub fn args(&self) -> Vec<String> {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect();
        match self {
            Command::Mounts => v(&["mounts"]),
            Command::TryWrite => v(&["try-write"]),
            Command::Env => v(&["env"]),
            Command::Watch { ms } => vec!["watch".into(), "--ms".into(), ms.to_string()],
            Command::Evidence => v(&["evidence"]),
            Command::Mark { token } => vec!["mark".into(), "--token".into(), token.clone()],
        }
    }

    /// Parses the arguments after the program name.
    pub fn parse(args: &[String]) -> Result<Command, UsageError> {
        let bad = |m: String| Err(UsageError(m));
        let (sub, rest) = match args.split_first() {
            Some((s, r)) => (s.as_str(), r),
            None => return bad("missing subcommand".into()),
        };
        let no_more = |cmd: Command| match rest {
            [] => Ok(cmd),
            [x, ..] => bad(format!("unexpected argument {x:?} after {sub:?}")),
        };
        let one_value = |flag: &str| -> Result<String, UsageError> {
            match rest {
                [f, v] if f == flag => Ok(v.clone()),
                [f] if f == flag => Err(UsageError(format!("{flag} needs a value"))),
                [] => Err(UsageError(format!("{sub} needs {flag}"))),
                [x, ..] if x != flag => Err(UsageError(format!(
                    "unexpected argument {x:?} to {sub}: it takes {flag} only"
                ))),
                [_, _, x, ..] => Err(UsageError(format!(
                    "unexpected argument {x:?} after {flag}"
                ))),
                _ => unreachable!("every length is covered"),
            }
        };
        match sub {
            "mounts" => no_more(Command::Mounts),
            "try-write" => no_more(Command::TryWrite),
            "env" => no_more(Command::Env),
            "evidence" => no_more(Command::Evidence),
            "watch" => {
                let v = one_value("--ms")?;
                match v.parse::<u64>() {
                    Ok(ms) if WATCH_MS.contains(&ms) => Ok(Command::Watch { ms }),
                    _ => bad(format!(
                        "bad --ms value {v:?}: must be an integer in {}..={}",
                        WATCH_MS.start(),
                        WATCH_MS.end()
                    )),
                }
            }
            "mark" => {
                let token = one_value("--token")?;
                check_token(&token).map_err(UsageError)?;
                Ok(Command::Mark { token })
            }
            other => bad(format!(
                "unknown subcommand {other:?}; valid: mounts, try-write, env, watch, evidence, mark"
            )),
        }
    }
}

/// A token `mark` can plant: 1..=128 characters of `[A-Za-z0-9_-]`.
pub fn check_token(token: &str) -> Result<(), String> {
    let ok = !token.is_empty()
        && token.len() <= TOKEN_MAX_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad --token value {token:?}: must be 1..={TOKEN_MAX_LEN} characters of [A-Za-z0-9_-]"
        ))
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn every_command_parses_back_from_its_args() {
        for cmd in [
            Command::Mounts,
            Command::TryWrite,
            Command::Env,
            Command::Watch { ms: 1500 },
            Command::Evidence,
            Command::Mark {
                token: "golden-0a1B_z".into(),
            },
        ] {
            assert_eq!(Command::parse(&cmd.args()), Ok(cmd));
        }
    }

    #[test]
    fn usage_errors_name_the_bad_argument_and_what_is_allowed() {
        let err = |s: &[&str]| Command::parse(&argv(s)).unwrap_err().0;
        assert_eq!(err(&[]), "missing subcommand");
        assert!(
            err(&["mount"]).contains("\"mount\"") && err(&["mount"]).contains("mounts, try-write")
        );
        assert!(err(&["env", "x"]).contains("unexpected argument \"x\""));
        assert!(err(&["watch"]).contains("needs --ms"));
        assert!(err(&["watch", "--ms"]).contains("--ms needs a value"));
        assert!(err(&["watch", "--ms", "0"])
            .contains("bad --ms value \"0\": must be an integer in 1..=10000"));
        assert!(err(&["watch", "--ms", "10001"]).contains("\"10001\""));
        assert!(err(&["watch", "--ms", "5", "x"]).contains("unexpected argument \"x\" after --ms"));
        assert!(err(&["watch", "--sec", "5"]).contains("\"--sec\""));
        assert!(err(&["mark", "--token", "a b"]).contains("bad --token value \"a b\""));
        assert!(err(&["mark", "--token", ""]).contains("1..=128"));
        let long = "a".repeat(129);
        assert!(err(&["mark", "--token", &long]).contains("bad --token"));
        assert!(Command::parse(&argv(&["mark", "--token", &"a".repeat(128)])).is_ok());
    }

    #[test]
    fn probe_answers_parse_as_checker_types() {
        // Our probe's /identity-dir and /env shapes (probe/src/routes.rs).
        let d: IdentityDir = serde_json::from_str(
            r#"{"path":"/run/ate","entries":[{"name":"actor-id","kind":"file","mode":"0644","size":3}],
                "mounts":[{"mount_point":"/run/ate","fs_type":"9p","mount_options":"ro,nosuid",
                "super_options":"","source":"none","root":"/"}]}"#,
        )
        .unwrap();
        assert!(d.mounts[0].read_only());
        assert_eq!(d.entries[0].size, 3);
        let e: Env = serde_json::from_str(r#"{"env":{"A":"b"}}"#).unwrap();
        assert_eq!((e.pid, e.env.len()), (None, 1));
        let w: IdentityWatch = serde_json::from_str(
            r#"{"reads":2,"distinct":[{"value_hex":"61","value":"a","count":2}],"errors":0,"empty_reads":0}"#,
        )
        .unwrap();
        assert_eq!(w.distinct[0].count, 2);
    }
}
