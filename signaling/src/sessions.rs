//! WHIP, WHEP and join: one SDP offer in, one answer out, one session URL.
//!
//! All three are the same exchange (RFC 9725 for WHIP; WHEP is its mirror):
//! `POST` an `application/sdp` offer with a bearer token, get `201 Created`,
//! the answer, and `Location: /v1/sessions/{id}`. They differ only in the
//! [`SessionKind`] handed to the media side and in who may ask ([`permits`]).
//!
//! Checks run in this order, so each status means one thing: token present
//! and valid (401); body is an SDP offer (415, 413, 400); token is for this
//! room (403); the room exists (404); the role may do this (403); then the
//! media side decides (400/406 for the offer, 503 when full or stopped).
//!
//! Before the media side is asked, the room must admit the caller ([`Hub::admit`]):
//! 410 once the room has ended, 423 while it is locked (hosts excepted). A
//! session that opens is registered in the room's roster (event `joined`);
//! a rally listener's `/join` session starts off stage, server-muted, until
//! a host promotes it.
//!
//! Sessions have no media state here. `DELETE /v1/sessions/{id}` forwards to the
//! media driver, and the unguessable id is the capability: whoever got the
//! answer may hang up, with no token (a browser tab closing mid-event may
//! have lost it). Trickle ICE is not offered — the server is ICE-lite and
//! its candidates are in the answer — so `PATCH` is 405.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::Grant;
use crate::backend::{
    ListenProfile, OpenSession, Role, Room, RoomKind, RoomStatus, SessionKind, SessionRecord,
    Traffic,
};
use crate::events::Participant;
use crate::extract::{APPLICATION_SDP, SdpBody};
use crate::hub::{Hub, Refusal};
use crate::ids::is_session_id;
use crate::problem::ApiError;
use crate::rooms::find_in_scope;
use crate::schedule::Schedule;
use crate::timestamp::unix_now;
use crate::webhooks::{self, WebhookEvent};

/// Which roles may open which kind of session.
///
/// | session        | host | speaker | participant | listener       |
/// |----------------|------|---------|-------------|----------------|
/// | WHIP (publish) | yes  | yes     | no          | no             |
/// | WHEP (listen)  | yes  | yes     | yes         | yes            |
/// | join           | yes  | yes     | yes         | rally only (*) |
///
/// (*) A rally's audience may hold a sendrecv session so that a host can
/// bring it on stage without a new offer; it starts off stage
/// ([`starts_on_stage`]). In a bridge, listeners only listen.
pub fn permits(kind: SessionKind, role: Role, room: RoomKind) -> bool {
    match kind {
        SessionKind::Publish => matches!(role, Role::Host | Role::Speaker),
        SessionKind::Listen => true,
        SessionKind::Join => role != Role::Listener || room == RoomKind::Rally,
    }
}

/// Whether a new session's audio may reach the mix: not a WHEP session
/// (it sends none), not a rally listener's `/join` (audience, until
/// promoted); every other sending session is on stage.
pub fn starts_on_stage(kind: SessionKind, role: Role, room: RoomKind) -> bool {
    match kind {
        SessionKind::Publish => true,
        SessionKind::Listen => false,
        SessionKind::Join => !(role == Role::Listener && room == RoomKind::Rally),
    }
}

/// `POST /v1/rooms/{id}/whip`
#[utoipa::path(
    post,
    path = "/v1/rooms/{id}/whip",
    tag = "sessions",
    summary = "Publish audio (WHIP, RFC 9725)",
    security(("bearer" = [])),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer (non-trickle)"),
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 201, description = "SDP answer; Location: /v1/sessions/{session}", body = String, content_type = "application/sdp"),
        (status = 400, description = "malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 406, description = "the offer cannot be answered", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 410, description = "the room has ended", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "wrong Content-Type", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 423, description = "the room is locked", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 425, description = "too early: the room has not opened", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn whip(
    state: State<AppState>,
    hub: State<Hub>,
    room: Path<String>,
    grant: Grant,
    offer: SdpBody,
) -> Result<Response, ApiError> {
    open(state, hub, room, grant, offer, (SessionKind::Publish, None)).await
}

/// `POST /v1/rooms/{id}/whep[?profile=standard|low]`
#[utoipa::path(
    post,
    path = "/v1/rooms/{id}/whep",
    tag = "sessions",
    summary = "Listen to the program (WHEP)",
    security(("bearer" = [])),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer (non-trickle)"),
    params(("id" = String, Path, description = "Room id"), ("profile" = Option<crate::backend::ListenProfile>, Query, description = "standard (default) or low for 3G"), ("token" = Option<String>, Query, description = "room token, when no Authorization header can be sent")),
    responses(
        (status = 201, description = "SDP answer; Location: /v1/sessions/{session}", body = String, content_type = "application/sdp"),
        (status = 400, description = "malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 406, description = "the offer cannot be answered", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 410, description = "the room has ended", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "wrong Content-Type", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 423, description = "the room is locked", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 425, description = "too early: the room has not opened", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn whep(
    state: State<AppState>,
    hub: State<Hub>,
    room: Path<String>,
    uri: Uri,
    grant: Grant,
    offer: SdpBody,
) -> Result<Response, ApiError> {
    let profile = profile_of(&uri)?;
    open(
        state,
        hub,
        room,
        grant,
        offer,
        (SessionKind::Listen, profile),
    )
    .await
}

#[derive(Deserialize)]
struct ProfileQuery {
    profile: Option<ListenProfile>,
}

/// The `profile` query parameter, if given (other parameters, like `token`,
/// pass); without it the room's default applies.
fn profile_of(uri: &Uri) -> Result<Option<ListenProfile>, ApiError> {
    let Query(q) = Query::<ProfileQuery>::try_from_uri(uri).map_err(|_| {
        ApiError::BadRequest("the profile parameter must be `standard` or `low`".into())
    })?;
    Ok(q.profile)
}

/// `POST /v1/rooms/{id}/join`
#[utoipa::path(
    post,
    path = "/v1/rooms/{id}/join",
    tag = "sessions",
    summary = "Talk and hear mix-minus (bridge) or join a rally audience",
    security(("bearer" = [])),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer (non-trickle)"),
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 201, description = "SDP answer; Location: /v1/sessions/{session}", body = String, content_type = "application/sdp"),
        (status = 400, description = "malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 406, description = "the offer cannot be answered", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 410, description = "the room has ended", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "wrong Content-Type", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 423, description = "the room is locked", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 425, description = "too early: the room has not opened", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn join(
    state: State<AppState>,
    hub: State<Hub>,
    room: Path<String>,
    grant: Grant,
    offer: SdpBody,
) -> Result<Response, ApiError> {
    open(state, hub, room, grant, offer, (SessionKind::Join, None)).await
}

async fn open(
    State(state): State<AppState>,
    State(hub): State<Hub>,
    Path(room): Path<String>,
    grant: Grant,
    SdpBody(offer): SdpBody,
    (kind, profile): (SessionKind, Option<ListenProfile>),
) -> Result<Response, ApiError> {
    grant.check_room(&room)?;
    let room = find_in_scope(&state, &grant.scope, &room).await?;
    let profile = profile.unwrap_or(room.profile);
    if !permits(kind, grant.role, room.kind) {
        return Err(ApiError::Forbidden(refusal(kind, grant.role)));
    }
    let on_stage = starts_on_stage(kind, grant.role, room.kind);
    let now = jiff::Timestamp::now();
    let held = by_schedule(&room, on_stage, state.settings.early_join_grace_s, now)?;
    hub.admit(&room.id, grant.role)?;
    if let Some(capacity) = room.capacity
        && hub.participants(&room.id).len() >= capacity as usize
    {
        return Err(ApiError::RoomFull(capacity));
    }
    let request = OpenSession {
        room: room.id.clone(),
        room_kind: room.kind,
        kind,
        offer,
        name: grant.name.clone(),
        role: grant.role,
        profile,
    };
    let opened = state.media.open_session(request).await?;
    let record = SessionRecord {
        session: opened.session.clone(),
        room: room.id.clone(),
        name: grant.name.clone(),
        member: grant.member.clone(),
        unit: grant.unit.clone(),
        role: grant.role,
        kind,
        joined_at: unix_now(),
        left_at: None,
        leave_reason: None,
        traffic: Traffic::default(),
    };
    let participant = Participant {
        id: opened.session.clone(),
        name: grant.name,
        role: grant.role,
        kind,
        muted: false,
        speaking: false,
        hand_raised: false,
        on_stage,
    };
    register(&state, &hub, &room.id, participant, record, held).await?;
    let location =
        HeaderValue::try_from(format!("/v1/sessions/{}", opened.session)).map_err(|_| {
            ApiError::Internal("the media driver returned an unusable session id".into())
        })?;
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(APPLICATION_SDP),
        ),
        (header::LOCATION, location),
    ];
    Ok((StatusCode::CREATED, headers, opened.answer).into_response())
}

/// What the room's schedule says of a session opening at `now`: 410 once
/// the room has ended or its series is over; before the window minus
/// `grace_s`, 425 naming the start, except for the audience of a lobby
/// room, who may wait. `Ok(true)`: the session sends audio into a lobby
/// before the start, so it is held muted until the scheduler opens the
/// window and the listeners waiting there hear nothing before.
fn by_schedule(
    room: &Room,
    talks: bool,
    grace_s: u64,
    now: jiff::Timestamp,
) -> Result<bool, ApiError> {
    if matches!(room.status, RoomStatus::Ended | RoomStatus::Missed) {
        return Err(ApiError::Ended);
    }
    let schedule = Schedule::of(room)
        .map_err(|e| ApiError::Internal(format!("room {} has a bad schedule: {e}", room.id)))?;
    let Some(schedule) = schedule else {
        return Ok(false);
    };
    let Some(window) = schedule.current_or_next(now) else {
        return Err(ApiError::Ended);
    };
    if window.start <= now {
        return Ok(false);
    }
    if room.lobby && !talks {
        return Ok(false);
    }
    let grace = jiff::SignedDuration::from_secs(i64::try_from(grace_s).unwrap_or(i64::MAX));
    let opens_for_joining = window.start.checked_sub(grace).unwrap_or(window.start);
    if now < opens_for_joining {
        return Err(ApiError::TooEarly {
            starts_at: window.start,
            opens_for_joining,
        });
    }
    Ok(room.lobby)
}

/// Records a just-opened session's attendance and puts it in the roster,
/// muting it first if it starts off stage. If any of that fails, or the
/// room was locked or ended meanwhile, the session is closed again: the
/// client gets an error, not a session that nobody accounts for.
async fn register(
    state: &AppState,
    hub: &Hub,
    room: &str,
    participant: Participant,
    record: SessionRecord,
    held: bool,
) -> Result<(), ApiError> {
    let session = participant.id.clone();
    let joined = WebhookEvent::participant_joined(&record);
    let result = match state.attendance.record_join(record).await {
        Ok(()) => {
            webhooks::emit(&state.events, vec![joined]).await;
            enter(state, hub, room, participant, held).await
        }
        Err(e) => Err(e.into()),
    };
    if result.is_err() {
        let _ = state.media.close_session(&session).await;
    }
    result
}

async fn enter(
    state: &AppState,
    hub: &Hub,
    room: &str,
    participant: Participant,
    held: bool,
) -> Result<(), ApiError> {
    if participant.sends_audio() && (participant.media_muted() || held) {
        state.media.set_muted(&participant.id, true).await?;
    }
    Ok(hub.join(room, participant)?)
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Locked => ApiError::Locked,
            Refusal::Ended => ApiError::Ended,
        }
    }
}

fn refusal(kind: SessionKind, role: Role) -> String {
    let role = format!("{role:?}").to_lowercase();
    match kind {
        SessionKind::Publish => {
            format!("a {role} token cannot publish; WHIP needs host or speaker")
        }
        SessionKind::Join => {
            format!("a {role} token cannot join a bridge; use WHEP to listen")
        }
        SessionKind::Listen => format!("a {role} token cannot listen"),
    }
}

/// `DELETE /v1/sessions/{id}` (event `left`, reason `left`).
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}",
    tag = "sessions",
    summary = "Hang up a session (the id is the capability)",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 204, description = "Ended"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    State(hub): State<Hub>,
    Path(session): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !is_session_id(&session) {
        return Err(ApiError::NotFound("session"));
    }
    let closed = state.media.close_session(&session).await?;
    hub.leave(&session, "left");
    if closed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("session"))
    }
}

/// `PATCH /v1/sessions/{id}`: no trickle ICE, no ICE restart.
#[utoipa::path(
    patch,
    path = "/v1/sessions/{id}",
    tag = "sessions",
    summary = "Trickle ICE: not offered (ICE-lite)",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 405, description = "Method not allowed", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn patch() -> ApiError {
    ApiError::MethodNotAllowed("DELETE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_table() {
        use Role::*;
        use SessionKind::*;
        let expect = [
            (
                Publish,
                [true, true, false, false],
                [true, true, false, false],
            ),
            (Listen, [true, true, true, true], [true, true, true, true]),
            (Join, [true, true, true, true], [true, true, true, false]),
        ];
        for (kind, rally, bridge) in expect {
            for (room, allowed) in [(RoomKind::Rally, rally), (RoomKind::Bridge, bridge)] {
                for (role, ok) in [Host, Speaker, Participant, Listener]
                    .into_iter()
                    .zip(allowed)
                {
                    assert_eq!(permits(kind, role, room), ok, "{kind:?} {role:?} {room:?}");
                }
            }
        }
    }

    #[test]
    fn who_starts_on_stage() {
        use RoomKind::*;
        assert!(!starts_on_stage(SessionKind::Join, Role::Listener, Rally));
        assert!(starts_on_stage(SessionKind::Join, Role::Speaker, Rally));
        assert!(starts_on_stage(
            SessionKind::Join,
            Role::Participant,
            Bridge
        ));
        assert!(starts_on_stage(SessionKind::Publish, Role::Host, Rally));
        assert!(!starts_on_stage(SessionKind::Listen, Role::Host, Bridge));
    }

    #[test]
    fn refusals_name_the_role() {
        let text = refusal(SessionKind::Join, Role::Listener);
        assert!(text.contains("listener"), "{text}");
    }
}
