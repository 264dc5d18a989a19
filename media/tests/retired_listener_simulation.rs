//! A listener's str0m `Rtc` is retired once its handshake is over, and what
//! is left (consent answers, our SRTP sender) keeps it listening: heard in
//! virtual time against str0m clients, which stop listening when their
//! consent checks go unanswered.

mod sim;

use std::time::Duration;

use sabha_media::analysis::dominant_frequency;
use sabha_media::opus::SAMPLE_RATE;
use sabha_media::{CloseReason, SessionKind};
use sim::Sim;

/// A rally (a 440 Hz publisher) with one listener, run until the listener
/// has retired its `Rtc`; returns the simulation and the listener.
fn rally_with_a_retired_listener(seed: u64) -> (Sim, usize) {
    let mut sim = Sim::new(seed);
    sim.join_with_tone("rally", SessionKind::Publish, 440.0);
    let listener = sim.join("rally", SessionKind::Listen);
    sim.run_for(Duration::from_secs(10));
    assert_eq!(
        sim.engine.stats().listeners_retired,
        1,
        "retired after the handshake"
    );
    (sim, listener)
}

#[test]
fn a_retired_listener_keeps_hearing_the_rally_past_several_consent_windows() {
    let (mut sim, listener) = rally_with_a_retired_listener(41);

    // Three consent windows (15 s each) with only the retired stack.
    let heard_before = sim.clients[listener].frames_received;
    sim.run_for(Duration::from_secs(50));
    let c = &sim.clients[listener];
    assert!(c.connected, "the client still considers itself connected");
    assert!(sim.closed.is_empty(), "nobody was closed: {:?}", sim.closed);
    assert!(
        c.frames_received >= heard_before + 50 * 49,
        "{} frames in 50 s",
        c.frames_received - heard_before
    );
    let hz = dominant_frequency(c.tail(2.0), SAMPLE_RATE);
    assert!((hz - 440.0).abs() < 5.0, "heard {hz} Hz");
    assert!(Sim::longest_gap(c.tail(40.0)) < Duration::from_millis(100));
    // The talker keeps its full stack.
    assert_eq!(sim.engine.stats().listeners_retired, 1);
}

#[test]
fn a_retired_listener_that_goes_silent_is_closed_when_its_consent_lapses() {
    let (mut sim, listener) = rally_with_a_retired_listener(42);

    sim.clients[listener].loss = 1.0; // the phone lost its network
    let gone_at = sim.now;
    sim.run_for(Duration::from_secs(20));
    let (id, reason, at) = *sim.closed.first().expect("the listener was closed");
    assert_eq!(id, sim.session_ids[listener]);
    assert_eq!(reason, CloseReason::IceTimeout);
    let after = at.saturating_duration_since(gone_at);
    assert!(
        after <= Duration::from_secs(17),
        "closed {after:?} after its last consent check"
    );
    assert_eq!(sim.engine.stats().sessions_listen, 0);
}

/// The goodbye grace of `consent.rs` (8 s), the sweep's second, and slack.
const GOODBYE_WITHIN: Duration = Duration::from_secs(10);

#[test]
fn a_retired_listener_that_hangs_up_is_closed_as_left_after_the_goodbye_grace() {
    let (mut sim, listener) = rally_with_a_retired_listener(43);

    sim.clients[listener].rtc.close().expect("close"); // sends close_notify
    let hung_up_at = sim.now;
    sim.run_for(GOODBYE_WITHIN);
    let (id, reason, at) = *sim.closed.first().expect("the listener was closed");
    assert_eq!(id, sim.session_ids[listener]);
    assert_eq!(reason, CloseReason::Left, "not a consent timeout");
    let after = at.saturating_duration_since(hung_up_at);
    assert!(after >= Duration::from_secs(8), "closed {after:?} after it");
}

/// An encrypted-looking DTLS alert (type 21, DTLS 1.2, epoch 1) that no
/// key checked, as anyone who can send from the listener's address could.
fn forged_alert() -> Vec<u8> {
    let mut alert = vec![0u8; 39];
    alert[..5].copy_from_slice(&[21, 0xfe, 0xfd, 0, 1]);
    alert[12] = 26;
    alert
}

#[test]
fn a_forged_goodbye_does_not_end_a_live_retired_listener() {
    let (mut sim, listener) = rally_with_a_retired_listener(44);

    let from = sim.clients[listener].addr;
    for _ in 0..3 {
        sim.engine
            .handle_receive(sim.now, from, sim::SERVER, &forged_alert());
        sim.run_for(Duration::from_secs(10));
    }
    assert!(sim.closed.is_empty(), "closed: {:?}", sim.closed);
    let c = &sim.clients[listener];
    assert!(c.connected, "the client still considers itself connected");
    let hz = dominant_frequency(c.tail(2.0), SAMPLE_RATE);
    assert!((hz - 440.0).abs() < 5.0, "heard {hz} Hz");
    assert!(Sim::longest_gap(c.tail(25.0)) < Duration::from_millis(100));
}
