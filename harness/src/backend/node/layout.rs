//! Where atelet and ateom-gvisor keep things on the node, as seen from the
//! host: this run's directory that the node sees as
//! `/var/lib/ateom-gvisor` ([`super::ns::Node::var_lib`]). Every path is
//! upstream's (`internal/ateompath/ateompath.go` at 86e138f6, lines cited
//! per function); the host-side trials read the real atelet's directories
//! through these.

use std::path::{Path, PathBuf};

/// The base path inside the node (`ateompath.go:25`, `BasePath`).
pub const IN_NODE: &str = "/var/lib/ateom-gvisor";

/// The node's directory layout, rooted at the host directory behind
/// [`IN_NODE`].
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root` (the host side of [`IN_NODE`]).
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_owned(),
        }
    }

    /// The host directory behind [`IN_NODE`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Downloaded sandbox assets (`ateompath.go:29-30`, `StaticFilesDir`).
    pub fn static_files(&self) -> PathBuf {
        self.root.join("static-files")
    }

    /// The runsc with this sha256 (`ateompath.go:33-34`,
    /// `RunSCBinaryPath`): a file already there is used without download.
    pub fn runsc(&self, sha256: &str) -> PathBuf {
        self.static_files().join(format!("runsc-{sha256}"))
    }

    /// [`Layout::runsc`] as the node sees it.
    pub fn runsc_in_node(sha256: &str) -> String {
        format!("{IN_NODE}/static-files/runsc-{sha256}")
    }

    /// A worker's directory (`ateompath.go:37-43`, `AteomPath`).
    pub fn ateom(&self, pod_uid: &str) -> PathBuf {
        self.root.join("ateoms").join(pod_uid)
    }

    /// A worker's gRPC socket (`ateompath.go:45-50`, `AteomSocketPath`).
    pub fn ateom_socket(&self, pod_uid: &str) -> PathBuf {
        self.ateom(pod_uid).join("ateom.sock")
    }

    /// An actor's directory: `actors/<ns>:<template>:<id>`
    /// (`ateompath.go:63-74`, `ActorPath`).
    pub fn actor(&self, namespace: &str, template: &str, actor: &str) -> PathBuf {
        self.root
            .join("actors")
            .join(format!("{namespace}:{template}:{actor}"))
    }

    /// The actor's identity directory, bind-mounted read-only at `/run/ate`
    /// in its app containers (`ateompath.go:76-81`, `ActorIdentityDirPath`).
    pub fn identity(&self, namespace: &str, template: &str, actor: &str) -> PathBuf {
        self.actor(namespace, template, actor).join("identity")
    }

    /// The actor's runsc state root, `-root` of every runsc call
    /// (`ateompath.go:96-101`, `RunSCStateDir`).
    pub fn runsc_state(&self, namespace: &str, template: &str, actor: &str) -> PathBuf {
        self.actor(namespace, template, actor).join("runsc-state")
    }

    /// One container's OCI bundle (`ateompath.go:110-115`, `OCIBundlePath`).
    pub fn bundle(&self, namespace: &str, template: &str, actor: &str, container: &str) -> PathBuf {
        self.actor(namespace, template, actor)
            .join("bundles")
            .join(container)
    }
}
