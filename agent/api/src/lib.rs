//! `ate-agent-api`: the reference agent's wire types, shared by the agent
//! (which serialises them) and its one client (which parses them), so the
//! two cannot drift.
//!
//! - [`types`]: template and actor views, request bodies, `/info`,
//!   `/sandboxes`, the start-up line, the error body and its [`ErrorKind`];
//! - [`fault`]: the fault modes, the one list the agent and the self-test
//!   read;
//! - [`names`]: actor IDs, atespaces, template names (ID-14) and the Host
//!   rules of the actor DNS name (ID-15): the agent's router and the node
//!   backend's routing front parse Hosts with the same code;
//! - [`client`] (feature `client`): spawn and stop the agent, typed calls.
//!
//! **Invariant:** every field is snake_case (serde's default), with no
//! per-field renames.

pub mod fault;
pub mod names;
pub mod types;

#[cfg(feature = "client")]
pub mod client;

pub use fault::{Fault, UnknownFault};
pub use types::*;
