//! Operator API keys with scopes through the real binary: import a small
//! organisation, create a key per district with `sabha keys create`, and
//! check over HTTP that a district operator cannot read or schedule the
//! other district's rooms, that `sabha keys revoke` takes effect at once,
//! and that no secret reaches `GET /v1/keys` or the server's log.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{OPERATOR_KEY, Server};
use serde_json::{Value, json};
use ureq::Agent;

fn sabha(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sabha"))
        .args(args)
        .args(["--server", &server.base(), "--key", OPERATOR_KEY])
        .output()
        .expect("run sabha")
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

struct Http {
    agent: Agent,
    base: String,
}

impl Http {
    fn new(server: &Server) -> Self {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Self {
            agent,
            base: server.base(),
        }
    }

    fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {key}");
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            ("PUT", Some(body)) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_json(body),
            (_, body) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(body.unwrap_or(json!({}))),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (response.status().as_u16(), json)
    }

    fn room(&self, key: &str, unit: Option<&str>) -> (u16, Value) {
        let body = json!({"name": "Rally", "kind": "rally", "unit": unit});
        self.call("POST", "/v1/rooms", key, Some(body))
    }
}

fn room_ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_district_operator_cannot_read_or_schedule_another_districts_rooms() {
    let server = Server::start();
    let http = Http::new(&server);
    let org = json!({"units": [
        {"id": "MH", "kind": "state", "name": "Maharashtra"},
        {"id": "PUNE", "kind": "district", "name": "Pune", "parent": "MH"},
        {"id": "NGP", "kind": "district", "name": "Nagpur", "parent": "MH"},
        {"id": "KOTH", "kind": "mandal", "name": "Kothrud", "parent": "PUNE"},
        {"id": "KOTH-B1", "kind": "booth", "name": "Booth 1", "parent": "KOTH"},
        {"id": "NGP-W", "kind": "mandal", "name": "Nagpur West", "parent": "NGP"},
    ]});
    let (status, body) = http.call("PUT", "/v1/org", OPERATOR_KEY, Some(org.clone()));
    assert_eq!(status, 200, "{body}");

    let pune = stdout_json(&sabha(
        &server,
        &["keys", "create", "--name", "Pune office", "--unit", "PUNE"],
    ));
    let nagpur = stdout_json(&sabha(
        &server,
        &["keys", "create", "--name", "Nagpur office", "--unit", "NGP"],
    ));
    let (pune_id, pune_key) = (
        pune["id"].as_str().unwrap(),
        pune["secret"].as_str().unwrap(),
    );
    let nagpur_key = nagpur["secret"].as_str().unwrap();
    assert_eq!(pune["unit"], "PUNE");
    let refused = sabha(
        &server,
        &["keys", "create", "--name", "Nowhere", "--unit", "NOPE"],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("422"));

    // Pune schedules under its subtree; not under Nagpur, not org-wide.
    let (status, own) = http.room(pune_key, Some("KOTH-B1"));
    assert_eq!(status, 201, "{own}");
    let own = own["id"].as_str().unwrap().to_owned();
    assert_eq!(http.room(pune_key, Some("NGP-W")).0, 403);
    assert_eq!(http.room(pune_key, None).0, 403);
    let (_, other) = http.room(nagpur_key, Some("NGP-W"));
    let other = other["id"].as_str().unwrap().to_owned();
    let (_, org_wide) = http.room(OPERATOR_KEY, None);
    let org_wide = org_wide["id"].as_str().unwrap().to_owned();

    assert_eq!(
        room_ids(&http.call("GET", "/v1/rooms", pune_key, None).1),
        [own.as_str()]
    );
    assert_eq!(
        room_ids(&http.call("GET", "/v1/rooms", nagpur_key, None).1),
        [other.as_str()]
    );
    assert_eq!(
        room_ids(&http.call("GET", "/v1/rooms", OPERATOR_KEY, None).1).len(),
        3
    );

    for room in [&other, &org_wide] {
        for (method, path) in [
            ("GET", format!("/v1/rooms/{room}")),
            ("GET", format!("/v1/rooms/{room}/attendance")),
            ("POST", format!("/v1/rooms/{room}/tokens")),
            ("DELETE", format!("/v1/rooms/{room}")),
        ] {
            let body = (method == "POST").then(|| json!({"role": "listener"}));
            let (status, answer) = http.call(method, &path, pune_key, body);
            assert_eq!(status, 404, "{method} {path}: {answer}");
        }
    }
    assert_eq!(
        http.call("GET", &format!("/v1/rooms/{other}"), nagpur_key, None)
            .0,
        200
    );
    let (status, _) = http.call(
        "POST",
        &format!("/v1/rooms/{own}/tokens"),
        pune_key,
        Some(json!({"role": "listener"})),
    );
    assert_eq!(status, 200);

    // The organisation: Pune imports nothing and reads its subtree only.
    assert_eq!(http.call("PUT", "/v1/org", pune_key, Some(org)).0, 403);
    let (_, units) = http.call("GET", "/v1/org", pune_key, None);
    let ids: Vec<&str> = units["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["KOTH", "KOTH-B1", "PUNE"]);
    assert_eq!(http.call("GET", "/v1/org/NGP-W", pune_key, None).0, 404);
    assert_eq!(http.call("GET", "/v1/keys", pune_key, None).0, 403);

    // Secrets: not in the list, not in the log.
    let listed = stdout_json(&sabha(&server, &["keys", "list"]));
    let text = listed.to_string();
    for key in [pune_key, nagpur_key] {
        let secret = key.rsplit('_').next().unwrap();
        assert!(!text.contains(secret), "{text}");
        assert!(
            !server.log_tail(100_000).contains(secret),
            "secret in the log"
        );
    }
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // Revocation takes effect at once.
    let revoked = sabha(&server, &["keys", "revoke", pune_id]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let (status, _) = http.call("GET", "/v1/rooms", pune_key, None);
    assert_eq!(status, 401);
    assert_eq!(http.call("GET", "/v1/rooms", nagpur_key, None).0, 200);
    let listed = stdout_json(&sabha(&server, &["keys", "list"]));
    let pune_row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == pune_id)
        .unwrap();
    assert!(pune_row["revoked_at"].is_string(), "{pune_row}");
}
