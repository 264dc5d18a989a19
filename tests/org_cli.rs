//! The operator's organisation commands through the real binary:
//! `sabha org import FILE` (CSV or JSON) and `sabha org get ID` against a
//! running `sabha serve`, and `sabha reach ROOM` over the imported units.

mod common;

use std::process::{Command, Output};

use common::{OPERATOR_KEY, Server};
use serde_json::Value;

fn sabha(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sabha"))
        .args(args)
        .args(["--server", &server.base(), "--key", OPERATOR_KEY])
        .output()
        .expect("run sabha")
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

#[test]
fn org_import_and_get_through_the_cli() {
    let server = Server::start();
    let dir = std::env::temp_dir().join(format!("sabha-org-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("units.csv");
    std::fs::write(
        &csv,
        "id,kind,name,parent\nMH,state,Maharashtra,\nD1,district,Pune,MH\nB1,booth,\"Booth 1, Kothrud\",D1\n",
    )
    .unwrap();
    let imported = json(&sabha(&server, &["org", "import", csv.to_str().unwrap()]));
    assert_eq!(
        (imported["upserted"].as_u64(), imported["units"].as_u64()),
        (Some(3), Some(3))
    );

    let b1 = json(&sabha(&server, &["org", "get", "B1"]));
    assert_eq!(b1["unit"]["name"], "Booth 1, Kothrud");
    let ancestors: Vec<&str> = b1["ancestors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert_eq!(ancestors, ["MH", "D1"]);

    // A room for the district: its reach covers the district's booth.
    let room: Value = ureq::post(format!("{}/v1/rooms", server.base()))
        .header("Authorization", &format!("Bearer {OPERATOR_KEY}"))
        .send_json(serde_json::json!({"name": "Pune rally", "kind": "rally", "unit": "D1"}))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let room = room["id"].as_str().unwrap().to_owned();
    let reach = sabha(&server, &["reach", &room, "--csv", "--kind", "booth"]);
    assert!(
        reach.status.success(),
        "{}",
        String::from_utf8_lossy(&reach.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&reach.stdout),
        "unit,kind,name,parent,booths,booths_reached,listeners,listener_seconds\n\
         B1,booth,\"Booth 1, Kothrud\",D1,1,0,0,0\n"
    );
    let reach = json(&sabha(&server, &["reach", &room, "--min-minutes", "10"]));
    assert_eq!(reach["min_minutes"], 10);

    // A weekly rally for the district, in local time.
    let scheduled = json(&sabha(
        &server,
        &[
            "rooms",
            "schedule",
            "--name",
            "Weekly",
            "--kind",
            "rally",
            "--unit",
            "D1",
            "--starts-at",
            "2030-01-07T18:00",
            "--ends-at",
            "2030-01-07T19:00",
            "--time-zone",
            "Asia/Kolkata",
            "--recurrence",
            "FREQ=WEEKLY;COUNT=4",
            "--host",
            "Asha",
            "--lobby",
        ],
    ));
    assert_eq!(scheduled["starts_at"], "2030-01-07T12:30:00Z");
    assert_eq!(scheduled["starts_at_local"], "2030-01-07T18:00:00+05:30");
    assert_eq!(
        (scheduled["status"].as_str(), scheduled["lobby"].as_bool()),
        (Some("scheduled"), Some(true))
    );
    let clash = sabha(
        &server,
        &[
            "rooms",
            "schedule",
            "--name",
            "Clash",
            "--kind",
            "bridge",
            "--starts-at",
            "2030-01-14T12:45:00Z",
            "--ends-at",
            "2030-01-14T13:15:00Z",
            "--host",
            "Asha",
        ],
    );
    assert!(!clash.status.success());
    assert!(
        String::from_utf8_lossy(&clash.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&clash.stderr)
    );
    let local_without_zone = sabha(
        &server,
        &[
            "rooms",
            "schedule",
            "--name",
            "X",
            "--kind",
            "bridge",
            "--starts-at",
            "2030-01-14T18:00",
            "--ends-at",
            "2030-01-14T19:00",
        ],
    );
    assert!(String::from_utf8_lossy(&local_without_zone.stderr).contains("--time-zone"));
    assert_eq!(reach["min_minutes"], 10);
    assert_eq!(reach["totals"]["booths"], 1);

    // A JSON file removes; a bad one is refused with the server's reason.
    let removal = dir.join("remove.json");
    std::fs::write(&removal, r#"{"remove": ["B1"]}"#).unwrap();
    let removed = json(&sabha(
        &server,
        &["org", "import", removal.to_str().unwrap()],
    ));
    assert_eq!(
        (removed["removed"].as_u64(), removed["units"].as_u64()),
        (Some(1), Some(2))
    );
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"remove": ["MH"]}"#).unwrap();
    let refused = sabha(&server, &["org", "import", bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("422") && stderr.contains("cannot be removed"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
