//! Webhook events: what operators' own systems (a dashboard, an SMS gateway)
//! are told as it happens — `room_started`, `room_ended`,
//! `participant_joined`, `participant_left`.
//!
//! This crate only decides *when* an event happens and *what* it says; the
//! binary's [`EventSink`] writes it to a database outbox and delivers it
//! (signed, retried). Publishing is best effort from the handlers' point of
//! view: [`emit`] logs a sink failure and never fails or holds up a join
//! for longer than [`PUBLISH_WAIT`], so webhooks can never cost anyone
//! their audio.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::RngCore;
use serde_json::{Value, json};

use crate::backend::{Room, SessionRecord, StoreError};
use crate::timestamp::rfc3339;

/// Longest a handler waits for the sink before answering anyway; the
/// write goes on in the background.
pub const PUBLISH_WAIT: Duration = Duration::from_secs(2);

/// The kinds of event, as in the body's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    RoomStarted,
    RoomEnded,
    ParticipantJoined,
    ParticipantLeft,
}

impl EventType {
    /// As serialized: `room_started`, `room_ended`, `participant_joined`,
    /// `participant_left`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RoomStarted => "room_started",
            EventType::RoomEnded => "room_ended",
            EventType::ParticipantJoined => "participant_joined",
            EventType::ParticipantLeft => "participant_left",
        }
    }
}

/// One event, with its id (the `webhook-id` of every delivery of it).
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEvent {
    /// `evt_` + 32 hex characters; stable across retries.
    pub id: String,
    pub event_type: EventType,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    pub data: Value,
}

impl WebhookEvent {
    /// A new event, now, with a fresh id.
    pub fn new(event_type: EventType, data: Value) -> Self {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let created_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            id: format!("evt_{}", hex::encode(bytes)),
            event_type,
            created_at_ms,
            data,
        }
    }

    /// An unscheduled room was created: it is open at once.
    pub fn room_started(room: &Room) -> Self {
        Self::new(
            EventType::RoomStarted,
            json!({
                "room": room.id,
                "name": room.name,
                "kind": room.kind,
                "unit": room.unit,
                "code": room.code,
            }),
        )
    }

    /// A room ended: `reason` is `ended` (a host or operator ended it),
    /// `deleted`, or (from the scheduler) `schedule`.
    pub fn room_ended(room: &str, reason: &str) -> Self {
        Self::new(
            EventType::RoomEnded,
            json!({ "room": room, "reason": reason }),
        )
    }

    /// A session was registered (its attendance row is written).
    pub fn participant_joined(record: &SessionRecord) -> Self {
        Self::new(
            EventType::ParticipantJoined,
            json!({
                "room": record.room,
                "session": record.session,
                "name": record.name,
                "member": record.member,
                "unit": record.unit,
                "role": record.role,
                "kind": record.kind,
                "joined_at": rfc3339(record.joined_at),
            }),
        )
    }

    /// A session's leave was recorded; `record` is the completed row.
    pub fn participant_left(record: &SessionRecord) -> Self {
        let left_at = record.left_at.unwrap_or(record.joined_at);
        Self::new(
            EventType::ParticipantLeft,
            json!({
                "room": record.room,
                "session": record.session,
                "name": record.name,
                "member": record.member,
                "unit": record.unit,
                "role": record.role,
                "kind": record.kind,
                "joined_at": rfc3339(record.joined_at),
                "left_at": rfc3339(left_at),
                "seconds": left_at.saturating_sub(record.joined_at),
                "reason": record.leave_reason,
                "packets_in": record.traffic.packets_in,
                "bytes_in": record.traffic.bytes_in,
                "packets_out": record.traffic.packets_out,
                "bytes_out": record.traffic.bytes_out,
            }),
        )
    }

    /// The delivered body: `{"type", "id", "created_at", "data"}`.
    pub fn body(&self) -> String {
        let created_at = jiff::Timestamp::from_millisecond(self.created_at_ms)
            .map(|t| t.to_string())
            .unwrap_or_default();
        json!({
            "type": self.event_type.as_str(),
            "id": self.id,
            "created_at": created_at,
            "data": self.data,
        })
        .to_string()
    }
}

/// Where events go. The binary writes them to its outbox (committed before
/// `publish` returns) and wakes its delivery worker.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Records `events`, in order, all or none.
    async fn publish(&self, events: &[WebhookEvent]) -> Result<(), StoreError>;
}

/// A sink that drops every event: for a server or test without webhooks.
pub struct Discard;

#[async_trait]
impl EventSink for Discard {
    async fn publish(&self, _: &[WebhookEvent]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Publishes `events`, waiting at most [`PUBLISH_WAIT`]; a failure or a
/// slow sink is logged, never returned.
pub async fn emit(sink: &Arc<dyn EventSink>, events: Vec<WebhookEvent>) {
    if events.is_empty() {
        return;
    }
    let sink = sink.clone();
    let count = events.len();
    let write = tokio::spawn(async move { sink.publish(&events).await });
    match tokio::time::timeout(PUBLISH_WAIT, write).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%error, count, "webhook events not recorded"),
        Ok(Err(error)) => tracing::warn!(%error, count, "webhook publish task failed"),
        Err(_) => tracing::warn!(count, "webhook sink is slow; answering without waiting"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_type_id_time_and_data() {
        let mut event = WebhookEvent::room_ended("abc", "ended");
        event.created_at_ms = 1_700_000_000_123;
        let body: Value = serde_json::from_str(&event.body()).unwrap();
        assert_eq!(body["type"], "room_ended");
        assert_eq!(body["id"], event.id.as_str());
        assert!(event.id.starts_with("evt_") && event.id.len() == 36);
        assert_eq!(body["created_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(body["data"], json!({"room": "abc", "reason": "ended"}));
        assert_ne!(WebhookEvent::room_ended("abc", "ended").id, event.id);
    }
}
