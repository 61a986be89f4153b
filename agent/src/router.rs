//! The router: HTTP routed on `Host` (ID-15), the way real traffic arrives.
//!
//! `Host: <actor>.<atespace>.actors.resources.substrate.ate.dev[.][:port]`
//! selects the actor. A malformed name is 400 naming the rule, an unknown
//! actor or atespace 404, a suspended actor is resumed on demand, and the
//! request is then forwarded into the actor's own network stack through its
//! relay. Bodies are read whole (actors here answer small JSON), so every
//! response leaves with a Content-Length.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::json;
use tracing::info;

use crate::api::ApiError;
use crate::engine::Engine;
use crate::names::{self, ActorAddr, HOP_BY_HOP};

/// Largest request body the router forwards.
pub const MAX_BODY: usize = 1 << 20;
/// Deadline for one routed request, including an on-demand resume.
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(60);

/// The router's HTTP app.
pub fn app(engine: Arc<Engine>) -> Router {
    Router::new().fallback(route).with_state(engine)
}

fn error(status: StatusCode, kind: &str, msg: String) -> Response {
    (status, axum::Json(json!({ "error": msg, "kind": kind }))).into_response()
}

/// The Host a request names: the `Host` header, else the URI authority.
fn request_host(req: &Request) -> Option<String> {
    req.headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

async fn route(State(engine): State<Arc<Engine>>, req: Request) -> Response {
    let start = Instant::now();
    let Some(host) = request_host(&req) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid-host",
            format!(
                "missing Host header: address an actor as <actor>.<atespace>.{}",
                names::ACTOR_DOMAIN
            ),
        );
    };
    let addr: ActorAddr = match names::parse_actor_host(&host) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid-host", e.explain()),
    };
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    let resp = match tokio::time::timeout(ROUTE_TIMEOUT, forward(&engine, &addr, req)).await {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "actor {}/{} did not answer {method} {path} within {ROUTE_TIMEOUT:?}",
                addr.atespace, addr.actor
            ),
        ),
    };
    info!(
        %host, actor = %format!("{}/{}", addr.atespace, addr.actor), %method, %path,
        status = resp.status().as_u16(), ms = start.elapsed().as_millis() as u64, "routed"
    );
    resp
}

async fn forward(engine: &Engine, addr: &ActorAddr, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid",
                format!("cannot read the request body (limit {MAX_BODY} bytes): {e}"),
            )
        }
    };
    let mut out = hyper::Request::builder().method(parts.method).uri(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
    );
    for (k, v) in parts.headers.iter() {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            out = out.header(k, v);
        }
    }
    let out = match out.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("cannot forward the request: {e}"),
            )
        }
    };
    match engine.forward(&addr.atespace, &addr.actor, out).await {
        Ok(resp) => {
            let (mut parts, body): (_, Bytes) = resp.into_parts();
            for h in HOP_BY_HOP {
                parts.headers.remove(h);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("{}/{}", addr.atespace, addr.actor)) {
                parts
                    .headers
                    .insert(HeaderName::from_static("x-ate-actor"), v);
            }
            Response::from_parts(parts, Body::from(body))
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}
