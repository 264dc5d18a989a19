//! `cargo bench -p sabha-media --bench mixer`: one 20 ms room tick (jitter
//! buffer play-out, decode, loudest-N mix, mix-minus, encode once per
//! distinct mix, and walking the deliveries), for
//! - a bridge: 20 `/join` participants, 3 of them talking, 17 silent (DTX:
//!   they send nothing);
//! - a rally: one speaker on stage and 10,000 listeners (the fan-out's SRTP
//!   and sends are the `fanout_packet` bench).
//!
//! A tick's share of one core is its time ÷ 20 ms.
//!
//! And the end of a rally: 10,000 listeners leaving one after another.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sabha_media::SessionId;
use sabha_media::opus::{
    EncoderSettings, FRAME_SAMPLES, Frame, MAX_PACKET, OpusEncoder, SAMPLE_RATE,
};
use sabha_media::room::{Profile, Room, RoomConfig};

/// Distinct frames per talker, replayed in a loop.
const FRAMES: usize = 250;

/// Two tones under a slow envelope, distinct per talker: keeps the encoder
/// out of its trivial paths and the speech detector saying "speaking".
fn speech_like(talker: usize, index: usize) -> Frame {
    let base = 180.0 + 70.0 * talker as f32;
    let mut f = [0i16; FRAME_SAMPLES];
    for (i, s) in f.iter_mut().enumerate() {
        let t = (index * FRAME_SAMPLES + i) as f32 / SAMPLE_RATE as f32;
        let env = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
        let x = (2.0 * std::f32::consts::PI * base * t).sin()
            + 0.5 * (2.0 * std::f32::consts::PI * 1330.0 * t).sin();
        *s = (env * 0.25 * 32767.0 * x) as i16;
    }
    f
}

/// A talker's packets, encoded as a browser would.
fn packets(talker: usize) -> Vec<Vec<u8>> {
    let mut enc = OpusEncoder::new(EncoderSettings::default()).expect("encoder");
    let mut buf = [0u8; MAX_PACKET];
    (0..FRAMES)
        .map(|i| {
            let n = enc
                .encode(&speech_like(talker, i), &mut buf)
                .expect("encode");
            buf[..n].to_vec()
        })
        .collect()
}

/// A room with `talkers` on stage (`talking` of them sending), hearing the
/// room when `join`, plus `listeners`; returns it warmed up and a closure
/// state to tick it.
struct Bench {
    room: Room,
    packets: Vec<Vec<Vec<u8>>>,
    seq: u64,
}

impl Bench {
    fn new(talkers: usize, talking: usize, join: bool, listeners: usize) -> Self {
        let mut room = Room::new(RoomConfig::default()).expect("room");
        for t in 0..talkers {
            room.add_talker(SessionId(t as u64), join).expect("talker");
        }
        for l in 0..listeners {
            room.add_listener(SessionId(100_000 + l as u64), Profile::Standard)
                .expect("listener");
        }
        let mut bench = Self {
            room,
            packets: (0..talking).map(packets).collect(),
            seq: 0,
        };
        // Past the jitter buffer's fill and the speech detector's onset.
        for _ in 0..50 {
            bench.tick();
        }
        bench
    }

    fn tick(&mut self) -> usize {
        let i = self.seq as usize % FRAMES;
        for (t, p) in self.packets.iter().enumerate() {
            self.room
                .receive(SessionId(t as u64), self.seq, &p[i], None);
        }
        self.seq += 1;
        self.room.tick();
        self.room.deliveries().count()
    }
}

fn room_tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("room_tick");
    let mut bridge = Bench::new(20, 3, true, 0);
    assert!(bridge.tick() == 20, "every bridge member hears a mix");
    group.bench_function("bridge_20_members_3_talking", |b| {
        b.iter(|| black_box(bridge.tick()))
    });
    let mut rally = Bench::new(1, 1, false, 10_000);
    assert!(rally.tick() == 10_000, "every listener gets the program");
    group.bench_function("rally_1_speaker_10000_listeners", |b| {
        b.iter(|| black_box(rally.tick()))
    });
    group.finish();
}

/// A rally of 10,000 ends: every listener leaves, in the order they came
/// (the worst order for a list that shifts on every removal).
fn rally_end(c: &mut Criterion) {
    let mut group = c.benchmark_group("room_members");
    group.sample_size(10);
    group.bench_function("10000_listeners_leave", |b| {
        b.iter_batched(
            || {
                let mut room = Room::new(RoomConfig::default()).expect("room");
                for l in 0..10_000 {
                    room.add_listener(SessionId(l), Profile::Standard)
                        .expect("listener");
                }
                room
            },
            |mut room| {
                for l in 0..10_000 {
                    room.remove(SessionId(l));
                }
                assert!(room.is_empty());
                room
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, room_tick, rally_end);
criterion_main!(benches);
