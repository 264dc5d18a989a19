//! `cargo bench -p sabha-media --bench srtp`: the fan-out send path's cost
//! for one ~100-byte audio packet — RTP header, encryption and tag written
//! into a reused buffer (`srtp::SrtpSender::write`) — for each SRTP profile
//! str0m negotiates. AEAD_AES_256_GCM is what a DTLS 1.2 handshake picks
//! whenever the client offers it (browsers do; docs/media.md).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabha_media::DATAGRAM_MAX;
use sabha_media::srtp::{ExportedKeys, SrtpSender};
use str0m::crypto::dtls::SrtpProfile;

/// A 32 kb/s Opus frame is 80 bytes; speech with RED is ~150.
const PAYLOAD: usize = 100;

fn protect(c: &mut Criterion) {
    let crypto = str0m::crypto::from_feature_flags();
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 31) as u8).collect();
    let mut group = c.benchmark_group("srtp_protect_100B");
    group.throughput(Throughput::Elements(1));
    for (name, profile, key, salt) in [
        ("AEAD_AES_128_GCM", SrtpProfile::AEAD_AES_128_GCM, 16, 12),
        ("AEAD_AES_256_GCM", SrtpProfile::AEAD_AES_256_GCM, 32, 12),
        ("AES128_CM_SHA1_80", SrtpProfile::AES128_CM_SHA1_80, 16, 14),
    ] {
        let material = (0..2 * (key + salt)).map(|i| i as u8).collect();
        let keys = ExportedKeys::new(material, profile, false);
        let mut sender = SrtpSender::new(&crypto, &keys, 0x1234_5678, 1).expect("sender");
        let mut out = [0u8; DATAGRAM_MAX];
        let mut rtp_time = 0u32;
        group.bench_function(name, |b| {
            b.iter(|| {
                rtp_time = rtp_time.wrapping_add(960);
                let len = sender
                    .write(111, rtp_time, 960, black_box(&payload), &mut out)
                    .expect("protect");
                black_box(&out[..len]);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, protect);
criterion_main!(benches);
