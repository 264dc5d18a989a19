//! A rally in virtual time: one publisher on a lossy link, 200 listeners.

mod sim;

use std::time::Duration;

use sabha_media::SessionKind;
use sabha_media::analysis::{dominant_frequency, rms_dbfs};
use sabha_media::opus::SAMPLE_RATE;
use sim::Sim;

#[test]
fn two_hundred_listeners_hear_a_publisher_on_a_lossy_link() {
    let mut sim = Sim::new(7);
    let publisher = sim.join_with_tone("rally", SessionKind::Publish, 440.0);
    let listeners: Vec<usize> = (0..200)
        .map(|_| sim.join("rally", SessionKind::Listen))
        .collect();
    sim.run_for(Duration::from_secs(1));
    assert!(sim.clients[publisher].connected);
    // The publisher's link loses 5 % once connected (loss during the DTLS
    // handshake would only delay the start, by retransmit back-off).
    sim.clients[publisher].loss = 0.05;

    sim.run_for(Duration::from_secs(3));

    assert!(sim.dropped > 0, "the publisher link lost packets");
    for &l in &listeners {
        let c = &sim.clients[l];
        assert!(c.connected, "listener {l} connected");
        let tail = c.tail(1.0);
        assert!(
            tail.len() >= SAMPLE_RATE as usize * 9 / 10,
            "listener {l} heard {} samples in the last second",
            tail.len()
        );
        let hz = dominant_frequency(tail, SAMPLE_RATE);
        assert!((hz - 440.0).abs() < 5.0, "listener {l} heard {hz} Hz");
        let level = rms_dbfs(tail);
        assert!(
            level > -30.0 && level < -3.0,
            "listener {l} level {level} dBFS"
        );
    }
    let stats = sim.engine.stats();
    assert!(
        stats.audio.encodes <= stats.ticks + 1,
        "one program encode per tick: {} encodes, {} ticks",
        stats.audio.encodes,
        stats.ticks
    );
}
