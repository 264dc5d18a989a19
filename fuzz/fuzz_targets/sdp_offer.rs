//! Any text as an SDP offer, for every endpoint kind: `check_offer` must
//! return an error, never panic, and an offer it accepts must make the
//! engine build an answer (str0m's `accept_offer`) without panicking.
#![no_main]

use std::cell::RefCell;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sabha_media::sdp::check_offer;
use sabha_media::{
    CloseReason, DATAGRAM_MAX, Engine, EngineConfig, MixRate, Output, Profile, RoomConfig,
    SessionKind,
};

thread_local! {
    static ENGINE: RefCell<(Engine, Instant)> = RefCell::new({
        // The fuzzer's only clock read: the origin of the engine's time.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let config = EngineConfig {
            advertised: "127.0.0.1:8443".parse().expect("address"),
            room: RoomConfig::default(),
            max_sessions: 16,
        };
        (Engine::new(config, now).expect("engine"), now)
    });
}

const KINDS: [SessionKind; 3] = [SessionKind::Publish, SessionKind::Listen, SessionKind::Join];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for kind in KINDS {
        if check_offer(text, kind).is_err() {
            continue;
        }
        ENGINE.with_borrow_mut(|(engine, now)| {
            if let Ok(opened) =
                engine.open_session(*now, "fuzz", MixRate::Full, kind, Profile::Standard, text)
            {
                assert!(!opened.answer.is_empty());
                engine.close_session(opened.id, CloseReason::Left);
                let mut buf = [0u8; DATAGRAM_MAX];
                while !matches!(engine.poll_output(&mut buf), Output::Timeout(_)) {}
            }
        });
    }
});
