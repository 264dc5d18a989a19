//! A talker's RTP payload as the room's tick handles it: decoded as 20 ms
//! Opus, used for in-band FEC, decoded at any duration (pure-Rust libopus
//! port, so a panic there is a panic in our process), then carried as
//! RFC 2198 RED next to another frame. Invariants: no panic, the decoder
//! writes no more than it was given room for, and str0m's RED parser reads
//! back exactly the two blocks we encoded. The same bytes are also read as
//! the plain compound RTCP of an authenticated SRTCP packet, for the loss
//! a report block says, and as an Opus packet asked whether it carries FEC.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use sabha_media::opus::{FRAME_SAMPLES, OpusDecoder};
use sabha_media::{opus, red, rtcp};
use str0m::rtp::RedDecoder;

/// 120 ms at 48 kHz: the longest Opus packet.
const ANY_SAMPLES: usize = 5760;

thread_local! {
    static DECODER: RefCell<OpusDecoder> = RefCell::new(OpusDecoder::new().expect("decoder"));
}

fuzz_target!(|data: &[u8]| {
    let ssrc = data
        .get(8..12)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let _ = rtcp::fraction_lost(data, ssrc);
    let _ = opus::carries_fec(data);
    DECODER.with_borrow_mut(|decoder| {
        let mut frame = [0i16; FRAME_SAMPLES];
        let _ = decoder.decode(data, &mut frame);
        let _ = decoder.decode_fec(data, &mut frame);
        let _ = decoder.conceal(&mut frame);
        let mut any = vec![0i16; ANY_SAMPLES];
        if let Ok(n) = decoder.decode_any(data, &mut any) {
            assert!(n <= ANY_SAMPLES);
        }
    });
    // The first byte is the payload type and where to split redundant from
    // primary; the rest the two payloads.
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(head) * rest.len() / 255;
    let (redundant, primary) = rest.split_at(split);
    let mut out = [0u8; 1500];
    if let Some(len) = red::encode(head, redundant, 960, primary, &mut out) {
        assert_eq!(len, red::OVERHEAD + redundant.len() + primary.len());
        // An independent parser (str0m's) reads both blocks back.
        let blocks = RedDecoder::decode(&out[..len]).expect("our RED parses");
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            (blocks[0].payload, blocks[0].timestamp_offset),
            (redundant, 960)
        );
        assert_eq!((blocks[1].payload, blocks[1].is_primary), (primary, true));
        assert!(blocks.iter().all(|b| b.pt == head & 0x7f));
    }
});
