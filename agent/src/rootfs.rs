//! Preparing an extracted rootfs: the identity mount point created with
//! resolution confined to the rootfs (ID-13), and binaries linked in.
//!
//! **Invariant:** nothing is ever created or changed outside the rootfs,
//! whatever symlinks the image plants. [`mkdir_all_in_root`] walks one
//! name at a time from a directory fd of the rootfs and never follows a
//! symlink at all (stricter than `RESOLVE_IN_ROOT`, which would follow one
//! while clamping it to the root): a symlink on the path is an error that
//! names it.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// A rootfs operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The path to create is empty, absolute or contains `..`.
    #[error("invalid path {} inside rootfs {}: {reason}", rel.display(), root.display())]
    InvalidPath {
        /// The rootfs.
        root: PathBuf,
        /// The path as given.
        rel: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The rootfs directory itself cannot be opened.
    #[error("cannot open rootfs {}", root.display())]
    OpenRoot {
        /// The rootfs.
        root: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A component of the path is a symlink (the image may point it
    /// anywhere, so it is never followed).
    #[error(
        "refusing to create mount point {} in rootfs {}: {} is a symlink{}; resolution is \
         confined to the rootfs",
        rel.display(),
        root.display(),
        path.display(),
        target.as_ref().map(|t| format!(" (-> {})", t.display())).unwrap_or_default()
    )]
    Symlink {
        /// The rootfs.
        root: PathBuf,
        /// The whole path being created, relative to the rootfs.
        rel: PathBuf,
        /// The path up to and including the symlink, relative to the rootfs.
        path: PathBuf,
        /// Where the symlink points (`None` if it could not be read).
        target: Option<PathBuf>,
    },
    /// A component of the path exists and is neither a directory nor a
    /// symlink.
    #[error(
        "refusing to create mount point {} in rootfs {}: {} exists and is not a directory",
        rel.display(),
        root.display(),
        path.display()
    )]
    NotADirectory {
        /// The rootfs.
        root: PathBuf,
        /// The whole path being created, relative to the rootfs.
        rel: PathBuf,
        /// The offending path, relative to the rootfs.
        path: PathBuf,
    },
    /// Creating, opening or chmodding a directory inside the rootfs failed.
    #[error("cannot create directory {} in rootfs {}", path.display(), root.display())]
    Create {
        /// The rootfs.
        root: PathBuf,
        /// The directory, relative to the rootfs.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Hard-linking a file failed (for a reason other than `EXDEV`).
    #[error("cannot link {} to {}", src.display(), dst.display())]
    Link {
        /// The existing file.
        src: PathBuf,
        /// The new name.
        dst: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Copying a file (after `EXDEV` on the hard link) failed.
    #[error("cannot copy {} to {}", src.display(), dst.display())]
    Copy {
        /// The existing file.
        src: PathBuf,
        /// The destination.
        dst: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Creates `rel` (e.g. `run/ate`) inside `root`, component by component,
/// never following a symlink and never leaving `root` (ID-13).
///
/// `root` itself is opened as given (it is the agent's own path); every
/// component of `rel` is then created with `mkdirat` (an existing
/// directory is fine) and opened with `openat2` (`RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, `O_DIRECTORY|O_NOFOLLOW`),
/// falling back to `openat(O_DIRECTORY|O_NOFOLLOW)` where `openat2` is
/// missing (`ENOSYS`): each step resolves a single name, so both give the
/// same guarantee. Directories this call creates get exactly `mode`
/// (fchmod, not subject to the umask); existing ones are left as they are.
///
/// Fails with [`RootfsError::Symlink`] naming the path if any component is
/// a symlink, [`RootfsError::InvalidPath`] if `rel` is empty, absolute or
/// contains `..`.
pub fn mkdir_all_in_root(root: &Path, rel: &Path, mode: u32) -> Result<(), RootfsError> {
    let invalid = |reason| RootfsError::InvalidPath {
        root: root.to_owned(),
        rel: rel.to_owned(),
        reason,
    };
    let mut names = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err(invalid("'..' is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid("must be relative to the rootfs"))
            }
        }
    }
    if names.is_empty() {
        return Err(invalid("must not be empty"));
    }

    let mut dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RootfsError::OpenRoot {
        root: root.to_owned(),
        source: e.into(),
    })?;
    let mode = Mode::from_raw_mode(mode);
    let mut sofar = PathBuf::new();
    for name in names {
        sofar.push(name);
        let create_err = |e: Errno| RootfsError::Create {
            root: root.to_owned(),
            path: sofar.clone(),
            source: e.into(),
        };
        let created = match rustix::fs::mkdirat(&dir, name, mode) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(create_err(e)),
        };
        let next = match open_beneath(&dir, name) {
            Ok(fd) => fd,
            Err(e @ (Errno::LOOP | Errno::NOTDIR | Errno::XDEV)) => {
                return Err(refusal(&dir, root, rel, &sofar, name).unwrap_or_else(|| create_err(e)))
            }
            Err(e) => return Err(create_err(e)),
        };
        if created {
            rustix::fs::fchmod(&next, mode).map_err(create_err)?;
        }
        dir = next;
    }
    Ok(())
}

/// Opens the single name `name` in `dir` as a directory without following
/// a symlink.
fn open_beneath(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(dir, name, OPEN_FLAGS, Mode::empty(), resolve) {
        Err(Errno::NOSYS) => open_fallback(dir, name),
        other => other,
    }
}

const OPEN_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// [`open_beneath`] for kernels without `openat2`: `O_NOFOLLOW` on a single
/// name gives the same refusal (`ELOOP` on a symlink).
fn open_fallback(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(dir, name, OPEN_FLAGS, Mode::empty())
}

/// The error for a component that could not be opened as a directory:
/// [`RootfsError::Symlink`] or [`RootfsError::NotADirectory`], or `None`
/// if it is neither (then the caller reports the errno).
fn refusal(
    dir: &OwnedFd,
    root: &Path,
    rel: &Path,
    sofar: &Path,
    name: &OsStr,
) -> Option<RootfsError> {
    let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Symlink => Some(RootfsError::Symlink {
            root: root.to_owned(),
            rel: rel.to_owned(),
            path: sofar.to_owned(),
            target: rustix::fs::readlinkat(dir, name, Vec::new())
                .ok()
                .map(|t| PathBuf::from(OsStr::from_bytes(t.as_bytes()))),
        }),
        FileType::Directory => None,
        _ => Some(RootfsError::NotADirectory {
            root: root.to_owned(),
            rel: rel.to_owned(),
            path: sofar.to_owned(),
        }),
    }
}

/// Makes `dst` the same file as `src` with a hard link, so every actor's
/// rootfs shares the binary's inode; falls back to a copy (contents and
/// permissions) when they are on different filesystems (`EXDEV`). `dst`
/// must not exist.
pub fn link_or_copy(src: &Path, dst: &Path) -> Result<(), RootfsError> {
    match std::fs::hard_link(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(Errno::XDEV.raw_os_error()) => std::fs::copy(src, dst)
            .map(drop)
            .map_err(|source| RootfsError::Copy {
                src: src.to_owned(),
                dst: dst.to_owned(),
                source,
            }),
        Err(source) => Err(RootfsError::Link {
            src: src.to_owned(),
            dst: dst.to_owned(),
            source,
        }),
    }
}

/// Copies the image tree `src` into the rootfs `root` as it is:
/// directories are created (confined, as [`mkdir_all_in_root`]), regular
/// files hard-linked (or copied), symlinks recreated as symlinks with their
/// targets untouched — never followed. Other file types are refused. The
/// image may thus plant a symlink where the runtime later creates its
/// mount point; [`mkdir_all_in_root`] refuses to follow it (ID-13).
pub fn copy_image_tree(src: &Path, root: &Path) -> Result<(), RootfsError> {
    use std::os::unix::fs::MetadataExt;
    fn walk(src: &Path, root: &Path, rel: &Path) -> Result<(), RootfsError> {
        let dir = src.join(rel);
        let read = std::fs::read_dir(&dir).map_err(|source| RootfsError::Create {
            root: root.to_owned(),
            path: rel.to_owned(),
            source,
        })?;
        let mut entries: Vec<_> = read.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let r = rel.join(e.file_name());
            let from = e.path();
            let meta = std::fs::symlink_metadata(&from).map_err(|source| RootfsError::Create {
                root: root.to_owned(),
                path: r.clone(),
                source,
            })?;
            let ft = meta.file_type();
            if ft.is_dir() {
                mkdir_all_in_root(root, &r, meta.mode() & 0o7777)?;
                walk(src, root, &r)?;
                continue;
            }
            if let Some(parent) = r.parent().filter(|p| !p.as_os_str().is_empty()) {
                mkdir_all_in_root(root, parent, 0o755)?;
            }
            let to = root.join(&r);
            if ft.is_symlink() {
                let target = std::fs::read_link(&from).map_err(|source| RootfsError::Create {
                    root: root.to_owned(),
                    path: r.clone(),
                    source,
                })?;
                std::os::unix::fs::symlink(&target, &to).map_err(|source| RootfsError::Create {
                    root: root.to_owned(),
                    path: r.clone(),
                    source,
                })?;
            } else if ft.is_file() {
                link_or_copy(&from, &to)?;
            } else {
                return Err(RootfsError::InvalidPath {
                    root: root.to_owned(),
                    rel: r,
                    reason: "only directories, regular files and symlinks can be part of an image",
                });
            }
        }
        Ok(())
    }
    walk(src, root, Path::new(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn is_empty_dir(p: &Path) -> bool {
        std::fs::read_dir(p).unwrap().next().is_none()
    }

    #[test]
    fn creates_with_exact_mode_and_is_idempotent() {
        let root = tempfile::tempdir().unwrap();
        mkdir_all_in_root(root.path(), Path::new("run/ate"), 0o755).unwrap();
        assert_eq!(mode_of(&root.path().join("run")), 0o755);
        assert_eq!(mode_of(&root.path().join("run/ate")), 0o755);
        // Existing directories are fine, and keep their own mode.
        std::fs::set_permissions(root.path().join("run"), PermissionsExt::from_mode(0o711))
            .unwrap();
        mkdir_all_in_root(root.path(), Path::new("run/ate"), 0o755).unwrap();
        mkdir_all_in_root(root.path(), Path::new("./run//ate/"), 0o755).unwrap();
        assert_eq!(mode_of(&root.path().join("run")), 0o711);
        mkdir_all_in_root(root.path(), Path::new("a/b/c"), 0o700).unwrap();
        assert_eq!(mode_of(&root.path().join("a/b/c")), 0o700);
    }

    #[test]
    fn refuses_absolute_symlink_out_of_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("run")).unwrap();
        let err = mkdir_all_in_root(root.path(), Path::new("run/ate"), 0o755).unwrap_err();
        match &err {
            RootfsError::Symlink { path, target, .. } => {
                assert_eq!(path, Path::new("run"));
                assert_eq!(target.as_deref(), Some(outside.path()));
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert_eq!(
            msg,
            format!(
                "refusing to create mount point run/ate in rootfs {}: run is a symlink (-> {}); \
                 resolution is confined to the rootfs",
                root.path().display(),
                outside.path().display()
            )
        );
        assert!(
            is_empty_dir(outside.path()),
            "something was created outside"
        );
    }

    #[test]
    fn refuses_relative_symlink_climbing_out() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("bundle/rootfs");
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("run/ate")).unwrap();
        let err = mkdir_all_in_root(&root, Path::new("run/ate"), 0o755).unwrap_err();
        match &err {
            RootfsError::Symlink { path, target, .. } => {
                assert_eq!(path, Path::new("run/ate"));
                assert_eq!(target.as_deref(), Some(Path::new("../../..")));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .contains(": run/ate is a symlink (-> ../../..)"),
            "{err}"
        );
        // Only what the test made exists above the rootfs.
        let mut above: Vec<_> = std::fs::read_dir(base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        above.sort();
        assert_eq!(above, ["bundle"]);
    }

    #[test]
    fn refuses_dangling_symlink_without_creating_its_target() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("made-by-agent");
        std::fs::create_dir(root.path().join("run")).unwrap();
        std::os::unix::fs::symlink(&target, root.path().join("run/ate")).unwrap();
        let err = mkdir_all_in_root(root.path(), Path::new("run/ate"), 0o755).unwrap_err();
        assert!(matches!(err, RootfsError::Symlink { .. }), "{err:?}");
        assert!(!target.exists());
    }

    #[test]
    fn refuses_file_in_the_way() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("run"), b"").unwrap();
        let err = mkdir_all_in_root(root.path(), Path::new("run/ate"), 0o755).unwrap_err();
        assert!(matches!(err, RootfsError::NotADirectory { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("run exists and is not a directory"),
            "{err}"
        );
    }

    #[test]
    fn refuses_bad_relative_paths() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        for rel in ["..", "../escape", "run/../../escape", "/run/ate", "", "."] {
            let err = mkdir_all_in_root(&root, Path::new(rel), 0o755).unwrap_err();
            assert!(
                matches!(err, RootfsError::InvalidPath { .. }),
                "{rel:?}: {err:?}"
            );
        }
        assert!(!base.path().join("escape").exists());
        assert!(is_empty_dir(&root));
    }

    #[test]
    fn fallback_without_openat2_refuses_the_same() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        std::fs::write(root.path().join("file"), b"").unwrap();
        std::fs::create_dir(root.path().join("dir")).unwrap();
        let fd = rustix::fs::open(
            root.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        for (open, how) in [
            (
                open_fallback as fn(&OwnedFd, &OsStr) -> Result<OwnedFd, Errno>,
                "openat",
            ),
            (open_beneath, "openat2"),
        ] {
            // openat(O_DIRECTORY|O_NOFOLLOW) says ENOTDIR, openat2 ELOOP:
            // both are turned into `Symlink` by `refusal`.
            let err = open(&fd, OsStr::new("link")).unwrap_err();
            assert!(matches!(err, Errno::LOOP | Errno::NOTDIR), "{how}: {err}");
            assert_eq!(
                open(&fd, OsStr::new("file")).unwrap_err(),
                Errno::NOTDIR,
                "{how}"
            );
            open(&fd, OsStr::new("dir")).unwrap();
        }
    }

    #[test]
    fn missing_root_is_an_error() {
        let base = tempfile::tempdir().unwrap();
        let err =
            mkdir_all_in_root(&base.path().join("nope"), Path::new("run"), 0o755).unwrap_err();
        assert!(matches!(err, RootfsError::OpenRoot { .. }), "{err:?}");
    }

    #[test]
    fn link_shares_inode() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("probe");
        std::fs::write(&src, b"\x7fELF").unwrap();
        let dst = dir.path().join("probe-link");
        link_or_copy(&src, &dst).unwrap();
        assert_eq!(
            std::fs::metadata(&src).unwrap().ino(),
            std::fs::metadata(&dst).unwrap().ino()
        );
        let err = link_or_copy(&src, &dst).unwrap_err();
        assert!(matches!(err, RootfsError::Link { .. }), "{err:?}");
    }

    #[test]
    fn copies_across_filesystems() {
        let src_dir = tempfile::tempdir().unwrap();
        let Ok(dst_dir) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("no /dev/shm: cross-filesystem copy not exercised");
            return;
        };
        if std::fs::metadata(src_dir.path()).unwrap().dev()
            == std::fs::metadata(dst_dir.path()).unwrap().dev()
        {
            eprintln!("/dev/shm on the same filesystem as the temp dir: copy not exercised");
            return;
        }
        let src = src_dir.path().join("probe");
        std::fs::write(&src, b"\x7fELF").unwrap();
        std::fs::set_permissions(&src, PermissionsExt::from_mode(0o755)).unwrap();
        let dst = dst_dir.path().join("probe");
        link_or_copy(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"\x7fELF");
        assert_eq!(mode_of(&dst), 0o755);
    }

    #[test]
    fn image_tree_is_copied_without_following_symlinks() {
        let src = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("etc")).unwrap();
        std::fs::write(src.path().join("etc/motd"), b"hi").unwrap();
        std::os::unix::fs::symlink(outside.path(), src.path().join("run")).unwrap();
        copy_image_tree(src.path(), root.path()).unwrap();
        assert_eq!(std::fs::read(root.path().join("etc/motd")).unwrap(), b"hi");
        assert_eq!(
            std::fs::read_link(root.path().join("run")).unwrap(),
            outside.path()
        );
        // The planted symlink is then refused as a mount point path.
        let e = mkdir_all_in_root(root.path(), Path::new("run/ate"), 0o755).unwrap_err();
        assert!(matches!(e, RootfsError::Symlink { .. }), "{e}");
        assert!(is_empty_dir(outside.path()), "nothing written outside");
    }
}
