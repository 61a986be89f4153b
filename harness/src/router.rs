//! Sends HTTP to `(atespace, actor)` through the router, the way real
//! traffic arrives: to the router's address, with the actor's DNS name in
//! `Host` (ID-15).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;

/// The DNS suffix every actor name carries.
pub const ACTOR_DOMAIN: &str = "actors.resources.substrate.ate.dev";

/// `<actor>.<atespace>.actors.resources.substrate.ate.dev`.
pub fn actor_host(actor: &str, atespace: &str) -> String {
    format!("{actor}.{atespace}.{ACTOR_DOMAIN}")
}

/// A response from an actor, read whole.
#[derive(Debug, Clone)]
pub struct RoutedResponse {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
    /// How long the round-trip took.
    pub elapsed: Duration,
    /// What was asked, for messages: `GET /whoami via Host ...`.
    pub what: String,
}

impl RoutedResponse {
    /// The body as JSON, or an error quoting status and body.
    pub fn json<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "{} answered {} with a body that is not the expected JSON: {}",
                self.what,
                self.status,
                self.body_text()
            )
        })
    }

    /// The body as (lossy) text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Fails unless the status is 2xx, quoting the body.
    pub fn ok(self) -> anyhow::Result<Self> {
        if !(200..300).contains(&self.status) {
            bail!(
                "{} answered {}: {}",
                self.what,
                self.status,
                self.body_text().trim()
            );
        }
        Ok(self)
    }
}

/// One request through the router and what came back, kept for a failed
/// trial's artifacts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exchange {
    /// Method and path.
    pub request: String,
    /// The Host sent.
    pub host: Option<String>,
    /// Status, or the transport error.
    pub status: Result<u16, String>,
    /// Milliseconds.
    pub ms: f64,
    /// Body as text (at most 16 KiB).
    pub body: String,
}

/// Where a client records its exchanges.
pub type Recorder = std::sync::Arc<std::sync::Mutex<Vec<Exchange>>>;

/// Client for the router.
#[derive(Clone, Debug)]
pub struct RouterClient {
    addr: SocketAddr,
    http: reqwest::Client,
    timeout: Duration,
    recorder: Option<Recorder>,
}

impl RouterClient {
    /// A client for the router listening on `addr` (loopback).
    pub fn new(addr: SocketAddr) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(16)
            .build()
            .expect("reqwest client builds without TLS");
        RouterClient {
            addr,
            http,
            timeout: Duration::from_secs(60),
            recorder: None,
        }
    }

    /// The same client, recording every exchange into `recorder`.
    pub fn with_recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// The router's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `method path` to the actor with an explicit `Host` (which may be
    /// anything, for tests of the router's own parsing).
    pub async fn send_with_host(
        &self,
        method: reqwest::Method,
        host: Option<&str>,
        path: &str,
    ) -> anyhow::Result<RoutedResponse> {
        let url = format!("http://{}{}", self.addr, path);
        let what = format!(
            "{method} {path} via router {} with Host {}",
            self.addr,
            host.unwrap_or("<none>")
        );
        let request = format!("{method} {path}");
        let mut req = self.http.request(method, &url).timeout(self.timeout);
        if let Some(h) = host {
            req = req.header(reqwest::header::HOST, h);
        }
        let start = Instant::now();
        let result = async {
            let resp = req
                .send()
                .await
                .with_context(|| format!("{what}: no response"))?;
            let status = resp.status().as_u16();
            let body = resp
                .bytes()
                .await
                .with_context(|| format!("{what}: cannot read the body"))?
                .to_vec();
            Ok::<_, anyhow::Error>((status, body))
        }
        .await;
        if let Some(rec) = &self.recorder {
            let (status, body) = match &result {
                Ok((st, b)) => (
                    Ok(*st),
                    String::from_utf8_lossy(&b[..b.len().min(16 << 10)]).into_owned(),
                ),
                Err(e) => (Err(format!("{e:#}")), String::new()),
            };
            rec.lock().unwrap().push(Exchange {
                request,
                host: host.map(String::from),
                status,
                ms: start.elapsed().as_secs_f64() * 1000.0,
                body,
            });
        }
        let (status, body) = result?;
        Ok(RoutedResponse {
            status,
            body,
            elapsed: start.elapsed(),
            what,
        })
    }

    /// `GET path` on `(atespace, actor)`.
    pub async fn get(
        &self,
        atespace: &str,
        actor: &str,
        path: &str,
    ) -> anyhow::Result<RoutedResponse> {
        self.send_with_host(
            reqwest::Method::GET,
            Some(&actor_host(actor, atespace)),
            path,
        )
        .await
    }

    /// `POST path` (empty body) on `(atespace, actor)`.
    pub async fn post(
        &self,
        atespace: &str,
        actor: &str,
        path: &str,
    ) -> anyhow::Result<RoutedResponse> {
        self.send_with_host(
            reqwest::Method::POST,
            Some(&actor_host(actor, atespace)),
            path,
        )
        .await
    }

    /// `GET path` on the actor, 2xx required, body parsed as JSON.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        atespace: &str,
        actor: &str,
        path: &str,
    ) -> anyhow::Result<T> {
        self.get(atespace, actor, path).await?.ok()?.json()
    }

    /// `POST path` on the actor, 2xx required, body parsed as JSON.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        atespace: &str,
        actor: &str,
        path: &str,
    ) -> anyhow::Result<T> {
        self.post(atespace, actor, path).await?.ok()?.json()
    }
}
