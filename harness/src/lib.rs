//! `ate-harness`: the conformance harness library.
//!
//! Reads as a table of contents: [`cmd`] (commands as values), [`fixture`]
//! (the static probe and agent), [`backend`] (the seam, and the embedded
//! `local` backend), [`router`] (HTTP through the router by Host),
//! [`suite`] (the libtest-mimic layer), [`report`], [`template`]
//! (`${VAR}` fixtures).

pub mod backend;
pub mod fingerprint;
pub mod fixture;
pub mod options;
pub mod probe;
pub mod report;
pub mod router;
pub mod selftest;
pub mod suite;
pub mod template;

pub use ate_cmd as cmd;

/// Logs to stderr (`RUST_LOG` sets the level, default info; `NO_COLOR`
/// turns colour off); stdout stays clean for `--list`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr)
        .try_init();
}
