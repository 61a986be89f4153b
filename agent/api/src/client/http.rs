//! Typed async calls to the control API.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{
    ActorList, ActorView, AtespaceList, CheckRequest, Detached, ErrorBody, ErrorKind,
    IdentityRewrite, Info, NewActor, NewAtespace, Rewritten, Sandboxes, TemplateList, TemplateSpec,
    TemplateView,
};

/// Time between two polls of a wait.
const POLL: Duration = Duration::from_millis(50);
/// Per-request limit (a resume restores a sandbox: seconds, not minutes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// An error of a control API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request got no answer (connection refused, reset, timed out).
    #[error("agent API `{method} {path}`: no answer from the agent")]
    Transport {
        /// Method.
        method: Method,
        /// Path.
        path: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The agent answered with its error body: match on `kind`.
    #[error("agent API `{method} {path}` answered {status} ({kind}): {message}")]
    Api {
        /// Method.
        method: Method,
        /// Path.
        path: String,
        /// HTTP status.
        status: u16,
        /// Which kind of error.
        kind: ErrorKind,
        /// The agent's message with its causes.
        message: String,
    },
    /// An error status without the agent's error body.
    #[error("agent API `{method} {path}` answered {status} without an error body: {body}")]
    NotAnErrorBody {
        /// Method.
        method: Method,
        /// Path.
        path: String,
        /// HTTP status.
        status: u16,
        /// The body as it came.
        body: String,
    },
    /// A success whose body is not the expected type.
    #[error("agent API `{method} {path}`: the answer is not the expected JSON: {body}")]
    Decode {
        /// Method.
        method: Method,
        /// Path.
        path: String,
        /// The body as it came.
        body: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A wait ran out of its caller's deadline.
    #[error("gave up after {waited:?} waiting for {what}; last seen: {last}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
        /// The last status seen.
        last: String,
    },
}

impl ApiError {
    /// The agent's error kind, when the agent answered with one.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ApiError::Api { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// A result of a control API call.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// An answer taken as it came, for tests of bad input.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl RawAnswer {
    /// The body as the agent's error body, if it is one.
    pub fn error_body(&self) -> Option<ErrorBody> {
        serde_json::from_str(&self.body).ok()
    }
}

/// A client of one agent's control API.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    addr: SocketAddr,
}

impl AgentClient {
    /// A client of the control API at `addr` (no proxy; keeps up to 64 idle
    /// connections, for fan-outs).
    pub fn new(addr: SocketAddr) -> AgentClient {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(64)
            .build()
            .expect("a reqwest client without TLS builds");
        AgentClient { http, addr }
    }

    /// The control API address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<()> {
        self.call_empty(Method::GET, "/healthz", None::<&()>).await
    }

    /// `GET /info`.
    pub async fn info(&self) -> Result<Info> {
        self.call(Method::GET, "/info", None::<&()>).await
    }

    /// `POST /templates`: accepted; the golden actor boots in the
    /// background (see [`wait_template`](Self::wait_template)).
    pub async fn create_template(&self, spec: &TemplateSpec) -> Result<TemplateView> {
        self.call(Method::POST, "/templates", Some(spec)).await
    }

    /// `GET /templates/{name}`.
    pub async fn template(&self, name: &str) -> Result<TemplateView> {
        self.call(Method::GET, &format!("/templates/{name}"), None::<&()>)
            .await
    }

    /// `GET /templates`.
    pub async fn templates(&self) -> Result<Vec<TemplateView>> {
        let l: TemplateList = self.call(Method::GET, "/templates", None::<&()>).await?;
        Ok(l.templates)
    }

    /// `DELETE /templates/{name}`.
    pub async fn delete_template(&self, name: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &format!("/templates/{name}"), None::<&()>)
            .await
    }

    /// Polls template `name` until it is Ready or Failed (both are
    /// returned: the caller judges the phase), or `deadline` has passed
    /// ([`ApiError::Timeout`] with the last status seen).
    pub async fn wait_template(&self, name: &str, deadline: Duration) -> Result<TemplateView> {
        let start = Instant::now();
        loop {
            let v = self.template(name).await?;
            if v.status.phase.is_settled() {
                return Ok(v);
            }
            if start.elapsed() >= deadline {
                return Err(ApiError::Timeout {
                    what: format!("template {name} to be Ready or Failed"),
                    waited: start.elapsed(),
                    last: serde_json::to_string(&v.status).unwrap_or_default(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`create_template`](Self::create_template), then
    /// [`wait_template`](Self::wait_template) within `deadline`.
    pub async fn deploy_template(
        &self,
        spec: &TemplateSpec,
        deadline: Duration,
    ) -> Result<TemplateView> {
        let start = Instant::now();
        self.create_template(spec).await?;
        self.wait_template(&spec.name, deadline.saturating_sub(start.elapsed()))
            .await
    }

    /// `POST /atespaces`.
    pub async fn create_atespace(&self, name: &str) -> Result<()> {
        let _: NewAtespace = self
            .call(
                Method::POST,
                "/atespaces",
                Some(&NewAtespace { name: name.into() }),
            )
            .await?;
        Ok(())
    }

    /// `GET /atespaces`.
    pub async fn atespaces(&self) -> Result<Vec<String>> {
        let l: AtespaceList = self.call(Method::GET, "/atespaces", None::<&()>).await?;
        Ok(l.atespaces)
    }

    /// `DELETE /atespaces/{a}` (only when empty).
    pub async fn delete_atespace(&self, atespace: &str) -> Result<()> {
        self.call_empty(
            Method::DELETE,
            &format!("/atespaces/{atespace}"),
            None::<&()>,
        )
        .await
    }

    /// `POST /atespaces/{a}/actors`: a SUSPENDED actor.
    pub async fn create_actor(
        &self,
        atespace: &str,
        id: &str,
        template: &str,
    ) -> Result<ActorView> {
        let body = NewActor {
            id: id.into(),
            template: template.into(),
        };
        self.call(
            Method::POST,
            &format!("/atespaces/{atespace}/actors"),
            Some(&body),
        )
        .await
    }

    /// `GET /atespaces/{a}/actors/{id}`.
    pub async fn actor(&self, atespace: &str, id: &str) -> Result<ActorView> {
        self.call(Method::GET, &actor_path(atespace, id), None::<&()>)
            .await
    }

    /// `GET /atespaces/{a}/actors`.
    pub async fn actors(&self, atespace: &str) -> Result<Vec<ActorView>> {
        let l: ActorList = self
            .call(
                Method::GET,
                &format!("/atespaces/{atespace}/actors"),
                None::<&()>,
            )
            .await?;
        Ok(l.actors)
    }

    /// `POST .../resume`: the actor's view once it runs.
    pub async fn resume(&self, atespace: &str, id: &str) -> Result<ActorView> {
        let path = format!("{}/resume", actor_path(atespace, id));
        self.call(Method::POST, &path, None::<&()>).await
    }

    /// `POST .../suspend`: the actor's view once it is checkpointed.
    pub async fn suspend(&self, atespace: &str, id: &str) -> Result<ActorView> {
        let path = format!("{}/suspend", actor_path(atespace, id));
        self.call(Method::POST, &path, None::<&()>).await
    }

    /// `DELETE /atespaces/{a}/actors/{id}` (only when SUSPENDED).
    pub async fn delete_actor(&self, atespace: &str, id: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &actor_path(atespace, id), None::<&()>)
            .await
    }

    /// `POST .../check`: runs the harness's checker in a running actor's
    /// sandbox and parses what it printed as `T` (one of `ate_checker`'s
    /// types, the one `cmd` prints).
    pub async fn check<T: DeserializeOwned>(
        &self,
        atespace: &str,
        id: &str,
        cmd: &ate_checker::Command,
    ) -> Result<T> {
        let path = format!("{}/check", actor_path(atespace, id));
        self.call(Method::POST, &path, Some(&CheckRequest::new(cmd)))
            .await
    }

    /// `POST .../identity/rewrite` (conformance hook, ID-9).
    pub async fn rewrite_identity(
        &self,
        atespace: &str,
        id: &str,
        rewrite: &IdentityRewrite,
    ) -> Result<Rewritten> {
        let path = format!("{}/identity/rewrite", actor_path(atespace, id));
        self.call(Method::POST, &path, Some(rewrite)).await
    }

    /// `GET /sandboxes`: container IDs the agent started and has not
    /// removed.
    pub async fn sandboxes(&self) -> Result<Vec<String>> {
        let s: Sandboxes = self.call(Method::GET, "/sandboxes", None::<&()>).await?;
        Ok(s.sandboxes)
    }

    /// Polls until the agent lists none of `cids` (deletions of
    /// checkpointed containers run in the background), or `deadline`.
    pub async fn wait_sandboxes_gone(&self, cids: &[String], deadline: Duration) -> Result<()> {
        self.wait_sandboxes(|c| cids.iter().any(|x| x == c), deadline)
            .await
    }

    /// Polls until the agent lists no sandbox at all, or `deadline`.
    pub async fn wait_no_sandboxes(&self, deadline: Duration) -> Result<()> {
        self.wait_sandboxes(|_| true, deadline).await
    }

    async fn wait_sandboxes(
        &self,
        counts: impl Fn(&str) -> bool,
        deadline: Duration,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            let listed = self.sandboxes().await?;
            if !listed.iter().any(|c| counts(c)) {
                return Ok(());
            }
            if start.elapsed() >= deadline {
                return Err(ApiError::Timeout {
                    what: "the agent to list no such sandbox".into(),
                    waited: start.elapsed(),
                    last: format!("{listed:?}"),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `POST /detach`: the agent exits leaving every sandbox running and
    /// recorded. Prefer [`Agent::detach`](super::Agent::detach), which also
    /// waits for the process.
    pub async fn detach(&self) -> Result<Detached> {
        self.call(Method::POST, "/detach", None::<&()>).await
    }

    /// Any request, the answer taken as it came: for tests of what the API
    /// does with bad input. `body` is sent as it is, with
    /// `content-type: application/json` when given.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<RawAnswer> {
        let mut req = self.http.request(method.clone(), self.url(path));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let transport = |source| ApiError::Transport {
            method: method.clone(),
            path: path.into(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(transport)?;
        Ok(RawAnswer { status, body })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A call whose 2xx answer is `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let text = self.call_text(method.clone(), path, body).await?;
        serde_json::from_str(&text).map_err(|source| ApiError::Decode {
            method,
            path: path.into(),
            body: text,
            source,
        })
    }

    /// A call whose 2xx answer has no body of interest.
    async fn call_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<()> {
        self.call_text(method, path, body).await.map(drop)
    }

    async fn call_text(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<String> {
        let mut req = self.http.request(method.clone(), self.url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let transport = |source| ApiError::Transport {
            method: method.clone(),
            path: path.into(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let text = resp.text().await.map_err(transport)?;
        if status.is_success() {
            return Ok(text);
        }
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => ApiError::Api {
                method,
                path: path.into(),
                status: status.as_u16(),
                kind: e.kind,
                message: e.error,
            },
            Err(_) => ApiError::NotAnErrorBody {
                method,
                path: path.into(),
                status: status.as_u16(),
                body: text,
            },
        })
    }
}

fn actor_path(atespace: &str, id: &str) -> String {
    format!("/atespaces/{atespace}/actors/{id}")
}
