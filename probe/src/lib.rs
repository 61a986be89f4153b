//! The probe's endpoints and its blocking HTTP/1.1 server, shared by the
//! probe binaries: `ate-probe` (blocking std I/O, main.rs) and
//! `ate-probe-tokio` (the same endpoints behind an epoll-based tokio/hyper
//! server, written the way real actors are). The minimal probe
//! (`ate-probe-minimal`) shares nothing: it stands for a probe we do not
//! own.

pub mod http;
mod mountinfo;
pub mod routes;
