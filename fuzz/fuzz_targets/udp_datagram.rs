//! Any datagram, from a client's address or a stranger's, fed to an engine
//! with open sessions (one per endpoint kind, offers from str0m clients):
//! covers the engine's demux (RFC 7983 first byte), STUN, DTLS records and
//! SRTP/SRTCP reaching str0m and our code. Invariants: no panic, and junk
//! never closes a session (all three are still open afterwards).
//!
//! The sessions have not completed ICE/DTLS (that needs the client side of
//! the handshake per input); docs/fuzzing.md says what that leaves out.
#![no_main]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sabha_media::{DATAGRAM_MAX, Engine, EngineConfig, Output, Profile, RoomConfig, SessionKind};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

const SERVER: &str = "127.0.0.1:8443";
/// The clients' addresses (their candidates in the offers), then a stranger.
const SOURCES: [&str; 4] = [
    "127.0.0.1:40001",
    "127.0.0.1:40002",
    "127.0.0.1:40003",
    "127.0.0.1:50000",
];
const KINDS: [(SessionKind, Direction); 3] = [
    (SessionKind::Publish, Direction::SendOnly),
    (SessionKind::Listen, Direction::RecvOnly),
    (SessionKind::Join, Direction::SendRecv),
];

struct Bench {
    engine: Engine,
    now: Instant,
    buf: Box<[u8; DATAGRAM_MAX]>,
}

impl Bench {
    fn new() -> Self {
        // The fuzzer's only clock read: the origin of the engine's time.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let config = EngineConfig {
            advertised: SERVER.parse().expect("address"),
            room: RoomConfig::default(),
            max_sessions: 16,
        };
        let mut engine = Engine::new(config, now).expect("engine");
        for ((kind, direction), source) in KINDS.into_iter().zip(SOURCES) {
            let mut rtc = Rtc::builder().build(now);
            let addr = source.parse().expect("address");
            rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
            let mut change = rtc.sdp_api();
            change.add_media(MediaKind::Audio, direction, None, None, None);
            let (offer, _pending) = change.apply().expect("offer");
            engine
                .open_session(now, "fuzz", kind, Profile::Standard, &offer.to_sdp_string())
                .expect("a str0m offer is accepted");
        }
        let mut bench = Self {
            engine,
            now,
            buf: Box::new([0; DATAGRAM_MAX]),
        };
        bench.drain();
        bench
    }

    fn drain(&mut self) {
        while !matches!(
            self.engine.poll_output(&mut self.buf[..]),
            Output::Timeout(_)
        ) {}
    }
}

thread_local! {
    static BENCH: RefCell<Bench> = RefCell::new(Bench::new());
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, datagram)) = data.split_first() else {
        return;
    };
    let source: SocketAddr = SOURCES[usize::from(selector) % SOURCES.len()]
        .parse()
        .expect("address");
    BENCH.with_borrow_mut(|bench| {
        let server = SERVER.parse().expect("address");
        bench
            .engine
            .handle_receive(bench.now, source, server, datagram);
        bench.drain();
        // Time does not move (a connect timeout would close the sessions
        // for a reason unrelated to the input), but timers are run.
        bench.engine.handle_timeout(bench.now);
        bench.drain();
        assert_eq!(
            bench.engine.session_count(),
            KINDS.len(),
            "junk closed a session"
        );
    });
});
