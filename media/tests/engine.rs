//! The engine's contract, from outside: what the SDP answer carries, shared
//! and per-session credentials, capacity, closing and connect timeouts.
//! (Media flowing through it is covered by the simulations.)

use std::time::Instant;

use sabha_media::engine::{CONNECT_TIMEOUT, SWEEP_EVERY};
use sabha_media::sdp::OfferError;
use sabha_media::{
    CloseReason, Engine, EngineConfig, Event, MixRate, OpenError, Opened, Output, Profile,
    RoomConfig, SessionKind, Traffic,
};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

fn engine(max_sessions: usize) -> (Engine, Instant) {
    // The origin of this test's time; the engine itself never reads a clock.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let config = EngineConfig {
        advertised: "127.0.0.1:8443".parse().expect("address"),
        room: RoomConfig::default(),
        max_sessions,
    };
    (Engine::new(config, now).expect("engine"), now)
}

/// An offer as a WebRTC client makes it (str0m, default codecs incl. Opus),
/// with audio in `direction` ("sendonly", "recvonly" or "sendrecv").
fn offer(now: Instant, direction: &str) -> String {
    let direction = match direction {
        "sendonly" => Direction::SendOnly,
        "recvonly" => Direction::RecvOnly,
        _ => Direction::SendRecv,
    };
    let mut rtc = Rtc::builder().build(now);
    let addr = "127.0.0.1:40000".parse().expect("address");
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, direction, None, None, None);
    let (offer, _pending) = change.apply().expect("offer");
    offer.to_sdp_string()
}

/// Offers Opus audio in `direction` to room "r".
fn open(
    engine: &mut Engine,
    now: Instant,
    kind: SessionKind,
    direction: &str,
) -> Result<Opened, OpenError> {
    engine.open_session(
        now,
        "r",
        MixRate::Full,
        kind,
        Profile::Standard,
        &offer(now, direction),
    )
}

fn drain(engine: &mut Engine) -> Vec<Event> {
    let mut events = Vec::new();
    let mut buf = [0u8; sabha_media::DATAGRAM_MAX];
    loop {
        match engine.poll_output(&mut buf) {
            Output::Event(e) => events.push(e),
            Output::Transmit(_) => {}
            Output::Timeout(_) => return events,
        }
    }
}

#[test]
fn the_answer_is_ice_lite_with_our_host_candidate_and_opus() {
    let (mut engine, now) = engine(10);
    let opened = open(&mut engine, now, SessionKind::Listen, "recvonly").expect("opened");
    let answer = opened.answer;
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(answer.contains("127.0.0.1 8443 typ host"), "{answer}");
    assert!(answer.contains("a=rtpmap:111 opus/48000/2"), "{answer}");
    assert!(answer.contains("a=fingerprint:sha-256"), "{answer}");
    assert!(
        answer.contains("a=sendonly"),
        "a WHEP answer sends: {answer}"
    );
    let publish = open(&mut engine, now, SessionKind::Publish, "sendonly").expect("opened");
    assert!(publish.answer.contains("a=recvonly"), "{}", publish.answer);
}

#[test]
fn sessions_share_one_dtls_certificate_but_not_ice_credentials() {
    let (mut engine, now) = engine(10);
    let a = open(&mut engine, now, SessionKind::Listen, "recvonly")
        .expect("a")
        .answer;
    let b = open(&mut engine, now, SessionKind::Listen, "recvonly")
        .expect("b")
        .answer;
    let line = |sdp: &str, prefix: &str| {
        sdp.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_owned)
    };
    assert_eq!(line(&a, "a=fingerprint"), line(&b, "a=fingerprint"));
    assert_ne!(line(&a, "a=ice-ufrag"), line(&b, "a=ice-ufrag"));
}

#[test]
fn refuses_sessions_beyond_capacity() {
    let (mut engine, now) = engine(2);
    for _ in 0..2 {
        open(&mut engine, now, SessionKind::Listen, "recvonly").expect("fits");
    }
    let err = open(&mut engine, now, SessionKind::Listen, "recvonly").unwrap_err();
    assert_eq!(err, OpenError::AtCapacity(2));
}

#[test]
fn bad_offers_create_nothing() {
    let (mut engine, now) = engine(10);
    assert!(matches!(
        engine.open_session(
            now,
            "r",
            MixRate::Full,
            SessionKind::Listen,
            Profile::Standard,
            "nonsense"
        ),
        Err(OpenError::Offer(_))
    ));
    assert!(matches!(
        open(&mut engine, now, SessionKind::Join, "recvonly"),
        Err(OpenError::Offer(OfferError::WrongDirection { .. }))
    ));
    assert_eq!(engine.stats().rooms, 0);
    assert_eq!(engine.session_count(), 0);
}

#[test]
fn closing_emits_closed_and_an_empty_room_goes_away() {
    let (mut engine, now) = engine(10);
    let a = open(&mut engine, now, SessionKind::Listen, "recvonly")
        .expect("a")
        .id;
    let b = open(&mut engine, now, SessionKind::Join, "sendrecv")
        .expect("b")
        .id;
    drain(&mut engine);
    assert!(engine.close_session(a, CloseReason::Left));
    assert_eq!(
        drain(&mut engine),
        vec![Event::Closed {
            id: a,
            reason: CloseReason::Left,
            traffic: Traffic::default(),
        }]
    );
    assert!(!engine.close_session(a, CloseReason::Left), "already gone");
    assert_eq!(engine.stats().rooms, 1);
    assert_eq!(engine.close_room("r"), 1);
    assert_eq!(
        drain(&mut engine),
        vec![Event::Closed {
            id: b,
            reason: CloseReason::RoomClosed,
            traffic: Traffic::default(),
        }]
    );
    assert_eq!(engine.stats().rooms, 0);
    assert_eq!(engine.close_room("r"), 0);
}

#[test]
fn a_session_that_never_connects_times_out() {
    let (mut engine, now) = engine(10);
    let id = open(&mut engine, now, SessionKind::Listen, "recvonly")
        .expect("a")
        .id;
    drain(&mut engine);
    let later = now + CONNECT_TIMEOUT + SWEEP_EVERY * 2;
    engine.handle_timeout(later);
    assert_eq!(
        drain(&mut engine),
        vec![Event::Closed {
            id,
            reason: CloseReason::ConnectTimeout,
            traffic: Traffic::default(),
        }]
    );
}

/// The offers aiortc and Chromium really sent (captured on loopback by
/// `scripts/capture-seeds`, kept as fuzz seeds) are answered with Opus at
/// the payload type they offered, for the endpoint each was sent to.
#[test]
fn offers_captured_from_aiortc_and_chromium_are_answered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/sdp_offer");
    let mut answered = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the seed corpus") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
        let Some((client, endpoint)) = name.split_once('-') else {
            continue;
        };
        if !matches!(client, "aiortc" | "chromium") {
            continue;
        }
        let kind = match endpoint {
            "whip" => SessionKind::Publish,
            "whep" => SessionKind::Listen,
            "join" => SessionKind::Join,
            other => panic!("{name}: unknown endpoint {other}"),
        };
        let offer = std::fs::read_to_string(&path).expect("offer");
        let opus_pt = offer
            .lines()
            .find_map(|l| l.strip_prefix("a=rtpmap:")?.strip_suffix(" opus/48000/2"))
            .unwrap_or_else(|| panic!("{name} offers Opus"));
        let (mut engine, now) = engine(4);
        let opened = engine
            .open_session(now, "room", MixRate::Full, kind, Profile::Standard, &offer)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            opened
                .answer
                .contains(&format!("a=rtpmap:{opus_pt} opus/48000/2")),
            "{name}: {}",
            opened.answer
        );
        answered.push(name.to_owned());
    }
    answered.sort();
    assert!(
        answered.len() >= 5
            && answered.iter().any(|n| n.starts_with("chromium"))
            && answered.iter().any(|n| n.starts_with("aiortc")),
        "{answered:?}"
    );
}
