//! `cargo bench -p sabha-media --bench fanout`: what the engine spends per
//! audio packet it forwards, as a table.
//!
//! A rally runs in the deterministic simulation (one publisher, N str0m
//! listeners on a virtual network) and a stopwatch runs around every call
//! into the engine only, so the simulated clients' own work (DTLS, SRTP
//! decrypt, Opus decode) is not counted. Two numbers per row:
//! - **build + SRTP**: the `poll_output` calls that hand out an audio packet
//!   (RTP header, encryption, tag), divided by those packets;
//! - **engine total**: every engine call (ticks with the mix and encode,
//!   str0m's RTCP and STUN handling, timers) divided by the audio packets —
//!   the media core's CPU per delivered listener-packet, before the
//!   `sendmmsg` the driver adds.
//!
//! `SABHA_BENCH_LISTENERS=N SABHA_BENCH_SECONDS=S` runs one row instead of
//! the table. For an instruction profile of the steady state (repeatable on
//! a busy machine), run it under callgrind collecting inside [`steady`]
//! only, and read the engine's entry points inclusively (docs/media.md,
//! "Where the time goes").

// A benchmark is a stopwatch: it reads the clock the media core never does.
#![allow(clippy::disallowed_methods)]

#[path = "../tests/sim/mod.rs"]
mod sim;
#[path = "common/stopwatch.rs"]
mod stopwatch;

use std::time::Duration;

use sabha_media::SessionKind;

struct Row {
    listeners: usize,
    packets: u64,
    build_us: f64,
    total_us: f64,
}

fn rally(listeners: usize, seconds: u64) -> Row {
    let mut sim = sim::Sim::new(3);
    sim.join_with_tone("rally", SessionKind::Publish, 440.0);
    for _ in 0..listeners {
        sim.join("rally", SessionKind::Listen);
    }
    // Connect everyone first: DTLS handshakes are not the steady state.
    sim.run_for(Duration::from_secs(2));
    stopwatch::reset();
    stopwatch::attach(&mut sim);
    steady(&mut sim, seconds);
    let packets = stopwatch::audio_packets().max(1);
    Row {
        listeners,
        packets: stopwatch::audio_packets(),
        build_us: stopwatch::audio_ns() as f64 / 1e3 / packets as f64,
        total_us: stopwatch::engine_ns() as f64 / 1e3 / packets as f64,
    }
}

/// The measured steady state: everyone connected, the speaker talking.
#[inline(never)]
fn steady(sim: &mut sim::Sim, seconds: u64) {
    sim.run_for(Duration::from_secs(seconds));
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn main() {
    println!("Fan-out: media-core CPU per forwarded audio packet (one publisher, N listeners)");
    println!("| listeners | audio packets | build + SRTP µs/packet | engine total µs/packet |");
    println!("|---:|---:|---:|---:|");
    let rows = match (env("SABHA_BENCH_LISTENERS"), env("SABHA_BENCH_SECONDS")) {
        (Some(n), seconds) => vec![(n as usize, seconds.unwrap_or(2))],
        _ => vec![(100, 4), (1_000, 2)],
    };
    for (listeners, seconds) in rows {
        let r = rally(listeners, seconds);
        println!(
            "| {} | {} | {:.2} | {:.2} |",
            r.listeners, r.packets, r.build_us, r.total_us
        );
    }
}
