//! The moderation REST routes, status by status, through `oneshot`: who may
//! call them (401/403), unknown rooms and participants (404), and what a
//! successful call answers and does.

mod fakes;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fakes::{FakeMedia, FakeStore};
use sabha_signaling::problem::PROBLEM_JSON;
use sabha_signaling::timestamp::unix_now;
use sabha_signaling::token::Claims;
use sabha_signaling::{AppState, Auth, CorsConfig, OperatorKey, Participant, Role, Room, router};
use serde_json::Value;
use tower::ServiceExt;

const KEY: &str = "sk_operator_for_moderation_tests";
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

struct Harness {
    app: Router,
    media: Arc<FakeMedia>,
    auth: Auth,
    room: Room,
    /// A `/join` participant of `room`.
    sid: String,
}

async fn harness(kind: &str) -> Harness {
    let media = Arc::new(FakeMedia::default());
    let store = Arc::new(FakeStore::default());
    let auth = Auth::new(b"test secret, 32 bytes long......", OperatorKey::new(KEY));
    let app = router(AppState {
        media: media.clone(),
        rooms: store.clone(),
        attendance: store,
        org: Arc::new(fakes::FakeOrg::default()),
        auth: auth.clone(),
        metrics: Arc::new(String::new),
        cors: CorsConfig::default(),
        settings: sabha_signaling::Settings::default(),
        events: Arc::new(sabha_signaling::webhooks::Discard),
        keys: Arc::new(fakes::FakeKeys::default()),
        members: Arc::new(fakes::FakeMembers::default()),
        pin_key: sabha_signaling::PinKey::derive(b"test pin key"),
    });
    let mut h = Harness {
        app,
        media,
        auth,
        room: fakes::placeholder_room(),
        sid: String::new(),
    };
    let request = Request::post("/v1/rooms")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(format!(r#"{{"name":"Hall","kind":"{kind}"}}"#)))
        .unwrap();
    h.room = serde_json::from_value(h.send(request).await.1).unwrap();
    let token = h.token(&h.room.id.clone(), Role::Participant);
    let (status, _, location) = h.call(Method::POST, "join", &token, true).await;
    assert_eq!(status, 201);
    h.sid = location.trim_start_matches("/v1/sessions/").to_owned();
    h
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> (StatusCode, Value, String) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        if status.is_client_error() {
            assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        }
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value, location)
    }

    /// `method /v1/rooms/{room}/{path}` with `credential`; an SDP offer as
    /// the body when `offer`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        credential: &str,
        offer: bool,
    ) -> (StatusCode, Value, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("/v1/rooms/{}/{path}", self.room.id));
        if !credential.is_empty() {
            request = request.header(header::AUTHORIZATION, format!("Bearer {credential}"));
        }
        let body = if offer {
            request = request.header(header::CONTENT_TYPE, "application/sdp");
            Body::from(OFFER)
        } else {
            Body::empty()
        };
        self.send(request.body(body).unwrap()).await
    }

    fn token(&self, room: &str, role: Role) -> String {
        let now = unix_now();
        let claims = Claims {
            room: room.to_owned(),
            role,
            name: Some("Asha".into()),
            member: None,
            unit: None,
            exp: now + 600,
            iat: now,
        };
        self.auth.tokens().mint(&claims).unwrap()
    }
}

/// Every moderation route, its method and its success status.
fn routes(sid: &str) -> Vec<(Method, String, u16)> {
    vec![
        (Method::GET, "participants".into(), 200),
        (Method::POST, format!("participants/{sid}/mute"), 200),
        (Method::POST, format!("participants/{sid}/unmute"), 200),
        (Method::POST, format!("participants/{sid}/promote"), 200),
        (Method::POST, format!("participants/{sid}/demote"), 200),
        (Method::DELETE, format!("participants/{sid}"), 204),
        (Method::POST, "mute-all".into(), 204),
        (Method::POST, "lock".into(), 204),
        (Method::POST, "unlock".into(), 204),
        (Method::POST, "end".into(), 204),
    ]
}

#[tokio::test]
async fn status_matrix() {
    for index in 0..routes("").len() {
        // A fresh room per route: `end` and `remove` change what follows.
        let h = harness("bridge").await;
        let (method, path, ok) = routes(&h.sid).swap_remove(index);
        let room = h.room.id.clone();
        let cases = [
            (String::new(), 401),
            ("garbage".to_owned(), 401),
            (h.token(&room, Role::Listener), 403),
            (h.token(&room, Role::Participant), 403),
            (h.token(&room, Role::Speaker), 403),
            (h.token("zzzzzzzzzzzz", Role::Host), 403),
            (h.token(&room, Role::Host), ok),
        ];
        for (credential, status) in cases {
            let (got, body, _) = h.call(method.clone(), &path, &credential, false).await;
            assert_eq!(got, status, "{method} {path}: {body}");
        }
        let h = harness("bridge").await;
        let (method, path, ok) = routes(&h.sid).swap_remove(index);
        let (got, body, _) = h.call(method.clone(), &path, KEY, false).await;
        assert_eq!(got, ok, "{method} {path} as operator: {body}");
    }
}

#[tokio::test]
async fn unknown_room_and_participant_are_404() {
    let h = harness("bridge").await;
    for (method, path, _) in routes("nobody") {
        if path.starts_with("participants/") {
            let (status, body, _) = h.call(method.clone(), &path, KEY, false).await;
            assert_eq!(status, 404, "{method} {path}: {body}");
            assert!(body["detail"].as_str().unwrap().contains("participant"));
        }
        let uri = format!("/v1/rooms/zzzzzzzzzzzz/{path}");
        let request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(h.send(request).await.0, 404, "{method} {uri}");
    }
    let (status, _, _) = h
        .call(
            Method::POST,
            &format!("participants/{}/dance", h.sid),
            KEY,
            false,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn rest_commands_change_the_roster_and_media() {
    let h = harness("bridge").await;
    let sid = h.sid.clone();
    let (_, list, _) = h.call(Method::GET, "participants", KEY, false).await;
    let list: Vec<Participant> = serde_json::from_value(list).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].id.as_str(), list[0].on_stage),
        (sid.as_str(), true)
    );

    let (_, p, _) = h
        .call(
            Method::POST,
            &format!("participants/{sid}/mute"),
            KEY,
            false,
        )
        .await;
    assert_eq!(p["muted"], true);
    assert_eq!(h.media.is_muted(&sid), Some(true));
    let (_, p, _) = h
        .call(
            Method::POST,
            &format!("participants/{sid}/unmute"),
            KEY,
            false,
        )
        .await;
    assert_eq!(p["muted"], false);
    let (_, p, _) = h
        .call(
            Method::POST,
            &format!("participants/{sid}/demote"),
            KEY,
            false,
        )
        .await;
    assert_eq!(
        (&p["on_stage"], h.media.is_muted(&sid)),
        (&Value::Bool(false), Some(true))
    );

    // mute-all spares hosts.
    let host = h.call(Method::POST, "join", KEY, true).await.2;
    let host = host.trim_start_matches("/v1/sessions/").to_owned();
    assert_eq!(h.call(Method::POST, "mute-all", KEY, false).await.0, 204);
    let (_, list, _) = h.call(Method::GET, "participants", KEY, false).await;
    let list: Vec<Participant> = serde_json::from_value(list).unwrap();
    let muted: Vec<(&str, bool)> = list.iter().map(|p| (p.id.as_str(), p.muted)).collect();
    assert_eq!(muted, [(sid.as_str(), true), (host.as_str(), false)]);

    assert_eq!(
        h.call(Method::DELETE, &format!("participants/{sid}"), KEY, false)
            .await
            .0,
        204
    );
    assert!(!h.media.live.lock().unwrap().contains(&sid));
    let (_, list, _) = h.call(Method::GET, "participants", KEY, false).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn lock_is_423_and_end_is_410_on_every_session_route() {
    let h = harness("rally").await;
    let listener = h.token(&h.room.id, Role::Listener);
    let speaker = h.token(&h.room.id, Role::Speaker);
    assert_eq!(h.call(Method::POST, "lock", KEY, false).await.0, 204);
    for (endpoint, token) in [("whip", &speaker), ("whep", &listener), ("join", &listener)] {
        let (status, body, _) = h.call(Method::POST, endpoint, token, true).await;
        assert_eq!(status, 423, "{endpoint}: {body}");
        assert_eq!(body["title"], "Locked");
    }
    assert_eq!(h.call(Method::POST, "whep", KEY, true).await.0, 201);
    assert_eq!(h.call(Method::POST, "unlock", KEY, false).await.0, 204);
    assert_eq!(h.call(Method::POST, "whep", &listener, true).await.0, 201);

    assert_eq!(h.call(Method::POST, "end", KEY, false).await.0, 204);
    for (endpoint, token) in [("whip", KEY), ("whep", listener.as_str()), ("join", KEY)] {
        let (status, body, _) = h.call(Method::POST, endpoint, token, true).await;
        assert_eq!(status, 410, "{endpoint}: {body}");
        assert_eq!(body["title"], "Gone");
    }
    let (_, list, _) = h.call(Method::GET, "participants", KEY, false).await;
    assert_eq!(list, Value::Array(vec![]));
}
