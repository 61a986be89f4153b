//! The run ID, and every name derived from it: a run's names never collide
//! with another run's, so a crashed run never breaks the next one.

use std::fmt;

/// A run ID: 1 to 16 of `a-z0-9`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(String);

/// Why a run ID was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid run id {0:?}: use 1 to 16 lowercase letters or digits")]
pub struct InvalidRunId(String);

impl RunId {
    /// A short random run ID (six lowercase hex digits).
    pub fn random() -> RunId {
        let mut b = [0u8; 3];
        getrandom::fill(&mut b).expect("getrandom");
        RunId(b.iter().map(|x| format!("{x:02x}")).collect())
    }

    /// Checks `s` against the rule.
    pub fn parse(s: &str) -> Result<RunId, InvalidRunId> {
        let ok = !s.is_empty()
            && s.len() <= 16
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(RunId(s.to_owned()))
        } else {
            Err(InvalidRunId(s.to_owned()))
        }
    }

    /// The ID itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<base>-<run>`: a name of this run's (actors, templates).
    pub fn unique(&self, base: &str) -> String {
        format!("{base}-{}", self.0)
    }

    /// The atespace this run's actors live in: `conf-<run>`.
    pub fn atespace(&self) -> String {
        format!("conf-{}", self.0)
    }

    /// The probe template: `probe-<run>`.
    pub fn probe_template(&self) -> String {
        self.unique("probe")
    }

    /// The Kubernetes namespace of a kind run: `ate-conf-<run>`.
    pub fn namespace(&self) -> String {
        format!("ate-conf-{}", self.0)
    }

    /// The agent state dir name and log name of a local run.
    pub fn state_dir_name(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_id() {
        let r = RunId::parse("ab12").unwrap();
        assert_eq!(r.unique("probe-alpha"), "probe-alpha-ab12");
        assert_eq!(r.atespace(), "conf-ab12");
        assert_eq!(r.probe_template(), "probe-ab12");
        assert_eq!(r.namespace(), "ate-conf-ab12");
    }

    #[test]
    fn bad_ids_are_named() {
        for bad in ["", "Bad_ID", "a-b", &"a".repeat(17)] {
            let e = RunId::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(RunId::random().as_str().len(), 6);
    }
}
