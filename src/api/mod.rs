//! The HTTP API (axum): the peer API that nodes call with a WireGuard token
//! (`/api/v3/wire_guard_peers`, wire-compatible with flyctl), the admin API (`/api/v1`), the
//! OpenAPI document (`/api/openapi.json`), `/healthz`, `/readyz` and `/metrics`.
//!
//! One listener serves them all ([`router`]), unless `[api] admin_listen` gives the admin plane
//! (`/api/v1`, `/metrics`) a listener of its own ([`split_routers`]): the public listener then
//! has no admin route at all, so an admin path there is the same `404` as a path that exists
//! nowhere, whatever the credential.
//!
//! This module owns HTTP and JSON and nothing else: it never touches SQL (everything goes through
//! [`Store`]) and never logs an `Authorization` header or a secret. Every failure, including
//! unknown routes, wrong methods, oversized bodies and panics, is answered with a status and a
//! JSON body `{"error": "..."}` (see [`error::ApiError`]).
//!
//! Writes answer only once the DNS snapshot holding them is published (`ApiState::published`
//! reached the write's generation), so a node that got `200` resolves its own name at once.

mod admin;
mod apikeys;
mod auth;
mod body;
mod error;
mod limits;
mod metrics;
mod openapi;
pub mod paging;
mod peers;
pub mod server;
mod tls;
pub mod types;
mod ui;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{Method, Request, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{AdminToken, MAX_ADMIN_TOKEN_LEN, is_token_shaped, parse_authorization};
pub use error::ApiError;
pub use limits::RateLimits;
pub use peers::DEFAULT_GROUP;
pub use types::PeerResponse;

use crate::gateway::GatewayHandle;
use crate::model::{Generation, Region};
use crate::store::Store;

/// How long a write waits for the DNS snapshot to publish it before answering anyway.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything the handlers need. Built once by `serve`, shared by every request.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The store, the source of truth.
    pub store: Store,
    /// The configured gateway regions; the one marked `default` (else the first) takes peers
    /// that name no region.
    pub regions: Arc<Vec<Region>>,
    /// The admin credential.
    pub admin_token: AdminToken,
    /// The generation the DNS snapshot has published. Writes wait until it reaches theirs.
    pub published: watch::Receiver<Generation>,
    /// The running gateway, for peer status in the admin API.
    pub gateway: Option<GatewayHandle>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// How long a whole request body may take to arrive (else `408`).
    pub body_timeout: Duration,
    /// Rate limits per WireGuard token and per source address.
    pub rate_limits: RateLimits,
    /// The org-wide key lifetime (`[peers] key_expiry`) for tokens that set none of their own.
    pub key_expiry: Option<Duration>,
    /// A peer is live when a gateway saw it within this long (`[groups] health_window`): the
    /// `live` filter of the peer list.
    pub live_window: Duration,
    /// The DNS snapshot, for the console's DNS look-up box (issue 19); `None` in tests that
    /// run the API alone.
    pub snapshot: Option<crate::snapshot::SnapshotHandle>,
    /// Whether the console answers at `/ui` (`[ui] enabled`).
    pub console: bool,
}

/// The state as the router holds it: the caller's [`ApiState`] and what the router keeps for
/// itself across requests (the rate limiters).
struct Inner {
    api: ApiState,
    limiters: limits::Limiters,
    /// When the DNS snapshot was last published, for `/metrics`.
    publish_clock: metrics::PublishClock,
    /// How long DNS has lagged the store, for `/metrics`.
    behind_clock: metrics::BehindClock,
    /// The OpenAPI document, with this server's regions.
    openapi: Arc<serde_json::Value>,
    /// The per-org counts `/metrics` shows, refreshed at most every few seconds.
    org_counts: metrics::CountsCache,
    /// Concurrent scrapes share one render.
    renders: metrics::RenderShare,
}

impl std::ops::Deref for Inner {
    type Target = ApiState;
    fn deref(&self) -> &ApiState {
        &self.api
    }
}

type Shared = Arc<Inner>;

/// How long `/readyz` waits for the store, and for the snapshot to catch up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);

impl ApiState {
    /// Waits until the DNS snapshot has published `generation`, for at most [`PUBLISH_TIMEOUT`].
    /// On timeout (or when the publisher is gone) it logs a warning and returns: the write is
    /// committed either way, and DNS will catch up.
    pub async fn wait_published(&self, generation: Generation) {
        let mut published = self.published.clone();
        match tokio::time::timeout(PUBLISH_TIMEOUT, published.wait_for(|g| *g >= generation)).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                tracing::warn!(%generation, "snapshot publisher has stopped; answering without waiting for DNS");
            }
            Err(_) => {
                tracing::warn!(%generation, timeout = ?PUBLISH_TIMEOUT,
                    "DNS snapshot did not publish the write in time; answering anyway");
            }
        }
    }
}

/// Builds the whole HTTP API over `state`, for one listener that serves everything (the
/// default): the union of the two routers of [`split_routers`].
pub fn router(state: ApiState) -> Router {
    let body_limit = state.body_limit;
    finish(api_routes(), shared(state), body_limit)
}

/// Like [`router`], with a handle that retunes the running API (a configuration reload).
pub fn router_with_handle(state: ApiState) -> (Router, ApiHandle) {
    let body_limit = state.body_limit;
    let shared = shared(state);
    let handle = ApiHandle(Arc::clone(&shared));
    (finish(api_routes(), shared, body_limit), handle)
}

/// What a configuration reload changes in a running API: its rate limits.
#[derive(Clone)]
pub struct ApiHandle(Shared);

impl std::fmt::Debug for ApiHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiHandle").finish_non_exhaustive()
    }
}

impl ApiHandle {
    /// Applies new rate limits; what each token or address has spent stays spent.
    pub fn retune(&self, limits: RateLimits) {
        self.0.limiters.retune(limits);
    }
}

/// The API split for two listeners (`[api] admin_listen`): the public router (peer API,
/// `/healthz`, `/readyz`, `/api/openapi.json`) and the admin router (`/api/v1/*`, `/metrics`).
/// Both share one state: the rate limiters, the metrics cache and the OpenAPI document, which
/// stays the whole document. A path of the other plane is not a route at all on a listener:
/// `404` with a JSON `error`, exactly as a path that exists nowhere, whatever the credential.
pub fn split_routers(state: ApiState) -> Routers {
    let body_limit = state.body_limit;
    let shared = shared(state);
    Routers {
        handle: ApiHandle(Arc::clone(&shared)),
        public: finish(public_routes(), Arc::clone(&shared), body_limit),
        admin: finish(admin_routes(), shared, body_limit),
    }
}

/// The two routers of [`split_routers`].
#[derive(Debug, Clone)]
pub struct Routers {
    /// Served on `[api] listen`: what nodes and probes call.
    pub public: Router,
    /// Served on `[api] admin_listen`: the admin plane.
    pub admin: Router,
    /// Retunes both (a configuration reload).
    pub handle: ApiHandle,
}

/// The state every router of one server shares.
fn shared(state: ApiState) -> Shared {
    crate::metrics::init();
    let codes: Vec<&str> = state.regions.iter().map(|r| r.code.as_str()).collect();
    let openapi = Arc::new(openapi::finish(api_doc(), &codes));
    Arc::new(Inner {
        openapi,
        limiters: limits::Limiters::new(state.rate_limits),
        publish_clock: metrics::PublishClock::follow(&state.published),
        behind_clock: metrics::BehindClock::follow(&state.store.changes(), &state.published),
        org_counts: metrics::CountsCache::new(),
        renders: metrics::RenderShare::default(),
        api: state,
    })
}

/// `routes` over `state`, with the JSON fallbacks and the middleware.
fn finish(routes: OpenApiRouter<Shared>, state: Shared, body_limit: usize) -> Router {
    let (routes, _) = routes.split_for_parts();
    let routes = routes
        // Must come after the routes: it is attached to each route registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_route)
        .with_state(state);
    with_layers(routes, body_limit)
}

/// The middleware every route gets: body limit, panic catcher, request tracing.
fn with_layers(routes: Router, body_limit: usize) -> Router {
    routes
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                // 5xx causes are logged once by `ApiError`; the trace layer adds no second line.
                .on_failure(()),
        )
}

/// The request span: method and matched route only (never the raw URI with its names, never
/// headers); `org` and `token` (its name) are filled in once a WireGuard token authenticated.
fn make_span<B>(req: &Request<B>) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no route)", MatchedPath::as_str);
    tracing::info_span!(
        "http",
        // The bounded label, never the raw method (hyper accepts thousands of letters).
        method = metrics::method_label(req.method()),
        route = %route,
        org = tracing::field::Empty,
        token = tracing::field::Empty,
    )
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic payload)".to_owned());
    tracing::error!(panic = %detail, "request handler panicked");
    ApiError::Panic.into_response()
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// Every route of the API, each with its OpenAPI operation: `routes!` reads the method and path
/// from the handler's `#[utoipa::path]`, so the router and the document cannot disagree.
fn api_routes() -> OpenApiRouter<Shared> {
    public_routes().merge(admin_routes())
}

/// The routes `[api] listen` serves when the admin plane has a listener of its own: the peer
/// API (WireGuard tokens), the probes and the OpenAPI document.
fn public_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(peers::create))
        .routes(routes!(peers::show, peers::rekey, peers::delete))
        .routes(routes!(openapi_json))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The admin plane: the admin API (admin token) and `/metrics`.
fn admin_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(admin::list_orgs, admin::create_org))
        .routes(routes!(admin::delete_org))
        .routes(routes!(admin::list_tokens, admin::mint_token))
        .routes(routes!(admin::show_token, admin::delete_token))
        .routes(routes!(admin::list_peers))
        .routes(routes!(admin::audit))
        .routes(routes!(admin::show_peer, admin::delete_peer))
        .routes(routes!(apikeys::list, apikeys::create))
        .routes(routes!(apikeys::revoke))
        .routes(routes!(metrics::metrics))
        // The admin console (issue 19): part of the admin plane, not in the OpenAPI document.
        .merge(OpenApiRouter::from(ui::routes()))
}

/// The OpenAPI document of [`api_routes`], before the regions are filled in.
fn api_doc() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

/// `GET /api/openapi.json`: this API's OpenAPI document.
#[utoipa::path(get, path = "/api/openapi.json", operation_id = "openapi", tag = "meta",
    summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
async fn openapi_json(State(state): State<Shared>) -> Json<serde_json::Value> {
    Json(serde_json::Value::clone(&state.openapi))
}

/// `GET /healthz`, liveness: the process serves HTTP. It never touches the store, so it
/// answers at once even while the database is down (that is `/readyz`'s business).
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "meta",
    summary = "Liveness: the process serves HTTP (never touches the database); the generation DNS has published",
    responses((status = 200, description = "Alive", body = types::Health)))]
async fn healthz(State(state): State<Shared>) -> Json<types::Health> {
    let generation = *state.published.borrow();
    Json(types::Health {
        status: "ok".to_owned(),
        generation: generation.0,
    })
}

/// `GET /readyz`, readiness: the store answers within [`READY_TIMEOUT`], and the DNS snapshot
/// has published every change the store reported (waiting up to [`READY_TIMEOUT`] for a
/// snapshot that is just being rebuilt, so a write does not make the probe flap).
///
/// With a read replica (`read_database_url`) the primary and the standby are checked each. A
/// `503` names the parts that are down in `down` (`primary`, `read_replica`, `snapshot`) beside
/// its `error`.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "meta",
    summary = "Readiness: the database (primary and read replica) answers within 1 s and the DNS snapshot has published every committed change",
    responses((status = 200, description = "Ready", body = types::Ready),
        (status = 503, description = "Not ready; `error` says why and `down` names the parts that are down (`primary`, `read_replica`, `snapshot`)", body = types::NotReady)))]
async fn readyz(State(state): State<Shared>) -> Response {
    let committed = *state.store.changes().borrow();
    let mut published = state.published.clone();
    let replica = state.store.has_read_replica();
    let (primary, standby, snapshot) = tokio::join!(
        tokio::time::timeout(READY_TIMEOUT, async {
            if replica {
                state.store.ping_primary().await
            } else {
                state.store.generation().await.map(|_| ())
            }
        }),
        tokio::time::timeout(READY_TIMEOUT, async {
            if replica {
                state.store.generation().await.map(|_| ())
            } else {
                Ok(())
            }
        }),
        // The watch guard is not `Send`: copy the generation out before `join!` awaits on.
        tokio::time::timeout(READY_TIMEOUT, async {
            published.wait_for(|g| *g >= committed).await.map(|g| *g)
        }),
    );
    let mut down: Vec<&'static str> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    let mut database =
        |part: &'static str,
         what: &str,
         result: Result<Result<(), crate::store::StoreError>, _>| {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, part, "readiness: the store failed");
                    down.push(part);
                    reasons.push(format!("{what} is unavailable"));
                }
                Err(tokio::time::error::Elapsed { .. }) => {
                    down.push(part);
                    reasons.push(format!(
                        "{what} did not answer within {} ms",
                        READY_TIMEOUT.as_millis()
                    ));
                }
            }
        };
    database(
        "primary",
        if replica {
            "the primary database (database_url)"
        } else {
            "the database"
        },
        primary,
    );
    database(
        "read_replica",
        "the read replica (read_database_url)",
        standby,
    );
    let generation = match snapshot {
        Ok(Ok(g)) => Some(g),
        Ok(Err(_)) => {
            down.push("snapshot");
            reasons.push("the DNS snapshot publisher has stopped".to_owned());
            None
        }
        Err(_) => {
            down.push("snapshot");
            reasons.push(format!(
                "the DNS snapshot is behind the store (published generation {}, committed {})",
                state.published.borrow().0,
                committed.0
            ));
            None
        }
    };
    match generation {
        Some(generation) if down.is_empty() => Json(types::Ready {
            status: "ready".to_owned(),
            generation: generation.0,
        })
        .into_response(),
        _ => {
            let mut res = (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                Json(types::NotReady {
                    error: format!("not ready: {}", reasons.join("; ")),
                    down: down.iter().map(|&p| p.to_owned()).collect(),
                }),
            )
                .into_response();
            res.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            res
        }
    }
}

/// The last second RFC 3339 can write (four-digit years): 9999-12-31T23:59:59Z.
const MAX_RFC3339: i64 = 253_402_300_799;

/// Unix seconds as an RFC 3339 UTC timestamp (`2026-11-25T16:00:00Z`). Times outside what
/// RFC 3339 can write are clamped to its range (years 1970 to 9999), so a stored row can never
/// make an answer fail.
fn rfc3339(secs: i64) -> String {
    let secs = secs.clamp(0, MAX_RFC3339);
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The OpenAPI document, for tools that want it without a running server: `Region` is any
/// label here, where a server's document lists its configured regions.
pub fn openapi_document() -> serde_json::Value {
    openapi::finish(api_doc(), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::body::Body;
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_json() {
        let routes = Router::new().route(
            "/boom",
            get(|| async {
                let v: Vec<u8> = Vec::new();
                // Index out of bounds: a bug, which must not take the server down.
                v[usize::from(v.is_empty())].to_string()
            }),
        );
        let app = with_layers(routes, 1024);
        let req = Request::builder().uri("/boom").body(Body::empty()).unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "internal error");
        // The router still serves afterwards.
        let req = Request::builder().uri("/boom").body(Body::empty()).unwrap();
        assert_eq!(app.oneshot(req).await.unwrap().status(), 500);
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_622_400), "2026-11-25T16:00:00Z");
        assert_eq!(rfc3339(-1), "1970-01-01T00:00:00Z");
        // issue 11: a token minted with `--expires 10000y` once made every token list panic.
        assert_eq!(rfc3339(MAX_RFC3339), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(MAX_RFC3339 + 1), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
    }
}
