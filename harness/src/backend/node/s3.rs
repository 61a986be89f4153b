//! The node's S3 endpoint, where atelet keeps EXTERNAL snapshots (the
//! golden fan-out needs them: LOCAL ones are stored per actor ID;
//! CONTRACT.md V). A real S3 server, not a mock: s3s (the S3 protocol layer
//! RustFS is built on; upstream's kind install runs RustFS,
//! `manifests/ate-install/kind/atelet/kustomization.yaml:39-51` at
//! 86e138f6) over s3s-fs (a bucket is a directory, an object a file), with
//! SigV4 authentication, served in this process on a listener the caller
//! made (on the node's loopback: [`super::ns::Node::listen`]).
//!
//! atelet reads only the standard AWS variables plus two of its own
//! (`cmd/atelet/main.go:125-139`): [`S3Endpoint::atelet_env`] gives them.
//! It calls only GetObject and PutObject
//! (`cmd/atelet/internal/ategcs/s3.go:33-45`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::debug;

/// The region atelet is told (any name works with a single endpoint).
pub const REGION: &str = "us-east-1";

/// A running S3 endpoint.
pub struct S3Endpoint {
    addr: SocketAddr,
    root: PathBuf,
    bucket: String,
    access_key: String,
    secret_key: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl S3Endpoint {
    /// Serves S3 on `listener`, objects under `root` (created if missing),
    /// with one bucket `bucket` and one key pair `access_key`/`secret_key`.
    pub async fn start(
        listener: TcpListener,
        root: &Path,
        bucket: &str,
        access_key: &str,
        secret_key: &str,
    ) -> Result<S3Endpoint> {
        let addr = listener.local_addr()?;
        std::fs::create_dir_all(root.join(bucket)).with_context(|| {
            format!(
                "cannot create the bucket directory {}",
                root.join(bucket).display()
            )
        })?;
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| anyhow::anyhow!("cannot open {} as an S3 store: {e:?}", root.display()))?;
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(access_key, secret_key));
            b.build()
        };
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            let graceful = hyper_util::server::graceful::GracefulShutdown::new();
            loop {
                let socket = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(e) => {
                            debug!(error = %e, "S3 endpoint: accept failed");
                            continue;
                        }
                    },
                    _ = &mut stopped => break,
                };
                let conn = http.serve_connection(TokioIo::new(socket), service.clone());
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
        });
        debug!(%addr, root = %root.display(), bucket, "S3 endpoint up");
        Ok(S3Endpoint {
            addr,
            root: root.to_owned(),
            bucket: bucket.to_owned(),
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory objects are kept in (`<root>/<bucket>/<key>`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The snapshot URI prefix for a template's golden:
    /// `s3://<bucket>/<namespace>/<template>/`.
    pub fn uri_prefix(&self, namespace: &str, template: &str) -> String {
        format!("s3://{}/{namespace}/{template}/", self.bucket)
    }

    /// The environment atelet needs to use this endpoint
    /// (`cmd/atelet/main.go:125-139`; the values upstream's kind overlay
    /// sets, `manifests/ate-install/kind/atelet/kustomization.yaml:39-51`).
    pub fn atelet_env(&self) -> Vec<(String, String)> {
        [
            ("ATE_STORAGE_BACKEND", "s3".to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ENDPOINT_URL", self.url()),
            ("AWS_S3_USE_PATH_STYLE", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Stops serving (open connections get 2 s to finish).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for S3Endpoint {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
