//! In-memory [`RoomStore`] and [`MediaControl`] for router tests.
//!
//! The fake media side decides by markers in the offer text, so each test
//! states the outcome it wants in the request it sends:
//! `no-opus`, `malformed`, `wrong-direction`, `full`, `down`.
//! Tests inject media events (speaking, closed) with [`FakeMedia::emit`].

// Each test crate uses a different part of these fakes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use sabha_signaling::{
    AttendanceStore, Leave, MediaControl, MediaError, MediaEvent, NewRoom, OpenSession,
    OpenedSession, Room, RoomStatus, RoomStore, SessionRecord, StoreError, ids,
};
use tokio::sync::broadcast;

#[derive(Default)]
pub struct FakeStore {
    rooms: Mutex<Vec<Room>>,
    pub occurrences: Mutex<Vec<sabha_signaling::Occurrence>>,
    pub sessions: Mutex<Vec<SessionRecord>>,
    /// When set, every call fails like a broken disk.
    pub broken: AtomicBool,
    /// When set, only attendance writes fail.
    pub attendance_broken: AtomicBool,
}

impl FakeStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StoreError("disk I/O error at /secret/path/sabha.db".into()));
        }
        Ok(())
    }
}

/// A room value to overwrite once the real one is created.
pub fn placeholder_room() -> Room {
    Room {
        id: String::new(),
        name: String::new(),
        kind: sabha_signaling::RoomKind::Bridge,
        profile: sabha_signaling::ListenProfile::Standard,
        created_at: String::new(),
        unit: None,
        starts_at: None,
        ends_at: None,
        time_zone: "UTC".into(),
        recurrence: None,
        capacity: None,
        hosts: Vec::new(),
        lobby: false,
        code: String::new(),
        status: RoomStatus::Open,
    }
}

#[async_trait]
impl RoomStore for FakeStore {
    async fn create_room(&self, room: NewRoom) -> Result<Room, StoreError> {
        self.check()?;
        let status = if room.starts_at.is_some() {
            RoomStatus::Scheduled
        } else {
            RoomStatus::Open
        };
        let room = Room {
            id: ids::room_id(),
            name: room.name,
            kind: room.kind,
            profile: room.profile,
            created_at: "2025-01-01T00:00:00Z".into(),
            unit: room.unit,
            starts_at: room.starts_at,
            ends_at: room.ends_at,
            time_zone: room.time_zone.unwrap_or_else(|| "UTC".into()),
            recurrence: room.recurrence,
            capacity: room.capacity,
            hosts: room.hosts,
            lobby: room.lobby,
            code: ids::room_code(),
            status,
        };
        self.rooms.lock().unwrap().push(room.clone());
        Ok(room)
    }

    async fn list_rooms(&self) -> Result<Vec<Room>, StoreError> {
        self.check()?;
        Ok(self.rooms.lock().unwrap().clone())
    }

    async fn get_room(&self, id: &str) -> Result<Option<Room>, StoreError> {
        self.check()?;
        Ok(self
            .rooms
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.id == id)
            .cloned())
    }

    async fn room_by_code(&self, code: &str) -> Result<Option<Room>, StoreError> {
        self.check()?;
        let rooms = self.rooms.lock().unwrap();
        Ok(rooms.iter().find(|r| r.code == code).cloned())
    }

    async fn delete_room(&self, id: &str) -> Result<bool, StoreError> {
        self.check()?;
        let mut rooms = self.rooms.lock().unwrap();
        let before = rooms.len();
        rooms.retain(|r| r.id != id);
        Ok(rooms.len() != before)
    }

    async fn set_status(&self, id: &str, status: RoomStatus) -> Result<bool, StoreError> {
        self.check()?;
        let mut rooms = self.rooms.lock().unwrap();
        let room = rooms.iter_mut().find(|r| r.id == id);
        Ok(room.map(|r| r.status = status).is_some())
    }

    async fn record_occurrence(
        &self,
        occurrence: &sabha_signaling::Occurrence,
    ) -> Result<(), StoreError> {
        self.check()?;
        let mut all = self.occurrences.lock().unwrap();
        if !all
            .iter()
            .any(|o| o.room == occurrence.room && o.starts_at == occurrence.starts_at)
        {
            all.push(occurrence.clone());
        }
        Ok(())
    }

    async fn occurrences(
        &self,
        room: &str,
    ) -> Result<Vec<sabha_signaling::Occurrence>, StoreError> {
        self.check()?;
        let mut mine: Vec<_> = self
            .occurrences
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.room == room)
            .cloned()
            .collect();
        mine.sort_by_key(|o| o.starts_at);
        Ok(mine)
    }
}

#[async_trait]
impl AttendanceStore for FakeStore {
    async fn record_join(&self, record: SessionRecord) -> Result<(), StoreError> {
        self.check()?;
        if self.attendance_broken.load(Ordering::SeqCst) {
            return Err(StoreError("attendance table is read-only".into()));
        }
        self.sessions.lock().unwrap().push(record);
        Ok(())
    }

    async fn record_leaves(&self, leaves: &[Leave]) -> Result<u64, StoreError> {
        self.check()?;
        let mut sessions = self.sessions.lock().unwrap();
        let mut closed = 0;
        for leave in leaves {
            let open = sessions
                .iter_mut()
                .find(|s| s.session == leave.session && s.left_at.is_none());
            if let Some(s) = open {
                s.left_at = Some(leave.left_at);
                s.leave_reason = Some(leave.reason.clone());
                s.traffic = leave.traffic;
                closed += 1;
            }
        }
        Ok(closed)
    }

    async fn attendance(&self, room: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.check()?;
        let sessions = self.sessions.lock().unwrap();
        Ok(sessions
            .iter()
            .filter(|s| s.room == room)
            .cloned()
            .collect())
    }
}

/// The organisation in memory.
#[derive(Default)]
pub struct FakeOrg {
    pub units: Mutex<Vec<sabha_signaling::Unit>>,
}

#[async_trait]
impl sabha_signaling::OrgStore for FakeOrg {
    async fn units(&self) -> Result<Vec<sabha_signaling::Unit>, StoreError> {
        let mut units = self.units.lock().unwrap().clone();
        units.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(units)
    }

    async fn apply_org(
        &self,
        upsert: &[sabha_signaling::Unit],
        remove: &[String],
    ) -> Result<(), StoreError> {
        let mut units = self.units.lock().unwrap();
        units.retain(|u| !remove.contains(&u.id) && !upsert.iter().any(|n| n.id == u.id));
        units.extend_from_slice(upsert);
        Ok(())
    }

    async fn ancestry(&self, id: &str) -> Result<Vec<sabha_signaling::Unit>, StoreError> {
        let units = self.units.lock().unwrap();
        let mut chain: Vec<sabha_signaling::Unit> = Vec::new();
        let mut next = Some(id.to_owned());
        while let Some(id) = next.take() {
            let Some(unit) = units.iter().find(|u| u.id == id) else {
                break;
            };
            next.clone_from(&unit.parent);
            chain.push(unit.clone());
        }
        Ok(chain)
    }
}

pub struct FakeMedia {
    next: AtomicU64,
    pub opened: Mutex<Vec<OpenSession>>,
    pub live: Mutex<Vec<String>>,
    pub closed_rooms: Mutex<Vec<String>>,
    /// The last `set_muted` per session.
    pub muted: Mutex<HashMap<String, bool>>,
    /// Set: the server drains, as the binary's drain wrapper does it.
    pub draining: AtomicBool,
    events: broadcast::Sender<MediaEvent>,
}

impl Default for FakeMedia {
    fn default() -> Self {
        Self {
            next: AtomicU64::default(),
            opened: Mutex::default(),
            live: Mutex::default(),
            closed_rooms: Mutex::default(),
            muted: Mutex::default(),
            draining: AtomicBool::default(),
            events: broadcast::channel(64).0,
        }
    }
}

impl FakeMedia {
    /// Sends a media event to the router's subscriber, as the driver would.
    pub fn emit(&self, event: MediaEvent) {
        self.events.send(event).expect("the router subscribed");
    }

    /// The server-side mute of a session, if it was ever set.
    pub fn is_muted(&self, session: &str) -> Option<bool> {
        self.muted.lock().unwrap().get(session).copied()
    }
}

pub const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=answer\r\n";

#[async_trait]
impl MediaControl for FakeMedia {
    async fn open_session(&self, request: OpenSession) -> Result<OpenedSession, MediaError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(MediaError::Draining);
        }
        let offer = request.offer.as_str();
        if offer.contains("no-opus") {
            return Err(MediaError::NoOpus);
        }
        if offer.contains("malformed") {
            return Err(MediaError::MalformedOffer("line 3: expected k=v".into()));
        }
        if offer.contains("wrong-direction") {
            return Err(MediaError::WrongDirection(
                "a WHEP offer must be recvonly, got sendonly".into(),
            ));
        }
        if offer.contains("full") {
            return Err(MediaError::AtCapacity);
        }
        if offer.contains("down") {
            return Err(MediaError::Unavailable);
        }
        let session = format!("s{}", self.next.fetch_add(1, Ordering::SeqCst));
        self.live.lock().unwrap().push(session.clone());
        self.opened.lock().unwrap().push(request);
        Ok(OpenedSession {
            session,
            answer: ANSWER.into(),
        })
    }

    async fn close_session(&self, session: &str) -> Result<bool, MediaError> {
        let mut live = self.live.lock().unwrap();
        let before = live.len();
        live.retain(|s| s != session);
        Ok(live.len() != before)
    }

    async fn close_room(&self, room: &str) -> Result<(), MediaError> {
        self.closed_rooms.lock().unwrap().push(room.to_owned());
        Ok(())
    }

    async fn set_muted(&self, session: &str, muted: bool) -> Result<bool, MediaError> {
        if !self.live.lock().unwrap().iter().any(|s| s == session) {
            return Ok(false);
        }
        self.muted.lock().unwrap().insert(session.to_owned(), muted);
        Ok(true)
    }

    fn subscribe(&self) -> broadcast::Receiver<MediaEvent> {
        self.events.subscribe()
    }

    fn accepting(&self) -> bool {
        !self.draining.load(Ordering::SeqCst)
    }
}

/// Records every published webhook event; fails like a broken disk when
/// `broken` is set.
#[derive(Default)]
pub struct FakeEvents {
    pub events: Mutex<Vec<sabha_signaling::WebhookEvent>>,
    pub broken: AtomicBool,
}

impl FakeEvents {
    /// The bodies published so far, parsed, in order.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| serde_json::from_str(&e.body()).unwrap())
            .collect()
    }
}

#[async_trait]
impl sabha_signaling::EventSink for FakeEvents {
    async fn publish(&self, events: &[sabha_signaling::WebhookEvent]) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StoreError("outbox unwritable".into()));
        }
        self.events.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
}

/// A stored key with its `revoked_at` and `last_used_at`.
pub type FakeKey = (sabha_signaling::NewKey, Option<u64>, Option<u64>);

/// API keys in memory.
#[derive(Default)]
pub struct FakeKeys {
    pub keys: Mutex<Vec<FakeKey>>,
}

fn listed(
    k: &sabha_signaling::NewKey,
    revoked: Option<u64>,
    used: Option<u64>,
) -> sabha_signaling::ApiKey {
    sabha_signaling::ApiKey {
        id: k.id.clone(),
        name: k.name.clone(),
        unit: k.unit.clone(),
        created_at: k.created_at,
        revoked_at: revoked,
        last_used_at: used,
    }
}

#[async_trait]
impl sabha_signaling::KeyStore for FakeKeys {
    async fn create_key(
        &self,
        key: sabha_signaling::NewKey,
    ) -> Result<sabha_signaling::ApiKey, StoreError> {
        let view = listed(&key, None, None);
        self.keys.lock().unwrap().push((key, None, None));
        Ok(view)
    }

    async fn list_keys(&self) -> Result<Vec<sabha_signaling::ApiKey>, StoreError> {
        let keys = self.keys.lock().unwrap();
        Ok(keys.iter().map(|(k, r, u)| listed(k, *r, *u)).collect())
    }

    async fn revoke_key(&self, id: &str, at: u64) -> Result<bool, StoreError> {
        let mut keys = self.keys.lock().unwrap();
        match keys.iter_mut().find(|(k, r, _)| k.id == id && r.is_none()) {
            Some((_, revoked, _)) => {
                *revoked = Some(at);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn key_credential(
        &self,
        id: &str,
    ) -> Result<Option<sabha_signaling::KeyCredential>, StoreError> {
        let keys = self.keys.lock().unwrap();
        Ok(keys.iter().find(|(k, _, _)| k.id == id).map(|(k, r, u)| {
            sabha_signaling::KeyCredential {
                unit: k.unit.clone(),
                secret_hash: k.secret_hash.clone(),
                revoked: r.is_some(),
                last_used_at: *u,
            }
        }))
    }

    async fn touch_key(&self, id: &str, at: u64) -> Result<(), StoreError> {
        let mut keys = self.keys.lock().unwrap();
        if let Some((_, _, used)) = keys.iter_mut().find(|(k, _, _)| k.id == id) {
            *used = Some(at);
        }
        Ok(())
    }
}

/// Members and PIN hashes in memory.
#[derive(Default)]
pub struct FakeMembers {
    pub members: Mutex<Vec<sabha_signaling::Member>>,
    pub pins: Mutex<Vec<(String, sabha_signaling::PinOwner)>>,
}

#[async_trait]
impl sabha_signaling::MemberStore for FakeMembers {
    async fn members(&self) -> Result<Vec<sabha_signaling::Member>, StoreError> {
        let mut members = self.members.lock().unwrap().clone();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(members)
    }

    async fn member(&self, id: &str) -> Result<Option<sabha_signaling::Member>, StoreError> {
        Ok(self
            .members
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.id == id)
            .cloned())
    }

    async fn apply_members(
        &self,
        upsert: &[sabha_signaling::Member],
        remove: &[String],
    ) -> Result<(), StoreError> {
        let mut members = self.members.lock().unwrap();
        members.retain(|m| !remove.contains(&m.id) && !upsert.iter().any(|n| n.id == m.id));
        members.extend_from_slice(upsert);
        self.pins.lock().unwrap().retain(
            |(_, o)| !matches!(o, sabha_signaling::PinOwner::Member(id) if remove.contains(id)),
        );
        Ok(())
    }

    async fn pin_hashes(&self) -> Result<Vec<(String, sabha_signaling::PinOwner)>, StoreError> {
        Ok(self.pins.lock().unwrap().clone())
    }

    async fn replace_pins(
        &self,
        pins: &[(sabha_signaling::PinOwner, String)],
    ) -> Result<(), StoreError> {
        let mut stored = self.pins.lock().unwrap();
        stored.retain(|(_, o)| !pins.iter().any(|(n, _)| n == o));
        for (owner, hash) in pins {
            if stored.iter().any(|(h, _)| h == hash) {
                return Err(StoreError("duplicate PIN hash".into()));
            }
            stored.push((hash.clone(), owner.clone()));
        }
        Ok(())
    }

    async fn pin_owner(&self, hash: &str) -> Result<Option<sabha_signaling::PinOwner>, StoreError> {
        Ok(self
            .pins
            .lock()
            .unwrap()
            .iter()
            .find(|(h, _)| h == hash)
            .map(|(_, o)| o.clone()))
    }
}

/// An `AppState` of fresh fakes with `auth` and `settings`: for tests that
/// only drive the router and need no handle on the fakes themselves.
pub fn app_state(
    auth: sabha_signaling::Auth,
    settings: sabha_signaling::Settings,
) -> sabha_signaling::AppState {
    let store = std::sync::Arc::new(FakeStore::default());
    sabha_signaling::AppState {
        media: std::sync::Arc::new(FakeMedia::default()),
        rooms: store.clone(),
        attendance: store,
        org: std::sync::Arc::new(FakeOrg::default()),
        auth,
        metrics: std::sync::Arc::new(String::new),
        cors: Default::default(),
        settings,
        members: std::sync::Arc::new(FakeMembers::default()),
        pin_key: sabha_signaling::PinKey::derive(b"test pin key"),
        events: std::sync::Arc::new(sabha_signaling::webhooks::Discard),
        keys: std::sync::Arc::new(FakeKeys::default()),
    }
}
