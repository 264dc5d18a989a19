//! `GET /v1/rooms/{id}/events`: one WebSocket per client, carrying the
//! room's events out and moderation commands in.
//!
//! The upgrade is refused like any request (problem+json) until the caller
//! is known: 401 without a valid token, 403 for another room, 404 for an
//! unknown room or a `?session=` that is not in this room. After that the
//! socket never closes because of what the client sends: a bad frame or a
//! refused command gets an `error` message and the loop goes on.
//!
//! `?session=` binds the socket to one participant, for commands on
//! oneself (mute, raise hand) and for a promotion token. The session id is
//! the capability here as on `DELETE /v1/sessions/{id}`: whoever opened the
//! session got it in `Location`, nobody else sees it except through the
//! roster of their own room.
//!
//! A listener's socket sees the audience view of the room (the stage, a
//! count of the crowd, and its own session's events: [`crate::hub`]);
//! everyone else's sees all of it.
//!
//! One task per socket: a `select!` between the next client frame and the
//! next room event. A socket that falls more than
//! [`crate::hub::ROOM_EVENTS_CAPACITY`] events behind gets a fresh `roster`
//! instead of the events it missed.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message as Frame, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::app::AppState;
use crate::auth::Grant;
use crate::events::{Command, ErrorMessage, Message};
use crate::hub::{Hub, Subscription, View};
use crate::moderation::{Actor, CommandError, execute};
use crate::problem::ApiError;
use crate::rooms::find_in_scope;

/// The query of `GET /v1/rooms/{id}/events`.
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// The caller's own session in this room. (`?token=` is read by
    /// [`Grant`]; unknown parameters are ignored.)
    #[serde(default)]
    pub session: Option<String>,
}

/// `GET /v1/rooms/{id}/events`
#[utoipa::path(
    get,
    path = "/v1/rooms/{id}/events",
    tag = "events",
    summary = "Room events and moderation commands (WebSocket upgrade)",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("session" = Option<String>, Query, description = "the caller's own session, to raise a hand"), ("token" = Option<String>, Query, description = "room token")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    State(hub): State<Hub>,
    Path(room): Path<String>,
    grant: Grant,
    Query(query): Query<EventsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    grant.check_room(&room)?;
    let room = find_in_scope(&state, &grant.scope, &room).await?.id;
    if let Some(session) = &query.session
        && hub.room_of(session).as_deref() != Some(room.as_str())
    {
        return Err(ApiError::NotFound("session in this room"));
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let actor = Actor {
        role: grant.role,
        session: query.session,
    };
    Ok(upgrade.on_upgrade(move |socket| run(socket, state, hub, room, actor)))
}

async fn run(mut socket: WebSocket, state: AppState, hub: Hub, room: String, actor: Actor) {
    let view = View::for_role(actor.role);
    let session = actor.session.as_deref();
    let Subscription {
        roster,
        room: mut events,
        mut own,
    } = hub.subscribe(&room, view, session);
    if send(&mut socket, &roster, &actor).await.is_err() {
        return;
    }
    loop {
        let delivered = tokio::select! {
            frame = socket.recv() => match frame {
                Some(Ok(frame)) => handle_frame(&mut socket, &state, &hub, &room, &actor, frame).await,
                Some(Err(_)) | None => return,
            },
            event = events.recv() => match event {
                Ok(message) => send(&mut socket, &message, &actor).await,
                Err(RecvError::Lagged(_)) => send(&mut socket, &hub.roster(&room, view, session), &actor).await,
                Err(RecvError::Closed) => return, // the room was deleted
            },
            event = next_own(&mut own) => match event {
                Ok(message) => send(&mut socket, &message, &actor).await,
                Err(RecvError::Lagged(_)) => send(&mut socket, &hub.roster(&room, view, session), &actor).await,
                Err(RecvError::Closed) => {
                    own = None; // the session left; the room goes on
                    Ok(())
                }
            },
        };
        if delivered.is_err() {
            return; // the client is gone
        }
    }
}

/// The next event of a listener's own session; never, without one.
async fn next_own(own: &mut Option<broadcast::Receiver<Message>>) -> Result<Message, RecvError> {
    match own {
        Some(own) => own.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs one client frame; `Err` only when the socket itself failed.
async fn handle_frame(
    socket: &mut WebSocket,
    state: &AppState,
    hub: &Hub,
    room: &str,
    actor: &Actor,
    frame: Frame,
) -> Result<(), axum::Error> {
    let command = match frame {
        Frame::Text(text) => serde_json::from_str::<Command>(text.as_str())
            .map_err(|e| CommandError::Malformed(e.to_string())),
        Frame::Binary(_) => Err(CommandError::Malformed(
            "send commands as JSON text frames".to_owned(),
        )),
        // Pings are answered by the WebSocket layer; a close ends `recv`.
        Frame::Ping(_) | Frame::Pong(_) | Frame::Close(_) => return Ok(()),
    };
    let outcome = match command {
        Ok(command) => execute(state, hub, room, actor, command).await.map(drop),
        Err(error) => Err(error),
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(error) => socket.send(Frame::text(error_message(error))).await,
    }
}

/// The `error` frame: the title is the status the REST route would answer.
fn error_message(error: CommandError) -> String {
    let api = ApiError::from(error);
    let title = api.status().canonical_reason().unwrap_or("Error");
    ErrorMessage::new(title, api.detail()).to_text()
}

async fn send(socket: &mut WebSocket, message: &Message, actor: &Actor) -> Result<(), axum::Error> {
    let text = message.for_socket(actor.session.as_deref()).to_text();
    socket.send(Frame::text(text)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_frames_carry_the_rest_title() {
        let text = error_message(CommandError::HostOnly);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "error");
        assert_eq!(value["title"], "Forbidden");
        assert!(value["detail"].as_str().unwrap().contains("host"));
        let text = error_message(CommandError::Malformed("expected value".into()));
        assert!(text.contains("Bad Request"), "{text}");
    }
}
