//! The probe image: packed in process and pushed over the OCI distribution
//! API, so that the kind backend can reference it by digest.
//!
//! [`build_image`] turns one static binary into a one-layer OCI image (a
//! gzip'd tar, a config and a manifest), **deterministically**: the same
//! binary gives the same bytes and digests every time, whatever its path,
//! mtime or owner on disk. [`push`] uploads it to a plain-HTTP registry
//! (kind's `localhost:5001`) with monolithic blob uploads and tags the
//! manifest, every request through the backend's executor ([`push_with`]),
//! so a dry run records the same requests and makes none.
//! [`repo_from_ko_docker_repo`] reads `KO_DOCKER_REPO` the way ko does for
//! a registry host with an optional path.
//!
//! Every request has its own deadline ([`REQUEST_TIMEOUT`]); every error
//! names the URL that failed.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use tracing::{debug, info};

use super::exec::Executor;
use super::plan::ApiCall;
use crate::fixture::{self, FixtureError, Linkage};

/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a gzip'd tar layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The deadline of each registry request, from connecting to the end of the
/// response body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Empty directories every image gets (mount points for the runtime).
const EMPTY_DIRS: [&str; 3] = ["proc", "dev", "run"];
/// How much of an unexpected response body an error keeps.
const BODY_EXCERPT: usize = 512;
/// Allowed repository path components, as the distribution spec writes them.
const COMPONENT_RULE: &str = "lowercase letters and digits, separated by `.`, `_`, `__` or \
                              dashes ([a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)";
/// The longest repository name accepted.
const MAX_REPOSITORY_LEN: usize = 255;
/// The header a registry answers with the digest of what it stored.
const CONTENT_DIGEST: &str = "docker-content-digest";

/// What can go wrong building or pushing the image.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// `KO_DOCKER_REPO` does not name a registry and repository this module
    /// can push to.
    #[error("KO_DOCKER_REPO `{value}` {problem}")]
    InvalidKoDockerRepo {
        /// The value as given.
        value: String,
        /// What is wrong and what is allowed.
        problem: String,
    },

    /// The image name appended to `KO_DOCKER_REPO` is not a valid repository
    /// path.
    #[error("image name `{name}` {problem}")]
    InvalidImageName {
        /// The name as given.
        name: String,
        /// What is wrong and what is allowed.
        problem: String,
    },

    /// A tag is not `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error(
        "tag `{tag}` is not allowed: a tag is 1 to 128 letters, digits, `_`, `.` or `-`, \
         not starting with `.` or `-`"
    )]
    InvalidTag {
        /// The tag as given.
        tag: String,
    },

    /// The [`ImageSpec`] asks for something a layer cannot hold.
    #[error("invalid image spec: {problem}")]
    InvalidSpec {
        /// What is wrong.
        problem: String,
    },

    /// The binary is missing, unreadable or not an ELF executable.
    #[error("cannot use `{}` as the image's binary", .path.display())]
    Binary {
        /// The binary.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: FixtureError,
    },

    /// The binary needs a dynamic loader, which the one-file image lacks.
    #[error(
        "`{}` is dynamically linked (it needs `{interpreter}`), but the image holds no loader",
        .path.display()
    )]
    NotStatic {
        /// The binary.
        path: PathBuf,
        /// Its `PT_INTERP`.
        interpreter: String,
    },

    /// The binary is for a machine the image config has no name for.
    #[error(
        "`{}` is built for ELF machine {machine:#x}; only x86-64 (amd64) and aarch64 (arm64) \
         are supported",
        .path.display()
    )]
    UnsupportedMachine {
        /// The binary.
        path: PathBuf,
        /// Its `e_machine`.
        machine: u16,
    },

    /// Writing the layer (tar or gzip, in memory) failed.
    #[error("cannot write the image layer")]
    Layer(#[source] io::Error),

    /// Serializing the config or manifest failed.
    #[error("cannot serialize the image {what}")]
    Json {
        /// `config` or `manifest`.
        what: &'static str,
        /// What serde reported.
        #[source]
        source: serde_json::Error,
    },

    /// Nothing accepted the connection (refused, no route, DNS failure).
    #[error("registry {registry} is unreachable: {method} {url} failed")]
    Unreachable {
        /// The registry's base URL, e.g. `http://127.0.0.1:5001`.
        registry: String,
        /// The request's method.
        method: Method,
        /// The request's URL.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },

    /// A request did not complete within its deadline.
    #[error("{method} {url} did not complete within {after:?}")]
    Timeout {
        /// The request's method.
        method: Method,
        /// The request's URL.
        url: String,
        /// The deadline that expired.
        after: Duration,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },

    /// A request failed after the connection was made (reset, broken
    /// response, ...).
    #[error("{method} {url} failed")]
    Request {
        /// The request's method.
        method: Method,
        /// The request's URL.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },

    /// The registry answered with a status the protocol does not expect
    /// there.
    #[error("{method} {url} answered {status} (expected {expected}): {body}")]
    Status {
        /// The request's method.
        method: Method,
        /// The request's URL.
        url: String,
        /// The status received.
        status: StatusCode,
        /// The status(es) the protocol expects.
        expected: &'static str,
        /// The first 512 bytes of the response body, as text.
        body: String,
    },

    /// An upload session's `Location` is missing, unparsable, or points
    /// away from the registry.
    #[error("{method} {url} answered an unusable upload location: {problem}")]
    BadLocation {
        /// The request's method.
        method: Method,
        /// The request's URL.
        url: String,
        /// What is wrong with the `Location` header.
        problem: String,
    },

    /// The registry stored something else than what was sent.
    #[error("{method} {url}: the registry reports digest {got}, but {expected} was sent")]
    DigestMismatch {
        /// The request's method.
        method: Method,
        /// The request's URL.
        url: String,
        /// The digest of the bytes sent.
        expected: String,
        /// The registry's `Docker-Content-Digest`.
        got: String,
    },
}

/// What goes into the image.
#[derive(Clone, Copy, Debug)]
pub struct ImageSpec<'a> {
    /// A static ELF executable; its contents (not its path, mode, owner or
    /// mtime) become the image's only file. Its ELF machine sets the
    /// image's architecture (`amd64` or `arm64`); the os is `linux`.
    pub binary: &'a Path,
    /// Where it lies in the image, relative (`probe`, no leading slash); the
    /// entrypoint is `/<path_in_image>`.
    pub path_in_image: &'a str,
    /// Extra symlinks: path in the image (relative, like `path_in_image`)
    /// and target (written as given, absolute or with `..`).
    pub symlinks: &'a [(String, String)],
    /// More static executables beside the entrypoint: the file and its
    /// path in the image (relative). The node backend ships the harness's
    /// checker in the probe image this way, to run it with `runsc exec`.
    pub extra_binaries: &'a [(PathBuf, String)],
}

impl<'a> ImageSpec<'a> {
    /// An image holding only `binary` at `path_in_image` (plus the empty
    /// mount-point directories).
    pub fn new(binary: &'a Path, path_in_image: &'a str) -> ImageSpec<'a> {
        ImageSpec {
            binary,
            path_in_image,
            symlinks: &[],
            extra_binaries: &[],
        }
    }
}

/// Content-addressed bytes: a layer, a config or a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    media_type: &'static str,
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type,
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    /// Its media type.
    pub fn media_type(&self) -> &'static str {
        self.media_type
    }

    /// `sha256:<hex>` of its bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn descriptor(&self) -> Descriptor<'_> {
        Descriptor {
            media_type: self.media_type,
            digest: &self.digest,
            size: self.size(),
        }
    }
}

/// An image packed by [`build_image`]: its three blobs and the layer's
/// diff ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    layer: Blob,
    config: Blob,
    manifest: Blob,
    diff_id: String,
    architecture: &'static str,
}

impl BuiltImage {
    /// What a recording executor answers for the image build: no bytes,
    /// digests `<layer digest>`, `<config digest>` and
    /// `sha256:<manifest digest>` (the reference is read at run time).
    pub fn stand_in() -> BuiltImage {
        let blob = |media_type, digest: &str| Blob {
            media_type,
            digest: digest.to_owned(),
            bytes: Vec::new(),
        };
        BuiltImage {
            layer: blob(LAYER_MEDIA_TYPE, "<layer digest>"),
            config: blob(CONFIG_MEDIA_TYPE, "<config digest>"),
            manifest: blob(MANIFEST_MEDIA_TYPE, "sha256:<manifest digest>"),
            diff_id: "<diff id>".to_owned(),
            architecture: "<architecture>",
        }
    }

    /// The gzip'd tar layer.
    pub fn layer(&self) -> &Blob {
        &self.layer
    }

    /// The image config (JSON).
    pub fn config(&self) -> &Blob {
        &self.config
    }

    /// The manifest (JSON); its digest is the image's digest.
    pub fn manifest(&self) -> &Blob {
        &self.manifest
    }

    /// `sha256:<hex>` of the uncompressed layer tar (the config's
    /// `rootfs.diff_ids[0]`).
    pub fn diff_id(&self) -> &str {
        &self.diff_id
    }

    /// The OCI architecture in the config: `amd64` or `arm64`.
    pub fn architecture(&self) -> &'static str {
        self.architecture
    }
}

/// Packs `spec` into a one-layer image.
///
/// The layer is a gzip'd tar of: the directories `proc/`, `dev/`, `run/`
/// and every parent of the other entries (mode 0755, sorted); the binary
/// (mode 0755); the symlinks, in the order given. Every entry has uid/gid
/// 0 and mtime 0, and the gzip header has no name and mtime 0, so the
/// digests depend only on the binary's contents and the spec.
pub fn build_image(spec: &ImageSpec) -> Result<BuiltImage, OciError> {
    let binary = read_static_binary(spec.binary)?;
    let architecture = oci_architecture(spec.binary, &binary)?;
    let mut extras = Vec::with_capacity(spec.extra_binaries.len());
    for (file, _) in spec.extra_binaries {
        let bytes = read_static_binary(file)?;
        let arch = oci_architecture(file, &bytes)?;
        if arch != architecture {
            return Err(OciError::InvalidSpec {
                problem: format!(
                    "{} is {arch} but the entrypoint {} is {architecture}: an image has one architecture",
                    file.display(),
                    spec.binary.display()
                ),
            });
        }
        extras.push(bytes);
    }
    let entries = layout(spec)?;

    let mut files: Vec<(&str, &[u8])> = vec![(spec.path_in_image, &binary)];
    for ((_, path), bytes) in spec.extra_binaries.iter().zip(&extras) {
        files.push((path, bytes));
    }
    let tar = write_tar(&entries, &files).map_err(OciError::Layer)?;
    let diff_id = sha256_digest(&tar);
    let layer = Blob::new(LAYER_MEDIA_TYPE, gzip(&tar).map_err(OciError::Layer)?);

    let config = ImageConfig {
        architecture,
        os: "linux",
        config: ExecConfig {
            entrypoint: vec![format!("/{}", spec.path_in_image)],
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids: vec![&diff_id],
        },
    };
    let config = Blob::new(
        CONFIG_MEDIA_TYPE,
        serde_json::to_vec(&config).map_err(|source| OciError::Json {
            what: "config",
            source,
        })?,
    );
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE,
        config: config.descriptor(),
        layers: vec![layer.descriptor()],
    };
    let manifest = Blob::new(
        MANIFEST_MEDIA_TYPE,
        serde_json::to_vec(&manifest).map_err(|source| OciError::Json {
            what: "manifest",
            source,
        })?,
    );
    debug!(
        binary = %spec.binary.display(),
        manifest = %manifest.digest,
        layer = %layer.digest,
        layer_size = layer.size(),
        "built image"
    );
    Ok(BuiltImage {
        layer,
        config,
        manifest,
        diff_id,
        architecture,
    })
}

/// A repository on a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repo {
    /// `host[:port]`, spoken to over plain HTTP.
    pub registry: String,
    /// The repository path, e.g. `team/x/ate-probe`.
    pub repository: String,
}

impl Repo {
    /// `http://<registry>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.registry)
    }

    /// The URL of blob `digest` in this repository.
    pub fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base_url(), self.repository)
    }

    /// The URL that starts a blob upload in this repository.
    pub fn uploads_url(&self) -> String {
        format!("{}/v2/{}/blobs/uploads/", self.base_url(), self.repository)
    }

    /// The URL of the manifest tagged (or with digest) `reference`.
    pub fn manifest_url(&self, reference: &str) -> String {
        format!(
            "{}/v2/{}/manifests/{reference}",
            self.base_url(),
            self.repository
        )
    }
}

/// `<registry>/<repository>`.
impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// The repository for `image_name` under `KO_DOCKER_REPO`: its first
/// component is the registry (`host[:port]`), the rest a path prefix.
/// `localhost:5001` gives `localhost:5001` + `<image_name>`;
/// `localhost:5001/team/x` gives `localhost:5001` + `team/x/<image_name>`.
///
/// Rejected, with the bad value and what is allowed: an empty value, a
/// scheme (`https://...`), ko's `ko.local`/`kind.local` pseudo-registries,
/// a registry that is not `host[:port]`, and repository components
/// (including those of `image_name`) outside
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub fn repo_from_ko_docker_repo(ko_docker_repo: &str, image_name: &str) -> Result<Repo, OciError> {
    let bad = |problem: String| OciError::InvalidKoDockerRepo {
        value: ko_docker_repo.to_owned(),
        problem,
    };
    if ko_docker_repo.is_empty() {
        return Err(bad(
            "is empty: set it to a registry host[:port] with an optional repository path, \
             e.g. localhost:5001"
                .into(),
        ));
    }
    if let Some((scheme, _)) = ko_docker_repo.split_once("://") {
        return Err(bad(format!(
            "has a scheme (`{scheme}://`): write host[:port][/path] without one, \
             e.g. localhost:5001 (the registry is spoken to over plain http)"
        )));
    }
    let (registry, path) = match ko_docker_repo.split_once('/') {
        Some((registry, path)) => (registry, Some(path)),
        None => (ko_docker_repo, None),
    };
    if matches!(registry, "ko.local" | "kind.local") {
        return Err(bad(format!(
            "names ko's pseudo-registry `{registry}`, which side-loads images instead of \
             pushing them: name a registry host[:port], e.g. localhost:5001"
        )));
    }
    if let Err(problem) = check_registry(registry) {
        return Err(bad(format!(
            "does not start with a registry host[:port]: `{registry}` {problem}"
        )));
    }
    if let Some(path) = path {
        check_repository_path(path).map_err(|problem| bad(format!("has a bad path: {problem}")))?;
    }
    if image_name.is_empty() {
        return Err(OciError::InvalidImageName {
            name: image_name.to_owned(),
            problem: format!("is empty: it must be one or more components of {COMPONENT_RULE}"),
        });
    }
    check_repository_path(image_name).map_err(|problem| OciError::InvalidImageName {
        name: image_name.to_owned(),
        problem,
    })?;
    let repository = match path {
        Some(path) => format!("{path}/{image_name}"),
        None => image_name.to_owned(),
    };
    if repository.len() > MAX_REPOSITORY_LEN {
        return Err(bad(format!(
            "with image name `{image_name}` gives the repository `{repository}`, which is \
             {} bytes long; at most {MAX_REPOSITORY_LEN} are allowed",
            repository.len()
        )));
    }
    Ok(Repo {
        registry: registry.to_owned(),
        repository,
    })
}

/// Where a pushed image is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedImage {
    /// `<registry>/<repository>@sha256:...`: the reference to put in
    /// manifests.
    pub reference: String,
    /// The manifest's digest, `sha256:...`.
    pub digest: String,
    /// `<registry>/<repository>:<tag>`.
    pub tag_reference: String,
    /// Digests of the blobs uploaded, in order (layer, config).
    pub uploaded_blobs: Vec<String>,
    /// Digests of the blobs the registry already had, so not uploaded.
    pub skipped_blobs: Vec<String>,
}

/// Pushes `image` to `repo` over plain HTTP and tags it `tag`.
///
/// For the layer, then the config: `HEAD` the blob (200: already there,
/// skipped; 404: upload), else `POST .../blobs/uploads/` (202 with a
/// `Location`) and one monolithic `PUT <location>?digest=...` (201). Then
/// `PUT .../manifests/<tag>` (201), checking the registry's
/// `Docker-Content-Digest` against ours when it sends one. Each request
/// has [`REQUEST_TIMEOUT`]; an upload `Location` must stay on the registry.
pub async fn push(
    http: &reqwest::Client,
    repo: &Repo,
    tag: &str,
    image: &BuiltImage,
) -> Result<PushedImage, OciError> {
    push_with(&Executor::real(), http, repo, tag, image).await
}

/// [`push`] with every request recorded by `exec` (a [`Step::Registry`](super::plan::Step)
/// each, before it is made). A recording executor answers every `HEAD`
/// "not there" (404), so the plan shows the uploads, every upload's
/// `Location` as `<Location of the POST>`, and every other request done.
pub async fn push_with(
    exec: &Executor,
    http: &reqwest::Client,
    repo: &Repo,
    tag: &str,
    image: &BuiltImage,
) -> Result<PushedImage, OciError> {
    check_tag(tag)?;
    let started = std::time::Instant::now();
    let registry = Registry { exec, http, repo };
    let mut uploaded_blobs = Vec::new();
    let mut skipped_blobs = Vec::new();
    for (what, blob) in [("layer", image.layer()), ("config", image.config())] {
        if registry.has_blob(what, blob).await? {
            debug!(repo = %repo, digest = %blob.digest, "blob already there");
            skipped_blobs.push(blob.digest.clone());
        } else {
            registry.upload_blob(what, blob).await?;
            uploaded_blobs.push(blob.digest.clone());
        }
    }
    registry.put_manifest(tag, image.manifest()).await?;
    let pushed = PushedImage {
        reference: format!("{repo}@{}", image.manifest.digest),
        digest: image.manifest.digest.clone(),
        tag_reference: format!("{repo}:{tag}"),
        uploaded_blobs,
        skipped_blobs,
    };
    info!(
        reference = %pushed.reference,
        tag = %pushed.tag_reference,
        uploaded = pushed.uploaded_blobs.len(),
        skipped = pushed.skipped_blobs.len(),
        elapsed = ?started.elapsed(),
        "pushed image"
    );
    Ok(pushed)
}

// ---------------------------------------------------------------------------
// Building

/// One entry of the layer, in archive order.
#[derive(Debug, PartialEq, Eq)]
enum Entry<'a> {
    Dir(String),
    /// The n-th executable: 0 the entrypoint, then `extra_binaries`.
    Binary(usize),
    Symlink(&'a str, &'a str),
}

/// The layer's entries: directories (sorted, parents first), the binary,
/// the symlinks. Paths are checked here so that the tar is unambiguous.
fn layout<'a>(spec: &ImageSpec<'a>) -> Result<Vec<Entry<'a>>, OciError> {
    let invalid = |problem: String| OciError::InvalidSpec { problem };
    check_image_path(spec.path_in_image)
        .map_err(|problem| invalid(format!("path_in_image `{}` {problem}", spec.path_in_image)))?;
    let mut files: Vec<&str> = vec![spec.path_in_image];
    for (_, path) in spec.extra_binaries {
        check_image_path(path)
            .map_err(|problem| invalid(format!("extra binary path `{path}` {problem}")))?;
        if files.contains(&path.as_str()) {
            return Err(invalid(format!("`{path}` is in the image twice")));
        }
        files.push(path);
    }
    for (path, target) in spec.symlinks {
        check_image_path(path)
            .map_err(|problem| invalid(format!("symlink path `{path}` {problem}")))?;
        if target.is_empty() || target.contains('\0') {
            return Err(invalid(format!(
                "symlink `{path}` has target `{target}`: a target must be non-empty and \
                 without NUL bytes"
            )));
        }
        if files.contains(&path.as_str()) {
            return Err(invalid(format!("`{path}` is in the image twice")));
        }
        files.push(path);
    }
    let mut dirs: BTreeSet<String> = EMPTY_DIRS
        .iter()
        .filter(|dir| !files.contains(dir))
        .map(|dir| dir.to_string())
        .collect();
    for file in &files {
        let mut parent = Path::new(file).parent();
        while let Some(dir) = parent.and_then(Path::to_str).filter(|dir| !dir.is_empty()) {
            if files.contains(&dir) {
                return Err(invalid(format!(
                    "`{dir}` is a file or symlink, but also the parent of `{file}`"
                )));
            }
            dirs.insert(dir.to_owned());
            parent = Path::new(dir).parent();
        }
    }
    let mut entries: Vec<Entry> = dirs.into_iter().map(Entry::Dir).collect();
    entries.extend((0..=spec.extra_binaries.len()).map(Entry::Binary));
    entries.extend(
        spec.symlinks
            .iter()
            .map(|(path, target)| Entry::Symlink(path, target)),
    );
    Ok(entries)
}

/// A path in the image: relative, with no empty, `.` or `..` component.
fn check_image_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("is empty".into());
    }
    if path.starts_with('/') {
        return Err("is absolute: write it without the leading `/`".into());
    }
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("has an empty, `.` or `..` component".into());
    }
    Ok(())
}

fn write_tar(entries: &[Entry], files: &[(&str, &[u8])]) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for entry in entries {
        match entry {
            Entry::Dir(dir) => {
                let mut header = header(tar::EntryType::Directory, 0o755, 0);
                tar.append_data(&mut header, format!("{dir}/"), io::empty())?;
            }
            Entry::Binary(n) => {
                let (path, bytes) = files[*n];
                let mut header = header(tar::EntryType::Regular, 0o755, bytes.len() as u64);
                tar.append_data(&mut header, path, bytes)?;
            }
            Entry::Symlink(path, target) => {
                let mut header = header(tar::EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut header, path, target)?;
            }
        }
    }
    tar.into_inner()
}

/// A header owned by root, dated the epoch.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn gzip(bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes)?;
    gz.finish()
}

/// The file's bytes, if it is a static ELF executable.
fn read_static_binary(path: &Path) -> Result<Vec<u8>, OciError> {
    let binary_error = |source| OciError::Binary {
        path: path.to_path_buf(),
        source,
    };
    match fixture::elf_linkage(path).map_err(binary_error)? {
        Linkage::Static => {}
        Linkage::Dynamic { interpreter } => {
            return Err(OciError::NotStatic {
                path: path.to_path_buf(),
                interpreter,
            })
        }
    }
    std::fs::read(path).map_err(|source| {
        binary_error(FixtureError::Read {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// The OCI architecture for the ELF file's `e_machine`.
fn oci_architecture(path: &Path, elf: &[u8]) -> Result<&'static str, OciError> {
    const EM_X86_64: u16 = 0x3e;
    const EM_AARCH64: u16 = 0xb7;
    // `elf_linkage` has checked the 64-byte header is there.
    let machine = match elf.get(0x12..0x14) {
        Some(bytes) => u16::from_le_bytes([bytes[0], bytes[1]]),
        None => 0,
    };
    match machine {
        EM_X86_64 => Ok("amd64"),
        EM_AARCH64 => Ok("arm64"),
        machine => Err(OciError::UnsupportedMachine {
            path: path.to_path_buf(),
            machine,
        }),
    }
}

/// `sha256:<lowercase hex>`.
fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::sha256_hex(bytes))
}

/// The image config, fields in a fixed order.
#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'static str,
    os: &'static str,
    config: ExecConfig,
    rootfs: RootFs<'a>,
}

#[derive(Serialize)]
struct ExecConfig {
    #[serde(rename = "Entrypoint")]
    entrypoint: Vec<String>,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<&'a str>,
}

/// The manifest, fields in a fixed order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'static str,
    digest: &'a str,
    size: u64,
}

// ---------------------------------------------------------------------------
// Names

/// `host[:port]`: a DNS name or IPv4 address (letters, digits, `.`, `-`),
/// or a bracketed IPv6 address, and an optional port 1..=65535.
fn check_registry(registry: &str) -> Result<(), String> {
    if registry.is_empty() {
        return Err("is empty".into());
    }
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err("opens `[` without closing it".into());
        };
        if inside.is_empty() || !inside.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err("has a bracketed host that is not an IPv6 address".into());
        }
        match after {
            "" => (inside, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (inside, Some(port)),
                None => return Err("has text after `]` that is not `:port`".into()),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if !registry.starts_with('[') && !host.split('.').all(label_ok) {
        return Err(
            "is not host[:port]: the host must be dot-separated labels of letters, digits \
             and inner dashes"
                .into(),
        );
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.chars().all(|c| c.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|port| port != 0);
        if !valid {
            return Err(format!(
                "has port `{port}`: a port is a number from 1 to 65535"
            ));
        }
    }
    Ok(())
}

/// A `/`-separated repository path whose components follow the
/// distribution spec.
fn check_repository_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err(format!(
                "`{path}` has an empty component; components are {COMPONENT_RULE}"
            ));
        }
        if !is_path_component(component) {
            return Err(format!(
                "has the component `{component}`, which is not allowed: components are \
                 {COMPONENT_RULE}"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), OciError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let valid = tag.len() <= 128
        && chars.next().is_some_and(word)
        && chars.all(|c| word(c) || c == '.' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(OciError::InvalidTag {
            tag: tag.to_owned(),
        })
    }
}

// ---------------------------------------------------------------------------
// Pushing

/// A repository on a registry, with the client to reach it.
struct Registry<'a> {
    exec: &'a Executor,
    http: &'a reqwest::Client,
    repo: &'a Repo,
}

/// One request: what it is, for errors.
struct Call {
    method: Method,
    url: String,
}

impl Registry<'_> {
    async fn has_blob(&self, what: &str, blob: &Blob) -> Result<bool, OciError> {
        let call = Call {
            method: Method::HEAD,
            url: self.repo.blob_url(&blob.digest),
        };
        let step = ApiCall::new(
            "HEAD",
            call.url.clone(),
            format!(
                "is the {what} blob {} already in {}",
                blob.digest, self.repo
            ),
        );
        let real = async {
            let response = self.send(&call, |req| req).await?;
            match response.status() {
                StatusCode::OK => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(unexpected(&call, response, "200 OK or 404 Not Found").await),
            }
        };
        self.exec.registry(step, real, || Ok(false)).await
    }

    async fn upload_blob(&self, what: &str, blob: &Blob) -> Result<(), OciError> {
        let start = Call {
            method: Method::POST,
            url: self.repo.uploads_url(),
        };
        let step = ApiCall::new(
            "POST",
            start.url.clone(),
            format!("start uploading the {what} blob (only if the HEAD answered 404)"),
        );
        let real = async {
            let response = self.send(&start, |req| req).await?;
            if response.status() != StatusCode::ACCEPTED {
                return Err(unexpected(&start, response, "202 Accepted").await);
            }
            upload_url(
                &self.repo.base_url(),
                &start.url,
                response.headers(),
                &blob.digest,
            )
            .map_err(|problem| OciError::BadLocation {
                method: start.method.clone(),
                url: start.url.clone(),
                problem,
            })
        };
        let url = self
            .exec
            .registry(step, real, || {
                Ok(format!("<Location of the POST>?digest={}", blob.digest))
            })
            .await?;
        let put = Call {
            method: Method::PUT,
            url,
        };
        let step = ApiCall::new(
            "PUT",
            put.url.clone(),
            format!("upload the {what} blob in one request (only if the HEAD answered 404)"),
        );
        let real = async {
            let response = self
                .send(&put, |req| {
                    req.header(CONTENT_TYPE, "application/octet-stream")
                        .body(blob.bytes.clone())
                })
                .await?;
            if response.status() != StatusCode::CREATED {
                return Err(unexpected(&put, response, "201 Created").await);
            }
            check_digest(&put, response.headers(), &blob.digest)
        };
        self.exec.registry(step, real, || Ok(())).await?;
        debug!(repo = %self.repo, digest = %blob.digest, size = blob.size(), "uploaded blob");
        Ok(())
    }

    async fn put_manifest(&self, tag: &str, manifest: &Blob) -> Result<(), OciError> {
        let call = Call {
            method: Method::PUT,
            url: self.repo.manifest_url(tag),
        };
        let step = ApiCall::new(
            "PUT",
            call.url.clone(),
            format!(
                "store the manifest {} as {}:{tag}",
                manifest.digest, self.repo
            ),
        );
        let real = async {
            let response = self
                .send(&call, |req| {
                    req.header(CONTENT_TYPE, manifest.media_type)
                        .body(manifest.bytes.clone())
                })
                .await?;
            if response.status() != StatusCode::CREATED {
                return Err(unexpected(&call, response, "201 Created").await);
            }
            check_digest(&call, response.headers(), &manifest.digest)
        };
        self.exec.registry(step, real, || Ok(())).await
    }

    /// Sends one request with its deadline; transport failures become
    /// errors naming the URL.
    async fn send(
        &self,
        call: &Call,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, OciError> {
        let request = self
            .http
            .request(call.method.clone(), &call.url)
            .timeout(REQUEST_TIMEOUT);
        build(request)
            .send()
            .await
            .map_err(|err| transport_error(call, &self.repo.base_url(), err))
    }
}

fn transport_error(call: &Call, registry: &str, err: reqwest::Error) -> OciError {
    let (method, url) = (call.method.clone(), call.url.clone());
    // The message names the URL already.
    let source = err.without_url();
    if source.is_timeout() {
        OciError::Timeout {
            method,
            url,
            after: REQUEST_TIMEOUT,
            source,
        }
    } else if source.is_connect() {
        OciError::Unreachable {
            registry: registry.to_owned(),
            method,
            url,
            source,
        }
    } else {
        OciError::Request {
            method,
            url,
            source,
        }
    }
}

/// A [`OciError::Status`] with the start of the body (read within the
/// request's deadline; a body that cannot be read says so).
async fn unexpected(
    call: &Call,
    mut response: reqwest::Response,
    expected: &'static str,
) -> OciError {
    let status = response.status();
    let mut body = Vec::new();
    let mut unreadable = None;
    while body.len() < BODY_EXCERPT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(err) => {
                unreadable = Some(err.without_url());
                break;
            }
        }
    }
    let cut = body.len() > BODY_EXCERPT;
    body.truncate(BODY_EXCERPT);
    let mut text = String::from_utf8_lossy(&body).trim_end().to_owned();
    if cut {
        text.push_str(" ...");
    }
    if text.is_empty() {
        text = "(empty body)".into();
    }
    if let Some(err) = unreadable {
        text.push_str(&format!(" (reading the body failed: {err})"));
    }
    OciError::Status {
        method: call.method.clone(),
        url: call.url.clone(),
        status,
        expected,
        body: text,
    }
}

/// The registry's `Docker-Content-Digest`, when sent, must be ours.
fn check_digest(call: &Call, headers: &HeaderMap, expected: &str) -> Result<(), OciError> {
    let Some(got) = headers.get(CONTENT_DIGEST) else {
        return Ok(());
    };
    let got = String::from_utf8_lossy(got.as_bytes());
    if got == expected {
        return Ok(());
    }
    Err(OciError::DigestMismatch {
        method: call.method.clone(),
        url: call.url.clone(),
        expected: expected.to_owned(),
        got: got.into_owned(),
    })
}

/// The URL that completes an upload: the `Location` of the answer to
/// `request_url` (absolute, or relative to `request_url`) with
/// `digest=<digest>` appended to its query. It must be on the registry
/// itself (same scheme, host and port as `registry`).
fn upload_url(
    registry: &str,
    request_url: &str,
    headers: &HeaderMap,
    digest: &str,
) -> Result<String, String> {
    let location = headers
        .get(LOCATION)
        .ok_or_else(|| "no Location header".to_owned())?;
    let location = location
        .to_str()
        .map_err(|_| format!("Location {location:?} is not ASCII"))?;
    let parse = |url: &str| Url::parse(url).map_err(|err| format!("bad URL {url}: {err}"));
    let (registry_url, base) = (parse(registry)?, parse(request_url)?);
    let mut url = base
        .join(location)
        .map_err(|err| format!("Location `{location}` is not a URL: {err}"))?;
    if url.origin() != registry_url.origin() {
        return Err(format!(
            "Location `{location}` is not on the registry {registry}"
        ));
    }
    url.query_pairs_mut().append_pair("digest", digest);
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use std::io::Read;

    /// A 64-byte ELF64 header with no program headers: "static" for
    /// `elf_linkage`, followed by `payload`.
    fn fake_elf(machine: u16, payload: &[u8]) -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        elf.extend_from_slice(payload);
        elf
    }

    fn write_elf(dir: &Path, name: &str, machine: u16, payload: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, fake_elf(machine, payload)).unwrap();
        path
    }

    fn untar(image: &BuiltImage) -> Vec<(String, tar::EntryType, u32, String, Vec<u8>)> {
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(image.layer().bytes())
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(sha256_digest(&tar), image.diff_id());
        let mut archive = tar::Archive::new(&tar[..]);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let header = entry.header().clone();
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                let link = entry
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                assert_eq!(header.uid().unwrap(), 0);
                assert_eq!(header.gid().unwrap(), 0);
                assert_eq!(header.mtime().unwrap(), 0);
                (
                    path,
                    header.entry_type(),
                    header.mode().unwrap(),
                    link,
                    data,
                )
            })
            .collect()
    }

    #[test]
    fn image_layout_config_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let bin = write_elf(dir.path(), "probe", 0x3e, b"hello");
        let symlinks = vec![
            ("run/ate/actor-id".to_owned(), "/etc/hostname".to_owned()),
            ("escape".to_owned(), "../../..".to_owned()),
        ];
        let spec = ImageSpec {
            binary: &bin,
            path_in_image: "bin/probe",
            symlinks: &symlinks,
            extra_binaries: &[],
        };
        let image = build_image(&spec).unwrap();
        let entries = untar(&image);
        let summary: Vec<(&str, tar::EntryType, u32, &str)> = entries
            .iter()
            .map(|(p, t, m, l, _)| (p.as_str(), *t, *m, l.as_str()))
            .collect();
        use tar::EntryType::{Directory as D, Regular as F, Symlink as L};
        assert_eq!(
            summary,
            vec![
                ("bin/", D, 0o755, ""),
                ("dev/", D, 0o755, ""),
                ("proc/", D, 0o755, ""),
                ("run/", D, 0o755, ""),
                ("run/ate/", D, 0o755, ""),
                ("bin/probe", F, 0o755, ""),
                ("run/ate/actor-id", L, 0o777, "/etc/hostname"),
                ("escape", L, 0o777, "../../.."),
            ]
        );
        assert_eq!(entries[5].4, fake_elf(0x3e, b"hello"));

        let config: serde_json::Value = serde_json::from_slice(image.config().bytes()).unwrap();
        assert_eq!(
            config,
            serde_json::json!({
                "architecture": "amd64",
                "os": "linux",
                "config": {"Entrypoint": ["/bin/probe"]},
                "rootfs": {"type": "layers", "diff_ids": [image.diff_id()]},
            })
        );
        let manifest = std::str::from_utf8(image.manifest().bytes()).unwrap();
        assert_eq!(
            manifest,
            format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"{MANIFEST_MEDIA_TYPE}\",\
                 \"config\":{{\"mediaType\":\"{CONFIG_MEDIA_TYPE}\",\"digest\":\"{}\",\"size\":{}}},\
                 \"layers\":[{{\"mediaType\":\"{LAYER_MEDIA_TYPE}\",\"digest\":\"{}\",\"size\":{}}}]}}",
                image.config().digest(),
                image.config().size(),
                image.layer().digest(),
                image.layer().size(),
            )
        );
        assert_eq!(
            image.manifest().digest(),
            sha256_digest(image.manifest().bytes())
        );
    }

    #[test]
    fn same_contents_same_digests() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_elf(dir.path(), "a", 0xb7, b"same");
        let b = write_elf(dir.path(), "b", 0xb7, b"same");
        let c = write_elf(dir.path(), "c", 0xb7, b"different");
        let build = |path: &Path| build_image(&ImageSpec::new(path, "probe")).unwrap();
        assert_eq!(build(&a), build(&a));
        assert_eq!(build(&a), build(&b));
        assert_eq!(build(&a).architecture(), "arm64");
        assert_ne!(build(&a).manifest().digest(), build(&c).manifest().digest());
    }

    #[test]
    fn bad_specs_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let bin = write_elf(dir.path(), "probe", 0x3e, b"");
        let link = |path: &str| vec![(path.to_owned(), "x".to_owned())];
        type Case<'a> = (&'a str, Vec<(String, String)>, &'a str);
        let cases: Vec<Case> = vec![
            ("/probe", vec![], "is absolute"),
            ("", vec![], "is empty"),
            ("a/../probe", vec![], "`..` component"),
            ("probe", link("probe"), "twice"),
            ("run/probe", link("run"), "also the parent of `run/probe`"),
            ("probe", link("./x"), "`.`"),
        ];
        for (path, symlinks, want) in cases {
            let spec = ImageSpec {
                binary: &bin,
                path_in_image: path,
                symlinks: &symlinks,
                extra_binaries: &[],
            };
            let err = build_image(&spec).unwrap_err().to_string();
            assert!(err.contains(want), "{path} {symlinks:?}: {err}");
        }
        // A symlink may take the place of a default directory.
        let run = vec![("run".to_owned(), "/tmp".to_owned())];
        let spec = ImageSpec {
            binary: &bin,
            path_in_image: "probe",
            symlinks: &run,
            extra_binaries: &[],
        };
        let names: Vec<String> = untar(&build_image(&spec).unwrap())
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, ["dev/", "proc/", "probe", "run"]);
    }

    #[test]
    fn bad_binaries_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("script");
        std::fs::write(&text, "#!/bin/sh\n").unwrap();
        let riscv = write_elf(dir.path(), "riscv", 0xf3, b"");
        let missing = dir.path().join("missing");
        for (path, want) in [
            (&text, "cannot use"),
            (&riscv, "ELF machine 0xf3"),
            (&missing, "cannot use"),
        ] {
            let err = build_image(&ImageSpec::new(path, "probe")).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
            assert!(err.to_string().contains(&path.display().to_string()));
        }
    }

    #[test]
    fn ko_docker_repo_is_parsed() {
        let repo = |ko: &str, name: &str| repo_from_ko_docker_repo(ko, name);
        assert_eq!(
            repo("localhost:5001", "ate-probe").unwrap(),
            Repo {
                registry: "localhost:5001".into(),
                repository: "ate-probe".into()
            }
        );
        assert_eq!(
            repo("localhost:5001/team/x", "ate-probe").unwrap(),
            Repo {
                registry: "localhost:5001".into(),
                repository: "team/x/ate-probe".into()
            }
        );
        assert_eq!(
            repo("127.0.0.1:5001/a__b/c-d.e", "p").unwrap().repository,
            "a__b/c-d.e/p"
        );
        assert_eq!(repo("[::1]:5001", "p").unwrap().registry, "[::1]:5001");
        for (ko, name, want, named) in [
            ("", "p", "is empty", "KO_DOCKER_REPO ``"),
            (
                "https://localhost:5001",
                "p",
                "has a scheme (`https://`)",
                "",
            ),
            ("localhost:5001/Team/x", "p", "`Team`", ""),
            ("localhost:5001/team/", "p", "empty component", ""),
            ("localhost:99999", "p", "port `99999`", ""),
            ("local_host:5001", "p", "host[:port]", ""),
            ("ko.local", "p", "pseudo-registry", ""),
            ("localhost:5001", "Probe", "`Probe`", "image name `Probe`"),
            ("localhost:5001", "a..b", "`a..b`", "image name `a..b`"),
            ("localhost:5001", "", "is empty", "image name ``"),
        ] {
            let err = repo(ko, name).unwrap_err().to_string();
            assert!(err.contains(want), "{ko:?} {name:?}: {err}");
            let named = match named {
                "" => format!("KO_DOCKER_REPO `{ko}`"),
                named => named.to_owned(),
            };
            assert!(err.starts_with(&named), "{err}");
        }
    }

    #[test]
    fn path_components_follow_the_spec() {
        for ok in [
            "a",
            "a0",
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a---b",
            "0.1-x_y__z",
        ] {
            assert!(is_path_component(ok), "{ok}");
        }
        for bad in [
            "", "A", "a.", ".a", "a..b", "a___b", "a_.b", "-a", "a-", "a b", "a/b",
        ] {
            assert!(!is_path_component(bad), "{bad}");
        }
    }

    #[test]
    fn tags() {
        for ok in [
            "latest",
            "conformance-test",
            "_x",
            "v1.2.3",
            &"a".repeat(128),
        ] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a:b", "a/b", &"a".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upload_locations() {
        let registry = "http://127.0.0.1:5001";
        let post = "http://127.0.0.1:5001/v2/p/blobs/uploads/";
        let with = |location: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(LOCATION, HeaderValue::from_str(location).unwrap());
            upload_url(registry, post, &headers, "sha256:ab")
        };
        assert_eq!(
            with("/v2/p/blobs/uploads/u1").unwrap(),
            "http://127.0.0.1:5001/v2/p/blobs/uploads/u1?digest=sha256%3Aab"
        );
        assert_eq!(
            with("http://127.0.0.1:5001/v2/p/blobs/uploads/u1?_state=xyz").unwrap(),
            "http://127.0.0.1:5001/v2/p/blobs/uploads/u1?_state=xyz&digest=sha256%3Aab"
        );
        assert_eq!(
            with("u2").unwrap(),
            "http://127.0.0.1:5001/v2/p/blobs/uploads/u2?digest=sha256%3Aab"
        );
        assert!(with("http://10.0.0.1/v2/p/blobs/uploads/u1")
            .unwrap_err()
            .contains("not on the registry"));
        assert!(upload_url(registry, post, &HeaderMap::new(), "sha256:ab")
            .unwrap_err()
            .contains("no Location"));
    }

    fn registry_lines(plan: &super::super::plan::Plan) -> Vec<String> {
        plan.steps()
            .iter()
            .map(|s| match s {
                super::super::plan::Step::Registry(c) => format!("{} {}", c.method, c.path),
                other => panic!("not a registry request: {other}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_recorded_push_lists_the_requests_in_order_and_sends_none() {
        let repo = Repo {
            registry: "localhost:5001".into(),
            repository: "team/ate-probe".into(),
        };
        // No client would reach anything: the recording executor sends nothing.
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let exec = Executor::recording();
        let pushed = push_with(&exec, &http, &repo, "t1", &BuiltImage::stand_in())
            .await
            .unwrap();
        assert_eq!(
            registry_lines(exec.plan()),
            [
                "HEAD http://localhost:5001/v2/team/ate-probe/blobs/<layer digest>",
                "POST http://localhost:5001/v2/team/ate-probe/blobs/uploads/",
                "PUT <Location of the POST>?digest=<layer digest>",
                "HEAD http://localhost:5001/v2/team/ate-probe/blobs/<config digest>",
                "POST http://localhost:5001/v2/team/ate-probe/blobs/uploads/",
                "PUT <Location of the POST>?digest=<config digest>",
                "PUT http://localhost:5001/v2/team/ate-probe/manifests/t1",
            ]
        );
        assert_eq!(
            pushed.reference,
            "localhost:5001/team/ate-probe@sha256:<manifest digest>"
        );
        // With a built image the requests name its digests.
        let dir = tempfile::tempdir().unwrap();
        let bin = write_elf(dir.path(), "probe", 0x3e, b"x");
        let image = build_image(&ImageSpec::new(&bin, "probe")).unwrap();
        let exec = Executor::recording();
        push_with(&exec, &http, &repo, "t1", &image).await.unwrap();
        let steps = exec.plan().steps();
        let calls: Vec<&ApiCall> = steps
            .iter()
            .map(|s| match s {
                super::super::plan::Step::Registry(c) => c,
                other => panic!("not a registry request: {other}"),
            })
            .collect();
        assert!(calls[0].path.ends_with(image.layer().digest()));
        assert!(calls[3].path.ends_with(image.config().digest()));
        assert!(calls[6].purpose.contains(image.manifest().digest()));
    }
}
