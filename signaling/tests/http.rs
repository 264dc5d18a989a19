//! The HTTP contract, request by request, through `router(state).oneshot(..)`
//! with in-memory fakes of the store and the media side.

mod fakes;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use fakes::{ANSWER, FakeMedia, FakeStore};
use sabha_signaling::problem::{PROBLEM_JSON, Problem};
use sabha_signaling::rooms::TokenResponse;
use sabha_signaling::timestamp::unix_now;
use sabha_signaling::token::Claims;
use sabha_signaling::{
    AppState, Auth, CorsConfig, ListenProfile, OperatorKey, Role, Room, RoomKind, SessionKind,
    router,
};
use serde::de::DeserializeOwned;
use tower::ServiceExt;

const KEY: &str = "sk_operator_for_tests";
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

struct Harness {
    app: Router,
    store: Arc<FakeStore>,
    media: Arc<FakeMedia>,
    auth: Auth,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// The problem body; asserts the media type and that `status` matches.
    fn problem(&self, status: u16) -> Problem {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.headers[header::CONTENT_TYPE], PROBLEM_JSON);
        let problem: Problem = self.json();
        assert_eq!(problem.status, status);
        assert_eq!(problem.kind, "about:blank");
        assert!(!problem.title.is_empty() && !problem.detail.is_empty());
        problem
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers.get(&name).map_or("", |v| v.to_str().unwrap())
    }
}

fn harness_with(cors: CorsConfig) -> Harness {
    let store = Arc::new(FakeStore::default());
    let media = Arc::new(FakeMedia::default());
    let auth = Auth::new(b"test secret, 32 bytes long......", OperatorKey::new(KEY));
    let state = AppState {
        media: media.clone(),
        rooms: store.clone(),
        attendance: store.clone(),
        org: Arc::new(fakes::FakeOrg::default()),
        auth: auth.clone(),
        metrics: Arc::new(|| "# TYPE sabha_sessions gauge\nsabha_sessions 0\n".to_owned()),
        cors,
        settings: sabha_signaling::Settings::default(),
        events: Arc::new(sabha_signaling::webhooks::Discard),
        keys: Arc::new(fakes::FakeKeys::default()),
        members: Arc::new(fakes::FakeMembers::default()),
        pin_key: sabha_signaling::PinKey::derive(b"test pin key"),
    };
    Harness {
        app: router(state),
        store,
        media,
        auth,
    }
}

fn harness() -> Harness {
    harness_with(CorsConfig::default())
}

fn operator(method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
}

fn json_request(builder: axum::http::request::Builder, body: &str) -> Request<Body> {
    builder
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn offer(uri: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/sdp");
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn room(&self, kind: &str) -> Room {
        let body = format!(r#"{{"name":"Town hall","kind":"{kind}"}}"#);
        let reply = self
            .send(json_request(operator(Method::POST, "/v1/rooms"), &body))
            .await;
        assert_eq!(reply.status, 201);
        reply.json()
    }

    fn token(&self, room: &str, role: Role, ttl: i64) -> String {
        let now = unix_now();
        let claims = Claims {
            room: room.to_owned(),
            role,
            name: Some("Asha".into()),
            member: None,
            unit: None,
            exp: now.saturating_add_signed(ttl),
            iat: now,
        };
        self.auth.tokens().mint(&claims).unwrap()
    }

    /// `GET uri` with the operator key; the JSON answer.
    async fn get_json(&self, uri: &str) -> serde_json::Value {
        self.send(operator(Method::GET, uri).body(Body::empty()).unwrap())
            .await
            .json()
    }

    async fn whep(&self, room: &str, token: &str) -> Reply {
        self.send(offer(&format!("/v1/rooms/{room}/whep"), Some(token), OFFER))
            .await
    }

    fn last_opened(&self) -> (SessionKind, Role, Option<String>, String) {
        let opened = self.media.opened.lock().unwrap();
        let last = opened.last().expect("a session was opened");
        (last.kind, last.role, last.name.clone(), last.room.clone())
    }
}

// ---- health and metrics ----

#[tokio::test]
async fn healthz_and_metrics() {
    let h = harness();
    let reply = h
        .send(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        (reply.status, &reply.body[..]),
        (StatusCode::OK, &b"ok"[..])
    );
    let reply = h
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header(header::CONTENT_TYPE),
        "text/plain; version=0.0.4"
    );
    assert!(String::from_utf8_lossy(&reply.body).contains("sabha_sessions 0"));
}

#[tokio::test]
async fn a_draining_node_is_unready_and_refuses_new_sessions() {
    let h = harness();
    let room = h.room("rally").await;
    let uri = format!("/v1/rooms/{}/whep", room.id);
    let ready = || Request::get("/readyz").body(Body::empty()).unwrap();
    let reply = h.send(ready()).await;
    assert_eq!(
        (reply.status, &reply.body[..]),
        (StatusCode::OK, &b"ready"[..])
    );
    let open = h.send(offer(&uri, Some(KEY), OFFER)).await;
    assert_eq!(open.status, StatusCode::CREATED);

    h.media.draining.store(true, Ordering::SeqCst);
    let problem = h.send(ready()).await.problem(503);
    assert!(
        problem.detail.contains("shutting down"),
        "{}",
        problem.detail
    );
    let reply = h.send(offer(&uri, Some(KEY), OFFER)).await;
    let problem = reply.problem(503);
    assert!(
        problem.detail.contains("shutting down"),
        "{}",
        problem.detail
    );
    assert_eq!(reply.header(header::RETRY_AFTER), "2");
    // Liveness is not readiness: the node is alive while it drains.
    let reply = h
        .send(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    // The session opened before the drain can still be ended.
    let location = open.header(header::LOCATION).to_owned();
    let reply = h
        .send(Request::delete(&location).body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
}

// ---- rooms ----

#[tokio::test]
async fn create_room() {
    let h = harness();
    let body = r#"{"name":"  Rally for rivers ","kind":"rally"}"#;
    let reply = h
        .send(json_request(operator(Method::POST, "/v1/rooms"), body))
        .await;
    assert_eq!(reply.status, 201);
    let room: Room = reply.json();
    assert_eq!(
        (room.name.as_str(), room.kind),
        ("Rally for rivers", RoomKind::Rally)
    );
    assert_eq!(
        reply.header(header::LOCATION),
        format!("/v1/rooms/{}", room.id)
    );
    assert_eq!(reply.header(header::CONTENT_TYPE), "application/json");
}

#[tokio::test]
async fn list_get_delete_room() {
    let h = harness();
    let a = h.room("rally").await;
    let b = h.room("bridge").await;
    let reply = h
        .send(
            operator(Method::GET, "/v1/rooms")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.json::<Vec<Room>>(), vec![a.clone(), b.clone()]);

    let uri = format!("/v1/rooms/{}", a.id);
    let reply = h
        .send(operator(Method::GET, &uri).body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.json::<Room>(), a);

    let reply = h
        .send(operator(Method::DELETE, &uri).body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, 204);
    assert_eq!(*h.media.closed_rooms.lock().unwrap(), vec![a.id.clone()]);

    let reply = h
        .send(operator(Method::DELETE, &uri).body(Body::empty()).unwrap())
        .await;
    reply.problem(404);
    let reply = h
        .send(operator(Method::GET, &uri).body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.problem(404).detail, "no such room");
}

#[tokio::test]
async fn unknown_and_malformed_room_ids_are_404() {
    let h = harness();
    for uri in [
        "/v1/rooms/aaaaaaaaaaaa",
        "/v1/rooms/not-a-room-id!",
        "/v1/rooms/x",
    ] {
        let reply = h
            .send(operator(Method::GET, uri).body(Body::empty()).unwrap())
            .await;
        reply.problem(404);
    }
}

#[tokio::test]
async fn operator_api_needs_the_operator_key() {
    let h = harness();
    let room = h.room("rally").await;
    let reply = h
        .send(Request::get("/v1/rooms").body(Body::empty()).unwrap())
        .await;
    reply.problem(401);
    assert!(reply.header(header::WWW_AUTHENTICATE).starts_with("Bearer"));

    let wrong = Request::get("/v1/rooms").header(header::AUTHORIZATION, "Bearer sk_wrong");
    let reply = h.send(wrong.body(Body::empty()).unwrap()).await;
    reply.problem(401);
    assert!(
        reply
            .header(header::WWW_AUTHENTICATE)
            .contains("invalid_token")
    );

    // A room token, even a host's, is not the operator key.
    let token = h.token(&room.id, Role::Host, 60);
    let as_host =
        Request::get("/v1/rooms").header(header::AUTHORIZATION, format!("Bearer {token}"));
    h.send(as_host.body(Body::empty()).unwrap())
        .await
        .problem(403);

    // The query parameter is for browsers on WHEP, not for the operator key.
    let query = Request::get(format!("/v1/rooms?token={KEY}"));
    h.send(query.body(Body::empty()).unwrap())
        .await
        .problem(401);
}

#[tokio::test]
async fn bad_room_json_is_problem_json() {
    let h = harness();
    let post = || operator(Method::POST, "/v1/rooms");
    let cases = [
        ("{not json", 400),
        (r#"{"name":"a","kind":"rally","extra":1}"#, 422),
        (r#"{"name":"a","kind":"party"}"#, 422),
        (r#"{"kind":"rally"}"#, 422),
        (r#"{"name":"   ","kind":"rally"}"#, 422),
    ];
    for (body, status) in cases {
        h.send(json_request(post(), body)).await.problem(status);
    }
    let unknown = h
        .send(json_request(post(), r#"{"name":"a","kind":"rally","x":1}"#))
        .await;
    assert!(unknown.problem(422).detail.contains("unknown field"));
    let no_type = post()
        .body(Body::from(r#"{"name":"a","kind":"rally"}"#))
        .unwrap();
    h.send(no_type).await.problem(415);
}

#[tokio::test]
async fn store_failure_is_500_without_internals() {
    let h = harness();
    h.store.broken.store(true, Ordering::SeqCst);
    let reply = h
        .send(
            operator(Method::GET, "/v1/rooms")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let problem = reply.problem(500);
    assert!(!problem.detail.contains("secret"), "{}", problem.detail);
    assert!(!String::from_utf8_lossy(&reply.body).contains("sabha.db"));
}

// ---- tokens ----

#[tokio::test]
async fn mint_token() {
    let h = harness();
    let room = h.room("rally").await;
    let uri = format!("/v1/rooms/{}/tokens", room.id);
    let body = r#"{"role":"listener","name":"Ravi","ttl_s":600}"#;
    let reply = h
        .send(json_request(operator(Method::POST, &uri), body))
        .await;
    assert_eq!(reply.status, 200);
    let minted: TokenResponse = reply.json();
    let claims = h.auth.tokens().verify(&minted.token, unix_now()).unwrap();
    assert_eq!(claims.room, room.id);
    assert_eq!(claims.role, Role::Listener);
    assert_eq!(claims.name.as_deref(), Some("Ravi"));
    assert_eq!(claims.exp - claims.iat, 600);
    assert_eq!(minted.expires_at.len(), "2025-01-01T00:00:00Z".len());
    assert!(minted.expires_at.ends_with('Z'));
}

#[tokio::test]
async fn token_defaults_to_a_day() {
    let h = harness();
    let room = h.room("bridge").await;
    let uri = format!("/v1/rooms/{}/tokens", room.id);
    let reply = h
        .send(json_request(
            operator(Method::POST, &uri),
            r#"{"role":"participant"}"#,
        ))
        .await;
    let minted: TokenResponse = reply.json();
    let claims = h.auth.tokens().verify(&minted.token, unix_now()).unwrap();
    assert_eq!((claims.exp - claims.iat, claims.name), (86_400, None));
}

#[tokio::test]
async fn bad_token_requests() {
    let h = harness();
    let room = h.room("rally").await;
    let uri = format!("/v1/rooms/{}/tokens", room.id);
    let cases = [
        (r#"{"role":"admin"}"#, 422),
        (r#"{"role":"host","ttl_s":0}"#, 422),
        (r#"{"role":"host","ttl_s":99999999}"#, 422),
        (r#"{"role":"host","ttl_s":-5}"#, 422),
        (r#"{"role":"host","room":"x"}"#, 422),
        (r#"{"role":"host","name":""}"#, 422),
        ("[", 400),
    ];
    for (body, status) in cases {
        h.send(json_request(operator(Method::POST, &uri), body))
            .await
            .problem(status);
    }
    let missing = json_request(
        operator(Method::POST, "/v1/rooms/zzzzzzzzzzzz/tokens"),
        r#"{"role":"host"}"#,
    );
    h.send(missing).await.problem(404);
    let no_auth = json_request(Request::post(&uri), r#"{"role":"host"}"#);
    h.send(no_auth).await.problem(401);
}

// ---- WHIP / WHEP / join ----

#[tokio::test]
async fn whip_with_the_operator_key() {
    let h = harness();
    let room = h.room("rally").await;
    let reply = h
        .send(offer(
            &format!("/v1/rooms/{}/whip", room.id),
            Some(KEY),
            OFFER,
        ))
        .await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header(header::CONTENT_TYPE), "application/sdp");
    assert_eq!(reply.header(header::LOCATION), "/v1/sessions/s0");
    assert_eq!(&reply.body[..], ANSWER.as_bytes());
    let (kind, role, name, opened_room) = h.last_opened();
    assert_eq!(
        (kind, role, name, opened_room),
        (SessionKind::Publish, Role::Host, None, room.id)
    );
    assert_eq!(h.media.opened.lock().unwrap()[0].offer, OFFER);
}

#[tokio::test]
async fn role_rules() {
    let h = harness();
    let room = h.room("rally").await;
    let cases = [
        ("whip", Role::Host, 201),
        ("whip", Role::Speaker, 201),
        ("whip", Role::Participant, 403),
        ("whip", Role::Listener, 403),
        ("whep", Role::Host, 201),
        ("whep", Role::Speaker, 201),
        ("whep", Role::Participant, 201),
        ("whep", Role::Listener, 201),
        ("join", Role::Host, 201),
        ("join", Role::Speaker, 201),
        ("join", Role::Participant, 201),
        ("join", Role::Listener, 201), // a rally's audience, off stage
    ];
    for (endpoint, role, status) in cases {
        let token = h.token(&room.id, role, 60);
        let uri = format!("/v1/rooms/{}/{endpoint}", room.id);
        let reply = h.send(offer(&uri, Some(&token), OFFER)).await;
        assert_eq!(reply.status, status, "{endpoint} as {role:?}");
        if status == 403 {
            reply.problem(403);
        }
    }
    let kinds: Vec<_> = h
        .media
        .opened
        .lock()
        .unwrap()
        .iter()
        .map(|o| o.kind)
        .collect();
    use SessionKind::*;
    assert_eq!(
        kinds,
        [
            Publish, Publish, Listen, Listen, Listen, Listen, Join, Join, Join, Join
        ]
    );
    // In a bridge, listeners only listen.
    let bridge = h.room("bridge").await;
    let token = h.token(&bridge.id, Role::Listener, 60);
    let uri = format!("/v1/rooms/{}/join", bridge.id);
    h.send(offer(&uri, Some(&token), OFFER)).await.problem(403);
}

#[tokio::test]
async fn whep_token_in_query_for_browsers() {
    let h = harness();
    let room = h.room("rally").await;
    let token = h.token(&room.id, Role::Listener, 60);
    let uri = format!("/v1/rooms/{}/whep?token={token}", room.id);
    let reply = h.send(offer(&uri, None, OFFER)).await;
    assert_eq!(reply.status, 201);
    let (kind, role, name, _) = h.last_opened();
    assert_eq!(
        (kind, role, name.as_deref()),
        (SessionKind::Listen, Role::Listener, Some("Asha"))
    );
}

/// Opens a WHEP session at `uri` (201) and returns the profile media was asked for.
async fn whep_profile(h: &Harness, uri: &str, token: &str) -> Option<ListenProfile> {
    assert_eq!(
        h.send(offer(uri, Some(token), OFFER)).await.status,
        201,
        "{uri}"
    );
    h.media.opened.lock().unwrap().last().map(|o| o.profile)
}

#[tokio::test]
async fn whep_profile_low_reaches_media_and_a_bad_profile_is_400() {
    let h = harness();
    let room = h.room("rally").await;
    let token = h.token(&room.id, Role::Listener, 60);
    let low = format!("/v1/rooms/{}/whep?profile=low", room.id);
    assert_eq!(
        whep_profile(&h, &low, &token).await,
        Some(ListenProfile::Low)
    );
    let plain = format!("/v1/rooms/{}/whep", room.id);
    assert_eq!(
        whep_profile(&h, &plain, &token).await,
        Some(ListenProfile::Standard)
    );
    let bad = format!("/v1/rooms/{}/whep?profile=ultra", room.id);
    let problem = h.send(offer(&bad, Some(&token), OFFER)).await.problem(400);
    assert!(
        problem.detail.contains("`standard` or `low`"),
        "{}",
        problem.detail
    );
}

#[tokio::test]
async fn a_rooms_default_profile_applies_unless_the_listener_chooses() {
    let h = harness();
    let reply = h
        .send(json_request(
            operator(Method::POST, "/v1/rooms"),
            r#"{"name":"3G rally","kind":"rally","profile":"low"}"#,
        ))
        .await;
    assert_eq!(reply.status, 201);
    let room: Room = reply.json();
    assert_eq!(room.profile, ListenProfile::Low);
    let token = h.token(&room.id, Role::Listener, 60);
    let plain = format!("/v1/rooms/{}/whep", room.id);
    assert_eq!(
        whep_profile(&h, &plain, &token).await,
        Some(ListenProfile::Low)
    );
    let chosen = format!("/v1/rooms/{}/whep?profile=standard", room.id);
    assert_eq!(
        whep_profile(&h, &chosen, &token).await,
        Some(ListenProfile::Standard)
    );
}

#[tokio::test]
async fn token_for_another_room_is_403() {
    let h = harness();
    let a = h.room("rally").await;
    let b = h.room("rally").await;
    let token = h.token(&a.id, Role::Host, 60);
    for endpoint in ["whip", "whep", "join"] {
        let uri = format!("/v1/rooms/{}/{endpoint}", b.id);
        let problem = h.send(offer(&uri, Some(&token), OFFER)).await.problem(403);
        assert!(
            problem.detail.contains("another room"),
            "{}",
            problem.detail
        );
    }
}

#[tokio::test]
async fn unknown_room_is_404() {
    let h = harness();
    for endpoint in ["whip", "whep", "join"] {
        let uri = format!("/v1/rooms/zzzzzzzzzzzz/{endpoint}");
        h.send(offer(&uri, Some(KEY), OFFER)).await.problem(404);
    }
    // A valid token whose room has been deleted.
    let room = h.room("rally").await;
    let token = h.token(&room.id, Role::Listener, 60);
    let delete = operator(Method::DELETE, &format!("/v1/rooms/{}", room.id));
    assert_eq!(
        h.send(delete.body(Body::empty()).unwrap()).await.status,
        204
    );
    let uri = format!("/v1/rooms/{}/whep", room.id);
    h.send(offer(&uri, Some(&token), OFFER)).await.problem(404);
}

#[tokio::test]
async fn missing_bad_or_expired_token_is_401() {
    let h = harness();
    let room = h.room("rally").await;
    let uri = format!("/v1/rooms/{}/whep", room.id);
    let expired = h.token(&room.id, Role::Listener, -10);
    let cases: [(Option<&str>, &str); 4] = [
        (None, r#"Bearer realm="sabha""#),
        (Some("garbage"), "invalid_token"),
        (Some("sk_not_the_key"), "invalid_token"),
        (Some(&expired), "expired"),
    ];
    for (token, challenge) in cases {
        let reply = h.send(offer(&uri, token, OFFER)).await;
        reply.problem(401);
        assert!(
            reply.header(header::WWW_AUTHENTICATE).contains(challenge),
            "{token:?}"
        );
    }
    let bad_query = format!("{uri}?token=garbage");
    h.send(offer(&bad_query, None, OFFER)).await.problem(401);
    // The operator key never travels in a URL.
    let key_in_url = format!("{uri}?token={KEY}");
    h.send(offer(&key_in_url, None, OFFER)).await.problem(401);
}

#[tokio::test]
async fn offers_must_be_application_sdp() {
    let h = harness();
    let room = h.room("rally").await;
    for endpoint in ["whip", "whep", "join"] {
        let uri = format!("/v1/rooms/{}/{endpoint}", room.id);
        for content_type in [Some("text/plain"), Some("application/json"), None] {
            let mut builder =
                Request::post(&uri).header(header::AUTHORIZATION, format!("Bearer {KEY}"));
            if let Some(ct) = content_type {
                builder = builder.header(header::CONTENT_TYPE, ct);
            }
            let problem = h
                .send(builder.body(Body::from(OFFER)).unwrap())
                .await
                .problem(415);
            assert!(problem.detail.contains("application/sdp"));
        }
    }
    let uri = format!("/v1/rooms/{}/whep", room.id);
    h.send(offer(&uri, Some(KEY), "")).await.problem(400);
}

#[tokio::test]
async fn media_errors_map_to_statuses() {
    let h = harness();
    let room = h.room("bridge").await;
    let uri = format!("/v1/rooms/{}/join", room.id);
    let send = |body: &'static str| h.send(offer(&uri, Some(KEY), body));

    let problem = send("v=0 malformed").await.problem(400);
    assert!(
        problem.detail.contains("malformed SDP offer"),
        "{}",
        problem.detail
    );

    let problem = send("v=0 no-opus").await.problem(406);
    assert!(
        problem.detail.contains("the offer has no Opus audio"),
        "{}",
        problem.detail
    );

    let problem = send("v=0 wrong-direction").await.problem(400);
    assert!(problem.detail.contains("recvonly"), "{}", problem.detail);

    let reply = send("v=0 full").await;
    reply.problem(503);
    assert_eq!(reply.header(header::RETRY_AFTER), "5");

    send("v=0 down").await.problem(503);
}

// ---- sessions ----

#[tokio::test]
async fn delete_session() {
    let h = harness();
    let room = h.room("rally").await;
    let reply = h
        .send(offer(
            &format!("/v1/rooms/{}/whep", room.id),
            Some(KEY),
            OFFER,
        ))
        .await;
    let location = reply.header(header::LOCATION).to_owned();
    let delete = || Request::delete(&location).body(Body::empty()).unwrap();
    assert_eq!(h.send(delete()).await.status, 204);
    h.send(delete()).await.problem(404);
    h.send(
        Request::delete("/v1/sessions/nope")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .problem(404);
    h.send(
        Request::delete("/v1/sessions/a%2Fb")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .problem(404);
}

#[tokio::test]
async fn patch_session_is_405() {
    let h = harness();
    let patch = Request::patch("/v1/sessions/s0")
        .header(header::CONTENT_TYPE, "application/trickle-ice-sdpfrag")
        .body(Body::from("a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n"))
        .unwrap();
    let reply = h.send(patch).await;
    reply.problem(405);
    assert_eq!(reply.header(header::ALLOW), "DELETE");
}

// ---- edges: size, routing, CORS ----

#[tokio::test]
async fn oversized_bodies_are_413_problem_json() {
    let h = harness();
    let room = h.room("rally").await;
    let big_json = format!(r#"{{"name":"{}","kind":"rally"}}"#, "a".repeat(70 * 1024));
    let reply = h
        .send(json_request(operator(Method::POST, "/v1/rooms"), &big_json))
        .await;
    assert!(reply.problem(413).detail.contains("65536"));

    let big_sdp = format!("{OFFER}{}", "a=x\r\n".repeat(14 * 1024));
    let uri = format!("/v1/rooms/{}/whip", room.id);
    h.send(offer(&uri, Some(KEY), &big_sdp)).await.problem(413);
    // (oneshot requests carry no Content-Length: the limit holds while reading.)
}

#[tokio::test]
async fn unknown_route_and_method_are_problem_json() {
    let h = harness();
    h.send(Request::get("/nope").body(Body::empty()).unwrap())
        .await
        .problem(404);
    h.send(Request::get("/v1").body(Body::empty()).unwrap())
        .await
        .problem(404);
    let reply = h
        .send(
            operator(Method::PUT, "/v1/rooms")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    reply.problem(405);
    assert!(reply.header(header::ALLOW).contains("POST"));
}

fn preflight(uri: &str, origin: &str, method: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri(uri)
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, method)
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn cors_whep_and_sessions_are_open_by_default() {
    let h = harness();
    let room = h.room("rally").await;
    for (uri, method) in [
        (format!("/v1/rooms/{}/whep", room.id), "POST"),
        ("/v1/sessions/s0".to_owned(), "DELETE"),
    ] {
        let reply = h
            .send(preflight(&uri, "https://player.example", method))
            .await;
        assert_eq!(reply.status, 200, "{uri}");
        assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
        let headers = reply
            .header(header::ACCESS_CONTROL_ALLOW_HEADERS)
            .to_lowercase();
        assert!(
            headers.contains("authorization") && headers.contains("content-type"),
            "{headers}"
        );
        assert!(
            reply
                .header(header::ACCESS_CONTROL_ALLOW_METHODS)
                .contains(method)
        );
    }
    // The real request carries the headers too, and exposes Location.
    let request = Request::post(format!("/v1/rooms/{}/whep", room.id))
        .header(header::ORIGIN, "https://player.example")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .header(header::CONTENT_TYPE, "application/sdp")
        .body(Body::from(OFFER))
        .unwrap();
    let reply = h.send(request).await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
    assert!(
        reply
            .header(header::ACCESS_CONTROL_EXPOSE_HEADERS)
            .to_lowercase()
            .contains("location")
    );
}

#[tokio::test]
async fn cors_errors_are_readable_cross_origin() {
    let h = harness();
    let request = Request::post("/v1/rooms/zzzzzzzzzzzz/whep")
        .header(header::ORIGIN, "https://player.example")
        .header(header::CONTENT_TYPE, "application/sdp")
        .body(Body::from(OFFER))
        .unwrap();
    let reply = h.send(request).await;
    reply.problem(401);
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
}

#[tokio::test]
async fn cors_other_routes_need_a_configured_origin() {
    let h = harness();
    let room = h.room("rally").await;
    for uri in [
        "/v1/rooms".to_owned(),
        format!("/v1/rooms/{}/whip", room.id),
    ] {
        let reply = h
            .send(preflight(&uri, "https://evil.example", "POST"))
            .await;
        assert_eq!(
            reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "",
            "{uri}"
        );
    }

    let cors = CorsConfig::parse(&["https://console.example".to_owned()], true).unwrap();
    let h = harness_with(cors);
    let reply = h
        .send(preflight("/v1/rooms", "https://console.example", "POST"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "https://console.example"
    );
    let reply = h
        .send(preflight("/v1/rooms", "https://evil.example", "POST"))
        .await;
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "");
}

#[tokio::test]
async fn cors_whep_can_be_restricted() {
    let cors = CorsConfig::parse(&["https://site.example".to_owned()], false).unwrap();
    let h = harness_with(cors);
    let reply = h
        .send(preflight(
            "/v1/rooms/abcdefghijkl/whep",
            "https://other.example",
            "POST",
        ))
        .await;
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "");
    let reply = h
        .send(preflight(
            "/v1/rooms/abcdefghijkl/whep",
            "https://site.example",
            "POST",
        ))
        .await;
    assert_eq!(
        reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "https://site.example"
    );
}

// ---- attendance ----

#[tokio::test]
async fn attendance_records_joins_and_leaves_as_json_and_csv() {
    let h = harness();
    let room = h.room("rally").await;
    let listener = h.token(&room.id, Role::Listener, 600);
    let reply = h.whep(&room.id, &listener).await;
    assert_eq!(reply.status, 201);
    let session = reply
        .header(header::LOCATION)
        .trim_start_matches("/v1/sessions/")
        .to_owned();
    let url = format!("/v1/rooms/{}/attendance", room.id);

    let open: serde_json::Value = h.get_json(&url).await;
    assert_eq!(open["room"], room.id.as_str());
    assert_eq!(open["totals"]["sessions"], 1);
    assert_eq!(open["totals"]["open"], 1);
    let row = &open["sessions"][0];
    assert_eq!(row["session"], session.as_str());
    assert_eq!(
        (
            row["name"].as_str(),
            row["role"].as_str(),
            row["kind"].as_str()
        ),
        (Some("Asha"), Some("listener"), Some("listen"))
    );
    assert!(row["left_at"].is_null() && row["leave_reason"].is_null());
    assert!(row["joined_at"].as_str().unwrap().ends_with('Z'));

    // The media side reports the close (after a DELETE, a timeout, …).
    h.media.emit(sabha_signaling::MediaEvent::Closed {
        room: room.id.clone(),
        session: session.clone(),
        reason: "ice_timeout".into(),
        traffic: sabha_signaling::Traffic {
            packets_in: 10,
            bytes_in: 1_000,
            packets_out: 500,
            bytes_out: 60_000,
        },
    });
    let mut closed = serde_json::Value::Null;
    for _ in 0..100 {
        closed = h.get_json(&url).await;
        if closed["totals"]["open"] == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let row = &closed["sessions"][0];
    assert_eq!(row["leave_reason"], "ice_timeout", "{closed}");
    assert_eq!(
        (row["packets_out"].as_u64(), row["bytes_out"].as_u64()),
        (Some(500), Some(60_000))
    );
    assert!(row["left_at"].as_str().is_some());

    let csv = h
        .send(
            operator(Method::GET, &format!("{url}.csv"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header(header::CONTENT_TYPE), "text/csv; charset=utf-8");
    assert!(csv.header(header::CONTENT_DISPOSITION).contains(&room.id));
    let text = String::from_utf8(csv.body.to_vec()).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "session,name,member,unit,role,kind,joined_at,left_at,seconds,leave_reason,packets_in,bytes_in,packets_out,bytes_out"
        )
    );
    let fields: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(fields[0], session);
    assert_eq!(&fields[1..6], ["Asha", "", "", "listener", "listen"]);
    assert_eq!(&fields[9..], ["ice_timeout", "10", "1000", "500", "60000"]);
    assert_eq!(lines.next(), None);
}

#[tokio::test]
async fn attendance_is_for_hosts_and_the_operator() {
    let h = harness();
    let room = h.room("bridge").await;
    let other = h.room("bridge").await;
    let url = format!("/v1/rooms/{}/attendance", room.id);
    let get = |token: Option<&str>, uri: &str| {
        let mut b = Request::get(uri);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(Body::empty()).unwrap()
    };
    h.send(get(None, &url)).await.problem(401);
    let participant = h.token(&room.id, Role::Participant, 600);
    h.send(get(Some(&participant), &url)).await.problem(403);
    let other_host = h.token(&other.id, Role::Host, 600);
    h.send(get(Some(&other_host), &url)).await.problem(403);
    let host = h.token(&room.id, Role::Host, 600);
    let reply = h.send(get(Some(&host), &format!("{url}.csv"))).await;
    assert_eq!(reply.status, 200);
    h.send(get(Some(KEY), "/v1/rooms/nosuchroom00/attendance"))
        .await
        .problem(404);
}

#[tokio::test]
async fn a_join_that_cannot_be_recorded_is_refused_and_closed() {
    let h = harness();
    let room = h.room("rally").await;
    let listener = h.token(&room.id, Role::Listener, 600);
    // Rooms can be read, attendance cannot be written.
    h.store.attendance_broken.store(true, Ordering::SeqCst);
    let reply = h.whep(&room.id, &listener).await;
    reply.problem(500);
    assert_eq!(
        h.media.opened.lock().unwrap().len(),
        1,
        "the media side was asked"
    );
    assert!(
        h.media.live.lock().unwrap().is_empty(),
        "and the session closed again"
    );
}

// ---- organisation ----

fn put_org(content_type: &str, body: String) -> Request<Body> {
    operator(Method::PUT, "/v1/org")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

/// 12 districts, 286 mandals, 27,736 booths under one state: the size of
/// the organisations this is for.
fn generated_org_csv() -> String {
    let mut csv = String::from("id,kind,name,parent\nMH,state,Maharashtra,\n");
    for m in 0..286 {
        if m < 12 {
            csv.push_str(&format!("D{m},district,District {m},MH\n"));
        }
        csv.push_str(&format!("M{m},mandal,Mandal {m},D{}\n", m % 12));
    }
    for b in 0..27_736 {
        csv.push_str(&format!(
            "B{b},booth,\"Booth {b}, ward {}\",M{}\n",
            b % 40,
            b % 286
        ));
    }
    csv
}

#[tokio::test]
async fn an_organisation_imports_from_csv_and_reads_back_as_a_tree() {
    let h = harness();
    let reply = h
        .send(put_org("text/csv; charset=utf-8", generated_org_csv()))
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let imported: serde_json::Value = reply.json();
    assert_eq!(imported["upserted"], 1 + 12 + 286 + 27_736);
    assert_eq!(imported["units"], 28_035);

    let one: serde_json::Value = h.get_json("/v1/org/B1000").await;
    assert_eq!(one["unit"]["name"], "Booth 1000, ward 0");
    let path: Vec<&str> = one["ancestors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    // Booth 1000 is in mandal 1000 % 286 = 142, in district 142 % 12 = 10.
    assert_eq!(path, ["MH", "D10", "M142"], "{one}");
    let mandal: serde_json::Value = h.get_json("/v1/org?parent=D3").await;
    assert_eq!(
        mandal["units"].as_array().unwrap().len(),
        24,
        "286 mandals over 12 districts"
    );
    // Where a tree view starts: the roots only.
    let roots: serde_json::Value = h.get_json("/v1/org?roots=true").await;
    assert_eq!(roots["units"].as_array().unwrap().len(), 1, "{roots}");
    assert_eq!(roots["units"][0]["id"], "MH");

    // JSON: rename a booth, move it, remove another; a bad tree changes nothing.
    let body =
        r#"{"units":[{"id":"B1","kind":"booth","name":"Renamed","parent":"M2"}],"remove":["B2"]}"#;
    let reply = h.send(put_org("application/json", body.into())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json::<serde_json::Value>()["units"], 28_034);
    let bad = r#"{"units":[{"id":"B3","kind":"booth","name":"x","parent":"NOWHERE"}]}"#;
    let problem = h
        .send(put_org("application/json", bad.into()))
        .await
        .problem(422);
    assert!(problem.detail.contains("NOWHERE"), "{}", problem.detail);
    let keep = r#"{"remove":["MH"]}"#;
    let problem = h
        .send(put_org("application/json", keep.into()))
        .await
        .problem(422);
    assert!(
        problem.detail.contains("cannot be removed"),
        "{}",
        problem.detail
    );
    let b3: serde_json::Value = h.get_json("/v1/org/B3").await;
    assert_eq!(
        b3["unit"]["parent"], "M3",
        "unchanged by the refused import"
    );
}

#[tokio::test]
async fn bad_organisation_requests_are_problem_json() {
    let h = harness();
    h.send(put_org("text/plain", "id,kind,name\n".into()))
        .await
        .problem(415);
    h.send(put_org("text/csv", "id,name\nx,y\n".into()))
        .await
        .problem(400);
    h.send(put_org("application/json", "{not json".into()))
        .await
        .problem(400);
    h.send(put_org("application/json", "{\"unit\":[]}".into()))
        .await
        .problem(422);
    let anonymous = Request::put("/v1/org")
        .header(header::CONTENT_TYPE, "text/csv")
        .body(Body::from("id,kind,name,parent\n"))
        .unwrap();
    h.send(anonymous).await.problem(401);
    h.send(
        operator(Method::GET, "/v1/org/nope")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .problem(404);
    let listed: serde_json::Value = h.get_json("/v1/org").await;
    assert_eq!(listed["units"], serde_json::json!([]));
}

// ---- reach ----

#[tokio::test]
async fn reach_counts_the_booths_of_the_rooms_unit() {
    let h = harness();
    let org = r#"{"units":[
        {"id":"S","kind":"state","name":"State"},
        {"id":"D1","kind":"district","name":"One","parent":"S"},
        {"id":"D2","kind":"district","name":"Two","parent":"S"},
        {"id":"B1","kind":"booth","name":"Booth 1","parent":"D1"},
        {"id":"B2","kind":"booth","name":"Booth 2","parent":"D1"},
        {"id":"B3","kind":"booth","name":"Booth 3","parent":"D2"}]}"#;
    let put = h
        .send(json_request(operator(Method::PUT, "/v1/org"), org))
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let reply = h
        .send(json_request(
            operator(Method::POST, "/v1/rooms"),
            r#"{"name":"District rally","kind":"rally","unit":"D1"}"#,
        ))
        .await;
    assert_eq!(reply.status, 201);
    let room: Room = reply.json();
    assert_eq!(room.unit.as_deref(), Some("D1"));

    // A booth worker's token names the booth; attendance places them there.
    let now = unix_now();
    let claims = Claims {
        room: room.id.clone(),
        role: Role::Listener,
        name: Some("Ravi".into()),
        member: Some("m-7".into()),
        unit: Some("B2".into()),
        exp: now + 600,
        iat: now,
    };
    let token = h.auth.tokens().mint(&claims).unwrap();
    assert_eq!(h.whep(&room.id, &token).await.status, 201);

    let url = format!("/v1/rooms/{}/reach", room.id);
    let reach = h.get_json(&format!("{url}?min_minutes=1")).await;
    assert_eq!(reach["unit"], "D1");
    assert_eq!(reach["min_minutes"], 1);
    let ids: Vec<&str> = reach["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["D1", "B1", "B2"], "only the room's subtree");
    assert_eq!(reach["totals"]["booths"], 2);
    assert_eq!(reach["totals"]["listeners"], 1);
    assert_eq!(reach["units"][2]["listeners"], 1);
    // Joined just now: not yet a minute, so not reached.
    assert_eq!(reach["totals"]["booths_reached"], 0);
    let booths = h.get_json(&format!("{url}?kind=booth")).await;
    assert_eq!(booths["units"].as_array().unwrap().len(), 2);

    let attendance = h
        .get_json(&format!("/v1/rooms/{}/attendance", room.id))
        .await;
    let row = &attendance["sessions"][0];
    assert_eq!(
        (row["member"].as_str(), row["unit"].as_str()),
        (Some("m-7"), Some("B2"))
    );

    let csv = h
        .send(
            operator(Method::GET, &format!("{url}.csv"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(csv.status, 200);
    let text = String::from_utf8(csv.body.to_vec()).unwrap();
    assert_eq!(
        text.lines().next(),
        Some("unit,kind,name,parent,booths,booths_reached,listeners,listener_seconds")
    );
    assert_eq!(text.lines().count(), 4);

    for (query, status) in [
        ("?min_minutes=0", 422),
        ("?min_minutes=x", 400),
        ("?colour=red", 400),
    ] {
        let reply = h
            .send(
                operator(Method::GET, &format!("{url}{query}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, status, "{query}");
        assert_eq!(reply.header(header::CONTENT_TYPE), PROBLEM_JSON);
    }
    let listener = h
        .send(
            Request::get(&url)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(listener.status, 403, "reach is for hosts and operators");
}

#[tokio::test]
async fn a_room_for_an_unknown_unit_or_with_half_a_schedule_is_refused() {
    let h = harness();
    for body in [
        r#"{"name":"R","kind":"rally","unit":"nowhere"}"#,
        r#"{"name":"R","kind":"rally","starts_at":"2026-12-07T12:30:00Z"}"#,
        r#"{"name":"R","kind":"rally","starts_at":"2026-12-07T12:30:00Z","ends_at":"2026-12-07T12:00:00Z"}"#,
        r#"{"name":"R","kind":"rally","time_zone":"Mars/Olympus"}"#,
        r#"{"name":"R","kind":"rally","capacity":0}"#,
    ] {
        let reply = h
            .send(json_request(operator(Method::POST, "/v1/rooms"), body))
            .await;
        assert_eq!(reply.status, 422, "{body}");
        assert_eq!(reply.header(header::CONTENT_TYPE), PROBLEM_JSON);
    }
    let reply = h
        .send(json_request(
            operator(Method::POST, "/v1/rooms"),
            r#"{"name":"R","kind":"rally","starts_at":"yesterday","ends_at":"today"}"#,
        ))
        .await;
    assert_eq!(reply.status, 422, "an unparseable time is a body error");
}

// ---- OpenAPI ----

/// The document names every route, and every operation it names is one the
/// router serves (not the fallback's 404 or a 405).
#[tokio::test]
async fn the_openapi_document_and_the_router_agree() {
    let h = harness();
    let reply = h
        .send(
            Request::get("/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header(header::CONTENT_TYPE), "application/json");
    let doc: serde_json::Value = reply.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for schema in [
        "Room",
        "NewRoom",
        "Problem",
        "Reach",
        "Report",
        "Participant",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/rooms",
        "/v1/rooms/{id}",
        "/v1/rooms/{id}/whep",
        "/v1/rooms/{id}/reach",
        "/v1/org",
        "/v1/openapi.json",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", "k3v9x0q2m7ab")
            .replace("{pid}", "s1")
            .replace("{action}", "mute");
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let reply = h
                .send(
                    Request::builder()
                        .method(method.clone())
                        .uri(&concrete)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await;
            let fallback = reply.status == 404
                && String::from_utf8_lossy(&reply.body).contains("no such route");
            assert!(
                !fallback && reply.status != 405
                    || path == "/v1/sessions/{id}" && method == Method::PATCH,
                "{method} {path} is documented but answers {}",
                reply.status
            );
            operations += 1;
        }
    }
    assert!(operations >= 25, "{operations} operations");
}

#[tokio::test]
async fn pages_are_served_with_a_strict_policy_and_nothing_else_is() {
    let h = harness();
    for (path, needle) in [
        ("/l/k3v9x0q2m7ab", "/assets/listen.js"),
        ("/h/k3v9x0q2m7ab", "/assets/host.js"),
        ("/b/k3v9x0q2m7ab", "/assets/bridge.js"),
        ("/j", "/assets/pin.js"),
        ("/j/40617289", "/assets/pin.js"),
        ("/console", "/assets/console.js"),
    ] {
        let reply = h
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(
            reply.header(header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        let csp = reply.header(header::CONTENT_SECURITY_POLICY);
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(
            csp.contains("require-trusted-types-for 'script'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(reply.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(reply.header(header::CACHE_CONTROL), "no-cache");
        let html = String::from_utf8_lossy(&reply.body);
        assert!(html.contains(needle), "{path} does not load {needle}");
    }
    let reply = h
        .send(
            Request::get("/assets/sabha.js")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header(header::CONTENT_TYPE),
        "text/javascript; charset=utf-8"
    );
    assert!(
        reply
            .header(header::CONTENT_SECURITY_POLICY)
            .contains("default-src 'none'")
    );
    for path in [
        "/assets/nope.js",
        "/assets/..%2f..%2fCargo.toml",
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/Cargo.toml",
        "/assets/listen.html",
        "/l/",
    ] {
        h.send(Request::get(path).body(Body::empty()).unwrap())
            .await
            .problem(404);
    }
}

#[tokio::test]
async fn a_rooms_summary_is_for_its_token_holders() {
    let h = harness();
    let room = h.room("rally").await;
    let other = h.room("bridge").await;
    let uri = format!("/v1/rooms/{}/tokens", room.id);
    let reply = h
        .send(json_request(
            operator(Method::POST, &uri),
            r#"{"role":"listener","name":"Asha"}"#,
        ))
        .await;
    let minted: TokenResponse = reply.json();
    let summary_of = |room: &str, token: &str| {
        Request::get(format!("/v1/rooms/{room}/summary?token={token}"))
            .body(Body::empty())
            .unwrap()
    };
    let reply = h.send(summary_of(&room.id, &minted.token)).await;
    assert_eq!(reply.status, 200);
    let summary: serde_json::Value = reply.json();
    assert_eq!(summary["id"], room.id.as_str());
    assert_eq!(summary["kind"], "rally");
    assert_eq!(summary["status"], "open");
    assert_eq!(summary["role"], "listener");
    assert_eq!(summary["caller_name"], "Asha");
    assert!(summary.get("code").is_none() && summary.get("hosts").is_none());
    h.send(summary_of(&other.id, &minted.token))
        .await
        .problem(403);
    h.send(summary_of(&room.id, "not-a-token"))
        .await
        .problem(401);
    h.send(
        Request::get(format!("/v1/rooms/{}/summary", room.id))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .problem(401);
    let reply = h
        .send(
            operator(Method::GET, &format!("/v1/rooms/{}/summary", other.id))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json::<serde_json::Value>()["role"], "host");
}

// ---- roles audit: every room-scoped route against every bad credential ----

/// Every room-scoped route: method, path under `/v1/rooms/{id}`, body
/// (`None`: no body), and whether a listener may call it.
/// `(Content-Type, body)`.
type Sent = Option<(&'static str, &'static str)>;

const ROOM_ROUTES: &[(&str, &str, Sent, bool)] = &[
    ("GET", "", None, false),
    ("DELETE", "", None, false),
    (
        "POST",
        "/tokens",
        Some(("application/json", r#"{"role":"host"}"#)),
        false,
    ),
    ("GET", "/occurrences", None, false),
    ("GET", "/summary", None, true),
    ("POST", "/whip", Some(("application/sdp", OFFER)), false),
    // A rally's listeners join its audience (off stage); a bridge's may
    // not join at all (checked below).
    ("POST", "/join", Some(("application/sdp", OFFER)), true),
    ("POST", "/whep", Some(("application/sdp", OFFER)), true),
    ("GET", "/participants", None, false),
    ("DELETE", "/participants/p1", None, false),
    ("POST", "/participants/p1/mute", None, false),
    ("POST", "/mute-all", None, false),
    ("POST", "/lock", None, false),
    ("POST", "/unlock", None, false),
    ("POST", "/end", None, false),
    ("GET", "/attendance", None, false),
    ("GET", "/attendance.csv", None, false),
    ("GET", "/reach", None, false),
    ("GET", "/reach.csv", None, false),
    ("GET", "/invite?unit=B1", None, false),
];

fn room_request(
    method: &str,
    uri: &str,
    body: Option<(&str, &str)>,
    token: Option<&str>,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    match body {
        Some((ctype, body)) => builder
            .header(header::CONTENT_TYPE, ctype)
            .body(Body::from(body.to_owned()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

#[tokio::test]
async fn every_room_route_refuses_bad_foreign_and_underprivileged_credentials() {
    let h = harness();
    let a = h.room("rally").await;
    let b = h.room("rally").await;
    let host_a = h.token(&a.id, Role::Host, 600);
    let (head, rest) = host_a.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    // The signature's last character changed.
    let flipped = {
        let mut s = signature.to_owned();
        let last = s.pop().unwrap();
        s.push(if last == 'A' { 'B' } else { 'A' });
        format!("{head}.{payload}.{s}")
    };
    // `{"alg":"none","typ":"JWT"}` over the same claims, unsigned.
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let other_key = Auth::new(b"another secret, 32 bytes long...", OperatorKey::new("x"));
    let wrong_key = other_key
        .tokens()
        .mint(&h.auth.tokens().verify(&host_a, unix_now()).unwrap())
        .unwrap();
    let expired = h.token(&a.id, Role::Host, -10);
    let host_b = h.token(&b.id, Role::Host, 600);
    let listener_a = h.token(&a.id, Role::Listener, 600);

    let mut wrong = Vec::new();
    for &(method, suffix, body, listener_ok) in ROOM_ROUTES {
        let uri = format!("/v1/rooms/{}{suffix}", a.id);
        let unauthenticated: [(&str, Option<&str>); 6] = [
            ("no token", None),
            ("flipped signature", Some(&flipped)),
            ("alg none", Some(&alg_none)),
            ("wrong key", Some(&wrong_key)),
            ("expired", Some(&expired)),
            ("garbage", Some("not-a-token")),
        ];
        for (case, token) in unauthenticated {
            let status = h.send(room_request(method, &uri, body, token)).await.status;
            if status != 401 {
                wrong.push(format!("{method} {suffix}: {case} → {status}, not 401"));
            }
        }
        let status = h
            .send(room_request(method, &uri, body, Some(&host_b)))
            .await
            .status;
        if status != 403 && status != 401 {
            wrong.push(format!("{method} {suffix}: room B's host token → {status}"));
        }
        if !listener_ok {
            let status = h
                .send(room_request(method, &uri, body, Some(&listener_a)))
                .await
                .status;
            if status != 403 && status != 401 {
                wrong.push(format!("{method} {suffix}: listener token → {status}"));
            }
        }
    }
    let bridge = h.room("bridge").await;
    let listener = h.token(&bridge.id, Role::Listener, 600);
    let uri = format!("/v1/rooms/{}/join", bridge.id);
    h.send(offer(&uri, Some(&listener), OFFER))
        .await
        .problem(403);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
