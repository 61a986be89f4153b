//! Pulling an image from an OCI registry and unpacking it into a rootfs,
//! as atelet's pull cache and `untar` do (`cmd/atelet/oci.go:56-104,
//! 253-397`, `cmd/atelet/internal/memorypullcache`), small.
//!
//! References are `host[:port]/repo[:tag]` or `host[:port]/repo@sha256:…`.
//! Only `localhost` and `127.0.0.1` registries are pulled, over plain HTTP
//! (upstream pulls those over plain HTTP too, CONTRACT.md V; the stand-in
//! has no TLS client and no cloud credentials, so other registries are an
//! error that says so). `--localhost-registry-replacement` rewrites the
//! registry of such references, as upstream's flag does
//! (`cmd/atelet/main.go:66`).
//!
//! The distribution API: `GET /v2/<name>/manifests/<ref>` with an `Accept`
//! for OCI and Docker v2 manifests and indexes (an index is resolved to its
//! `linux/amd64` manifest), then `GET /v2/<name>/blobs/<digest>` per layer,
//! each checked against its digest. Layers (gzip'd or plain tar) are
//! applied in order into a cache directory named by the manifest's digest
//! under [`Paths::image_cache`](super::paths::Paths::image_cache);
//! whiteouts: `.wh.<name>` removes `<name>`, `.wh..wh..opq` empties its
//! directory. Each container's rootfs is then a copy of that tree
//! ([`ate_refagent::rootfs::copy_image_tree`]: hard links, symlinks recreated
//! unfollowed).
//!
//! **Invariant:** nothing is written outside the cache directory: entries
//! are unpacked with `tar`'s `unpack_in` (which refuses `..` and writes
//! through no symlinked parent), and a whiteout's parents are checked to be
//! real directories before anything is removed.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use sha2::Digest as _;

/// Accept header for manifests and indexes.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// One registry request's deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A pull or unpack that failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference cannot be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference {
        /// The reference.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// The registry is not one the stand-in pulls from.
    #[error(
        "image {reference:?}: the stand-in pulls only from localhost or 127.0.0.1 registries \
         over plain HTTP (no TLS, no credentials); registry {registry:?} is neither"
    )]
    Registry {
        /// The reference.
        reference: String,
        /// Its registry.
        registry: String,
    },
    /// A request failed or was answered with an error.
    #[error("GET {url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// Status or transport error.
        reason: String,
    },
    /// A manifest or index could not be understood.
    #[error("image {reference:?}: {reason}")]
    Manifest {
        /// The reference.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// A blob's bytes do not match its digest.
    #[error("blob {url}: digest mismatch, got sha256:{got}")]
    Digest {
        /// The blob's URL.
        url: String,
        /// What was received.
        got: String,
    },
    /// Unpacking a layer failed.
    #[error("cannot unpack layer {digest} into {}", dir.display())]
    Unpack {
        /// The layer.
        digest: String,
        /// The cache directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A cache directory operation failed.
    #[error("image cache {}", path.display())]
    Cache {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// The repository path.
    pub repository: String,
    /// A tag or a `sha256:…` digest.
    pub reference: String,
}

impl Reference {
    /// Parses `host[:port]/repo[:tag|@digest]`; a reference without a
    /// registry host is refused (Docker Hub is never pulled).
    pub fn parse(s: &str) -> Result<Reference, ImageError> {
        let bad = |reason: &str| ImageError::Reference {
            reference: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (registry, rest) = s.split_once('/').ok_or_else(|| bad("no registry host"))?;
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(bad(
                "no registry host (the first component must be host[:port])",
            ));
        }
        let (repository, reference) = if let Some((repo, digest)) = rest.split_once('@') {
            // A tag before the digest (repo:tag@sha256:...) is ignored.
            let repo = match repo.rsplit_once(':') {
                Some((r, tag)) if !tag.contains('/') => r,
                _ => repo,
            };
            if !digest.starts_with("sha256:") || digest.len() != 71 {
                return Err(bad("the digest must be sha256:<64 hex>"));
            }
            (repo.to_owned(), digest.to_owned())
        } else {
            match rest.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), tag.to_owned()),
                _ => (rest.to_owned(), "latest".to_owned()),
            }
        };
        if repository.is_empty() || reference.is_empty() {
            return Err(bad("empty repository or reference"));
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository,
            reference,
        })
    }

    fn host(&self) -> &str {
        self.registry
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&self.registry)
    }
}

/// The image puller and unpacked-image cache.
pub struct ImageStore {
    cache: PathBuf,
    http: reqwest::Client,
    localhost_replacement: Option<String>,
    lock: tokio::sync::Mutex<()>,
}

#[derive(serde::Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(serde::Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(serde::Deserialize)]
struct ManifestOrIndex {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl ImageStore {
    /// A store caching under `cache`; `localhost_replacement` is atelet's
    /// `--localhost-registry-replacement` (empty: none).
    pub fn new(cache: &Path, localhost_replacement: Option<String>) -> ImageStore {
        ImageStore {
            cache: cache.to_owned(),
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .no_proxy()
                .build()
                .expect("a plain HTTP client builds"),
            localhost_replacement: localhost_replacement.filter(|s| !s.is_empty()),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    async fn get(&self, url: &str, accept: Option<&str>) -> Result<Vec<u8>, ImageError> {
        let http = |reason: String| ImageError::Http {
            url: url.to_owned(),
            reason,
        };
        let mut req = self.http.get(url);
        if let Some(a) = accept {
            req = req.header(reqwest::header::ACCEPT, a);
        }
        let resp = req.send().await.map_err(|e| http(format!("{e}")))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| http(format!("{e}")))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(http(format!("{status}: {}", text.trim())));
        }
        Ok(body.to_vec())
    }

    /// The unpacked tree of image `image` (pulled unless cached), and the
    /// manifest digest it is cached under.
    pub async fn unpacked(&self, image: &str) -> Result<(PathBuf, String), ImageError> {
        let mut r = Reference::parse(image)?;
        if matches!(r.host(), "localhost" | "127.0.0.1") {
            if let Some(rep) = &self.localhost_replacement {
                r.registry = rep.clone();
            }
        } else if self.localhost_replacement.as_deref() != Some(r.registry.as_str()) {
            return Err(ImageError::Registry {
                reference: image.to_owned(),
                registry: r.registry.clone(),
            });
        }
        let base = format!("http://{}/v2/{}", r.registry, r.repository);
        let mut bytes = self
            .get(&format!("{base}/manifests/{}", r.reference), Some(ACCEPT))
            .await?;
        let mut m: ManifestOrIndex =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::Manifest {
                reference: image.to_owned(),
                reason: format!("not a manifest: {e}"),
            })?;
        if let Some(list) = &m.manifests {
            let pick = list
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .ok_or_else(|| ImageError::Manifest {
                    reference: image.to_owned(),
                    reason: format!("index ({}) has no linux/amd64 manifest", m.media_type),
                })?;
            let digest = pick.digest.clone();
            bytes = self
                .get(&format!("{base}/manifests/{digest}"), Some(ACCEPT))
                .await?;
            m = serde_json::from_slice(&bytes).map_err(|e| ImageError::Manifest {
                reference: image.to_owned(),
                reason: format!("not a manifest: {e}"),
            })?;
        }
        let digest = sha256_hex(&bytes);
        let layers = m.layers.ok_or_else(|| ImageError::Manifest {
            reference: image.to_owned(),
            reason: "manifest has no layers".into(),
        })?;

        let _guard = self.lock.lock().await;
        let dir = self.cache.join(&digest);
        let tree = dir.join("rootfs");
        if dir.join("complete").exists() {
            return Ok((tree, digest));
        }
        let cache = |path: &Path| {
            let path = path.to_owned();
            move |source| ImageError::Cache { path, source }
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(cache(&dir))?;
        }
        std::fs::create_dir_all(&tree).map_err(cache(&tree))?;
        for layer in &layers {
            let url = format!("{base}/blobs/{}", layer.digest);
            let blob = self.get(&url, None).await?;
            let got = sha256_hex(&blob);
            if layer.digest.strip_prefix("sha256:") != Some(got.as_str()) {
                return Err(ImageError::Digest { url, got });
            }
            let (tree, digest, media) =
                (tree.clone(), layer.digest.clone(), layer.media_type.clone());
            tokio::task::spawn_blocking(move || {
                apply_layer(&tree, &blob, &media).map_err(|source| ImageError::Unpack {
                    digest,
                    dir: tree,
                    source,
                })
            })
            .await
            .expect("the unpack task does not panic")?;
        }
        std::fs::write(dir.join("complete"), image).map_err(cache(&dir))?;
        Ok((tree, digest))
    }
}

/// Applies one layer (gzip'd or plain tar) to `tree`, whiteouts included.
pub fn apply_layer(tree: &Path, blob: &[u8], media_type: &str) -> std::io::Result<()> {
    let gz = media_type.ends_with("gzip") || blob.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(blob))
    } else {
        Box::new(blob)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let parent = path.parent().unwrap_or(Path::new(""));
            let Some(parent) = confined(tree, parent) else {
                continue;
            };
            if hidden == ".wh..opq" {
                if let Ok(rd) = std::fs::read_dir(&parent) {
                    for e in rd.flatten() {
                        remove_any(&e.path())?;
                    }
                }
            } else if !hidden.is_empty() && hidden != "." && hidden != ".." {
                remove_any(&parent.join(hidden))?;
            }
            continue;
        }
        entry.unpack_in(tree)?;
    }
    Ok(())
}

/// `tree/rel` when every component of `rel` is a real directory under
/// `tree` (no `..`, no symlink); `None` otherwise.
fn confined(tree: &Path, rel: &Path) -> Option<PathBuf> {
    let mut p = tree.to_owned();
    for c in rel.components() {
        match c {
            Component::Normal(n) => {
                p.push(n);
                let m = std::fs::symlink_metadata(&p).ok()?;
                if !m.file_type().is_dir() {
                    return None;
                }
            }
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(p)
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = Reference::parse("127.0.0.1:5000/ate/probe:v1").unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("127.0.0.1:5000", "ate/probe", "v1")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost:5000/p:tag@{d}")).unwrap();
        assert_eq!(
            (r.repository.as_str(), r.reference.as_str()),
            ("p", d.as_str())
        );
        let r = Reference::parse("localhost/p").unwrap();
        assert_eq!(r.reference, "latest");
        assert!(Reference::parse("probe:v1").is_err());
        assert!(Reference::parse("busybox/x").is_err());
    }

    fn layer(entries: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            if let Some(l) = link {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, l).unwrap();
            } else if path.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).unwrap();
            } else {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn layers_apply_with_whiteouts_and_never_write_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let l1 = layer(&[
            ("etc/", None, b""),
            ("etc/a", None, b"a"),
            ("etc/b", None, b"b"),
            ("opq/", None, b""),
            ("opq/x", None, b"x"),
            ("run", Some(outside.to_str().unwrap()), b""),
        ]);
        apply_layer(&tree, &l1, "application/vnd.oci.image.layer.v1.tar").unwrap();
        let l2 = layer(&[
            ("etc/.wh.a", None, b""),
            ("opq/.wh..wh..opq", None, b""),
            ("run/.wh.keep", None, b""),
        ]);
        apply_layer(&tree, &l2, "").unwrap();
        assert!(!tree.join("etc/a").exists());
        assert!(tree.join("etc/b").exists());
        assert!(tree.join("opq").is_dir() && !tree.join("opq/x").exists());
        assert!(
            outside.join("keep").exists(),
            "a whiteout under a symlink removed a file outside"
        );
        // A file through the symlink is refused, not written outside.
        let l3 = layer(&[("run/evil", None, b"e")]);
        assert!(apply_layer(&tree, &l3, "").is_err());
        assert!(!outside.join("evil").exists());
    }
}
