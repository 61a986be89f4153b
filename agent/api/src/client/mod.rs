//! The one client of the reference agent (feature `client`): the agent
//! process ([`Agent`]: spawn, stop, kill, detach; [`gc_and_remove`]) and
//! its control API ([`AgentClient`]: one typed call per endpoint, waits
//! with a deadline from the caller).

mod http;
mod process;

pub use http::{AgentClient, ApiError, RawAnswer};
pub use process::{gc_and_remove, log_tail, state_dir_is_stale, Agent, AgentOptions, ProcessError};
pub use reqwest::Method;
