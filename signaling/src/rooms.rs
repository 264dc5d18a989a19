//! The operator API: create, list, get and delete rooms; mint room tokens.
//!
//! Every handler takes [`Operator`], so none runs without an operator key,
//! and each keeps to the key's [`Scope`]: a scoped key lists, reads, deletes
//! and mints for rooms in its subtree only (404 for the others, as if they
//! did not exist) and creates rooms only under a unit of its subtree (403).
//! Deleting a room removes it from the store first (no new session can open
//! in it) and then ends its live sessions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::Operator;
use crate::backend::{NewRoom, Occurrence, Role, Room, RoomStatus};
use crate::extract::JsonBody;
use crate::hub::Hub;
use crate::ids::is_room_id;
use crate::problem::ApiError;
use crate::schedule::{Schedule, first_overlap};
use crate::scope::{Scope, in_subtree, room_in_scope};
use crate::timestamp::{rfc3339, unix_now};
use crate::token::Claims;
use crate::webhooks::{self, WebhookEvent};

/// Longest room name, in characters.
pub const MAX_ROOM_NAME: usize = 200;
/// Longest display name in a token, in characters.
pub const MAX_DISPLAY_NAME: usize = 100;
/// Token lifetime when the request names none: one day, long enough for an
/// event, short enough that a leaked link goes stale.
pub const DEFAULT_TTL_S: u64 = 86_400;
/// Longest token lifetime: 30 days (tokens cannot be revoked, only rooms).
pub const MAX_TTL_S: u64 = 30 * 86_400;

/// `POST /v1/rooms/{id}/tokens` body.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub role: Role,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// `POST /v1/rooms/{id}/tokens` answer.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub token: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

#[utoipa::path(
    post,
    path = "/v1/rooms",
    tag = "rooms",
    summary = "Create a room (optionally scheduled, for a unit)",
    security(("bearer" = [])),
    request_body(content = crate::backend::NewRoom, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; Location: /v1/rooms/{id}", body = RoomView),
        (status = 400, description = "malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "conflict", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "wrong Content-Type", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    State(hub): State<Hub>,
    operator: Operator,
    JsonBody(room): JsonBody<NewRoom>,
) -> Result<Response, ApiError> {
    may_create_under(&state, &operator.scope, room.unit.as_deref()).await?;
    let room = checked_room(&state, room).await?;
    let room = state.rooms.create_room(room).await?;
    tracing::info!(room = %room.id, kind = ?room.kind, "room created");
    hub.schedule_changed();
    if room.status == RoomStatus::Open {
        webhooks::emit(&state.events, vec![WebhookEvent::room_started(&room)]).await;
    }
    let location = HeaderValue::try_from(format!("/v1/rooms/{}", room.id))
        .map_err(|_| ApiError::Internal(format!("room id {:?} is not a header", room.id)))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(RoomView::new(room, jiff::Timestamp::now())),
    )
        .into_response())
}

/// 403 unless `scope` may create a room under `unit` (`None`: an
/// organisation-wide room, for organisation-wide operators only). A unit
/// outside the subtree — existing or not — is 403 for a scoped key, so it
/// learns nothing about other districts' units.
async fn may_create_under(
    state: &AppState,
    scope: &Scope,
    unit: Option<&str>,
) -> Result<(), ApiError> {
    if scope.covers_unit(&*state.org, unit).await? {
        return Ok(());
    }
    Err(ApiError::Forbidden(match unit {
        None => "this key is scoped to a unit: a room needs a unit within it".to_owned(),
        Some(unit) => format!("unit {unit:?} is outside this key's scope"),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/rooms",
    tag = "rooms",
    summary = "List rooms",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Rooms, oldest first", body = [RoomView]),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    operator: Operator,
) -> Result<Json<Vec<RoomView>>, ApiError> {
    let subtree = operator.scope.load_subtree(&*state.org).await?;
    let mut rooms = state.rooms.list_rooms().await?;
    rooms.retain(|r| in_subtree(subtree.as_ref(), r.unit.as_deref()));
    let now = jiff::Timestamp::now();
    Ok(Json(
        rooms.into_iter().map(|r| RoomView::new(r, now)).collect(),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/rooms/{id}",
    tag = "rooms",
    summary = "Get a room",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 200, description = "The room", body = RoomView),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
) -> Result<Json<RoomView>, ApiError> {
    let room = find_in_scope(&state, &operator.scope, &id).await?;
    Ok(Json(RoomView::new(room, jiff::Timestamp::now())))
}

/// What a room's pages show, for any holder of one of its tokens: not the
/// operator's view (no hosts, capacity or code).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RoomSummary {
    pub id: String,
    pub name: String,
    pub kind: crate::backend::RoomKind,
    pub status: RoomStatus,
    /// The room's default listening profile.
    pub profile: crate::backend::ListenProfile,
    /// Whether early listeners wait in a lobby instead of being refused.
    pub lobby: bool,
    /// The window open now or the next to open (UTC, and in the room's zone).
    pub next_starts_at: Option<jiff::Timestamp>,
    pub next_ends_at: Option<jiff::Timestamp>,
    pub next_starts_at_local: Option<String>,
    /// The caller: its role here and the name its token carries.
    pub role: Role,
    pub caller_name: Option<String>,
}

/// `GET /v1/rooms/{id}/summary`
#[utoipa::path(
    get,
    path = "/v1/rooms/{id}/summary",
    tag = "rooms",
    summary = "What the room's pages show: name, kind, status, next window, the caller's role",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("token" = Option<String>, Query, description = "room token")),
    responses(
        (status = 200, description = "The room, as its participants see it", body = RoomSummary),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn summary(
    State(state): State<AppState>,
    Path(id): Path<String>,
    grant: crate::auth::Grant,
) -> Result<Json<RoomSummary>, ApiError> {
    grant.check_room(&id)?;
    let room = find_in_scope(&state, &grant.scope, &id).await?;
    let view = RoomView::new(room, jiff::Timestamp::now());
    Ok(Json(RoomSummary {
        id: view.room.id,
        name: view.room.name,
        kind: view.room.kind,
        status: view.room.status,
        profile: view.room.profile,
        lobby: view.room.lobby,
        next_starts_at: view.next_starts_at,
        next_ends_at: view.next_ends_at,
        next_starts_at_local: view.next_starts_at_local,
        role: grant.role,
        caller_name: grant.name,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/rooms/{id}/occurrences",
    tag = "rooms",
    summary = "The windows of a scheduled room so far: held or missed",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 200, description = "In order of start", body = [crate::backend::Occurrence]),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn occurrences(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
) -> Result<Json<Vec<Occurrence>>, ApiError> {
    let room = find_in_scope(&state, &operator.scope, &id).await?;
    Ok(Json(state.rooms.occurrences(&room.id).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/rooms/{id}",
    tag = "rooms",
    summary = "Delete a room and end its sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    State(hub): State<Hub>,
    operator: Operator,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !operator.scope.is_organisation() {
        find_in_scope(&state, &operator.scope, &id).await?;
    }
    if !is_room_id(&id) || !state.rooms.delete_room(&id).await? {
        return Err(ApiError::NotFound("room"));
    }
    tracing::info!(room = %id, "room deleted");
    webhooks::emit(
        &state.events,
        vec![WebhookEvent::room_ended(&id, "deleted")],
    )
    .await;
    hub.forget(&id);
    if let Err(error) = state.media.close_room(&id).await {
        // The room is gone either way; sessions of a stopped engine are too.
        tracing::warn!(room = %id, %error, "could not close the room's sessions");
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/rooms/{id}/tokens",
    tag = "rooms",
    summary = "Mint a room token",
    security(("bearer" = [])),
    request_body(content = TokenRequest, content_type = "application/json"),
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 200, description = "The token", body = TokenResponse),
        (status = 400, description = "malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "wrong Content-Type", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn mint_token(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let room = find_in_scope(&state, &operator.scope, &id).await?;
    let ttl = request.ttl_s.unwrap_or(DEFAULT_TTL_S);
    if !(1..=MAX_TTL_S).contains(&ttl) {
        return Err(ApiError::Unprocessable(format!(
            "ttl_s must be between 1 and {MAX_TTL_S} seconds"
        )));
    }
    let name = match request.name {
        Some(name) => Some(checked_name(&name, MAX_DISPLAY_NAME, "name")?),
        None => None,
    };
    let now = unix_now();
    let claims = Claims {
        room: room.id,
        role: request.role,
        name,
        member: None,
        unit: None,
        exp: now + ttl,
        iat: now,
    };
    let token = state
        .auth
        .tokens()
        .mint(&claims)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(TokenResponse {
        token,
        expires_at: rfc3339(claims.exp),
    }))
}

/// The room `id`, or 404 (also for ids that cannot be room ids).
pub(crate) async fn find(state: &AppState, id: &str) -> Result<Room, ApiError> {
    if !is_room_id(id) {
        return Err(ApiError::NotFound("room"));
    }
    state
        .rooms
        .get_room(id)
        .await?
        .ok_or(ApiError::NotFound("room"))
}

/// The room `id` if it is within `scope`, else 404 like a missing room.
pub(crate) async fn find_in_scope(
    state: &AppState,
    scope: &Scope,
    id: &str,
) -> Result<Room, ApiError> {
    let room = find(state, id).await?;
    room_in_scope(&*state.org, scope, &room).await?;
    Ok(room)
}

/// Most hosts one room names.
pub const MAX_HOSTS: usize = 50;

/// `room` with its name trimmed and its zone filled in, or 422 naming what
/// is wrong: a unit that does not exist, half a window or one that ends
/// before it starts, an unknown zone, a zero capacity, a bad host.
async fn checked_room(state: &AppState, mut room: NewRoom) -> Result<NewRoom, ApiError> {
    room.name = checked_name(&room.name, MAX_ROOM_NAME, "room name")?;
    if let Some(unit) = &room.unit
        && state.org.ancestry(unit).await?.is_empty()
    {
        return Err(ApiError::Unprocessable(format!(
            "no unit {unit:?} in the organisation (PUT /v1/org first)"
        )));
    }
    match (room.starts_at, room.ends_at) {
        (None, None) => {}
        (Some(start), Some(end)) if start < end => {}
        (Some(_), Some(_)) => {
            return Err(ApiError::Unprocessable(
                "ends_at must be after starts_at".into(),
            ));
        }
        _ => {
            return Err(ApiError::Unprocessable(
                "a schedule needs both starts_at and ends_at".into(),
            ));
        }
    }
    let zone = room
        .time_zone
        .take()
        .unwrap_or_else(|| state.settings.time_zone.clone());
    if jiff::tz::TimeZone::get(&zone).is_err() {
        return Err(ApiError::Unprocessable(format!(
            "unknown time zone {zone:?}: use an IANA name such as Asia/Kolkata"
        )));
    }
    room.time_zone = Some(zone);
    if room.capacity == Some(0) {
        return Err(ApiError::Unprocessable(
            "capacity must be at least 1".into(),
        ));
    }
    if room.hosts.len() > MAX_HOSTS {
        return Err(ApiError::Unprocessable(format!(
            "at most {MAX_HOSTS} hosts"
        )));
    }
    for host in &mut room.hosts {
        *host = checked_name(host, MAX_DISPLAY_NAME, "host")?;
    }
    let schedule = Schedule::new(
        room.starts_at,
        room.ends_at,
        room.time_zone.as_deref().unwrap_or("UTC"),
        room.recurrence.as_deref(),
    )
    .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    if let Some(schedule) = &schedule
        && !room.hosts.is_empty()
    {
        no_host_conflict(state, &room.hosts, schedule).await?;
    }
    Ok(room)
}

/// 409 when one of `hosts` already hosts a room (scheduled, not over)
/// with a window overlapping one of `schedule`'s, within the horizon.
async fn no_host_conflict(
    state: &AppState,
    hosts: &[String],
    schedule: &Schedule,
) -> Result<(), ApiError> {
    let now = jiff::Timestamp::now();
    for other in state.rooms.list_rooms().await? {
        if matches!(other.status, RoomStatus::Ended | RoomStatus::Missed) {
            continue;
        }
        let Some(host) = hosts.iter().find(|h| other.hosts.contains(h)) else {
            continue;
        };
        let Ok(Some(theirs)) = Schedule::of(&other) else {
            continue;
        };
        if let Some((_, window)) = first_overlap(schedule, &theirs, now) {
            return Err(ApiError::HostConflict {
                host: host.clone(),
                room: other.id,
                start: window.start,
                end: window.end,
            });
        }
    }
    Ok(())
}

/// A room as the API shows it: as stored, plus its times in its zone and
/// its next (or current) window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RoomView {
    #[serde(flatten)]
    pub room: Room,
    /// `starts_at` in the room's `time_zone`, RFC 3339 with offset.
    pub starts_at_local: Option<String>,
    pub ends_at_local: Option<String>,
    /// The window open now or the next to open; `None` without a schedule
    /// or once the series is over.
    pub next_starts_at: Option<jiff::Timestamp>,
    pub next_ends_at: Option<jiff::Timestamp>,
    pub next_starts_at_local: Option<String>,
}

impl RoomView {
    pub fn new(room: Room, now: jiff::Timestamp) -> Self {
        let schedule = Schedule::of(&room).ok().flatten();
        let local = |t: Option<jiff::Timestamp>| Some(schedule.as_ref()?.local(t?));
        let next = schedule.as_ref().and_then(|s| s.current_or_next(now));
        Self {
            starts_at_local: local(room.starts_at),
            ends_at_local: local(room.ends_at),
            next_starts_at: next.map(|w| w.start),
            next_ends_at: next.map(|w| w.end),
            next_starts_at_local: local(next.map(|w| w.start)),
            room,
        }
    }
}

/// `name` trimmed; 422 when empty, too long or holding control characters.
pub(crate) fn checked_name(name: &str, max: usize, what: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > max || name.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(format!(
            "{what} must be 1 to {max} characters, without control characters"
        )));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(checked_name("  Rally  ", 10, "name").unwrap(), "Rally");
        assert_eq!(checked_name("", 10, "name").unwrap_err().status(), 422);
        assert_eq!(checked_name("   ", 10, "name").unwrap_err().status(), 422);
        assert_eq!(checked_name("a\nb", 10, "name").unwrap_err().status(), 422);
        assert_eq!(
            checked_name(&"é".repeat(10), 10, "name").unwrap(),
            "é".repeat(10)
        );
        assert_eq!(
            checked_name(&"é".repeat(11), 10, "name")
                .unwrap_err()
                .status(),
            422
        );
    }
}
