//! The router: every route, its CORS policy, and the layers around them.
//!
//! Routes (see `docs/http-api.md` for the full contract):
//!
//! | route                                 | methods         | auth                  | CORS       |
//! |---------------------------------------|-----------------|-----------------------|------------|
//! | `/v1/rooms`                           | GET POST        | operator              | configured |
//! | `/v1/rooms/{id}`                      | GET DELETE      | operator              | configured |
//! | `/v1/rooms/{id}/tokens`               | POST            | operator              | configured |
//! | `/v1/rooms/{id}/whip`                 | POST            | host, speaker         | configured |
//! | `/v1/rooms/{id}/join`                 | POST            | not listener (bridge) | configured |
//! | `/v1/rooms/{id}/whep`                 | POST            | any room role         | open       |
//! | `/v1/sessions/{id}`                   | DELETE PATCH    | the id itself         | open       |
//! | `/v1/rooms/{id}/events`               | GET (WebSocket) | any room role         | configured |
//! | `/v1/rooms/{id}/participants[/{pid}…]`| GET POST DELETE | host                  | configured |
//! | `/v1/rooms/{id}/{mute-all,lock,unlock,end}` | POST      | host                  | configured |
//! | `/v1/rooms/{id}/attendance[.csv]`     | GET             | host                  | configured |
//! | `/v1/rooms/{id}/reach[.csv]`          | GET             | host                  | configured |
//! | `/v1/org`, `/v1/org/{id}`             | GET PUT         | operator              | configured |
//! | `/v1/openapi.json`                    | GET             | none                  | configured |
//! | `/v1/keys`, `/v1/keys/{id}`           | GET POST DELETE | org-wide operator     | configured |
//! | `/v1/members`, `/v1/members/{id}`     | GET PUT         | operator              | configured |
//! | `/v1/pins`                            | POST            | operator              | configured |
//! | `/v1/rooms/{id}/invite`               | GET             | operator              | configured |
//! | `/v1/pin-join`                        | POST            | none (rate limited)   | configured |
//!
//! `whip`, `whep`, `join` and the minting routes (`tokens`, `pins`,
//! `invite`, `POST /v1/keys`) are also rate limited per client IP
//! ([`throttle`]).
//! | `/v1/rooms/{id}/summary`              | GET             | any room role         | configured |
//! | `/healthz`, `/readyz`, `/metrics`     | GET             | none                  | none       |
//! | `/l/…`, `/h/…`, `/b/…`, `/j`, `/console`, `/assets/…` | GET | none (pages, [`pages`]) | none |

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::header;
use axum::middleware;
use axum::response::IntoResponse;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Auth;
use crate::backend::{AttendanceStore, MediaControl, OrgStore, RoomStore};
use crate::cors::CorsConfig;
use crate::hub::{self, Hub};
use crate::{
    attendance, invites, keys, members, openapi, org, pages, participants, pins, problem, reach,
    rooms, sessions, socket, throttle,
};

/// Largest accepted request body. SDP offers are a few KiB; room and token
/// JSON far less. Anything bigger is a mistake or an attack: 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Renders the Prometheus text exposition for `GET /metrics`.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Everything the handlers need, built once by the binary.
#[derive(Clone)]
pub struct AppState {
    /// Opens and closes WebRTC sessions (the media driver).
    pub media: Arc<dyn MediaControl>,
    /// Where rooms live (SQLite or PostgreSQL in the binary).
    pub rooms: Arc<dyn RoomStore>,
    /// Where sessions are recorded as they join and leave.
    pub attendance: Arc<dyn AttendanceStore>,
    /// The organisation's units.
    pub org: Arc<dyn OrgStore>,
    /// Token keys and the operator key.
    pub auth: Auth,
    /// Called on each `GET /metrics`.
    pub metrics: MetricsRender,
    /// Which browser origins may call which routes. Read once, when the
    /// router is built.
    pub cors: CorsConfig,
    /// The operator-facing settings of the binary's configuration.
    pub settings: Settings,
    /// Where webhook events go (`room_started`, `participant_joined`, …).
    pub events: Arc<dyn crate::webhooks::EventSink>,
    /// Operator API keys with scopes ([`crate::keys`]).
    pub keys: Arc<dyn crate::keys::KeyStore>,
    /// The organisation's members and the PIN hashes.
    pub members: Arc<dyn crate::members::MemberStore>,
    /// The key PINs are hashed with ([`crate::pins::PinKey::derive`]).
    pub pin_key: crate::pins::PinKey,
}

/// Settings the handlers read, from the binary's configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// IANA zone a room's schedule is in when its request names none, and
    /// in which times are shown.
    pub time_zone: String,
    /// How long before a window's start sessions may open (speakers
    /// sound-checking, listeners settling in); earlier gets 425.
    pub early_join_grace_s: u64,
    /// Brute-force limits of `POST /v1/pin-join`.
    pub pin_limits: crate::limits::PinLimits,
    /// Per-IP limits on session creation and token minting.
    pub request_limits: crate::limits::RequestLimits,
}

/// Default [`Settings::early_join_grace_s`]: ten minutes.
pub const DEFAULT_EARLY_JOIN_GRACE_S: u64 = 600;

impl Default for Settings {
    fn default() -> Self {
        Self {
            time_zone: "UTC".to_owned(),
            early_join_grace_s: DEFAULT_EARLY_JOIN_GRACE_S,
            pin_limits: crate::limits::PinLimits::default(),
            request_limits: crate::limits::RequestLimits::default(),
        }
    }
}

impl FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// What the handlers see: the binary's [`AppState`] plus the rooms'
/// control-plane state ([`Hub`]), which the router builds itself so that
/// the binary has nothing to wire up.
#[derive(Clone)]
pub struct RouterState {
    pub app: AppState,
    pub hub: Hub,
    /// `/v1/openapi.json`, rendered once from the routes.
    pub document: openapi::Document,
    /// Rate limits and lockouts of `POST /v1/pin-join`.
    pub pin_guard: Arc<crate::limits::PinGuard>,
}

impl FromRef<RouterState> for Arc<crate::limits::PinGuard> {
    fn from_ref(state: &RouterState) -> Self {
        state.pin_guard.clone()
    }
}

impl FromRef<RouterState> for AppState {
    fn from_ref(state: &RouterState) -> Self {
        state.app.clone()
    }
}

impl FromRef<RouterState> for Hub {
    fn from_ref(state: &RouterState) -> Self {
        state.hub.clone()
    }
}

impl FromRef<RouterState> for openapi::Document {
    fn from_ref(state: &RouterState) -> Self {
        state.document.clone()
    }
}

impl FromRef<RouterState> for Auth {
    fn from_ref(state: &RouterState) -> Self {
        state.app.auth.clone()
    }
}

/// The whole HTTP API, ready for `axum::serve`.
///
/// Also spawns the task that feeds media events (speaking, closed sessions)
/// into the room state, so it must be called inside a tokio runtime. Build
/// one router per [`AppState`]: each has its own rooms' state.
pub fn router(state: AppState) -> Router {
    router_with_hub(state, Hub::default())
}

/// [`router`] over a [`Hub`] the caller keeps too: the binary hands the
/// same one to its [`crate::scheduler::Scheduler`].
pub fn router_with_hub(state: AppState, hub: Hub) -> Router {
    hub::follow_media(&hub, state.media.subscribe());
    hub::count_audience(&hub, hub::AUDIENCE_EVERY);
    attendance::follow_media(
        state.attendance.clone(),
        state.events.clone(),
        state.media.subscribe(),
    );
    // Every route is registered through `routes!`, from the handler's own
    // `#[utoipa::path]`: the OpenAPI document cannot miss a route or name
    // one that does not exist.
    // Per-IP rate limits ([`crate::throttle`]) as route layers: refused
    // before extraction, auth or any store access.
    let guard = Arc::new(crate::limits::RequestGuard::new(
        state.settings.request_limits,
    ));
    let sessions_limited =
        || middleware::from_fn_with_state(guard.clone(), throttle::limit_sessions);
    let minting_limited = || middleware::from_fn_with_state(guard.clone(), throttle::limit_minting);
    let (whep_schemas, whep_paths, whep_routes) = routes!(sessions::whep);
    let open = OpenApiRouter::new()
        .routes((
            whep_schemas,
            whep_paths,
            whep_routes.layer(sessions_limited()),
        ))
        .routes(routes!(sessions::delete, sessions::patch))
        .layer(state.cors.open_layer());
    let (org_schemas, org_paths, org_routes) = routes!(org::list, org::put);
    let (members_schemas, members_paths, members_routes) = routes!(members::list, members::put);
    let configured = OpenApiRouter::new()
        .routes(routes!(rooms::create, rooms::list))
        .routes(routes!(rooms::get, rooms::delete))
        .routes({
            let (schemas, paths, routes) = routes!(rooms::mint_token);
            (schemas, paths, routes.layer(minting_limited()))
        })
        .routes(routes!(rooms::occurrences))
        .routes(routes!(rooms::summary))
        .routes(routes!(attendance::json))
        .routes(routes!(attendance::csv))
        .routes(routes!(reach::json))
        .routes(routes!(reach::csv))
        .routes({
            let (schemas, paths, routes) = routes!(sessions::whip);
            (schemas, paths, routes.layer(sessions_limited()))
        })
        .routes({
            let (schemas, paths, routes) = routes!(sessions::join);
            (schemas, paths, routes.layer(sessions_limited()))
        })
        .routes(routes!(socket::events))
        .routes(routes!(participants::list))
        .routes(routes!(participants::remove))
        .routes(routes!(participants::act))
        .routes(routes!(participants::mute_all))
        .routes(routes!(participants::lock))
        .routes(routes!(participants::unlock))
        .routes(routes!(participants::end))
        .routes((
            org_schemas,
            org_paths,
            org_routes.layer(DefaultBodyLimit::max(org::ORG_BODY_LIMIT)),
        ))
        .routes(routes!(org::get))
        .routes(routes!(openapi::document))
        // Operator API keys (crate::keys), organisation-wide operators only.
        .routes({
            // Listing keys is not limited; creating one is (one method
            // router holds both, so the layer looks at the method).
            let (schemas, paths, routes) = routes!(keys::create, keys::list);
            (
                schemas,
                paths,
                routes.layer(middleware::from_fn_with_state(
                    guard.clone(),
                    throttle::limit_minting_posts,
                )),
            )
        })
        .routes(routes!(keys::revoke))
        // Members, PINs, invites and PIN join.
        .routes((
            members_schemas,
            members_paths,
            members_routes.layer(DefaultBodyLimit::max(members::MEMBERS_BODY_LIMIT)),
        ))
        .routes(routes!(members::get))
        .routes({
            let (schemas, paths, routes) = routes!(pins::issue);
            (schemas, paths, routes.layer(minting_limited()))
        })
        .routes(routes!(pins::join))
        .routes({
            let (schemas, paths, routes) = routes!(invites::invite);
            (schemas, paths, routes.layer(minting_limited()))
        })
        .layer(state.cors.configured_layer());
    let (router, api) = OpenApiRouter::with_openapi(openapi::base())
        .merge(open)
        .merge(configured)
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .split_for_parts();
    let document = openapi::Document::new(&api);
    router
        .merge(pages::routes())
        .fallback(problem::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(problem::normalize))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(RouterState {
            pin_guard: Arc::new(crate::limits::PinGuard::new(
                state.settings.pin_limits.clone(),
            )),
            app: state,
            hub,
            document,
        })
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness",
    responses(
        (status = 200, description = "ok", body = String, content_type = "text/plain"),
    )
)]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness, for a load balancer or a Kubernetes `readinessProbe`: 503 while
/// the server drains (after SIGTERM), so that new clients go elsewhere while
/// `/healthz` stays 200 and the open sessions finish.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness: takes new sessions",
    responses(
        (status = 200, description = "ready", body = String, content_type = "text/plain"),
        (status = 503, description = "draining: no new sessions", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<&'static str, problem::ApiError> {
    if state.media.accepting() {
        Ok("ready")
    } else {
        Err(crate::backend::MediaError::Draining.into())
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Text exposition format", body = String, content_type = "text/plain"),
    )
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = (state.metrics)();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// One span per request with method and path only: the query may hold a
/// room token (`?token=`), so the full URI is never recorded.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
}
