//! The node backend's flag group and what this machine needs for it.

use std::path::{Path, PathBuf};

use crate::flags::{Spec, Values};

/// The node backend's options.
pub const FLAGS: &[Spec] = &[
    Spec {
        flag: "--atelet-bin",
        env: "ATE_ATELET_BIN",
        value: Some("PATH"),
        help: "the atelet binary under test (your build of upstream's cmd/atelet)",
    },
    Spec {
        flag: "--ateom-bin",
        env: "ATE_ATEOM_BIN",
        value: Some("PATH"),
        help: "the ateom-gvisor binary under test (your build of cmd/ateom-gvisor)",
    },
    Spec {
        flag: "--node-workers",
        env: "ATE_NODE_WORKERS",
        value: Some("N"),
        help: "worker pods (one ateom each, one actor at a time; default 5)",
    },
    Spec {
        flag: "--node-runsc",
        env: "ATE_NODE_RUNSC",
        value: Some("PATH"),
        help: "the runsc ateom drives, through the adapter (default: runsc on PATH)",
    },
];

/// Workers unless told: two trials at once with two actors each, plus the
/// ID-13 trial's golden runs.
pub const DEFAULT_WORKERS: usize = 5;

/// What the node flags say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFlags {
    /// atelet.
    pub atelet: Option<PathBuf>,
    /// ateom-gvisor.
    pub ateom: Option<PathBuf>,
    /// Worker pods.
    pub workers: usize,
    /// The real runsc.
    pub runsc: PathBuf,
}

impl NodeFlags {
    /// Reads the group.
    pub fn from_values(v: &Values<'_>) -> anyhow::Result<NodeFlags> {
        let workers = match v.get("--node-workers") {
            None => DEFAULT_WORKERS,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=super::ns::Node::MAX_WORKERS).contains(&n) => n,
                _ => anyhow::bail!(
                    "invalid --node-workers/ATE_NODE_WORKERS {s:?}: a number of workers from 1 to {}",
                    super::ns::Node::MAX_WORKERS
                ),
            },
        };
        Ok(NodeFlags {
            atelet: v.get("--atelet-bin").map(PathBuf::from),
            ateom: v.get("--ateom-bin").map(PathBuf::from),
            workers,
            runsc: v
                .get("--node-runsc")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("runsc")),
        })
    }

    /// What this machine or the command line lacks, if anything: the two
    /// binaries (a user who picked this backend gets a failure naming
    /// them, not a skip: see [`crate::backend::select`]), root, runsc,
    /// `docker-registry`, `unshare`/`nsenter`/`ip`.
    pub fn missing(&self) -> Option<String> {
        let bin = |p: &Option<PathBuf>, flag: &str, env: &str, what: &str| -> Option<String> {
            match p {
                None => Some(format!(
                    "the node backend runs your build of upstream's {what}: give it with {flag} PATH (or {env})"
                )),
                Some(p) if !is_executable(p) => Some(format!(
                    "{flag} {} is not an executable file",
                    p.display()
                )),
                Some(_) => None,
            }
        };
        if let Some(m) = bin(
            &self.atelet,
            "--atelet-bin",
            "ATE_ATELET_BIN",
            "atelet (cmd/atelet)",
        ) {
            return Some(m);
        }
        if let Some(m) = bin(
            &self.ateom,
            "--ateom-bin",
            "ATE_ATEOM_BIN",
            "ateom-gvisor (cmd/ateom-gvisor)",
        ) {
            return Some(m);
        }
        if !rustix::process::geteuid().is_root() {
            return Some(
                "the node backend makes namespaces and runs gVisor sandboxes: run the suite as root".into(),
            );
        }
        if which::which(&self.runsc).is_err() {
            return Some(format!(
                "runsc not found ({}); install it with: apt-get install -y -t bookworm-backports runsc",
                self.runsc.display()
            ));
        }
        for (program, package) in [
            (super::registry::PROGRAM, "docker-registry"),
            ("unshare", "util-linux"),
            ("nsenter", "util-linux"),
            ("ip", "iproute2"),
        ] {
            if which::which(program).is_err() {
                return Some(format!(
                    "{program} not found; install it with: apt-get install -y {package}"
                ));
            }
        }
        None
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
