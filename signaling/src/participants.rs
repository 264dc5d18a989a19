//! The REST face of moderation, for consoles and scripts that do not hold a
//! socket: the roster, and the same commands as the event socket, through
//! the same [`execute`].
//!
//! Every route needs a host token of the room or the operator key. Checks
//! run in the order of the session routes: 401, 403 (another room), 404
//! (room), 403 (not a host), then 404 for an unknown participant.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::app::AppState;
use crate::auth::Grant;
use crate::backend::Role;
use crate::events::{Command, Participant};
use crate::hub::Hub;
use crate::moderation::{Actor, execute};
use crate::problem::ApiError;
use crate::rooms::find_in_scope;

/// The room id, once the caller is known to be a host of it.
pub(crate) async fn hosted(
    state: &AppState,
    grant: &Grant,
    room: &str,
) -> Result<String, ApiError> {
    grant.check_room(room)?;
    let room = find_in_scope(state, &grant.scope, room).await?.id;
    if grant.role != Role::Host {
        return Err(ApiError::Forbidden(
            "moderation needs a host token of this room or the operator key".to_owned(),
        ));
    }
    Ok(room)
}

fn host() -> Actor {
    Actor {
        role: Role::Host,
        session: None,
    }
}

/// `GET /v1/rooms/{id}/participants`
#[utoipa::path(
    get,
    path = "/v1/rooms/{id}/participants",
    tag = "moderation",
    summary = "The roster",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 200, description = "Participants", body = [crate::events::Participant]),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    State(hub): State<Hub>,
    Path(room): Path<String>,
    grant: Grant,
) -> Result<Json<Vec<Participant>>, ApiError> {
    let room = hosted(&state, &grant, &room).await?;
    Ok(Json(hub.participants(&room)))
}

/// `POST /v1/rooms/{id}/participants/{pid}/{action}`, action one of
/// `mute`, `unmute`, `promote`, `demote`.
#[utoipa::path(
    post,
    path = "/v1/rooms/{id}/participants/{pid}/{action}",
    tag = "moderation",
    summary = "Mute, unmute, promote or demote a participant",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("pid" = String, Path, description = "Participant (session) id"), ("action" = String, Path, description = "mute, unmute, promote or demote")),
    responses(
        (status = 200, description = "The participant after the change", body = crate::events::Participant),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn act(
    State(state): State<AppState>,
    State(hub): State<Hub>,
    Path((room, id, action)): Path<(String, String, String)>,
    grant: Grant,
) -> Result<Json<Participant>, ApiError> {
    let room = hosted(&state, &grant, &room).await?;
    let participant = Some(id);
    let command = match action.as_str() {
        "mute" => Command::Mute { participant },
        "unmute" => Command::Unmute { participant },
        "promote" => Command::Promote { participant },
        "demote" => Command::Demote { participant },
        _ => return Err(ApiError::NotFound("route")),
    };
    match execute(&state, &hub, &room, &host(), command).await? {
        Some(participant) => Ok(Json(participant)),
        None => Err(ApiError::NotFound("participant")),
    }
}

/// `DELETE /v1/rooms/{id}/participants/{pid}`: ends the session.
#[utoipa::path(
    delete,
    path = "/v1/rooms/{id}/participants/{pid}",
    tag = "moderation",
    summary = "Remove a participant",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("pid" = String, Path, description = "Participant (session) id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    State(hub): State<Hub>,
    Path((room, id)): Path<(String, String)>,
    grant: Grant,
) -> Result<StatusCode, ApiError> {
    let room = hosted(&state, &grant, &room).await?;
    let command = Command::Remove {
        participant: Some(id),
    };
    execute(&state, &hub, &room, &host(), command).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/rooms/{id}/{mute-all|lock|unlock|end}`.
async fn room_command(
    state: AppState,
    hub: Hub,
    room: String,
    grant: Grant,
    command: Command,
) -> Result<StatusCode, ApiError> {
    let room = hosted(&state, &grant, &room).await?;
    execute(&state, &hub, &room, &host(), command).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/rooms/{id}/mute-all`: mutes everyone but the hosts.
#[utoipa::path(
    post,
    path = "/v1/rooms/{id}/mute-all",
    tag = "moderation",
    summary = "Mute everyone but hosts",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn mute_all(
    State(state): State<AppState>,
    State(hub): State<Hub>,
    Path(room): Path<String>,
    grant: Grant,
) -> Result<StatusCode, ApiError> {
    room_command(state, hub, room, grant, Command::MuteAll).await
}

/// `POST /v1/rooms/{id}/lock`: only hosts may open new sessions (423).
#[utoipa::path(
    post,
    path = "/v1/rooms/{id}/lock",
    tag = "moderation",
    summary = "Lock the room (no new sessions but hosts)",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn lock(
    State(state): State<AppState>,
    State(hub): State<Hub>,
    Path(room): Path<String>,
    grant: Grant,
) -> Result<StatusCode, ApiError> {
    room_command(state, hub, room, grant, Command::Lock).await
}

/// `POST /v1/rooms/{id}/unlock`
#[utoipa::path(
    post,
    path = "/v1/rooms/{id}/unlock",
    tag = "moderation",
    summary = "Unlock the room",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn unlock(
    State(state): State<AppState>,
    State(hub): State<Hub>,
    Path(room): Path<String>,
    grant: Grant,
) -> Result<StatusCode, ApiError> {
    room_command(state, hub, room, grant, Command::Unlock).await
}

/// `POST /v1/rooms/{id}/end`: closes every session; new ones get 410.
#[utoipa::path(
    post,
    path = "/v1/rooms/{id}/end",
    tag = "moderation",
    summary = "End the room: every session closes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn end(
    State(state): State<AppState>,
    State(hub): State<Hub>,
    Path(room): Path<String>,
    grant: Grant,
) -> Result<StatusCode, ApiError> {
    room_command(state, hub, room, grant, Command::End).await
}
