//! Any datagram, from a client's address or a stranger's, fed to an engine
//! with open sessions (one per endpoint kind, offers from str0m clients):
//! covers the engine's demux (RFC 7983 first byte), STUN, DTLS records and
//! SRTP/SRTCP reaching str0m and our code. Invariants: no panic, and junk
//! never closes a session (all four are still open afterwards).
//!
//! The `/join` session (the first source) has completed ICE and DTLS with
//! its client before the first input, so datagrams from its address meet a
//! live SRTP context: RTP and RTCP headers, header extensions and the
//! replay window are parsed before authentication refuses the forgery. The
//! second listener (the fourth source) is connected and retired: its `Rtc`
//! is gone, so its datagrams meet the engine's own consent answering
//! (`consent.rs`) and nothing else. The other two are still at the start of
//! their handshake, so their address reaches ICE and DTLS in their first
//! states.
#![no_main]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sabha_media::{
    DATAGRAM_MAX, Engine, EngineConfig, Event, MixRate, Output, Profile, RoomConfig, SessionKind,
};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Output as RtcOutput, Rtc};

const SERVER: &str = "127.0.0.1:8443";
/// The clients' addresses (their candidates in the offers), then a stranger.
const SOURCES: [&str; 5] = [
    "127.0.0.1:40001",
    "127.0.0.1:40002",
    "127.0.0.1:40003",
    "127.0.0.1:40004",
    "127.0.0.1:50000",
];
/// The clients whose handshake runs before the first input: the `/join`
/// and the second listener.
const LIVE: [usize; 2] = [0, 3];
const KINDS: [(SessionKind, Direction); 4] = [
    (SessionKind::Join, Direction::SendRecv),
    (SessionKind::Publish, Direction::SendOnly),
    (SessionKind::Listen, Direction::RecvOnly),
    (SessionKind::Listen, Direction::RecvOnly),
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
        let mut clients = Vec::new();
        for ((kind, direction), source) in KINDS.into_iter().zip(SOURCES) {
            let mut rtc = Rtc::builder().build(now);
            let addr = source.parse().expect("address");
            rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
            let mut change = rtc.sdp_api();
            change.add_media(MediaKind::Audio, direction, None, None, None);
            let (offer, pending) = change.apply().expect("offer");
            let opened = engine
                .open_session(
                    now,
                    "fuzz",
                    MixRate::Full,
                    kind,
                    Profile::Standard,
                    &offer.to_sdp_string(),
                )
                .expect("a str0m offer is accepted");
            let answer = SdpAnswer::from_sdp_string(&opened.answer).expect("answer");
            rtc.sdp_api()
                .accept_answer(pending, answer)
                .expect("answer accepted");
            clients.push(rtc);
        }
        let mut bench = Self {
            engine,
            now,
            buf: Box::new([0; DATAGRAM_MAX]),
        };
        let mut connected = 0;
        for _ in 0..500 {
            connected += bench.step(&mut clients);
            if connected == LIVE.len() {
                break;
            }
        }
        assert_eq!(connected, LIVE.len(), "the clients did not connect");
        // Past RETIRE_GRACE with the clients answering: the listener's
        // handshake is over and its `Rtc` retired.
        for _ in 0..700 {
            bench.step(&mut clients);
        }
        assert_eq!(
            bench.engine.stats().listeners_retired,
            1,
            "the connected listener was not retired"
        );
        bench
    }

    /// 10 ms of virtual time for the [`LIVE`] clients: their datagrams to
    /// the engine, its timers, its datagrams to them. Returns how many
    /// sessions said connected.
    fn step(&mut self, clients: &mut [Rtc]) -> usize {
        self.now += Duration::from_millis(10);
        for &i in &LIVE {
            let client = &mut clients[i];
            let _ = client.handle_input(Input::Timeout(self.now));
            loop {
                match client.poll_output() {
                    Ok(RtcOutput::Transmit(t)) => {
                        self.engine
                            .handle_receive(self.now, t.source, t.destination, &t.contents);
                    }
                    Ok(RtcOutput::Timeout(_)) | Err(_) => break,
                    Ok(RtcOutput::Event(_)) => {}
                }
            }
        }
        self.engine.handle_timeout(self.now);
        let mut connected = 0;
        loop {
            match self.engine.poll_output(&mut self.buf[..]) {
                Output::Transmit(t) => {
                    let to = LIVE
                        .into_iter()
                        .find(|&i| SOURCES[i].parse() == Ok(t.destination));
                    let (Some(i), Ok(contents)) = (to, self.buf[..t.len].try_into()) else {
                        continue;
                    };
                    let input = Input::Receive(
                        self.now,
                        Receive {
                            proto: Protocol::Udp,
                            source: t.source,
                            destination: t.destination,
                            contents,
                        },
                    );
                    let _ = clients[i].handle_input(input);
                }
                Output::Event(Event::Connected { .. }) => connected += 1,
                Output::Event(_) => {}
                Output::Timeout(_) => break,
            }
        }
        connected
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
