//! The wire types of `GET /v1/rooms/{id}/events`: roster entries, events
//! (server → client), commands (client → server) and errors.
//!
//! They live apart from the code that produces them ([`crate::hub`],
//! [`crate::moderation`]) so that the protocol can be read, and changed, in
//! one place; `docs/http-api.md` documents every message shown here.
//! Every event goes out as one text frame `{"type": …, "seq": N, …}`: `seq`
//! counts the room's events, so a client sees gaps and can tell which events
//! a `roster` snapshot already includes.

use serde::{Deserialize, Serialize};

use crate::backend::{Role, SessionKind};

/// One session in a room's roster. The id is the session id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Participant {
    /// The session id (`/v1/sessions/{id}`).
    pub id: String,
    /// The token's `name` claim, if any.
    pub name: Option<String>,
    pub role: Role,
    /// WHIP (`publish`), WHEP (`listen`) or `/join` (`join`).
    pub kind: SessionKind,
    /// Muted by a host or by itself. The media side is told
    /// `muted || !on_stage` (see [`Participant::media_muted`]).
    pub muted: bool,
    /// In the media side's latest speaking set.
    pub speaking: bool,
    pub hand_raised: bool,
    /// Whether its audio may reach the mix at all. Audience members of a
    /// rally start off stage; a host promotes them.
    pub on_stage: bool,
}

impl Participant {
    /// Whether the session sends audio, so that the media side has a mute
    /// state for it. A WHEP session only receives.
    pub fn sends_audio(&self) -> bool {
        self.kind != SessionKind::Listen
    }

    /// What `MediaControl::set_muted` should hold for this session.
    pub fn media_muted(&self) -> bool {
        self.muted || !self.on_stage
    }
}

/// One talker in a `speaking` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    /// The session id.
    pub id: String,
    /// 0 is loudest, 127 silence (−dBov).
    pub level: u8,
}

/// Something that happened in a room, as broadcast to its sockets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The whole state, sent first on every socket (and again after a
    /// socket fell behind).
    /// On an audience socket (a listener's) `participants` lists only the
    /// stage and the socket's own session; `listeners` counts every WHEP
    /// session either way.
    Roster {
        participants: Vec<Participant>,
        listeners: usize,
        locked: bool,
        ended: bool,
    },
    /// How many listen (WHEP) sessions the room has, sent at most once per
    /// [`crate::hub::AUDIENCE_EVERY`] while it changes: how an audience
    /// socket learns of the crowd without one event per listener.
    Audience {
        listeners: usize,
    },
    Joined {
        participant: Participant,
    },
    /// `reason`: `left` (DELETE of the session), `removed` (by a host), or
    /// the media side's reason (`ice_timeout`, `connect_timeout`, `failed`, …).
    Left {
        participant: String,
        reason: String,
    },
    Muted {
        participant: String,
    },
    Unmuted {
        participant: String,
    },
    /// Who speaks now, loudest first; empty when nobody does.
    Speaking {
        speakers: Vec<Level>,
    },
    HandRaised {
        participant: String,
    },
    HandLowered {
        participant: String,
    },
    /// A listener (WHEP) cannot talk on its session: it gets a speaker
    /// `token` and the `join` path to open a sendrecv session. Only the
    /// socket bound to that participant sees the token ([`Message::for_socket`]).
    Promoted {
        participant: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        join: Option<String>,
    },
    Demoted {
        participant: String,
    },
    Locked,
    Unlocked,
    RoomEnded,
}

/// An event with its place in the room's sequence: one text frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub seq: u64,
    #[serde(flatten)]
    pub event: Event,
}

impl Message {
    /// The message as the socket bound to `session` may see it: a promotion
    /// token goes only to the promoted participant, since anyone holding it
    /// could talk on stage.
    pub fn for_socket(&self, session: Option<&str>) -> Message {
        let mut message = self.clone();
        if let Event::Promoted {
            participant,
            token,
            join,
        } = &mut message.event
            && session != Some(participant.as_str())
        {
            *token = None;
            *join = None;
        }
        message
    }

    /// The JSON text of the frame.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("events are plain data and always serialize")
    }
}

/// A command sent over the socket (the REST routes build the same values).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Without `participant`: the socket's own session (`?session=`).
    Mute {
        participant: Option<String>,
    },
    Unmute {
        participant: Option<String>,
    },
    RaiseHand {
        participant: Option<String>,
    },
    LowerHand {
        participant: Option<String>,
    },
    Promote {
        participant: Option<String>,
    },
    Demote {
        participant: Option<String>,
    },
    Remove {
        participant: Option<String>,
    },
    MuteAll,
    Lock,
    Unlock,
    End,
}

/// The answer to a command that failed; the socket stays open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// Always `"error"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status phrase the same failure has on the REST routes.
    pub title: String,
    /// What to fix.
    pub detail: String,
}

impl ErrorMessage {
    pub fn new(title: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: "error".to_owned(),
            title: title.into(),
            detail: detail.into(),
        }
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("a struct of strings serializes")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn events_are_flat_with_type_and_seq() {
        let message = Message {
            seq: 7,
            event: Event::Muted {
                participant: "s1".into(),
            },
        };
        let value: Value = serde_json::from_str(&message.to_text()).unwrap();
        assert_eq!(
            value,
            json!({"type": "muted", "seq": 7, "participant": "s1"})
        );
        let ended = Message {
            seq: 8,
            event: Event::RoomEnded,
        };
        assert_eq!(ended.to_text(), r#"{"seq":8,"type":"room_ended"}"#);
    }

    #[test]
    fn promotion_token_only_reaches_the_promoted() {
        let message = Message {
            seq: 1,
            event: Event::Promoted {
                participant: "s1".into(),
                token: Some("jwt".into()),
                join: Some("/v1/rooms/r/join".into()),
            },
        };
        assert!(message.for_socket(Some("s1")).to_text().contains("jwt"));
        for other in [None, Some("s2")] {
            let text = message.for_socket(other).to_text();
            assert!(!text.contains("jwt") && !text.contains("join"), "{text}");
        }
    }

    #[test]
    fn commands_parse() {
        let parse = |text: &str| serde_json::from_str::<Command>(text);
        assert_eq!(
            parse(r#"{"type":"mute"}"#).unwrap(),
            Command::Mute { participant: None }
        );
        assert_eq!(
            parse(r#"{"type":"promote","participant":"s3"}"#).unwrap(),
            Command::Promote {
                participant: Some("s3".into())
            }
        );
        assert_eq!(parse(r#"{"type":"mute_all"}"#).unwrap(), Command::MuteAll);
        assert!(parse(r#"{"type":"dance"}"#).is_err());
        assert!(parse("{not json").is_err());
    }
}
