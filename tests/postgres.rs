//! The real `sabha` binary on PostgreSQL: a room created over HTTP is read
//! back after the server restarts, so it went to the database, not memory.
//!
//! The PostgreSQL server comes from `SABHA_TEST_POSTGRES_URL` (a URL whose
//! user may CREATE DATABASE; `scripts/test` starts one); the test creates a
//! database of its own there. Without the variable the test fails.
//!
//! Self-contained on purpose (no shared helpers with `tests/e2e.rs`).

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sqlx::{AnyConnection, AssertSqlSafe, Connection, Executor};
use ureq::Agent;

const POSTGRES_URL_VAR: &str = "SABHA_TEST_POSTGRES_URL";
const OPERATOR_KEY: &str = "sabha-pg-e2e-operator-key-7d1e0b93c4a2";
/// Put in the URL when it has no password of its own.
const UNLOGGED_PASSWORD: &str = "pw-that-must-not-be-logged-5e0c";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn a_room_created_on_postgres_survives_a_restart() {
    let work = WorkDir::new();
    let database = Database::create();
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into();

    let server = Server::start(&database.url, &work, "first");
    let (status, created) = call(
        &agent,
        "POST",
        &format!("{}/v1/rooms", server.base()),
        Some(json!({"name": "Ward 12 bridge", "kind": "bridge", "profile": "low"})),
    );
    assert_eq!(status, 201, "{created}\n{}", server.log_tail());
    let id = created["id"].as_str().expect("a room id").to_owned();
    drop(server);

    let server = Server::start(&database.url, &work, "second");
    let (status, got) = call(
        &agent,
        "GET",
        &format!("{}/v1/rooms/{id}", server.base()),
        None,
    );
    assert_eq!(status, 200, "{got}\n{}", server.log_tail());
    assert_eq!(got, created);
    drop(server);

    let password = url::Url::parse(&database.url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
        .expect("the URL has a password");
    for tag in ["first", "second"] {
        let log = fs::read_to_string(work.root.join(format!("server-{tag}.log"))).unwrap();
        assert!(log.contains("database=postgres on 127.0.0.1"), "{log}");
        assert!(
            !log.contains(&password),
            "the password is in the log:\n{log}"
        );
    }

    // Nothing went to a SQLite file in the data directory.
    assert!(!work.data.join("sabha.db").exists());
    database.drop_it();
}

/// Sends one request with the operator key; the status and the JSON body.
fn call(agent: &Agent, method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let auth = format!("Bearer {OPERATOR_KEY}");
    let response = match body {
        None => agent.get(url).header("Authorization", &auth).call(),
        Some(body) => agent
            .post(url)
            .header("Authorization", &auth)
            .send_json(body),
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (response.status().as_u16(), json)
}

// ---------------------------------------------------------------------------
// A database of this test's own on the test server
// ---------------------------------------------------------------------------

struct Database {
    server: String,
    name: String,
    url: String,
}

impl Database {
    fn create() -> Self {
        let server = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
            panic!(
                "{POSTGRES_URL_VAR} is not set, so the PostgreSQL end-to-end test cannot run. \
                 Run the suite with `scripts/test`, which starts a throwaway PostgreSQL and \
                 sets it."
            )
        });
        let name = format!("sabha_e2e_{}_{}", std::process::id(), nanos());
        admin(&server, &format!("CREATE DATABASE {name}"));
        let mut url = url::Url::parse(&server)
            .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR} is not a URL: {e}"));
        url.set_path(&name);
        if url.password().is_none() {
            // Trust auth (scripts/test) ignores it; the logs must not show it.
            url.set_password(Some(UNLOGGED_PASSWORD))
                .expect("a postgres:// URL takes a password");
        }
        Self {
            server,
            name,
            url: url.into(),
        }
    }

    /// Only on success: a failed test leaves its database for a look (the
    /// throwaway server of scripts/test goes anyway).
    fn drop_it(self) {
        admin(
            &self.server,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs one statement on the server's admin database.
fn admin(server: &str, statement: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let mut conn = tokio::time::timeout(HTTP_TIMEOUT, AnyConnection::connect(server))
            .await
            .unwrap_or_else(|_| {
                panic!("no connection to {POSTGRES_URL_VAR} within {HTTP_TIMEOUT:?}")
            })
            .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VAR}: {e}"));
        conn.execute(AssertSqlSafe(statement.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
        conn.close().await.expect("closing the admin connection");
    });
}

// ---------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------

/// A fresh directory for the data dir and the logs, removed on success.
struct WorkDir {
    root: PathBuf,
    data: PathBuf,
}

impl WorkDir {
    fn new() -> Self {
        let root =
            std::env::temp_dir().join(format!("sabha-pg-e2e-{}-{}", std::process::id(), nanos()));
        let data = root.join("data");
        fs::create_dir_all(&data).unwrap_or_else(|e| panic!("create {}: {e}", data.display()));
        Self { root, data }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("postgres e2e: logs kept in {}", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// `sabha serve` on free loopback ports; killed on drop.
struct Server {
    child: Child,
    http: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(database: &str, work: &WorkDir, tag: &str) -> Self {
        let log = work.root.join(format!("server-{tag}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("a second handle on the log");
        // Port 0 picks free ports; they are held until just before the spawn.
        let tcp = TcpListener::bind("127.0.0.1:0").expect("a free TCP port");
        let udp = UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
        let http = tcp.local_addr().expect("bound");
        let media = udp.local_addr().expect("bound");
        drop((tcp, udp));
        let child = Command::new(env!("CARGO_BIN_EXE_sabha"))
            .args(["serve", "--http", &http.to_string()])
            // One media thread: these tests move no audio, and one port is
            // all that was reserved.
            .args(["--media", &media.to_string(), "--media-threads", "1"])
            .arg("--data-dir")
            .arg(&work.data)
            .args(["--database", database])
            .env("SABHA_OPERATOR_KEY", OPERATOR_KEY)
            .env("SABHA_LOG", "info")
            .env_remove("SABHA_DATABASE_URL")
            .env_remove("SABHA_CONFIG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", env!("CARGO_BIN_EXE_sabha")));
        let mut server = Self { child, http, log };
        server.wait_healthy();
        server
    }

    fn wait_healthy(&mut self) {
        let agent: Agent = Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let url = format!("{}/healthz", self.base());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "`sabha serve` exited with {status}; log:\n{}",
                    self.log_tail()
                );
            }
            if agent.get(&url).call().is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "GET {url} not 200 within {START_TIMEOUT:?}; log:\n{}",
                self.log_tail()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nanos() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}
