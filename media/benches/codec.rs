//! `cargo bench -p sabha-media --bench codec`: what one encode, one decode and
//! one room tick cost on this machine, as a table. Encodes dominate mixer CPU,
//! so this is what the default complexity is chosen from (docs/media.md).

// A benchmark is a stopwatch: it reads the clock the media core never does.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use sabha_media::SessionId;
use sabha_media::opus::{
    Application, Bandwidth, EncoderSettings, FRAME_SAMPLES, Frame, MAX_PACKET, MixRate,
    OpusDecoder, OpusEncoder, SAMPLE_RATE,
};
use sabha_media::room::{BRIDGE_ENCODER, Profile, Room, RoomConfig};

/// Frames per row; `-- --frames N` to change (e.g. fewer under callgrind).
fn frames() -> usize {
    arg_after("--frames")
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

/// The value after `flag` on the command line (`cargo bench … -- flag value`).
fn arg_after(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

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

fn encode_row(settings: EncoderSettings) -> (f64, f64, usize) {
    let frames = frames();
    let mut enc = OpusEncoder::new(settings).expect("encoder");
    let mut dec = OpusDecoder::new().expect("decoder");
    let input: Vec<Frame> = (0..frames).map(speech_like).collect();
    let mut packets = Vec::with_capacity(frames);
    let mut buf = [0u8; MAX_PACKET];
    let start = Instant::now();
    for f in &input {
        let n = enc.encode(f, &mut buf).expect("encode");
        packets.push(buf[..n].to_vec());
    }
    let enc_us = micros_per(frames, start);
    let mut out = [0i16; FRAME_SAMPLES];
    let start = Instant::now();
    for p in &packets {
        dec.decode(p, &mut out).expect("decode");
        black_box(&out);
    }
    let dec_us = micros_per(frames, start);
    let bytes = packets.iter().map(Vec::len).sum::<usize>() / frames;
    (enc_us, dec_us, bytes)
}

fn room_tick_row(
    config: RoomConfig,
    rate: MixRate,
    talkers: usize,
    talking: usize,
    listeners: usize,
) -> f64 {
    let frames = frames();
    let mut room = Room::with_rate(config, rate).expect("room");
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
            (0..frames)
                .map(|i| {
                    let n = e.encode(&speech_like(i), &mut buf).expect("encode");
                    buf[..n].to_vec()
                })
                .collect()
        })
        .collect();
    let mut elapsed = 0.0;
    for i in 0..frames {
        for (t, p) in packets.iter().enumerate() {
            room.receive(SessionId(t as u64), i as u64, &p[i], None);
        }
        let start = Instant::now();
        room.tick();
        black_box(room.deliveries().count());
        elapsed += start.elapsed().as_secs_f64();
    }
    elapsed * 1e6 / frames as f64
}

/// Encoder settings compared by the first table: the rally default, the
/// complexity ladder, and the bridge candidates (wideband SILK).
fn encoder_variants() -> Vec<EncoderSettings> {
    let full = EncoderSettings::default();
    let wide = EncoderSettings {
        bandwidth: Bandwidth::Wide,
        ..full
    };
    let mut variants: Vec<EncoderSettings> = [0u8, 3, 5, 7, 10]
        .iter()
        .map(|&complexity| EncoderSettings { complexity, ..full })
        .collect();
    variants.push(EncoderSettings {
        application: Application::Audio,
        ..full
    });
    variants.extend(
        [0u8, 1, 3, 5, 10]
            .iter()
            .map(|&complexity| EncoderSettings { complexity, ..wide }),
    );
    variants.push(EncoderSettings {
        inband_fec: false,
        ..BRIDGE_ENCODER
    });
    variants.push(BRIDGE_ENCODER);
    variants.push(EncoderSettings {
        bitrate_bps: 16_000,
        ..BRIDGE_ENCODER
    });
    variants.push(EncoderSettings {
        bandwidth: Bandwidth::Narrow,
        ..BRIDGE_ENCODER
    });
    variants
}

/// The room configuration before bridge encoders: every encoder fullband,
/// complexity 5 (what `RoomConfig` used for everything until issue 6).
fn rally_everywhere() -> RoomConfig {
    RoomConfig {
        bridge_encoder: RoomConfig::default().encoder,
        ..RoomConfig::default()
    }
}

fn main() {
    // `-- --only encode`, `tick`, `bridge`, `bridge-48k` or `bridge-before`: one table or row.
    let only = arg_after("--only");
    let frames = frames();
    if only.is_none() || only.as_deref() == Some("encode") {
        println!("Opus, 20 ms mono 48 kHz frames ({frames} frames each)");
        println!(
            "| complexity | band | application | kb/s | FEC | encode µs/frame | decode µs/frame | bytes/frame |"
        );
        println!("|---:|---|---|---:|---|---:|---:|---:|");
        // `-- --variant N`: row N alone (callgrind counts one encoder).
        let pick: Option<usize> = arg_after("--variant").and_then(|v| v.parse().ok());
        for (i, v) in encoder_variants().into_iter().enumerate() {
            if pick.is_some_and(|p| p != i) {
                continue;
            }
            let (e, d, b) = encode_row(v);
            println!(
                "| {} | {:?} | {:?} | {} | {} | {e:.1} | {d:.1} | {b} |",
                v.complexity,
                v.bandwidth,
                v.application,
                v.bitrate_bps / 1000,
                if v.inband_fec { "on" } else { "off" },
            );
        }
        println!();
    }
    if only.as_deref() == Some("encode") {
        return;
    }
    println!("Room tick (decode, mix, encode once per distinct mix); talkers send fullband");
    println!(
        "| config | mix rate | participants on stage | talking | listeners | µs per tick | % of one core |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    // (name, rate): "default" is the server's room config, at 48 kHz for a
    // rally and 16 kHz for a bridge (what the server does since issue 6).
    let rows = [
        ("default", MixRate::Full, 1, 1, 10_000),
        ("default", MixRate::Wide, 3, 3, 0),
        ("default", MixRate::Wide, 5, 3, 0),
        ("fullband c5 everywhere", MixRate::Full, 20, 3, 0),
        ("default", MixRate::Full, 20, 3, 0),
        ("default", MixRate::Wide, 20, 3, 0),
        ("default", MixRate::Wide, 50, 3, 0),
        ("default", MixRate::Wide, 100, 3, 0),
        ("default", MixRate::Wide, 200, 3, 0),
        ("default", MixRate::Wide, 20, 6, 0),
        ("default", MixRate::Full, 20, 3, 100),
    ];
    for (name, rate, talkers, talking, listeners) in rows {
        // `-- --only bridge` / `bridge-48k` / `bridge-before`: one
        // 20-person, 3-talker row (today's, at 48 kHz, before bridge encoders).
        let bridge_row = (talkers, talking, listeners) == (20, 3, 0);
        let default = name == "default";
        let skip = match only.as_deref() {
            Some("bridge") => !(bridge_row && default && rate == MixRate::Wide),
            Some("bridge-48k") => !(bridge_row && default && rate == MixRate::Full),
            Some("bridge-before") => !bridge_row || default,
            _ => false,
        };
        if skip {
            continue;
        }
        let config = if default {
            RoomConfig::default()
        } else {
            rally_everywhere()
        };
        let us = room_tick_row(config, rate, talkers, talking, listeners);
        println!(
            "| {name} | {} kHz | {talkers} | {talking} | {listeners} | {us:.0} | {:.2} |",
            rate.hz() / 1000,
            us / 20_000.0 * 100.0
        );
    }
}
