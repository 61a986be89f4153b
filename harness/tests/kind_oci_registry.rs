//! The probe image against a real registry: Debian's `docker-registry`
//! (distribution 2.8) on loopback, one fresh instance per test, with a
//! config of our own (the packaged one wants htpasswd auth on :5000).
//!
//! Nothing is mocked except where a test needs a registry that misbehaves
//! (a port nothing listens on; a listener that answers 500). A missing
//! `docker-registry` fails the tests, with the command that installs it.

#[path = "support/registry.rs"]
mod registry;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context};
use ate_harness::backend::kind::exec::Executor;
use ate_harness::backend::kind::oci::{
    build_image, push, push_with, repo_from_ko_docker_repo, ImageSpec, OciError, Repo,
    CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE,
};
use ate_harness::backend::kind::plan::Step;
use ate_harness::fixture::{static_bins, BuildOptions};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use registry::{error_chain, free_port, http_client, TestRegistry};

// ---------------------------------------------------------------------------
// Pulling back

fn sha256(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

struct Pulled {
    content_type: String,
    docker_digest: Option<String>,
    bytes: Vec<u8>,
}

async fn pull(http: &reqwest::Client, url: &str, accept: Option<&str>) -> anyhow::Result<Pulled> {
    let mut request = http.get(url).timeout(Duration::from_secs(60));
    if let Some(accept) = accept {
        request = request.header(ACCEPT, accept);
    }
    let response = request.send().await.with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let content_type = header(CONTENT_TYPE.as_str()).unwrap_or_default();
    let docker_digest = header("docker-content-digest");
    let bytes = response
        .bytes()
        .await
        .with_context(|| format!("GET {url}"))?;
    ensure!(
        status == StatusCode::OK,
        "GET {url} answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(Pulled {
        content_type,
        docker_digest,
        bytes: bytes.to_vec(),
    })
}

/// One entry of a layer.
struct LayerEntry {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
}

fn gunzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut tar)
        .context("the layer is not gzip")?;
    Ok(tar)
}

fn entries(tar: &[u8]) -> anyhow::Result<Vec<LayerEntry>> {
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let header = entry.header().clone();
        let path = entry.path()?.to_string_lossy().into_owned();
        let link = entry
            .link_name()?
            .map(|link| link.to_string_lossy().into_owned());
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        out.push(LayerEntry {
            path,
            kind: header.entry_type(),
            mode: header.mode()?,
            uid: header.uid()?,
            gid: header.gid()?,
            mtime: header.mtime()?,
            link,
            data,
        });
    }
    Ok(out)
}

/// The probe, exactly as the local backend gets it.
async fn probe_binary() -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    let bins = static_bins(&BuildOptions::from_env()).await?;
    eprintln!(
        "static probe {} ({} bytes) ready in {:?}",
        bins.probe.display(),
        std::fs::metadata(&bins.probe)?.len(),
        started.elapsed()
    );
    Ok(bins.probe)
}

/// A 64-byte ELF64 x86-64 header with no program headers (static as far
/// as the image builder can tell) and `payload`: enough for error tests.
fn fake_elf(dir: &Path, payload: &[u8]) -> anyhow::Result<PathBuf> {
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[0x12] = 0x3e;
    elf.extend_from_slice(payload);
    let path = dir.join("fake-probe");
    std::fs::write(&path, elf)?;
    Ok(path)
}

// ---------------------------------------------------------------------------
// 1. Push the real probe, pull it back by tag and by digest

#[tokio::test]
async fn pushed_probe_pulls_back_byte_for_byte() -> anyhow::Result<()> {
    let started = Instant::now();
    let probe = probe_binary().await?;
    let registry = TestRegistry::start().await?;
    let outcome = push_and_pull(&registry, &probe).await;
    registry.stop().await?;
    eprintln!("test wall time {:?}", started.elapsed());
    outcome
}

async fn push_and_pull(registry: &TestRegistry, probe: &Path) -> anyhow::Result<()> {
    let http = http_client()?;
    let repo = registry.repo("conformance/ate-probe")?;

    let build_started = Instant::now();
    let image = build_image(&ImageSpec::new(probe, "probe"))?;
    let build_time = build_started.elapsed();
    let push_started = Instant::now();
    let exec = Executor::real();
    let pushed = push_with(&exec, &http, &repo, "conformance-test", &image).await?;
    let push_time = push_started.elapsed();
    // Every request the push made was recorded, and a recording executor
    // records the same ones for the same image (the upload's Location is
    // the registry's answer, so only its digest query can be compared).
    let dry = Executor::recording();
    push_with(&dry, &http, &repo, "conformance-test", &image).await?;
    let (real_steps, dry_steps) = (exec.plan().steps(), dry.plan().steps());
    assert_eq!(real_steps.len(), 7, "{real_steps:#?}");
    assert_eq!(real_steps.len(), dry_steps.len());
    for (r, d) in real_steps.iter().zip(&dry_steps) {
        let (Step::Registry(r), Step::Registry(d)) = (r, d) else {
            panic!("not registry requests: {r} / {d}");
        };
        assert_eq!((r.method, &r.purpose), (d.method, &d.purpose));
        match d.path.strip_prefix("<Location of the POST>?digest=sha256:") {
            // The registry's Location carries the digest query (encoded).
            Some(hex) => assert!(
                r.path.contains(&format!("digest=sha256%3A{hex}")),
                "{} vs {}",
                r.path,
                d.path
            ),
            None => assert_eq!(r.path, d.path),
        }
    }
    eprintln!(
        "image: layer {} bytes (tar {} bytes uncompressed), config {} bytes, manifest {} bytes; \
         built in {build_time:?}, pushed in {push_time:?}",
        image.layer().size(),
        gunzip(image.layer().bytes())?.len(),
        image.config().size(),
        image.manifest().size(),
    );

    let digest = image.manifest().digest();
    assert_eq!(pushed.digest, digest);
    assert_eq!(
        pushed.reference,
        format!("{}/conformance/ate-probe@{digest}", registry.addr)
    );
    assert_eq!(
        pushed.tag_reference,
        format!("{}/conformance/ate-probe:conformance-test", registry.addr)
    );
    assert_eq!(
        pushed.uploaded_blobs,
        [image.layer().digest(), image.config().digest()]
    );
    assert!(pushed.skipped_blobs.is_empty());

    for reference in ["conformance-test", digest] {
        let url = repo.manifest_url(reference);
        let manifest = pull(&http, &url, Some(MANIFEST_MEDIA_TYPE)).await?;
        assert_eq!(manifest.content_type, MANIFEST_MEDIA_TYPE, "{url}");
        assert_eq!(sha256(&manifest.bytes), digest, "{url}");
        assert_eq!(manifest.bytes, image.manifest().bytes(), "{url}");
        if let Some(header) = &manifest.docker_digest {
            assert_eq!(header, digest, "{url}");
        }
        check_manifest(&http, &repo, &manifest.bytes, probe).await?;
    }
    Ok(())
}

/// Everything the manifest points at is what it says, and the layer holds
/// the probe.
async fn check_manifest(
    http: &reqwest::Client,
    repo: &Repo,
    manifest: &[u8],
    probe: &Path,
) -> anyhow::Result<()> {
    let manifest: serde_json::Value = serde_json::from_slice(manifest)?;
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
    let layers = manifest["layers"]
        .as_array()
        .ok_or_else(|| anyhow!("no layers in {manifest}"))?;
    assert_eq!(layers.len(), 1, "{manifest}");

    let blob = |descriptor: &serde_json::Value, media_type: &str| {
        assert_eq!(descriptor["mediaType"], media_type, "{descriptor}");
        let digest = descriptor["digest"].as_str().unwrap_or_default().to_owned();
        let size = descriptor["size"].as_u64();
        let url = repo.blob_url(&digest);
        async move {
            let pulled = pull(http, &url, None).await?;
            assert_eq!(sha256(&pulled.bytes), digest, "{url}");
            assert_eq!(Some(pulled.bytes.len() as u64), size, "{url}");
            anyhow::Ok(pulled.bytes)
        }
    };
    let config = blob(&manifest["config"], CONFIG_MEDIA_TYPE).await?;
    let layer = blob(&layers[0], LAYER_MEDIA_TYPE).await?;

    let tar = gunzip(&layer)?;
    let config: serde_json::Value = serde_json::from_slice(&config)?;
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&tar));
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/probe"])
    );
    assert_eq!(config["os"], "linux");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(config["architecture"], arch);

    let entries = entries(&tar)?;
    let on_disk = std::fs::read(probe)?;
    let probe_entry = entries
        .iter()
        .find(|e| e.path == "probe")
        .ok_or_else(|| anyhow!("no `probe` in the layer"))?;
    assert_eq!(probe_entry.kind, tar::EntryType::Regular);
    assert_eq!(probe_entry.mode, 0o755);
    assert!(
        probe_entry.data == on_disk,
        "the layer's probe ({} bytes) differs from {} ({} bytes)",
        probe_entry.data.len(),
        probe.display(),
        on_disk.len()
    );
    for dir in ["proc/", "dev/", "run/"] {
        let entry = entries
            .iter()
            .find(|e| e.path == dir)
            .ok_or_else(|| anyhow!("no `{dir}` in the layer"))?;
        assert_eq!(entry.kind, tar::EntryType::Directory, "{dir}");
        assert_eq!(entry.mode, 0o755, "{dir}");
    }
    for entry in &entries {
        assert_eq!(
            (entry.uid, entry.gid, entry.mtime),
            (0, 0, 0),
            "{}",
            entry.path
        );
    }
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["dev/", "proc/", "run/", "probe"]);
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. A second push uploads nothing

#[tokio::test]
async fn second_push_uploads_no_blob() -> anyhow::Result<()> {
    let probe = probe_binary().await?;
    let registry = TestRegistry::start().await?;
    let outcome = async {
        let http = http_client()?;
        let repo = registry.repo("ate-probe")?;
        let image = build_image(&ImageSpec::new(&probe, "probe"))?;
        let first = push(&http, &repo, "conformance-test", &image).await?;
        assert_eq!(first.uploaded_blobs.len(), 2);
        let started = Instant::now();
        let second = push(&http, &repo, "conformance-test", &image).await?;
        eprintln!(
            "second push (nothing to upload) took {:?}",
            started.elapsed()
        );
        assert!(
            second.uploaded_blobs.is_empty(),
            "uploaded again: {:?}",
            second.uploaded_blobs
        );
        assert_eq!(
            second.skipped_blobs,
            [image.layer().digest(), image.config().digest()]
        );
        assert_eq!(second.reference, first.reference);
        // A new tag on the same image needs no upload either.
        let third = push(&http, &repo, "another-tag", &image).await?;
        assert!(third.uploaded_blobs.is_empty());
        let by_new_tag = pull(
            &http,
            &repo.manifest_url("another-tag"),
            Some(MANIFEST_MEDIA_TYPE),
        )
        .await?;
        assert_eq!(sha256(&by_new_tag.bytes), first.digest);
        anyhow::Ok(())
    }
    .await;
    registry.stop().await?;
    outcome
}

// ---------------------------------------------------------------------------
// 3. Symlinks

#[tokio::test]
async fn symlinks_are_in_the_layer() -> anyhow::Result<()> {
    let probe = probe_binary().await?;
    let registry = TestRegistry::start().await?;
    let outcome = async {
        let http = http_client()?;
        let repo = registry.repo("ate-probe-symlinks")?;
        let symlinks = vec![
            ("run/ate/actor-id".to_owned(), "/etc/hostname".to_owned()),
            ("escape".to_owned(), "../../../../etc".to_owned()),
            ("bin/probe".to_owned(), "/probe".to_owned()),
        ];
        let spec = ImageSpec {
            binary: &probe,
            path_in_image: "probe",
            symlinks: &symlinks,
            extra_binaries: &[],
        };
        let image = build_image(&spec)?;
        push(&http, &repo, "symlinks", &image).await?;
        let layer = pull(&http, &repo.blob_url(image.layer().digest()), None).await?;
        let entries = entries(&gunzip(&layer.bytes)?)?;
        for (path, target) in &symlinks {
            let entry = entries
                .iter()
                .find(|e| &e.path == path)
                .ok_or_else(|| anyhow!("no `{path}` in the layer"))?;
            assert_eq!(entry.kind, tar::EntryType::Symlink, "{path}");
            assert_eq!(entry.link.as_deref(), Some(target.as_str()), "{path}");
            assert!(entry.data.is_empty(), "{path}");
        }
        // Their parents are directories of their own.
        for dir in ["bin/", "run/", "run/ate/"] {
            let entry = entries
                .iter()
                .find(|e| e.path == dir)
                .ok_or_else(|| anyhow!("no `{dir}` in the layer"))?;
            assert_eq!(entry.kind, tar::EntryType::Directory, "{dir}");
        }
        anyhow::Ok(())
    }
    .await;
    registry.stop().await?;
    outcome
}

// ---------------------------------------------------------------------------
// 4. Determinism

#[tokio::test]
async fn same_binary_same_digests() -> anyhow::Result<()> {
    let probe = probe_binary().await?;
    let spec = ImageSpec::new(&probe, "probe");
    let first = build_image(&spec)?;
    let second = build_image(&spec)?;
    assert_eq!(first, second);

    // Another path, mode and mtime: only the contents count.
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("copy-of-probe");
    std::fs::copy(&probe, &copy)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o700))?;
    std::fs::File::options()
        .write(true)
        .open(&copy)?
        .set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))?;
    let third = build_image(&ImageSpec::new(&copy, "probe"))?;
    assert_eq!(third.manifest().digest(), first.manifest().digest());
    assert_eq!(third.layer().digest(), first.layer().digest());
    assert_eq!(third.config().digest(), first.config().digest());
    assert_eq!(third.diff_id(), first.diff_id());
    eprintln!("manifest digest {}", first.manifest().digest());
    Ok(())
}

// ---------------------------------------------------------------------------
// 5. Failures name the URL and say why

#[tokio::test]
async fn unreachable_registry_names_the_url() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let image = build_image(&ImageSpec::new(&fake_elf(dir.path(), b"x")?, "probe"))?;
    let addr = free_port()?; // nothing listens there any more
    let repo = repo_from_ko_docker_repo(&addr.to_string(), "ate-probe")?;
    let err = push(&http_client()?, &repo, "t", &image)
        .await
        .err()
        .ok_or_else(|| anyhow!("push to {addr}, where nothing listens, succeeded"))?;
    assert!(matches!(err, OciError::Unreachable { .. }), "{err:?}");
    let message = error_chain(&err);
    let url = format!(
        "http://{addr}/v2/ate-probe/blobs/{}",
        image.layer().digest()
    );
    assert!(
        message.starts_with(&format!(
            "registry http://{addr} is unreachable: HEAD {url} failed: "
        )),
        "{message}"
    );
    assert!(
        message.to_lowercase().contains("connection refused"),
        "{message}"
    );
    eprintln!("{message}");
    Ok(())
}

/// A request as a [`ScriptedRegistry`] saw it.
#[derive(Clone, Debug)]
struct SeenRequest {
    method: String,
    target: String,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
    body_len: usize,
}

impl SeenRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

type Script = dyn Fn(&SeenRequest) -> String + Send + Sync;

/// A loopback listener that answers each request with what `script`
/// returns (a whole HTTP/1.1 response), one request per connection, and
/// records the requests: for the failures a real registry does not make.
struct ScriptedRegistry {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedRegistry {
    async fn start(
        script: impl Fn(&SeenRequest) -> String + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(answer(stream, script.clone(), seen.clone()));
                }
            }
        });
        Ok(ScriptedRegistry { addr, seen, task })
    }

    fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ScriptedRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (head, then `content-length` bytes of body), answers
/// it and closes the connection.
async fn answer(
    mut stream: tokio::net::TcpStream,
    script: Arc<Script>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
) {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut request = SeenRequest {
        method,
        target,
        headers,
        body_len: 0,
    };
    let body_len: usize = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while bytes.len() < head_end + body_len {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    request.body_len = bytes.len() - head_end;
    let response = script(&request);
    seen.lock().unwrap().push(request);
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

/// `HEAD` → 404, anything else → 500 with `body`.
async fn failing_registry(body: &str) -> anyhow::Result<ScriptedRegistry> {
    let body = body.to_owned();
    ScriptedRegistry::start(move |request| {
        if request.method == "HEAD" {
            response("404 Not Found", &[], "")
        } else {
            response(
                "500 Internal Server Error",
                &[("content-type", "text/plain")],
                &body,
            )
        }
    })
    .await
}

#[tokio::test]
async fn error_status_names_the_url_status_and_body() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let image = build_image(&ImageSpec::new(&fake_elf(dir.path(), b"x")?, "probe"))?;
    let http = http_client()?;

    let server = failing_registry("storage driver: disk full").await?;
    let addr = server.addr;
    let repo = repo_from_ko_docker_repo(&addr.to_string(), "ate-probe")?;
    let err = push(&http, &repo, "t", &image)
        .await
        .err()
        .ok_or_else(|| anyhow!("push to a registry answering 500 succeeded"))?;
    assert_eq!(
        err.to_string(),
        format!(
            "POST http://{addr}/v2/ate-probe/blobs/uploads/ answered 500 Internal Server Error \
             (expected 202 Accepted): storage driver: disk full"
        )
    );

    // Only the first 512 bytes of a long body.
    let long = format!("{}{}", "a".repeat(512), "b".repeat(2000));
    let server = failing_registry(&long).await?;
    let repo = repo_from_ko_docker_repo(&server.addr.to_string(), "ate-probe")?;
    let err = push(&http, &repo, "t", &image)
        .await
        .err()
        .ok_or_else(|| anyhow!("push to a registry answering 500 succeeded"))?;
    let message = err.to_string();
    assert!(
        message.ends_with(&format!(": {} ...", "a".repeat(512))),
        "{message}"
    );
    assert!(!message.contains("bb"), "{message}");
    Ok(())
}

#[tokio::test]
async fn upload_follows_the_location_and_checks_the_digest() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let image = build_image(&ImageSpec::new(&fake_elf(dir.path(), b"x")?, "probe"))?;
    let http = http_client()?;
    let wrong = format!("sha256:{}", "0".repeat(64));

    // A relative Location that already has a query; a wrong digest back.
    let server = ScriptedRegistry::start({
        let wrong = wrong.clone();
        move |request| match request.method.as_str() {
            "HEAD" => response("404 Not Found", &[], ""),
            "POST" => response(
                "202 Accepted",
                &[("location", "/v2/ate-probe/blobs/uploads/u1?_state=abc")],
                "",
            ),
            _ if request.target.contains("/manifests/") => {
                response("201 Created", &[("docker-content-digest", &wrong)], "")
            }
            _ => response("201 Created", &[], ""),
        }
    })
    .await?;
    let addr = server.addr;
    let repo = repo_from_ko_docker_repo(&addr.to_string(), "ate-probe")?;
    let err = push(&http, &repo, "t", &image)
        .await
        .err()
        .ok_or_else(|| anyhow!("a manifest digest mismatch went unnoticed"))?;
    assert_eq!(
        err.to_string(),
        format!(
            "PUT http://{addr}/v2/ate-probe/manifests/t: the registry reports digest {wrong}, \
             but {} was sent",
            image.manifest().digest()
        )
    );
    let seen = server.seen();
    let lines: Vec<String> = seen
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    let upload = |digest: &str| {
        format!(
            "PUT /v2/ate-probe/blobs/uploads/u1?_state=abc&digest={}",
            digest.replace(':', "%3A")
        )
    };
    assert_eq!(
        lines,
        [
            format!("HEAD /v2/ate-probe/blobs/{}", image.layer().digest()),
            "POST /v2/ate-probe/blobs/uploads/".to_owned(),
            upload(image.layer().digest()),
            format!("HEAD /v2/ate-probe/blobs/{}", image.config().digest()),
            "POST /v2/ate-probe/blobs/uploads/".to_owned(),
            upload(image.config().digest()),
            "PUT /v2/ate-probe/manifests/t".to_owned(),
        ]
    );
    let layer_put = &seen[2];
    assert_eq!(
        layer_put.header("content-type"),
        Some("application/octet-stream")
    );
    let layer_len = image.layer().size().to_string();
    assert_eq!(layer_put.header("content-length"), Some(layer_len.as_str()));
    assert_eq!(layer_put.body_len as u64, image.layer().size());
    assert_eq!(seen[6].header("content-type"), Some(MANIFEST_MEDIA_TYPE));
    assert_eq!(seen[6].body_len as u64, image.manifest().size());

    // An absolute Location on another host is not followed.
    let server = ScriptedRegistry::start(|request| match request.method.as_str() {
        "HEAD" => response("404 Not Found", &[], ""),
        _ => response(
            "202 Accepted",
            &[("location", "http://192.0.2.1/v2/ate-probe/blobs/uploads/u1")],
            "",
        ),
    })
    .await?;
    let repo = repo_from_ko_docker_repo(&server.addr.to_string(), "ate-probe")?;
    let err = push(&http, &repo, "t", &image)
        .await
        .err()
        .ok_or_else(|| anyhow!("an off-registry upload location was followed"))?;
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "POST http://{}/v2/ate-probe/blobs/uploads/ answered an unusable upload location",
            server.addr
        )),
        "{message}"
    );
    assert!(message.contains("not on the registry"), "{message}");
    assert_eq!(server.seen().len(), 2);
    Ok(())
}

#[tokio::test]
async fn real_registry_rejection_names_the_url_status_and_body() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let image = build_image(&ImageSpec::new(&fake_elf(dir.path(), b"x")?, "probe"))?;
    let registry = TestRegistry::start().await?;
    let outcome = async {
        let http = http_client()?;
        let repo = registry.repo("ate-probe")?;
        push(&http, &repo, "ok", &image).await?;

        // A manifest whose config blob the registry has never seen.
        let other = build_image(&ImageSpec::new(&fake_elf(dir.path(), b"y")?, "probe"))?;
        let url = repo.manifest_url("dangling");
        let response = http
            .put(&url)
            .header(CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
            .body(other.manifest().bytes().to_vec())
            .send()
            .await?;
        ensure!(
            response.status() == StatusCode::BAD_REQUEST,
            "the registry took a manifest with unknown blobs: {}",
            response.status()
        );

        // A repository name outside the spec, sent as is (not through
        // `repo_from_ko_docker_repo`, which refuses it).
        let bad = Repo {
            registry: registry.addr.to_string(),
            repository: "Upper/Case".into(),
        };
        let err = push(&http, &bad, "t", &image)
            .await
            .err()
            .ok_or_else(|| anyhow!("the registry took the repository `Upper/Case`"))?;
        let message = err.to_string();
        eprintln!("{message}");
        assert!(matches!(err, OciError::Status { .. }), "{err:?}");
        assert!(
            message.contains(&format!("http://{}/v2/Upper/Case/", registry.addr)),
            "{message}"
        );
        assert!(message.contains("answered 4"), "{message}");
        assert!(!message.ends_with("(empty body)"), "{message}");
        anyhow::Ok(())
    }
    .await;
    registry.stop().await?;
    outcome
}

// ---------------------------------------------------------------------------
// 6. KO_DOCKER_REPO

#[test]
fn ko_docker_repo_accepts_and_rejects() {
    let ok = |ko: &str, name: &str| {
        repo_from_ko_docker_repo(ko, name).unwrap_or_else(|err| panic!("{ko} {name}: {err}"))
    };
    let repo = ok("localhost:5001", "ate-probe");
    assert_eq!(
        (repo.registry.as_str(), repo.repository.as_str()),
        ("localhost:5001", "ate-probe")
    );
    let repo = ok("localhost:5001/team/x", "ate-probe");
    assert_eq!(
        (repo.registry.as_str(), repo.repository.as_str()),
        ("localhost:5001", "team/x/ate-probe")
    );
    assert_eq!(repo.to_string(), "localhost:5001/team/x/ate-probe");
    assert_eq!(
        repo.manifest_url("t"),
        "http://localhost:5001/v2/team/x/ate-probe/manifests/t"
    );
    assert_eq!(ok("kind-registry:5000", "p").registry, "kind-registry:5000");
    assert_eq!(
        ok("127.0.0.1:5001/a.b/c__d/e--f", "p").repository,
        "a.b/c__d/e--f/p"
    );

    let rule = "[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*";
    for (ko, name, starts, contains) in [
        (
            "",
            "ate-probe",
            "KO_DOCKER_REPO `` is empty",
            "localhost:5001",
        ),
        (
            "https://localhost:5001",
            "ate-probe",
            "KO_DOCKER_REPO `https://localhost:5001` has a scheme",
            "host[:port]",
        ),
        (
            "http://localhost:5001/team",
            "ate-probe",
            "KO_DOCKER_REPO `http://localhost:5001/team` has a scheme",
            "host[:port]",
        ),
        (
            "localhost:5001/Team/x",
            "ate-probe",
            "KO_DOCKER_REPO `localhost:5001/Team/x`",
            "`Team`",
        ),
        (
            "localhost:5001",
            "Ate-Probe",
            "image name `Ate-Probe`",
            rule,
        ),
        ("localhost:5001", "ate--", "image name `ate--`", rule),
        ("localhost:5001", "", "image name `` is empty", rule),
        (
            "localhost:port",
            "p",
            "KO_DOCKER_REPO `localhost:port`",
            "1 to 65535",
        ),
        (
            "kind.local",
            "p",
            "KO_DOCKER_REPO `kind.local`",
            "pseudo-registry",
        ),
    ] {
        let err = match repo_from_ko_docker_repo(ko, name) {
            Ok(repo) => panic!("{ko:?} + {name:?} was accepted as {repo:?}"),
            Err(err) => err.to_string(),
        };
        assert!(err.starts_with(starts), "{ko:?} + {name:?}: {err}");
        assert!(err.contains(contains), "{ko:?} + {name:?}: {err}");
    }
    // The manifest URL is the one push uses.
    assert_eq!(
        ok("localhost:5001", "ate-probe").manifest_url("t"),
        "http://localhost:5001/v2/ate-probe/manifests/t"
    );
}
