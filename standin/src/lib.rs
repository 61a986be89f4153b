//! The in-repo stand-in for upstream's node pair, `atelet` and
//! `ateom-gvisor` (agent-substrate/substrate at 86e138f6), which CI tests
//! the node backend against (it may never build or run upstream code).
//! From the outside it looks like the real pair: the same command-line
//! flags, the same gRPC API `atelet.AteomHerder` with server reflection,
//! the same on-disk layout under `/var/lib/ateom-gvisor`, the same runsc
//! argument vectors and container IDs, the same network path (the worker
//! pod's address, port 80, reaches the actor) on a real runsc.
//!
//! Each behaviour imitated cites upstream's file and line in its module.
//! Rooms:
//! - [`paths`]: `internal/ateompath` (every node path, container IDs),
//! - [`image`]: pulling and unpacking images (atelet's pull cache, `untar`),
//! - [`snapshot`]: the S3 client and the snapshot record/manifest,
//! - [`runsc`]: ateom's runsc calls (`cmd/ateom-gvisor/runsc.go`),
//! - [`atelet`]: the service (Run, Checkpoint, Restore),
//! - [`reflection`]: the descriptor set for gRPC reflection,
//! - [`ateom`]: the per-worker process (socket, actor netns).
//!
//! The binaries are `ate-standin-atelet` and `ate-standin-ateom`
//! (`src/bin/`). The stand-in's deviations from upstream are listed in
//! [`atelet`], [`ateom`] and [`snapshot`].

pub mod atelet;
pub mod ateom;
pub mod image;
pub mod paths;
pub mod reflection;
pub mod runsc;
pub mod snapshot;

/// The line `--version` prints, naming the binary a stand-in.
pub fn version_line(which: &str) -> String {
    format!(
        "{which} stand-in (ate-conformance {}; imitates agent-substrate/substrate 86e138f6; not upstream's binary)",
        env!("CARGO_PKG_VERSION")
    )
}
