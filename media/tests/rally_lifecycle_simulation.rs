//! Rally lifecycle in virtual time: late listeners, a speaker who leaves and
//! a new one who takes over, garbage on the media port.

mod sim;

use std::net::SocketAddr;
use std::time::Duration;

use sabha_media::analysis::dominant_frequency;
use sabha_media::opus::SAMPLE_RATE;
use sabha_media::{CloseReason, SessionKind};
use sim::{SERVER, Sim};

#[test]
fn a_listener_joining_mid_rally_hears_audio_within_a_second() {
    let mut sim = Sim::new(3);
    sim.join_with_tone("rally", SessionKind::Publish, 523.0);
    sim.run_for(Duration::from_secs(2));
    let joined_at = sim.now;
    let late = sim.join("rally", SessionKind::Listen);
    sim.run_for(Duration::from_secs(2));
    let first = sim.clients[late]
        .first_frame_at
        .expect("the late listener heard audio");
    let wait = first.saturating_duration_since(joined_at);
    assert!(
        wait <= Duration::from_secs(1),
        "first audio {wait:?} after the answer"
    );
    let hz = dominant_frequency(sim.clients[late].tail(1.0), SAMPLE_RATE);
    assert!((hz - 523.0).abs() < 5.0, "heard {hz} Hz");
}

#[test]
fn listeners_stay_connected_when_the_speaker_leaves_and_hear_the_next_one() {
    let mut sim = Sim::new(5);
    let first = sim.join_with_tone("rally", SessionKind::Publish, 440.0);
    let listener = sim.join("rally", SessionKind::Listen);
    sim.run_for(Duration::from_secs(2));
    assert!((dominant_frequency(sim.clients[listener].tail(1.0), SAMPLE_RATE) - 440.0).abs() < 5.0);

    sim.clients[first].stop_tone();
    assert!(
        sim.engine
            .close_session(sim.session_ids[first], CloseReason::Left)
    );
    sim.run_for(Duration::from_secs(3));
    assert!(
        sim.clients[listener].connected,
        "the listener is still connected"
    );
    let heard_before = sim.clients[listener].frames_received;

    sim.join_with_tone("rally", SessionKind::Publish, 660.0);
    sim.run_for(Duration::from_secs(2));
    let c = &sim.clients[listener];
    assert!(
        c.frames_received > heard_before + 50,
        "audio resumed ({} → {} frames)",
        heard_before,
        c.frames_received
    );
    let hz = dominant_frequency(c.tail(1.0), SAMPLE_RATE);
    assert!(
        (hz - 660.0).abs() < 5.0,
        "heard {hz} Hz from the new speaker"
    );
    assert_eq!(sim.engine.stats().sessions_publish, 1);
}

#[test]
fn garbage_datagrams_are_counted_and_audio_goes_on() {
    let mut sim = Sim::new(9);
    sim.join_with_tone("rally", SessionKind::Publish, 440.0);
    let listener = sim.join("rally", SessionKind::Listen);
    sim.run_for(Duration::from_secs(1));
    let stranger: SocketAddr = "127.0.0.9:4444".parse().expect("address");
    let listener_addr = sim.clients[listener].addr;
    let mut stun_unknown_ufrag = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    stun_unknown_ufrag.extend_from_slice(&[7; 12]);
    stun_unknown_ufrag.extend_from_slice(&[0x00, 0x06, 0x00, 0x08]);
    stun_unknown_ufrag.extend_from_slice(b"nobody:x");
    let garbage: [&[u8]; 6] = [
        &[],
        &[0xff; 3],
        &[0x00, 0x01, 0x00], // truncated STUN header
        &stun_unknown_ufrag,
        &[0x80, 0x6f, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1], // bare RTP header
        &[0x16, 0xfe, 0xfd, 0, 0, 0],                      // truncated DTLS record
    ];
    for _ in 0..20 {
        for g in garbage {
            sim.engine.handle_receive(sim.now, stranger, SERVER, g);
            // From a known peer's address too: the session must shrug it off.
            sim.engine.handle_receive(sim.now, listener_addr, SERVER, g);
        }
        sim.run_for(Duration::from_millis(50));
    }
    let before = sim.clients[listener].frames_received;
    sim.run_for(Duration::from_secs(1));
    let c = &sim.clients[listener];
    assert!(
        c.frames_received >= before + 45,
        "audio continued: {} frames in 1 s",
        c.frames_received - before
    );
    assert!((dominant_frequency(c.tail(1.0), SAMPLE_RATE) - 440.0).abs() < 5.0);
    let drops = sim.engine.stats().drops;
    assert!(drops.unknown_source >= 120, "{drops:?}");
    assert!(drops.malformed + drops.rejected > 0, "{drops:?}");
}
