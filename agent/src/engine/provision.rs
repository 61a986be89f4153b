//! Provisioning: how an actor's host side is laid out before runsc sees
//! it — its directories, its identity file, the app rootfs with the
//! identity mount point, the pause container's own minimal rootfs, and the
//! two fresh `config.json` files (pause and app) of its sandbox.
//!
//! [`Provisioner`] is that one seam. Its default methods are the healthy
//! agent ([`Healthy`] overrides nothing); each fault mode of the self-test
//! is another implementation (`faults.rs`) that overrides the one or two
//! steps it gets wrong, documented with the contract statement it breaks.
//! The engine holds one `Box<dyn Provisioner>`, chosen once from the
//! config ([`for_config`]); nothing else in the engine looks at a fault.
//!
//! **Invariants (healthy).** The per-run directories (bundle, identity,
//! rootfs) are deleted and recreated at every run/restore and after every
//! suspend's checkpoint (ID-10); `actor-id` is written atomically with
//! exactly the ID bytes (ID-9, ID-2); the mount point `run/ate` is created
//! with resolution confined to the rootfs (ID-13); the identity mount is a
//! read-only bind of the actor's own directory (ID-6/7/8) in the app
//! container only: the pause container gets no identity mount and its
//! rootfs no `run/ate` (ID-12), as upstream's atelet gives it none
//! (`cmd/atelet/main.go:682-694` at 86e138f6).

use std::path::{Path, PathBuf};

use super::sandbox::Sandbox;
use super::{host_err, ActorDirs, EngineError, TemplateSpec};
use crate::bundle::{self, BundleSpec, IdentityMount, SandboxPart};
use crate::fault::Fault;
use crate::identity::{self, IdentityError};
use crate::rootfs;

mod faults;

/// Where a template keeps the image its actors' rootfs are made from.
#[derive(Debug, Clone)]
pub(super) struct TemplateImage {
    /// `templates/<name>/image-bin`: the template's binary, hard-linked.
    pub(super) bin: PathBuf,
    /// `templates/<name>/image-tree`: the template's image dir, if any.
    pub(super) tree: PathBuf,
}

impl TemplateImage {
    /// The image of the template whose directory is `template_dir`.
    pub(super) fn in_dir(template_dir: &Path) -> Self {
        TemplateImage {
            bin: template_dir.join("image-bin"),
            tree: template_dir.join("image-tree"),
        }
    }
}

/// One run/restore's worth of provisioning: what to lay out, for whom.
#[derive(Debug, Clone, Copy)]
pub(super) struct Provision<'a> {
    /// The template's spec (args, env).
    pub(super) spec: &'a TemplateSpec,
    /// Its image.
    pub(super) image: &'a TemplateImage,
    /// The actor's directories.
    pub(super) dirs: &'a ActorDirs,
    /// The actor's ID.
    pub(super) actor_id: &'a str,
    /// The agent's helper dir, mounted at `/.ate` (the relay).
    pub(super) helper_dir: &'a Path,
    /// The agent binary in it: the pause container's program.
    pub(super) helper_bin: &'a Path,
}

/// The pause container's program inside its rootfs, and its arguments
/// (the agent binary's `pause` subcommand).
pub(super) const PAUSE_ARGS: [&str; 2] = ["/pause", "pause"];

/// How an actor's host side is provisioned (see the module docs). Every
/// default method is the healthy agent's step.
pub(super) trait Provisioner: Send + Sync + 'static {
    /// The fault this provisioner reproduces (`None`: healthy).
    fn fault(&self) -> Option<Fault> {
        None
    }

    /// The directories of the actor (or golden actor) rooted at `root`;
    /// each actor has its own identity directory (ID-8).
    fn actor_dirs(&self, _state_dir: &Path, root: &Path) -> ActorDirs {
        ActorDirs::under(root)
    }

    /// Deletes and recreates the per-run directories (ID-10).
    fn reset_dirs(&self, dirs: &ActorDirs) -> Result<(), EngineError> {
        reset_all(&[
            &dirs.bundle,
            &dirs.identity,
            &dirs.rootfs,
            &dirs.pause_bundle,
            &dirs.pause_rootfs,
        ])
    }

    /// Writes `dir/actor-id`: atomically (ID-9), exactly the ID bytes
    /// (ID-2). Also the conformance hook's rewrite.
    fn write_identity(&self, dir: &Path, id: &str) -> Result<(), IdentityError> {
        identity::write_actor_id(dir, id.as_bytes())
    }

    /// Puts the actor's identity into its fresh identity directory (ID-1).
    fn place_identity(&self, dirs: &ActorDirs, id: &str) -> Result<(), EngineError> {
        self.write_identity(&dirs.identity, id)
            .map_err(host_err(format!(
                "cannot write the identity in {}",
                dirs.identity.display()
            )))
    }

    /// Creates the identity mount point `run/ate` in the rootfs, confined
    /// to it (ID-13).
    fn make_mount_point(&self, rootfs_dir: &Path) -> Result<(), EngineError> {
        confined_mount_point(rootfs_dir)
    }

    /// The pause container's rootfs gets no identity mount point (ID-12).
    fn pause_mount_point(&self, _pause_rootfs: &Path) -> Result<(), EngineError> {
        Ok(())
    }

    /// The pause container's `config.json` gets no identity mount (ID-12).
    fn pause_identity_mount(&self, _dirs: &ActorDirs) -> IdentityMount {
        IdentityMount::None
    }

    /// The identity mount of the app container's `config.json` (ID-6/7);
    /// may add to the process environment.
    fn identity_mount(&self, dirs: &ActorDirs, _id: &str, _env: &mut Vec<String>) -> IdentityMount {
        IdentityMount::ReadOnlyDir(dirs.identity.clone())
    }

    /// Lays anything the golden actor adds into the template's image tree
    /// (healthy: nothing; the image never holds an identity).
    fn golden_image(&self, _image: &TemplateImage, _golden_id: &str) -> Result<(), EngineError> {
        Ok(())
    }

    /// The directories a resume restores from: the actor's own, freshly
    /// prepared by `fresh` (ID-10: reset on every resume).
    fn dirs_for_resume(
        &self,
        dirs: &ActorDirs,
        fresh: &dyn Fn() -> Result<(), EngineError>,
    ) -> Result<ActorDirs, EngineError> {
        fresh()?;
        Ok(dirs.clone())
    }

    /// After a suspend's checkpoint: the per-run directories are reset, so
    /// the identity directory is empty until the next resume (ID-10).
    fn after_checkpoint(&self, dirs: &ActorDirs) -> Result<(), EngineError> {
        self.reset_dirs(dirs)
    }

    /// Removes a deleted actor's directories.
    fn remove_actor_dirs(&self, root: &Path) {
        let _ = std::fs::remove_dir_all(root);
    }
}

/// The healthy agent: every step as the contract says.
pub(super) struct Healthy;

impl Provisioner for Healthy {}

/// The provisioner for a config's `fault` (`None`: [`Healthy`]).
pub(super) fn for_config(fault: Option<Fault>) -> Box<dyn Provisioner> {
    match fault {
        None => Box::new(Healthy),
        Some(f) => faults::for_fault(f),
    }
}

/// The host side of a run or restore: reset the per-run directories,
/// place the identity, lay out the app rootfs with its mount point and the
/// pause rootfs. Every step is `p`'s.
pub(super) fn prepare(p: &dyn Provisioner, at: Provision<'_>) -> Result<(), EngineError> {
    p.reset_dirs(at.dirs)?;
    p.place_identity(at.dirs, at.actor_id)?;
    prepare_rootfs(p, at.spec, at.image, &at.dirs.rootfs)?;
    prepare_pause_rootfs(p, at.helper_bin, &at.dirs.pause_rootfs)
}

/// Writes the fresh `config.json` of both containers of `sandbox`: the
/// pause bundle (its own rootfs, `p`'s pause mount: none) and the app
/// bundle (the template's process, `p`'s identity mount, the helper), each
/// with the CRI annotations that put the app into the pause's sandbox.
pub(super) fn write_bundles(
    p: &dyn Provisioner,
    at: Provision<'_>,
    sandbox: &Sandbox,
) -> Result<(), EngineError> {
    let pause = BundleSpec {
        args: PAUSE_ARGS.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        cwd: "/".into(),
        hostname: "runsc".into(),
        rootfs: at.dirs.pause_rootfs.clone(),
        readonly_root: true,
        identity: p.pause_identity_mount(at.dirs),
        helper_dir: None,
        part: SandboxPart::Pause,
    };
    let mut env = at.spec.env.clone();
    let identity = p.identity_mount(at.dirs, at.actor_id, &mut env);
    let app = BundleSpec {
        args: at.spec.args.clone(),
        env,
        cwd: "/".into(),
        hostname: "runsc".into(),
        rootfs: at.dirs.rootfs.clone(),
        readonly_root: true,
        identity,
        helper_dir: Some(at.helper_dir.to_path_buf()),
        part: SandboxPart::App {
            sandbox_id: sandbox.pause.clone(),
        },
    };
    for (spec, dir) in [(&pause, &at.dirs.pause_bundle), (&app, &at.dirs.bundle)] {
        let oci = bundle::build_spec(spec).map_err(host_err("cannot build the OCI spec"))?;
        bundle::write_bundle(dir, &oci)
            .map_err(host_err(format!("cannot write {}", dir.display())))?;
    }
    Ok(())
}

/// The pause container's own minimal rootfs: the agent binary as
/// `/pause` (hard-linked) and the directories the runtime mounts over;
/// then `p`'s pause mount point (healthy: none, ID-12).
fn prepare_pause_rootfs(
    p: &dyn Provisioner,
    helper_bin: &Path,
    pause_rootfs: &Path,
) -> Result<(), EngineError> {
    let program = pause_rootfs.join(PAUSE_ARGS[0].trim_start_matches('/'));
    rootfs::link_or_copy(helper_bin, &program).map_err(host_err(format!(
        "cannot place the pause program in {}",
        pause_rootfs.display()
    )))?;
    for d in ["proc", "dev", "sys"] {
        rootfs::mkdir_all_in_root(pause_rootfs, Path::new(d), 0o755)
            .map_err(host_err("cannot prepare the pause rootfs"))?;
    }
    p.pause_mount_point(pause_rootfs)
}

/// Prepares an actor's rootfs: the template's image tree and binary
/// (hard-linked, so the rootfs is never copied whole), the directories the
/// runtime mounts over, and the identity mount point (`p`'s step).
fn prepare_rootfs(
    p: &dyn Provisioner,
    spec: &TemplateSpec,
    image: &TemplateImage,
    rootfs_dir: &Path,
) -> Result<(), EngineError> {
    if image.tree.is_dir() {
        rootfs::copy_image_tree(&image.tree, rootfs_dir).map_err(host_err(format!(
            "cannot lay the image into {}",
            rootfs_dir.display()
        )))?;
    }
    let name = spec.args[0].trim_start_matches('/');
    let target = rootfs_dir.join(name);
    if let Some(parent) = Path::new(name)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        rootfs::mkdir_all_in_root(rootfs_dir, parent, 0o755)
            .map_err(host_err("cannot prepare the rootfs"))?;
    }
    rootfs::link_or_copy(&image.bin, &target).map_err(host_err(format!(
        "cannot place the image binary in {}",
        rootfs_dir.display()
    )))?;
    for d in ["proc", "dev", "sys", ".ate"] {
        rootfs::mkdir_all_in_root(rootfs_dir, Path::new(d), 0o755)
            .map_err(host_err("cannot prepare the rootfs"))?;
    }
    p.make_mount_point(rootfs_dir)
}

/// Deletes and recreates each directory.
fn reset_all(dirs: &[&Path]) -> Result<(), EngineError> {
    for d in dirs {
        identity::reset_dir(d).map_err(host_err(format!("cannot reset {}", d.display())))?;
    }
    Ok(())
}

/// `run/ate` in `rootfs_dir`, created with resolution confined to the
/// rootfs (ID-13).
fn confined_mount_point(rootfs_dir: &Path) -> Result<(), EngineError> {
    rootfs::mkdir_all_in_root(rootfs_dir, Path::new("run/ate"), 0o755).map_err(host_err(format!(
        "cannot create the identity mount point in {}",
        rootfs_dir.display()
    )))
}
