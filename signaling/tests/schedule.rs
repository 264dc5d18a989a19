//! Scheduled rooms through the router and the scheduler, in virtual time:
//! windows open and close on time, a restart in the middle of a window
//! reopens it, windows that pass while the server is down are recorded as
//! missed, and the session routes answer 425 before a window (lobby
//! listeners excepted), 410 after the series, 409 for a double-booked host.

mod fakes;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use fakes::{FakeMedia, FakeStore};
use jiff::{SignedDuration, Timestamp};
use sabha_signaling::hub::Hub;
use sabha_signaling::scheduler::{ManualClock, Scheduler};
use sabha_signaling::{AppState, Auth, CorsConfig, OperatorKey, router_with_hub};
use serde_json::{Value, json};
use tower::ServiceExt;

const KEY: &str = "sk_schedule_tests";
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

struct Harness {
    app: Router,
    state: AppState,
    store: Arc<FakeStore>,
    media: Arc<FakeMedia>,
    clock: Arc<ManualClock>,
    scheduler: Scheduler,
}

struct Reply {
    status: StatusCode,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

fn t(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn state(store: Arc<FakeStore>, media: Arc<FakeMedia>) -> AppState {
    AppState {
        media,
        rooms: store.clone(),
        attendance: store,
        org: Arc::new(fakes::FakeOrg::default()),
        auth: Auth::new(b"test secret, 32 bytes long......", OperatorKey::new(KEY)),
        metrics: Arc::new(String::new),
        cors: CorsConfig::default(),
        settings: sabha_signaling::Settings::default(),
        events: Arc::new(sabha_signaling::webhooks::Discard),
        keys: Arc::new(fakes::FakeKeys::default()),
        members: Arc::new(fakes::FakeMembers::default()),
        pin_key: sabha_signaling::PinKey::derive(b"test pin key"),
    }
}

fn harness() -> Harness {
    let store = Arc::new(FakeStore::default());
    let media = Arc::new(FakeMedia::default());
    let state = state(store.clone(), media.clone());
    let hub = Hub::default();
    let clock = Arc::new(ManualClock::new(t("2030-01-01T00:00:00Z")));
    Harness {
        app: router_with_hub(state.clone(), hub.clone()),
        scheduler: Scheduler::new(state.clone(), hub, clock.clone()),
        state,
        store,
        media,
        clock,
    }
}

impl Harness {
    /// The server restarts: fresh room state and scheduler, same store.
    fn restart(&mut self) {
        let hub = Hub::default();
        self.app = router_with_hub(self.state.clone(), hub.clone());
        self.scheduler = Scheduler::new(self.state.clone(), hub, self.clock.clone());
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"));
        let request = match body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        }
        .unwrap();
        self.send(request).await
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            body: axum::body::to_bytes(body, 1 << 20).await.unwrap(),
        }
    }

    async fn create(&self, body: Value) -> Value {
        let reply = self.call(Method::POST, "/v1/rooms", Some(body)).await;
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()
    }

    async fn status(&self, room: &str) -> String {
        let room = self
            .call(Method::GET, &format!("/v1/rooms/{room}"), None)
            .await;
        room.json()["status"].as_str().unwrap().to_owned()
    }

    async fn occurrences(&self, room: &str) -> Vec<(String, String)> {
        let reply = self
            .call(Method::GET, &format!("/v1/rooms/{room}/occurrences"), None)
            .await;
        assert_eq!(reply.status, 200);
        reply
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["starts_at"].as_str().unwrap().to_owned(),
                    o["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Moves virtual time and lets the scheduler act; its next deadline.
    async fn at(&self, time: &str) -> Option<Timestamp> {
        self.clock.set(t(time));
        self.scheduler.tick().await.unwrap()
    }

    async fn session(&self, room: &str, endpoint: &str) -> Reply {
        let request = Request::post(format!("/v1/rooms/{room}/{endpoint}"))
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
            .header(header::CONTENT_TYPE, "application/sdp")
            .body(Body::from(OFFER))
            .unwrap();
        self.send(request).await
    }
}

/// Mondays and Thursdays at 18:00–19:00 IST, four times, from Thursday
/// 3 Jan 2030: Thu 3, Mon 7, Thu 10, Mon 14.
fn weekly() -> Value {
    json!({
        "name": "Weekly rally", "kind": "rally",
        "starts_at": "2030-01-03T12:30:00Z", "ends_at": "2030-01-03T13:30:00Z",
        "time_zone": "Asia/Kolkata", "recurrence": "FREQ=WEEKLY;BYDAY=MO,TH;COUNT=4"
    })
}

#[tokio::test]
async fn windows_open_and_close_on_time_across_restarts_and_downtime() {
    let mut h = harness();
    let room = h.create(weekly()).await;
    let id = room["id"].as_str().unwrap().to_owned();
    assert_eq!(room["status"], "scheduled");
    assert_eq!(room["starts_at_local"], "2030-01-03T18:00:00+05:30");
    assert_eq!(room["next_starts_at"], "2030-01-03T12:30:00Z");

    // Before the first window: nothing, and the next look is at its start.
    assert_eq!(
        h.at("2030-01-03T12:00:00Z").await,
        Some(t("2030-01-03T12:30:00Z"))
    );
    assert_eq!(h.status(&id).await, "scheduled");
    // Thursday's window opens, then ends: sessions are closed.
    assert_eq!(
        h.at("2030-01-03T12:30:00Z").await,
        Some(t("2030-01-03T13:30:00Z"))
    );
    assert_eq!(h.status(&id).await, "open");
    assert!(h.media.closed_rooms.lock().unwrap().is_empty());
    // Across the week boundary: the next look is Monday's start.
    assert_eq!(
        h.at("2030-01-03T13:30:00Z").await,
        Some(t("2030-01-07T12:30:00Z"))
    );
    assert_eq!(h.status(&id).await, "scheduled");
    assert_eq!(
        *h.media.closed_rooms.lock().unwrap(),
        std::slice::from_ref(&id)
    );

    // Monday's window opens; the server restarts in the middle of it. The
    // new one keeps it open, and does not record it twice.
    h.at("2030-01-07T12:31:00Z").await;
    assert_eq!(h.status(&id).await, "open");
    h.restart();
    assert_eq!(
        h.at("2030-01-07T13:00:00Z").await,
        Some(t("2030-01-07T13:30:00Z"))
    );
    assert_eq!(h.status(&id).await, "open");

    // Down from then until Tuesday 15th: Monday's window is closed on the
    // next start, Thursday's and the last Monday's are missed, and the
    // series is over.
    h.restart();
    assert_eq!(h.at("2030-01-15T06:00:00Z").await, None);
    assert_eq!(h.status(&id).await, "ended");
    assert_eq!(
        h.occurrences(&id).await,
        [
            ("2030-01-03T12:30:00Z".into(), "held".into()),
            ("2030-01-07T12:30:00Z".into(), "held".into()),
            ("2030-01-10T12:30:00Z".into(), "missed".into()),
            ("2030-01-14T12:30:00Z".into(), "missed".into()),
        ]
    );
    assert_eq!(h.media.closed_rooms.lock().unwrap().len(), 2);
    assert_eq!(
        h.session(&id, "whep").await.status,
        410,
        "the series is over"
    );
}

#[tokio::test]
async fn a_one_off_missed_entirely_is_missed() {
    let h = harness();
    let room = h
        .create(json!({
            "name": "Tuesday bridge", "kind": "bridge",
            "starts_at": "2030-02-05T13:00:00Z", "ends_at": "2030-02-05T14:00:00Z"
        }))
        .await;
    let id = room["id"].as_str().unwrap();
    assert_eq!(h.at("2030-02-06T00:00:00Z").await, None);
    assert_eq!(h.status(id).await, "missed");
    assert_eq!(
        h.occurrences(id).await,
        [("2030-02-05T13:00:00Z".into(), "missed".into())]
    );
    assert!(
        h.media.closed_rooms.lock().unwrap().is_empty(),
        "never opened"
    );
}

fn in_minutes(minutes: i64) -> String {
    (Timestamp::now() + SignedDuration::from_mins(minutes)).to_string()
}

/// Admission reads the wall clock (sessions are real time); windows are
/// placed around now.
#[tokio::test]
async fn sessions_before_the_window_get_425_except_lobby_listeners() {
    let h = harness();
    let later = h
        .create(json!({
            "name": "Evening", "kind": "rally",
            "starts_at": in_minutes(60), "ends_at": in_minutes(120)
        }))
        .await;
    let reply = h.session(later["id"].as_str().unwrap(), "whep").await;
    assert_eq!(reply.status, 425);
    let problem = reply.json();
    assert_eq!(problem["starts_at"], later["starts_at"], "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(later["starts_at"].as_str().unwrap()),
        "{problem}"
    );

    // Within the grace (10 minutes by default) sessions open.
    let soon = h
        .create(json!({
            "name": "Soon", "kind": "rally",
            "starts_at": in_minutes(5), "ends_at": in_minutes(65)
        }))
        .await;
    assert_eq!(
        h.session(soon["id"].as_str().unwrap(), "whip").await.status,
        201
    );

    // A lobby: listeners may wait any time before; talkers still not
    // before the grace, and within it they are held muted until the start.
    let lobby = h
        .create(json!({
            "name": "Lobby rally", "kind": "rally", "lobby": true,
            "starts_at": in_minutes(60), "ends_at": in_minutes(120)
        }))
        .await;
    let lobby_id = lobby["id"].as_str().unwrap();
    assert_eq!(h.session(lobby_id, "whep").await.status, 201);
    assert_eq!(h.session(lobby_id, "whip").await.status, 425);
    let early = h
        .create(json!({
            "name": "Lobby soon", "kind": "rally", "lobby": true,
            "starts_at": in_minutes(5), "ends_at": in_minutes(65)
        }))
        .await;
    let early_id = early["id"].as_str().unwrap();
    assert_eq!(h.session(early_id, "whep").await.status, 201);
    assert_eq!(h.session(early_id, "whip").await.status, 201);
    let speaker = h.media.live.lock().unwrap().last().unwrap().clone();
    assert_eq!(h.media.is_muted(&speaker), Some(true), "held in the lobby");
    // The window opens: the speaker is heard.
    h.clock.set(Timestamp::now() + SignedDuration::from_mins(6));
    h.scheduler.tick().await.unwrap();
    assert_eq!(
        h.media.is_muted(&speaker),
        Some(false),
        "released at the start"
    );
    assert_eq!(h.status(early_id).await, "open");
}

#[tokio::test]
async fn capacity_and_the_end_of_an_unscheduled_room() {
    let h = harness();
    let room = h
        .create(json!({"name": "Small", "kind": "bridge", "capacity": 1}))
        .await;
    let id = room["id"].as_str().unwrap();
    assert_eq!(room["status"], "open");
    assert_eq!(h.session(id, "join").await.status, 201);
    let full = h.session(id, "join").await;
    assert_eq!(full.status, 503);
    assert!(
        full.json()["detail"]
            .as_str()
            .unwrap()
            .contains("capacity of 1")
    );
    let end = h
        .call(Method::POST, &format!("/v1/rooms/{id}/end"), None)
        .await;
    assert_eq!(end.status, 204);
    assert_eq!(
        h.status(id).await,
        "ended",
        "stored, so a restart keeps it ended"
    );
    let _ = &h.store;
}

#[tokio::test]
async fn a_double_booked_host_is_409_and_bad_rules_422() {
    let h = harness();
    let first = h
        .create(json!({
            "name": "Mondays", "kind": "rally", "hosts": ["Asha"],
            "starts_at": "2030-01-07T12:30:00Z", "ends_at": "2030-01-07T13:30:00Z",
            "time_zone": "Asia/Kolkata", "recurrence": "FREQ=WEEKLY"
        }))
        .await;
    // A one-off on the third Monday, overlapping by half an hour.
    let clash = h
        .call(
            Method::POST,
            "/v1/rooms",
            Some(json!({
                "name": "District bridge", "kind": "bridge", "hosts": ["Ravi", "Asha"],
                "starts_at": "2030-01-21T13:00:00Z", "ends_at": "2030-01-21T14:00:00Z"
            })),
        )
        .await;
    assert_eq!(clash.status, 409);
    let problem = clash.json();
    assert_eq!(problem["conflicting_room"], first["id"]);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("2030-01-21T12:30:00Z"),
        "{problem}"
    );
    // Right after the rally, or with other hosts: fine.
    h.create(json!({
        "name": "After", "kind": "bridge", "hosts": ["Asha"],
        "starts_at": "2030-01-21T13:30:00Z", "ends_at": "2030-01-21T14:00:00Z"
    }))
    .await;
    h.create(json!({
        "name": "Other host", "kind": "bridge", "hosts": ["Ravi"],
        "starts_at": "2030-01-21T13:00:00Z", "ends_at": "2030-01-21T14:00:00Z"
    }))
    .await;

    for rule in ["FREQ=MONTHLY", "FREQ=WEEKLY;BYDAY=XX", "BYDAY=MO"] {
        let mut body = weekly();
        body["recurrence"] = json!(rule);
        let reply = h.call(Method::POST, "/v1/rooms", Some(body)).await;
        assert_eq!(reply.status, 422, "{rule}");
    }
    let no_window = h
        .call(
            Method::POST,
            "/v1/rooms",
            Some(json!({"name": "R", "kind": "rally", "recurrence": "FREQ=DAILY"})),
        )
        .await;
    assert_eq!(no_window.status, 422);
}

/// After a window of a series closes, the next one's early joiners are let
/// in (the end of one window does not shut the room for the series).
#[tokio::test]
async fn the_next_window_of_a_series_admits_early_joiners_again() {
    let h = harness();
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
    // Daily, today's window starts in 5 minutes (inside the grace).
    let today = now + SignedDuration::from_mins(5);
    let yesterday = today - SignedDuration::from_hours(24);
    let room = h
        .create(json!({
            "name": "Daily bridge", "kind": "bridge", "recurrence": "FREQ=DAILY",
            "starts_at": yesterday.to_string(),
            "ends_at": (yesterday + SignedDuration::from_mins(60)).to_string()
        }))
        .await;
    let id = room["id"].as_str().unwrap();
    // Yesterday's window, held, then closed.
    h.clock.set(yesterday + SignedDuration::from_mins(10));
    h.scheduler.tick().await.unwrap();
    assert_eq!(h.status(id).await, "open");
    h.clock.set(now);
    assert_eq!(h.scheduler.tick().await.unwrap(), Some(today));
    assert_eq!(h.status(id).await, "scheduled");
    assert_eq!(h.media.closed_rooms.lock().unwrap().len(), 1);
    assert_eq!(
        h.session(id, "join").await.status,
        201,
        "today's grace admits"
    );
}
