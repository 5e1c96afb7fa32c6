//! The HTTPS admission server and the plain-HTTP admin server: thin shells around
//! [`crate::admission::review`]. Bad requests get a clear 400/413, never a panic or a hang.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn_api::resolve::InstallSettings;
use cairn_api::validation::Lookups;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::TimeoutLayer;

use crate::admission::{Endpoint, Kind};
use crate::metrics::{Metrics, RequestLabels};
use crate::read_through::{Fetch, review_reading_through};

/// Largest AdmissionReview body accepted (the API server's own limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What every request handler shares.
pub struct AppState {
    pub lookups: Arc<dyn Lookups + Send + Sync>,
    /// Where objects the caches lack are read from (the API server); `None` answers from the
    /// caches alone.
    pub fetch: Option<Arc<dyn Fetch>>,
    pub install: InstallSettings,
    pub metrics: Metrics,
    pub ready: Box<dyn Fn() -> bool + Send + Sync>,
}

/// The admission routes: `/validate` and `/mutate` (any path below them too, so webhook
/// configurations may name the kind: `/validate/backupconfigurations`).
pub fn admission_router(state: Arc<AppState>, request_timeout: Duration) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/validate/{*kind}", post(validate))
        .route("/mutate", post(mutate))
        .route("/mutate/{*kind}", post(mutate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .with_state(state)
}

/// The admin routes: `/livez`, `/readyz` (ready once the watch caches synced), `/metrics`.
pub fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if (state.ready)() {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "watch caches not synced yet",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn validate(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    handle(&state, Endpoint::Validate, &body).await
}

async fn mutate(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    handle(&state, Endpoint::Mutate, &body).await
}

/// Decodes an AdmissionReview v1, reviews it, encodes the answer.
pub fn decode(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    // The common case straight from the bytes (`AdmissionReview` itself flattens its type
    // fields, which buffers the whole body once more); anything unexpected takes the slow path
    // below for its message.
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(rename = "apiVersion")]
        api_version: String,
        kind: String,
        request: AdmissionRequest<DynamicObject>,
    }
    if let Ok(review) = serde_json::from_slice::<Envelope>(body)
        && review.api_version == "admission.k8s.io/v1"
        && review.kind == "AdmissionReview"
    {
        // The response copies these: the API server rejects a review without them.
        let mut request = review.request;
        request.types = kube::core::TypeMeta {
            api_version: review.api_version,
            kind: review.kind,
        };
        return Ok(request);
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let api_version = value.get("apiVersion").and_then(|v| v.as_str());
    let kind = value.get("kind").and_then(|v| v.as_str());
    if api_version != Some("admission.k8s.io/v1") || kind != Some("AdmissionReview") {
        return Err(format!(
            "expected an AdmissionReview of apiVersion admission.k8s.io/v1, got kind {:?} of apiVersion {:?}",
            kind.unwrap_or(""),
            api_version.unwrap_or("")
        ));
    }
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(value).map_err(|e| format!("not a valid AdmissionReview: {e}"))?;
    review
        .try_into()
        .map_err(|_| "the AdmissionReview has no request".to_string())
}

async fn handle(state: &AppState, endpoint: Endpoint, body: &[u8]) -> Response {
    let start = Instant::now();
    let req = match decode(body) {
        Ok(r) => r,
        Err(reason) => {
            tracing::info!(%reason, "bad admission request");
            return (StatusCode::BAD_REQUEST, reason).into_response();
        }
    };
    let (resp, outcome, read_through) = review_reading_through(
        endpoint,
        &req,
        state.lookups.as_ref(),
        state.fetch.as_deref(),
        &state.install,
    )
    .await;
    for miss in &read_through.found {
        // The watch had not delivered it yet; a count that keeps growing means a watch behind.
        tracing::info!(kind = miss.kind(), ?miss, "read through a cache miss");
        state.metrics.read_through(miss.kind(), true);
    }
    for miss in &read_through.absent {
        state.metrics.read_through(miss.kind(), false);
    }
    let labels = RequestLabels {
        endpoint: match endpoint {
            Endpoint::Validate => "validate".into(),
            Endpoint::Mutate => "mutate".into(),
        },
        kind: Kind::from_gvk(&req.kind.group, &req.kind.kind)
            .map(|k| k.name().into_owned())
            .unwrap_or_else(|| "unknown".into()),
        operation: format!("{:?}", req.operation).to_uppercase(),
        verdict: outcome.as_str().into(),
    };
    tracing::debug!(
        uid = %req.uid, kind = %labels.kind, name = %req.name,
        namespace = req.namespace.as_deref().unwrap_or(""),
        operation = %labels.operation, verdict = %labels.verdict,
        "admission"
    );
    state.metrics.observe(labels, start.elapsed());
    axum::Json(resp.into_review()).into_response()
}

/// How long a client may take to send a request's headers (HTTP/1.1), or its first bytes
/// (HTTP/2), before its connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` over TLS on `listener` until `shutdown` resolves, then finishes the
/// requests in flight (up to `drain`) and returns.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that trickles its headers is cut off instead of holding a connection forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    // The protocol is the one negotiated by ALPN (RFC 9113 §3.2: h2 over TLS needs ALPN), never
    // sniffed from the first bytes: sniffing waits for 24 bytes without a timeout, so a client
    // that sent fewer (or nothing) held its connection forever.
    let h1 = Arc::new(builder.clone().http1_only());
    let h2 = Arc::new(builder.http2_only());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let (h1, h2) = (Arc::clone(&h1), Arc::clone(&h2));
        let watcher = graceful.watcher();
        tokio::spawn(serve_connection(
            tcp, peer, acceptor, service, h1, h2, watcher,
        ));
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("in-flight requests finished"),
        () = tokio::time::sleep(drain) => tracing::warn!("shutdown drain period over; closing open connections"),
    }
}

/// One connection: the TLS handshake (within [`HANDSHAKE_TIMEOUT`]), then HTTP/2 or HTTP/1 as
/// ALPN negotiated, watched for graceful shutdown.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    service: TowerToHyperService<Router>,
    h1: Arc<auto::Builder<TokioExecutor>>,
    h2: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        // HTTP/2 has no header read timeout: the client's first bytes (its connection
        // preface) must arrive within the same time.
        let mut tls = tokio::io::BufReader::new(tls);
        match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.fill_buf()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "reading the HTTP/2 preface failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "no HTTP/2 preface in time");
                return;
            }
        }
        let conn = h2.serve_connection(TokioIo::new(tls), service);
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    } else {
        let conn = h1.serve_connection(TokioIo::new(tls), service);
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// Serves the admin router over plain HTTP until `shutdown` resolves.
pub async fn serve_admin(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
