//! Not a test: the generator of the fuzz targets' seed corpora
//! (fuzz/corpus/, docs/fuzzing.md). Ignored by default; `scripts/fuzz-seeds`
//! runs it with `SABHA_FUZZ_SEEDS=<dir>`.
//!
//! It records what str0m clients really send: their SDP offers (every
//! direction, with and without RED) and the datagrams the engine receives in
//! a simulated bridge (STUN, the DTLS handshake, SRTP and SRTCP), and Opus
//! packets as talkers send them, so the
//! fuzzers start from inputs that get past the first byte checks.

mod sim;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sabha_media::SessionKind;
use sabha_media::opus::{
    EncoderSettings, FRAME_SAMPLES, Frame, MAX_PACKET, OpusEncoder, SAMPLE_RATE,
};
use sim::Sim;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

static RECEIVED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// How many datagrams of each class (by first byte, RFC 7983) to keep.
const PER_CLASS: usize = 12;
/// The udp_datagram target's sources (four clients and a stranger).
const UDP_SOURCES: usize = 5;

#[test]
#[ignore = "generator, run by scripts/fuzz-seeds"]
fn record_fuzz_seeds() {
    let dir = PathBuf::from(
        std::env::var_os("SABHA_FUZZ_SEEDS").expect("SABHA_FUZZ_SEEDS=<corpus dir> is set"),
    );
    record_offers(&dir.join("sdp_offer"));
    record_datagrams(&dir.join("udp_datagram"));
    record_opus(&dir.join("rtp_payload"));
}

/// Opus packets as talkers send them (20 ms, FEC on), at two rates: the
/// recorded SRTP's payloads are encrypted, so these are encoded here.
fn record_opus(dir: &Path) {
    for (name, bitrate_bps) in [("opus-32k", 32_000), ("opus-12k", 12_000)] {
        let settings = EncoderSettings {
            bitrate_bps,
            ..EncoderSettings::default()
        };
        let mut encoder = OpusEncoder::new(settings).expect("encoder");
        let mut out = [0u8; MAX_PACKET];
        for n in 0..3 {
            let frame: Frame = std::array::from_fn(|i| {
                let t = (n * FRAME_SAMPLES + i) as f32 / SAMPLE_RATE as f32;
                (8_000.0 * (std::f32::consts::TAU * 440.0 * t).sin()) as i16
            });
            let len = encoder.encode(&frame, &mut out).expect("encoded");
            write(dir, &format!("{name}-{n}"), &out[..len]);
        }
    }
}

fn record_offers(dir: &Path) {
    // The origin of the offers' time; nothing here depends on it.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let directions = [
        ("sendonly", Direction::SendOnly),
        ("recvonly", Direction::RecvOnly),
        ("sendrecv", Direction::SendRecv),
    ];
    for (name, direction) in directions {
        for red in [false, true] {
            let mut rtc = Rtc::builder().enable_opus(true, red).build(now);
            let addr = "127.0.0.1:40000".parse().expect("address");
            rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
            let mut change = rtc.sdp_api();
            change.add_media(MediaKind::Audio, direction, None, None, None);
            let (offer, _pending) = change.apply().expect("offer");
            let file = format!("str0m-{name}{}.sdp", if red { "-red" } else { "" });
            write(dir, &file, offer.to_sdp_string().as_bytes());
        }
    }
}

fn record_datagrams(dir: &Path) {
    let mut sim = Sim::new(7);
    sim.engine_received = |bytes| {
        RECEIVED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(bytes.to_vec());
    };
    sim.join_with_tone("seed", SessionKind::Join, 440.0);
    sim.join_with_tone("seed", SessionKind::Publish, 660.0);
    sim.join("seed", SessionKind::Listen);
    sim.run_for(Duration::from_secs(8));
    let received = std::mem::take(&mut *RECEIVED.lock().unwrap_or_else(|e| e.into_inner()));
    let mut counts = [0usize; 4];
    for bytes in received {
        let class = match bytes.first() {
            Some(0..=3) => 0,   // STUN
            Some(20..=63) => 1, // DTLS
            Some(128..=191) if is_rtcp(&bytes) => 3,
            Some(128..=191) => 2, // RTP
            _ => continue,
        };
        if counts[class] < PER_CLASS {
            let name = ["stun", "dtls", "rtp", "rtcp"][class];
            // The target's input is a source selector (which of its
            // addresses the datagram comes from), then the datagram: taken
            // in turn, so each source gets every class.
            let selector = (counts[class] % UDP_SOURCES) as u8;
            let seed = [&[selector][..], &bytes].concat();
            write(dir, &format!("{name}-{:02}", counts[class]), &seed);
            counts[class] += 1;
        }
    }
    assert!(
        counts.iter().all(|&n| n > 0),
        "every class was seen: {counts:?}"
    );
}

/// RTCP packet types 192..=223 in the second byte (RFC 5761).
fn is_rtcp(bytes: &[u8]) -> bool {
    bytes.get(1).is_some_and(|pt| (192..=223).contains(pt))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}
