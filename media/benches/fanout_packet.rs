//! `cargo bench -p sabha-media --bench fanout_packet`: fan-out of one program
//! packet to 10,000 listeners — every engine step from the tick's encoded
//! payload to 10,000 RTP packets built and SRTP-protected into the driver's
//! buffer. No sockets: the datagrams are dropped where the driver would
//! `sendmmsg` them (its cost and the kernel's are in docs/media.md).
//!
//! The listeners are real str0m peers, connected over the deterministic
//! simulation (ICE, DTLS-SRTP); their audio is not delivered, so the
//! clients' decrypt and decode cost nothing here. Two measurements, both
//! per program packet fanned out to all listeners (divide by the listener
//! count, or read criterion's element rate, for one listener-packet):
//! - `build_srtp`: the `poll_output` calls that hand out an audio packet;
//! - `engine_total`: every engine call in the tick's 20 ms — the room's
//!   decode and encode, the fan-out records, str0m's timers and RTCP for
//!   every session, and `build_srtp`.
//!
//! `SABHA_BENCH_LISTENERS=1000` changes the audience (connecting 10,000
//! takes about a minute).

// A benchmark is a stopwatch: it reads the clock the media core never does.
#![allow(clippy::disallowed_methods)]

#[path = "../tests/sim/mod.rs"]
mod sim;
#[path = "common/stopwatch.rs"]
mod stopwatch;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabha_media::{SessionKind, TICK};

fn listeners() -> usize {
    std::env::var("SABHA_BENCH_LISTENERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// One speaker sending a tone and `listeners` connected listeners.
fn connected_rally(listeners: usize) -> sim::Sim {
    let mut sim = sim::Sim::new(7);
    sim.join_with_tone("rally", SessionKind::Publish, 440.0);
    for _ in 0..listeners {
        sim.join("rally", SessionKind::Listen);
    }
    sim.run_for(Duration::from_secs(2));
    let connected = sim.clients.iter().filter(|c| c.connected).count();
    assert_eq!(connected, listeners + 1, "everyone connects");
    sim.deliver_audio = false;
    stopwatch::attach(&mut sim);
    sim
}

/// Runs `ticks` ticks; returns the time `counter` gathered, scaled to
/// exactly `ticks × listeners` audio packets (a tick may land on either
/// side of the run's edge).
fn run_ticks(sim: &mut sim::Sim, ticks: u64, listeners: usize, counter: fn() -> u64) -> Duration {
    stopwatch::reset();
    sim.run_for(TICK * ticks as u32);
    let packets = stopwatch::audio_packets().max(1);
    let wanted = ticks * listeners as u64;
    Duration::from_nanos((counter() as f64 * wanted as f64 / packets as f64) as u64)
}

fn fanout(c: &mut Criterion) {
    let n = listeners();
    let mut sim = connected_rally(n);
    let mut group = c.benchmark_group(format!("fanout_one_packet_to_{n}_listeners"));
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.bench_function("build_srtp", |b| {
        b.iter_custom(|ticks| run_ticks(&mut sim, ticks, n, stopwatch::audio_ns))
    });
    group.bench_function("engine_total", |b| {
        b.iter_custom(|ticks| run_ticks(&mut sim, ticks, n, stopwatch::engine_ns))
    });
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
