//! A bridge in virtual time: talkers over sendrecv sessions hear mix-minus-self.

mod sim;

use std::time::Duration;

use sabha_media::analysis::relative_db;
use sabha_media::opus::SAMPLE_RATE;
use sabha_media::{MixRate, SessionKind};
use sim::Sim;

/// What the server does for a bridge: the room mixes at 16 kHz.
#[test]
fn three_talkers_hear_each_other_and_not_themselves() {
    three_talkers(MixRate::Wide);
}

/// Guest speakers of a rally on `/join`: the room mixes at 48 kHz.
#[test]
fn three_talkers_of_a_48_khz_room_hear_each_other_and_not_themselves() {
    three_talkers(MixRate::Full);
}

fn three_talkers(rate: MixRate) {
    let mut sim = Sim::new(11);
    sim.room_rate = rate;
    let freqs = [400.0f32, 650.0, 900.0];
    let talkers: Vec<usize> = freqs
        .iter()
        .map(|&f| sim.join_with_tone("bridge", SessionKind::Join, f))
        .collect();
    let listener = sim.join("bridge", SessionKind::Listen);

    sim.run_for(Duration::from_secs(3));

    for (&t, &own) in talkers.iter().zip(&freqs) {
        let heard = sim.clients[t].tail(1.0);
        assert!(
            heard.len() > SAMPLE_RATE as usize / 2,
            "talker at {own} Hz heard {} samples",
            heard.len()
        );
        for &other in freqs.iter().filter(|&&f| f != own) {
            let rel = relative_db(heard, SAMPLE_RATE, own, other);
            assert!(
                rel < -30.0,
                "talker at {own} Hz hears itself only {rel:.1} dB below {other} Hz"
            );
        }
        let others: Vec<f32> = freqs.iter().copied().filter(|&f| f != own).collect();
        let balance = relative_db(heard, SAMPLE_RATE, others[0], others[1]);
        assert!(
            balance.abs() < 3.0,
            "talker at {own} Hz hears the others unbalanced ({balance:.1} dB)"
        );
    }
    let program = sim.clients[listener].tail(1.0);
    for &f in &freqs[1..] {
        let rel = relative_db(program, SAMPLE_RATE, f, freqs[0]);
        assert!(
            rel.abs() < 3.0,
            "the listener hears {f} Hz at {rel:.1} dB against {} Hz",
            freqs[0]
        );
    }
    let stats = sim.engine.stats();
    assert!(
        stats.audio.encodes <= 4 * stats.ticks,
        "≤ talkers + 1 encodes per tick"
    );
}
