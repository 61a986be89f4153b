//! The flag machinery every option group shares: an option's spec (flag,
//! environment variable, value, help) and the values given for a set of
//! them. Groups are declared where they belong: the run's in
//! `options`, each backend's in its own module.

use std::collections::BTreeMap;

/// One option: its flag, its environment variable (`""`: none), its
/// value's name (`None`: a switch) and its help line.
#[derive(Debug)]
pub struct Spec {
    /// `--flag`.
    pub flag: &'static str,
    /// The environment variable, or `""`.
    pub env: &'static str,
    /// The value's placeholder; `None` for a switch.
    pub value: Option<&'static str>,
    /// One line of help.
    pub help: &'static str,
}

/// `1/true/yes/on` or `0/false/no/off` (empty is false).
pub fn parse_bool(name: &str, v: &str) -> anyhow::Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => anyhow::bail!("invalid value {v:?} for {name}: use 1/true/yes/on or 0/false/no/off"),
    }
}

/// The values given for options: flags first, then environment variables
/// (an empty variable counts as unset).
pub struct Values<'a> {
    specs: Vec<&'static Spec>,
    given: BTreeMap<&'static str, String>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Values<'a> {
    /// Values of `specs`: `given` on the command line, else from `env`.
    pub fn new(
        specs: Vec<&'static Spec>,
        given: BTreeMap<&'static str, String>,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Values<'a> {
        Values { specs, given, env }
    }

    fn spec(&self, flag: &str) -> &'static Spec {
        self.specs
            .iter()
            .find(|s| s.flag == flag)
            .copied()
            .unwrap_or_else(|| panic!("unknown flag {flag}"))
    }

    /// The value of `flag`, from the command line or its variable.
    pub fn get(&self, flag: &str) -> Option<String> {
        let spec = self.spec(flag);
        self.given.get(flag).cloned().or_else(|| {
            (!spec.env.is_empty())
                .then(|| (self.env)(spec.env))
                .flatten()
                .filter(|v| !v.is_empty())
        })
    }

    /// A switch: false unless given.
    pub fn switch(&self, flag: &str) -> anyhow::Result<bool> {
        let spec = self.spec(flag);
        let name = if spec.env.is_empty() {
            flag.to_owned()
        } else {
            format!("{flag}/{}", spec.env)
        };
        self.get(flag)
            .map(|v| parse_bool(&name, &v))
            .transpose()
            .map(|b| b.unwrap_or(false))
    }

    /// True when `flag` was on the command line.
    pub fn given(&self, flag: &str) -> bool {
        self.given.contains_key(flag)
    }

    /// An environment variable that is no option of ours.
    pub fn env(&self, var: &str) -> Option<String> {
        (self.env)(var).filter(|v| !v.is_empty())
    }
}
