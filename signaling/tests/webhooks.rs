//! Webhook events through the router, with a recording sink: which events
//! each action publishes and what they say.

mod fakes;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use fakes::{FakeEvents, FakeMedia, FakeStore};
use sabha_signaling::timestamp::unix_now;
use sabha_signaling::token::Claims;
use sabha_signaling::{
    AppState, Auth, CorsConfig, MediaEvent, OperatorKey, Role, Room, Traffic, router,
};
use serde_json::Value;
use tower::ServiceExt;

const KEY: &str = "sk_operator_for_tests";
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

struct Harness {
    app: Router,
    media: Arc<FakeMedia>,
    events: Arc<FakeEvents>,
    auth: Auth,
}

fn harness() -> Harness {
    let store = Arc::new(FakeStore::default());
    let media = Arc::new(FakeMedia::default());
    let events = Arc::new(FakeEvents::default());
    let auth = Auth::new(b"test secret, 32 bytes long......", OperatorKey::new(KEY));
    let state = AppState {
        media: media.clone(),
        rooms: store.clone(),
        attendance: store,
        org: Arc::new(fakes::FakeOrg::default()),
        auth: auth.clone(),
        metrics: Arc::new(String::new),
        cors: CorsConfig::default(),
        settings: sabha_signaling::Settings::default(),
        events: events.clone(),
        keys: Arc::new(fakes::FakeKeys::default()),
        members: Arc::new(fakes::FakeMembers::default()),
        pin_key: sabha_signaling::PinKey::derive(b"test pin key"),
    };
    Harness {
        app: router(state),
        media,
        events,
        auth,
    }
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> (u16, axum::http::HeaderMap, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (parts.status.as_u16(), parts.headers, json)
    }

    async fn operator(&self, method: Method, uri: &str, body: &str) -> (u16, Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let (status, _, json) = self.send(request).await;
        (status, json)
    }

    async fn room(&self, body: &str) -> Room {
        let (status, json) = self.operator(Method::POST, "/v1/rooms", body).await;
        assert_eq!(status, 201, "{json}");
        serde_json::from_value(json).unwrap()
    }

    fn token(&self, room: &str, role: Role) -> String {
        let now = unix_now();
        let claims = Claims {
            room: room.to_owned(),
            role,
            name: Some("Asha".into()),
            member: Some("M-17".into()),
            unit: Some("booth-7".into()),
            exp: now + 600,
            iat: now,
        };
        self.auth.tokens().mint(&claims).unwrap()
    }

    /// Opens a WHEP session; its id.
    async fn listen(&self, room: &str) -> (u16, String) {
        let request = Request::post(format!("/v1/rooms/{room}/whep"))
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token(room, Role::Listener)),
            )
            .header(header::CONTENT_TYPE, "application/sdp")
            .body(Body::from(OFFER))
            .unwrap();
        let (status, headers, _) = self.send(request).await;
        let location = headers
            .get(header::LOCATION)
            .map_or("", |v| v.to_str().unwrap());
        (
            status,
            location.trim_start_matches("/v1/sessions/").to_owned(),
        )
    }

    fn of_type(&self, kind: &str) -> Vec<Value> {
        self.events
            .bodies()
            .into_iter()
            .filter(|b| b["type"] == kind)
            .collect()
    }
}

#[tokio::test]
async fn an_unscheduled_room_starts_at_once_a_scheduled_one_does_not() {
    let h = harness();
    let room = h.room(r#"{"name":"Rally","kind":"rally"}"#).await;
    let started = h.of_type("room_started");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["data"]["room"], room.id.as_str());
    assert!(started[0]["data"]["unit"].is_null());
    assert_eq!(started[0]["data"]["kind"], "rally");
    h.room(r#"{"name":"Later","kind":"rally","starts_at":"2099-01-01T10:00:00Z","ends_at":"2099-01-01T11:00:00Z"}"#)
        .await;
    assert_eq!(h.of_type("room_started").len(), 1);
}

#[tokio::test]
async fn a_join_publishes_participant_joined_with_member_and_unit() {
    let h = harness();
    let room = h.room(r#"{"name":"Rally","kind":"rally"}"#).await;
    let (status, session) = h.listen(&room.id).await;
    assert_eq!(status, 201);
    let joined = h.of_type("participant_joined");
    assert_eq!(joined.len(), 1);
    let data = &joined[0]["data"];
    assert_eq!(data["room"], room.id.as_str());
    assert_eq!(data["session"], session.as_str());
    assert_eq!(
        (&data["name"], &data["member"], &data["unit"]),
        (
            &Value::from("Asha"),
            &Value::from("M-17"),
            &Value::from("booth-7")
        )
    );
    assert_eq!(
        (&data["role"], &data["kind"]),
        (&Value::from("listener"), &Value::from("listen"))
    );
}

#[tokio::test]
async fn a_broken_sink_never_fails_a_join() {
    let h = harness();
    let room = h.room(r#"{"name":"Rally","kind":"rally"}"#).await;
    h.events.broken.store(true, Ordering::SeqCst);
    let (status, _) = h.listen(&room.id).await;
    assert_eq!(status, 201);
    assert!(
        h.events
            .bodies()
            .iter()
            .all(|b| b["type"] != "participant_joined")
    );
}

#[tokio::test]
async fn a_recorded_leave_publishes_participant_left_with_reason_seconds_and_traffic() {
    let h = harness();
    let room = h.room(r#"{"name":"Rally","kind":"rally"}"#).await;
    let (_, session) = h.listen(&room.id).await;
    h.media.emit(MediaEvent::Closed {
        room: room.id.clone(),
        session: session.clone(),
        reason: "ice_timeout".into(),
        traffic: Traffic {
            packets_in: 3,
            bytes_in: 300,
            packets_out: 40,
            bytes_out: 4000,
        },
    });
    let mut left = Vec::new();
    for _ in 0..200 {
        left = h.of_type("participant_left");
        if !left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(left.len(), 1, "no participant_left");
    let data = &left[0]["data"];
    assert_eq!(data["session"], session.as_str());
    assert_eq!(data["reason"], "ice_timeout");
    assert_eq!(data["member"], "M-17");
    assert!(data["seconds"].as_u64().is_some());
    assert_eq!(
        (data["packets_out"].as_u64(), data["bytes_in"].as_u64()),
        (Some(40), Some(300))
    );
}

#[tokio::test]
async fn ending_and_deleting_rooms_publish_room_ended() {
    let h = harness();
    let room = h.room(r#"{"name":"Bridge","kind":"bridge"}"#).await;
    let (status, _) = h
        .operator(Method::POST, &format!("/v1/rooms/{}/end", room.id), "")
        .await;
    assert_eq!(status, 204);
    // Ending twice is one end.
    h.operator(Method::POST, &format!("/v1/rooms/{}/end", room.id), "")
        .await;
    let ended = h.of_type("room_ended");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["data"]["room"], room.id.as_str());
    assert_eq!(ended[0]["data"]["reason"], "ended");

    let other = h.room(r#"{"name":"Bridge 2","kind":"bridge"}"#).await;
    let (status, _) = h
        .operator(Method::DELETE, &format!("/v1/rooms/{}", other.id), "")
        .await;
    assert_eq!(status, 204);
    let ended = h.of_type("room_ended");
    assert_eq!(ended.len(), 2);
    assert_eq!(ended[1]["data"]["room"], other.id.as_str());
    assert_eq!(ended[1]["data"]["reason"], "deleted");
    let ids: std::collections::HashSet<String> = h
        .events
        .bodies()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        h.events.bodies().len(),
        "every event has its own id"
    );
}
