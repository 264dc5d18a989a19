//! What the HTTP layer needs from the rest of the server, as traits.
//!
//! `sabha-signaling` never touches RTP, sockets or SQL: the binary implements
//! [`MediaControl`] with its media driver (a channel into the media shard),
//! and [`RoomStore`], [`AttendanceStore`] and [`OrgStore`] with its
//! database. Tests implement them in memory.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What a room is for. It decides which roles may do what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    /// One stage (leader + a few speakers), any number of listeners.
    Rally,
    /// A conference call: every participant talks and hears mix-minus-self.
    Bridge,
}

/// The role a token grants inside one room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Host,
    Speaker,
    Listener,
    Participant,
}

impl Role {
    /// As serialized: `host`, `speaker`, `listener`, `participant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Speaker => "speaker",
            Role::Listener => "listener",
            Role::Participant => "participant",
        }
    }
}

/// How a WebRTC session takes part in the room's audio. Serialized
/// (`"publish"`, `"listen"`, `"join"`) as the `kind` of a roster entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// WHIP: sends audio to the stage, receives nothing.
    Publish,
    /// WHEP: receives the program mix, sends nothing.
    Listen,
    /// `/join`: sends audio to the stage and receives mix-minus-self.
    Join,
}

impl SessionKind {
    /// As serialized: `publish`, `listen`, `join`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Publish => "publish",
            SessionKind::Listen => "listen",
            SessionKind::Join => "join",
        }
    }
}

/// How a listener (WHEP) wants the program: `?profile=low` on the URL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListenProfile {
    /// 32 kb/s Opus in 20 ms packets.
    #[default]
    Standard,
    /// For phones on 3G: 16 kb/s Opus with in-band FEC in 60 ms packets.
    Low,
}

/// A request to open one WebRTC session (one SDP offer/answer exchange).
#[derive(Clone, Debug)]
pub struct OpenSession {
    pub room: String,
    /// Rally or bridge: how the media side mixes the room (a bridge is
    /// speech, mixed at 16 kHz; a rally's program is fullband).
    pub room_kind: RoomKind,
    pub kind: SessionKind,
    /// The client's SDP offer, as received (non-trickle: candidates inside).
    pub offer: String,
    /// Display name from the token's `name` claim.
    pub name: Option<String>,
    pub role: Role,
    /// Only listeners (WHEP) choose; talkers always get 20 ms frames.
    pub profile: ListenProfile,
}

/// The answer to [`OpenSession`].
#[derive(Clone, Debug)]
pub struct OpenedSession {
    /// Opaque, unguessable id; the resource is `/v1/sessions/{session}`.
    pub session: String,
    /// SDP answer with the server's host candidate(s), ICE-lite.
    pub answer: String,
}

/// Why a session could not be opened or closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("malformed SDP offer: {0}")]
    MalformedOffer(String),
    #[error("the offer has no audio m-line with Opus/48000/2")]
    NoOpus,
    #[error("{0}")]
    WrongDirection(String),
    #[error("the server is at capacity")]
    AtCapacity,
    #[error("the media engine is not running")]
    Unavailable,
    /// The server is shutting down: open sessions go on until they end or
    /// the drain deadline, new ones are refused (503 with `Retry-After`, so
    /// a client behind a load balancer retries on another node).
    #[error("the server is shutting down and takes no new sessions")]
    Draining,
}

/// One talker's loudness in a [`MediaEvent::Speaking`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SpeakerLevel {
    /// The session id (as in `Location: /v1/sessions/{session}`).
    pub session: String,
    /// RFC 6464 style: 0 is the loudest, 127 silence (−dBov).
    pub level: u8,
}

/// What the media plane observed, for room events and the roster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// ICE and DTLS completed: audio flows.
    Connected { room: String, session: String },
    /// The session ended: `reason` is `left`, `room_closed`, `ice_timeout`,
    /// `connect_timeout` or `failed`.
    Closed {
        room: String,
        session: String,
        reason: String,
        traffic: Traffic,
    },
    /// Who is speaking now, loudest first; sent at most every 200 ms and only
    /// when the set or a level changed noticeably. Empty when nobody speaks.
    Speaking {
        room: String,
        speakers: Vec<SpeakerLevel>,
    },
}

#[async_trait]
pub trait MediaControl: Send + Sync + 'static {
    async fn open_session(&self, request: OpenSession) -> Result<OpenedSession, MediaError>;
    /// Ends one session. `Ok(false)` when no such session exists.
    async fn close_session(&self, session: &str) -> Result<bool, MediaError>;
    /// Ends every session of a room (room deleted or ended).
    async fn close_room(&self, room: &str) -> Result<(), MediaError>;
    /// Server-side mute: the session's audio is left out of every mix,
    /// whatever the client sends. `Ok(false)` when no such session exists.
    async fn set_muted(&self, session: &str, muted: bool) -> Result<bool, MediaError>;
    /// Media events of every room, from now on. A slow receiver lags
    /// (`broadcast::error::RecvError::Lagged`) rather than slowing media.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<MediaEvent>;
    /// Whether new sessions are taken; `false` while the server drains.
    /// `GET /readyz` answers 503 then, so a load balancer sends new
    /// clients elsewhere while the open sessions finish.
    fn accepting(&self) -> bool {
        true
    }
}

/// Where a room is in its life. Stored, so that it survives restarts.
///
/// A room without a schedule is `open` from creation until it is ended. A
/// scheduled room is `scheduled` until its window opens, `open` during it,
/// and `ended` after its last window (`scheduled` again between the windows
/// of a recurring room). A window that passed entirely while the server was
/// down is `missed` (for a recurring room, only that occurrence is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoomStatus {
    Scheduled,
    Open,
    Ended,
    Missed,
}

impl RoomStatus {
    /// As serialized and stored: `scheduled`, `open`, `ended`, `missed`.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomStatus::Scheduled => "scheduled",
            RoomStatus::Open => "open",
            RoomStatus::Ended => "ended",
            RoomStatus::Missed => "missed",
        }
    }

    /// The inverse of [`RoomStatus::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "scheduled" => RoomStatus::Scheduled,
            "open" => RoomStatus::Open,
            "ended" => RoomStatus::Ended,
            "missed" => RoomStatus::Missed,
            _ => return None,
        })
    }
}

/// A room as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Room {
    pub id: String,
    pub name: String,
    pub kind: RoomKind,
    /// What WHEP listeners get unless they ask (`?profile=`).
    pub profile: ListenProfile,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The organisation unit the room is for: its subtree is the audience,
    /// and operators scoped to a unit see only rooms under it. `None`: the
    /// whole organisation.
    pub unit: Option<String>,
    /// When the (first) window opens; `None` with `ends_at`: no schedule,
    /// open from creation until ended.
    pub starts_at: Option<jiff::Timestamp>,
    /// When the (first) window closes.
    pub ends_at: Option<jiff::Timestamp>,
    /// IANA zone the schedule is written in: recurrences repeat at the same
    /// wall-clock time there, and `*_local` times are shown in it.
    pub time_zone: String,
    /// RRULE subset (`FREQ=DAILY|WEEKLY`, `INTERVAL`, `BYDAY`, `COUNT`,
    /// `UNTIL`), as given.
    pub recurrence: Option<String>,
    /// Most sessions at once; `None`: only the server's own limit.
    pub capacity: Option<u32>,
    /// Who hosts (member ids or names): one host cannot be booked into two
    /// overlapping rooms.
    pub hosts: Vec<String>,
    /// Whether listeners who come before the start wait (hearing silence)
    /// instead of being turned away with 425.
    pub lobby: bool,
    /// Numeric room code for `POST /v1/pin-join`, unique among rooms.
    pub code: String,
    pub status: RoomStatus,
}

/// What an operator sends to create a room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRoom {
    pub name: String,
    pub kind: RoomKind,
    /// Default `standard`.
    #[serde(default)]
    pub profile: ListenProfile,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub starts_at: Option<jiff::Timestamp>,
    #[serde(default)]
    pub ends_at: Option<jiff::Timestamp>,
    /// Default: the server's configured zone.
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub recurrence: Option<String>,
    #[serde(default)]
    pub capacity: Option<u32>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub lobby: bool,
}

impl NewRoom {
    /// A room with no schedule, unit, hosts or limits: open from creation.
    pub fn unscheduled(name: impl Into<String>, kind: RoomKind) -> Self {
        Self {
            name: name.into(),
            kind,
            profile: ListenProfile::default(),
            unit: None,
            starts_at: None,
            ends_at: None,
            time_zone: None,
            recurrence: None,
            capacity: None,
            hosts: Vec::new(),
            lobby: false,
        }
    }
}

/// What one session sent and received over its life (datagrams of every
/// kind: STUN, DTLS, RTP, RTCP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Traffic {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

/// One session's attendance: who, in which room, as what, from when to
/// when, why it ended, and what it exchanged. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// The public session id (`/v1/sessions/{session}`).
    pub session: String,
    pub room: String,
    /// The token's name claim.
    pub name: Option<String>,
    /// The token's member claim: the organisation's member id, if the
    /// token was issued to a member (invite, PIN).
    pub member: Option<String>,
    /// The token's unit claim: the unit the participant belongs to
    /// (booth, mandal, …), for reach.
    pub unit: Option<String>,
    pub role: Role,
    pub kind: SessionKind,
    pub joined_at: u64,
    /// `None` while the session is open.
    pub left_at: Option<u64>,
    /// As in [`MediaEvent::Closed`], or `server_restart` for a session the
    /// server was running when it stopped.
    pub leave_reason: Option<String>,
    pub traffic: Traffic,
}

/// How a session ended, for [`AttendanceStore::record_leave`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leave {
    pub session: String,
    pub left_at: u64,
    pub reason: String,
    pub traffic: Traffic,
}

/// A storage failure. Never caused by client input; maps to 503/500 at the edge.
#[derive(Debug, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StoreError(pub String);

#[async_trait]
pub trait RoomStore: Send + Sync + 'static {
    async fn create_room(&self, room: NewRoom) -> Result<Room, StoreError>;
    async fn list_rooms(&self) -> Result<Vec<Room>, StoreError>;
    async fn get_room(&self, id: &str) -> Result<Option<Room>, StoreError>;
    /// The room with this [`Room::code`] (PIN join), by index.
    async fn room_by_code(&self, code: &str) -> Result<Option<Room>, StoreError>;
    /// `Ok(false)` when no such room exists.
    async fn delete_room(&self, id: &str) -> Result<bool, StoreError>;
    /// Sets the room's status (the scheduler, or a host ending a room).
    /// `Ok(false)` when no such room exists.
    async fn set_status(&self, id: &str, status: RoomStatus) -> Result<bool, StoreError>;
    /// Records what became of one window of a scheduled room; recording the
    /// same window again changes nothing.
    async fn record_occurrence(&self, occurrence: &Occurrence) -> Result<(), StoreError>;
    /// The room's recorded windows, in order.
    async fn occurrences(&self, room: &str) -> Result<Vec<Occurrence>, StoreError>;
}

/// One window of a scheduled room, once the scheduler has dealt with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Occurrence {
    pub room: String,
    pub starts_at: jiff::Timestamp,
    pub ends_at: jiff::Timestamp,
    pub outcome: Outcome,
}

/// What became of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The server opened the room for it.
    Held,
    /// It passed while the server was down.
    Missed,
}

/// One unit of the organisation's hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    /// The organisation's own id: 1–64 of `A–Z a–z 0–9 . _ -`.
    pub id: String,
    /// The level, lowercase: `state`, `district`, `mandal`, `booth`, …
    pub kind: String,
    pub name: String,
    /// `None` for a root.
    #[serde(default)]
    pub parent: Option<String>,
}

/// The organisation's units. An import is checked whole by the caller and
/// written in one transaction: readers see the tree before or after it.
#[async_trait]
pub trait OrgStore: Send + Sync + 'static {
    /// Every unit, by id.
    async fn units(&self) -> Result<Vec<Unit>, StoreError>;
    /// Inserts or replaces `upsert` and deletes `remove`, atomically.
    async fn apply_org(&self, upsert: &[Unit], remove: &[String]) -> Result<(), StoreError>;
    /// The unit `id` and its ancestors, nearest first, up to its root;
    /// empty when there is no such unit.
    async fn ancestry(&self, id: &str) -> Result<Vec<Unit>, StoreError>;
}

/// Where attendance is written as it happens: a join when its answer goes
/// out, a leave when the media side reports the session closed. Each write
/// is committed before it returns, so a crash loses nothing written.
#[async_trait]
pub trait AttendanceStore: Send + Sync + 'static {
    /// A session opened (`left_at` and `leave_reason` are `None`).
    async fn record_join(&self, record: SessionRecord) -> Result<(), StoreError>;
    /// Sessions ended, written together (a room's end closes thousands at
    /// once). Returns how many were recorded as open and are now closed;
    /// unknown sessions and second leaves change nothing.
    async fn record_leaves(&self, leaves: &[Leave]) -> Result<u64, StoreError>;
    /// Every session of a room, in order of joining.
    async fn attendance(&self, room: &str) -> Result<Vec<SessionRecord>, StoreError>;
}
