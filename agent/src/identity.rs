//! The host side of an actor's identity directory: reset (ID-10) and the
//! atomic write of `actor-id` (ID-9).
//!
//! **Invariants:** the directory has mode 0755 and `actor-id` mode 0644,
//! whatever the umask; a concurrent reader of `actor-id` sees the old value
//! or the new one, never a torn, empty or missing one; after a write exactly
//! one entry, `actor-id`, is left in the directory (no temp files, even on
//! failure).

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

/// The name of the file that holds the actor's ID inside the identity
/// directory (ID-1).
pub const ACTOR_ID_FILE: &str = "actor-id";

/// Mode of the identity directory (ID-9).
pub const DIR_MODE: u32 = 0o755;

/// Mode of the `actor-id` file (ID-9).
pub const FILE_MODE: u32 = 0o644;

/// How many random temp names to try before giving up on `EEXIST`.
const TEMP_ATTEMPTS: usize = 16;

/// An identity directory or file operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Removing the old directory tree (or a symlink in its place) failed.
    #[error("cannot remove {}", path.display())]
    Remove {
        /// The path being removed.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating the directory (or its parents) failed.
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        /// The directory being created.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Opening a directory failed.
    #[error("cannot open directory {}", path.display())]
    OpenDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Setting the mode of a file or directory failed.
    #[error("cannot set mode {mode:o} on {}", path.display())]
    SetMode {
        /// The file or directory.
        path: PathBuf,
        /// The mode being set.
        mode: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No random bytes for a temp file name.
    #[error("cannot generate a temp file name in {}", dir.display())]
    Random {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: getrandom::Error,
    },
    /// Creating the temp file failed.
    #[error("cannot create temp file {}", path.display())]
    CreateTemp {
        /// The temp file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing or syncing the temp file failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The temp file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Renaming the temp file over the target failed.
    #[error("cannot rename {} to {}", from.display(), to.display())]
    Rename {
        /// The temp file.
        from: PathBuf,
        /// The target.
        to: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Syncing the directory after the rename failed.
    #[error("cannot sync directory {}", path.display())]
    SyncDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Deletes `dir` (if it exists) and recreates it empty with mode exactly
/// 0755 (ID-10). Missing parents are created.
///
/// A symlink at `dir` itself is removed, never followed; symlinks inside
/// the tree are removed as links (their targets are untouched).
pub fn reset_dir(dir: &Path) -> Result<(), IdentityError> {
    let remove_err = |source| IdentityError::Remove {
        path: dir.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(dir).map_err(remove_err)?,
        Ok(_) => std::fs::remove_file(dir).map_err(remove_err)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(remove_err(e)),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| IdentityError::CreateDir {
            path: parent.to_owned(),
            source,
        })?;
    }
    std::fs::create_dir(dir).map_err(|source| IdentityError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let fd = open_dir(dir, OFlags::NOFOLLOW)?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE)).map_err(|e| IdentityError::SetMode {
        path: dir.to_owned(),
        mode: DIR_MODE,
        source: e.into(),
    })
}

/// Atomically replaces `dir/actor-id` with exactly `id` (no newline), mode
/// 0644 (ID-9). See [`write_file_atomic`].
pub fn write_actor_id(dir: &Path, id: &[u8]) -> Result<(), IdentityError> {
    write_file_atomic(dir, ACTOR_ID_FILE, id, FILE_MODE)
}

/// Chunk size of the FAULT `torn-write` writer.
pub const TORN_CHUNK: usize = 3;

/// Pause between chunks of the FAULT `torn-write` writer.
pub const TORN_PAUSE: std::time::Duration = std::time::Duration::from_micros(200);

/// FAULT `torn-write`, never used on the healthy path: breaks ID-9 ("the
/// host writes `actor-id` atomically ... a concurrent reader sees the old
/// value or the new one, never a torn or empty one"). Opens `dir/actor-id`
/// with `O_TRUNC` and writes `id` in place, [`TORN_CHUNK`] bytes at a time
/// with [`TORN_PAUSE`] between chunks: no temp file, no rename, no fsync. A
/// reader in between sees an empty or partial value.
pub fn write_actor_id_torn(dir: &Path, id: &[u8]) -> Result<(), IdentityError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(ACTOR_ID_FILE);
    let write_err = |source| IdentityError::Write {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(write_err)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(|source| IdentityError::SetMode {
            path: path.clone(),
            mode: FILE_MODE,
            source,
        })?;
    for (i, chunk) in id.chunks(TORN_CHUNK).enumerate() {
        if i > 0 {
            std::thread::sleep(TORN_PAUSE);
        }
        file.write_all(chunk).map_err(write_err)?;
    }
    Ok(())
}

/// Atomically replaces `dir/name` with `contents` and sets its mode to
/// exactly `mode`.
///
/// Creates `.<name>.tmp-<random>` in `dir` (`O_CREAT|O_EXCL`), writes all
/// bytes, fchmods, fsyncs, renames it over `name` and fsyncs `dir`. On any
/// failure before the rename the temp file is removed, so nothing but
/// `name` is ever left behind. A reader that opens `dir/name` concurrently
/// sees either the old file or the new one, complete.
pub fn write_file_atomic(
    dir: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
) -> Result<(), IdentityError> {
    let dir_fd = open_dir(dir, OFlags::empty())?;
    let (tmp_name, file) = create_temp(&dir_fd, dir, name)?;
    let tmp_path = dir.join(&tmp_name);
    let result = fill_and_rename(
        &dir_fd, dir, file, &tmp_name, &tmp_path, name, contents, mode,
    );
    if result.is_err() {
        // Best effort: the temp file is ours (O_EXCL), remove it whatever
        // failed.
        let _ = rustix::fs::unlinkat(&dir_fd, tmp_name.as_str(), AtFlags::empty());
        return result;
    }
    rustix::fs::fsync(&dir_fd).map_err(|e| IdentityError::SyncDir {
        path: dir.to_owned(),
        source: e.into(),
    })
}

#[allow(clippy::too_many_arguments)]
fn fill_and_rename(
    dir_fd: &OwnedFd,
    dir: &Path,
    mut file: File,
    tmp_name: &str,
    tmp_path: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
) -> Result<(), IdentityError> {
    let write_err = |source| IdentityError::Write {
        path: tmp_path.to_owned(),
        source,
    };
    file.write_all(contents).map_err(write_err)?;
    // `File::set_permissions` is fchmod on the open fd: no umask, no path.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|source| IdentityError::SetMode {
            path: tmp_path.to_owned(),
            mode,
            source,
        })?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    rustix::fs::renameat(dir_fd, tmp_name, dir_fd, name).map_err(|e| IdentityError::Rename {
        from: tmp_path.to_owned(),
        to: dir.join(name),
        source: e.into(),
    })
}

fn create_temp(dir_fd: &OwnedFd, dir: &Path, name: &str) -> Result<(String, File), IdentityError> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|source| IdentityError::Random {
            dir: dir.to_owned(),
            source,
        })?;
        let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let tmp_name = format!(".{name}.tmp-{suffix}");
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(
            dir_fd.as_fd(),
            tmp_name.as_str(),
            flags,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => return Ok((tmp_name, File::from(fd))),
            Err(rustix::io::Errno::EXIST) => last = Some((tmp_name, rustix::io::Errno::EXIST)),
            Err(e) => {
                return Err(IdentityError::CreateTemp {
                    path: dir.join(tmp_name),
                    source: e.into(),
                })
            }
        }
    }
    let (tmp_name, errno) = last.expect("at least one attempt");
    Err(IdentityError::CreateTemp {
        path: dir.join(tmp_name),
        source: errno.into(),
    })
}

fn open_dir(dir: &Path, extra: OFlags) -> Result<OwnedFd, IdentityError> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | extra,
        Mode::empty(),
    )
    .map_err(|e| IdentityError::OpenDir {
        path: dir.to_owned(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn reset_creates_0755_and_empties() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/identity");
        reset_dir(&dir).unwrap();
        assert_eq!(mode_of(&dir), 0o755);
        write_actor_id(&dir, b"probe-alpha").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/x"), b"x").unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o700)).unwrap();
        reset_dir(&dir).unwrap();
        assert_eq!(mode_of(&dir), 0o755);
        assert!(entries(&dir).is_empty());
    }

    #[test]
    fn reset_removes_symlink_not_target() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"keep").unwrap();
        let dir = tmp.path().join("identity");
        std::os::unix::fs::symlink(&target, &dir).unwrap();
        reset_dir(&dir).unwrap();
        assert!(std::fs::symlink_metadata(&dir).unwrap().is_dir());
        assert_eq!(entries(&target), ["keep"]);
        assert!(entries(&dir).is_empty());
    }

    #[test]
    fn write_sets_0644_exact_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("identity");
        reset_dir(&dir).unwrap();
        write_actor_id(&dir, b"probe-alpha").unwrap();
        let file = dir.join(ACTOR_ID_FILE);
        assert_eq!(std::fs::read(&file).unwrap(), b"probe-alpha");
        assert_eq!(mode_of(&file), 0o644);
        assert_eq!(mode_of(&dir), 0o755);
    }

    #[test]
    fn one_entry_after_many_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("identity");
        reset_dir(&dir).unwrap();
        for i in 0..100 {
            write_actor_id(&dir, format!("actor-{i}").as_bytes()).unwrap();
        }
        assert_eq!(entries(&dir), [ACTOR_ID_FILE]);
        assert_eq!(std::fs::read(dir.join(ACTOR_ID_FILE)).unwrap(), b"actor-99");
    }

    #[test]
    fn failed_rename_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("identity");
        reset_dir(&dir).unwrap();
        // A non-empty directory in place of `actor-id`: rename(2) fails.
        std::fs::create_dir(dir.join(ACTOR_ID_FILE)).unwrap();
        std::fs::write(dir.join(ACTOR_ID_FILE).join("x"), b"x").unwrap();
        let err = write_actor_id(&dir, b"probe-alpha").unwrap_err();
        assert!(matches!(err, IdentityError::Rename { .. }), "{err:?}");
        assert!(err.to_string().starts_with("cannot rename "), "{err}");
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(entries(&dir), [ACTOR_ID_FILE]);
    }

    #[test]
    fn missing_dir_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = write_actor_id(&tmp.path().join("nope"), b"a").unwrap_err();
        assert!(matches!(err, IdentityError::OpenDir { .. }), "{err:?}");
    }

    /// The FAULT `torn-write` writer really is torn: a reader racing a few
    /// hundred rewrites sees an empty or partial value at least once, and
    /// the file ends up holding the last value.
    #[test]
    fn torn_writer_is_seen_torn() {
        const VALUES: [&[u8]; 2] = [b"probe-alpha-0123456789", b"probe-beta-9876543210"];
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("identity");
        reset_dir(&dir).unwrap();
        write_actor_id_torn(&dir, VALUES[0]).unwrap();
        let file = dir.join(ACTOR_ID_FILE);
        assert_eq!(std::fs::read(&file).unwrap(), VALUES[0]);
        assert_eq!(mode_of(&file), FILE_MODE);
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let (mut reads, mut short) = (0usize, 0usize);
                while !done.load(Ordering::Acquire) {
                    reads += 1;
                    let v = std::fs::read(&file).unwrap();
                    if !VALUES.contains(&v.as_slice()) {
                        short += 1;
                    }
                }
                (reads, short)
            })
        };
        for i in 0..300 {
            write_actor_id_torn(&dir, VALUES[(i + 1) % 2]).unwrap();
        }
        done.store(true, Ordering::Release);
        let (reads, short) = reader.join().unwrap();
        eprintln!("torn write: 300 rewrites, {reads} reads, {short} torn or empty");
        assert!(short > 0, "no torn read in {reads} reads");
        assert_eq!(std::fs::read(dir.join(ACTOR_ID_FILE)).unwrap(), VALUES[0]);
        assert_eq!(entries(&dir), [ACTOR_ID_FILE]);
    }

    /// ID-9: a reader racing ≥ 10,000 rewrites never sees an empty, torn
    /// or missing value.
    #[test]
    fn concurrent_reader_never_sees_torn_value() {
        const REWRITES: usize = 10_000;
        const VALUES: [&[u8]; 2] = [b"probe-alpha", b"b"];
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("identity");
        reset_dir(&dir).unwrap();
        write_actor_id(&dir, VALUES[0]).unwrap();
        let file = dir.join(ACTOR_ID_FILE);
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let (mut reads, mut seen) = (0usize, [0usize; 2]);
                let mut bad = Vec::new();
                while !done.load(Ordering::Acquire) {
                    reads += 1;
                    match std::fs::read(&file) {
                        Ok(v) if v == VALUES[0] => seen[0] += 1,
                        Ok(v) if v == VALUES[1] => seen[1] += 1,
                        Ok(v) => {
                            bad.push(format!("torn or empty: {:?}", String::from_utf8_lossy(&v)))
                        }
                        Err(e) => bad.push(format!("read failed: {e}")),
                    }
                }
                (reads, seen, bad)
            })
        };
        for i in 0..REWRITES {
            write_actor_id(&dir, VALUES[(i + 1) % 2]).unwrap();
        }
        done.store(true, Ordering::Release);
        let (reads, seen, bad) = reader.join().unwrap();
        eprintln!(
            "atomic replace: {REWRITES} rewrites, {reads} concurrent reads \
             ({} probe-alpha, {} b), {} bad",
            seen[0],
            seen[1],
            bad.len()
        );
        assert!(
            bad.is_empty(),
            "first bad reads: {:?}",
            &bad[..bad.len().min(5)]
        );
        assert!(
            reads > 0 && seen[0] > 0 && seen[1] > 0,
            "reader saw too little: {seen:?}"
        );
        assert_eq!(entries(&dir), [ACTOR_ID_FILE]);
    }
}
