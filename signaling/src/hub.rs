//! Rooms as the signaling side sees them: who is in, who may come in, and a
//! broadcast of what happens, for the event sockets.
//!
//! This is control-plane state (names, roles, hands, stage, lock), not media
//! state: the media driver owns sessions and their audio, and tells us what
//! it observes through `MediaControl::subscribe` ([`follow_media`]). One
//! `std::sync::Mutex` guards every room; it is held only to read or change a
//! few fields and to hand a message to a `broadcast::Sender` (which never
//! waits), never across an `.await`. Taking the lock to bump `seq` *and* send
//! keeps the channel in `seq` order, and [`Hub::subscribe`] snapshots the
//! roster under the same lock, so a socket's first message and its stream of
//! events neither overlap nor leave a gap.
//!
//! Each room has two streams. The **full** one carries every event, for
//! hosts, speakers and bridge participants. The **audience** one, for
//! listeners' sockets, leaves out every event about a listen (WHEP)
//! session — joins, leaves, hands — and carries instead an `audience`
//! count at most once per [`AUDIENCE_EVERY`]; a listener still gets the
//! events about itself, on a channel of its own session. Without that, a
//! rally of N listeners with open pages sends N events to N sockets as it
//! fills: N² frames, 2.5 billion at 50,000. Now each listener's join costs
//! one frame (to the few full sockets) plus its share of a count.
//!
//! Lock and end are in memory only: a restart forgets them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::backend::{MediaEvent, Role, SessionKind, SpeakerLevel};
use crate::events::{Event, Level, Message, Participant};

/// Events buffered per room for a slow socket before it lags (it then gets
/// a fresh roster).
pub const ROOM_EVENTS_CAPACITY: usize = 256;

/// Events buffered for one listener's own session (its hand, its
/// promotion): few, and a lag only costs a fresh roster.
const OWN_EVENTS_CAPACITY: usize = 16;

/// How often a changing listener count goes out as an `audience` event.
pub const AUDIENCE_EVERY: Duration = Duration::from_secs(1);

/// What a socket sees of a room: see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Every event.
    Full,
    /// The stage and the socket's own session; the crowd as a count.
    Audience,
}

impl View {
    /// Listeners watch the stage; everyone else (hosts, speakers, bridge
    /// participants) runs or takes part in the room and sees all of it.
    pub fn for_role(role: Role) -> Self {
        if role == Role::Listener {
            View::Audience
        } else {
            View::Full
        }
    }
}

/// A socket's streams: the room's (full or audience) and, for a listener
/// bound to its session, that session's own events.
pub struct Subscription {
    pub roster: Message,
    pub room: broadcast::Receiver<Message>,
    pub own: Option<broadcast::Receiver<Message>>,
}

/// Every room's control-plane state. Cheap to clone.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<Rooms>>,
    /// Wakes the scheduler when a room is created, deleted or ended, so it
    /// looks at the schedules again before its next deadline.
    schedule_changed: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Rooms {
    rooms: HashMap<String, RoomState>,
    /// session id → room id, for events that only name the session.
    sessions: HashMap<String, String>,
}

struct RoomState {
    /// In the order they joined.
    participants: Vec<Participant>,
    locked: bool,
    ended: bool,
    /// The last event's number; the roster snapshot carries it.
    seq: u64,
    /// The full stream.
    events: broadcast::Sender<Message>,
    /// The audience stream.
    stage: broadcast::Sender<Message>,
    /// Listen sessions' own events, for those whose socket is bound.
    own: HashMap<String, broadcast::Sender<Message>>,
    /// Listen sessions in `participants`.
    listeners: usize,
    /// `listeners` changed since the last `audience` event.
    listeners_changed: bool,
}

impl Default for RoomState {
    fn default() -> Self {
        Self {
            participants: Vec::new(),
            locked: false,
            ended: false,
            seq: 0,
            events: broadcast::channel(ROOM_EVENTS_CAPACITY).0,
            stage: broadcast::channel(ROOM_EVENTS_CAPACITY).0,
            own: HashMap::new(),
            listeners: 0,
            listeners_changed: false,
        }
    }
}

impl RoomState {
    /// Sends a room-wide event (lock, speaking, counts…) to both streams.
    fn emit(&mut self, event: Event) {
        self.send(event, None);
    }

    /// Sends an event about session `id`: to the full stream, and to the
    /// audience stream unless it is a listen session, whose own channel
    /// gets it instead.
    fn emit_about(&mut self, id: &str, kind: SessionKind, event: Event) {
        self.send(event, (kind == SessionKind::Listen).then_some(id));
    }

    fn send(&mut self, event: Event, listener: Option<&str>) {
        self.seq += 1;
        let message = Message {
            seq: self.seq,
            event,
        };
        // No receiver is fine: nobody is watching.
        match listener {
            Some(id) => {
                if let Some(own) = self.own.get(id) {
                    let _ = own.send(message.clone());
                }
            }
            None => drop(self.stage.send(message.clone())),
        }
        let _ = self.events.send(message);
    }

    fn is_listener(&self, id: &str) -> bool {
        self.participants
            .iter()
            .any(|p| p.id == id && p.kind == SessionKind::Listen)
    }

    fn roster(&self, view: View, session: Option<&str>) -> Message {
        let participants = match view {
            View::Full => self.participants.clone(),
            View::Audience => self
                .participants
                .iter()
                .filter(|p| p.kind != SessionKind::Listen || Some(p.id.as_str()) == session)
                .cloned()
                .collect(),
        };
        Message {
            seq: self.seq,
            event: Event::Roster {
                participants,
                listeners: self.listeners,
                locked: self.locked,
                ended: self.ended,
            },
        }
    }

    fn count_listener(&mut self, participant: &Participant, delta: isize) {
        if participant.kind == SessionKind::Listen {
            self.listeners = self.listeners.saturating_add_signed(delta);
            self.listeners_changed = true;
        }
    }

    fn find(&mut self, id: &str) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.id == id)
    }
}

/// Why a session may not open in a room now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the room is locked")]
    Locked,
    #[error("the room has ended")]
    Ended,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Rooms> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_room<T>(&self, room: &str, f: impl FnOnce(&mut RoomState) -> T) -> T {
        f(self.lock().rooms.entry(room.to_owned()).or_default())
    }

    /// Whether `role` may open a session in `room` now: nobody once it has
    /// ended, only hosts while it is locked.
    pub fn admit(&self, room: &str, role: Role) -> Result<(), Refusal> {
        self.with_room(room, |state| admission(state, role))
    }

    /// Adds a session that has just opened (event `joined`). Checks
    /// admission again, atomically, for a lock or end that came while the
    /// media side was busy opening it.
    pub fn join(&self, room: &str, participant: Participant) -> Result<(), Refusal> {
        let mut rooms = self.lock();
        let state = rooms.rooms.entry(room.to_owned()).or_default();
        admission(state, participant.role)?;
        let (id, kind) = (participant.id.clone(), participant.kind);
        state.count_listener(&participant, 1);
        state.participants.push(participant.clone());
        state.emit_about(&id, kind, Event::Joined { participant });
        rooms.sessions.insert(id, room.to_owned());
        Ok(())
    }

    /// Removes a session (event `left`), wherever it is. `None` when no room
    /// has it, so a second notice of the same end is silent.
    pub fn leave(&self, session: &str, reason: &str) -> Option<Participant> {
        let mut rooms = self.lock();
        let room = rooms.sessions.remove(session)?;
        let state = rooms.rooms.get_mut(&room)?;
        let index = state.participants.iter().position(|p| p.id == session)?;
        let kind = state.participants[index].kind;
        state.emit_about(
            session,
            kind,
            Event::Left {
                participant: session.to_owned(),
                reason: reason.to_owned(),
            },
        );
        let participant = state.participants.remove(index);
        state.count_listener(&participant, -1);
        state.own.remove(session);
        Some(participant)
    }

    /// The room of a live session.
    pub fn room_of(&self, session: &str) -> Option<String> {
        self.lock().sessions.get(session).cloned()
    }

    /// Live sessions over all rooms: a drain waits for this to reach zero.
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// The rooms that have at least one live session, in no order.
    pub fn live_rooms(&self) -> Vec<String> {
        let rooms = self.lock();
        rooms
            .rooms
            .iter()
            .filter(|(_, state)| !state.participants.is_empty())
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn participants(&self, room: &str) -> Vec<Participant> {
        let rooms = self.lock();
        rooms
            .rooms
            .get(room)
            .map(|state| state.participants.clone())
            .unwrap_or_default()
    }

    pub fn participant(&self, room: &str, id: &str) -> Option<Participant> {
        let rooms = self.lock();
        let state = rooms.rooms.get(room)?;
        state.participants.iter().find(|p| p.id == id).cloned()
    }

    /// Changes one participant with `change`, which returns the event to
    /// send (or `None` when nothing changed). The participant afterwards, or
    /// `None` if it is not in `room`.
    pub fn update(
        &self,
        room: &str,
        id: &str,
        change: impl FnOnce(&mut Participant) -> Option<Event>,
    ) -> Option<Participant> {
        self.with_room(room, |state| {
            let participant = state.find(id)?;
            let event = change(participant);
            let after = participant.clone();
            if let Some(event) = event {
                state.emit_about(&after.id, after.kind, event);
            }
            Some(after)
        })
    }

    /// Locks or unlocks; an event only when it changed.
    pub fn set_locked(&self, room: &str, locked: bool) {
        self.with_room(room, |state| {
            if state.locked != locked {
                state.locked = locked;
                state.emit(if locked {
                    Event::Locked
                } else {
                    Event::Unlocked
                });
            }
        });
    }

    /// Ends the room (event `room_ended`) and forgets its participants; the
    /// caller closes their sessions. Returns whether it was running.
    pub fn end(&self, room: &str) -> bool {
        let mut rooms = self.lock();
        let state = rooms.rooms.entry(room.to_owned()).or_default();
        if state.ended {
            return false;
        }
        state.ended = true;
        let gone: Vec<String> = state.participants.drain(..).map(|p| p.id).collect();
        state.own.clear();
        state.listeners = 0;
        state.listeners_changed = false;
        state.emit(Event::RoomEnded);
        for id in gone {
            rooms.sessions.remove(&id);
        }
        true
    }

    /// Lets sessions in again after [`Hub::end`]: the next window of a
    /// recurring room. Returns whether it had ended.
    pub fn reopen(&self, room: &str) -> bool {
        self.with_room(room, |state| std::mem::replace(&mut state.ended, false))
    }

    /// Tells the scheduler that rooms changed.
    pub fn schedule_changed(&self) {
        self.schedule_changed.notify_one();
    }

    /// Waits for [`Hub::schedule_changed`] (a call before the wait counts).
    pub async fn wait_schedule_change(&self) {
        self.schedule_changed.notified().await;
    }

    /// Drops all state of a deleted room. Its sockets see their stream close.
    pub fn forget(&self, room: &str) {
        let mut rooms = self.lock();
        if let Some(state) = rooms.rooms.remove(room) {
            for p in state.participants {
                rooms.sessions.remove(&p.id);
            }
        }
    }

    /// The roster now, and every event after it that `view` shows, for a
    /// socket bound to `session` (if any).
    pub fn subscribe(&self, room: &str, view: View, session: Option<&str>) -> Subscription {
        self.with_room(room, |state| {
            let own = match (view, session) {
                (View::Audience, Some(id)) if state.is_listener(id) => Some(
                    state
                        .own
                        .entry(id.to_owned())
                        .or_insert_with(|| broadcast::channel(OWN_EVENTS_CAPACITY).0)
                        .subscribe(),
                ),
                _ => None,
            };
            Subscription {
                roster: state.roster(view, session),
                room: match view {
                    View::Full => state.events.subscribe(),
                    View::Audience => state.stage.subscribe(),
                },
                own,
            }
        })
    }

    /// A fresh roster, for a socket that fell behind.
    pub fn roster(&self, room: &str, view: View, session: Option<&str>) -> Message {
        self.with_room(room, |state| state.roster(view, session))
    }

    /// Sends an `audience` event to every room whose listener count
    /// changed since the last one. [`count_audience`] calls it every
    /// [`AUDIENCE_EVERY`].
    pub fn flush_audience(&self) {
        let mut rooms = self.lock();
        for state in rooms.rooms.values_mut() {
            if std::mem::take(&mut state.listeners_changed) {
                let listeners = state.listeners;
                state.emit(Event::Audience { listeners });
            }
        }
    }

    /// Applies what the media side observed.
    pub fn handle_media(&self, event: MediaEvent) {
        match event {
            // The roster lists sessions from their 201 on; whether audio
            // flows yet is not shown.
            MediaEvent::Connected { .. } => {}
            MediaEvent::Closed {
                session, reason, ..
            } => {
                self.leave(&session, &reason);
            }
            MediaEvent::Speaking { room, speakers } => self.speaking(&room, speakers),
        }
    }

    fn speaking(&self, room: &str, speakers: Vec<SpeakerLevel>) {
        let mut rooms = self.lock();
        let Some(state) = rooms.rooms.get_mut(room) else {
            return; // nobody registered there: nothing to tell
        };
        for p in &mut state.participants {
            p.speaking = speakers.iter().any(|s| s.session == p.id);
        }
        let speakers = speakers
            .into_iter()
            .map(|s| Level {
                id: s.session,
                level: s.level,
            })
            .collect();
        state.emit(Event::Speaking { speakers });
    }

    fn downgrade(&self) -> Weak<Mutex<Rooms>> {
        Arc::downgrade(&self.inner)
    }
}

fn admission(state: &RoomState, role: Role) -> Result<(), Refusal> {
    if state.ended {
        Err(Refusal::Ended)
    } else if state.locked && role != Role::Host {
        Err(Refusal::Locked)
    } else {
        Ok(())
    }
}

/// Spawns the task that sends listener counts ([`Hub::flush_audience`])
/// every `every`. It ends when every handle to the hub is gone.
pub fn count_audience(hub: &Hub, every: Duration) {
    let weak = hub.downgrade();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match weak.upgrade() {
                Some(inner) => Hub {
                    inner,
                    schedule_changed: Arc::default(),
                }
                .flush_audience(),
                None => return,
            }
        }
    });
}

/// Spawns the task that applies media events to `hub`. It ends when the
/// media side drops its sender or when every handle to the hub is gone.
pub fn follow_media(hub: &Hub, events: broadcast::Receiver<MediaEvent>) {
    tokio::spawn(run_follower(hub.downgrade(), events));
}

async fn run_follower(hub: Weak<Mutex<Rooms>>, mut events: broadcast::Receiver<MediaEvent>) {
    use broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(event) => match hub.upgrade() {
                Some(inner) => Hub {
                    inner,
                    schedule_changed: Arc::default(),
                }
                .handle_media(event),
                None => return,
            },
            Err(RecvError::Lagged(missed)) => {
                // Speaking sets are replaced by the next one; a missed Closed
                // leaves a stale entry until its room ends or is deleted.
                tracing::warn!(missed, "room events fell behind the media side");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::SessionKind;

    fn person(id: &str, role: Role) -> Participant {
        Participant {
            id: id.into(),
            name: Some("Asha".into()),
            role,
            kind: SessionKind::Join,
            muted: false,
            speaking: false,
            hand_raised: false,
            on_stage: true,
        }
    }

    #[test]
    fn sessions_and_live_rooms_are_counted_over_all_rooms() {
        let hub = Hub::default();
        assert_eq!((hub.session_count(), hub.live_rooms().len()), (0, 0));
        hub.join("a", person("s1", Role::Host)).unwrap();
        hub.join("a", person("s2", Role::Participant)).unwrap();
        hub.join("b", person("s3", Role::Participant)).unwrap();
        let mut live = hub.live_rooms();
        live.sort();
        assert_eq!(
            (hub.session_count(), live),
            (3, vec!["a".into(), "b".into()])
        );
        hub.leave("s3", "left");
        assert_eq!(
            (hub.session_count(), hub.live_rooms()),
            (2, vec!["a".to_owned()])
        );
        hub.leave("s1", "left");
        hub.leave("s2", "left");
        assert_eq!((hub.session_count(), hub.live_rooms().len()), (0, 0));
    }

    #[test]
    fn roster_then_events_in_sequence() {
        let hub = Hub::default();
        hub.join("r", person("s1", Role::Host)).unwrap();
        let Subscription {
            roster,
            room: mut rx,
            ..
        } = hub.subscribe("r", View::Full, None);
        assert_eq!(roster.seq, 1);
        let Event::Roster { participants, .. } = roster.event else {
            panic!("{roster:?}")
        };
        assert_eq!(participants.len(), 1);
        hub.join("r", person("s2", Role::Participant)).unwrap();
        hub.leave("s2", "left").unwrap();
        let joined = rx.try_recv().unwrap();
        assert!(matches!(joined.event, Event::Joined { .. }));
        assert_eq!(joined.seq, 2);
        let left = rx.try_recv().unwrap();
        assert_eq!(left.seq, 3);
        assert_eq!(
            left.event,
            Event::Left {
                participant: "s2".into(),
                reason: "left".into()
            }
        );
        assert!(hub.leave("s2", "left").is_none(), "second notice is silent");
    }

    fn listener(id: &str) -> Participant {
        Participant {
            kind: SessionKind::Listen,
            on_stage: false,
            ..person(id, Role::Listener)
        }
    }

    fn drain(rx: &mut broadcast::Receiver<Message>) -> Vec<Event> {
        std::iter::from_fn(|| rx.try_recv().ok().map(|m| m.event)).collect()
    }

    #[test]
    fn the_audience_sees_the_stage_and_a_count_not_the_crowd() {
        let hub = Hub::default();
        hub.join("r", person("host", Role::Host)).unwrap();
        hub.join("r", listener("me")).unwrap();
        hub.join("r", listener("l1")).unwrap();
        let mut full = hub.subscribe("r", View::Full, None).room;
        let mine = hub.subscribe("r", View::Audience, Some("me"));
        let Event::Roster {
            participants,
            listeners,
            ..
        } = &mine.roster.event
        else {
            panic!("{:?}", mine.roster)
        };
        let ids: Vec<&str> = participants.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["host", "me"], "the stage and myself");
        assert_eq!(*listeners, 2);
        let (mut audience, mut own) = (mine.room, mine.own.expect("a listener's own channel"));

        for i in 2..50 {
            hub.join("r", listener(&format!("l{i}"))).unwrap();
        }
        hub.leave("l1", "left").unwrap();
        let raise = |p: &mut Participant| {
            p.hand_raised = true;
            Some(Event::HandRaised {
                participant: p.id.clone(),
            })
        };
        hub.update("r", "l2", raise).unwrap();
        hub.update("r", "me", raise).unwrap();
        hub.join("r", person("guest", Role::Speaker)).unwrap();
        hub.flush_audience();
        hub.flush_audience(); // nothing changed since: no second count

        let seen = drain(&mut audience);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(matches!(&seen[0], Event::Joined { participant } if participant.id == "guest"));
        assert_eq!(seen[1], Event::Audience { listeners: 49 });
        assert_eq!(
            drain(&mut own),
            [Event::HandRaised {
                participant: "me".into()
            }]
        );
        // Hosts see everything: 48 joins, a leave, two hands, a join, the count.
        assert_eq!(drain(&mut full).len(), 48 + 1 + 2 + 1 + 1);
    }

    #[test]
    fn own_channels_are_for_listeners_and_end_with_the_session() {
        let hub = Hub::default();
        hub.join("r", listener("me")).unwrap();
        hub.join("r", person("p", Role::Participant)).unwrap();
        assert!(hub.subscribe("r", View::Audience, Some("p")).own.is_none());
        assert!(hub.subscribe("r", View::Full, Some("me")).own.is_none());
        assert!(
            hub.subscribe("r", View::Audience, Some("ghost"))
                .own
                .is_none()
        );
        let mut own = hub.subscribe("r", View::Audience, Some("me")).own.unwrap();
        hub.leave("me", "left").unwrap();
        assert!(matches!(own.try_recv().unwrap().event, Event::Left { .. }));
        assert_eq!(
            own.try_recv(),
            Err(broadcast::error::TryRecvError::Closed),
            "the session is gone"
        );
        assert_eq!(View::for_role(Role::Listener), View::Audience);
        assert_eq!(View::for_role(Role::Host), View::Full);
    }

    #[test]
    fn lock_admits_hosts_only_and_end_admits_nobody() {
        let hub = Hub::default();
        hub.set_locked("r", true);
        assert_eq!(hub.admit("r", Role::Listener), Err(Refusal::Locked));
        assert_eq!(hub.admit("r", Role::Host), Ok(()));
        assert_eq!(
            hub.join("r", person("s1", Role::Speaker)),
            Err(Refusal::Locked)
        );
        hub.set_locked("r", false);
        hub.join("r", person("s1", Role::Speaker)).unwrap();
        assert!(hub.end("r"));
        assert!(!hub.end("r"));
        assert_eq!(hub.admit("r", Role::Host), Err(Refusal::Ended));
        assert!(hub.participants("r").is_empty());
        assert_eq!(hub.room_of("s1"), None);
    }

    #[test]
    fn update_emits_only_on_change() {
        let hub = Hub::default();
        hub.join("r", person("s1", Role::Participant)).unwrap();
        let mut rx = hub.subscribe("r", View::Full, None).room;
        let mute = |p: &mut Participant| {
            (!p.muted).then(|| {
                p.muted = true;
                Event::Muted {
                    participant: p.id.clone(),
                }
            })
        };
        assert!(hub.update("r", "s1", mute).unwrap().muted);
        assert!(hub.update("r", "s1", mute).unwrap().muted);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err(), "no event for a no-op");
        assert!(hub.update("r", "nobody", mute).is_none());
        assert!(hub.update("other", "s1", mute).is_none());
    }

    #[test]
    fn media_events_update_the_roster() {
        let hub = Hub::default();
        hub.join("r", person("s1", Role::Participant)).unwrap();
        hub.join("r", person("s2", Role::Participant)).unwrap();
        let mut rx = hub.subscribe("r", View::Full, None).room;
        hub.handle_media(MediaEvent::Speaking {
            room: "r".into(),
            speakers: vec![SpeakerLevel {
                session: "s2".into(),
                level: 30,
            }],
        });
        let speaking: Vec<bool> = hub.participants("r").iter().map(|p| p.speaking).collect();
        assert_eq!(speaking, [false, true]);
        assert_eq!(
            rx.try_recv().unwrap().event,
            Event::Speaking {
                speakers: vec![Level {
                    id: "s2".into(),
                    level: 30
                }]
            }
        );
        hub.handle_media(MediaEvent::Closed {
            room: "r".into(),
            session: "s1".into(),
            reason: "ice_timeout".into(),
            traffic: Default::default(),
        });
        assert_eq!(
            rx.try_recv().unwrap().event,
            Event::Left {
                participant: "s1".into(),
                reason: "ice_timeout".into()
            }
        );
        assert_eq!(hub.participants("r").len(), 1);
    }

    #[tokio::test]
    async fn follower_applies_media_events_and_survives_lag() {
        let hub = Hub::default();
        hub.join("r", person("s1", Role::Participant)).unwrap();
        let (media, rx) = broadcast::channel(1);
        follow_media(&hub, rx);
        // Overflow the one-slot channel: the follower lags, then continues.
        for _ in 0..3 {
            media
                .send(MediaEvent::Connected {
                    room: "r".into(),
                    session: "s1".into(),
                })
                .unwrap();
        }
        media
            .send(MediaEvent::Closed {
                room: "r".into(),
                session: "s1".into(),
                reason: "failed".into(),
                traffic: Default::default(),
            })
            .unwrap();
        for _ in 0..100 {
            if hub.participants("r").is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the follower did not apply Closed");
    }
}
