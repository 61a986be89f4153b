//! The static binaries the local backend needs: the probe (`ate-probe`), the
//! node agent (`ate-refagent`, whose `relay` subcommand runs inside the
//! sandbox) and the harness's checker (`ate-check` of package
//! `ate-checker`, which the agent runs inside the sandbox to observe it).
//!
//! Either given from outside (`ATE_PROBE_BIN`, `ATE_AGENT_BIN`,
//! `ATE_CHECKER_BIN`) or built from
//! this workspace with one `cargo build` into a target directory of their
//! own, so the static build never invalidates the normal one. **Whatever is
//! returned has been checked to be a static ELF executable**: a sandbox's
//! rootfs has no dynamic loader.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ate_cmd::{Cmd, CmdError};
use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;
use tracing::{debug, info};

/// Variable that points at a probe binary to use instead of building one.
pub const PROBE_BIN_ENV: &str = "ATE_PROBE_BIN";
/// Variable that points at an agent binary to use instead of building one.
pub const AGENT_BIN_ENV: &str = "ATE_AGENT_BIN";
/// Variable that points at a checker binary to use instead of building one.
pub const CHECKER_BIN_ENV: &str = "ATE_CHECKER_BIN";

/// Package and binary name of each static build.
const PROBE_PACKAGE: (&str, &str) = ("ate-probe", "ate-probe");
const AGENT_PACKAGE: (&str, &str) = ("ate-refagent", "ate-refagent");
const CHECKER_PACKAGE: (&str, &str) = ("ate-checker", ate_checker::BIN_NAME);
const ADAPTER_PACKAGE: (&str, &str) = ("ate-runsc-adapter", "ate-runsc-adapter");
const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static";
const LOCK_FILE: &str = ".ate-build.lock";
const LOCK_POLL: Duration = Duration::from_millis(100);

/// The static probe, agent and checker, ready to be copied into a sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticBins {
    /// The probe actor's binary.
    pub probe: PathBuf,
    /// The node agent's binary (it also serves as the in-sandbox relay).
    pub agent: PathBuf,
    /// The harness's checker (`ate-check`), run inside sandboxes by the
    /// agent.
    pub checker: PathBuf,
}

impl StaticBins {
    /// The minimal probe (only `/whoami` and `/healthz`, as upstream's),
    /// built beside ours from the same package; `None` when the probe was
    /// given from outside and so no build ran.
    pub fn minimal_probe(&self) -> Option<PathBuf> {
        self.probe_variant(MINIMAL_PROBE_BIN)
    }

    /// Our probe's endpoints behind an epoll-based tokio/hyper server
    /// (`probe/src/bin/ate-probe-tokio.rs`), built beside ours.
    pub fn tokio_probe(&self) -> Option<PathBuf> {
        self.probe_variant(TOKIO_PROBE_BIN)
    }

    fn probe_variant(&self, name: &str) -> Option<PathBuf> {
        let p = self.probe.with_file_name(name);
        p.is_file().then_some(p)
    }
}

/// The minimal probe's binary name (`probe/src/bin/ate-probe-minimal.rs`).
pub const MINIMAL_PROBE_BIN: &str = "ate-probe-minimal";
/// The tokio probe's binary name (`probe/src/bin/ate-probe-tokio.rs`).
pub const TOKIO_PROBE_BIN: &str = "ate-probe-tokio";

/// A binary given from outside instead of built, and where it was given, so
/// that an error can name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinOverride {
    /// The binary.
    pub path: PathBuf,
    /// Where the path came from: `ATE_PROBE_BIN`, `--probe-bin`, ...
    pub origin: String,
}

/// How to obtain the static binaries.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Use this probe instead of building one.
    pub probe_bin: Option<BinOverride>,
    /// Use this agent instead of building one.
    pub agent_bin: Option<BinOverride>,
    /// Use this checker instead of building one.
    pub checker_bin: Option<BinOverride>,
    /// The cargo to build with.
    pub cargo: OsString,
    /// The workspace that has the `ate-probe` and `ate-refagent` packages.
    pub workspace_root: PathBuf,
    /// The target directory of the static build, apart from the normal one.
    pub target_dir: PathBuf,
    /// The target triple; given explicitly so that `RUSTFLAGS` does not apply
    /// to build scripts and proc-macros.
    pub target: String,
    /// How long the build may take.
    pub timeout: Duration,
}

impl BuildOptions {
    /// Options from the environment: `ATE_PROBE_BIN`, `ATE_AGENT_BIN` and
    /// `ATE_CHECKER_BIN` (overrides, when set and not empty), `CARGO` (else `cargo`); this
    /// workspace, `<workspace>/target/ate-static`, the host's
    /// `<arch>-unknown-linux-gnu` and 20 minutes.
    pub fn from_env() -> BuildOptions {
        let from_var = |var: &str| {
            std::env::var_os(var)
                .filter(|path| !path.is_empty())
                .map(|path| BinOverride {
                    path: path.into(),
                    origin: var.to_owned(),
                })
        };
        let workspace_root = workspace_root();
        BuildOptions {
            probe_bin: from_var(PROBE_BIN_ENV),
            agent_bin: from_var(AGENT_BIN_ENV),
            checker_bin: from_var(CHECKER_BIN_ENV),
            cargo: std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
            target_dir: workspace_root.join("target").join("ate-static"),
            workspace_root,
            target: format!("{}-unknown-linux-gnu", std::env::consts::ARCH),
            timeout: Duration::from_secs(20 * 60),
        }
    }
}

impl Default for BuildOptions {
    /// Same as [`BuildOptions::from_env`].
    fn default() -> BuildOptions {
        BuildOptions::from_env()
    }
}

/// The workspace this crate was compiled in.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Why the static binaries are not available.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// A binary given from outside cannot be used.
    #[error("{origin} is set to `{}`, which {problem}", .path.display())]
    BadOverride {
        /// Where the path came from (`ATE_PROBE_BIN`, ...).
        origin: String,
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// The error behind it, if any.
        #[source]
        source: Option<io::Error>,
    },

    /// The static build's target directory cannot be created.
    #[error("cannot create the target directory `{}`", .path.display())]
    TargetDir {
        /// The directory.
        path: PathBuf,
        /// What creating it reported.
        #[source]
        source: io::Error,
    },

    /// The build lock cannot be taken.
    #[error("cannot lock `{}`", .path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What opening or locking it reported.
        #[source]
        source: io::Error,
    },

    /// `cargo build` failed or timed out.
    #[error("building the static probe, agent and checker failed")]
    Build(#[source] CmdError),

    /// `cargo build` succeeded but a binary is not where it should be.
    #[error("the build succeeded but left no binary at `{}`", .path.display())]
    MissingOutput {
        /// Where the binary should be.
        path: PathBuf,
    },

    /// A binary is dynamically linked, so it cannot run in a sandbox.
    #[error(
        "`{}` is dynamically linked (it needs the loader `{interpreter}`), but the sandbox has no \
         loader: build it with RUSTFLAGS='{STATIC_RUSTFLAGS}' and an explicit --target",
        .path.display()
    )]
    NotStatic {
        /// The binary.
        path: PathBuf,
        /// Its `PT_INTERP`: the dynamic loader it asks for.
        interpreter: String,
    },

    /// A binary cannot be read.
    #[error("cannot read `{}`", .path.display())]
    Read {
        /// The binary.
        path: PathBuf,
        /// What reading it reported.
        #[source]
        source: io::Error,
    },

    /// A file is not an ELF64 little-endian file (the only kind checked).
    #[error("`{}` is not an ELF64 little-endian executable: {reason}", .path.display())]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The static probe, agent and checker: each override checked and used as
/// is, the others built with one `cargo build`.
///
/// The build holds an exclusive lock on `<target_dir>/.ate-build.lock`, so
/// parallel suite binaries wait for each other instead of racing; after the
/// first build it is a no-op of well under a second.
pub async fn static_bins(opts: &BuildOptions) -> Result<StaticBins, FixtureError> {
    let probe = opts.probe_bin.as_ref().map(check_override).transpose()?;
    let agent = opts.agent_bin.as_ref().map(check_override).transpose()?;
    let checker = opts.checker_bin.as_ref().map(check_override).transpose()?;
    let mut packages = Vec::new();
    for (given, package) in [
        (&probe, PROBE_PACKAGE),
        (&agent, AGENT_PACKAGE),
        (&checker, CHECKER_PACKAGE),
    ] {
        if given.is_none() {
            packages.push(package);
        }
    }
    let built = if packages.is_empty() {
        Vec::new()
    } else {
        build_static(opts, &packages).await?
    };
    let mut built = built.into_iter();
    let mut next = |given: Option<PathBuf>| given.or_else(|| built.next());
    let bins = StaticBins {
        probe: next(probe).expect("the probe was given or built"),
        agent: next(agent).expect("the agent was given or built"),
        checker: next(checker).expect("the checker was given or built"),
    };
    debug!(probe = %bins.probe.display(), agent = %bins.agent.display(),
        checker = %bins.checker.display(), "static binaries");
    Ok(bins)
}

/// The runsc adapter (crate `runsc-adapter`), built like the others: the
/// node backend places it in atelet's asset cache, where ateom-gvisor runs
/// it in the node's mount namespace. Built on demand, in its own `cargo
/// build` under the same lock, so a suite on another backend never pays
/// for it.
pub async fn runsc_adapter(opts: &BuildOptions) -> Result<PathBuf, FixtureError> {
    let built = build_static(opts, &[ADAPTER_PACKAGE]).await?;
    Ok(built.into_iter().next().expect("one package, one binary"))
}

/// An override is used only if it is an executable, static ELF file.
fn check_override(given: &BinOverride) -> Result<PathBuf, FixtureError> {
    let bad = |problem: String, source: Option<io::Error>| FixtureError::BadOverride {
        origin: given.origin.clone(),
        path: given.path.clone(),
        problem,
        source,
    };
    let meta = match std::fs::metadata(&given.path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(bad("does not exist".into(), None))
        }
        Err(err) => return Err(bad("cannot be read".into(), Some(err))),
    };
    if !meta.is_file() {
        return Err(bad("is not a regular file".into(), None));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(bad("is not executable".into(), None));
    }
    match elf_linkage(&given.path) {
        Ok(Linkage::Static) => Ok(given.path.clone()),
        Ok(Linkage::Dynamic { interpreter }) => Err(bad(
            format!(
                "is dynamically linked (it needs the loader `{interpreter}`), but the sandbox \
                 has no loader: give a static binary"
            ),
            None,
        )),
        Err(FixtureError::NotElf { reason, .. }) => Err(bad(
            format!("is not an ELF64 little-endian executable: {reason}"),
            None,
        )),
        Err(FixtureError::Read { source, .. }) => Err(bad("cannot be read".into(), Some(source))),
        Err(other) => Err(other),
    }
}

/// Builds `packages` (package, binary name) statically and returns their
/// binaries, in order, each checked to be static.
async fn build_static(
    opts: &BuildOptions,
    packages: &[(&str, &str)],
) -> Result<Vec<PathBuf>, FixtureError> {
    std::fs::create_dir_all(&opts.target_dir).map_err(|source| FixtureError::TargetDir {
        path: opts.target_dir.clone(),
        source,
    })?;
    let _lock = lock_exclusive(&opts.target_dir.join(LOCK_FILE)).await?;

    let mut cmd = Cmd::new(&opts.cargo).args(["build", "--release"]);
    for (package, _) in packages {
        cmd = cmd.args(["-p", package]);
    }
    let cmd = cmd
        .arg("--target")
        .arg(&opts.target)
        .arg("--target-dir")
        .arg(&opts.target_dir)
        .cwd(&opts.workspace_root)
        .env("RUSTFLAGS", STATIC_RUSTFLAGS)
        // Cargo prefers it to RUSTFLAGS; a parent cargo may have set it.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .timeout(opts.timeout);
    info!(packages = ?packages, target_dir = %opts.target_dir.display(),
        "building static probe, agent and checker (first build takes a minute)");
    let start = Instant::now();
    cmd.run().await.map_err(FixtureError::Build)?;
    info!(duration = ?start.elapsed(), "built static probe, agent and checker");

    let release = opts.target_dir.join(&opts.target).join("release");
    let mut bins = Vec::new();
    for (_, bin) in packages {
        let path = release.join(bin);
        if !path.is_file() {
            return Err(FixtureError::MissingOutput { path });
        }
        match elf_linkage(&path)? {
            Linkage::Static => bins.push(path),
            Linkage::Dynamic { interpreter } => {
                return Err(FixtureError::NotStatic { path, interpreter })
            }
        }
    }
    Ok(bins)
}

/// Takes an exclusive `flock` on `path` (created if missing); released when
/// the returned file is dropped. Waits for another holder by polling, so a
/// caller's deadline can drop the wait.
async fn lock_exclusive(path: &Path) -> Result<File, FixtureError> {
    let lock_error = |source: io::Error| FixtureError::Lock {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(lock_error)?;
    let mut told = false;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(Errno::WOULDBLOCK) | Err(Errno::INTR) => {}
            Err(err) => return Err(lock_error(err.into())),
        }
        if !told {
            info!(lock = %path.display(), "waiting for another build of the static binaries");
            told = true;
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

/// How an ELF executable is linked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Linkage {
    /// No `PT_INTERP`: runs without a dynamic loader (static or static-pie).
    Static,
    /// Has a `PT_INTERP` naming the loader it needs.
    Dynamic {
        /// The loader, e.g. `/lib64/ld-linux-x86-64.so.2`.
        interpreter: String,
    },
}

/// Reads how the ELF64 little-endian file at `path` is linked, from its
/// program headers: a `PT_INTERP` header means it needs a dynamic loader.
/// (A shared library has none either; this is meant for executables.)
pub fn elf_linkage(path: &Path) -> Result<Linkage, FixtureError> {
    let read_error = |source: io::Error| FixtureError::Read {
        path: path.to_path_buf(),
        source,
    };
    let not_elf = |reason: &'static str| FixtureError::NotElf {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = File::open(path).map_err(read_error)?;
    let interpreter = match elf::interpreter(&mut file) {
        Ok(interpreter) => interpreter,
        Err(elf::Error::Io(err)) if err.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(not_elf("it ends before its headers do"))
        }
        Err(elf::Error::Io(err)) => return Err(read_error(err)),
        Err(elf::Error::Malformed(reason)) => return Err(not_elf(reason)),
    };
    Ok(match interpreter {
        None => Linkage::Static,
        Some(interpreter) => Linkage::Dynamic { interpreter },
    })
}

/// Just enough of ELF64 (little-endian) to find `PT_INTERP`.
mod elf {
    use super::*;

    const PT_INTERP: u32 = 3;
    const PN_XNUM: u16 = 0xffff;
    const EHDR_SIZE: usize = 64;
    const PHDR_MIN_SIZE: usize = 56;
    const SHDR_SIZE: usize = 64;
    const MAX_PHDRS_BYTES: usize = 1 << 20;
    const MAX_INTERP: u64 = 4096;

    pub(super) enum Error {
        Io(io::Error),
        Malformed(&'static str),
    }

    impl From<io::Error> for Error {
        fn from(err: io::Error) -> Error {
            Error::Io(err)
        }
    }

    fn u16_at(bytes: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    }

    fn read_at(file: &mut File, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0; len];
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// The `PT_INTERP` path, if the file has one.
    pub(super) fn interpreter(file: &mut File) -> Result<Option<String>, Error> {
        let mut ehdr = Vec::with_capacity(EHDR_SIZE);
        (&mut *file).take(EHDR_SIZE as u64).read_to_end(&mut ehdr)?;
        if !ehdr.starts_with(b"\x7fELF") {
            return Err(Error::Malformed("no ELF magic"));
        }
        if ehdr.len() < EHDR_SIZE {
            return Err(Error::Malformed("it ends inside its ELF header"));
        }
        if ehdr[4] != 2 {
            return Err(Error::Malformed("not a 64-bit ELF file"));
        }
        if ehdr[5] != 1 {
            return Err(Error::Malformed("not a little-endian ELF file"));
        }
        let phoff = u64_at(&ehdr, 0x20);
        let phentsize = usize::from(u16_at(&ehdr, 0x36));
        let phnum = match u16_at(&ehdr, 0x38) {
            // Too many to count in e_phnum: the count is in section 0's sh_info.
            PN_XNUM => {
                let shdr0 = read_at(file, u64_at(&ehdr, 0x28), SHDR_SIZE)?;
                u32_at(&shdr0, 0x2c) as usize
            }
            phnum => usize::from(phnum),
        };
        if phnum == 0 {
            return Ok(None);
        }
        if phentsize < PHDR_MIN_SIZE {
            return Err(Error::Malformed("program header entries are too small"));
        }
        let len = phnum
            .checked_mul(phentsize)
            .filter(|len| *len <= MAX_PHDRS_BYTES)
            .ok_or(Error::Malformed("too many program headers"))?;
        let phdrs = read_at(file, phoff, len)?;
        for phdr in phdrs.chunks_exact(phentsize) {
            if u32_at(phdr, 0) != PT_INTERP {
                continue;
            }
            let offset = u64_at(phdr, 0x08);
            let filesz = u64_at(phdr, 0x20).min(MAX_INTERP) as usize;
            let raw = read_at(file, offset, filesz)?;
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            return Ok(Some(String::from_utf8_lossy(&raw[..end]).into_owned()));
        }
        Ok(None)
    }
}
