//! Crash safety of what the server records: `kill -9` in the middle of a
//! room, then a restart on the same data directory.
//!
//! Attendance rows are committed as sessions join, so everything written
//! before the kill is there after it; the sessions the dead server was
//! serving are closed by the next start with reason `server_restart`, at
//! the last heartbeat (never before their own join). The offers come from
//! str0m: the sessions need not connect to be recorded, so no WebRTC peer
//! is needed here (the aiortc rally checks attendance with real traffic).
//!
//! SIGTERM, by contrast, drains: new sessions are refused while the open
//! ones go on until they leave or the drain deadline, and what is still
//! open then is recorded as `server_shutdown` before a clean exit.
//!
//! And one process setting that only shows over a long run: transparent
//! huge pages are off (they made RSS grow by megabytes a minute, main.rs).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{OPERATOR_KEY, Server};
use serde_json::{Value, json};
use str0m::media::Direction;

fn offer(direction: Direction) -> String {
    common::str0m_offer(direction)
}

fn post_json(server: &Server, path: &str, body: Value) -> Value {
    ureq::post(&format!("{}{path}", server.base()))
        .header("Authorization", &format!("Bearer {OPERATOR_KEY}"))
        .send_json(body)
        .and_then(|mut r| r.body_mut().read_json())
        .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", server.log_tail(30)))
}

fn attendance(server: &Server, room: &str) -> Value {
    ureq::get(&format!("{}/v1/rooms/{room}/attendance", server.base()))
        .header("Authorization", &format!("Bearer {OPERATOR_KEY}"))
        .call()
        .and_then(|mut r| r.body_mut().read_json())
        .unwrap_or_else(|e| panic!("GET attendance: {e}\n{}", server.log_tail(30)))
}

/// Opens a session with `token`; returns its id.
fn open(server: &Server, room: &str, endpoint: &str, token: &str, direction: Direction) -> String {
    let response = ureq::post(&format!("{}/v1/rooms/{room}/{endpoint}", server.base()))
        .header("Authorization", &format!("Bearer {token}"))
        .content_type("application/sdp")
        .send(offer(direction))
        .unwrap_or_else(|e| panic!("POST {endpoint}: {e}\n{}", server.log_tail(30)));
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().expect("ascii");
    location.trim_start_matches("/v1/sessions/").to_owned()
}

#[test]
fn attendance_survives_kill_9_and_the_restart_closes_open_sessions() {
    let mut server = Server::start();
    let room = post_json(
        &server,
        "/v1/rooms",
        json!({"name": "Crash", "kind": "rally"}),
    );
    let room = room["id"].as_str().expect("room id").to_owned();
    let token = |role: &str, name: &str| {
        let body = json!({"role": role, "name": name});
        post_json(&server, &format!("/v1/rooms/{room}/tokens"), body)["token"]
            .as_str()
            .expect("token")
            .to_owned()
    };
    let (speaker, listener) = (token("speaker", "Leader"), token("listener", "Booth 7"));
    let published = open(&server, &room, "whip", &speaker, Direction::SendOnly);
    let listening = open(&server, &room, "whep", &listener, Direction::RecvOnly);
    let before = attendance(&server, &room);
    assert_eq!(before["totals"]["open"], 2, "{before}");

    server.kill_and_restart();

    let after = attendance(&server, &room);
    let sessions = after["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2, "nothing committed was lost: {after}");
    assert_eq!(after["totals"]["open"], 0, "{after}");
    for (id, name, kind) in [
        (&published, "Leader", "publish"),
        (&listening, "Booth 7", "listen"),
    ] {
        let row = sessions
            .iter()
            .find(|s| s["session"] == id.as_str())
            .unwrap_or_else(|| panic!("session {id} in {after}"));
        assert_eq!(
            (row["name"].as_str(), row["kind"].as_str()),
            (Some(name), Some(kind))
        );
        assert_eq!(row["leave_reason"], "server_restart", "{row}");
        let (joined, left) = (row["joined_at"].as_str(), row["left_at"].as_str());
        assert!(left >= joined, "{row}");
    }
    // The CLI prints the same as CSV.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_sabha"))
        .args(["attendance", &room, "--csv", "--server", &server.base()])
        .args(["--key", OPERATOR_KEY])
        .output()
        .expect("run sabha attendance");
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let csv = String::from_utf8(cli.stdout).expect("UTF-8");
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.starts_with("session,name,member,unit,role,kind,"))
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(rows.iter().all(|r| r.contains(",server_restart,")), "{csv}");

    // The restarted server takes new sessions and records them as usual.
    open(&server, &room, "whep", &listener, Direction::RecvOnly);
    assert_eq!(attendance(&server, &room)["totals"]["open"], 1);
}

/// A GET without credentials: (status, `Retry-After`, body).
fn get(server: &Server, path: &str) -> (u16, Option<String>, String) {
    let mut response = ureq::get(&format!("{}{path}", server.base()))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (response.status().as_u16(), retry, body)
}

/// Offers a WHEP session: (status, `Retry-After`, content type).
fn try_listen(server: &Server, room: &str, token: &str) -> (u16, Option<String>, String) {
    let response = ureq::post(&format!("{}/v1/rooms/{room}/whep", server.base()))
        .header("Authorization", &format!("Bearer {token}"))
        .content_type("application/sdp")
        .config()
        .http_status_as_error(false)
        .build()
        .send(offer(Direction::RecvOnly))
        .unwrap_or_else(|e| panic!("POST whep: {e}"));
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    (
        response.status().as_u16(),
        header("retry-after"),
        header("content-type").unwrap_or_default(),
    )
}

/// A rally with a listener token: (room id, token).
fn rally_with_listener(server: &Server) -> (String, String) {
    let room = post_json(
        server,
        "/v1/rooms",
        json!({"name": "Drain", "kind": "rally"}),
    );
    let room = room["id"].as_str().expect("room id").to_owned();
    let body = json!({"role": "listener", "name": "Booth 9"});
    let token = post_json(server, &format!("/v1/rooms/{room}/tokens"), body)["token"]
        .as_str()
        .expect("token")
        .to_owned();
    (room, token)
}

#[test]
fn sigterm_drains_refuses_new_sessions_and_closes_the_rest_at_the_deadline() {
    let mut server = Server::start_with_env(&[("SABHA_DRAIN_TIMEOUT_S", "3")]);
    let (room, token) = rally_with_listener(&server);
    let first = open(&server, &room, "whep", &token, Direction::RecvOnly);
    assert_eq!(get(&server, "/readyz").0, 200);

    let signalled = Instant::now();
    server.signal("TERM");
    // Draining: alive, not ready, new sessions refused with a retry hint.
    let deadline = signalled + Duration::from_secs(2);
    while get(&server, "/readyz").0 != 503 {
        assert!(Instant::now() < deadline, "/readyz never 503");
        thread::sleep(Duration::from_millis(20));
    }
    let (status, _, body) = get(&server, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(get(&server, "/healthz").0, 200);
    let (status, retry, content_type) = try_listen(&server, &room, &token);
    assert_eq!(
        (status, retry.as_deref(), content_type.as_str()),
        (503, Some("2"), "application/problem+json")
    );
    // The open session keeps the server up until the deadline.
    let exit = server
        .wait_exit(Duration::from_secs(20))
        .expect("the drain ends at its deadline");
    let took = signalled.elapsed();
    assert!(
        exit.success(),
        "a drain exits 0: {exit}\n{}",
        server.log_tail(30)
    );
    assert!(
        took >= Duration::from_millis(2_900),
        "{took:?}: left before the deadline with a session open"
    );

    server.start_again();
    let after = attendance(&server, &room);
    let sessions = after["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "the refused offer left no row: {after}");
    assert_eq!(sessions[0]["session"], first.as_str());
    assert_eq!(sessions[0]["leave_reason"], "server_shutdown", "{after}");
    assert_eq!(get(&server, "/readyz").0, 200, "the new process is ready");
}

#[test]
fn sigterm_exits_as_soon_as_the_last_session_leaves() {
    let mut server = Server::start_with_env(&[("SABHA_DRAIN_TIMEOUT_S", "120")]);
    let (room, token) = rally_with_listener(&server);
    let session = open(&server, &room, "whep", &token, Direction::RecvOnly);

    server.signal("TERM");
    thread::sleep(Duration::from_millis(500));
    assert!(
        server.is_running(),
        "exited with a session open:\n{}",
        server.log_tail(30)
    );
    let left = Instant::now();
    let status = ureq::delete(&format!("{}/v1/sessions/{session}", server.base()))
        .call()
        .expect("DELETE the session while draining")
        .status();
    assert_eq!(status, 204);
    let exit = server
        .wait_exit(Duration::from_secs(20))
        .expect("the drain ends when the room is empty");
    assert!(exit.success(), "{exit}\n{}", server.log_tail(30));
    let took = left.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");

    server.start_again();
    let after = attendance(&server, &room);
    assert_eq!(after["totals"]["open"], 0, "{after}");
    assert_eq!(after["sessions"][0]["leave_reason"], "left", "{after}");
}

/// The kernel's own flag, as `/proc/<pid>/status` shows it: 0 when the
/// process turned THP off with `prctl(PR_SET_THP_DISABLE)`.
#[test]
fn the_server_runs_with_transparent_huge_pages_off() {
    let server = Server::start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("the server's /proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .expect("a kernel that reports THP_enabled (5.0 and later)");
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}
