//! The kind backend: Agent Substrate on a kind cluster (CONTRACT.md III).

pub mod kube;
pub mod oci;
pub mod plan;
pub mod portforward;
pub mod tools;
