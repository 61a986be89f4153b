//! The path into an actor's own network stack.
//!
//! Actors run with `--network=none`, so nothing on the host can connect to
//! them. The agent instead runs itself inside the sandbox (`runsc exec ...
//! /.ate/ate-refagent relay --port 80`): the relay connects to
//! `127.0.0.1:<port>` there and pipes bytes between that socket and its
//! stdin/stdout, which are pipes the agent owns. The agent speaks HTTP/1.1
//! over those pipes with hyper, keeps the connection open, and reuses it for
//! the next request, so only the first request to an actor pays for the
//! `runsc exec`. The helper is mounted read-only from the agent's state dir:
//! the probe image contains nothing but its own binary.
//!
//! **Invariant:** before an actor is checkpointed every relay into it is
//! closed ([`RelayPool::close`]), so no relay process is ever part of a
//! snapshot.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ate_cmd::{CmdError, Spawned, Stdio};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tracing::{debug, warn};

use crate::runtime::Runtime;

/// The relay's side, inside the sandbox: blocking std I/O only (a tokio
/// client inside gVisor can miss the peer's close; DESIGN.md). Never
/// returns.
pub fn run_in_sandbox(port: u16) -> ! {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let sock = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ate-relay: cannot connect to {addr} inside the sandbox: {e}");
            std::process::exit(3);
        }
    };
    let _ = sock.set_nodelay(true);
    let mut to_app = match sock.try_clone() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ate-relay: cannot clone socket: {e}");
            std::process::exit(3);
        }
    };
    // stdin -> socket; the agent closing stdin ends the relay at once.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(n) => {
                    if to_app.write_all(&buf[..n]).is_err() {
                        std::process::exit(0);
                    }
                }
            }
        }
    });
    // socket -> stdout, flushed per read so responses are never held back.
    let mut from_app = sock;
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from_app.read(&mut buf) {
            Ok(0) | Err(_) => std::process::exit(0),
            Ok(n) => {
                if stdout
                    .write_all(&buf[..n])
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    std::process::exit(0);
                }
            }
        }
    }
}

/// Errors on the host side of a relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The `runsc exec` that starts the relay could not be spawned.
    #[error("cannot start a relay into container {cid}")]
    Spawn {
        /// Container ID.
        cid: String,
        /// Why.
        #[source]
        source: CmdError,
    },
    /// The HTTP exchange over the relay failed; `stderr` is what the relay
    /// (or `runsc exec`) printed, which usually says why.
    #[error("request through the relay into container {cid} failed{}", stderr_suffix(.stderr))]
    Http {
        /// Container ID.
        cid: String,
        /// The relay's stderr so far.
        stderr: String,
        /// The hyper error.
        #[source]
        source: hyper::Error,
    },
    /// The relay pool was closed (the actor is being suspended or deleted).
    #[error("actor's container {cid} is shutting down")]
    Closed {
        /// Container ID.
        cid: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(" (relay said: {s})")
    }
}

/// A response read in full from the actor (bodies are small; reading them
/// whole gives the router Content-Length framing downstream).
pub type FullResponse = Response<Bytes>;

struct Conn {
    sender: SendRequest<Full<Bytes>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

/// The relays into one running container: idle keep-alive connections are
/// reused, new ones are started on demand.
pub struct RelayPool {
    runtime: Arc<dyn Runtime>,
    cid: String,
    helper_in_sandbox: String,
    port: u16,
    inner: Mutex<PoolInner>,
}

struct PoolInner {
    closed: bool,
    idle: Vec<Conn>,
    children: Vec<Spawned>,
}

impl RelayPool {
    /// A pool for container `cid` whose app listens on `port`.
    pub fn new(
        runtime: Arc<dyn Runtime>,
        cid: &str,
        helper_in_sandbox: &str,
        port: u16,
    ) -> Arc<Self> {
        Arc::new(RelayPool {
            runtime,
            cid: cid.to_owned(),
            helper_in_sandbox: helper_in_sandbox.to_owned(),
            port,
            inner: Mutex::new(PoolInner {
                closed: false,
                idle: Vec::new(),
                children: Vec::new(),
            }),
        })
    }

    /// Number of relay processes started so far and not yet closed.
    pub fn relays(&self) -> usize {
        self.inner.lock().unwrap().children.len()
    }

    fn take_idle(&self) -> Result<Option<Conn>, RelayError> {
        let mut inner = self.inner.lock().unwrap();
        if inner.closed {
            return Err(RelayError::Closed {
                cid: self.cid.clone(),
            });
        }
        while let Some(conn) = inner.idle.pop() {
            if !conn.sender.is_closed() {
                return Ok(Some(conn));
            }
        }
        Ok(None)
    }

    async fn connect(&self) -> Result<Conn, RelayError> {
        let spawn_err = |source| RelayError::Spawn {
            cid: self.cid.clone(),
            source,
        };
        let mut child = self
            .runtime
            .exec_relay(&self.cid, &self.helper_in_sandbox, self.port)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(collect_stderr(stderr_pipe, stderr.clone()));
        let refused = {
            let mut inner = self.inner.lock().unwrap();
            if inner.closed {
                Some(child)
            } else {
                inner.children.push(child);
                None
            }
        };
        if let Some(child) = refused {
            let _ = child.terminate(Duration::from_millis(100)).await;
            return Err(RelayError::Closed {
                cid: self.cid.clone(),
            });
        }
        let io = TokioIo::new(ChildIo { stdin, stdout });
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|source| RelayError::Http {
                cid: self.cid.clone(),
                stderr: String::new(),
                source,
            })?;
        let cid = self.cid.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%cid, error = %e, "relay connection ended");
            }
        });
        debug!(cid = %self.cid, "relay started");
        Ok(Conn { sender, stderr })
    }

    /// Sends one request into the container and reads the whole response.
    /// The caller bounds the time (`tokio::time::timeout`).
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<FullResponse, RelayError> {
        let mut conn = match self.take_idle()? {
            Some(c) => c,
            None => self.connect().await?,
        };
        let http_err = |conn: &Conn, source| RelayError::Http {
            cid: self.cid.clone(),
            stderr: String::from_utf8_lossy(&conn.stderr.lock().unwrap()).into_owned(),
            source,
        };
        if let Err(e) = conn.sender.ready().await {
            return Err(http_err(&conn, e));
        }
        let resp = match conn.sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return Err(http_err(&conn, e)),
        };
        let (parts, body) = resp.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Err(http_err(&conn, e)),
        };
        {
            let mut inner = self.inner.lock().unwrap();
            if !inner.closed && !conn.sender.is_closed() {
                inner.idle.push(conn);
            }
        }
        Ok(Response::from_parts(parts, body))
    }

    /// Closes every relay: idle connections are dropped (closing the relay's
    /// stdin, which ends it inside the sandbox) and every `runsc exec` is
    /// reaped; those still running after `grace` are stopped by force.
    pub async fn close(&self, grace: Duration) {
        let children = {
            let mut inner = self.inner.lock().unwrap();
            inner.closed = true;
            inner.idle.clear();
            std::mem::take(&mut inner.children)
        };
        // Dropping the connections closed each relay's stdin, which ends it:
        // give them `grace` to exit by themselves, then stop the rest.
        let deadline = tokio::time::Instant::now() + grace;
        for mut child in children {
            if tokio::time::timeout_at(deadline, child.wait())
                .await
                .is_ok()
            {
                continue;
            }
            match child.terminate(Duration::from_millis(500)).await {
                Ok(_) => {
                    warn!(cid = %self.cid, "relay did not exit on EOF within {grace:?}; stopped it")
                }
                Err(e) => warn!(cid = %self.cid, error = %e, "relay did not stop cleanly"),
            }
        }
    }
}

async fn collect_stderr(mut pipe: ChildStderr, into: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut v = into.lock().unwrap();
        if v.len() < 8192 {
            v.extend_from_slice(&buf[..n]);
        }
    }
}

/// The relay's stdout (read side) and stdin (write side) as one stream.
struct ChildIo {
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl AsyncRead for ChildIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChildIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}
