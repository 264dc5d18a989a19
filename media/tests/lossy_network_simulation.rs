//! Audio on bad networks, in virtual time with a seeded lossy network:
//! a talker on a 20 %-loss, 50 ms-jitter link, and a listener on a 20 %-loss
//! link. What counts is what is heard: the tone, and no gap over 100 ms.

mod sim;

use std::time::Duration;

use sabha_media::analysis::dominant_frequency;
use sabha_media::opus::SAMPLE_RATE;
use sabha_media::{MixRate, Profile, SessionKind};
use sim::Sim;

const MAX_GAP: Duration = Duration::from_millis(100);

/// Client `c` heard the last 4 s in full, at `freq`, with no gap over [`MAX_GAP`].
fn assert_heard_continuously(sim: &Sim, c: usize, freq: f32) {
    let heard = sim.clients[c].tail(4.0);
    let expected = 4 * SAMPLE_RATE as usize - 960;
    assert!(
        heard.len() >= expected,
        "client {c}: {} samples",
        heard.len()
    );
    let gap = Sim::longest_gap(heard);
    assert!(gap <= MAX_GAP, "client {c}: longest gap {gap:?}");
    let hz = dominant_frequency(heard, SAMPLE_RATE);
    assert!(
        (hz - freq).abs() < 5.0,
        "client {c} heard {hz} Hz, not {freq}"
    );
}

#[test]
fn a_talker_on_a_lossy_jittery_link_is_heard_without_gaps() {
    let mut sim = Sim::new(20);
    let talker = sim.join_with_tone("rally", SessionKind::Publish, 440.0);
    let listener = sim.join("rally", SessionKind::Listen);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.clients[talker].connected && sim.clients[listener].connected);
    sim.clients[talker].loss = 0.20; // the talker's link degrades once connected
    sim.clients[talker].jitter = Duration::from_millis(50);

    sim.run_for(Duration::from_secs(6));

    assert_heard_continuously(&sim, listener, 440.0);
    assert!(
        sim.dropped > 50,
        "the link dropped {} datagrams",
        sim.dropped
    );
}

#[test]
fn a_listener_on_a_lossy_link_hears_continuous_audio() {
    let mut sim = Sim::new(21);
    sim.join_with_tone("rally", SessionKind::Publish, 523.0);
    let listener = sim.join("rally", SessionKind::Listen);
    // Connect on a clean link, then the link degrades: loss during the DTLS
    // handshake only delays the start (retransmit back-off), which is not
    // what this test measures.
    sim.run_for(Duration::from_secs(2));
    assert!(sim.clients[listener].connected);
    sim.clients[listener].loss = 0.20;

    sim.run_for(Duration::from_secs(6));

    assert_heard_continuously(&sim, listener, 523.0);
}

/// RFC 2198 RED for a listener who offers it: each packet repeats the frame
/// before, so on a 30 %-loss link the frames that reach the decoder rise
/// from about 70 % towards 91 % (1 − 0.3²). A listener without RED, on the
/// same kind of link, is the control; a bridge talker offering RED gets
/// plain Opus (RED is not unwrapped on the way in).
#[test]
fn red_listeners_recover_lost_frames_from_the_next_packet() {
    let mut sim = Sim::new(23);
    sim.join_with_tone("rally", SessionKind::Publish, 440.0);
    let with_red = sim.join_offering_red("rally", SessionKind::Listen);
    let plain = sim.join("rally", SessionKind::Listen);
    let talker = sim.join_offering_red("bridge", SessionKind::Join);
    assert!(
        sim.answers[with_red].contains("red/48000/2"),
        "{}",
        sim.answers[with_red]
    );
    assert!(!sim.answers[plain].contains("red/48000"));
    assert!(
        !sim.answers[talker].contains("red/48000"),
        "{}",
        sim.answers[talker]
    );
    sim.run_for(Duration::from_secs(2));
    assert!(sim.clients[with_red].connected && sim.clients[plain].connected);
    for c in [with_red, plain] {
        sim.clients[c].loss = 0.30;
    }
    let before = [with_red, plain].map(|c| sim.clients[c].frames_arrived.len());
    sim.run_for(Duration::from_secs(5));
    // 5 s is 250 frames.
    let [red_share, plain_share] = [0, 1].map(|i| {
        let c = [with_red, plain][i];
        (sim.clients[c].frames_arrived.len() - before[i]) as f64 / 250.0
    });
    // Measured: 85 % and 69 % (str0m's depayloader, the client here, drops
    // some recovered frames that come after their successor).
    assert!(
        red_share >= 0.80 && red_share - plain_share >= 0.10,
        "{:.0} % of frames arrived with RED, {:.0} % without",
        red_share * 100.0,
        plain_share * 100.0
    );
    assert_heard_continuously(&sim, with_red, 440.0);
    println!(
        "30 % loss: {:.0} % of frames with RED, {:.0} % without",
        red_share * 100.0,
        plain_share * 100.0
    );
}

#[test]
fn the_gap_measure_sees_a_real_gap() {
    let mut pcm = vec![8000i16; SAMPLE_RATE as usize];
    pcm[10_000..10_000 + 7_200].fill(0); // 150 ms of silence
    assert_eq!(Sim::longest_gap(&pcm), Duration::from_millis(140));
}

/// The low-rate profile over WebRTC: 60 ms packets with FEC, under 24 kb/s
/// counted on the wire (SRTP, SRTCP; IP/UDP headers excluded), tone intact,
/// and still continuous with 20 % loss on the listener's link.
#[test]
fn a_low_profile_listener_gets_under_24_kbps_and_survives_loss() {
    let mut sim = Sim::new(22);
    sim.join_with_tone("rally", SessionKind::Publish, 440.0);
    let clean = sim.join_with_profile("rally", SessionKind::Listen, Profile::Low);
    let lossy = sim.join_with_profile("rally", SessionKind::Listen, Profile::Low);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.clients[clean].connected && sim.clients[lossy].connected);
    sim.clients[lossy].loss = 0.20; // the link degrades once connected
    sim.run_for(Duration::from_secs(1));
    let bytes_before = sim.clients[clean].bytes_received;
    sim.run_for(Duration::from_secs(5));
    let kbps = (sim.clients[clean].bytes_received - bytes_before) as f64 * 8.0 / 5.0 / 1000.0;
    assert!(kbps <= 24.0, "low profile costs {kbps:.1} kb/s on the wire");
    assert!(kbps >= 10.0, "low profile delivered only {kbps:.1} kb/s");
    for c in [clean, lossy] {
        assert_heard_continuously(&sim, c, 440.0);
    }
    println!("low profile: {kbps:.1} kb/s on the wire");
}

/// Share of the packets client `c` received in the last `window` that
/// carried in-band FEC.
fn fec_share(sim: &mut Sim, c: usize, window: Duration) -> f64 {
    let (fec, frames) = (sim.clients[c].fec_packets, sim.clients[c].frames_received);
    sim.run_for(window);
    let fec = sim.clients[c].fec_packets - fec;
    let frames = sim.clients[c].frames_received - frames;
    assert!(frames > 0, "client {c} received nothing");
    fec as f64 / frames as f64
}

/// Receivers report every 5 s (str0m's and libwebrtc's interval for audio):
/// time enough for two reports, one of which may be lost.
const REPORTS: Duration = Duration::from_secs(12);

/// In-band FEC follows the loss receivers report in their RTCP: in a
/// bridge, the talker whose link loses 15 % gets FEC in their mix-minus,
/// the one on a clean link gets none (and the server saves its cost); when
/// the clean link degrades, FEC comes back within two reports.
#[test]
fn a_mix_minus_carries_fec_only_while_its_talker_reports_loss() {
    let mut sim = Sim::new(31);
    sim.room_rate = MixRate::Wide;
    let lossy = sim.join_with_tone("bridge", SessionKind::Join, 300.0);
    let clean = sim.join_with_tone("bridge", SessionKind::Join, 500.0);
    for c in [lossy, clean] {
        sim.clients[c].syllables = true;
    }
    sim.run_for(Duration::from_secs(2));
    assert!(sim.clients[lossy].connected && sim.clients[clean].connected);
    // Before anyone reported, every mix plans for some loss.
    let unreported = fec_share(&mut sim, clean, Duration::from_millis(500));
    assert!(unreported > 0.3, "before reports: {unreported:.2} with FEC");
    sim.clients[lossy].loss = 0.15;
    sim.run_for(REPORTS);
    let (to_lossy, to_clean) = (
        fec_share(&mut sim, lossy, Duration::from_secs(5)),
        fec_share(&mut sim, clean, Duration::from_secs(5)),
    );
    assert!(to_lossy > 0.3, "lossy talker: {to_lossy:.2} with FEC");
    assert_eq!(to_clean, 0.0, "clean talker: {to_clean:.2} with FEC");
    sim.clients[clean].loss = 0.15;
    sim.run_for(REPORTS);
    let degraded = fec_share(&mut sim, clean, Duration::from_secs(5));
    assert!(degraded > 0.3, "degraded talker: {degraded:.2} with FEC");
    // Two talkers, a report every 5 s each, since 2 s into the run.
    let reports = sim.engine.stats().loss_reports;
    assert!(reports >= 8, "{reports} loss reports read");
    println!("FEC share: lossy {to_lossy:.2}, clean {to_clean:.2}, degraded {degraded:.2}");
}

/// A rally's listeners are retired from str0m after their handshake; their
/// SRTCP is still read, so the program drops FEC while they report a clean
/// path and codes it again when enough of them report loss.
#[test]
fn the_program_follows_the_loss_its_retired_listeners_report() {
    let mut sim = Sim::new(32);
    let talker = sim.join_with_tone("rally", SessionKind::Publish, 440.0);
    sim.clients[talker].syllables = true;
    let listeners: Vec<usize> = (0..3)
        .map(|_| sim.join("rally", SessionKind::Listen))
        .collect();
    sim.run_for(REPORTS);
    assert!(listeners.iter().all(|&l| sim.clients[l].connected));
    assert_eq!(sim.engine.stats().listeners_retired, listeners.len());
    let clean = fec_share(&mut sim, listeners[0], Duration::from_secs(5));
    assert_eq!(clean, 0.0, "clean listeners: {clean:.2} with FEC");
    sim.clients[listeners[2]].loss = 0.15;
    sim.run_for(REPORTS);
    let lossy = fec_share(&mut sim, listeners[0], Duration::from_secs(5));
    assert!(
        lossy > 0.3,
        "one of three on a lossy link: {lossy:.2} with FEC"
    );
    let stats = sim.engine.stats();
    assert!(stats.audio.encodes_with_fec > 0 && stats.loss_reports >= 9);
}
