//! The HTTP API of Sabha: rooms, tokens, WHIP/WHEP/join signaling,
//! attendance and the organisation.
//!
//! This crate turns HTTP requests into calls on a few traits and maps their
//! answers back to HTTP. It never sees RTP, a socket of the media plane or
//! SQL: the binary implements [`MediaControl`] (a channel into the media
//! driver) and [`RoomStore`], [`AttendanceStore`], [`OrgStore`] and
//! [`KeyStore`] (the database), and tests implement them in memory. That keeps every handler testable with `router(state).oneshot(..)`.
//!
//! A request goes through, in order:
//! 1. the body limit (64 KiB, [`BODY_LIMIT`]; 16 MiB for an organisation
//!    import) and CORS ([`cors`]);
//! 2. the extractors: [`auth::Operator`] or [`auth::Grant`] (401; both carry
//!    the operator's [`Scope`], checked by the handler), then the
//!    body ([`extract::JsonBody`] / [`extract::SdpBody`]: 415, 413, 400, 422);
//! 3. the handler ([`rooms`], [`sessions`]): room match and role (403), room
//!    lookup (404), then the trait call;
//! 4. every error becomes one [`ApiError`], rendered as
//!    `application/problem+json` at the edge ([`problem`]). A last middleware
//!    rewrites the few plain-text errors that axum itself produces (405 from
//!    routing, for instance) so that clients only ever parse one error shape.
//!
//! Rooms also have control-plane state here ([`hub`]): the roster (names,
//! roles, hands, stage, mute), lock and end, and a broadcast of room events
//! that the event socket ([`socket`]) streams and the moderation commands
//! ([`moderation`], also as REST in [`participants`]) change. It is in
//! memory only, fed by the handlers and by `MediaControl::subscribe`.
//!
//! Webhook events ([`webhooks`]: `room_started`, `room_ended`,
//! `participant_joined`, `participant_left`) go to an [`EventSink`] that the
//! binary implements with a database outbox; a sink failure is logged and
//! never fails a request.
//!
//! Deliberately absent: media state of sessions (the media driver owns it;
//! the session id is the capability), trickle ICE (the media side is ICE-lite,
//! so `PATCH` on a session is 405), and any environment or file reads (the
//! binary passes everything in through [`AppState`]).

pub mod app;
pub mod attendance;
pub mod auth;
pub mod backend;
pub mod cors;
mod csv_rows;
pub mod events;
pub mod extract;
pub mod hub;
pub mod ids;
pub mod invites;
pub mod keys;
pub mod limits;
pub mod members;
pub mod moderation;
pub mod openapi;
pub mod org;
pub mod pages;
pub mod participants;
pub mod pins;
pub mod problem;
pub mod reach;
pub mod redact;
pub mod rooms;
pub mod schedule;
pub mod scheduler;
pub mod scope;
pub mod sessions;
pub mod socket;
pub mod throttle;
pub mod timestamp;
pub mod token;
pub mod webhooks;

pub use app::{
    AppState, BODY_LIMIT, MetricsRender, RouterState, Settings, router, router_with_hub,
};
pub use auth::{Auth, OperatorKey};
pub use backend::{
    AttendanceStore, Leave, ListenProfile, MediaControl, MediaError, MediaEvent, NewRoom,
    Occurrence, OpenSession, OpenedSession, OrgStore, Outcome, Role, Room, RoomKind, RoomStatus,
    RoomStore, SessionKind, SessionRecord, SpeakerLevel, StoreError, Traffic, Unit,
};
pub use cors::{CorsConfig, CorsError};
pub use events::{Command, Event, Message, Participant};
pub use hub::Hub;
pub use keys::{ApiKey, KeyCredential, KeyStore, NewKey};
pub use problem::ApiError;
pub use scope::Scope;
pub use webhooks::{EventSink, EventType, WebhookEvent};
// Members, PINs, invites and PIN join.
pub use limits::{PinLimits, Rate, RequestLimits};
pub use members::{Member, MemberStore, PinOwner};
pub use pins::PinKey;
