//! The OCI bundle of a container: its `config.json`, built with the
//! `oci-spec` builders (never hand-written JSON).
//!
//! The identity contract's part of it: an application container gets a
//! read-only bind mount of its actor's own identity *directory* at
//! `/run/ate` (ID-6, ID-7); a container with [`IdentityMount::None`] (the
//! pause container, ID-12) gets no mount there at all. The CRI annotations
//! tell gVisor which container is the sandbox's root (pause) and which
//! joins it ([`SandboxPart`]). The rest mirrors what `runsc spec`
//! generates, plus `/dev/pts` and `/dev/shm`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use oci_spec::OciSpecError;

use crate::identity::{self, IdentityError};

/// Where the actor's identity directory is mounted inside the container
/// (ID-1).
pub const IDENTITY_MOUNT_POINT: &str = "/run/ate";

/// Where the agent's helper directory (its relay binary) is mounted inside
/// the container.
pub const HELPER_MOUNT_POINT: &str = "/.ate";

/// The name of the runtime config inside a bundle directory.
pub const CONFIG_FILE: &str = "config.json";

/// The OCI runtime spec version written into `config.json` (as `runsc
/// spec` does).
pub const OCI_VERSION: &str = "1.0.0";

/// What, if anything, is mounted at [`IDENTITY_MOUNT_POINT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityMount {
    /// No identity mount (the pause container, ID-12).
    None,
    /// A read-only (`ro,nosuid,nodev,noexec`) recursive bind mount of this
    /// host directory (ID-6, ID-7). Must be absolute.
    ReadOnlyDir(PathBuf),
    /// FAULT `writable-mount` (breaks ID-6 "the mount is read-only"): the
    /// same bind mount of the directory, without `ro`.
    FaultWritableDir(PathBuf),
    /// FAULT `file-mount` (breaks ID-7 "what is mounted is the directory,
    /// not a single file"): a bind mount of this host *file* at
    /// `/run/ate/actor-id`; `/run/ate` itself is then part of the rootfs.
    FaultFile(PathBuf),
}

/// Which container of an actor's sandbox a bundle is for, as the CRI
/// annotations gVisor reads say it: the pause container is the sandbox
/// (`io.kubernetes.cri.container-type: sandbox`), the app container joins
/// the sandbox named by `io.kubernetes.cri.sandbox-id` (upstream's atelet
/// writes the same, `cmd/atelet/main.go:668-670` and `:722-726` at
/// 86e138f6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxPart {
    /// The sandbox's root (infrastructure) container.
    Pause,
    /// An application container in the sandbox whose pause container has
    /// this ID.
    App {
        /// The pause container's ID.
        sandbox_id: String,
    },
}

/// The CRI annotation naming a container's type.
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// The CRI annotation naming the sandbox an app container joins.
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// The CRI annotation naming the container within its sandbox.
pub const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";

impl SandboxPart {
    fn annotations(&self) -> std::collections::HashMap<String, String> {
        let pairs: Vec<(&str, &str)> = match self {
            SandboxPart::Pause => vec![
                (CRI_CONTAINER_TYPE, "sandbox"),
                (CRI_CONTAINER_NAME, "pause"),
            ],
            SandboxPart::App { sandbox_id } => vec![
                (CRI_CONTAINER_TYPE, "container"),
                (CRI_SANDBOX_ID, sandbox_id),
                (CRI_CONTAINER_NAME, "app"),
            ],
        };
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// Everything that varies between the containers the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSpec {
    /// The process's argument vector; `args[0]` is the program. Not empty.
    pub args: Vec<String>,
    /// The process's environment, `NAME=value` each.
    pub env: Vec<String>,
    /// The process's working directory inside the container (absolute).
    pub cwd: String,
    /// The container's hostname (gVisor shows `runsc` regardless).
    pub hostname: String,
    /// The extracted root filesystem on the host (absolute).
    pub rootfs: PathBuf,
    /// Whether the root filesystem is mounted read-only.
    pub readonly_root: bool,
    /// The identity mount at [`IDENTITY_MOUNT_POINT`].
    pub identity: IdentityMount,
    /// A host directory bind-mounted read-only (but executable) at
    /// [`HELPER_MOUNT_POINT`], if any (absolute).
    pub helper_dir: Option<PathBuf>,
    /// Its part in the actor's sandbox (the CRI annotations).
    pub part: SandboxPart,
}

/// A bundle that cannot be built or written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A host or container path that must be absolute is relative.
    #[error("{what} must be an absolute path (got {})", path.display())]
    RelativePath {
        /// Which path: "rootfs", "identity directory", "identity file",
        /// "helper directory" or "cwd".
        what: &'static str,
        /// The path as given.
        path: PathBuf,
    },
    /// The process argument vector is empty.
    #[error("process args must not be empty")]
    EmptyArgs,
    /// An `oci-spec` builder rejected a value.
    #[error("cannot build the oci runtime spec")]
    Build {
        /// The cause.
        #[source]
        source: OciSpecError,
    },
    /// The spec cannot be serialized to JSON.
    #[error("cannot serialize the oci runtime spec")]
    Serialize {
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Writing `config.json` failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The `config.json` path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: IdentityError,
    },
}

impl From<OciSpecError> for BundleError {
    fn from(source: OciSpecError) -> Self {
        BundleError::Build { source }
    }
}

/// Builds the runtime spec of one container (ID-6, ID-7, ID-12).
///
/// Process: not a terminal, user 0:0, `CAP_AUDIT_WRITE`, `CAP_KILL` and
/// `CAP_NET_BIND_SERVICE` (bounding, effective, permitted), no new
/// privileges, `RLIMIT_NOFILE` 1024. Mounts, in order: `/proc`, `/dev`,
/// `/dev/pts`, `/dev/shm`, `/sys` (read-only), then the identity mount
/// `{/run/ate, bind, <dir>, [rbind, ro, nosuid, nodev, noexec]}` when
/// [`IdentityMount::ReadOnlyDir`], then the helper mount
/// `{/.ate, bind, <dir>, [rbind, ro, nosuid, nodev]}` (executable: the
/// agent runs its relay from there) when `helper_dir` is set. Namespaces:
/// pid, network, ipc, uts, mount, without paths.
pub fn build_spec(spec: &BundleSpec) -> Result<Spec, BundleError> {
    require_absolute("rootfs", &spec.rootfs)?;
    require_absolute("cwd", Path::new(&spec.cwd))?;
    if spec.args.is_empty() {
        return Err(BundleError::EmptyArgs);
    }

    let caps: oci_spec::runtime::Capabilities = [
        Capability::AuditWrite,
        Capability::Kill,
        Capability::NetBindService,
    ]
    .into_iter()
    .collect();
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    // The builder fills unset sets from its defaults; these stay empty.
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);

    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(spec.args.clone())
        .env(spec.env.clone())
        .cwd(spec.cwd.clone())
        .capabilities(capabilities)
        .no_new_privileges(true)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(1024u64)
            .soft(1024u64)
            .build()?])
        .build()?;

    let root = RootBuilder::default()
        .path(spec.rootfs.clone())
        .readonly(spec.readonly_root)
        .build()?;

    let mut mounts = vec![
        mount("/proc", "proc", "proc", &[])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ];
    match &spec.identity {
        IdentityMount::None => {}
        IdentityMount::ReadOnlyDir(dir) => {
            require_absolute("identity directory", dir)?;
            mounts.push(bind(
                IDENTITY_MOUNT_POINT,
                dir,
                &["rbind", "ro", "nosuid", "nodev", "noexec"],
            )?);
        }
        // FAULT writable-mount: breaks ID-6 (the mount is read-only).
        IdentityMount::FaultWritableDir(dir) => {
            require_absolute("identity directory", dir)?;
            mounts.push(bind(
                IDENTITY_MOUNT_POINT,
                dir,
                &["rbind", "nosuid", "nodev", "noexec"],
            )?);
        }
        // FAULT file-mount: breaks ID-7 (the directory is mounted, not a
        // single file).
        IdentityMount::FaultFile(file) => {
            require_absolute("identity file", file)?;
            mounts.push(bind(
                &format!("{IDENTITY_MOUNT_POINT}/{}", identity::ACTOR_ID_FILE),
                file,
                &["rbind", "ro", "nosuid", "nodev", "noexec"],
            )?);
        }
    }
    if let Some(dir) = &spec.helper_dir {
        require_absolute("helper directory", dir)?;
        mounts.push(bind(
            HELPER_MOUNT_POINT,
            dir,
            &["rbind", "ro", "nosuid", "nodev"],
        )?);
    }

    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()?;
    let mut linux = LinuxBuilder::default().namespaces(namespaces).build()?;
    // The builder fills unset fields from `Linux::default()`; like `runsc
    // spec`, keep only the namespaces.
    linux.set_resources(None);
    linux.set_masked_paths(None);
    linux.set_readonly_paths(None);

    let mut out = SpecBuilder::default()
        .version(OCI_VERSION)
        .process(process)
        .root(root)
        .hostname(spec.hostname.clone())
        .mounts(mounts)
        .linux(linux)
        .build()?;
    out.set_annotations(Some(spec.part.annotations()));
    Ok(out)
}

/// Writes `spec` as `bundle_dir/config.json`, atomically (temp file, fsync,
/// rename, fsync of the directory), mode 0644. `bundle_dir` must exist.
pub fn write_bundle(bundle_dir: &Path, spec: &Spec) -> Result<(), BundleError> {
    let json =
        serde_json::to_vec_pretty(spec).map_err(|source| BundleError::Serialize { source })?;
    identity::write_file_atomic(bundle_dir, CONFIG_FILE, &json, 0o644).map_err(|source| {
        BundleError::Write {
            path: bundle_dir.join(CONFIG_FILE),
            source,
        }
    })
}

fn require_absolute(what: &'static str, path: &Path) -> Result<(), BundleError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(BundleError::RelativePath {
            what,
            path: path.to_owned(),
        })
    }
}

fn mount(
    destination: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<Mount, OciSpecError> {
    let mut b = MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source);
    if !options.is_empty() {
        b = b.options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>());
    }
    b.build()
}

fn bind(destination: &str, source: &Path, options: &[&str]) -> Result<Mount, OciSpecError> {
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn base() -> BundleSpec {
        BundleSpec {
            args: vec!["/probe".into(), "--port".into(), "80".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            hostname: "probe".into(),
            rootfs: "/var/lib/ate/rootfs".into(),
            readonly_root: true,
            identity: IdentityMount::ReadOnlyDir("/var/lib/ate/actors/ns/a/identity".into()),
            helper_dir: None,
            part: SandboxPart::App {
                sandbox_id: "ate-0123abcd-00000001".into(),
            },
        }
    }

    #[test]
    fn cri_annotations_put_the_app_into_the_pause_sandbox() {
        let app = roundtrip(&base());
        assert_eq!(
            app["annotations"],
            serde_json::json!({
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.sandbox-id": "ate-0123abcd-00000001",
                "io.kubernetes.cri.container-name": "app",
            })
        );
        let pause = roundtrip(&BundleSpec {
            part: SandboxPart::Pause,
            identity: IdentityMount::None,
            ..base()
        });
        assert_eq!(
            pause["annotations"],
            serde_json::json!({
                "io.kubernetes.cri.container-type": "sandbox",
                "io.kubernetes.cri.container-name": "pause",
            })
        );
    }

    /// The spec as JSON, written and read back through `write_bundle`.
    fn roundtrip(spec: &BundleSpec) -> Value {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), &build_spec(spec).unwrap()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [CONFIG_FILE], "temp files left behind");
        let text = std::fs::read(dir.path().join(CONFIG_FILE)).unwrap();
        serde_json::from_slice(&text).unwrap()
    }

    fn mounts_at<'a>(json: &'a Value, destination: &str) -> Vec<&'a Value> {
        json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["destination"] == destination)
            .collect()
    }

    fn options(m: &Value) -> Vec<&str> {
        m["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap())
            .collect()
    }

    #[test]
    fn identity_dir_is_one_readonly_bind_mount() {
        let json = roundtrip(&base());
        let at = mounts_at(&json, IDENTITY_MOUNT_POINT);
        assert_eq!(at.len(), 1, "{json:#}");
        let m = at[0];
        assert_eq!(m["type"], "bind");
        assert_eq!(m["source"], "/var/lib/ate/actors/ns/a/identity");
        assert_eq!(options(m), ["rbind", "ro", "nosuid", "nodev", "noexec"]);
        // Nothing else mounts anything at or below /run/ate.
        let below = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["destination"].as_str().unwrap().starts_with("/run/ate/"))
            .count();
        assert_eq!(below, 0);
        // The identity mount comes after the /dev, /proc, /sys mounts.
        let dests: Vec<_> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            ["/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/run/ate"]
        );
    }

    #[test]
    fn fault_writable_mount_is_the_dir_without_ro() {
        let json = roundtrip(&BundleSpec {
            identity: IdentityMount::FaultWritableDir("/var/lib/ate/actors/ns/a/identity".into()),
            ..base()
        });
        let at = mounts_at(&json, IDENTITY_MOUNT_POINT);
        assert_eq!(at.len(), 1, "{json:#}");
        assert_eq!(at[0]["type"], "bind");
        assert_eq!(at[0]["source"], "/var/lib/ate/actors/ns/a/identity");
        let opts = options(at[0]);
        assert!(!opts.contains(&"ro"), "{opts:?}");
        assert!(opts.contains(&"rbind"), "{opts:?}");
    }

    #[test]
    fn fault_file_mount_binds_the_file_not_the_dir() {
        let json = roundtrip(&BundleSpec {
            identity: IdentityMount::FaultFile("/var/lib/ate/actors/ns/a/identity/actor-id".into()),
            ..base()
        });
        assert!(
            mounts_at(&json, IDENTITY_MOUNT_POINT).is_empty(),
            "{json:#}"
        );
        let at = mounts_at(&json, "/run/ate/actor-id");
        assert_eq!(at.len(), 1, "{json:#}");
        assert_eq!(at[0]["type"], "bind");
        assert_eq!(
            at[0]["source"],
            "/var/lib/ate/actors/ns/a/identity/actor-id"
        );
        assert!(options(at[0]).contains(&"ro"));
        let rel = build_spec(&BundleSpec {
            identity: IdentityMount::FaultFile("identity/actor-id".into()),
            ..base()
        })
        .unwrap_err();
        assert!(
            matches!(
                rel,
                BundleError::RelativePath {
                    what: "identity file",
                    ..
                }
            ),
            "{rel:?}"
        );
    }

    #[test]
    fn no_identity_mount_for_none() {
        let json = roundtrip(&BundleSpec {
            identity: IdentityMount::None,
            ..base()
        });
        assert!(
            mounts_at(&json, IDENTITY_MOUNT_POINT).is_empty(),
            "{json:#}"
        );
        assert!(!json.to_string().contains("/run/ate"));
    }

    #[test]
    fn root_process_and_namespaces() {
        let json = roundtrip(&base());
        assert_eq!(json["ociVersion"], OCI_VERSION);
        assert_eq!(json["root"]["path"], "/var/lib/ate/rootfs");
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(json["hostname"], "probe");
        let p = &json["process"];
        assert_eq!(p["args"], serde_json::json!(["/probe", "--port", "80"]));
        assert_eq!(p["env"], serde_json::json!(["PATH=/bin"]));
        assert_eq!(p["cwd"], "/");
        assert_eq!(p["terminal"], false);
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(p["user"]["uid"], 0);
        assert_eq!(p["user"]["gid"], 0);
        for set in ["bounding", "effective", "permitted"] {
            let mut caps: Vec<_> = p["capabilities"][set]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            caps.sort();
            assert_eq!(
                caps,
                ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "{set}"
            );
        }
        assert!(p["capabilities"].get("ambient").is_none());
        assert!(p["capabilities"].get("inheritable").is_none());
        let ns: Vec<_> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                assert!(n.get("path").is_none());
                n["type"].as_str().unwrap()
            })
            .collect();
        assert_eq!(ns, ["pid", "network", "ipc", "uts", "mount"]);
        let writable = roundtrip(&BundleSpec {
            readonly_root: false,
            ..base()
        });
        assert_eq!(writable["root"]["readonly"], false);
    }

    #[test]
    fn helper_mount_is_readonly_but_executable() {
        let json = roundtrip(&BundleSpec {
            helper_dir: Some("/var/lib/ate/helper".into()),
            ..base()
        });
        let at = mounts_at(&json, HELPER_MOUNT_POINT);
        assert_eq!(at.len(), 1, "{json:#}");
        assert_eq!(at[0]["type"], "bind");
        assert_eq!(at[0]["source"], "/var/lib/ate/helper");
        let opts = options(at[0]);
        assert!(opts.contains(&"ro") && opts.contains(&"rbind"), "{opts:?}");
        assert!(!opts.contains(&"noexec"), "{opts:?}");
        assert!(mounts_at(&roundtrip(&base()), HELPER_MOUNT_POINT).is_empty());
    }

    #[test]
    fn rejects_relative_paths_and_empty_args() {
        let cases = [
            BundleSpec {
                rootfs: "rootfs".into(),
                ..base()
            },
            BundleSpec {
                identity: IdentityMount::ReadOnlyDir("identity".into()),
                ..base()
            },
            BundleSpec {
                helper_dir: Some("helper".into()),
                ..base()
            },
            BundleSpec {
                cwd: "tmp".into(),
                ..base()
            },
        ];
        for spec in cases {
            let err = build_spec(&spec).unwrap_err();
            assert!(matches!(err, BundleError::RelativePath { .. }), "{err:?}");
            assert!(
                err.to_string().contains("must be an absolute path"),
                "{err}"
            );
        }
        let err = build_spec(&BundleSpec {
            args: vec![],
            ..base()
        })
        .unwrap_err();
        assert!(matches!(err, BundleError::EmptyArgs), "{err:?}");
    }

    #[test]
    fn rewrite_replaces_config() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), &build_spec(&base()).unwrap()).unwrap();
        let other = BundleSpec {
            identity: IdentityMount::ReadOnlyDir("/other/identity".into()),
            ..base()
        };
        write_bundle(dir.path(), &build_spec(&other).unwrap()).unwrap();
        let loaded = Spec::load(dir.path().join(CONFIG_FILE)).unwrap();
        assert_eq!(loaded, build_spec(&other).unwrap());
    }

    #[test]
    fn missing_bundle_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            write_bundle(&dir.path().join("nope"), &build_spec(&base()).unwrap()).unwrap_err();
        assert!(matches!(err, BundleError::Write { .. }), "{err:?}");
    }
}
