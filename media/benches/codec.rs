//! `cargo bench -p sabha-media --bench codec`: what one encode, one decode and
//! one room tick cost on this machine, as a table. Encodes dominate mixer CPU,
//! so this is what the default complexity is chosen from (docs/media.md).

// A benchmark is a stopwatch: it reads the clock the media core never does.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use sabha_media::SessionId;
use sabha_media::opus::{
    EncoderSettings, FRAME_SAMPLES, Frame, MAX_PACKET, OpusDecoder, OpusEncoder, SAMPLE_RATE,
};
use sabha_media::room::{Profile, Room, RoomConfig};

const FRAMES: usize = 500;

fn speech_like(index: usize) -> Frame {
    // Two tones with a slow amplitude envelope: enough structure to keep the
    // encoder out of its trivial paths.
    let mut f = [0i16; FRAME_SAMPLES];
    for (i, s) in f.iter_mut().enumerate() {
        let t = (index * FRAME_SAMPLES + i) as f32 / SAMPLE_RATE as f32;
        let env = 0.5 + 0.5 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
        let x = (2.0 * std::f32::consts::PI * 220.0 * t).sin()
            + 0.5 * (2.0 * std::f32::consts::PI * 1330.0 * t).sin();
        *s = (env * 0.25 * 32767.0 * x) as i16;
    }
    f
}

fn micros_per(frames: usize, start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e6 / frames as f64
}

fn encode_row(complexity: u8) -> (f64, f64, usize) {
    let settings = EncoderSettings {
        complexity,
        ..EncoderSettings::default()
    };
    let mut enc = OpusEncoder::new(settings).expect("encoder");
    let mut dec = OpusDecoder::new().expect("decoder");
    let input: Vec<Frame> = (0..FRAMES).map(speech_like).collect();
    let mut packets = Vec::with_capacity(FRAMES);
    let mut buf = [0u8; MAX_PACKET];
    let start = Instant::now();
    for f in &input {
        let n = enc.encode(f, &mut buf).expect("encode");
        packets.push(buf[..n].to_vec());
    }
    let enc_us = micros_per(FRAMES, start);
    let mut out = [0i16; FRAME_SAMPLES];
    let start = Instant::now();
    for p in &packets {
        dec.decode(p, &mut out).expect("decode");
        black_box(&out);
    }
    let dec_us = micros_per(FRAMES, start);
    let bytes = packets.iter().map(Vec::len).sum::<usize>() / FRAMES;
    (enc_us, dec_us, bytes)
}

fn room_tick_row(talkers: usize, talking: usize, listeners: usize) -> f64 {
    let mut room = Room::new(RoomConfig::default()).expect("room");
    for t in 0..talkers {
        room.add_talker(SessionId(t as u64), true).expect("talker");
    }
    for l in 0..listeners {
        room.add_listener(SessionId(10_000 + l as u64), Profile::Standard)
            .expect("listener");
    }
    let mut enc: Vec<OpusEncoder> = (0..talking)
        .map(|_| OpusEncoder::new(EncoderSettings::default()).expect("enc"))
        .collect();
    let mut buf = [0u8; MAX_PACKET];
    let packets: Vec<Vec<Vec<u8>>> = enc
        .iter_mut()
        .map(|e| {
            (0..FRAMES)
                .map(|i| {
                    let n = e.encode(&speech_like(i), &mut buf).expect("encode");
                    buf[..n].to_vec()
                })
                .collect()
        })
        .collect();
    let mut elapsed = 0.0;
    for i in 0..FRAMES {
        for (t, p) in packets.iter().enumerate() {
            room.receive(SessionId(t as u64), i as u64, &p[i], None);
        }
        let start = Instant::now();
        room.tick();
        black_box(room.deliveries().count());
        elapsed += start.elapsed().as_secs_f64();
    }
    elapsed * 1e6 / FRAMES as f64
}

fn main() {
    println!("Opus, 20 ms mono 48 kHz frames at 32 kb/s ({FRAMES} frames each)");
    println!("| complexity | encode µs/frame | decode µs/frame | bytes/frame |");
    println!("|---:|---:|---:|---:|");
    for c in [0u8, 3, 5, 7, 10] {
        let (e, d, b) = encode_row(c);
        println!("| {c} | {e:.1} | {d:.1} | {b} |");
    }
    println!();
    println!("Room tick (decode, mix, encode once per distinct mix), default config");
    println!("| participants on stage | talking | listeners | µs per tick | % of one core |");
    println!("|---:|---:|---:|---:|---:|");
    let rows = [
        (1, 1, 10_000),
        (3, 3, 0),
        (5, 3, 0),
        (20, 3, 0),
        (50, 3, 0),
        (100, 3, 0),
        (200, 3, 0),
        (20, 6, 0),
    ];
    for (talkers, talking, listeners) in rows {
        let us = room_tick_row(talkers, talking, listeners);
        println!(
            "| {talkers} | {talking} | {listeners} | {us:.0} | {:.2} |",
            us / 20_000.0 * 100.0
        );
    }
}
