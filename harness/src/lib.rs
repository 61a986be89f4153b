//! `ate-harness`: the conformance harness library.
//!
//! Reads as a table of contents: [`cmd`] (commands as values), [`fixture`]
//! (the static probe and agent), [`backend`] (the seam, its backends, and
//! `select`, the one module that knows them all), [`router`] (HTTP through
//! the router by Host), [`suite`] (the libtest-mimic layer: the runner),
//! [`report`], [`selftest`], [`options`], [`paths`] (every `target/ate-*`),
//! [`run_id`] (every name a run derives), [`template`] (`${VAR}`
//! fixtures).

pub mod backend;
pub mod fingerprint;
pub mod fixture;
pub mod flags;
pub mod options;
pub mod paths;
pub mod probe;
pub mod report;
pub mod router;
pub mod run_id;
pub mod selftest;
pub mod suite;
pub mod template;

pub use ate_cmd as cmd;

/// Logs to stderr (`RUST_LOG` sets the level, default info); stdout stays
/// clean for `--list`. Colour only when stderr is a terminal and
/// `NO_COLOR` is unset, so a log redirected to a file has no escapes.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(use_colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").is_some(),
        ))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Colour on a terminal unless `NO_COLOR` is set (any value).
pub fn use_colour(stderr_is_terminal: bool, no_color_set: bool) -> bool {
    stderr_is_terminal && !no_color_set
}

/// An error and its sources, one cause per line (`caused by: ...`): the
/// one rendering of a cause chain, for trial failures and messages.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str("\ncaused by: ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The first line of `s` (all of it when it has one).
pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The sha256 of `bytes`, lowercase hex (64 characters).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, false));
        assert!(
            !use_colour(false, false),
            "redirected to a file: no escapes"
        );
        assert!(!use_colour(true, true));
        assert!(!use_colour(false, true));
    }

    #[test]
    fn error_chain_renders_every_cause() {
        let e = anyhow::anyhow!("root").context("middle").context("top");
        assert_eq!(
            error_chain(e.as_ref()),
            "top\ncaused by: middle\ncaused by: root"
        );
    }
}
