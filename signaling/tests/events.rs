//! The room event socket end to end: the router on a real loopback TCP
//! listener, scripted WebSocket clients (tokio-tungstenite), sessions opened
//! on the fake media side, and media events injected through it.
//!
//! HTTP requests go through `oneshot` on a clone of the same router, which
//! shares its room state with the served one.

mod fakes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fakes::{FakeMedia, FakeStore};
use futures_util::{SinkExt, StreamExt};
use sabha_signaling::timestamp::unix_now;
use sabha_signaling::token::Claims;
use sabha_signaling::{
    AppState, Auth, CorsConfig, MediaEvent, OperatorKey, Role, Room, SpeakerLevel, router,
};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message as Frame};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tower::ServiceExt;

const KEY: &str = "sk_operator_for_event_tests";
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
/// Long enough for a loaded 2-core CI machine, short enough to fail fast.
const WAIT: Duration = Duration::from_secs(5);

struct Server {
    app: Router,
    addr: std::net::SocketAddr,
    media: Arc<FakeMedia>,
    auth: Auth,
}

async fn serve() -> Server {
    let media = Arc::new(FakeMedia::default());
    let auth = Auth::new(b"test secret, 32 bytes long......", OperatorKey::new(KEY));
    let store = Arc::new(FakeStore::default());
    let state = AppState {
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
    };
    let app = router(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = app.clone();
    tokio::spawn(async move { axum::serve(listener, served).await.unwrap() });
    Server {
        app,
        addr,
        media,
        auth,
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Client(Ws);

impl Client {
    /// The next JSON message (pings and pongs skipped).
    async fn next(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.0.next())
                .await
                .expect("a message in time")
                .expect("the socket is open")
                .expect("a valid frame");
            match frame {
                Frame::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                Frame::Ping(_) | Frame::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The next message, which must be of type `kind`. Listener counts
    /// (`audience`) come once a second whenever the count changed, so
    /// other expectations skip them.
    async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let message = self.next().await;
            if message["type"] == "audience" && kind != "audience" {
                continue;
            }
            assert_eq!(message["type"], kind, "{message}");
            return message;
        }
    }

    async fn send(&mut self, command: Value) {
        self.0
            .send(Frame::text(command.to_string()))
            .await
            .expect("the socket takes a frame");
    }

    async fn send_text(&mut self, text: &str) {
        self.0.send(Frame::text(text)).await.unwrap();
    }
}

impl Server {
    async fn http(
        &self,
        method: Method,
        uri: &str,
        token: &str,
        sdp: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match sdp {
            Some(offer) => {
                request = request.header(header::CONTENT_TYPE, "application/sdp");
                Body::from(offer.to_owned())
            }
            None => Body::empty(),
        };
        let response = self
            .app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let location = response.headers().get(header::LOCATION).cloned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let value = match location {
            Some(location) => json!({ "location": location.to_str().unwrap() }),
            None => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        };
        (status, value)
    }

    async fn room(&self, kind: &str) -> Room {
        let request = Request::post("/v1/rooms")
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(format!(
                r#"{{"name":"Town hall","kind":"{kind}"}}"#
            )))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn token(&self, room: &str, role: Role, name: &str) -> String {
        let now = unix_now();
        let claims = Claims {
            room: room.to_owned(),
            role,
            name: Some(name.to_owned()),
            member: None,
            unit: None,
            exp: now + 600,
            iat: now,
        };
        self.auth.tokens().mint(&claims).unwrap()
    }

    /// Opens a session (`whip`, `whep` or `join`); its id.
    async fn open(&self, room: &str, endpoint: &str, token: &str) -> String {
        let uri = format!("/v1/rooms/{room}/{endpoint}");
        let (status, reply) = self.http(Method::POST, &uri, token, Some(OFFER)).await;
        assert_eq!(status, 201, "{endpoint}: {reply}");
        let location = reply["location"].as_str().unwrap();
        location.trim_start_matches("/v1/sessions/").to_owned()
    }

    async fn try_connect(&self, room: &str, query: &str) -> Result<Client, tungstenite::Error> {
        let url = format!("ws://{}/v1/rooms/{room}/events{query}", self.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Client(ws))
    }

    /// A socket for `token` (in `?token=`), bound to `session` if given;
    /// its first message, the roster, is returned beside it.
    async fn connect(&self, room: &str, token: &str, session: Option<&str>) -> (Client, Value) {
        let mut query = format!("?token={token}");
        if let Some(session) = session {
            query.push_str(&format!("&session={session}"));
        }
        let mut client = self.try_connect(room, &query).await.expect("upgrade");
        let roster = client.expect("roster").await;
        (client, roster)
    }

    /// A host socket with the operator key in the header.
    async fn host(&self, room: &str) -> (Client, Value) {
        let url = format!("ws://{}/v1/rooms/{room}/events", self.addr);
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {KEY}").parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut client = Client(ws);
        let roster = client.expect("roster").await;
        (client, roster)
    }
}

#[tokio::test]
async fn roster_joined_self_mute_and_left() {
    let s = serve().await;
    let room = s.room("bridge").await;
    let (mut host, roster) = s.host(&room.id).await;
    assert_eq!(
        roster,
        json!({"type": "roster", "seq": 0, "participants": [], "listeners": 0, "locked": false, "ended": false})
    );

    let token = s.token(&room.id, Role::Participant, "Asha");
    let sid = s.open(&room.id, "join", &token).await;
    let joined = host.expect("joined").await;
    assert_eq!(joined["seq"], 1);
    assert_eq!(
        joined["participant"],
        json!({"id": sid, "name": "Asha", "role": "participant", "kind": "join",
               "muted": false, "speaking": false, "hand_raised": false, "on_stage": true})
    );

    let (mut me, roster) = s.connect(&room.id, &token, Some(&sid)).await;
    assert_eq!(roster["seq"], 1);
    assert_eq!(roster["participants"][0]["id"], sid.as_str());

    me.send(json!({"type": "mute"})).await;
    for client in [&mut host, &mut me] {
        let muted = client.expect("muted").await;
        assert_eq!(
            (&muted["participant"], &muted["seq"]),
            (&json!(sid), &json!(2))
        );
    }
    assert_eq!(s.media.is_muted(&sid), Some(true));
    me.send(json!({"type": "unmute"})).await;
    host.expect("unmuted").await;
    me.expect("unmuted").await;
    assert_eq!(s.media.is_muted(&sid), Some(false));

    // Not a host: refused on this socket only, which keeps working.
    me.send(json!({"type": "mute_all"})).await;
    let error = me.expect("error").await;
    assert_eq!(error["title"], "Forbidden");
    assert!(
        error["detail"].as_str().unwrap().contains("host"),
        "{error}"
    );
    me.send_text("{this is not json").await;
    assert_eq!(me.expect("error").await["title"], "Bad Request");
    me.send(json!({"type": "mute", "participant": "someone-else"}))
        .await;
    assert_eq!(me.expect("error").await["title"], "Forbidden");
    me.send(json!({"type": "raise_hand"})).await;
    assert_eq!(me.expect("hand_raised").await["participant"], sid.as_str());
    host.expect("hand_raised").await;

    let (status, _) = s
        .http(Method::DELETE, &format!("/v1/sessions/{sid}"), KEY, None)
        .await;
    assert_eq!(status, 204);
    let left = host.expect("left").await;
    assert_eq!(
        (&left["participant"], &left["reason"]),
        (&json!(sid), &json!("left"))
    );
}

#[tokio::test]
async fn rally_audience_on_join_is_promoted_and_demoted() {
    let s = serve().await;
    let room = s.room("rally").await;
    let (mut host, _) = s.host(&room.id).await;
    let token = s.token(&room.id, Role::Listener, "Ravi");
    let sid = s.open(&room.id, "join", &token).await;
    assert_eq!(s.media.is_muted(&sid), Some(true), "audience starts muted");
    let joined = host.expect("joined").await;
    assert_eq!(joined["participant"]["on_stage"], false);

    let (mut me, _) = s.connect(&room.id, &token, Some(&sid)).await;
    me.send(json!({"type": "unmute"})).await; // not muted by anyone: no-op
    me.send(json!({"type": "raise_hand"})).await;
    host.expect("hand_raised").await;
    me.expect("hand_raised").await;
    assert_eq!(s.media.is_muted(&sid), Some(true), "still off stage");

    host.send(json!({"type": "promote", "participant": sid}))
        .await;
    for client in [&mut host, &mut me] {
        let promoted = client.expect("promoted").await;
        assert_eq!(promoted["participant"], sid.as_str());
        assert!(promoted.get("token").is_none(), "{promoted}");
    }
    assert_eq!(s.media.is_muted(&sid), Some(false));
    let (_, list) = s
        .http(
            Method::GET,
            &format!("/v1/rooms/{}/participants", room.id),
            KEY,
            None,
        )
        .await;
    assert_eq!(
        (&list[0]["on_stage"], &list[0]["hand_raised"]),
        (&json!(true), &json!(false))
    );

    host.send(json!({"type": "demote", "participant": sid}))
        .await;
    host.expect("demoted").await;
    me.expect("demoted").await;
    assert_eq!(s.media.is_muted(&sid), Some(true));
}

#[tokio::test]
async fn rally_listener_on_whep_is_promoted_with_a_token() {
    let s = serve().await;
    let room = s.room("rally").await;
    let (mut host, _) = s.host(&room.id).await;
    let token = s.token(&room.id, Role::Listener, "Meera");
    let sid = s.open(&room.id, "whep", &token).await;
    host.expect("joined").await;
    let (mut me, _) = s.connect(&room.id, &token, Some(&sid)).await;
    me.send(json!({"type": "raise_hand"})).await;
    host.expect("hand_raised").await;
    me.expect("hand_raised").await;

    host.send(json!({"type": "promote", "participant": sid}))
        .await;
    let seen_by_host = host.expect("promoted").await;
    assert!(
        seen_by_host.get("token").is_none(),
        "only the promoted sees it"
    );
    let promoted = me.expect("promoted").await;
    let join = format!("/v1/rooms/{}/join", room.id);
    assert_eq!(promoted["join"], join.as_str());
    let speaker = promoted["token"].as_str().unwrap();
    let claims = s.auth.tokens().verify(speaker, unix_now()).unwrap();
    assert_eq!(
        (claims.room.as_str(), claims.role, claims.name.as_deref()),
        (room.id.as_str(), Role::Speaker, Some("Meera"))
    );

    let on_stage = s.open(&room.id, "join", speaker).await;
    let joined = host.expect("joined").await;
    assert_eq!(joined["participant"]["id"], on_stage.as_str());
    assert_eq!(joined["participant"]["role"], "speaker");
    assert_eq!(joined["participant"]["on_stage"], true);
    assert_eq!(s.media.is_muted(&on_stage), None, "never muted");
}

#[tokio::test]
async fn a_listener_sees_the_stage_and_a_count_not_the_other_listeners() {
    let s = serve().await;
    let room = s.room("rally").await;
    let (mut host, _) = s.host(&room.id).await;
    let token = s.token(&room.id, Role::Listener, "Meera");
    let me = s.open(&room.id, "whep", &token).await;
    let other = s.open(&room.id, "whep", &token).await;
    let (mut socket, roster) = s.connect(&room.id, &token, Some(&me)).await;
    assert_eq!(roster["listeners"], 2);
    let ids: Vec<&Value> = roster["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["id"])
        .collect();
    assert_eq!(ids, [&json!(me)], "myself, not the other listener");

    let third = s.open(&room.id, "whep", &token).await;
    s.http(
        Method::DELETE,
        &format!("/v1/sessions/{other}"),
        &token,
        None,
    )
    .await;
    let speaker = s.token(&room.id, Role::Speaker, "Leader");
    let on_stage = s.open(&room.id, "whip", &speaker).await;
    // The stage's join comes through; the crowd's joins and leaves do not,
    // only their count, which may go out between any two of these changes
    // and ends at 2 (me and the third).
    let (mut stage_joined, mut count) = (false, Value::Null);
    while !stage_joined || count != 2 {
        let message = socket.next().await;
        match message["type"].as_str() {
            Some("audience") => count = message["listeners"].clone(),
            Some("joined") if message["participant"]["id"] == on_stage.as_str() => {
                stage_joined = true
            }
            _ => panic!("a listener sees only the stage and counts: {message}"),
        }
    }
    // The host saw every one of them.
    for expected in [&me, &other, &third] {
        assert_eq!(
            host.expect("joined").await["participant"]["id"],
            expected.as_str()
        );
    }
    assert_eq!(host.expect("left").await["participant"], other.as_str());
    assert_eq!(
        host.expect("joined").await["participant"]["id"],
        on_stage.as_str()
    );

    // Events about myself still reach me.
    socket.send(json!({"type": "raise_hand"})).await;
    assert_eq!(
        socket.expect("hand_raised").await["participant"],
        me.as_str()
    );
    assert_eq!(host.expect("hand_raised").await["participant"], me.as_str());
}

#[tokio::test]
async fn remove_lock_and_end() {
    let s = serve().await;
    let room = s.room("bridge").await;
    let (mut host, _) = s.host(&room.id).await;
    let token = s.token(&room.id, Role::Participant, "Asha");
    let sid = s.open(&room.id, "join", &token).await;
    host.expect("joined").await;

    host.send(json!({"type": "remove", "participant": sid}))
        .await;
    let left = host.expect("left").await;
    assert_eq!(
        (&left["participant"], &left["reason"]),
        (&json!(sid), &json!("removed"))
    );
    assert!(!s.media.live.lock().unwrap().contains(&sid));

    host.send(json!({"type": "lock"})).await;
    host.expect("locked").await;
    let join = format!("/v1/rooms/{}/join", room.id);
    let (status, problem) = s.http(Method::POST, &join, &token, Some(OFFER)).await;
    assert_eq!(status, 423);
    assert!(
        problem["detail"].as_str().unwrap().contains("locked"),
        "{problem}"
    );
    let host_session = s.open(&room.id, "join", KEY).await; // hosts still may
    host.expect("joined").await;
    host.send(json!({"type": "unlock"})).await;
    host.expect("unlocked").await;
    s.open(&room.id, "join", &token).await;
    host.expect("joined").await;

    host.send(json!({"type": "end"})).await;
    host.expect("room_ended").await;
    assert_eq!(*s.media.closed_rooms.lock().unwrap(), vec![room.id.clone()]);
    for credential in [token.as_str(), KEY] {
        let (status, problem) = s.http(Method::POST, &join, credential, Some(OFFER)).await;
        assert_eq!(status, 410, "{problem}");
    }
    // The media side reports the closed sessions: nothing left to announce.
    s.media.emit(MediaEvent::Closed {
        room: room.id.clone(),
        session: host_session,
        reason: "room_closed".into(),
        traffic: Default::default(),
    });
    host.send(json!({"type": "lock"})).await;
    host.expect("locked").await;
}

#[tokio::test]
async fn media_events_reach_the_socket() {
    let s = serve().await;
    let room = s.room("bridge").await;
    let (mut host, _) = s.host(&room.id).await;
    let token = s.token(&room.id, Role::Participant, "Asha");
    let sid = s.open(&room.id, "join", &token).await;
    host.expect("joined").await;

    s.media.emit(MediaEvent::Speaking {
        room: room.id.clone(),
        speakers: vec![SpeakerLevel {
            session: sid.clone(),
            level: 20,
        }],
    });
    let speaking = host.expect("speaking").await;
    assert_eq!(speaking["speakers"], json!([{"id": sid, "level": 20}]));
    let (_, list) = s
        .http(
            Method::GET,
            &format!("/v1/rooms/{}/participants", room.id),
            KEY,
            None,
        )
        .await;
    assert_eq!(list[0]["speaking"], true);

    s.media.emit(MediaEvent::Closed {
        room: room.id.clone(),
        session: sid.clone(),
        reason: "ice_timeout".into(),
        traffic: Default::default(),
    });
    let left = host.expect("left").await;
    assert_eq!(left["reason"], "ice_timeout");
}

#[tokio::test]
async fn upgrade_is_refused_before_the_socket_opens() {
    let s = serve().await;
    let room = s.room("bridge").await;
    let other = s.room("bridge").await;
    let status = |result: Result<Client, tungstenite::Error>| match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("upgraded"),
    };
    assert_eq!(status(s.try_connect(&room.id, "").await), 401);
    let token = s.token(&other.id, Role::Host, "Asha");
    assert_eq!(
        status(s.try_connect(&room.id, &format!("?token={token}")).await),
        403
    );
    assert_eq!(
        status(
            s.try_connect("zzzzzzzzzzzz", &format!("?token={KEY}"))
                .await
        ),
        401
    );
    let token = s.token(&room.id, Role::Participant, "Asha");
    let query = format!("?token={token}&session=s99");
    assert_eq!(status(s.try_connect(&room.id, &query).await), 404);
    let sid = s.open(&other.id, "whep", KEY).await;
    let query = format!("?token={token}&session={sid}");
    assert_eq!(
        status(s.try_connect(&room.id, &query).await),
        404,
        "session of another room"
    );
}

#[tokio::test]
async fn deleting_the_room_closes_its_sockets() {
    let s = serve().await;
    let room = s.room("rally").await;
    let (mut host, _) = s.host(&room.id).await;
    let (status, _) = s
        .http(Method::DELETE, &format!("/v1/rooms/{}", room.id), KEY, None)
        .await;
    assert_eq!(status, 204);
    let end = tokio::time::timeout(WAIT, host.0.next())
        .await
        .expect("the socket ends in time");
    assert!(
        matches!(end, None | Some(Ok(Frame::Close(_))) | Some(Err(_))),
        "{end:?}"
    );
}
