//! Names: actor IDs, atespaces, template names (ID-14) and the actor DNS
//! name `<actor>.<atespace>.actors.resources.substrate.ate.dev` (ID-15).
//!
//! Every check here is total: any input (empty, huge, NUL bytes, non-ASCII)
//! yields `Ok` or an error naming the field, the value (quoted with `{:?}`
//! so control characters and unicode are visible) and the rule it broke.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The DNS domain under which every actor is addressed (ID-15).
pub const ACTOR_DOMAIN: &str = "actors.resources.substrate.ate.dev";

/// The hop-by-hop headers a Host-routing proxy does not forward (RFC 9110
/// section 7.6.1): the agent's router and the node backend's front drop
/// them both ways.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The reserved atespace of golden actors.
pub const GOLDEN_ATESPACE: &str = "ate-golden";

/// The DNS-1123 label pattern that actor IDs and atespaces must match.
pub const LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Maximum length of a DNS-1123 label (actor ID, atespace, namespace).
pub const MAX_LABEL_LEN: usize = 63;

/// Maximum length of a DNS-1123 subdomain (template name).
pub const MAX_SUBDOMAIN_LEN: usize = 253;

/// Maximum length of namespace, template name and actor ID joined with two
/// separators.
pub const MAX_JOINED_LEN: usize = 255;

const LABEL_EXPLANATION: &str =
    "lowercase letters, digits and '-', starting and ending with a letter or digit";

/// The rule a name broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The value is empty.
    Empty,
    /// The value is longer than allowed.
    TooLong {
        /// The maximum number of characters.
        max: usize,
        /// The number of characters of the value.
        got: usize,
    },
    /// The value does not match [`LABEL_PATTERN`].
    Label,
    /// The value is not a DNS-1123 subdomain (dot-separated labels).
    Subdomain,
    /// Namespace, template name and actor ID joined with two separators are
    /// longer than [`MAX_JOINED_LEN`].
    JoinedTooLong {
        /// The number of characters of the joined value.
        got: usize,
    },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Empty => f.write_str("must not be empty"),
            Rule::TooLong { max, got } => {
                write!(f, "must be at most {max} characters (got {got})")
            }
            Rule::Label => write!(f, "must match {LABEL_PATTERN} ({LABEL_EXPLANATION})"),
            Rule::Subdomain => write!(
                f,
                "must be a DNS-1123 subdomain: dot-separated labels, each matching \
                 {LABEL_PATTERN} ({LABEL_EXPLANATION})"
            ),
            Rule::JoinedTooLong { got } => write!(
                f,
                "must be at most {MAX_JOINED_LEN} characters when joined with two \
                 separators (got {got})"
            ),
        }
    }
}

/// A name that broke a rule of ID-14.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: {rule}")]
pub struct NameError {
    /// Which field: "actor id", "atespace", "template name", "namespace", or
    /// "namespace/template name/actor id" for the joined length.
    pub field: &'static str,
    /// The offending value, as given.
    pub value: String,
    /// The rule it broke.
    pub rule: Rule,
}

/// Whether `s` matches [`LABEL_PATTERN`] (length is not checked).
fn matches_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && b.iter().all(|c| alnum(c) || *c == b'-')
        }
        _ => false,
    }
}

fn validate_label(field: &'static str, value: &str) -> Result<(), NameError> {
    let err = |rule| NameError {
        field,
        value: value.to_owned(),
        rule,
    };
    if value.is_empty() {
        return Err(err(Rule::Empty));
    }
    let got = value.chars().count();
    if got > MAX_LABEL_LEN {
        return Err(err(Rule::TooLong {
            max: MAX_LABEL_LEN,
            got,
        }));
    }
    if !matches_label(value) {
        return Err(err(Rule::Label));
    }
    Ok(())
}

/// Checks an actor ID: [`LABEL_PATTERN`], 1 to 63 characters (ID-14).
pub fn validate_actor_id(id: &str) -> Result<(), NameError> {
    validate_label("actor id", id)
}

/// Checks an atespace: [`LABEL_PATTERN`], 1 to 63 characters (ID-14).
pub fn validate_atespace(atespace: &str) -> Result<(), NameError> {
    validate_label("atespace", atespace)
}

/// Checks a Kubernetes namespace: [`LABEL_PATTERN`], 1 to 63 characters.
pub fn validate_namespace(namespace: &str) -> Result<(), NameError> {
    validate_label("namespace", namespace)
}

/// Checks a template name: a DNS-1123 subdomain of at most 253 characters,
/// i.e. dot-separated labels each matching [`LABEL_PATTERN`] (ID-14).
///
/// As in Kubernetes' `IsDNS1123Subdomain`, only the total length is limited,
/// not the length of each label.
pub fn validate_template_name(name: &str) -> Result<(), NameError> {
    let err = |rule| NameError {
        field: "template name",
        value: name.to_owned(),
        rule,
    };
    if name.is_empty() {
        return Err(err(Rule::Empty));
    }
    let got = name.chars().count();
    if got > MAX_SUBDOMAIN_LEN {
        return Err(err(Rule::TooLong {
            max: MAX_SUBDOMAIN_LEN,
            got,
        }));
    }
    if !name.split('.').all(matches_label) {
        return Err(err(Rule::Subdomain));
    }
    Ok(())
}

/// Checks that namespace, template name and actor ID joined with two
/// one-character separators are at most 255 characters (ID-14).
///
/// Only the length is checked here; check each part with its own
/// validator. The error shows the parts joined with `/`.
pub fn validate_joined_len(
    namespace: &str,
    template: &str,
    actor_id: &str,
) -> Result<(), NameError> {
    let got = namespace.chars().count() + template.chars().count() + actor_id.chars().count() + 2;
    if got > MAX_JOINED_LEN {
        return Err(NameError {
            field: "namespace/template name/actor id",
            value: format!("{namespace}/{template}/{actor_id}"),
            rule: Rule::JoinedTooLong { got },
        });
    }
    Ok(())
}

/// An actor's address, as parsed from a Host header (ID-15).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActorAddr {
    /// The atespace (validated, lowercase).
    pub atespace: String,
    /// The actor ID (validated, lowercase).
    pub actor: String,
}

impl ActorAddr {
    /// The DNS name of this actor (no port, no trailing dot).
    pub fn host(&self) -> String {
        actor_host(&self.actor, &self.atespace)
    }
}

/// A Host (or `:authority`) value that does not address an actor.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The host is empty or missing.
    #[error("missing host: expected <actor>.<atespace>.{ACTOR_DOMAIN}")]
    Empty,
    /// The host is an IPv4 or IPv6 literal.
    #[error(
        "host {host:?} is an ip address: actors are addressed by name, \
         <actor>.<atespace>.{ACTOR_DOMAIN}"
    )]
    IpLiteral {
        /// The host as given.
        host: String,
    },
    /// The `:port` suffix is not a number in 1..=65535.
    #[error("invalid port {port:?} in host {host:?}: must be a number from 1 to 65535")]
    BadPort {
        /// The host as given.
        host: String,
        /// The text after the last `:`.
        port: String,
    },
    /// The name does not end in `.actors.resources.substrate.ate.dev`.
    #[error("host {host:?} is not an actor address: must end in \".{ACTOR_DOMAIN}\"")]
    WrongSuffix {
        /// The host as given.
        host: String,
    },
    /// Fewer than two labels before the actor domain.
    #[error("host {host:?} names no atespace: expected <actor>.<atespace>.{ACTOR_DOMAIN}")]
    MissingAtespace {
        /// The host as given.
        host: String,
    },
    /// More than two labels before the actor domain.
    #[error(
        "host {host:?} has {labels} labels before \".{ACTOR_DOMAIN}\": expected exactly \
         two, <actor>.<atespace>"
    )]
    TooManyLabels {
        /// The host as given.
        host: String,
        /// How many labels there were before the actor domain.
        labels: usize,
    },
    /// The actor or atespace label is not a valid name.
    #[error("invalid host {host:?}")]
    InvalidLabel {
        /// The host as given.
        host: String,
        /// The rule the label broke.
        #[source]
        source: NameError,
    },
}

impl HostError {
    /// The error and all its causes on one line, joined with `": "`, e.g.
    /// for an HTTP 400 body.
    pub fn explain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }
}

/// The DNS name of an actor: `<actor>.<atespace>.actors.resources.substrate.ate.dev`.
pub fn actor_host(actor: &str, atespace: &str) -> String {
    format!("{actor}.{atespace}.{ACTOR_DOMAIN}")
}

/// Parses a Host header (or `:authority`) value into an actor address
/// (ID-15).
///
/// Accepts `<actor>.<atespace>.actors.resources.substrate.ate.dev`, with an
/// optional trailing dot and an optional `:port` suffix (digits, 1..=65535),
/// which is dropped. DNS names are case-insensitive: the domain suffix is
/// compared ignoring ASCII case, and the actor and atespace labels are
/// lowercased (ASCII only) before they are validated, so
/// `Probe.NS.Actors...` addresses actor `probe` in atespace `ns`.
pub fn parse_actor_host(host: &str) -> Result<ActorAddr, HostError> {
    let owned = || host.to_owned();
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some(bracketed) = host.strip_prefix('[') {
        let inside = bracketed.split(']').next().unwrap_or_default();
        return Err(match inside.parse::<Ipv6Addr>() {
            Ok(_) => HostError::IpLiteral { host: owned() },
            Err(_) => HostError::WrongSuffix { host: owned() },
        });
    }
    if host.parse::<Ipv6Addr>().is_ok() {
        return Err(HostError::IpLiteral { host: owned() });
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) => {
            let valid = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && matches!(port.parse::<u32>(), Ok(1..=65535));
            if !valid {
                return Err(HostError::BadPort {
                    host: owned(),
                    port: port.to_owned(),
                });
            }
            name
        }
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if name.parse::<Ipv4Addr>().is_ok() {
        return Err(HostError::IpLiteral { host: owned() });
    }
    // `name` must be `<prefix>.<ACTOR_DOMAIN>`; compare bytes so that a
    // non-ASCII name can never split a character.
    let suffix_len = ACTOR_DOMAIN.len() + 1;
    let split = name.len().checked_sub(suffix_len);
    let prefix = match split {
        Some(at)
            if name.as_bytes()[at] == b'.'
                && name.as_bytes()[at + 1..].eq_ignore_ascii_case(ACTOR_DOMAIN.as_bytes()) =>
        {
            // The byte at `at` is an ASCII '.', so `at` is a char boundary.
            &name[..at]
        }
        _ if name.eq_ignore_ascii_case(ACTOR_DOMAIN) => "",
        _ => return Err(HostError::WrongSuffix { host: owned() }),
    };
    let labels: Vec<&str> = prefix.split('.').collect();
    let (actor, atespace) = match labels.as_slice() {
        [actor, atespace] => (actor.to_ascii_lowercase(), atespace.to_ascii_lowercase()),
        [_] => return Err(HostError::MissingAtespace { host: owned() }),
        more => {
            return Err(HostError::TooManyLabels {
                host: owned(),
                labels: more.len(),
            })
        }
    };
    let invalid = |source| HostError::InvalidLabel {
        host: owned(),
        source,
    };
    validate_actor_id(&actor).map_err(invalid)?;
    validate_atespace(&atespace).map_err(invalid)?;
    Ok(ActorAddr { atespace, actor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_table() {
        let max = "a".repeat(63);
        for ok in ["a", "1actor", "probe-alpha", "a-b-c", "0", max.as_str()] {
            validate_actor_id(ok).unwrap_or_else(|e| panic!("{ok:?} rejected: {e}"));
            validate_atespace(ok).unwrap_or_else(|e| panic!("{ok:?} rejected: {e}"));
        }
        let too_long = "a".repeat(64);
        let huge = "é".repeat(1 << 20);
        let bad = [
            ("", Rule::Empty),
            ("A", Rule::Label),
            ("Probe", Rule::Label),
            ("-a", Rule::Label),
            ("a-", Rule::Label),
            ("-", Rule::Label),
            ("a@b", Rule::Label),
            ("a.b", Rule::Label),
            ("a/b", Rule::Label),
            ("..", Rule::Label),
            ("é", Rule::Label),
            ("a\0b", Rule::Label),
            (" a", Rule::Label),
            ("a ", Rule::Label),
            ("a\tb", Rule::Label),
            ("a\n", Rule::Label),
            ("a_b", Rule::Label),
            (too_long.as_str(), Rule::TooLong { max: 63, got: 64 }),
            (
                huge.as_str(),
                Rule::TooLong {
                    max: 63,
                    got: 1 << 20,
                },
            ),
        ];
        for (value, rule) in bad {
            let err = validate_actor_id(value).expect_err(value);
            assert_eq!(err.field, "actor id");
            assert_eq!(err.rule, rule, "{value:?}");
            assert_eq!(err.value, value);
            let err = validate_atespace(value).expect_err(value);
            assert_eq!(err.field, "atespace");
            assert_eq!(err.rule, rule, "{value:?}");
        }
    }

    #[test]
    fn messages_name_field_value_and_rule() {
        assert_eq!(
            validate_actor_id("Probe").unwrap_err().to_string(),
            "invalid actor id \"Probe\": must match ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ \
             (lowercase letters, digits and '-', starting and ending with a letter or digit)"
        );
        assert_eq!(
            validate_atespace(&"a".repeat(64)).unwrap_err().to_string(),
            format!(
                "invalid atespace \"{}\": must be at most 63 characters (got 64)",
                "a".repeat(64)
            )
        );
        assert_eq!(
            validate_actor_id("").unwrap_err().to_string(),
            "invalid actor id \"\": must not be empty"
        );
        // NUL and unicode are visible in the message.
        let msg = validate_actor_id("a\0b").unwrap_err().to_string();
        assert!(msg.starts_with("invalid actor id \"a\\0b\": "), "{msg}");
        assert_eq!(validate_namespace("NS").unwrap_err().field, "namespace");
    }

    #[test]
    fn template_names() {
        let long_ok = format!("{}.{}", "a".repeat(126), "b".repeat(126));
        for ok in ["probe", "probe.v1", "a.b.c", "x-1.y-2", long_ok.as_str()] {
            validate_template_name(ok).unwrap_or_else(|e| panic!("{ok:?} rejected: {e}"));
        }
        let long_bad = "a".repeat(254);
        for (bad, rule) in [
            ("", Rule::Empty),
            ("Probe", Rule::Subdomain),
            (".a", Rule::Subdomain),
            ("a.", Rule::Subdomain),
            ("a..b", Rule::Subdomain),
            ("a.-b", Rule::Subdomain),
            ("a/b", Rule::Subdomain),
            ("a_b", Rule::Subdomain),
            ("é", Rule::Subdomain),
            ("a\0", Rule::Subdomain),
            (long_bad.as_str(), Rule::TooLong { max: 253, got: 254 }),
        ] {
            let err = validate_template_name(bad).expect_err(bad);
            assert_eq!(err.field, "template name");
            assert_eq!(err.rule, rule, "{bad:?}");
        }
    }

    #[test]
    fn joined_length() {
        let ns = "n".repeat(63);
        let id = "i".repeat(63);
        // 63 + 127 + 63 + 2 = 255.
        validate_joined_len(&ns, &"t".repeat(127), &id).unwrap();
        let err = validate_joined_len(&ns, &"t".repeat(128), &id).unwrap_err();
        assert_eq!(err.rule, Rule::JoinedTooLong { got: 256 });
        assert!(err.to_string().contains("at most 255"), "{err}");
    }

    #[test]
    fn host_roundtrip() {
        let host = actor_host("probe-alpha", "ns1");
        assert_eq!(host, "probe-alpha.ns1.actors.resources.substrate.ate.dev");
        let addr = parse_actor_host(&host).unwrap();
        assert_eq!(addr.host(), host);
    }

    fn addr(actor: &str, atespace: &str) -> ActorAddr {
        ActorAddr {
            atespace: atespace.into(),
            actor: actor.into(),
        }
    }

    #[test]
    fn host_table_good() {
        let d = ACTOR_DOMAIN;
        for (host, want) in [
            (format!("probe-alpha.ns1.{d}"), addr("probe-alpha", "ns1")),
            (format!("probe-alpha.ns1.{d}."), addr("probe-alpha", "ns1")),
            (
                format!("probe-alpha.ns1.{d}:8080"),
                addr("probe-alpha", "ns1"),
            ),
            (
                format!("probe-alpha.ns1.{d}.:80"),
                addr("probe-alpha", "ns1"),
            ),
            (format!("a.b.{d}:65535"), addr("a", "b")),
            (
                "Probe-Alpha.NS1.Actors.Resources.SUBSTRATE.ate.dev".to_string(),
                addr("probe-alpha", "ns1"),
            ),
        ] {
            let got =
                parse_actor_host(&host).unwrap_or_else(|e| panic!("{host:?}: {}", e.explain()));
            assert_eq!(got, want, "{host:?}");
        }
    }

    #[test]
    fn host_table_bad() {
        let d = ACTOR_DOMAIN;
        type Check = fn(&HostError) -> bool;
        let cases: Vec<(String, Check)> = vec![
            (String::new(), |e| matches!(e, HostError::Empty)),
            (":80".into(), |e| matches!(e, HostError::Empty)),
            (".".into(), |e| matches!(e, HostError::Empty)),
            (format!("a.b.{d}:x"), |e| {
                matches!(e, HostError::BadPort { .. })
            }),
            (format!("a.b.{d}:0"), |e| {
                matches!(e, HostError::BadPort { .. })
            }),
            (format!("a.b.{d}:70000"), |e| {
                matches!(e, HostError::BadPort { .. })
            }),
            (format!("a.b.{d}:"), |e| {
                matches!(e, HostError::BadPort { .. })
            }),
            (format!("a.b.{d}:+80"), |e| {
                matches!(e, HostError::BadPort { .. })
            }),
            (format!("a.b.{d}:99999999999999999999"), |e| {
                matches!(e, HostError::BadPort { .. })
            }),
            (format!("a.{d}"), |e| {
                matches!(e, HostError::MissingAtespace { .. })
            }),
            (d.to_string(), |e| {
                matches!(e, HostError::MissingAtespace { .. })
            }),
            ("a.b.example.com".into(), |e| {
                matches!(e, HostError::WrongSuffix { .. })
            }),
            (format!("a.b.x{d}"), |e| {
                matches!(e, HostError::WrongSuffix { .. })
            }),
            ("localhost".into(), |e| {
                matches!(e, HostError::WrongSuffix { .. })
            }),
            ("é".repeat(40), |e| {
                matches!(e, HostError::WrongSuffix { .. })
            }),
            ("127.0.0.1".into(), |e| {
                matches!(e, HostError::IpLiteral { .. })
            }),
            ("127.0.0.1:80".into(), |e| {
                matches!(e, HostError::IpLiteral { .. })
            }),
            ("[::1]:80".into(), |e| {
                matches!(e, HostError::IpLiteral { .. })
            }),
            ("[::1]".into(), |e| matches!(e, HostError::IpLiteral { .. })),
            ("::1".into(), |e| matches!(e, HostError::IpLiteral { .. })),
            (format!("x.a.b.{d}"), |e| {
                matches!(e, HostError::TooManyLabels { labels: 3, .. })
            }),
            (format!("a..b.{d}"), |e| {
                matches!(e, HostError::TooManyLabels { .. })
            }),
            (format!("a_b.ns.{d}"), |e| {
                matches!(e, HostError::InvalidLabel { .. })
            }),
            (format!("-a.ns.{d}"), |e| {
                matches!(e, HostError::InvalidLabel { .. })
            }),
            (format!("a.ns-.{d}"), |e| {
                matches!(e, HostError::InvalidLabel { .. })
            }),
            (format!(".ns.{d}"), |e| {
                matches!(e, HostError::InvalidLabel { .. })
            }),
            (format!("é.ns.{d}"), |e| {
                matches!(e, HostError::InvalidLabel { .. })
            }),
            (format!("a\0.ns.{d}"), |e| {
                matches!(e, HostError::InvalidLabel { .. })
            }),
            (format!("{}.ns.{d}", "a".repeat(64)), |e| {
                matches!(e, HostError::InvalidLabel { .. })
            }),
        ];
        for (host, check) in cases {
            let err = parse_actor_host(&host).expect_err(&host);
            assert!(check(&err), "{host:?}: unexpected {err:?}");
            let msg = err.explain();
            assert!(!msg.is_empty() && !msg.ends_with('.'), "{msg}");
            assert!(msg.starts_with(|c: char| c.is_ascii_lowercase()), "{msg}");
        }
    }

    #[test]
    fn host_messages() {
        let d = ACTOR_DOMAIN;
        let err = parse_actor_host("a.b.example.com").unwrap_err();
        assert!(
            err.to_string()
                .contains(".actors.resources.substrate.ate.dev"),
            "{err}"
        );
        let err = parse_actor_host(&format!("a_b.ns.{d}")).unwrap_err();
        assert_eq!(err.to_string(), format!("invalid host \"a_b.ns.{d}\""));
        let source = std::error::Error::source(&err).expect("name error as source");
        assert!(source
            .to_string()
            .starts_with("invalid actor id \"a_b\": must match"));
        assert_eq!(err.explain(), format!("{err}: {source}"));
        let err = parse_actor_host(&format!("a.b.{d}:70000")).unwrap_err();
        assert!(err.to_string().contains("\"70000\""), "{err}");
        assert!(err.to_string().contains("1 to 65535"), "{err}");
    }

    #[test]
    fn never_panics_on_odd_input() {
        let d = ACTOR_DOMAIN;
        let huge = "a.".repeat(1 << 18);
        for host in [
            "\0",
            ":",
            "::",
            "[",
            "]",
            "é:é",
            "a:b:c",
            ".:1",
            "\u{10ffff}.actors.resources.substrate.ate.dev",
            "aé.actors.resources.substrate.ate.dev",
            &format!("é{d}"),
            &format!(".{d}"),
            &format!("..{d}"),
            huge.as_str(),
        ] {
            let _ = parse_actor_host(host);
        }
    }
}
