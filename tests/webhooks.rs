//! Webhooks end to end: the real binary delivers to a receiver in this
//! test (axum on 127.0.0.1:0) that checks every Standard Webhooks
//! signature. Deliveries that fail are retried until they succeed, and
//! events recorded while the receiver is down survive a `kill -9` of the
//! server and arrive after its restart. Sessions are opened with str0m
//! offers; they need not connect (see `tests/crash.rs`).

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{OPERATOR_KEY, Server};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// Every request with a valid signature: (webhook-id, body).
    attempts: Mutex<Vec<(String, Value)>>,
    /// Accepted (2xx) deliveries, by id.
    accepted: Mutex<HashMap<String, Value>>,
    bad_signatures: AtomicU32,
    /// Answer 500 to this many more valid requests.
    fail_next: AtomicU32,
}

fn verify(headers: &HeaderMap, body: &str) -> Option<String> {
    let get = |name: &str| headers.get(name)?.to_str().ok().map(str::to_owned);
    let (id, timestamp, signature) = (
        get("webhook-id")?,
        get("webhook-timestamp")?,
        get("webhook-signature")?,
    );
    if get("content-type").as_deref() != Some("application/json") {
        return None;
    }
    let ts: i64 = timestamp.parse().ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    if (now - ts).abs() > 300 {
        return None;
    }
    let key = STANDARD.decode(SECRET.strip_prefix("whsec_")?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    signature.split(' ').any(|s| s == expected).then_some(id)
}

async fn receive(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: String) -> StatusCode {
    let Some(id) = verify(&headers, &body) else {
        seen.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    };
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(json["id"], id.as_str(), "the body's id is the header's");
    seen.attempts
        .lock()
        .unwrap()
        .push((id.clone(), json.clone()));
    if seen
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    seen.accepted.lock().unwrap().insert(id, json);
    StatusCode::NO_CONTENT
}

/// Serves the receiver on `listener` in a thread of its own.
fn start_receiver(listener: TcpListener, seen: Arc<Seen>) {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new()
                .route("/hook", axum::routing::post(receive))
                .with_state(seen);
            axum::serve(listener, app).await.unwrap();
        });
    });
}

fn offer(direction: Direction) -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, direction, None, None, None);
    let (offer, _pending) = change.apply().expect("offer");
    offer.to_sdp_string()
}

fn operator(server: &Server, path: &str, body: Option<Value>) -> Value {
    let url = format!("{}{path}", server.base());
    let auth = format!("Bearer {OPERATOR_KEY}");
    let response = match body {
        Some(body) => ureq::post(&url)
            .header("Authorization", &auth)
            .send_json(body),
        None => ureq::post(&url).header("Authorization", &auth).send_empty(),
    };
    let mut response =
        response.unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", server.log_tail(30)));
    response.body_mut().read_json().unwrap_or(Value::Null)
}

/// A room, and a listener (member M-1, unit booth-7) in it; their ids.
fn room_with_listener(server: &Server) -> (String, String) {
    let room = operator(
        server,
        "/v1/rooms",
        Some(json!({"name": "Hooks", "kind": "rally"})),
    );
    let room = room["id"].as_str().expect("room id").to_owned();
    let token = operator(
        server,
        &format!("/v1/rooms/{room}/tokens"),
        Some(json!({"role": "listener", "name": "Asha"})),
    )["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let response = ureq::post(&format!("{}/v1/rooms/{room}/whep", server.base()))
        .header("Authorization", &format!("Bearer {token}"))
        .content_type("application/sdp")
        .send(offer(Direction::RecvOnly))
        .unwrap_or_else(|e| panic!("WHEP: {e}\n{}", server.log_tail(30)));
    assert_eq!(response.status(), 201);
    let session = response.headers()["location"].to_str().unwrap();
    (room, session.trim_start_matches("/v1/sessions/").to_owned())
}

fn wait_for(server: &Server, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            server.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn types(seen: &Seen) -> Vec<String> {
    let mut types: Vec<String> = seen
        .accepted
        .lock()
        .unwrap()
        .values()
        .map(|b| b["type"].as_str().unwrap_or("").to_owned())
        .collect();
    types.sort();
    types
}

fn fast_retries(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SABHA_WEBHOOK_URLS", url.to_owned()),
        ("SABHA_WEBHOOK_SECRET", SECRET.to_owned()),
        ("SABHA_WEBHOOK_RETRY_BASE_MS", "100".to_owned()),
        ("SABHA_WEBHOOK_RETRY_CAP_MS", "400".to_owned()),
        ("SABHA_WEBHOOK_MAX_ATTEMPTS", "1000".to_owned()),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn failed_deliveries_are_retried_until_every_event_arrives_signed() {
    let seen = Arc::new(Seen::default());
    seen.fail_next.store(3, Ordering::SeqCst);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    start_receiver(listener, seen.clone());
    let env = fast_retries(&url);
    let server = Server::start_with_env(&env_refs(&env));

    let (room, session) = room_with_listener(&server);
    operator(&server, &format!("/v1/rooms/{room}/end"), None);
    wait_for(&server, "all four events", Duration::from_secs(30), || {
        types(&seen)
            == [
                "participant_joined",
                "participant_left",
                "room_ended",
                "room_started",
            ]
    });

    assert_eq!(seen.bad_signatures.load(Ordering::SeqCst), 0);
    assert_eq!(
        seen.fail_next.load(Ordering::SeqCst),
        0,
        "the first 3 were refused"
    );
    let attempts = seen.attempts.lock().unwrap().clone();
    assert!(attempts.len() >= 4 + 3, "{attempts:?}");
    // Every attempt of one event carries the same id and the same body.
    let accepted = seen.accepted.lock().unwrap().clone();
    for (id, body) in &attempts {
        assert_eq!(
            accepted.get(id),
            Some(body),
            "retries resend the same event"
        );
    }
    let by_type = |t: &str| accepted.values().find(|b| b["type"] == t).unwrap().clone();
    let joined = by_type("participant_joined");
    assert_eq!(joined["data"]["room"], room.as_str());
    assert_eq!(joined["data"]["session"], session.as_str());
    assert_eq!(joined["data"]["name"], "Asha");
    let left = by_type("participant_left");
    assert_eq!(left["data"]["session"], session.as_str());
    assert!(
        left["data"]["reason"].is_string() && left["data"]["seconds"].is_u64(),
        "{left}"
    );
    assert_eq!(by_type("room_ended")["data"]["reason"], "ended");

    let metrics = ureq::get(&format!("{}/metrics", server.base()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains(r#"sabha_webhook_deliveries_total{result="retried"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sabha_webhook_deliveries_total{result="ok"}"#),
        "{metrics}"
    );
}

#[test]
fn events_recorded_while_the_receiver_is_down_arrive_after_a_kill_and_restart() {
    // A port with nobody on it yet: deliveries are refused.
    let reserved = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let url = format!("http://{addr}/hook");
    let env = fast_retries(&url);
    let mut server = Server::start_with_env(&env_refs(&env));
    let (room, session) = room_with_listener(&server);
    // Let the worker fail at least once before the kill.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        server.log_tail(200).contains("webhook delivery failed"),
        "{}",
        server.log_tail(40)
    );
    server.kill_and_restart();

    let seen = Arc::new(Seen::default());
    start_receiver(
        TcpListener::bind(addr).expect("the reserved port is free"),
        seen.clone(),
    );
    wait_for(
        &server,
        "the events of the killed server",
        Duration::from_secs(30),
        || {
            let types = types(&seen);
            types.contains(&"room_started".to_owned())
                && types.contains(&"participant_joined".to_owned())
        },
    );
    assert_eq!(seen.bad_signatures.load(Ordering::SeqCst), 0);
    let accepted = seen.accepted.lock().unwrap().clone();
    let started = accepted
        .values()
        .find(|b| b["type"] == "room_started")
        .unwrap();
    assert_eq!(started["data"]["room"], room.as_str());
    let joined = accepted
        .values()
        .find(|b| b["type"] == "participant_joined")
        .unwrap();
    assert_eq!(joined["data"]["session"], session.as_str());
}

#[test]
fn an_endpoint_that_always_fails_is_given_up_after_the_last_attempt() {
    let seen = Arc::new(Seen::default());
    seen.fail_next.store(u32::MAX, Ordering::SeqCst);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    start_receiver(listener, seen.clone());
    let mut env = fast_retries(&url);
    env.retain(|(k, _)| *k != "SABHA_WEBHOOK_MAX_ATTEMPTS");
    env.push(("SABHA_WEBHOOK_MAX_ATTEMPTS", "3".to_owned()));
    let server = Server::start_with_env(&env_refs(&env));
    operator(
        &server,
        "/v1/rooms",
        Some(json!({"name": "Doomed", "kind": "bridge"})),
    );
    let metrics = || {
        ureq::get(&format!("{}/metrics", server.base()))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    };
    wait_for(&server, "the give-up", Duration::from_secs(30), || {
        metrics().contains(r#"sabha_webhook_deliveries_total{result="failed"} 1"#)
    });
    std::thread::sleep(Duration::from_millis(600));
    let attempts = seen.attempts.lock().unwrap().clone();
    assert_eq!(
        attempts.len(),
        3,
        "exactly max_attempts tries: {attempts:?}"
    );
    assert!(attempts.iter().all(|(id, _)| *id == attempts[0].0));
    assert!(server.log_tail(100).contains("webhook given up"));
}
