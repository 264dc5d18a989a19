//! Opens scheduled rooms when their window starts and ends them when it
//! ends; on start, catches up with whatever happened while it was down.
//!
//! Two halves. [`plan`] is pure: from a room, its [`Schedule`], the last
//! window recorded for it and the time, it says what to do ([`Step`]) and
//! when to look again. [`Scheduler::tick`] reads the rooms, plans each and
//! carries the steps out (store, room state, media, webhooks). Time comes
//! from an injected [`Clock`], so the tests drive whole evenings and
//! restarts in virtual time; the binary's task ([`Scheduler::run`]) sleeps
//! until the earliest deadline, or until a room changes.
//!
//! What is stored is the room's status and one [`Occurrence`] per window
//! dealt with (held or missed), so a restart resumes from the last recorded
//! window: a window open now is opened (again, if it was open before the
//! crash: sessions reconnect), windows that passed unopened are recorded
//! as missed, and a window held before the crash is not held twice.
//!
//! Admission is not the scheduler's job: the session handlers ask the
//! schedule directly ([`crate::sessions`]: 425 before the window minus the
//! grace, lobby listeners any time), so a late tick never turns anyone away.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use crate::app::AppState;
use crate::backend::{Occurrence, Outcome, Room, RoomStatus, StoreError};
use crate::hub::Hub;
use crate::schedule::{Schedule, Window};
use crate::webhooks::{self, WebhookEvent};

/// The time, for the scheduler.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told: virtual time for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(at: Timestamp) -> Self {
        Self(Mutex::new(at))
    }

    pub fn set(&self, at: Timestamp) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One thing to do to a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The window is open now: let sessions in, release the lobby.
    Open(Window),
    /// The open window is over: end the room's sessions.
    Close(Window),
    /// The window passed without the server opening it.
    Missed(Window),
    /// Store this status.
    Status(RoomStatus),
}

/// What to do to `room` at `now`, and when to look at it again (`None`:
/// never; its series is over). `recorded` are the windows dealt with so
/// far, in order. A series that is over is `ended` if any of its windows
/// was held, `missed` if none was.
pub fn plan(
    room: &Room,
    schedule: &Schedule,
    recorded: &[Occurrence],
    now: Timestamp,
) -> (Vec<Step>, Option<Timestamp>) {
    let mut steps = Vec::new();
    if matches!(room.status, RoomStatus::Ended | RoomStatus::Missed) {
        return (steps, None);
    }
    let last = recorded.last();
    let held_any = recorded.iter().any(|o| o.outcome == Outcome::Held);
    let after = last.map(|o| o.starts_at);
    if room.status == RoomStatus::Open
        && let Some(held) = last.filter(|o| o.outcome == Outcome::Held)
    {
        let window = Window {
            start: held.starts_at,
            end: held.ends_at,
        };
        if now < window.end {
            return (steps, Some(window.end));
        }
        steps.push(Step::Close(window));
    }
    for window in schedule.windows(now) {
        if after.is_some_and(|a| window.start <= a) {
            continue;
        }
        if window.end <= now {
            steps.push(Step::Missed(window));
            continue;
        }
        if window.start <= now {
            steps.push(Step::Open(window));
            return (steps, Some(window.end));
        }
        let closed = steps.iter().any(|s| matches!(s, Step::Close(_)));
        if closed || room.status != RoomStatus::Scheduled {
            steps.push(Step::Status(RoomStatus::Scheduled));
        }
        return (steps, Some(window.start));
    }
    steps.push(Step::Status(if held_any {
        RoomStatus::Ended
    } else {
        RoomStatus::Missed
    }));
    (steps, None)
}

/// Carries out the plans of every scheduled room.
#[derive(Clone)]
pub struct Scheduler {
    app: AppState,
    hub: Hub,
    clock: Arc<dyn Clock>,
}

/// Longest sleep between two looks, whatever the deadlines: a room's
/// schedule edited in the database by hand is picked up within it.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

impl Scheduler {
    /// `hub` must be the router's ([`crate::app::router_with_hub`]).
    pub fn new(app: AppState, hub: Hub, clock: Arc<dyn Clock>) -> Self {
        Self { app, hub, clock }
    }

    /// One look at every room: plans and applies; returns the earliest
    /// deadline.
    pub async fn tick(&self) -> Result<Option<Timestamp>, StoreError> {
        let now = self.clock.now();
        let mut next: Option<Timestamp> = None;
        for room in self.app.rooms.list_rooms().await? {
            let schedule = match Schedule::of(&room) {
                Ok(Some(schedule)) => schedule,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(room = %room.id, %error, "room has an unusable schedule");
                    continue;
                }
            };
            if matches!(room.status, RoomStatus::Ended | RoomStatus::Missed) {
                continue;
            }
            let occurrences = self.app.rooms.occurrences(&room.id).await?;
            let (steps, deadline) = plan(&room, &schedule, &occurrences, now);
            for step in steps {
                self.apply(&room, step).await?;
            }
            if let Some(deadline) = deadline {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
        Ok(next)
    }

    async fn apply(&self, room: &Room, step: Step) -> Result<(), StoreError> {
        let occurrence = |window: Window, outcome| Occurrence {
            room: room.id.clone(),
            starts_at: window.start,
            ends_at: window.end,
            outcome,
        };
        match step {
            Step::Open(window) => {
                self.app
                    .rooms
                    .record_occurrence(&occurrence(window, Outcome::Held))
                    .await?;
                self.app
                    .rooms
                    .set_status(&room.id, RoomStatus::Open)
                    .await?;
                self.hub.reopen(&room.id);
                self.release_lobby(&room.id).await;
                tracing::info!(room = %room.id, start = %window.start, end = %window.end, "room opened");
                let mut opened = room.clone();
                opened.status = RoomStatus::Open;
                webhooks::emit(&self.app.events, vec![WebhookEvent::room_started(&opened)]).await;
            }
            Step::Close(window) => {
                // `room_ended` for the participants, then admission goes by
                // the stored status and the schedule again (425 until the
                // next window's grace, 410 after the series), not by the
                // hub's end flag (which a host's `/end` of this window set).
                self.hub.end(&room.id);
                self.hub.reopen(&room.id);
                if let Err(error) = self.app.media.close_room(&room.id).await {
                    tracing::warn!(room = %room.id, %error, "could not close the room's sessions");
                }
                tracing::info!(room = %room.id, end = %window.end, "room's window ended");
                webhooks::emit(
                    &self.app.events,
                    vec![WebhookEvent::room_ended(&room.id, "schedule")],
                )
                .await;
            }
            Step::Missed(window) => {
                self.app
                    .rooms
                    .record_occurrence(&occurrence(window, Outcome::Missed))
                    .await?;
                tracing::warn!(room = %room.id, start = %window.start, "window missed while the server was down");
            }
            Step::Status(status) => {
                self.app.rooms.set_status(&room.id, status).await?;
            }
        }
        Ok(())
    }

    /// Talkers who came before the start of a lobby room were held muted;
    /// now they are heard (unless a host muted them or they are off stage).
    async fn release_lobby(&self, room: &str) {
        for p in self.hub.participants(room) {
            if p.sends_audio()
                && !p.media_muted()
                && let Err(error) = self.app.media.set_muted(&p.id, false).await
            {
                tracing::warn!(room, session = %p.id, %error, "could not release the lobby");
            }
        }
    }

    /// Ticks until the process ends: at each deadline, at least every
    /// [`MAX_SLEEP`], and whenever a room is created or ended.
    pub async fn run(self) {
        loop {
            let next = match self.tick().await {
                Ok(next) => next,
                Err(error) => {
                    tracing::warn!(%error, "scheduler: rooms not read; trying again");
                    Some(self.clock.now() + jiff::SignedDuration::from_secs(5))
                }
            };
            let sleep = next
                .map(|t| t.duration_since(self.clock.now()))
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.hub.wait_schedule_change() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{ListenProfile, RoomKind};

    fn t(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn room(status: RoomStatus, rule: Option<&str>) -> Room {
        Room {
            id: "weeklyrally1".into(),
            name: "Weekly".into(),
            kind: RoomKind::Rally,
            profile: ListenProfile::Standard,
            created_at: "2026-11-30T00:00:00Z".into(),
            unit: None,
            // Thursday 3 Dec 2026, 18:00–19:00 IST.
            starts_at: Some(t("2026-12-03T12:30:00Z")),
            ends_at: Some(t("2026-12-03T13:30:00Z")),
            time_zone: "Asia/Kolkata".into(),
            recurrence: rule.map(Into::into),
            capacity: None,
            hosts: Vec::new(),
            lobby: false,
            code: "12345678".into(),
            status,
        }
    }

    fn held(start: &str, end: &str) -> Occurrence {
        Occurrence {
            room: "weeklyrally1".into(),
            starts_at: t(start),
            ends_at: t(end),
            outcome: Outcome::Held,
        }
    }

    fn window(start: &str, end: &str) -> Window {
        Window {
            start: t(start),
            end: t(end),
        }
    }

    #[test]
    fn a_one_off_opens_closes_and_ends() {
        let r = room(RoomStatus::Scheduled, None);
        let s = Schedule::of(&r).unwrap().unwrap();
        let w = window("2026-12-03T12:30:00Z", "2026-12-03T13:30:00Z");
        assert_eq!(
            plan(&r, &s, &[], t("2026-12-03T12:00:00Z")),
            (vec![], Some(w.start))
        );
        assert_eq!(
            plan(&r, &s, &[], w.start),
            (vec![Step::Open(w)], Some(w.end))
        );
        let open = room(RoomStatus::Open, None);
        let h = held("2026-12-03T12:30:00Z", "2026-12-03T13:30:00Z");
        assert_eq!(
            plan(
                &open,
                &s,
                std::slice::from_ref(&h),
                t("2026-12-03T13:00:00Z")
            ),
            (vec![], Some(w.end))
        );
        assert_eq!(
            plan(&open, &s, std::slice::from_ref(&h), w.end),
            (vec![Step::Close(w), Step::Status(RoomStatus::Ended)], None)
        );
    }

    #[test]
    fn a_one_off_that_passed_unopened_is_missed() {
        let r = room(RoomStatus::Scheduled, None);
        let s = Schedule::of(&r).unwrap().unwrap();
        let w = window("2026-12-03T12:30:00Z", "2026-12-03T13:30:00Z");
        assert_eq!(
            plan(&r, &s, &[], t("2026-12-04T00:00:00Z")),
            (
                vec![Step::Missed(w), Step::Status(RoomStatus::Missed)],
                None
            )
        );
    }

    /// Down from Thursday's window until Monday's is on: Thursday's close
    /// and Monday's open come in one look.
    #[test]
    fn a_recurring_room_closes_one_window_and_opens_the_next() {
        let open = room(RoomStatus::Open, Some("FREQ=WEEKLY;BYDAY=MO,TH;COUNT=3"));
        let s = Schedule::of(&open).unwrap().unwrap();
        let thu = held("2026-12-03T12:30:00Z", "2026-12-03T13:30:00Z");
        let mon = window("2026-12-07T12:30:00Z", "2026-12-07T13:30:00Z");
        assert_eq!(
            plan(
                &open,
                &s,
                std::slice::from_ref(&thu),
                t("2026-12-03T13:30:00Z")
            ),
            (
                vec![
                    Step::Close(window("2026-12-03T12:30:00Z", "2026-12-03T13:30:00Z")),
                    Step::Status(RoomStatus::Scheduled)
                ],
                Some(mon.start)
            )
        );
        assert_eq!(
            plan(
                &open,
                &s,
                std::slice::from_ref(&thu),
                t("2026-12-07T13:00:00Z")
            ),
            (
                vec![
                    Step::Close(window("2026-12-03T12:30:00Z", "2026-12-03T13:30:00Z")),
                    Step::Open(mon)
                ],
                Some(mon.end)
            )
        );
    }
}
