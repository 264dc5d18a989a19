//! The load generator end to end at small N: the real `sabha` binary
//! (spawned by `--spawn`) and `sabha-loadgen`, checked through the JSON it
//! writes, not only its exit status.
//!
//! `sabha` must be built in the same target directory (`cargo test
//! --workspace` does; alone: `cargo build -p sabha` first), or named by
//! `SABHA_BIN`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One scenario at a time: each moves real audio on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn sabha_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SABHA_BIN") {
        return p.into();
    }
    let loadgen = PathBuf::from(env!("CARGO_BIN_EXE_sabha-loadgen"));
    let sabha = loadgen.with_file_name("sabha");
    assert!(
        sabha.exists(),
        "{} is missing: run `cargo build -p sabha` (same profile and target dir) or set SABHA_BIN",
        sabha.display()
    );
    sabha
}

/// Runs the load generator against a spawned server; exit code and JSON.
fn run(name: &str, args: &[&str]) -> (i32, Value) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let json =
        std::env::temp_dir().join(format!("sabha-loadgen-{}-{name}.json", std::process::id()));
    let _ = std::fs::remove_file(&json);
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sabha-loadgen"))
        .arg("--spawn")
        .arg(sabha_bin())
        .arg("--json-out")
        .arg(&json)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .expect("start sabha-loadgen");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("{name}: sabha-loadgen ran over {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("{name}: {:.1} s, {status}", started.elapsed().as_secs_f64());
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{name}: no JSON: {e}"));
    let doc: Value = serde_json::from_str(&text).expect("valid JSON");
    let svg = std::fs::read_to_string(format!("{}.svg", json.display())).expect("the SVG plot");
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
    let _ = std::fs::remove_file(&json);
    (status.code().unwrap_or(-1), doc)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn assert_row_healthy(row: &Value) {
    assert!(f(&row["delivery"]) >= 0.99, "delivery: {row}");
    assert_eq!(row["errors"].as_object().map(|e| e.len()), Some(0), "{row}");
    assert!(
        f(&row["server_cpu_pct"]) > 0.0,
        "server CPU was measured: {row}"
    );
    assert!(f(&row["server_us_per_packet"]) > 0.0, "{row}");
    assert!(f(&row["join_p95_ms"]) > 0.0, "{row}");
    assert!(row["delivered_packets"].as_u64().unwrap_or(0) > 0, "{row}");
}

#[test]
fn fanout_listeners_hear_the_publishers_tone() {
    let (code, doc) = run(
        "fanout",
        &[
            "--hold",
            "3",
            "--decode-every",
            "10",
            "fanout",
            "--listeners",
            "20",
        ],
    );
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["passed"], true, "{doc}");
    let row = &doc["rows"][0];
    assert_eq!(row["peers"], 21, "{row}");
    assert_eq!(row["receivers"], 20, "{row}");
    assert_row_healthy(row);
    let verdicts = row["verdicts"].as_array().expect("verdicts");
    assert_eq!(verdicts.len(), 2, "listeners 0 and 10 are sampled: {row}");
    for v in verdicts {
        assert!((f(&v["heard_hz"]) - 440.0).abs() < 2.0, "{v}");
        assert_eq!(v["ok"], true, "{v}");
    }
}

#[test]
fn bridge_members_hear_mix_minus() {
    let args = [
        "--hold",
        "3",
        "bridges",
        "--rooms",
        "2",
        "--participants",
        "5",
        "--talkers",
        "2",
    ];
    let (code, doc) = run("bridges", &args);
    assert_eq!(code, 0, "{doc}");
    let row = &doc["rows"][0];
    assert_eq!(row["peers"], 10, "{row}");
    assert_row_healthy(row);
    let verdicts = row["verdicts"].as_array().expect("verdicts");
    let (mut talkers, mut silent) = (0, 0);
    for v in verdicts {
        assert_eq!(v["ok"], true, "{v}");
        let want: Vec<f64> = v["want_dbfs"].as_array().unwrap().iter().map(f).collect();
        assert!(want.iter().all(|&db| db > -40.0), "{v}");
        match v["role"].as_str() {
            Some("talker") => {
                talkers += 1;
                assert_eq!(v["own_hz"], 440, "talker 0 has 440 Hz: {v}");
                assert_eq!(v["want_hz"], serde_json::json!([620]), "{v}");
                assert!(f(&v["own_dbfs"]) < want[0] - 30.0, "hears itself: {v}");
            }
            Some("silent") => {
                silent += 1;
                assert_eq!(v["want_hz"], serde_json::json!([440, 620]), "{v}");
            }
            other => panic!("role {other:?}"),
        }
    }
    assert!(
        talkers >= 2 && silent >= 2,
        "both kinds sampled in both rooms: {row}"
    );
}

#[test]
fn storm_joins_all_without_errors() {
    let (code, doc) = run(
        "storm",
        &["--hold", "3", "storm", "--listeners", "30", "--within", "3"],
    );
    assert_eq!(code, 0, "{doc}");
    let row = &doc["rows"][0];
    assert_eq!(row["receivers"], 30, "{row}");
    assert_row_healthy(row);
    assert_eq!(row["verdicts"][0]["ok"], true, "{row}");
}

#[test]
fn a_target_off_loopback_is_refused_with_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_sabha-loadgen"))
        .args([
            "--url",
            "http://10.0.0.1:8080",
            "--key",
            "k",
            "--server-pid",
            "1",
        ])
        .args(["fanout", "--listeners", "2"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}
