//! Fault modes: each one a faithful reproduction of one known way to get
//! the identity contract wrong, for the suite's self-test ("the suite must
//! bite", DESIGN.md). Off unless `serve --fault NAME` asks for one; never
//! the default.
//!
//! This list is the one source: the agent parses `--fault NAME` against
//! [`Fault::ALL`], and the self-test takes its rows (and the statements a
//! failing trial must name, [`Fault::breaks`]) from it.
//!
//! In the agent each fault is one implementation of its provisioning
//! trait (`engine/provision/faults.rs`), overriding only the steps it gets
//! wrong and documented with the contract statement it breaks; with no
//! fault the agent takes exactly its healthy path.

use std::fmt;
use std::str::FromStr;

/// One deliberate way to break the identity contract. What each does is
/// [`Fault::description`]; the statements it breaks, [`Fault::breaks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `env-identity`: the ID only in the environment at golden boot.
    EnvIdentity,
    /// `baked-identity`: the golden ID baked into the image.
    BakedIdentity,
    /// `shared-identity-dir`: one host identity directory for all actors.
    SharedIdentityDir,
    /// `writable-mount`: the bind mount at `/run/ate` is read-write.
    WritableMount,
    /// `file-mount`: a single-file bind mount instead of the directory.
    FileMount,
    /// `no-reset`: the first actor's identity dir and rootfs reused across
    /// resumes, nothing reset.
    NoReset,
    /// `torn-write`: `actor-id` written in place in small chunks.
    TornWrite,
    /// `symlink-follow`: the mount point created following the image's
    /// symlinks out of the rootfs.
    SymlinkFollow,
    /// `trailing-newline`: the file holds the ID plus `"\n"`.
    TrailingNewline,
    /// `identity-on-pause`: the identity directory is mounted on the
    /// sandbox's pause container too.
    IdentityOnPause,
}

/// A `--fault` name that is not one of [`Fault::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault mode {given:?}; valid fault modes: {}", Fault::names().join(", "))]
pub struct UnknownFault {
    /// The name given.
    pub given: String,
}

impl Fault {
    /// Every fault mode, in a fixed order.
    pub const ALL: [Fault; 10] = [
        Fault::EnvIdentity,
        Fault::BakedIdentity,
        Fault::SharedIdentityDir,
        Fault::WritableMount,
        Fault::FileMount,
        Fault::NoReset,
        Fault::TornWrite,
        Fault::SymlinkFollow,
        Fault::TrailingNewline,
        Fault::IdentityOnPause,
    ];

    /// The kebab-case name (`--fault NAME`).
    pub fn name(&self) -> &'static str {
        match self {
            Fault::EnvIdentity => "env-identity",
            Fault::BakedIdentity => "baked-identity",
            Fault::SharedIdentityDir => "shared-identity-dir",
            Fault::WritableMount => "writable-mount",
            Fault::FileMount => "file-mount",
            Fault::NoReset => "no-reset",
            Fault::TornWrite => "torn-write",
            Fault::SymlinkFollow => "symlink-follow",
            Fault::TrailingNewline => "trailing-newline",
            Fault::IdentityOnPause => "identity-on-pause",
        }
    }

    /// The contract statements a trial names when this fault breaks it:
    /// the self-test counts a fault as caught only by a failure naming one
    /// of these (the kill matrix's symptoms).
    pub fn breaks(&self) -> &'static [&'static str] {
        match self {
            Fault::EnvIdentity => &["ID-3", "ID-4", "ID-7"],
            Fault::BakedIdentity => &["ID-3", "ID-4"],
            Fault::SharedIdentityDir => &["ID-3", "ID-5", "ID-8"],
            Fault::WritableMount => &["ID-6"],
            Fault::FileMount => &["ID-7"],
            Fault::NoReset => &["ID-3", "ID-10"],
            Fault::TornWrite => &["ID-9"],
            Fault::SymlinkFollow => &["ID-13"],
            Fault::TrailingNewline => &["ID-2"],
            Fault::IdentityOnPause => &["ID-12"],
        }
    }

    /// The names of [`Fault::ALL`], in order.
    pub fn names() -> Vec<&'static str> {
        Fault::ALL.iter().map(Fault::name).collect()
    }

    /// One line: what this fault does wrong.
    pub fn description(&self) -> &'static str {
        match self {
            Fault::EnvIdentity => {
                "the ID is passed only as ATE_ACTOR_ID in the process environment, with no \
                 /run/ate mount; restored actors keep the golden actor's environment"
            }
            Fault::BakedIdentity => {
                "the golden actor's ID is written into the image at run/ate/actor-id and every \
                 actor gets that same baked file; no /run/ate mount"
            }
            Fault::SharedIdentityDir => {
                "one host identity directory for all actors, rewritten at each resume: the \
                 last writer wins"
            }
            Fault::WritableMount => "the bind mount at /run/ate is read-write",
            Fault::FileMount => {
                "a single-file bind mount of actor-id at /run/ate/actor-id instead of the \
                 directory at /run/ate"
            }
            Fault::NoReset => {
                "directories are not regenerated: every resume after the first reuses the first \
                 resumed actor's identity dir and rootfs (only the bundles' container IDs are new), \
                 and suspend resets nothing"
            }
            Fault::TornWrite => {
                "actor-id is truncated and rewritten in place in small chunks (no temp file, \
                 no rename)"
            }
            Fault::SymlinkFollow => {
                "the mount point run/ate is created following symlinks out of the rootfs"
            }
            Fault::TrailingNewline => "actor-id holds the ID followed by a newline",
            Fault::IdentityOnPause => {
                "the identity directory is bind-mounted at /run/ate in the pause container too, \
                 with its mount point in the pause rootfs"
            }
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFault { given: s.into() })
    }
}

impl serde::Serialize for Fault {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Fault {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_round_trip_over_all() {
        let mut seen = std::collections::HashSet::new();
        for f in Fault::ALL {
            let name = f.to_string();
            assert_eq!(name, f.name());
            assert!(seen.insert(name.clone()), "duplicate name {name}");
            assert_eq!(name.parse::<Fault>().unwrap(), f);
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{name} is not kebab-case"
            );
            assert!(!f.description().is_empty() && !f.description().contains('\n'));
            assert_eq!(serde_json::to_value(f).unwrap(), serde_json::json!(name));
            assert_eq!(
                serde_json::from_value::<Fault>(serde_json::json!(name)).unwrap(),
                f
            );
            assert!(!f.breaks().is_empty(), "{name} breaks nothing");
            for id in f.breaks() {
                let n = id.strip_prefix("ID-").expect("an ID-n statement");
                assert!(n.parse::<u32>().is_ok(), "{name}: {id}");
            }
        }
        assert_eq!(seen.len(), Fault::ALL.len());
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        for bad in ["", "EnvIdentity", "env_identity", "Env-Identity", "bogus"] {
            let err = bad.parse::<Fault>().unwrap_err();
            assert_eq!(err.given, bad);
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            for f in Fault::ALL {
                assert!(msg.contains(f.name()), "{msg} lacks {f}");
            }
        }
    }
}
