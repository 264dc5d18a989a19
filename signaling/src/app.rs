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
//! | `/v1/org`, `/v1/org/{id}`             | GET PUT         | operator              | configured |
//! | `/v1/members`, `/v1/members/{id}`     | GET PUT         | operator              | configured |
//! | `/v1/pins`                            | POST            | operator              | configured |
//! | `/v1/rooms/{id}/invite`               | GET             | operator              | configured |
//! | `/v1/pin-join`                        | POST            | none (rate limited)   | configured |
//! | `/healthz`, `/metrics`                | GET             | none                  | none       |

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::header;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use crate::auth::Auth;
use crate::backend::{AttendanceStore, MediaControl, OrgStore, RoomStore};
use crate::cors::CorsConfig;
use crate::hub::{self, Hub};
use crate::{
    attendance, invites, members, org, participants, pins, problem, rooms, sessions, socket,
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
    /// Brute-force limits of `POST /v1/pin-join`.
    pub pin_limits: crate::limits::PinLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            time_zone: "UTC".to_owned(),
            pin_limits: crate::limits::PinLimits::default(),
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
    let hub = Hub::default();
    hub::follow_media(&hub, state.media.subscribe());
    attendance::follow_media(state.attendance.clone(), state.media.subscribe());
    let open = Router::new()
        .route("/v1/rooms/{id}/whep", post(sessions::whep))
        .route(
            "/v1/sessions/{id}",
            axum::routing::delete(sessions::delete).patch(sessions::patch),
        )
        .layer(state.cors.open_layer());
    let configured = Router::new()
        .route("/v1/rooms", post(rooms::create).get(rooms::list))
        .route("/v1/rooms/{id}", get(rooms::get).delete(rooms::delete))
        .route("/v1/rooms/{id}/tokens", post(rooms::mint_token))
        .route("/v1/rooms/{id}/attendance", get(attendance::json))
        .route("/v1/rooms/{id}/attendance.csv", get(attendance::csv))
        .route("/v1/rooms/{id}/whip", post(sessions::whip))
        .route("/v1/rooms/{id}/join", post(sessions::join))
        .route("/v1/rooms/{id}/events", get(socket::events))
        .route("/v1/rooms/{id}/participants", get(participants::list))
        .route(
            "/v1/rooms/{id}/participants/{pid}",
            axum::routing::delete(participants::remove),
        )
        .route(
            "/v1/rooms/{id}/participants/{pid}/{action}",
            post(participants::act),
        )
        .route("/v1/rooms/{id}/mute-all", post(participants::mute_all))
        .route("/v1/rooms/{id}/lock", post(participants::lock))
        .route("/v1/rooms/{id}/unlock", post(participants::unlock))
        .route("/v1/rooms/{id}/end", post(participants::end))
        .route(
            "/v1/org",
            get(org::list)
                .put(org::put)
                .layer(DefaultBodyLimit::max(org::ORG_BODY_LIMIT)),
        )
        .route("/v1/org/{id}", get(org::get))
        // Members, PINs, invites and PIN join.
        .route(
            "/v1/members",
            get(members::list)
                .put(members::put)
                .layer(DefaultBodyLimit::max(members::MEMBERS_BODY_LIMIT)),
        )
        .route("/v1/members/{id}", get(members::get))
        .route("/v1/pins", post(pins::issue))
        .route("/v1/pin-join", post(pins::join))
        .route("/v1/rooms/{id}/invite", get(invites::invite))
        .layer(state.cors.configured_layer());
    Router::new()
        .merge(open)
        .merge(configured)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
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
        })
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = (state.metrics)();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// One span per request with method and path only: the query may hold a
/// room token (`?token=`), so the full URI is never recorded.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
}
