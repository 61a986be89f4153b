//! `ate-conformance bench`: what restoring actors from one golden snapshot
//! costs through the reference agent, measured against the raw runtime on
//! the same golden image in the same run.
//!
//! One run: start `ate-refagent serve` on a state dir of its own (under
//! `target/ate-bench/`), deploy the probe template (golden boot +
//! checkpoint), then for every fan-out size N and for sequential and
//! concurrent (= cores) restores:
//!
//! - **raw**: `runsc --network=none restore --detach --image-path <golden>
//!   --bundle B ate-bench-<run>-K` into bare bundles prepared here the way
//!   the agent prepares its own (rootfs = the probe binary hard-linked plus
//!   the mount-point directories, an identity dir, the golden's
//!   `config.json` with `root.path` and the `/run/ate` source rewritten),
//!   timed per restore; every container is registered before it is started
//!   and removed by its ID afterwards, on failure and on interrupt;
//! - **agent**: the same N actors resumed through the control API (client
//!   time per call, and the agent's own `last_restore_ms` /
//!   `last_resume_ms`), each then asked `/whoami` and `/snapshot` through
//!   the router (own ID; restored from the golden, not booted);
//!
//! and per step: wall time, p50/p95/max per restore, actors per second,
//! resident memory per sandbox (VmRSS summed over the `runsc-sandbox` and
//! `runsc-gofer` processes that name the container or its bundle), disk
//! per actor (apparent bytes, and unique bytes: files not hard-linked with
//! the template, plus directories). Then interleaved pairs (one raw
//! restore, one agent resume, alternating which goes first) for the
//! agent/raw ratio, the router's on-demand path (a
//! suspended actor's first `GET /whoami`: first byte and complete
//! response), the first routed request right after an API resume, and warm `/whoami` round-trips (p50/p95/p99). [`run`] returns
//! a [`Report`]; [`render_table`] prints it as one Markdown table and
//! [`write_json`] writes it.
//!
//! Nothing here asserts timings; [`run`] fails only when the work itself is
//! wrong (an actor reads another ID, a restore fails, a sandbox is left).

//!
//! With `--node` the bench measures the node backend instead ([`run_node`]:
//! the user's atelet and ateom-gvisor, or the stand-in; see `node.rs`).
//!
//! Code map, one module per job: `node` (the node backend's restores), `options` (what to measure), `run` (the
//! run itself), `raw` (raw runsc restores and their cleanup), `agent` (the
//! agent under test), `relay` (the probe's answers, routed or relayed),
//! `procfs` (RSS, disk, the machine), `stats` (latency statistics),
//! `report` (the report's types, its targets, the table and the JSON).

use std::time::Duration;

/// The template every bench run deploys.
pub const TEMPLATE: &str = "probe";
/// Container-ID prefix of the raw containers (`ate-bench-<run>-<k>`).
pub const RAW_PREFIX: &str = "ate-bench-";
/// Where the relay helper sits inside every sandbox (the golden bundle
/// mounts the agent's helper dir there).
const RELAY_IN_SANDBOX: &str = "/.ate/ate-refagent";

const READY_DEADLINE: Duration = Duration::from_secs(90);
const OP_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);
const AGENT_TERM_GRACE: Duration = Duration::from_secs(90);

mod agent;
mod node;
mod options;
mod procfs;
mod raw;
mod relay;
mod report;
mod run;
mod stats;

pub use node::{
    atelet_breakdowns, render_node, run_node, AteletRestore, NodeBenchOptions, NodeReport,
    NodeSample,
};
pub use options::{cores, default_out, BenchOptions};
pub use report::{
    render_table, write_json, ActorCheck, Checks, Cleanup, FanoutRow, GoldenInfo, Machine,
    OnDemand, Paired, Ratio, RawCheck, Report, Target,
};
pub use run::{run, run_and_print};
pub use stats::Stats;
