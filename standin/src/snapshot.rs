//! Where snapshots go: the S3 client for EXTERNAL ones and the record that
//! travels with a snapshot.
//!
//! - S3 is chosen as atelet chooses it: `ATE_STORAGE_BACKEND=s3` and the
//!   standard AWS variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//!   `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), path-style URLs when
//!   `AWS_S3_USE_PATH_STYLE=true` (`cmd/atelet/main.go:123-139`). Only
//!   GetObject and PutObject are used (`cmd/atelet/internal/ategcs/s3.go:
//!   33-51`), SigV4-signed (presigned URLs, `rusty-s3`).
//! - A URI prefix `s3://bucket/path/` names bucket = host and key = path
//!   (`ategcs/objects.go:445-451`); objects are `<prefix>/<file>.zstd` per
//!   snapshot file and `<prefix>/manifest.json`, written last
//!   (`cmd/atelet/main.go:413-444`).
//! - **Deviation:** upstream stores each file in its own sparse-extent
//!   zstd framing (`ategcs/sparsezstd.go`: `ATESPRSE` magic, version, a
//!   zstd stream); no zstd is in this workspace's dependency tree, so the
//!   stand-in stores the file's raw bytes under the same object name. Only
//!   the stand-in reads them back.
//! - The record (`sandboxClass`, `assets{name: {url, sha256}}`,
//!   `snapshotFiles`) is upstream's JSON shape
//!   (`cmd/atelet/sandbox_assets.go:48-68`): per actor at
//!   `sandbox-assets.json`, per snapshot as `manifest.json`.

use std::collections::BTreeMap;
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

/// The manifest's object/file name (`cmd/atelet/sandbox_assets.go:42`).
pub const MANIFEST: &str = "manifest.json";

/// One signed request's lifetime and deadline.
const SIGN_FOR: Duration = Duration::from_secs(600);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// One content-addressed sandbox asset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AssetEntry {
    /// Where upstream would download it from.
    pub url: String,
    /// Its sha256, lowercase hex.
    pub sha256: String,
}

/// The sandbox an actor runs with and, in a manifest, its snapshot's files.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SandboxRecord {
    /// E.g. `gvisor`.
    #[serde(rename = "sandboxClass")]
    pub sandbox_class: String,
    /// Asset name (`runsc`) to file.
    pub assets: BTreeMap<String, AssetEntry>,
    /// The snapshot's files, relative names, sorted.
    #[serde(
        rename = "snapshotFiles",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub snapshot_files: Vec<String>,
}

/// An S3 call that failed, or a bad setting.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// A required variable is missing or malformed.
    #[error("S3 storage backend: {0}")]
    Config(String),
    /// A URI prefix that is not `s3://bucket/path`.
    #[error("invalid snapshot URI prefix {0:?}: want s3://<bucket>/<path>/")]
    Uri(String),
    /// The request failed or was refused.
    #[error("S3 {op} s3://{bucket}/{key}: {reason}")]
    Call {
        /// `GetObject` or `PutObject`.
        op: &'static str,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// Status and body, or the transport error.
        reason: String,
    },
}

/// atelet's S3 settings, from its environment.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `AWS_ENDPOINT_URL`.
    pub endpoint: url::Url,
    /// `AWS_REGION`.
    pub region: String,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_key: String,
    /// `AWS_S3_USE_PATH_STYLE=true`.
    pub path_style: bool,
}

impl S3Config {
    /// `None` unless `ATE_STORAGE_BACKEND=s3` (upstream's default is GCS,
    /// which the stand-in does not speak: EXTERNAL snapshots then fail).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<S3Config>, S3Error> {
        if get("ATE_STORAGE_BACKEND").as_deref() != Some("s3") {
            return Ok(None);
        }
        let need = |k: &str| {
            get(k)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| S3Error::Config(format!("{k} is not set")))
        };
        let endpoint = need("AWS_ENDPOINT_URL")?;
        let endpoint = endpoint
            .parse()
            .map_err(|e| S3Error::Config(format!("AWS_ENDPOINT_URL {endpoint:?}: {e}")))?;
        Ok(Some(S3Config {
            endpoint,
            region: need("AWS_REGION")?,
            access_key: need("AWS_ACCESS_KEY_ID")?,
            secret_key: need("AWS_SECRET_ACCESS_KEY")?,
            path_style: get("AWS_S3_USE_PATH_STYLE").as_deref() == Some("true"),
        }))
    }
}

/// Bucket and key prefix (no trailing `/`) of `s3://bucket/path/`.
pub fn parse_uri_prefix(uri: &str) -> Result<(String, String), S3Error> {
    let rest = uri
        .strip_prefix("s3://")
        .ok_or_else(|| S3Error::Uri(uri.to_owned()))?;
    let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(S3Error::Uri(uri.to_owned()));
    }
    Ok((bucket.to_owned(), path.trim_end_matches('/').to_owned()))
}

/// `<prefix>/<name>`, or `<name>` when the prefix is empty.
pub fn object_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// A SigV4 S3 client of GetObject and PutObject.
pub struct S3Client {
    cfg: S3Config,
    creds: Credentials,
    http: reqwest::Client,
}

impl S3Client {
    /// A client for `cfg`.
    pub fn new(cfg: S3Config) -> S3Client {
        let creds = Credentials::new(cfg.access_key.clone(), cfg.secret_key.clone());
        S3Client {
            cfg,
            creds,
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .no_proxy()
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    fn bucket(&self, op: &'static str, bucket: &str, key: &str) -> Result<Bucket, S3Error> {
        let style = if self.cfg.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        Bucket::new(
            self.cfg.endpoint.clone(),
            style,
            bucket.to_owned(),
            self.cfg.region.clone(),
        )
        .map_err(|e| S3Error::Call {
            op,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            reason: format!("bad bucket: {e}"),
        })
    }

    /// PutObject.
    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), S3Error> {
        let b = self.bucket("PutObject", bucket, key)?;
        let url = b.put_object(Some(&self.creds), key).sign(SIGN_FOR);
        let r = self.http.put(url).body(body).send().await;
        self.check("PutObject", bucket, key, r).await.map(drop)
    }

    /// GetObject.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, S3Error> {
        let b = self.bucket("GetObject", bucket, key)?;
        let url = b.get_object(Some(&self.creds), key).sign(SIGN_FOR);
        let r = self.http.get(url).send().await;
        self.check("GetObject", bucket, key, r).await
    }

    async fn check(
        &self,
        op: &'static str,
        bucket: &str,
        key: &str,
        r: reqwest::Result<reqwest::Response>,
    ) -> Result<Vec<u8>, S3Error> {
        let fail = |reason: String| S3Error::Call {
            op,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let resp = r.map_err(|e| fail(format!("{e}")))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| fail(format!("{e}")))?;
        if !status.is_success() {
            return Err(fail(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        Ok(body.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_prefixes_parse_as_upstream() {
        assert_eq!(
            parse_uri_prefix("s3://b/ns/t/").unwrap(),
            ("b".into(), "ns/t".into())
        );
        assert_eq!(parse_uri_prefix("s3://b").unwrap(), ("b".into(), "".into()));
        assert!(parse_uri_prefix("gs://b/x").is_err());
        assert_eq!(object_key("ns/t", MANIFEST), "ns/t/manifest.json");
    }

    #[test]
    fn the_record_is_upstreams_json() {
        let mut r = SandboxRecord {
            sandbox_class: "gvisor".into(),
            ..Default::default()
        };
        r.assets.insert(
            "runsc".into(),
            AssetEntry {
                url: "gs://x".into(),
                sha256: "ab".into(),
            },
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"sandboxClass":"gvisor","assets":{"runsc":{"url":"gs://x","sha256":"ab"}}}"#
        );
        r.snapshot_files = vec!["checkpoint.img".into()];
        assert!(serde_json::to_string(&r)
            .unwrap()
            .ends_with(r#""snapshotFiles":["checkpoint.img"]}"#));
    }

    #[test]
    fn s3_is_chosen_only_by_the_backend_variable() {
        let env = |k: &str| match k {
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9000".to_owned()),
            "AWS_REGION" => Some("us-east-1".to_owned()),
            "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("k".to_owned()),
            "AWS_S3_USE_PATH_STYLE" => Some("true".to_owned()),
            _ => None,
        };
        assert!(S3Config::from_env(env).unwrap().is_none());
        let with = |k: &str| {
            if k == "ATE_STORAGE_BACKEND" {
                Some("s3".to_owned())
            } else {
                env(k)
            }
        };
        let c = S3Config::from_env(with).unwrap().unwrap();
        assert!(c.path_style);
        let missing = |k: &str| if k == "AWS_REGION" { None } else { with(k) };
        assert!(S3Config::from_env(missing).is_err());
    }
}
