//! The control API: HTTP + JSON on loopback.
//!
//! | method and path | does |
//! | --- | --- |
//! | `GET /healthz` | 200 when the agent serves |
//! | `GET /info` | agent instance, pid, runsc version, state dir, `fault` (name or null) |
//! | `POST /templates` `{name, binary, args?, env?, port?}` | 202; boots the golden actor in the background |
//! | `GET /templates`, `GET /templates/{name}` | phase, `golden_actor_id`, reason, `golden` paths, timings |
//! | `DELETE /templates/{name}` | when no actor uses it |
//! | `POST /atespaces` `{name}` | 201 |
//! | `GET /atespaces`, `DELETE /atespaces/{a}` | delete only when empty |
//! | `POST /atespaces/{a}/actors` `{id, template}` | 201, SUSPENDED |
//! | `GET /atespaces/{a}/actors`, `GET /atespaces/{a}/actors/{id}` | the actor view |
//! | `POST /atespaces/{a}/actors/{id}/resume` | restore; 409 when RUNNING |
//! | `POST /atespaces/{a}/actors/{id}/suspend` | checkpoint; 409 when SUSPENDED |
//! | `DELETE /atespaces/{a}/actors/{id}` | 409 unless SUSPENDED |
//! | `POST /atespaces/{a}/actors/{id}/check` `{args}` | runs the harness's checker (`ate-check ARGS`) in a RUNNING actor's sandbox; its JSON object (`check`) |
//! | `POST /atespaces/{a}/actors/{id}/identity/rewrite` `{values, for_ms, times?}` | conformance hook (ID-9): atomic rewrites for `for_ms` or `times` writes, whichever ends first, then the own ID again; `{"writes": n}` |
//! | `GET /sandboxes` | container IDs this agent has started and not removed |
//! | `POST /detach` | exit, leaving every sandbox running and recorded (for `--keep`) |
//!
//! Every error is `{"error": <message with its causes>, "kind": <kind>}`
//! with a status that says which kind: 400 invalid input, 404 unknown, 409
//! exists or wrong state, 500 runtime or host failure, 502 relay failure,
//! 503 while the agent shuts down.
//!
//! Every body in and out is a type of `ate-agent-api` (the one the client
//! parses), never an ad-hoc `json!`.

use std::sync::Arc;

use ate_agent_api::{
    ActorList, ActorView, AtespaceList, CheckRequest, Detached, ErrorBody, ErrorKind,
    IdentityRewrite, Info, NewActor, NewAtespace, Rewritten, Sandboxes, TemplateList, TemplateSpec,
    TemplateView,
};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::engine::{error_chain, Engine, EngineError};

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// `runsc --version`, read once at start.
    pub runsc_version: String,
    /// The agent's state dir.
    pub state_dir: std::path::PathBuf,
    /// Asks the server to exit leaving sandboxes in place (`POST /detach`);
    /// `None` where there is no server to stop (tests).
    pub detach: Option<tokio::sync::mpsc::Sender<()>>,
}

/// An API error response.
pub struct ApiError(ErrorKind, String);

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let kind = match &e {
            EngineError::InvalidName(_) | EngineError::InvalidField { .. } => ErrorKind::Invalid,
            EngineError::NotFound { .. } => ErrorKind::NotFound,
            EngineError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            EngineError::WrongState { .. } => ErrorKind::WrongState,
            EngineError::Runtime { .. } => ErrorKind::Runtime,
            EngineError::Host { .. } => ErrorKind::Host,
            EngineError::Relay(_) => ErrorKind::Relay,
            EngineError::ShuttingDown { .. } => ErrorKind::ShuttingDown,
        };
        ApiError(kind, error_chain(&e))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError(
            ErrorKind::Invalid,
            format!("invalid request body: {}", e.body_text()),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status()).expect("a kind's status is valid");
        let body = ErrorBody {
            error: self.1,
            kind: self.0,
        };
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The control API router.
pub fn app(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/info", get(info))
        .route("/templates", post(create_template).get(list_templates))
        .route(
            "/templates/{name}",
            get(get_template).delete(delete_template),
        )
        .route("/atespaces", post(create_atespace).get(list_atespaces))
        .route("/atespaces/{a}", axum::routing::delete(delete_atespace))
        .route("/atespaces/{a}/actors", post(create_actor).get(list_actors))
        .route(
            "/atespaces/{a}/actors/{id}",
            get(get_actor).delete(delete_actor),
        )
        .route("/atespaces/{a}/actors/{id}/resume", post(resume_actor))
        .route("/atespaces/{a}/actors/{id}/suspend", post(suspend_actor))
        .route("/atespaces/{a}/actors/{id}/check", post(check_actor))
        .route(
            "/atespaces/{a}/actors/{id}/identity/rewrite",
            post(rewrite_identity),
        )
        .route("/sandboxes", get(sandboxes))
        .route("/detach", post(detach))
        .with_state(state)
}

async fn info(State(s): State<ApiState>) -> Json<Info> {
    Json(Info {
        instance: s.engine.instance().to_owned(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        runsc_version: s.runsc_version.clone(),
        state_dir: s.state_dir.clone(),
        fault: s.engine.fault(),
    })
}

async fn create_template(
    State(s): State<ApiState>,
    body: Result<Json<TemplateSpec>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<TemplateView>)> {
    let Json(spec) = body?;
    let v = s.engine.create_template(spec)?;
    Ok((StatusCode::ACCEPTED, Json(v)))
}

async fn list_templates(State(s): State<ApiState>) -> Json<TemplateList> {
    Json(TemplateList {
        templates: s.engine.templates(),
    })
}

async fn get_template(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<TemplateView>> {
    Ok(Json(s.engine.template(&name)?))
}

async fn delete_template(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine.delete_template(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_atespace(
    State(s): State<ApiState>,
    body: Result<Json<NewAtespace>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<NewAtespace>)> {
    let Json(b) = body?;
    s.engine.create_atespace(&b.name)?;
    Ok((StatusCode::CREATED, Json(b)))
}

async fn list_atespaces(State(s): State<ApiState>) -> Json<AtespaceList> {
    Json(AtespaceList {
        atespaces: s.engine.atespaces(),
    })
}

async fn delete_atespace(
    State(s): State<ApiState>,
    Path(a): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine.delete_atespace(&a)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_actor(
    State(s): State<ApiState>,
    Path(a): Path<String>,
    body: Result<Json<NewActor>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ActorView>)> {
    let Json(b) = body?;
    let v = s.engine.create_actor(&a, &b.id, &b.template)?;
    Ok((StatusCode::CREATED, Json(v)))
}

async fn list_actors(
    State(s): State<ApiState>,
    Path(a): Path<String>,
) -> ApiResult<Json<ActorList>> {
    Ok(Json(ActorList {
        actors: s.engine.list_actors(&a)?,
    }))
}

async fn get_actor(
    State(s): State<ApiState>,
    Path((a, id)): Path<(String, String)>,
) -> ApiResult<Json<ActorView>> {
    Ok(Json(s.engine.get_actor(&a, &id)?))
}

async fn resume_actor(
    State(s): State<ApiState>,
    Path((a, id)): Path<(String, String)>,
) -> ApiResult<Json<ActorView>> {
    Ok(Json(s.engine.resume(&a, &id).await?))
}

async fn suspend_actor(
    State(s): State<ApiState>,
    Path((a, id)): Path<(String, String)>,
) -> ApiResult<Json<ActorView>> {
    Ok(Json(s.engine.suspend(&a, &id).await?))
}

async fn delete_actor(
    State(s): State<ApiState>,
    Path((a, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.engine.delete_actor(&a, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn sandboxes(State(s): State<ApiState>) -> Json<Sandboxes> {
    Json(Sandboxes {
        sandboxes: s.engine.recorded_sandboxes(),
    })
}

async fn detach(State(s): State<ApiState>) -> ApiResult<(StatusCode, Json<Detached>)> {
    let Some(tx) = s.detach else {
        return Err(ApiError(
            ErrorKind::WrongState,
            "this agent cannot detach".into(),
        ));
    };
    let sandboxes = s.engine.recorded_sandboxes();
    let _ = tx.try_send(());
    Ok((
        StatusCode::ACCEPTED,
        Json(Detached {
            detaching: true,
            sandboxes,
            state_dir: s.state_dir.clone(),
        }),
    ))
}

async fn check_actor(
    State(s): State<ApiState>,
    Path((a, id)): Path<(String, String)>,
    body: Result<Json<CheckRequest>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Json(b) = body?;
    Ok(Json(s.engine.check(&a, &id, b.args).await?))
}

async fn rewrite_identity(
    State(s): State<ApiState>,
    Path((a, id)): Path<(String, String)>,
    body: Result<Json<IdentityRewrite>, JsonRejection>,
) -> ApiResult<Json<Rewritten>> {
    let Json(b) = body?;
    let writes = s
        .engine
        .rewrite_identity(&a, &id, b.values, b.for_ms, b.times)
        .await?;
    Ok(Json(Rewritten { writes }))
}
