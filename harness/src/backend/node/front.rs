//! The routing front: what upstream's router (Envoy + atenet's ext_proc)
//! does for this node. A request's `Host` names the actor with the same
//! rules as the reference agent's router (`ate_agent_api::names`, ID-15):
//! a malformed name is 400 naming the rule, an unknown actor 404; a
//! suspended actor is resumed on demand ([`Control::route`], a `Restore`),
//! and the request goes to the actor's worker's pod address, port 80,
//! where ateom's DNAT hands it to the actor (upstream rewrites
//! `:authority` to `<worker pod IP>:80`; CONTRACT.md V).
//!
//! **Connections are closed by us, first, after each response.** runsc
//! 20240729 refuses to checkpoint a sandbox holding a connected TCP
//! endpoint; one the client closed first was gone within 0.6 s, one the
//! actor closed first lingered more than 1.5 s (measured,
//! `docs/upstream-node.md`). So each request gets its own connection,
//! made in the node's network namespace, sent without `Connection:
//! close`, and dropped by us once the whole response is read; no
//! connection is pooled or kept alive toward an actor.
//!
//! Errors of the front itself are JSON `{"error", "kind"}`, like the
//! agent's router, so [`is_front_error`] tells them from an actor's answer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ate_agent_api::names::{self, HOP_BY_HOP};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::debug;

use super::control::{Control, RouteError};
use super::ns::connect_in;

/// Largest request or response body the front carries.
pub const MAX_BODY: usize = 1 << 20;
/// Deadline of one request to an actor, after its resume.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// The front's own error body.
#[derive(Debug, Serialize, Deserialize)]
pub struct FrontError {
    /// What went wrong, naming the rule or the actor.
    pub error: String,
    /// `invalid`, `not-found`, `resume-failed`, `unreachable`.
    pub kind: String,
}

/// The message of a front error body, if `body` is one.
pub fn is_front_error(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<FrontError>(body)
        .ok()
        .map(|e| e.error)
}

/// The running front.
pub struct Front {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Front {
    /// Serves on the host's loopback (a port of its own) for `control`,
    /// reaching actors through the node's netns at `node_netns`.
    pub async fn start(control: Arc<Control>, node_netns: PathBuf) -> Result<Front> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot bind the routing front on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let control = control.clone();
                let netns = node_netns.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let control = control.clone();
                        let netns = netns.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(handle(&control, &netns, req).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Front { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, kind: &str, msg: String) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&FrontError {
        error: msg,
        kind: kind.to_owned(),
    })
    .expect("serialisable");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

async fn handle(
    control: &Control,
    netns: &std::path::Path,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let addr = match names::parse_actor_host(&host) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", e.explain()),
    };
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid",
                format!("request body: {e}"),
            )
        }
    };
    let guard = match control.route(&addr.atespace, &addr.actor).await {
        Ok(g) => g,
        Err(e @ RouteError::NotFound { .. }) => {
            return error(StatusCode::NOT_FOUND, "not-found", e.to_string())
        }
        Err(e) => return error(StatusCode::BAD_GATEWAY, "resume-failed", e.to_string()),
    };
    let target = guard.addr;
    let forwarded =
        tokio::time::timeout(FORWARD_TIMEOUT, forward(netns, target, &host, parts, body)).await;
    drop(guard);
    match forwarded {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => error(
            StatusCode::BAD_GATEWAY,
            "unreachable",
            format!("actor {}/{} at {target}: {e:#}", addr.atespace, addr.actor),
        ),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "unreachable",
            format!(
                "actor {}/{} at {target} did not answer within {FORWARD_TIMEOUT:?}",
                addr.atespace, addr.actor
            ),
        ),
    }
}

/// One request on a connection of its own, closed by us once the whole
/// response is read.
async fn forward(
    netns: &std::path::Path,
    target: SocketAddr,
    host: &str,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Result<Response<Full<Bytes>>> {
    let stream = connect_in(netns, target)
        .await
        .with_context(|| format!("cannot connect to {target} in the node"))?;
    stream.set_nodelay(true).ok();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    let conn = tokio::spawn(conn);
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let mut out = Request::builder().method(parts.method).uri(path);
    for (k, v) in &parts.headers {
        if !HOP_BY_HOP.contains(&k.as_str()) && k != hyper::header::HOST {
            out = out.header(k, v);
        }
    }
    // As upstream's router: the actor sees its worker's address.
    let out = out
        .header(hyper::header::HOST, target.to_string())
        .header("x-forwarded-host", host)
        .body(Full::new(body))
        .context("cannot build the forwarded request")?;
    let resp = sender
        .send_request(out)
        .await
        .context("sending the request")?;
    let (rparts, rbody) = resp.into_parts();
    let bytes = Limited::new(rbody, MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the response body: {e}"))?
        .to_bytes();
    // Our side closes first: drop the sender, let the connection end.
    drop(sender);
    match tokio::time::timeout(Duration::from_secs(2), conn).await {
        Ok(_) => {}
        Err(_) => debug!(%target, "the connection did not end within 2 s after the response"),
    }
    let mut resp = Response::builder().status(rparts.status);
    for (k, v) in &rparts.headers {
        if !HOP_BY_HOP.contains(&k.as_str()) && k != hyper::header::CONTENT_LENGTH {
            resp = resp.header(k, v);
        }
    }
    resp.body(Full::new(bytes))
        .context("cannot build the response")
}
