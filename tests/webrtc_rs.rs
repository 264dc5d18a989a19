//! End-to-end tests across two independent WebRTC stacks: the real `sabha`
//! binary (its media core is str0m 0.25: ICE-lite, DTLS-SRTP, Opus mixing)
//! against clients built on webrtc-rs 0.21 (the async `webrtc` crate over
//! the sans-IO `rtc` core), running in this test process.
//!
//! What crosses what:
//! - HTTP: rooms and tokens with the operator key; one non-trickle SDP offer
//!   per session to WHIP, WHEP or `/join`; the `201` answer with
//!   `Location: /v1/sessions/{id}`; `DELETE` of it (`api`).
//! - SDP, ICE (webrtc-rs controlling, the server ICE-lite), DTLS (webrtc-rs
//!   the client), SRTP/SRTCP and RTCP reports, all over 127.0.0.1 (`peer`).
//! - Audio: talkers send sines as 20 ms Opus frames (our `ropus` encoder,
//!   webrtc-rs packetizes them); receivers decode what arrives and the tests
//!   check what was *heard*: frequency, level, continuity, and for bridges
//!   mix-minus (`hearing`).
//!
//! Each test starts `sabha serve` on free loopback ports with a fresh data
//! directory (`common::Server`), runs its scenario on its own tokio runtime
//! under a hard timeout, and always kills the server (a `Drop` guard). One
//! scenario runs at a time: the machine has two cores. A failure message
//! carries the tail of the server log; `SABHA_LOG=debug` makes it verbose.

#[path = "webrtc_rs/api.rs"]
mod api;
mod common;
#[path = "webrtc_rs/hearing.rs"]
mod hearing;
#[path = "webrtc_rs/peer.rs"]
mod peer;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use api::Api;
use common::{MEDIA_THREADS, Server, lock_media};
use hearing::{ToneCheck, Window, first_heard, mix_minus_problems, tone_dbfs};
use peer::{Peer, Role};

/// Hard limit for one scenario, server start excluded.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// Audio is judged from this long after the last peer connected...
const SETTLE: Duration = Duration::from_secs(1);
/// ...for this long.
const WINDOW: Duration = Duration::from_secs(3);
const RALLY_HZ: f64 = 440.0;
const RALLY_LISTENERS: usize = 8;
/// The aiortc bridge test's tones. 880 Hz is 440's second harmonic, and
/// 2 × 660 − 880 = 440: distortion would read as an echo, so the mix-minus
/// check catches that too (in our runs Opus left its by-products there
/// 45 dB or more under the other tones).
const BRIDGE_HZ: [f64; 3] = [440.0, 660.0, 880.0];
/// The audio band of wideband Opus (SILK at 16 kHz).
const WIDEBAND_HZ: u32 = 8_000;
/// The tones of the two rooms of the media-threads test: no tone is a sum,
/// difference or double of two others, so a by-product of one room's mix
/// cannot pass for the other room's voice.
const ROOM_HZ: [[f64; 2]; 2] = [[440.0, 660.0], [520.0, 780.0]];
/// A talker's own tone must be this far under the weakest other tone.
const MIX_MINUS_DB: f64 = 30.0;
/// A late listener must hear the tone this soon after its answer.
const LATE_MAX: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// One WHIP publisher, eight WHEP listeners: each hears the publisher's tone.
#[test]
fn webrtc_rs_rally_listeners_hear_the_tone() {
    run_on("rally", &[], rally);
}

/// Three `/join` talkers: each hears the other two tones, not its own.
#[test]
fn webrtc_rs_bridge_talkers_hear_each_other_not_themselves() {
    run("bridge", bridge);
}

/// Two bridges on a server with two media threads: each room is mixed on a
/// thread of its own (its talkers' answers name that thread's port), each
/// talker hears the other talker of its room and nothing of the other
/// room, and `/metrics` adds both threads up.
#[test]
fn webrtc_rs_two_bridges_on_two_media_threads_hear_only_their_own_room() {
    run("two media threads", two_bridges);
}

/// A listener that joins while the tone plays hears it within a second.
#[test]
fn webrtc_rs_late_listener_hears_the_tone_within_a_second() {
    run("late listener", late_listener);
}

/// SIGTERM in the middle of a rally: the listeners already in keep hearing
/// the tone, a new listener gets 503 with `Retry-After`, hanging up still
/// works, and once the last session has left the server exits 0.
#[test]
fn webrtc_rs_sigterm_drains_listeners_keep_hearing_new_ones_get_503() {
    let mut server = run_on(
        "sigterm drain",
        &[("SABHA_DRAIN_TIMEOUT_S", "60")],
        |api, server| sigterm_drain(api, server.pid),
    );
    let exit = server.wait_exit(Duration::from_secs(15));
    assert!(
        exit.is_some_and(|s| s.success()),
        "the drained server exits 0 once empty: {exit:?}\n{}",
        server.log_tail(40)
    );
}

/// While hostile clients send every class of malformed HTTP request and
/// garbage datagrams to the media port, each request gets a 4xx
/// problem+json and a listener keeps hearing the rally without a gap.
#[test]
fn webrtc_rs_a_listener_keeps_hearing_through_hostile_input() {
    run_on("hostile input", &[], hostile_input);
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

async fn hostile_input(api: Api, server: ServerProcess) -> Result<(), String> {
    let room = api.create_room("rally").await?;
    let _publisher = publish(&api, &room, RALLY_HZ).await?;
    let listeners = connect_all(&api, &room, "listener", vec![Role::Listen]).await?;
    on_air(&listeners[0], RALLY_HZ).await?;
    let listener_token = api.mint(&room, "listener", "hostile").await?;
    let mut tampered = listener_token.clone();
    tampered.pop();
    tampered.push(if listener_token.ends_with('A') {
        'B'
    } else {
        'A'
    });

    let from = Instant::now();
    let until = from + WINDOW;
    let garbage = tokio::spawn(send_garbage(server.media, until));
    let mut failures = Vec::new();
    let mut requests = 0;
    let key = || ("authorization", format!("Bearer {}", common::OPERATOR_KEY));
    let json = || ("content-type", "application/json".to_owned());
    let sdp = || ("content-type", "application/sdp".to_owned());
    let whep = format!("/v1/rooms/{room}/whep");
    let mute_all = format!("/v1/rooms/{room}/mute-all");
    // A bounded number of rounds, each every class once.
    for _round in 0..50 {
        if Instant::now() >= until {
            break;
        }
        let cases: Vec<HostileRequest<'_>> = vec![
            (
                "bad JSON",
                "POST",
                "/v1/rooms",
                vec![key(), json()],
                b"{\"name\": ".to_vec(),
            ),
            (
                "wrong content type",
                "POST",
                "/v1/rooms",
                vec![key(), ("content-type", "text/plain".into())],
                b"{}".to_vec(),
            ),
            (
                "huge body",
                "POST",
                "/v1/rooms",
                vec![key(), json()],
                vec![b' '; 80 << 10],
            ),
            (
                "missing auth",
                "POST",
                "/v1/rooms",
                vec![json()],
                br#"{"name":"x","kind":"rally"}"#.to_vec(),
            ),
            (
                "unknown field",
                "POST",
                "/v1/rooms",
                vec![key(), json()],
                br#"{"name":"x","kind":"rally","admin":true}"#.to_vec(),
            ),
            (
                "traversal",
                "GET",
                "/assets/..%2f..%2fCargo.toml",
                vec![],
                vec![],
            ),
            (
                "encoded traversal",
                "GET",
                "/assets/%2e%2e/%2e%2e/etc/passwd",
                vec![],
                vec![],
            ),
            (
                "malformed SDP",
                "POST",
                &whep,
                vec![("authorization", format!("Bearer {listener_token}")), sdp()],
                b"v=0\r\nm=audio x\r\n".to_vec(),
            ),
            (
                "tampered token",
                "POST",
                &whep,
                vec![("authorization", format!("Bearer {tampered}")), sdp()],
                b"v=0\r\n".to_vec(),
            ),
            (
                "garbage token",
                "POST",
                &whep,
                vec![("authorization", "Bearer not.a.jwt".into()), sdp()],
                b"v=0\r\n".to_vec(),
            ),
            (
                "listener commands",
                "POST",
                &mute_all,
                vec![("authorization", format!("Bearer {listener_token}"))],
                vec![],
            ),
            (
                "bad PIN JSON",
                "POST",
                "/v1/pin-join",
                vec![json()],
                b"[1,2".to_vec(),
            ),
        ];
        for (class, method, path, headers, body) in cases {
            requests += 1;
            let (status, content_type) = api.raw(method, path, headers, body).await?;
            if !(400..500).contains(&status) || content_type != "application/problem+json" {
                failures.push(format!(
                    "{class}: {method} {path}: {status} {content_type}, want 4xx problem+json"
                ));
            }
        }
    }
    let datagrams = garbage.await.map_err(|e| format!("garbage task: {e}"))??;
    tokio::time::sleep_until((until + Duration::from_millis(200)).into()).await;
    let check = ToneCheck::of(&Window::of(&listeners[0].heard(), from, until), RALLY_HZ);
    eprintln!("hostile input: {requests} requests, {datagrams} datagrams; listener: {check:?}");
    let problems = check.problems(RALLY_HZ);
    failures.extend(
        problems
            .into_iter()
            .map(|p| format!("listener during the attack: {p}")),
    );
    let text = api.metrics().await?;
    let malformed = metric(&text, r#"sabha_drops_total{reason="malformed"}"#).unwrap_or(0.0)
        + metric(&text, r#"sabha_drops_total{reason="unknown_source"}"#).unwrap_or(0.0);
    if malformed < 100.0 {
        failures.push(format!(
            "the server saw only {malformed} of {datagrams} garbage datagrams"
        ));
    }
    verdict(failures)
}

/// (class, method, path, headers, body) of one hostile request.
type HostileRequest<'a> = (
    &'static str,
    &'static str,
    &'a str,
    Vec<(&'static str, String)>,
    Vec<u8>,
);

/// Sends garbage to the media port until `until` (at most 5,000 datagrams,
/// about one per millisecond): random bytes, and things that look like
/// STUN, DTLS and RTP but are not. Returns how many were sent.
async fn send_garbage(media: SocketAddr, until: Instant) -> Result<usize, String> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut sent = 0;
    while Instant::now() < until && sent < 5_000 {
        let len = (next() % 1200) as usize;
        let mut datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        match sent % 4 {
            // STUN binding request header with a length that lies.
            0 if len >= 20 => datagram[..4].copy_from_slice(&[0x00, 0x01, 0xff, 0xf0]),
            // A DTLS handshake record header.
            1 if len >= 13 => datagram[..3].copy_from_slice(&[22, 0xfe, 0xfd]),
            // RTP version 2 with an unknown SSRC.
            2 if len >= 12 => datagram[0] = 0x80,
            _ => {}
        }
        socket
            .send_to(&datagram, media)
            .await
            .map_err(|e| format!("send: {e}"))?;
        sent += 1;
        if sent % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(sent)
}

async fn sigterm_drain(api: Api, server_pid: u32) -> Result<(), String> {
    let room = api.create_room("rally").await?;
    let mut publisher = publish(&api, &room, RALLY_HZ).await?;
    let listeners = connect_all(&api, &room, "listener", vec![Role::Listen; 2]).await?;
    on_air(&listeners[0], RALLY_HZ).await?;

    common::send_signal(server_pid, "TERM");
    let from = Instant::now() + Duration::from_millis(500);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut failures = Vec::new();
    let token = api.mint(&room, "listener", "too late").await?;
    let offer = common::str0m_offer(str0m::media::Direction::RecvOnly);
    let refused = api
        .offer(&format!("/v1/rooms/{room}/whep"), &token, offer)
        .await?;
    if (refused.status, refused.retry_after.as_str()) != (503, "2")
        || refused.content_type != "application/problem+json"
    {
        failures.push(format!(
            "a new listener while draining: {} {} Retry-After {:?}: {}, want 503 problem with Retry-After 2",
            refused.status, refused.content_type, refused.retry_after, refused.body
        ));
    }
    tokio::time::sleep_until((from + WINDOW).into()).await;
    for l in &listeners {
        let check = ToneCheck::of(&Window::of(&l.heard(), from, from + WINDOW), RALLY_HZ);
        eprintln!("sigterm drain: {}: {check:?}", l.name);
        let problems = check.problems(RALLY_HZ);
        failures.extend(
            problems
                .into_iter()
                .map(|p| format!("{} while draining: {p}", l.name)),
        );
    }
    publisher.stop_tone().await?;
    failures.extend(hang_up_all(&api, listeners.into_iter().chain([publisher])).await?);
    verdict(failures)
}

async fn rally(api: Api, server: ServerProcess) -> Result<(), String> {
    let room = api.create_room("rally").await?;
    let mut publisher = publish(&api, &room, RALLY_HZ).await?;
    let listeners =
        connect_all(&api, &room, "listener", vec![Role::Listen; RALLY_LISTENERS]).await?;
    // No relay and no socket per peer: with nine peers connected the
    // server still has one UDP socket per media thread, on the media port
    // and the ones after it (SECURITY.md).
    let udp = udp_ports_of(server.pid)?;
    let first = server.media.port();
    let want: Vec<u16> = (first..).take(MEDIA_THREADS).collect();
    if udp != want {
        return Err(format!(
            "the server's UDP sockets are on ports {udp:?}, want only the media ports {want:?}"
        ));
    }

    let from = Instant::now() + SETTLE;
    tokio::time::sleep(SETTLE + WINDOW).await;
    let mut failures = Vec::new();
    for l in &listeners {
        let window = Window::of(&l.heard(), from, from + WINDOW);
        let check = ToneCheck::of(&window, RALLY_HZ);
        eprintln!("rally: {}: {check:?}", l.name);
        let problems = check.problems(RALLY_HZ);
        if !problems.is_empty() {
            failures.push(format!("{}: {}", l.name, problems.join("; ")));
        }
        // A rally's room mixes at 48 kHz: its program may be fullband.
        if window.widest_band_hz <= WIDEBAND_HZ {
            failures.push(format!(
                "{}: the rally program is never wider than {} Hz",
                l.name, window.widest_band_hz
            ));
        }
    }
    failures.extend(interop_counters(&api).await?);
    publisher.stop_tone().await?;

    // A session ends once: its second DELETE is 404.
    let again = listeners[0].location.clone();
    failures.extend(hang_up_all(&api, listeners.into_iter().chain([publisher])).await?);
    let status = api.delete(&again).await?;
    if status != 404 {
        failures.push(format!("second DELETE {again}: {status}, want 404"));
    }
    verdict(failures)
}

async fn bridge(api: Api) -> Result<(), String> {
    let room = api.create_room("bridge").await?;
    let roles = BRIDGE_HZ.iter().map(|&hz| Role::Join(hz)).collect();
    let mut talkers = connect_all(&api, &room, "talker", roles).await?;
    let listener = connect_all(&api, &room, "listener", vec![Role::Listen]).await?;

    let from = Instant::now() + SETTLE;
    tokio::time::sleep(SETTLE + WINDOW).await;
    let mut failures = Vec::new();
    for (t, own) in talkers.iter().zip(BRIDGE_HZ) {
        let w = Window::of(&t.heard(), from, from + WINDOW);
        let others: Vec<f64> = BRIDGE_HZ.into_iter().filter(|&hz| hz != own).collect();
        let problems = mix_minus_problems(&w, own, &others, MIX_MINUS_DB).into_iter();
        failures.extend(problems.map(|p| format!("{} ({own} Hz): {p}", t.name)));
    }
    // A bridge's room mixes at 16 kHz: even the rally encoder that serves
    // its WHEP listener codes no more than wideband.
    for l in &listener {
        let w = Window::of(&l.heard(), from, from + WINDOW);
        for hz in BRIDGE_HZ {
            let dbfs = tone_dbfs(&w.pcm, hz, 5.0);
            if dbfs < -40.0 {
                failures.push(format!(
                    "{}: does not hear {hz} Hz ({dbfs:.1} dBFS)",
                    l.name
                ));
            }
        }
        if w.widest_band_hz > WIDEBAND_HZ {
            failures.push(format!(
                "{}: a bridge program coded {} Hz wide",
                l.name, w.widest_band_hz
            ));
        }
    }
    failures.extend(interop_counters(&api).await?);
    for t in &mut talkers {
        t.stop_tone().await?;
    }
    failures.extend(hang_up_all(&api, talkers.into_iter().chain(listener)).await?);
    verdict(failures)
}

async fn two_bridges(api: Api) -> Result<(), String> {
    let mut rooms = Vec::new();
    for (r, tones) in ROOM_HZ.iter().enumerate() {
        let room = api.create_room("bridge").await?;
        let roles = tones.iter().map(|&hz| Role::Join(hz)).collect();
        rooms.push(connect_all(&api, &room, &format!("room {r} talker"), roles).await?);
    }
    let mut failures = Vec::new();
    let ports: Vec<Vec<u16>> = rooms
        .iter()
        .map(|talkers| talkers.iter().map(|t| t.media_port).collect())
        .collect();
    eprintln!("two media threads: media ports by room {ports:?}");
    if ports.iter().any(|p| p.iter().any(|&port| port != p[0])) {
        failures.push(format!("one room's sessions on several ports: {ports:?}"));
    }
    if ports[0][0] == ports[1][0] {
        failures.push(format!("both rooms on one media thread: {ports:?}"));
    }

    let from = Instant::now() + SETTLE;
    tokio::time::sleep(SETTLE + WINDOW).await;
    for (r, talkers) in rooms.iter().enumerate() {
        let foreign = ROOM_HZ[1 - r];
        for (t, own) in talkers.iter().zip(ROOM_HZ[r]) {
            let w = Window::of(&t.heard(), from, from + WINDOW);
            let other: Vec<f64> = ROOM_HZ[r].into_iter().filter(|&hz| hz != own).collect();
            let mut problems = mix_minus_problems(&w, own, &other, MIX_MINUS_DB);
            let heard = tone_dbfs(&w.pcm, other[0], 5.0);
            for hz in foreign {
                let dbfs = tone_dbfs(&w.pcm, hz, 5.0);
                if dbfs > heard - MIX_MINUS_DB {
                    problems.push(format!(
                        "hears the other room's {hz} Hz at {dbfs:.1} dBFS ({heard:.1} dBFS heard from its own room)"
                    ));
                }
            }
            failures.extend(
                problems
                    .into_iter()
                    .map(|p| format!("{} ({own} Hz): {p}", t.name)),
            );
        }
    }
    let text = api.metrics().await?;
    for (series, want) in [
        (r#"sabha_sessions{kind="join"}"#, 4.0),
        (r#"sabha_media_thread_sessions{thread="0"}"#, 2.0),
        (r#"sabha_media_thread_sessions{thread="1"}"#, 2.0),
    ] {
        let got = metric(&text, series);
        if got != Some(want) {
            failures.push(format!("/metrics {series}: {got:?}, want {want}"));
        }
    }
    // webrtc-rs reports every second: the server decrypts its SRTCP (our
    // own reading, next to str0m's) and reads each talker's report block.
    let reports = metric(&text, "sabha_loss_reports_total");
    if !reports.is_some_and(|n| n >= 4.0) {
        failures.push(format!(
            "/metrics sabha_loss_reports_total: {reports:?}, want ≥ 4"
        ));
    }
    failures.extend(interop_counters(&api).await?);
    for t in rooms.iter_mut().flatten() {
        t.stop_tone().await?;
    }
    failures.extend(hang_up_all(&api, rooms.into_iter().flatten()).await?);
    verdict(failures)
}

async fn late_listener(api: Api) -> Result<(), String> {
    let room = api.create_room("rally").await?;
    let mut publisher = publish(&api, &room, RALLY_HZ).await?;
    let mut peers = connect_all(&api, &room, "early listener", vec![Role::Listen]).await?;
    on_air(&peers[0], RALLY_HZ).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let late = connect_all(&api, &room, "late listener", vec![Role::Listen]).await?;
    tokio::time::sleep(LATE_MAX + Duration::from_secs(2)).await;
    let mut failures = late_listener_problems(&late[0]);
    failures.extend(interop_counters(&api).await?);
    publisher.stop_tone().await?;
    peers.extend(late);
    failures.extend(hang_up_all(&api, peers.into_iter().chain([publisher])).await?);
    verdict(failures)
}

/// The late listener must hear the tone within [`LATE_MAX`] of its answer,
/// and keep hearing it.
fn late_listener_problems(late: &Peer) -> Vec<String> {
    let (answered, now) = (late.answered_at, Instant::now());
    let since = |t: Instant| t.saturating_duration_since(answered);
    let heard = late.heard();
    let tone_after = first_heard(&heard, answered, now, RALLY_HZ).map(since);
    let packet_after = heard.packets.first().map(|p| since(p.at));
    eprintln!(
        "late listener, after its answer: connected {:?}, first packet {packet_after:?}, tone heard {tone_after:?}",
        since(late.connected_at)
    );
    let mut out = Vec::new();
    match tone_after {
        Some(after) if after <= LATE_MAX => {}
        Some(after) => out.push(format!(
            "heard the tone {after:?} after its answer (> {LATE_MAX:?})"
        )),
        None => out.push(format!(
            "never heard {RALLY_HZ} Hz (first packet {packet_after:?} after the answer)"
        )),
    }
    let tail = Window::of(&heard, now - Duration::from_secs(2), now);
    let problems = ToneCheck::of(&tail, RALLY_HZ).problems(RALLY_HZ);
    out.extend(problems.into_iter().map(|p| format!("last 2 s: {p}")));
    out.into_iter()
        .map(|p| format!("{}: {p}", late.name))
        .collect()
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Starts a server, runs `scenario` against it on a fresh runtime under
/// [`TEST_TIMEOUT`], and panics with the server log if it fails.
fn run<F, Fut>(name: &str, scenario: F)
where
    F: FnOnce(Api) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    run_on(name, &[], |api, _| scenario(api));
}

/// What a scenario may know of the server besides its HTTP API.
#[derive(Clone, Copy)]
struct ServerProcess {
    pid: u32,
    media: SocketAddr,
}

/// [`run`] on a server started with `env`, whose pid and media address the
/// scenario gets; returns the server (still running unless the scenario
/// stopped it).
fn run_on<F, Fut>(name: &str, env: &[(&str, &str)], scenario: F) -> Server
where
    F: FnOnce(Api, ServerProcess) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let _media = lock_media();
    init_client_log();
    let server = Server::start_with_env(env);
    let api = Api::new(server.base());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime builds");
    let started = Instant::now();
    let process = ServerProcess {
        pid: server.pid(),
        media: server.media,
    };
    let outcome =
        rt.block_on(async { tokio::time::timeout(TEST_TIMEOUT, scenario(api, process)).await });
    // Peer connections still open (after a failure) die with the runtime.
    rt.shutdown_timeout(Duration::from_secs(5));
    eprintln!("webrtc-rs {name}: {:.1} s", started.elapsed().as_secs_f64());
    let failure = match outcome {
        Ok(Ok(())) => return server,
        Ok(Err(e)) => e,
        Err(_) => format!("hard timeout of {TEST_TIMEOUT:?}"),
    };
    panic!(
        "webrtc-rs {name}: {failure}\n--- server log (tail) ---\n{}",
        server.log_tail(60)
    );
}

/// The local ports of the UDP sockets process `pid` holds, from /proc: the
/// socket inodes among its file descriptors, looked up in the UDP tables.
fn udp_ports_of(pid: u32) -> Result<Vec<u16>, String> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| format!("fds: {e}"))?;
    let inodes: std::collections::HashSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
            .map_err(|e| format!("{table}: {e}"))?;
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(inode)) = (cols.get(1), cols.get(9)) else {
                continue;
            };
            if inodes.contains(*inode) {
                let port = local.rsplit(':').next().unwrap_or_default();
                ports.push(u16::from_str_radix(port, 16).map_err(|e| format!("{row}: {e}"))?);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// webrtc-rs logs through `log`: `RUST_LOG=rtc_ice=debug,rtc_dtls=debug`
/// shows them (captured with the test's output), stamped with milliseconds
/// since the first test started, to line up with the server log.
fn init_client_log() {
    use std::io::Write;
    let t0 = Instant::now();
    let _ = env_logger::builder()
        .is_test(true)
        .format(move |buf, r| {
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            writeln!(
                buf,
                "{ms:9.1} ms {} [{}] {}",
                r.level(),
                r.target(),
                r.args()
            )
        })
        .try_init();
}

/// The room's WHIP publisher, sending `hz`.
async fn publish(api: &Api, room: &str, hz: f64) -> Result<Peer, String> {
    let mut peers = connect_all(api, room, "publisher", vec![Role::Publish(hz)]).await?;
    peers.pop().ok_or_else(|| "no publisher".to_owned())
}

/// Mints one token per role (speaker for `Publish`, listener for `Listen`,
/// participant for `Join`) and connects all the peers at once.
async fn connect_all(
    api: &Api,
    room: &str,
    prefix: &str,
    roles: Vec<Role>,
) -> Result<Vec<Peer>, String> {
    let mut tasks = JoinSet::new();
    for (i, role) in roles.into_iter().enumerate() {
        let (api, name) = (api.clone(), format!("{prefix} {i}"));
        let (kind, path) = match role {
            Role::Publish(_) => ("speaker", "whip"),
            Role::Listen => ("listener", "whep"),
            Role::Join(_) => ("participant", "join"),
        };
        let token = api.mint(room, kind, &name).await?;
        let path = format!("/v1/rooms/{room}/{path}");
        tasks.spawn(async move {
            let peer = Peer::connect(&api, &name, &path, &token, role).await;
            (i, peer)
        });
    }
    let mut peers: Vec<Option<Peer>> = Vec::new();
    peers.resize_with(tasks.len(), || None);
    while let Some(joined) = tasks.join_next().await {
        let (i, peer) = joined.map_err(|e| format!("connect task: {e}"))?;
        peers[i] = Some(peer?);
    }
    Ok(peers.into_iter().flatten().collect())
}

/// Waits (up to 5 s) until `peer` hears `hz`.
async fn on_air(peer: &Peer, hz: f64) -> Result<(), String> {
    let since = peer.answered_at;
    for _ in 0..50 {
        if first_heard(&peer.heard(), since, Instant::now(), hz).is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{} did not hear {hz} Hz within 5 s", peer.name))
}

/// Server counters that would show webrtc-rs traffic the server could not
/// use: datagrams dropped as malformed or rejected by a session (bad SRTP,
/// unknown SSRC, …), and Opus payloads that did not decode.
async fn interop_counters(api: &Api) -> Result<Vec<String>, String> {
    let text = api.metrics().await?;
    let series = [
        r#"sabha_drops_total{reason="malformed"}"#,
        r#"sabha_drops_total{reason="rejected"}"#,
        "sabha_opus_decode_errors_total",
    ];
    let mut failures = Vec::new();
    for name in series {
        match metric(&text, name) {
            Some(0.0) => {}
            Some(v) => failures.push(format!("server counted {v} {name}")),
            None => failures.push(format!("/metrics has no {name}")),
        }
    }
    Ok(failures)
}

/// The value of one series in a Prometheus text exposition.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Hangs every peer up; a `DELETE` that is not `204` is a failure.
async fn hang_up_all(
    api: &Api,
    peers: impl IntoIterator<Item = Peer>,
) -> Result<Vec<String>, String> {
    let mut failures = Vec::new();
    for peer in peers {
        let (name, location) = (peer.name.clone(), peer.location.clone());
        let status = peer.hang_up(api).await?;
        if status != 204 {
            failures.push(format!("{name}: DELETE {location}: {status}, want 204"));
        }
    }
    Ok(failures)
}

fn verdict(failures: Vec<String>) -> Result<(), String> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}
