//! The HTTP endpoints, axum on tower:
//!
//! | route | what |
//! |---|---|
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /healthz` | liveness: the actor tree is up and its consumer polls |
//! | `GET /readyz` | readiness: running, model loaded, consumer in its group |
//! | `GET /v1/status` | JSON: partitions, offsets, in flight, model, versions, uptime |
//! | `GET /v1/heads` | JSON: the head versions this replica knows, with their metadata, and the live one |
//! | `POST /v1/pause`, `POST /v1/resume` | admin, `Authorization: Bearer <token>` |
//! | `POST /v1/heads/rollback` | admin: `{"version": N}` makes version N's weights live again on every replica |
//! | `POST /v1/finetune` | admin: run a fine-tune round now (on the trainer replica) |
//!
//! The server runs beside the actor tree, not inside it, so it can still report a tree that
//! is starting, draining or has failed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tessera_actors::config::{ADMIN_TOKEN_VARIABLE, HttpConfig};
use tessera_actors::{GLOBAL_SCOPE, Monitor};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Admin requests carry no meaningful body; anything larger is refused.
const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Clone)]
struct AppState {
    monitor: Arc<Monitor>,
    /// `None`: the admin endpoints are disabled.
    admin_token: Option<Arc<str>>,
}

/// The routes with their tower layers: request tracing, a timeout, a global concurrency
/// limit and a body size limit.
pub fn router(monitor: Arc<Monitor>, config: &HttpConfig) -> Router {
    let state = AppState {
        monitor,
        admin_token: config.resolved_admin_token().map(Arc::from),
    };
    let admin = Router::new()
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .route("/v1/heads/rollback", post(rollback))
        .route("/v1/finetune", post(finetune))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/v1/heads", get(heads))
        .merge(admin)
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(GlobalConcurrencyLimitLayer::new(
            config.max_concurrent_requests,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(TraceLayer::new_for_http())
}

/// A running HTTP server.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    join: JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Binds `config.address` and serves `monitor` until [`HttpServer::stop`].
    pub async fn start(config: &HttpConfig, monitor: Arc<Monitor>) -> anyhow::Result<Self> {
        let address: SocketAddr = config
            .address
            .parse()
            .with_context(|| format!("http.address {:?}", config.address))?;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on http.address {address}"))?;
        let local_addr = listener.local_addr()?;
        let admin = if config.resolved_admin_token().is_some() {
            "enabled"
        } else {
            "disabled (no admin token)"
        };
        tracing::info!(address = %local_addr, admin, "Serving HTTP");
        let app = router(monitor, config);
        let (shutdown, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            local_addr,
            shutdown: Some(shutdown),
            join,
        })
    }

    /// The address actually bound (the port is chosen by the system for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and waits (briefly) for requests in progress.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match tokio::time::timeout(Duration::from_secs(5), &mut self.join).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "HTTP server failed"),
            Ok(Err(error)) => tracing::warn!(%error, "HTTP server task failed"),
            Err(_) => self.join.abort(),
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        state.monitor.metrics.encode_text(),
    )
        .into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.monitor.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.monitor.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

async fn status(State(state): State<AppState>) -> Response {
    Json(state.monitor.status()).into_response()
}

/// The answer of the pause and resume endpoints.
#[derive(Debug, Serialize)]
struct PauseState {
    paused: bool,
    /// False when it already was in that state.
    changed: bool,
}

async fn pause(State(state): State<AppState>) -> Json<PauseState> {
    let changed = state.monitor.pause();
    if changed {
        tracing::info!("Consumption paused by an operator");
    }
    Json(PauseState {
        paused: true,
        changed,
    })
}

async fn resume(State(state): State<AppState>) -> Json<PauseState> {
    let changed = state.monitor.resume();
    if changed {
        tracing::info!("Consumption resumed by an operator");
    }
    Json(PauseState {
        paused: false,
        changed,
    })
}

/// The answer of `GET /v1/heads`.
#[derive(Debug, Serialize)]
struct HeadsBody {
    /// The live global head's version (0: none).
    live: u64,
    /// The live version of every scope that has a head.
    live_by_scope: std::collections::BTreeMap<String, u64>,
    /// The camera groups configured here (each a scope; `global` serves the rest).
    groups: Vec<String>,
    heads: Vec<tessera_actors::learn::HeadListing>,
}

async fn heads(State(state): State<AppState>) -> Response {
    match state.monitor.learning() {
        Some(learning) => Json(HeadsBody {
            live: learning.heads.live_version(GLOBAL_SCOPE),
            live_by_scope: learning.heads.live_heads().versions(),
            groups: learning.scopes.groups().map(str::to_owned).collect(),
            heads: learning.heads.list(),
        })
        .into_response(),
        None => no_heads(),
    }
}

fn no_heads() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no heads: the pipeline is not running, or its model has no embedding output".into(),
    )
}

/// The body of `POST /v1/heads/rollback`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    /// `global` when absent.
    #[serde(default = "global_scope")]
    scope: String,
    version: u64,
}

/// The body of `POST /v1/finetune` (optional).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FineTuneRequest {
    /// Train this scope; absent: every scope with examples.
    scope: Option<String>,
}

fn global_scope() -> String {
    GLOBAL_SCOPE.to_owned()
}

async fn rollback(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let Some(learning) = state.monitor.learning() else {
        return no_heads();
    };
    let request: RollbackRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected {{\"version\": <number>, \"scope\": <name, default global>}}: {e}"
                ),
            );
        }
    };
    let scope = request.scope.as_str();
    if learning.heads.get(scope, request.version).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no head version {} of scope `{scope}` on this replica",
                request.version
            ),
        );
    }
    match learning.rollback(scope, request.version).await {
        Ok(version) => {
            tracing::info!(
                scope,
                restored = request.version,
                version,
                "Head rolled back by an operator"
            );
            Json(serde_json::json!({ "scope": scope, "version": version, "restored_from": request.version }))
                .into_response()
        }
        Err(reason) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            tessera_models::error_chain(reason.as_ref()),
        ),
    }
}

async fn finetune(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let Some(learning) = state.monitor.learning() else {
        return no_heads();
    };
    let request: FineTuneRequest = if body.iter().all(u8::is_ascii_whitespace) {
        FineTuneRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("expected no body or {{\"scope\": <name>}}: {e}"),
                );
            }
        }
    };
    if let Some(scope) = &request.scope
        && !learning.scopes.is_known(scope)
    {
        return error(
            StatusCode::NOT_FOUND,
            format!("no scope `{scope}`: it is neither `global` nor a configured group"),
        );
    }
    if !learning.trainer.is_owner() {
        return error(
            StatusCode::CONFLICT,
            "this replica is not the trainer (it does not own the labels topic); ask the replica whose /v1/status says `trainer: true`".into(),
        );
    }
    let scope = request.scope.clone();
    learning.trainer.request(request.scope);
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "requested": true, "scope": scope })),
    )
        .into_response()
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(ErrorBody { error: message })).into_response()
}

/// Admin requests need `Authorization: Bearer <token>` matching the configured token
/// (compared in constant time); without a configured token they are refused outright.
async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.admin_token else {
        return error(
            StatusCode::FORBIDDEN,
            format!("admin endpoints are disabled: set http.admin_token or {ADMIN_TOKEN_VARIABLE}"),
        );
    };
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let authorised =
        offered.is_some_and(|token| bool::from(token.as_bytes().ct_eq(expected.as_bytes())));
    if !authorised {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required".into(),
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    fn config(token: Option<&str>) -> HttpConfig {
        HttpConfig {
            admin_token: token.map(str::to_owned),
            ..HttpConfig::default()
        }
    }

    async fn call(
        app: Router,
        method: &str,
        uri: &str,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = app
            .oneshot(request.body(Body::empty()).expect("valid request"))
            .await
            .expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn admin_needs_the_right_token() {
        let monitor = Monitor::new("t", "g", Duration::ZERO);
        let app = router(monitor.clone(), &config(Some("s3cret")));
        let (status, _) = call(app.clone(), "POST", "/v1/pause", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = call(app.clone(), "POST", "/v1/pause", Some("s3cre")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(!monitor.is_paused());
        let (status, body) = call(app.clone(), "POST", "/v1/pause", Some("s3cret")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(monitor.is_paused());
        let (status, _) = call(app, "POST", "/v1/resume", Some("s3cret")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!monitor.is_paused());
    }

    #[tokio::test]
    async fn admin_is_disabled_without_a_token() {
        // The environment fallback must not leak into this test.
        let monitor = Monitor::new("t", "g", Duration::ZERO);
        let mut config = config(None);
        config.admin_token = Some(" ".into());
        let app = router(monitor.clone(), &config);
        let (status, body) = call(app, "POST", "/v1/pause", Some(" ")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("disabled"), "{body}");
        assert!(!monitor.is_paused());
    }

    #[tokio::test]
    async fn probes_follow_the_pipeline_phase() {
        let monitor = Monitor::new("t", "g", Duration::ZERO);
        let app = router(monitor.clone(), &config(None));
        let (status, body) = call(app.clone(), "GET", "/readyz", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("starting"), "{body}");
        let (status, _) = call(app.clone(), "GET", "/healthz", None).await;
        assert_eq!(status, StatusCode::OK);
        monitor.set_phase(tessera_actors::Phase::Failed);
        let (status, _) = call(app.clone(), "GET", "/healthz", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, body) = call(app, "GET", "/v1/status", None).await;
        assert_eq!(status, StatusCode::OK);
        let status: serde_json::Value = serde_json::from_str(&body).expect("JSON status");
        assert_eq!(status["phase"], "failed");
        assert_eq!(status["live"], false);
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_are_refused() {
        let app = router(Monitor::new("t", "g", Duration::ZERO), &config(Some("x")));
        assert_eq!(
            call(app.clone(), "GET", "/nope", None).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(app, "GET", "/v1/pause", Some("x")).await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
