//! The control API: HTTP + JSON on loopback.
//!
//! | method and path | does |
//! | --- | --- |
//! | `GET /healthz` | 200 when the agent serves |
//! | `GET /info` | agent instance, pid, runsc version, state dir, `fault` (name or null) |
//! | `POST /templates` `{name, binary, args?, env?, port?}` | 202; boots the golden actor in the background |
//! | `GET /templates`, `GET /templates/{name}` | phase, `goldenActorID`, reason, timings |
//! | `DELETE /templates/{name}` | when no actor uses it |
//! | `POST /atespaces` `{name}` | 201 |
//! | `GET /atespaces`, `DELETE /atespaces/{a}` | delete only when empty |
//! | `POST /atespaces/{a}/actors` `{id, template}` | 201, SUSPENDED |
//! | `GET /atespaces/{a}/actors`, `GET /atespaces/{a}/actors/{id}` | the actor view |
//! | `POST /atespaces/{a}/actors/{id}/resume` | restore; 409 when RUNNING |
//! | `POST /atespaces/{a}/actors/{id}/suspend` | checkpoint; 409 when SUSPENDED |
//! | `DELETE /atespaces/{a}/actors/{id}` | 409 unless SUSPENDED |
//! | `POST /atespaces/{a}/actors/{id}/identity/rewrite` `{values, for_ms, times?}` | conformance hook (ID-9): atomic rewrites for `for_ms` or `times` writes, whichever ends first, then the own ID again; `{"writes": n}` |
//! | `GET /sandboxes` | container IDs this agent has started and not removed |
//! | `POST /detach` | exit, leaving every sandbox running and recorded (for `--keep`) |
//!
//! Every error is `{"error": <message with its causes>, "kind": <kind>}`
//! with a status that says which kind: 400 invalid input, 404 unknown, 409
//! exists or wrong state, 500 runtime or host failure, 502 relay failure,
//! 503 while the agent shuts down.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::engine::{error_chain, Engine, EngineError, TemplateSpec};

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
pub struct ApiError(StatusCode, &'static str, String);

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let (status, kind) = match &e {
            EngineError::InvalidName(_) | EngineError::InvalidField { .. } => {
                (StatusCode::BAD_REQUEST, "invalid")
            }
            EngineError::NotFound { .. } => (StatusCode::NOT_FOUND, "not-found"),
            EngineError::AlreadyExists { .. } => (StatusCode::CONFLICT, "already-exists"),
            EngineError::WrongState { .. } => (StatusCode::CONFLICT, "wrong-state"),
            EngineError::Runtime { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "runtime"),
            EngineError::Host { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "host"),
            EngineError::Relay(_) => (StatusCode::BAD_GATEWAY, "relay"),
            EngineError::ShuttingDown { .. } => (StatusCode::SERVICE_UNAVAILABLE, "shutting-down"),
        };
        ApiError(status, kind, error_chain(&e))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("invalid request body: {}", e.body_text()),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.2, "kind": self.1 }))).into_response()
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
        .route(
            "/atespaces/{a}/actors/{id}/identity/rewrite",
            post(rewrite_identity),
        )
        .route("/sandboxes", get(sandboxes))
        .route("/detach", post(detach))
        .with_state(state)
}

async fn info(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({
        "instance": s.engine.instance(),
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
        "runsc_version": s.runsc_version,
        "state_dir": s.state_dir,
        "fault": s.engine.fault(),
    }))
}

async fn create_template(
    State(s): State<ApiState>,
    body: Result<Json<TemplateSpec>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let Json(spec) = body?;
    let v = s.engine.create_template(spec)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::to_value(v).expect("view serialises")),
    ))
}

async fn list_templates(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({ "templates": s.engine.templates() }))
}

async fn get_template(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(
        serde_json::to_value(s.engine.template(&name)?).expect("view serialises"),
    ))
}

async fn delete_template(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine.delete_template(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct NewAtespace {
    name: String,
}

async fn create_atespace(
    State(s): State<ApiState>,
    body: Result<Json<NewAtespace>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let Json(b) = body?;
    s.engine.create_atespace(&b.name)?;
    Ok((StatusCode::CREATED, Json(json!({ "name": b.name }))))
}

async fn list_atespaces(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({ "atespaces": s.engine.atespaces() }))
}

async fn delete_atespace(
    State(s): State<ApiState>,
    Path(a): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine.delete_atespace(&a)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct NewActor {
    id: String,
    template: String,
}

async fn create_actor(
    State(s): State<ApiState>,
    Path(a): Path<String>,
    body: Result<Json<NewActor>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let Json(b) = body?;
    let v = s.engine.create_actor(&a, &b.id, &b.template)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(v).expect("view serialises")),
    ))
}

async fn list_actors(
    State(s): State<ApiState>,
    Path(a): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json!({ "actors": s.engine.list_actors(&a)? })))
}

async fn get_actor(
    State(s): State<ApiState>,
    Path((a, id)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(
        serde_json::to_value(s.engine.get_actor(&a, &id)?).expect("view serialises"),
    ))
}

async fn resume_actor(
    State(s): State<ApiState>,
    Path((a, id)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(
        serde_json::to_value(s.engine.resume(&a, &id, false).await?).expect("view serialises"),
    ))
}

async fn suspend_actor(
    State(s): State<ApiState>,
    Path((a, id)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(
        serde_json::to_value(s.engine.suspend(&a, &id).await?).expect("view serialises"),
    ))
}

async fn delete_actor(
    State(s): State<ApiState>,
    Path((a, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.engine.delete_actor(&a, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn sandboxes(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({ "sandboxes": s.engine.recorded_sandboxes() }))
}

async fn detach(State(s): State<ApiState>) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let Some(tx) = s.detach else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "wrong-state",
            "this agent cannot detach".into(),
        ));
    };
    let sandboxes = s.engine.recorded_sandboxes();
    let _ = tx.try_send(());
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "detaching": true, "sandboxes": sandboxes, "state_dir": s.state_dir })),
    ))
}

#[derive(Deserialize)]
struct Rewrite {
    values: Vec<String>,
    for_ms: u64,
    #[serde(default)]
    times: Option<u64>,
}

async fn rewrite_identity(
    State(s): State<ApiState>,
    Path((a, id)): Path<(String, String)>,
    body: Result<Json<Rewrite>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Json(b) = body?;
    let writes = s
        .engine
        .rewrite_identity(&a, &id, b.values, b.for_ms, b.times)
        .await?;
    Ok(Json(json!({ "writes": writes })))
}
