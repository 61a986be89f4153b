//! `ate-refagent`: the reference identity-mounting node agent.
//!
//! It runs every actor of a template in a real gVisor sandbox (`runsc`):
//! the golden actor is booted once and checkpointed; every other actor is
//! restored from that image with its own freshly generated OCI bundle whose
//! `config.json` bind-mounts the actor's own identity directory read-only
//! at `/run/ate`. See `ARCHITECTURE.md` at the workspace root.
//!
//! Modules, outside in:
//! - [`server`]: `serve` entry point: state dir, signals, orphan cleanup,
//! - [`api`]: the control API (HTTP + JSON),
//! - [`router`]: the Host-routed HTTP front door (ID-15),
//! - [`engine`]: templates and actors with their state machine,
//! - [`fault`]: deliberate contract violations for the suite's self-test
//!   (off unless `serve --fault NAME`),
//! - [`relay`]: the path into an actor's own network stack,
//! - [`pause`]: the program of each sandbox's pause container,
//! - [`runtime`]: what the engine asks of the container runtime, as a
//!   trait; [`runsc`]: the `runsc` command vectors that implement it,
//! - [`names`], [`identity`], [`rootfs`], [`bundle`]: the identity contract's
//!   host side (ID-14/15, ID-9/10, ID-13, ID-6/7).
//!
//! The stand-in for upstream's atelet and ateom-gvisor, which CI tests the
//! node backend against, is its own crate over this library (`standin/`).

pub mod api;
pub mod bundle;
pub mod check;
pub mod engine;
pub mod identity;
pub mod pause;
pub mod relay;
pub mod rootfs;
pub mod router;
pub mod runsc;
pub mod runtime;
pub mod server;

/// Names and the Host rules (ID-14, ID-15): they live in `ate-agent-api`,
/// shared with the node backend's routing front in the harness.
pub use ate_agent_api::names;

/// Fault modes: the list lives in `ate-agent-api`, the one source the
/// agent and the self-test read.
pub mod fault {
    pub use ate_agent_api::fault::*;
}
