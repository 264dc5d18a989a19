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
//! Sessions have no state here. `DELETE /v1/sessions/{id}` forwards to the
//! media driver, and the unguessable id is the capability: whoever got the
//! answer may hang up, with no token (a browser tab closing mid-event may
//! have lost it). Trickle ICE is not offered — the server is ICE-lite and
//! its candidates are in the answer — so `PATCH` is 405.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::auth::Grant;
use crate::backend::{OpenSession, Role, SessionKind};
use crate::extract::{APPLICATION_SDP, SdpBody};
use crate::ids::is_session_id;
use crate::problem::ApiError;
use crate::rooms::find;

/// Which roles may open which kind of session.
///
/// | session        | host | speaker | participant | listener |
/// |----------------|------|---------|-------------|----------|
/// | WHIP (publish) | yes  | yes     | no          | no       |
/// | WHEP (listen)  | yes  | yes     | yes         | yes      |
/// | join           | yes  | yes     | yes         | no       |
pub fn permits(kind: SessionKind, role: Role) -> bool {
    match kind {
        SessionKind::Publish => matches!(role, Role::Host | Role::Speaker),
        SessionKind::Listen => true,
        SessionKind::Join => !matches!(role, Role::Listener),
    }
}

/// `POST /v1/rooms/{id}/whip`
pub async fn whip(
    state: State<AppState>,
    room: Path<String>,
    grant: Grant,
    offer: SdpBody,
) -> Result<Response, ApiError> {
    open(state, room, grant, offer, SessionKind::Publish).await
}

/// `POST /v1/rooms/{id}/whep`
pub async fn whep(
    state: State<AppState>,
    room: Path<String>,
    grant: Grant,
    offer: SdpBody,
) -> Result<Response, ApiError> {
    open(state, room, grant, offer, SessionKind::Listen).await
}

/// `POST /v1/rooms/{id}/join`
pub async fn join(
    state: State<AppState>,
    room: Path<String>,
    grant: Grant,
    offer: SdpBody,
) -> Result<Response, ApiError> {
    open(state, room, grant, offer, SessionKind::Join).await
}

async fn open(
    State(state): State<AppState>,
    Path(room): Path<String>,
    grant: Grant,
    SdpBody(offer): SdpBody,
    kind: SessionKind,
) -> Result<Response, ApiError> {
    grant.check_room(&room)?;
    let room = find(&state, &room).await?;
    if !permits(kind, grant.role) {
        return Err(ApiError::Forbidden(refusal(kind, grant.role)));
    }
    let request = OpenSession {
        room: room.id,
        kind,
        offer,
        name: grant.name,
        role: grant.role,
    };
    let opened = state.media.open_session(request).await?;
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

fn refusal(kind: SessionKind, role: Role) -> String {
    let role = format!("{role:?}").to_lowercase();
    match kind {
        SessionKind::Publish => {
            format!("a {role} token cannot publish; WHIP needs host or speaker")
        }
        SessionKind::Join => format!("a {role} token cannot join; use WHEP to listen"),
        SessionKind::Listen => format!("a {role} token cannot listen"),
    }
}

/// `DELETE /v1/sessions/{id}`
pub async fn delete(
    State(state): State<AppState>,
    Path(session): Path<String>,
) -> Result<StatusCode, ApiError> {
    if is_session_id(&session) && state.media.close_session(&session).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("session"))
    }
}

/// `PATCH /v1/sessions/{id}`: no trickle ICE, no ICE restart.
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
            (Publish, [true, true, false, false]),
            (Listen, [true, true, true, true]),
            (Join, [true, true, true, false]),
        ];
        for (kind, allowed) in expect {
            for (role, ok) in [Host, Speaker, Participant, Listener]
                .into_iter()
                .zip(allowed)
            {
                assert_eq!(permits(kind, role), ok, "{kind:?} {role:?}");
            }
        }
    }

    #[test]
    fn refusals_name_the_role() {
        let text = refusal(SessionKind::Join, Role::Listener);
        assert!(text.contains("listener"), "{text}");
    }
}
