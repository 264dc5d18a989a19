//! A scheduled room through the real binary and its scheduler task, on the
//! wall clock: a session before the window gets 425 naming the start, one
//! in it opens, and at the end the scheduler closes the room — the session
//! is recorded as `room_closed` and the room refuses newcomers (410). And
//! the same after a `kill -9` between scheduling and the start.

mod common;

use std::time::Duration;

use common::{OPERATOR_KEY, Server, str0m_offer};
use serde_json::{Value, json};
use str0m::media::Direction;

fn whep(server: &Server, room: &str) -> (u16, String) {
    let response = ureq::post(&format!("{}/v1/rooms/{room}/whep", server.base()))
        .header("Authorization", &format!("Bearer {OPERATOR_KEY}"))
        .content_type("application/sdp")
        .config()
        .http_status_as_error(false)
        .build()
        .send(str0m_offer(Direction::RecvOnly))
        .expect("WHEP request");
    let status = response.status().as_u16();
    let body = response.into_body().read_to_string().unwrap_or_default();
    (status, body)
}

fn get(server: &Server, path: &str) -> Value {
    ureq::get(&format!("{}{path}", server.base()))
        .header("Authorization", &format!("Bearer {OPERATOR_KEY}"))
        .call()
        .and_then(|mut r| r.body_mut().read_json())
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", server.log_tail(30)))
}

/// Creates a rally scheduled for `start`..`end`; its id.
fn schedule_rally(
    server: &Server,
    name: &str,
    start: jiff::Timestamp,
    end: jiff::Timestamp,
) -> String {
    let room: Value = ureq::post(&format!("{}/v1/rooms", server.base()))
        .header("Authorization", &format!("Bearer {OPERATOR_KEY}"))
        .send_json(json!({
            "name": name, "kind": "rally",
            "starts_at": start.to_string(), "ends_at": end.to_string(),
            "time_zone": "Asia/Kolkata"
        }))
        .and_then(|mut r| r.body_mut().read_json())
        .unwrap_or_else(|e| panic!("create: {e}\n{}", server.log_tail(30)));
    assert_eq!(room["status"], "scheduled", "{room}");
    room["id"].as_str().expect("room id").to_owned()
}

fn sleep_until(t: jiff::Timestamp) {
    if let Ok(wait) = Duration::try_from(t.duration_since(jiff::Timestamp::now())) {
        std::thread::sleep(wait);
    }
}

#[test]
fn a_scheduled_room_opens_and_closes_on_time() {
    let server = Server::start_with_env(&[("SABHA_EARLY_JOIN_GRACE_S", "0")]);
    // Whole seconds: the API stores windows at second precision.
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
    let start = now + jiff::SignedDuration::from_secs(3);
    let end = start + jiff::SignedDuration::from_secs(3);
    let id = schedule_rally(&server, "Three-second rally", start, end);

    let (status, body) = whep(&server, &id);
    assert_eq!(status, 425, "{body}");
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["starts_at"], start.to_string());

    sleep_until(start + jiff::SignedDuration::from_millis(300));
    let (status, body) = whep(&server, &id);
    assert_eq!(status, 201, "{body}\n{}", server.log_tail(30));
    assert_eq!(get(&server, &format!("/v1/rooms/{id}"))["status"], "open");

    // The scheduler wakes at the end by itself: no request prompts it.
    sleep_until(end + jiff::SignedDuration::from_millis(1500));
    let room = get(&server, &format!("/v1/rooms/{id}"));
    assert_eq!(room["status"], "ended", "{room}\n{}", server.log_tail(30));
    let attendance = get(&server, &format!("/v1/rooms/{id}/attendance"));
    assert_eq!(
        attendance["sessions"][0]["leave_reason"], "room_closed",
        "{attendance}"
    );
    let occurrences = get(&server, &format!("/v1/rooms/{id}/occurrences"));
    assert_eq!(occurrences[0]["outcome"], "held", "{occurrences}");
    assert_eq!(whep(&server, &id).0, 410);
}

/// `kill -9` between scheduling and the start: the restarted server still
/// has the room and its window, and its scheduler opens and closes it on
/// time, with no request to prompt it (SIGKILL loses nothing committed).
#[test]
fn a_schedule_survives_kill_9_and_runs_on_time_after_the_restart() {
    let mut server = Server::start_with_env(&[("SABHA_EARLY_JOIN_GRACE_S", "0")]);
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
    let start = now + jiff::SignedDuration::from_secs(4);
    let end = start + jiff::SignedDuration::from_secs(3);
    let id = schedule_rally(&server, "Rally after a crash", start, end);

    server.kill_and_restart();
    let after = get(&server, &format!("/v1/rooms/{id}"));
    assert_eq!(after["status"], "scheduled", "{after}");
    assert_eq!(after["starts_at"], start.to_string(), "{after}");
    assert_eq!(after["ends_at"], end.to_string(), "{after}");
    assert_eq!(whep(&server, &id).0, 425);

    sleep_until(start + jiff::SignedDuration::from_millis(300));
    let (status, body) = whep(&server, &id);
    assert_eq!(status, 201, "{body}\n{}", server.log_tail(30));
    sleep_until(end + jiff::SignedDuration::from_millis(1500));
    let room = get(&server, &format!("/v1/rooms/{id}"));
    assert_eq!(room["status"], "ended", "{room}\n{}", server.log_tail(30));
    let occurrences = get(&server, &format!("/v1/rooms/{id}/occurrences"));
    assert_eq!(occurrences[0]["outcome"], "held", "{occurrences}");
}
