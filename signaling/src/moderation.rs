//! Moderation: who may run which room command, and what each one does.
//!
//! The event socket and the REST routes both end here, in [`execute`], so a
//! command means the same thing whichever way it arrives. [`authorize`] is
//! the whole permission table, a pure function tested on its own:
//!
//! | command                   | on self (`?session=`) | on another | needs |
//! |---------------------------|-----------------------|------------|-------|
//! | `mute`, `unmute`          | any role              | host       |       |
//! | `raise_hand`              | any role              | nobody     |       |
//! | `lower_hand`              | any role              | host       |       |
//! | `promote`, `demote`, `remove` | host              | host       |       |
//! | `mute_all`, `lock`, `unlock`, `end` | —           | —          | host  |
//!
//! "host" is a host token of the room or the operator key. The media side is
//! told one bit per session, `muted || !on_stage`, so an audience member who
//! unmutes itself is still silent until a host promotes it.

use crate::app::AppState;
use crate::backend::{MediaError, Role, RoomStatus};
use crate::events::{Command, Event, Participant};
use crate::hub::Hub;
use crate::problem::ApiError;
use crate::rooms::DEFAULT_TTL_S;
use crate::timestamp::unix_now;
use crate::token::Claims;
use crate::webhooks::WebhookEvent;

/// Who sends a command: the role of their credentials and, on a socket
/// bound with `?session=`, their own session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub role: Role,
    pub session: Option<String>,
}

impl Actor {
    fn is_host(&self) -> bool {
        self.role == Role::Host
    }
}

/// What a permitted command acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One participant (a session id).
    Participant(String),
    /// The room as a whole.
    Room,
}

/// Why a command was not carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("only a host (or the operator key) may do this")]
    HostOnly,
    #[error("only a host may do this to another participant")]
    NotYours,
    #[error("a hand is raised only by its owner")]
    OwnHandOnly,
    #[error("name a participant, or bind this socket to your session with ?session=")]
    NoParticipant,
    #[error("no such participant in this room")]
    UnknownParticipant,
    #[error("not a command: {0}")]
    Malformed(String),
    #[error(transparent)]
    Media(#[from] MediaError),
    /// Minting the promotion token failed: a bug.
    #[error("could not mint a token: {0}")]
    Token(String),
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::HostOnly | CommandError::NotYours | CommandError::OwnHandOnly => {
                ApiError::Forbidden(error.to_string())
            }
            CommandError::NoParticipant => ApiError::Unprocessable(error.to_string()),
            CommandError::UnknownParticipant => ApiError::NotFound("participant"),
            CommandError::Malformed(_) => ApiError::BadRequest(error.to_string()),
            CommandError::Media(media) => ApiError::Media(media),
            CommandError::Token(_) => ApiError::Internal(error.to_string()),
        }
    }
}

/// The permission table (see the module docs).
pub fn authorize(actor: &Actor, command: &Command) -> Result<Scope, CommandError> {
    use Command::*;
    let target = |named: &Option<String>| {
        named
            .clone()
            .or_else(|| actor.session.clone())
            .ok_or(CommandError::NoParticipant)
    };
    let own = |id: &String| actor.session.as_ref() == Some(id);
    match command {
        Mute { participant }
        | Unmute { participant }
        | RaiseHand { participant }
        | LowerHand { participant } => {
            let id = target(participant)?;
            if own(&id) {
                Ok(Scope::Participant(id))
            } else if matches!(command, RaiseHand { .. }) {
                Err(CommandError::OwnHandOnly)
            } else if actor.is_host() {
                Ok(Scope::Participant(id))
            } else {
                Err(CommandError::NotYours)
            }
        }
        Promote { participant } | Demote { participant } | Remove { participant } => {
            if !actor.is_host() {
                return Err(CommandError::HostOnly);
            }
            target(participant).map(Scope::Participant)
        }
        MuteAll | Lock | Unlock | End if actor.is_host() => Ok(Scope::Room),
        MuteAll | Lock | Unlock | End => Err(CommandError::HostOnly),
    }
}

/// Checks and runs one command in `room`. Returns the participant it acted
/// on, as it is afterwards (`None` for room commands and `remove`).
pub async fn execute(
    state: &AppState,
    hub: &Hub,
    room: &str,
    actor: &Actor,
    command: Command,
) -> Result<Option<Participant>, CommandError> {
    let scope = authorize(actor, &command)?;
    let ctx = Ctx { state, hub, room };
    match (command, scope) {
        (Command::MuteAll, _) => ctx.mute_all().await.map(|()| None),
        (lock @ (Command::Lock | Command::Unlock), _) => {
            hub.set_locked(room, lock == Command::Lock);
            Ok(None)
        }
        (Command::End, _) => ctx.end().await.map(|()| None),
        (Command::Remove { .. }, Scope::Participant(id)) => ctx.remove(&id).await.map(|()| None),
        (Command::Promote { .. }, Scope::Participant(id)) => ctx.promote(&id).await.map(Some),
        (command, Scope::Participant(id)) => {
            let change = Change::of(&command).ok_or_else(|| {
                CommandError::Malformed(format!("{command:?} needs the room scope"))
            })?;
            ctx.change(&id, change).await.map(Some)
        }
        (command, Scope::Room) => Err(CommandError::Malformed(format!(
            "{command:?} needs a participant"
        ))),
    }
}

/// One change to one participant's flags, applied first to a copy (to know
/// what the media side must hold) and then to the roster.
#[derive(Clone, Copy, Debug)]
enum Change {
    Mute(bool),
    Hand(bool),
    Stage(bool),
}

impl Change {
    fn of(command: &Command) -> Option<Self> {
        Some(match command {
            Command::Mute { .. } => Self::Mute(true),
            Command::Unmute { .. } => Self::Mute(false),
            Command::RaiseHand { .. } => Self::Hand(true),
            Command::LowerHand { .. } => Self::Hand(false),
            Command::Promote { .. } => Self::Stage(true),
            Command::Demote { .. } => Self::Stage(false),
            _ => return None,
        })
    }

    /// Applies the change; the event to send, or `None` when it changed nothing.
    fn apply(self, p: &mut Participant) -> Option<Event> {
        let participant = p.id.clone();
        match self {
            Self::Mute(muted) if p.muted != muted => {
                p.muted = muted;
                Some(if muted {
                    Event::Muted { participant }
                } else {
                    Event::Unmuted { participant }
                })
            }
            Self::Hand(raised) if p.hand_raised != raised => {
                p.hand_raised = raised;
                Some(if raised {
                    Event::HandRaised { participant }
                } else {
                    Event::HandLowered { participant }
                })
            }
            Self::Stage(true) if !p.on_stage => {
                p.on_stage = true;
                p.hand_raised = false; // implied by `promoted`
                Some(Event::Promoted {
                    participant,
                    token: None,
                    join: None,
                })
            }
            Self::Stage(false) if p.on_stage => {
                p.on_stage = false;
                Some(Event::Demoted { participant })
            }
            _ => None,
        }
    }
}

struct Ctx<'a> {
    state: &'a AppState,
    hub: &'a Hub,
    room: &'a str,
}

impl Ctx<'_> {
    fn find(&self, id: &str) -> Result<Participant, CommandError> {
        self.hub
            .participant(self.room, id)
            .ok_or(CommandError::UnknownParticipant)
    }

    /// Tells the media side first: if it fails, the roster does not lie.
    async fn change(&self, id: &str, change: Change) -> Result<Participant, CommandError> {
        let before = self.find(id)?;
        let mut after = before.clone();
        change.apply(&mut after);
        if before.sends_audio() && before.media_muted() != after.media_muted() {
            self.state.media.set_muted(id, after.media_muted()).await?;
        }
        self.hub
            .update(self.room, id, |p| change.apply(p))
            .ok_or(CommandError::UnknownParticipant)
    }

    /// A session that sends audio goes on stage; a listener (WHEP, receive
    /// only) gets a speaker token to open a `/join` session with.
    async fn promote(&self, id: &str) -> Result<Participant, CommandError> {
        let listener = self.find(id)?;
        if listener.sends_audio() {
            return self.change(id, Change::Stage(true)).await;
        }
        let token = self.speaker_token(listener.name)?;
        let join = format!("/v1/rooms/{}/join", self.room);
        self.hub
            .update(self.room, id, |p| {
                p.hand_raised = false;
                Some(Event::Promoted {
                    participant: p.id.clone(),
                    token: Some(token),
                    join: Some(join),
                })
            })
            .ok_or(CommandError::UnknownParticipant)
    }

    fn speaker_token(&self, name: Option<String>) -> Result<String, CommandError> {
        let now = unix_now();
        let claims = Claims {
            room: self.room.to_owned(),
            role: Role::Speaker,
            name,
            member: None,
            unit: None,
            exp: now + DEFAULT_TTL_S,
            iat: now,
        };
        let tokens = self.state.auth.tokens();
        tokens
            .mint(&claims)
            .map_err(|e| CommandError::Token(e.to_string()))
    }

    async fn remove(&self, id: &str) -> Result<(), CommandError> {
        self.find(id)?;
        self.state.media.close_session(id).await?;
        self.hub.leave(id, "removed");
        Ok(())
    }

    /// Mutes everyone but the hosts.
    async fn mute_all(&self) -> Result<(), CommandError> {
        let targets = self.hub.participants(self.room).into_iter();
        for p in targets.filter(|p| p.role != Role::Host && !p.muted) {
            match self.change(&p.id, Change::Mute(true)).await {
                Ok(_) | Err(CommandError::UnknownParticipant) => {} // may have left meanwhile
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    async fn end(&self) -> Result<(), CommandError> {
        if self.hub.end(self.room) {
            tracing::info!(room = %self.room, "room ended");
            // A room without a schedule is over for good, across restarts.
            // A scheduled one ends this window only: the scheduler lets
            // sessions in again at the next.
            match self.state.rooms.get_room(self.room).await {
                Ok(Some(room)) if room.starts_at.is_none() => {
                    if let Err(error) = self
                        .state
                        .rooms
                        .set_status(self.room, RoomStatus::Ended)
                        .await
                    {
                        tracing::warn!(room = %self.room, %error, "could not store the room's end");
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(room = %self.room, %error, "could not read the room"),
            }
            let ended = WebhookEvent::room_ended(self.room, "ended");
            crate::webhooks::emit(&self.state.events, vec![ended]).await;
            if let Err(error) = self.state.media.close_room(self.room).await {
                // The room refuses new sessions either way.
                tracing::warn!(room = %self.room, %error, "could not close the room's sessions");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(role: Role, session: Option<&str>) -> Actor {
        Actor {
            role,
            session: session.map(str::to_owned),
        }
    }

    fn on(id: &str) -> Option<String> {
        Some(id.to_owned())
    }

    #[test]
    fn self_commands_need_a_bound_session() {
        use Command::*;
        for role in [Role::Listener, Role::Participant, Role::Speaker, Role::Host] {
            let me = actor(role, Some("s1"));
            for command in [
                Mute { participant: None },
                Unmute { participant: None },
                RaiseHand { participant: None },
                LowerHand {
                    participant: on("s1"),
                },
            ] {
                assert_eq!(
                    authorize(&me, &command),
                    Ok(Scope::Participant("s1".into())),
                    "{role:?} {command:?}"
                );
            }
            let unbound = actor(role, None);
            assert_eq!(
                authorize(&unbound, &Mute { participant: None }),
                Err(CommandError::NoParticipant)
            );
        }
    }

    #[test]
    fn only_hosts_act_on_others() {
        use Command::*;
        let others = [
            Mute {
                participant: on("s2"),
            },
            Unmute {
                participant: on("s2"),
            },
            LowerHand {
                participant: on("s2"),
            },
            Promote {
                participant: on("s2"),
            },
            Demote {
                participant: on("s2"),
            },
            Remove {
                participant: on("s2"),
            },
        ];
        for command in &others {
            let host = actor(Role::Host, None);
            assert_eq!(
                authorize(&host, command),
                Ok(Scope::Participant("s2".into()))
            );
            for role in [Role::Listener, Role::Participant, Role::Speaker] {
                let err = authorize(&actor(role, Some("s1")), command).unwrap_err();
                assert!(
                    matches!(err, CommandError::NotYours | CommandError::HostOnly),
                    "{role:?} {command:?}: {err:?}"
                );
            }
        }
        let raise = RaiseHand {
            participant: on("s2"),
        };
        assert_eq!(
            authorize(&actor(Role::Host, None), &raise),
            Err(CommandError::OwnHandOnly)
        );
    }

    #[test]
    fn room_commands_are_for_hosts() {
        use Command::*;
        for command in [MuteAll, Lock, Unlock, End] {
            assert_eq!(
                authorize(&actor(Role::Host, None), &command),
                Ok(Scope::Room)
            );
            for role in [Role::Listener, Role::Participant, Role::Speaker] {
                assert_eq!(
                    authorize(&actor(role, Some("s1")), &command),
                    Err(CommandError::HostOnly),
                    "{role:?} {command:?}"
                );
            }
        }
        // Promoting yourself is still a host's call.
        assert_eq!(
            authorize(
                &actor(Role::Speaker, Some("s1")),
                &Promote { participant: None }
            ),
            Err(CommandError::HostOnly)
        );
    }

    #[test]
    fn changes_and_their_events() {
        let mut p = Participant {
            id: "s1".into(),
            name: None,
            role: Role::Listener,
            kind: crate::backend::SessionKind::Join,
            muted: false,
            speaking: false,
            hand_raised: true,
            on_stage: false,
        };
        assert!(p.media_muted(), "off stage is silent");
        assert_eq!(
            Change::Stage(true).apply(&mut p),
            Some(Event::Promoted {
                participant: "s1".into(),
                token: None,
                join: None
            })
        );
        assert!(!p.hand_raised && !p.media_muted());
        assert_eq!(Change::Stage(true).apply(&mut p), None);
        assert!(Change::Mute(true).apply(&mut p).is_some());
        assert!(p.media_muted());
        assert_eq!(
            Change::Stage(false).apply(&mut p),
            Some(Event::Demoted {
                participant: "s1".into()
            })
        );
    }

    #[test]
    fn errors_map_to_statuses() {
        let cases = [
            (CommandError::HostOnly, 403),
            (CommandError::NotYours, 403),
            (CommandError::OwnHandOnly, 403),
            (CommandError::NoParticipant, 422),
            (CommandError::UnknownParticipant, 404),
            (CommandError::Malformed("x".into()), 400),
            (CommandError::Media(MediaError::Unavailable), 503),
        ];
        for (error, status) in cases {
            assert_eq!(ApiError::from(error.clone()).status(), status, "{error:?}");
        }
    }
}
