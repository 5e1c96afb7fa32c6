//! The HTTPS admission server and the plain-HTTP admin server: thin shells around
//! [`crate::admission::review`]. Bad requests get a clear 400/413, never a panic or a hang; the
//! server keeps within [`Limits`] (connections, requests in flight, timeouts, idle connections).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn_api::resolve::InstallSettings;
use cairn_api::validation::{ExecAccess, Lookups};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder};

use crate::access::AccessReview;
use crate::admission::{Endpoint, Kind, exec_hooks_to_check, with_exec_access};
use crate::bounds::{Activity, Limits, Refusal};
use crate::metrics::{Metrics, RequestLabels};
use crate::read_through::{Fetch, review_reading_through};

/// What every request handler shares.
pub struct AppState {
    pub lookups: Arc<dyn Lookups + Send + Sync>,
    /// Where objects the caches lack are read from (the API server); `None` answers from the
    /// caches alone.
    pub fetch: Option<Arc<dyn Fetch>>,
    pub install: InstallSettings,
    /// Who answers whether a user may exec (for `exec` hooks); `None` denies every `exec` hook.
    pub access: Option<Arc<dyn AccessReview>>,
    pub metrics: Metrics,
    pub ready: Box<dyn Fn() -> bool + Send + Sync>,
}

/// The admission routes: `/validate` and `/mutate` (any path below them too, so webhook
/// configurations may name the kind: `/validate/backupconfigurations`), within the request
/// bounds of `limits`: at most `max_requests_in_flight` over all routes and connections, and at
/// most `max_body_bytes_in_flight` declared by them (one more gets 503 at once), each answered
/// within `request_timeout` (body read included).
pub fn admission_router(state: Arc<AppState>, limits: &Limits) -> Router {
    let metrics = state.metrics.clone();
    // One semaphore for every route: `Router::layer` wraps each route on its own.
    let in_flight = Arc::new(Semaphore::new(limits.max_requests_in_flight as usize));
    let budget = Budget {
        kib: Arc::new(Semaphore::new(limits.total_budget_kib() as usize)),
        limits: Arc::new(limits.clone()),
        metrics: metrics.clone(),
    };
    let bounds = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |e: BoxError| {
            let metrics = metrics.clone();
            async move { refusal(&metrics, &e) }
        }))
        .timeout(limits.request_timeout)
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(in_flight));
    Router::new()
        .route("/validate", post(validate))
        .route("/validate/{*kind}", post(validate))
        .route("/mutate", post(mutate))
        .route("/mutate/{*kind}", post(mutate))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(budget, reserve_body))
        .layer(bounds)
        .with_state(state)
}

/// What is left of `--max-body-bytes-in-flight`, in KiB.
#[derive(Clone)]
struct Budget {
    kib: Arc<Semaphore>,
    limits: Arc<Limits>,
    metrics: Metrics,
}

/// Takes the request's declared body size from the budget until it is answered, or answers 503
/// at once when it does not fit: decoding costs memory in proportion to the body, and the
/// request cap alone would let 16 of the largest bodies in at once.
async fn reserve_body(
    State(budget): State<Budget>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let kib = budget.limits.budget_kib(declared);
    let Ok(reserved) = Arc::clone(&budget.kib).try_acquire_many_owned(kib) else {
        return unavailable(
            &budget.metrics,
            Refusal::Bytes,
            "too many request body bytes in flight (--max-body-bytes-in-flight); retry",
        );
    };
    let answer = next.run(req).await;
    drop(reserved);
    answer
}

/// The answer to a request stopped by a bound: 503 (the API server applies the failurePolicy).
fn refusal(metrics: &Metrics, error: &BoxError) -> Response {
    let (reason, message) = if error.is::<tower::load_shed::error::Overloaded>() {
        (
            Refusal::Requests,
            "too many admission requests in flight (--max-requests-in-flight); retry",
        )
    } else if error.is::<tower::timeout::error::Elapsed>() {
        (
            Refusal::Timeout,
            "the request was not answered within --request-timeout",
        )
    } else {
        tracing::warn!(%error, "admission service error");
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
    };
    unavailable(metrics, reason, message)
}

/// 503 for a request refused at a bound, counted by `reason`: the API server then applies the
/// webhook's failurePolicy.
fn unavailable(metrics: &Metrics, reason: Refusal, message: &'static str) -> Response {
    metrics.refused(reason);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "1")],
        message,
    )
        .into_response()
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
    let exec_hooks = exec_hooks_to_check(endpoint, &req);
    let (resp, outcome, read_through) = review_reading_through(
        endpoint,
        &req,
        state.lookups.as_ref(),
        state.fetch.as_deref(),
        &state.install,
    )
    .await;
    let (resp, outcome) = if exec_hooks.is_empty() {
        (resp, outcome)
    } else {
        let access = exec_access(state, &req).await;
        with_exec_access(&req, (resp, outcome), &exec_hooks, &access)
    };
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

/// Whether the request's user may exec in the object's namespace, as the API server says.
async fn exec_access(state: &AppState, req: &AdmissionRequest<DynamicObject>) -> ExecAccess {
    let namespace = req.namespace.as_deref().unwrap_or_default();
    match &state.access {
        Some(access) => access.may_exec(&req.user_info, namespace).await,
        None => ExecAccess::Denied("this webhook has no API server to ask".into()),
    }
}

/// Serves `router` over TLS on `listener` within the connection bounds of `limits` until
/// `shutdown` resolves, then lets the connections finish their requests in flight (up to
/// `drain`) and returns.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    limits: Limits,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) {
    let max = limits.max_connections;
    // A permit a connection, held until it ends: all permits back means all connections done.
    let open = Arc::new(Semaphore::new(max as usize));
    let (stop, stopping) = watch::channel(false);
    let shared = Shared::new(acceptor, router, limits, metrics.clone(), stopping);
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
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            // Closed at once, not queued: the client's handshake fails now, not at its timeout.
            tracing::debug!(%peer, "connection refused: --max-connections open already");
            metrics.refused(Refusal::Connections);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let _open = shared.metrics.connection_opened();
            shared.serve_connection(tcp, peer).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    tokio::select! {
        _ = open.acquire_many(max) => tracing::info!("in-flight requests finished"),
        () = tokio::time::sleep(drain) => tracing::warn!("shutdown drain period over; closing open connections"),
    }
}

/// What every connection of [`serve_tls`] shares.
#[derive(Clone)]
struct Shared {
    acceptor: TlsAcceptor,
    router: Router,
    /// The protocol is the one negotiated by ALPN (RFC 9113 §3.2: h2 over TLS needs ALPN), never
    /// sniffed from the first bytes: sniffing waits for 24 bytes without a timeout, so a client
    /// that sent fewer (or nothing) held its connection forever.
    h1: Arc<auto::Builder<TokioExecutor>>,
    h2: Arc<auto::Builder<TokioExecutor>>,
    limits: Arc<Limits>,
    metrics: Metrics,
    stopping: watch::Receiver<bool>,
}

impl Shared {
    fn new(
        acceptor: TlsAcceptor,
        router: Router,
        limits: Limits,
        metrics: Metrics,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A client that trickles its headers is cut off instead of holding a connection forever.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.handshake_timeout);
        // Pings find dead peers; the stream cap bounds one connection's share of the requests.
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_streams_per_connection)
            .keep_alive_interval(limits.idle_timeout / 2)
            .keep_alive_timeout(limits.handshake_timeout);
        Self {
            acceptor,
            router,
            h1: Arc::new(builder.clone().http1_only()),
            h2: Arc::new(builder.http2_only()),
            limits: Arc::new(limits),
            metrics,
            stopping,
        }
    }

    /// One connection: the TLS handshake and then the HTTP/2 preface within the handshake
    /// timeout, then HTTP/2 or HTTP/1 as ALPN negotiated until the client closes, the connection
    /// idles for the idle timeout, or the server stops.
    async fn serve_connection(&self, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        let handshake = self.limits.handshake_timeout;
        let tls = match tokio::time::timeout(handshake, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                self.metrics.refused(Refusal::Handshake);
                return;
            }
        };
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return self.drive(&self.h1, tls, peer).await;
        }
        // HTTP/2 has no header read timeout: the client's first bytes (its connection preface)
        // must arrive within the same time.
        let mut tls = tokio::io::BufReader::new(tls);
        match tokio::time::timeout(handshake, tls.fill_buf()).await {
            Ok(Ok(_)) => self.drive(&self.h2, tls, peer).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "reading the HTTP/2 preface failed"),
            Err(_) => {
                tracing::debug!(%peer, "no HTTP/2 preface in time");
                self.metrics.refused(Refusal::Handshake);
            }
        }
    }

    /// Serves HTTP on `io` until the connection ends; closes it gracefully (the requests in
    /// flight finish) once it idles for the idle timeout or the server stops.
    async fn drive<I>(&self, builder: &auto::Builder<TokioExecutor>, io: I, peer: SocketAddr)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::default());
        let service = Tracked {
            inner: TowerToHyperService::new(self.router.clone()),
            activity: Arc::clone(&activity),
        };
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut stopping = self.stopping.clone();
        // Serve until the connection ends, idles, or the server stops.
        tokio::select! {
            result = conn.as_mut() => return log_end(peer, result),
            () = activity.idle_for(self.limits.idle_timeout) => {
                tracing::debug!(%peer, "closing an idle connection");
                self.metrics.refused(Refusal::Idle);
            }
            _ = stopping.wait_for(|s| *s) => {}
        }
        // Then close it: HTTP/2 sends GOAWAY, HTTP/1 stops keep-alive. A client that answers
        // the closing handshake ends it cleanly; one that does not (e.g. the HTTP/2 ping a
        // graceful close waits for) is dropped once nothing was in flight for a moment, at the
        // latest when a request that just came in has had its timeout.
        conn.as_mut().graceful_shutdown();
        let latest = self.limits.request_timeout + self.limits.handshake_timeout;
        let settled = async {
            tokio::time::sleep(CLOSE_GRACE).await;
            activity.idle_for(CLOSE_GRACE).await;
        };
        tokio::select! {
            biased;
            result = conn.as_mut() => log_end(peer, result),
            () = settled => {}
            () = tokio::time::sleep(latest) => {
                tracing::debug!(%peer, "a closing connection did not end in time; dropped");
            }
        }
    }
}

/// How long a closing connection with nothing in flight may take to say goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

fn log_end<E: std::fmt::Display>(peer: SocketAddr, result: Result<(), E>) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// A connection's service: each request's start and end recorded in the connection's activity.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: R) -> Self::Future {
        let in_flight = self.activity.begin();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let answer = answer.await;
            drop(in_flight);
            answer
        })
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
