//! RFC 2198 redundant audio (`audio/red`) for listeners who offer it.
//!
//! Each RED packet carries the previous program frame as a redundant block
//! before the current one, so a listener who loses one packet in two
//! recovers the frame from the next: on a random-loss link the loss the
//! decoder must conceal drops from p to about p². Opus in-band FEC does
//! something similar at a lower quality; RED repeats the frame itself. It
//! costs one extra frame of bandwidth, so the low-rate profile (for
//! bandwidth-starved phones) does not use it.
//!
//! The payload is the same for every listener with the same Opus payload
//! type (it is named inside the RED headers), so the engine builds it once
//! per distinct program packet and payload type, into a reused buffer.

/// The largest block RFC 2198's 10-bit length field can describe.
pub const MAX_BLOCK_LEN: usize = 1023;
/// The largest timestamp offset of its 14-bit field.
pub const MAX_TIMESTAMP_OFFSET: u32 = 0x3fff;
/// RED's overhead with one redundant block: a 4-byte and a 1-byte header.
pub const OVERHEAD: usize = 5;

/// Writes a RED payload into `out`: `redundant` (the frame `offset` samples
/// before) then `primary`, both Opus with payload type `opus_pt`. Returns
/// the length, or `None` when the redundant block does not fit RED's fields
/// or `out` is too small (then send `primary` as plain Opus).
pub fn encode(
    opus_pt: u8,
    redundant: &[u8],
    offset: u32,
    primary: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let len = OVERHEAD + redundant.len() + primary.len();
    if redundant.len() > MAX_BLOCK_LEN || offset > MAX_TIMESTAMP_OFFSET || out.len() < len {
        return None;
    }
    let pt = opus_pt & 0x7f;
    // F=1 | block PT, then 14 bits of timestamp offset and 10 of length.
    let fields = (offset << 10) | redundant.len() as u32;
    out[0] = 0x80 | pt;
    out[1..4].copy_from_slice(&fields.to_be_bytes()[1..]);
    // The primary's header: F=0 | PT.
    out[4] = pt;
    let data = &mut out[OVERHEAD..len];
    data[..redundant.len()].copy_from_slice(redundant);
    data[redundant.len()..].copy_from_slice(primary);
    Some(len)
}

#[cfg(test)]
mod tests {
    use str0m::rtp::RedDecoder;

    use super::*;

    /// An independent parser (str0m's) reads back both blocks.
    #[test]
    fn str0m_decodes_what_we_encode() {
        let (older, newer) = ([7u8; 80], [9u8; 95]);
        let mut out = [0u8; 256];
        let n = encode(111, &older, 960, &newer, &mut out).expect("fits");
        assert_eq!(n, 5 + 80 + 95);
        let blocks = RedDecoder::decode(&out[..n]).expect("valid RED");
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            (
                blocks[0].pt,
                blocks[0].timestamp_offset,
                blocks[0].is_primary
            ),
            (111, 960, false)
        );
        assert_eq!(blocks[0].payload, &older[..]);
        assert_eq!((blocks[1].pt, blocks[1].is_primary), (111, true));
        assert_eq!(blocks[1].payload, &newer[..]);
    }

    #[test]
    fn what_does_not_fit_is_refused() {
        let mut out = [0u8; 4096];
        assert_eq!(encode(111, &[0; 1024], 960, &[0; 10], &mut out), None);
        assert_eq!(encode(111, &[0; 10], 0x4000, &[0; 10], &mut out), None);
        assert_eq!(encode(111, &[0; 10], 960, &[0; 10], &mut out[..20]), None);
        assert_eq!(
            encode(111, &[0; 1023], 16383, &[0; 10], &mut out),
            Some(1038)
        );
    }
}
