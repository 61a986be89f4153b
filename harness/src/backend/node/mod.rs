//! The node backend (issue 13, in progress): upstream's real node
//! components, `atelet` and `ateom-gvisor` given as the user's binaries,
//! on one machine, with the harness in the control plane's place
//! (CONTRACT.md V).
//!
//! Built so far: [`ns`], the namespaces the node runs in, and atelet's
//! gRPC API (the `ate-atelet-api` crate: messages written from the API
//! facts, a client, a server for the stand-in), and [`s3`], the S3
//! endpoint for EXTERNAL snapshots, and the runsc adapter (the
//! `ate-runsc-adapter` crate: placed in atelet's asset cache, it drops the
//! flags ateom passes that the runsc under test lacks, and logs which).
//! Also [`layout`] (upstream's node paths), [`agents`] (atelet and one
//! ateom per worker, started and stopped by PID) and [`sandboxes`] (the
//! runsc sandboxes ateom leaves, ended by PID from runsc's state files).
//! Driven by hand against upstream's real atelet and ateom-gvisor
//! (86e138f6, built outside the repo) these pieces ran the whole golden →
//! checkpoint → two restores on two workers → suspend → resume sequence,
//! each actor answering its own ID through the DNAT path. Not yet: the
//! backend itself (the registry in the node, the routing front, the
//! Backend impl, the run record and gc) and the in-repo stand-in CI tests it against; until
//! then `--backend node` is not offered.

pub mod agents;
pub mod layout;
pub mod ns;
pub mod s3;
pub mod sandboxes;
