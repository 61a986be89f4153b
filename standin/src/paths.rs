//! The node paths atelet and ateom-gvisor agree on, as upstream builds them
//! (`internal/ateompath/ateompath.go` at 86e138f6, lines cited per
//! function), plus the two files only the stand-in keeps (named so).
//!
//! **Invariant:** every path under the base is built from names that
//! [`check_name`] accepted, so no request can point one outside its
//! directory (upstream validates the same fields before building a path,
//! `cmd/atelet/main.go:820-906`).

use std::path::{Path, PathBuf};

/// The base of everything (`ateompath.go:22-26`).
pub const BASE_PATH: &str = "/var/lib/ateom-gvisor";

/// Where actor network namespaces are named (`ateompath.go:52-60`); not
/// under the base.
pub const NETNS_DIR: &str = "/run/netns";

/// The runsc container ID of an actor's pause container (its bundle
/// directory has the same name; `cmd/atelet/main.go:682-692`,
/// `cmd/ateom-gvisor/main.go:207-213`). Application containers are named
/// by the request's container names.
pub const PAUSE: &str = "pause";

/// A template's actor: the three names every request carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActorRef {
    /// The template's namespace.
    pub namespace: String,
    /// The template's name.
    pub template: String,
    /// The actor's ID.
    pub id: String,
}

impl std::fmt::Display for ActorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.namespace, self.template, self.id)
    }
}

/// A name that cannot become a path component.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct NameError {
    /// Which field.
    pub what: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// Accepts a name that is safe as one path component: not empty, not `.`
/// or `..`, no `/`, no NUL, at most 253 bytes.
pub fn check_name(what: &'static str, value: &str) -> Result<(), NameError> {
    let bad = |reason| {
        Err(NameError {
            what,
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() {
        return bad("must not be empty");
    }
    if value == "." || value == ".." {
        return bad("must not be . or ..");
    }
    if value.contains('/') || value.contains('\0') {
        return bad("must not contain '/' or NUL");
    }
    if value.len() > 253 {
        return bad("is longer than 253 bytes");
    }
    Ok(())
}

/// The node's directory tree, rooted at [`BASE_PATH`] (tests may root it
/// elsewhere).
#[derive(Debug, Clone)]
pub struct Paths {
    base: PathBuf,
    netns_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths::new(Path::new(BASE_PATH), Path::new(NETNS_DIR))
    }
}

impl Paths {
    /// A tree rooted at `base`, netns names in `netns_dir`.
    pub fn new(base: &Path, netns_dir: &Path) -> Paths {
        Paths {
            base: base.to_owned(),
            netns_dir: netns_dir.to_owned(),
        }
    }

    /// The base.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// `static-files/` (`ateompath.go:28-31`).
    pub fn static_files(&self) -> PathBuf {
        self.base.join("static-files")
    }

    /// `static-files/runsc-<sha256>` (`ateompath.go:33-35`).
    pub fn runsc_binary(&self, sha256: &str) -> PathBuf {
        self.static_files().join(format!("runsc-{sha256}"))
    }

    /// `ateoms/<uid>` (`ateompath.go:37-43`).
    pub fn ateom(&self, uid: &str) -> PathBuf {
        self.base.join("ateoms").join(uid)
    }

    /// `ateoms/<uid>/ateom.sock` (`ateompath.go:45-50`).
    pub fn ateom_socket(&self, uid: &str) -> PathBuf {
        self.ateom(uid).join("ateom.sock")
    }

    /// Stand-in only: `ateoms/<uid>/standin-pid`, the ateom stand-in's
    /// PID: the atelet stand-in makes its readiness connections in that
    /// process's (the pod's) netns, where upstream's ateom makes them
    /// (`cmd/ateom-gvisor/main.go:231-234`).
    pub fn ateom_pid_file(&self, uid: &str) -> PathBuf {
        self.ateom(uid).join("standin-pid")
    }

    /// `ateom:<uid>`, the actor netns's name (`ateompath.go:52-54`).
    pub fn netns_name(uid: &str) -> String {
        format!("ateom:{uid}")
    }

    /// `/run/netns/ateom:<uid>` (`ateompath.go:52-60`).
    pub fn netns(&self, uid: &str) -> PathBuf {
        self.netns_dir.join(Paths::netns_name(uid))
    }

    /// `actors/<ns>:<template>:<id>` (`ateompath.go:63-69`).
    pub fn actor(&self, a: &ActorRef) -> PathBuf {
        self.base.join("actors").join(a.to_string())
    }

    /// `<actor>/identity` (`ateompath.go:71-81`).
    pub fn identity(&self, a: &ActorRef) -> PathBuf {
        self.actor(a).join("identity")
    }

    /// `<actor>/sandbox-assets.json` (`ateompath.go:83-94`).
    pub fn sandbox_assets_file(&self, a: &ActorRef) -> PathBuf {
        self.actor(a).join("sandbox-assets.json")
    }

    /// `<actor>/runsc-state`, runsc's `-root` (`ateompath.go:96-101`).
    pub fn runsc_state(&self, a: &ActorRef) -> PathBuf {
        self.actor(a).join("runsc-state")
    }

    /// `<actor>/bundles` (`ateompath.go:103-108`).
    pub fn bundles(&self, a: &ActorRef) -> PathBuf {
        self.actor(a).join("bundles")
    }

    /// `<actor>/bundles/<container>` (`ateompath.go:110-115`).
    pub fn bundle(&self, a: &ActorRef, container: &str) -> PathBuf {
        self.bundles(a).join(container)
    }

    /// `<actor>/runsc-debug-logs/<container>` (`ateompath.go:117-123`);
    /// the stand-in keeps each container's console log there.
    pub fn runsc_logs(&self, a: &ActorRef, container: &str) -> PathBuf {
        self.actor(a).join("runsc-debug-logs").join(container)
    }

    /// `<actor>/checkpoint-state` (`ateompath.go:125-130`).
    pub fn checkpoint_state(&self, a: &ActorRef) -> PathBuf {
        self.actor(a).join("checkpoint-state")
    }

    /// `<actor>/local-checkpoint` (`ateompath.go:132-137`).
    pub fn local_checkpoints(&self, a: &ActorRef) -> PathBuf {
        self.actor(a).join("local-checkpoint")
    }

    /// `<actor>/durable-dir` (`ateompath.go:139-146`).
    pub fn durable_dirs(&self, a: &ActorRef) -> PathBuf {
        self.actor(a).join("durable-dir")
    }

    /// `<actor>/restore-state` (`ateompath.go:156-172`).
    pub fn restore_state(&self, a: &ActorRef) -> PathBuf {
        self.actor(a).join("restore-state")
    }

    /// `<actor>/pidfiles` (`ateompath.go:174-179`).
    pub fn pidfiles(&self, a: &ActorRef) -> PathBuf {
        self.actor(a).join("pidfiles")
    }

    /// `<actor>/pidfiles/<container>.pid` (`ateompath.go:181-186`).
    pub fn pidfile(&self, a: &ActorRef, container: &str) -> PathBuf {
        self.pidfiles(a).join(format!("{container}.pid"))
    }

    /// Stand-in only: `standin-images/`, unpacked images by manifest
    /// digest (upstream keeps its pull cache in memory,
    /// `cmd/atelet/internal/memorypullcache`).
    pub fn image_cache(&self) -> PathBuf {
        self.base.join("standin-images")
    }

    /// What atelet's `resetActorDirs` empties and recreates, with each
    /// one's mode (`cmd/atelet/main.go:947-1009`; the runsc logs are left
    /// alone there too).
    pub fn reset_dirs(&self, a: &ActorRef) -> [(PathBuf, u32); 7] {
        [
            (self.bundles(a), 0o700),
            (self.runsc_state(a), 0o700),
            (self.pidfiles(a), 0o700),
            (self.checkpoint_state(a), 0o700),
            (self.restore_state(a), 0o700),
            (self.identity(a), 0o755),
            (self.durable_dirs(a), 0o755),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_upstreams() {
        let p = Paths::default();
        let a = ActorRef {
            namespace: "ns".into(),
            template: "t".into(),
            id: "probe-alpha".into(),
        };
        assert_eq!(
            p.actor(&a),
            Path::new("/var/lib/ateom-gvisor/actors/ns:t:probe-alpha")
        );
        assert_eq!(p.identity(&a), p.actor(&a).join("identity"));
        assert_eq!(p.bundle(&a, PAUSE), p.actor(&a).join("bundles/pause"));
        assert_eq!(p.pidfile(&a, "app"), p.actor(&a).join("pidfiles/app.pid"));
        assert_eq!(
            p.ateom_socket("w0"),
            Path::new("/var/lib/ateom-gvisor/ateoms/w0/ateom.sock")
        );
        assert_eq!(p.netns("w0"), Path::new("/run/netns/ateom:w0"));
        assert_eq!(
            p.runsc_binary("ab"),
            Path::new("/var/lib/ateom-gvisor/static-files/runsc-ab")
        );
    }

    #[test]
    fn names_that_are_not_one_component_are_refused() {
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(check_name("actor id", bad).is_err(), "{bad:?}");
        }
        check_name("actor id", "probe-alpha").unwrap();
    }
}
