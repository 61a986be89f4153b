//! The probe's answers: through the router, or straight into a raw
//! sandbox through the relay.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ate_harness::cmd::{Cmd, Stdio};
use ate_harness::probe::{Snapshot, Whoami};
use ate_harness::router::RouterClient;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::run::ms;
use crate::{OP_TIMEOUT, RELAY_IN_SANDBOX};

/// The probe's answers that prove identity and provenance.
#[derive(Debug, Clone)]
pub(crate) struct Answers {
    pub(crate) whoami: String,
    pub(crate) nonce: String,
    pub(crate) identity_at_start: String,
}

/// `/whoami` and `/snapshot` of an actor through the router.
pub(crate) async fn routed_answers(
    router: &RouterClient,
    atespace: &str,
    id: &str,
) -> Result<Answers> {
    let w: Whoami = router.get_json(atespace, id, "/whoami").await?;
    let s: Snapshot = router.get_json(atespace, id, "/snapshot").await?;
    Ok(Answers {
        whoami: w.file,
        nonce: s.nonce,
        identity_at_start: s.identity_at_start,
    })
}

/// `/whoami` and `/snapshot` of a raw container over one `runsc exec CID
/// /.ate/ate-refagent relay --port 80` (stdin/stdout piped, keep-alive).
pub(crate) async fn relay_answers(runsc: &Path, cid: &str) -> Result<Answers> {
    let mut child = Cmd::new(runsc)
        .args([
            "--network=none",
            "exec",
            cid,
            RELAY_IN_SANDBOX,
            "relay",
            "--port",
            "80",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("relay stdin")?;
    let mut stdout = child.stdout.take().context("relay stdout")?;
    let mut get = async |path: &str| -> Result<Vec<u8>> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {cid}\r\n\r\n");
        stdin.write_all(req.as_bytes()).await?;
        stdin.flush().await?;
        let r = tokio::time::timeout(OP_TIMEOUT, read_response(&mut stdout, Instant::now()))
            .await
            .with_context(|| format!("raw container {cid}: no answer to GET {path}"))??;
        ensure!(
            r.status == 200,
            "raw container {cid}: GET {path} answered {}",
            r.status
        );
        Ok(r.body)
    };
    let answers = async {
        let w: Whoami = serde_json::from_slice(&get("/whoami").await?)?;
        let s: Snapshot = serde_json::from_slice(&get("/snapshot").await?)?;
        Ok::<_, anyhow::Error>(Answers {
            whoami: w.file,
            nonce: s.nonce,
            identity_at_start: s.identity_at_start,
        })
    }
    .await;
    // Closing stdin ends the relay.
    drop(stdin);
    let _ = child.terminate(Duration::from_secs(5)).await;
    answers
}

/// An HTTP/1.1 response with a Content-Length, read off a stream.
pub(crate) struct HttpResp {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    pub(crate) first_byte_ms: f64,
    pub(crate) complete_ms: f64,
}

/// Reads one response (headers, then Content-Length bytes); times are
/// measured from `t0`.
pub(crate) async fn read_response<R: AsyncRead + Unpin>(
    r: &mut R,
    t0: Instant,
) -> Result<HttpResp> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut first = None;
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let k = r.read(&mut chunk).await?;
        ensure!(
            k > 0,
            "connection closed before a complete header: {:?}",
            String::from_utf8_lossy(&buf)
        );
        first.get_or_insert_with(|| ms(t0.elapsed()));
        buf.extend_from_slice(&chunk[..k]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let len: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .with_context(|| format!("no Content-Length in {head:?}"))?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let k = r.read(&mut chunk).await?;
        ensure!(
            k > 0,
            "connection closed after {} of {len} body bytes",
            body.len()
        );
        body.extend_from_slice(&chunk[..k]);
    }
    body.truncate(len);
    Ok(HttpResp {
        status,
        body,
        first_byte_ms: first.unwrap_or(0.0),
        complete_ms: ms(t0.elapsed()),
    })
}
