//! Shared by the end-to-end test binaries (`tests/e2e.rs`, `tests/webrtc_rs.rs`,
//! `tests/crash.rs`):
//! start the real `sabha` binary on free loopback ports, wait for `/healthz`,
//! and always kill it (a `Drop` guard); `kill -9` and restart it on the same
//! data directory.
//!
//! Each test binary compiles its own copy of this module and uses a subset of
//! it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const OPERATOR_KEY: &str = "sabha-e2e-operator-key-4f1c9a0d7b2e";
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Only one scenario runs at a time in a test binary: each moves real audio
/// for up to ~20 peers and the machine has two cores.
static MEDIA_LOCK: Mutex<()> = Mutex::new(());
static SERVER_SEQ: AtomicU32 = AtomicU32::new(0);
/// Every server under test runs this many media threads, on the media port
/// and the ones after it: rooms of one test may land on different threads.
pub const MEDIA_THREADS: usize = 2;

/// An SDP offer from str0m (audio in `direction`) for a session that is
/// recorded and answered but need not connect: no WebRTC peer behind it.
pub fn str0m_offer(direction: str0m::media::Direction) -> String {
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let addr = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 9));
    rtc.add_local_candidate(str0m::Candidate::host(addr, "udp").expect("candidate"));
    let mut change = rtc.sdp_api();
    change.add_media(str0m::media::MediaKind::Audio, direction, None, None, None);
    let (offer, _pending) = change.apply().expect("offer");
    offer.to_sdp_string()
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn lock_media() -> MutexGuard<'static, ()> {
    MEDIA_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------
// Child process helpers
// ---------------------------------------------------------------------------

pub fn drain<R: Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// `kill -s signal pid`.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {signal} {pid}: {status}");
}

/// Wait for `child` until `limit`; kill it past that and return None.
pub fn wait_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

pub fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------

pub struct Server {
    child: Child,
    pub http: SocketAddr,
    pub media: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
    /// Extra environment of every start (`start_with_env`).
    env: Vec<(String, String)>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with_env(&[])
    }

    /// [`Server::start`] with extra `SABHA_*` variables, kept for restarts.
    pub fn start_with_env(env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut last_err = String::new();
        for _attempt in 0..3 {
            match Server::try_start(&env) {
                Ok(s) => return s,
                Err(e) => {
                    eprintln!("e2e: server start failed, retrying: {e}");
                    last_err = e;
                }
            }
        }
        panic!("could not start `sabha serve`: {last_err}");
    }

    fn try_start(env: &[(String, String)]) -> Result<Server, String> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "sabha-e2e-{}-{}-{stamp}",
            std::process::id(),
            SERVER_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let data = dir.join("data");
        fs::create_dir_all(&data).map_err(|e| format!("create {}: {e}", data.display()))?;
        let log = dir.join("server.log");
        let (child, http, media) = spawn(&data, &log, env)?;
        let mut server = Server {
            child,
            http,
            media,
            dir,
            log,
            env: env.to_vec(),
        };
        server.wait_healthy()?;
        Ok(server)
    }

    /// `kill -9` the server, then start it again on the same data directory
    /// (new ports; the log goes on in the same file).
    pub fn kill_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        let status = self.child.wait().expect("reap the server");
        assert!(!status.success(), "the server was killed: {status}");
        let (child, http, media) = spawn(&self.dir.join("data"), &self.log, &self.env)
            .unwrap_or_else(|e| panic!("restart: {e}"));
        (self.child, self.http, self.media) = (child, http, media);
        if let Err(e) = self.wait_healthy() {
            panic!("restart: {e}");
        }
    }

    /// Sends `signal` (`TERM`, `INT`, …) to the server, as `kill -s` does.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the server process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the server to exit by itself; `None` if it was still
    /// running after `limit` (it is killed then).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_deadline(&mut self.child, limit)
    }

    /// Starts the server again on the same data directory after it exited
    /// (new ports; the log goes on in the same file).
    pub fn start_again(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(Some(_))),
            "start_again: the server is still running"
        );
        let (child, http, media) = spawn(&self.dir.join("data"), &self.log, &self.env)
            .unwrap_or_else(|e| panic!("start again: {e}"));
        (self.child, self.http, self.media) = (child, http, media);
        if let Err(e) = self.wait_healthy() {
            panic!("start again: {e}");
        }
    }

    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "`sabha serve` exited with {status} before /healthz answered; log:\n{}",
                    self.log_tail(40)
                ));
            }
            if healthz(self.http) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "GET http://{}/healthz not 200 within {SERVER_START_TIMEOUT:?}; log:\n{}",
                    self.http,
                    self.log_tail(40)
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&fs::read_to_string(&self.log).unwrap_or_default(), lines)
    }
}

/// `count` consecutive free UDP ports on 127.0.0.1, held by the returned
/// sockets, and the first of them: the media ports of a server with
/// `count` media threads.
pub fn free_udp_ports(count: usize) -> Result<(Vec<UdpSocket>, SocketAddr), String> {
    for _ in 0..50 {
        let first = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let base = first.local_addr().map_err(|e| e.to_string())?;
        let mut held = vec![first];
        for k in 1..count {
            let Some(port) = base.port().checked_add(k as u16) else {
                break;
            };
            match UdpSocket::bind(("127.0.0.1", port)) {
                Ok(next) => held.push(next),
                Err(_) => break,
            }
        }
        if held.len() == count {
            return Ok((held, base));
        }
    }
    Err(format!(
        "no {count} consecutive free UDP ports on 127.0.0.1"
    ))
}

/// Starts `sabha serve` on free loopback ports with `data` as its data
/// directory, appending its output to `log`.
fn spawn(
    data: &Path,
    log: &Path,
    env: &[(String, String)],
) -> Result<(Child, SocketAddr, SocketAddr), String> {
    let log_file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("open {}: {e}", log.display()))?;
    let log_err = log_file.try_clone().map_err(|e| e.to_string())?;

    // Port 0 picks free ports; they are held until just before the spawn.
    let tcp = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let http = tcp.local_addr().map_err(|e| e.to_string())?;
    let (udp, media) = free_udp_ports(MEDIA_THREADS)?;
    drop(tcp);
    drop(udp);

    let child = Command::new(env!("CARGO_BIN_EXE_sabha"))
        .arg("serve")
        .arg("--http")
        .arg(http.to_string())
        .arg("--media")
        .arg(media.to_string())
        .arg("--media-threads")
        .arg(MEDIA_THREADS.to_string())
        .arg("--data-dir")
        .arg(data)
        .env("SABHA_OPERATOR_KEY", OPERATOR_KEY)
        .env(
            "SABHA_LOG",
            std::env::var("SABHA_LOG").unwrap_or_else(|_| "info".into()),
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err))
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", env!("CARGO_BIN_EXE_sabha")))?;
    Ok((child, http, media))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("e2e: server log kept at {}", self.log.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn healthz(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 12 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&got);
    head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")
}
