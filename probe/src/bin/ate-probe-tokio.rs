//! `ate-probe-tokio`: the probe's endpoints (`ate_probe::routes`) behind a
//! tokio + hyper server, an epoll-based event loop like real actors (Go's
//! net/http, Node, asyncio, tokio). gVisor 20240729 and newer checkpoint
//! and restore it; the 2022-12 build could not ("endpoint still has
//! waiters upon save"). Listens on port 80 (or `ATE_PROBE_PORT`).
//!
//! Handlers run on the blocking pool (`/identity-watch` reads for up to
//! 10 s); every response carries Content-Length. SIGTERM/SIGINT exit 0.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ate_probe::http::Request;
use ate_probe::routes::{self, State};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

async fn answer(
    state: Arc<State>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    // Bodies are read and dropped, as the blocking server does.
    let _ = req.into_body().collect().await;
    let head = method == "HEAD";
    let resp = tokio::task::spawn_blocking(move || {
        routes::handle(
            &state,
            &Request {
                method,
                path,
                query,
            },
        )
    })
    .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => ate_probe::http::Response::error(500, format!("handler failed: {e}")),
    };
    let mut b = hyper::Response::builder()
        .status(resp.status)
        .header("content-type", resp.content_type)
        .header("content-length", resp.body.len());
    for (k, v) in &resp.headers {
        b = b.header(*k, v.as_str());
    }
    let body = if head {
        Bytes::new()
    } else {
        Bytes::from(resp.body)
    };
    Ok(b.body(Full::new(body)).expect("valid response parts"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let port = match std::env::var("ATE_PROBE_PORT") {
        Ok(v) => {
            match v.parse::<u16>() {
                Ok(p) => p,
                Err(_) => {
                    eprintln!("ate-probe-tokio: ATE_PROBE_PORT: bad value {v:?}: want a port in 0..=65535");
                    return std::process::ExitCode::from(2);
                }
            }
        }
        Err(_) => 80,
    };
    let state = match State::capture("/run/ate".into()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("ate-probe-tokio: getrandom for the start nonce: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ate-probe-tokio: bind {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Ok(a) = listener.local_addr() {
        println!("{{\"listening\":\"{a}\"}}");
    }
    let (Ok(mut term), Ok(mut int)) = (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
    ) else {
        eprintln!("ate-probe-tokio: cannot install signal handlers");
        return std::process::ExitCode::FAILURE;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return std::process::ExitCode::SUCCESS,
            _ = int.recv() => return std::process::ExitCode::SUCCESS,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}
