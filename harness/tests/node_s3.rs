//! The node's S3 endpoint for real, over HTTP on loopback: SigV4-signed
//! PutObject and GetObject (what atelet calls) round-trip a snapshot's
//! bytes into `<root>/<bucket>/<key>`; a wrong secret and an unsigned
//! request are refused; stop ends the listener.

use std::time::Duration;

use ate_harness::backend::node::s3::{S3Endpoint, REGION};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

#[tokio::test]
async fn signed_put_and_get_round_trip_and_bad_keys_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s3 = S3Endpoint::start(l, tmp.path(), "ate", "ate-key", "ate-secret-key")
        .await
        .unwrap();
    let env: std::collections::BTreeMap<_, _> = s3.atelet_env().into_iter().collect();
    assert_eq!(env["ATE_STORAGE_BACKEND"], "s3");
    assert_eq!(env["AWS_S3_USE_PATH_STYLE"], "true");
    assert_eq!(env["AWS_ENDPOINT_URL"], s3.url());
    assert_eq!(
        s3.uri_prefix("ate-conf-r1", "probe"),
        "s3://ate/ate-conf-r1/probe/"
    );

    let bucket = Bucket::new(s3.url().parse().unwrap(), UrlStyle::Path, "ate", REGION).unwrap();
    let good = Credentials::new("ate-key", "ate-secret-key");
    let key = "ate-conf-r1/probe/checkpoint.img.zstd";
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let http = reqwest::Client::new();
    let put = bucket
        .put_object(Some(&good), key)
        .sign(Duration::from_secs(60));
    let r = http.put(put).body(body.clone()).send().await.unwrap();
    assert!(
        r.status().is_success(),
        "PUT: {} {}",
        r.status(),
        r.text().await.unwrap_or_default()
    );
    assert_eq!(
        std::fs::read(tmp.path().join("ate").join(key)).unwrap(),
        body
    );

    let get = bucket
        .get_object(Some(&good), key)
        .sign(Duration::from_secs(60));
    let r = http.get(get).send().await.unwrap();
    assert!(r.status().is_success(), "GET: {}", r.status());
    assert_eq!(r.bytes().await.unwrap().to_vec(), body);

    let bad = Credentials::new("ate-key", "not-the-secret");
    let get = bucket
        .get_object(Some(&bad), key)
        .sign(Duration::from_secs(60));
    let r = http.get(get).send().await.unwrap();
    assert_eq!(r.status(), 403, "a wrong secret must be refused");
    let get = bucket.get_object(None, key).sign(Duration::from_secs(60));
    let r = http.get(get).send().await.unwrap();
    assert!(
        r.status().is_client_error(),
        "an unsigned GET must be refused, got {}",
        r.status()
    );

    let url = s3.url();
    s3.stop().await;
    let after = tokio::time::timeout(Duration::from_secs(2), http.get(&url).send()).await;
    assert!(
        !matches!(after, Ok(Ok(_))),
        "the endpoint still answers after stop"
    );
}
