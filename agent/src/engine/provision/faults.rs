//! The self-test's fault modes as provisioners: each reproduces one known
//! way to get the identity contract wrong by overriding the step it gets
//! wrong, and says which statement that breaks. Everything it does not
//! override is the healthy step.

use std::path::Path;
use std::sync::Mutex;

use tracing::warn;

use super::{confined_mount_point, reset_all, Provisioner, TemplateImage};
use crate::bundle::IdentityMount;
use crate::engine::{host_err, ActorDirs, EngineError};
use crate::fault::Fault;
use crate::identity::{self, IdentityError};
use crate::rootfs;

/// The provisioner that reproduces `fault`.
pub(super) fn for_fault(fault: Fault) -> Box<dyn Provisioner> {
    match fault {
        Fault::EnvIdentity => Box::new(EnvIdentity),
        Fault::BakedIdentity => Box::new(BakedIdentity),
        Fault::SharedIdentityDir => Box::new(SharedIdentityDir),
        Fault::WritableMount => Box::new(WritableMount),
        Fault::FileMount => Box::new(FileMount),
        Fault::NoReset => Box::new(NoReset::default()),
        Fault::TornWrite => Box::new(TornWrite),
        Fault::SymlinkFollow => Box::new(SymlinkFollow),
        Fault::TrailingNewline => Box::new(TrailingNewline),
        Fault::IdentityOnPause => Box::new(IdentityOnPause),
    }
}

/// `env-identity` breaks ID-1 ("the actor's ID is in the file
/// /run/ate/actor-id") and ID-7 ("not an environment variable"): no
/// identity file, nothing mounted, the ID in the process environment; a
/// restore keeps the golden's environment from the snapshot (ID-3/4).
struct EnvIdentity;

impl Provisioner for EnvIdentity {
    fn fault(&self) -> Option<Fault> {
        Some(Fault::EnvIdentity)
    }
    fn place_identity(&self, _dirs: &ActorDirs, _id: &str) -> Result<(), EngineError> {
        Ok(())
    }
    fn identity_mount(&self, _dirs: &ActorDirs, id: &str, env: &mut Vec<String>) -> IdentityMount {
        env.push(format!("ATE_ACTOR_ID={id}"));
        IdentityMount::None
    }
}

/// `baked-identity` breaks ID-3/ID-4 ("no restored actor reads the golden
/// actor's ID"): the golden ID is written into the image, which every
/// actor's rootfs is made from; no identity file, no mount. (The baked
/// directories are made confined, so ID-13 still holds.)
struct BakedIdentity;

impl Provisioner for BakedIdentity {
    fn fault(&self) -> Option<Fault> {
        Some(Fault::BakedIdentity)
    }
    fn place_identity(&self, _dirs: &ActorDirs, _id: &str) -> Result<(), EngineError> {
        Ok(())
    }
    fn identity_mount(
        &self,
        _dirs: &ActorDirs,
        _id: &str,
        _env: &mut Vec<String>,
    ) -> IdentityMount {
        IdentityMount::None
    }
    fn golden_image(&self, image: &TemplateImage, golden_id: &str) -> Result<(), EngineError> {
        let tree = &image.tree;
        let baked = tree.join("run/ate").join(identity::ACTOR_ID_FILE);
        std::fs::create_dir_all(tree)
            .map_err(host_err(format!("cannot create {}", tree.display())))?;
        rootfs::mkdir_all_in_root(tree, Path::new("run/ate"), 0o755).map_err(host_err(format!(
            "cannot bake the identity into {}",
            tree.display()
        )))?;
        std::fs::write(&baked, golden_id)
            .map_err(host_err(format!("cannot write {}", baked.display())))
    }
}

/// `shared-identity-dir` breaks ID-8 ("each actor has its own host
/// identity directory; no two actors share one") and ID-10 (the per-actor
/// directory deleted and recreated): one directory for all actors, only
/// created, never reset, so every mount of it sees the last write.
struct SharedIdentityDir;

impl Provisioner for SharedIdentityDir {
    fn fault(&self) -> Option<Fault> {
        Some(Fault::SharedIdentityDir)
    }
    fn actor_dirs(&self, state_dir: &Path, root: &Path) -> ActorDirs {
        ActorDirs {
            identity: state_dir.join("shared-identity"),
            ..ActorDirs::under(root)
        }
    }
    fn reset_dirs(&self, dirs: &ActorDirs) -> Result<(), EngineError> {
        reset_all(&[
            &dirs.bundle,
            &dirs.rootfs,
            &dirs.pause_bundle,
            &dirs.pause_rootfs,
        ])?;
        std::fs::create_dir_all(&dirs.identity).map_err(host_err(format!(
            "cannot create {}",
            dirs.identity.display()
        )))
    }
}

/// `writable-mount` breaks ID-6 ("the mount is read-only").
struct WritableMount;

impl Provisioner for WritableMount {
    fn fault(&self) -> Option<Fault> {
        Some(Fault::WritableMount)
    }
    fn identity_mount(&self, dirs: &ActorDirs, _id: &str, _env: &mut Vec<String>) -> IdentityMount {
        IdentityMount::FaultWritableDir(dirs.identity.clone())
    }
}

/// `file-mount` breaks ID-7 ("what is mounted is the directory, not a
/// single file"): a bind of `actor-id` alone, whose mount point is a file
/// in the rootfs's `/run/ate`.
struct FileMount;

impl Provisioner for FileMount {
    fn fault(&self) -> Option<Fault> {
        Some(Fault::FileMount)
    }
    fn make_mount_point(&self, rootfs_dir: &Path) -> Result<(), EngineError> {
        use std::os::unix::fs::OpenOptionsExt;
        confined_mount_point(rootfs_dir)?;
        let mp = rootfs_dir.join("run/ate").join(identity::ACTOR_ID_FILE);
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&mp)
            .map(drop)
            .map_err(host_err(format!(
                "cannot create the file mount point {}",
                mp.display()
            )))
    }
    fn identity_mount(&self, dirs: &ActorDirs, _id: &str, _env: &mut Vec<String>) -> IdentityMount {
        IdentityMount::FaultFile(dirs.identity.join(identity::ACTOR_ID_FILE))
    }
}

/// `no-reset` breaks ID-10 ("the per-actor directories are deleted and
/// recreated at the start of every restore; config.json is regenerated on
/// every resume, so the mount always points at this actor's directory"):
/// the first actor resumed gets normal directories; every later resume, of
/// any actor, reuses them as they are — the first actor's identity
/// directory (so that is what is mounted) and rootfs — with only the
/// bundles' sandbox wiring (the new container IDs) written, into the
/// resuming actor's own bundle directories; and a suspend resets nothing.
#[derive(Default)]
struct NoReset {
    /// The directories of the first actor resumed.
    first: Mutex<Option<ActorDirs>>,
}

impl Provisioner for NoReset {
    fn fault(&self) -> Option<Fault> {
        Some(Fault::NoReset)
    }
    fn dirs_for_resume(
        &self,
        dirs: &ActorDirs,
        fresh: &dyn Fn() -> Result<(), EngineError>,
    ) -> Result<ActorDirs, EngineError> {
        let mut first = self.first.lock().unwrap();
        if let Some(first) = first.as_ref() {
            let reused = ActorDirs {
                identity: first.identity.clone(),
                rootfs: first.rootfs.clone(),
                pause_rootfs: first.pause_rootfs.clone(),
                ..dirs.clone()
            };
            for d in [&reused.bundle, &reused.pause_bundle] {
                std::fs::create_dir_all(d)
                    .map_err(host_err(format!("cannot create {}", d.display())))?;
            }
            return Ok(reused);
        }
        fresh()?;
        *first = Some(dirs.clone());
        Ok(dirs.clone())
    }
    fn after_checkpoint(&self, _dirs: &ActorDirs) -> Result<(), EngineError> {
        Ok(())
    }
    fn remove_actor_dirs(&self, root: &Path) {
        let pinned = self
            .first
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|d| d.root == root);
        if pinned {
            // Every later resume reuses this bundle: it outlives its actor.
            warn!(root = %root.display(), "fault no-reset: keeping the deleted actor's directories, later resumes reuse its bundle");
        } else {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// `torn-write` breaks ID-9 ("the host writes actor-id atomically ...
/// never a torn or empty one").
struct TornWrite;

impl Provisioner for TornWrite {
    fn fault(&self) -> Option<Fault> {
        Some(Fault::TornWrite)
    }
    fn write_identity(&self, dir: &Path, id: &str) -> Result<(), IdentityError> {
        identity::write_actor_id_torn(dir, id.as_bytes())
    }
}

/// `symlink-follow` breaks ID-13 ("the mount point run/ate is created with
/// resolution confined to the rootfs"): plain `create_dir_all` follows an
/// image's symlinks out of the rootfs.
struct SymlinkFollow;

impl Provisioner for SymlinkFollow {
    fn fault(&self) -> Option<Fault> {
        Some(Fault::SymlinkFollow)
    }
    fn make_mount_point(&self, rootfs_dir: &Path) -> Result<(), EngineError> {
        let mp = rootfs_dir.join("run/ate");
        std::fs::create_dir_all(&mp).map_err(host_err(format!(
            "cannot create the identity mount point {}",
            mp.display()
        )))
    }
}

/// `trailing-newline` breaks ID-2 ("exactly the raw actor ID bytes, no
/// trailing newline").
struct TrailingNewline;

impl Provisioner for TrailingNewline {
    fn fault(&self) -> Option<Fault> {
        Some(Fault::TrailingNewline)
    }
    fn write_identity(&self, dir: &Path, id: &str) -> Result<(), IdentityError> {
        identity::write_actor_id(dir, format!("{id}\n").as_bytes())
    }
}

/// `identity-on-pause` breaks ID-12 ("the sandbox's pause container gets
/// no identity mount and no mount point"): the actor's identity directory
/// is bind-mounted read-only at `/run/ate` in the pause container too,
/// with `run/ate` created (confined) in the pause rootfs.
struct IdentityOnPause;

impl Provisioner for IdentityOnPause {
    fn fault(&self) -> Option<Fault> {
        Some(Fault::IdentityOnPause)
    }
    fn pause_mount_point(&self, pause_rootfs: &Path) -> Result<(), EngineError> {
        confined_mount_point(pause_rootfs)
    }
    fn pause_identity_mount(&self, dirs: &ActorDirs) -> IdentityMount {
        IdentityMount::ReadOnlyDir(dirs.identity.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_has_its_provisioner() {
        for f in Fault::ALL {
            assert_eq!(for_fault(f).fault(), Some(f), "{f}");
        }
    }
}
