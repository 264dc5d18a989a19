//! What a receiver's RTCP says about our stream: the loss it reports.
//!
//! Receivers send a report block about every stream they get, in a sender
//! report (SR, RFC 3550 §6.4.1) when they send too, else in a receiver
//! report (RR, §6.4.2); its *fraction lost* is the share of our packets
//! they missed since their previous report, in 256ths. The engine reads it
//! to tune the in-band FEC of the mix that receiver hears (`loss`). Nothing
//! else in a compound packet is looked at, and anything malformed ends the
//! walk with what was found so far: this never fails, it only finds less.

/// RTCP, not RTP, by RFC 5761 §4's payload-type ranges (the first byte
/// 128..=191 being RTP or RTCP, RFC 7983).
pub(crate) fn is_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram, [128..=191, 192..=223, ..])
}

/// RTCP packet types that carry report blocks.
const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
/// Common header: V/P/RC, PT, length.
const HEADER_LEN: usize = 4;
/// Sender info of an SR, after the sender's SSRC.
const SENDER_INFO_LEN: usize = 20;
const REPORT_BLOCK_LEN: usize = 24;

/// The fraction lost (0..=255, in 256ths) the newest report block about
/// `ssrc` in a plain (decrypted) compound RTCP packet says, if any.
pub fn fraction_lost(compound: &[u8], ssrc: u32) -> Option<u8> {
    let mut found = None;
    let mut rest = compound;
    while rest.len() >= HEADER_LEN {
        let (first, pt) = (rest[0], rest[1]);
        if first >> 6 != 2 {
            break;
        }
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        let Some(packet) = rest.get(..len) else {
            break;
        };
        rest = &rest[len..];
        let blocks_at = match pt {
            PT_SR => HEADER_LEN + 4 + SENDER_INFO_LEN,
            PT_RR => HEADER_LEN + 4,
            _ => continue,
        };
        let count = usize::from(first & 0x1f);
        let blocks = packet.get(blocks_at..).unwrap_or_default();
        for block in blocks.chunks_exact(REPORT_BLOCK_LEN).take(count) {
            if u32::from_be_bytes([block[0], block[1], block[2], block[3]]) == ssrc {
                found = Some(block[4]);
            }
        }
    }
    found
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A report block about `ssrc` with `fraction` lost.
    fn block(ssrc: u32, fraction: u8) -> Vec<u8> {
        let mut b = ssrc.to_be_bytes().to_vec();
        b.push(fraction);
        b.extend_from_slice(&[0, 0, 3]); // cumulative lost
        b.extend_from_slice(&[0; 16]); // highest seq, jitter, LSR, DLSR
        b
    }

    fn packet(pt: u8, blocks: &[Vec<u8>], sender_info: bool) -> Vec<u8> {
        let mut body = 0xdead_beefu32.to_be_bytes().to_vec(); // the reporter
        if sender_info {
            body.extend_from_slice(&[7; SENDER_INFO_LEN]);
        }
        for b in blocks {
            body.extend_from_slice(b);
        }
        let words = (HEADER_LEN + body.len()) / 4 - 1;
        let mut p = vec![0x80 | blocks.len() as u8, pt];
        p.extend_from_slice(&(words as u16).to_be_bytes());
        p.extend_from_slice(&body);
        p
    }

    /// A receiver report about `ssrc`, as a browser sends it.
    pub(crate) fn receiver_report(ssrc: u32, fraction: u8) -> Vec<u8> {
        packet(PT_RR, &[block(ssrc, fraction)], false)
    }

    #[test]
    fn a_receiver_report_gives_the_loss_of_our_stream_only() {
        let rr = packet(PT_RR, &[block(1, 9), block(2, 51)], false);
        assert_eq!(fraction_lost(&rr, 2), Some(51));
        assert_eq!(fraction_lost(&rr, 1), Some(9));
        assert_eq!(fraction_lost(&rr, 3), None);
    }

    #[test]
    fn a_sender_report_and_a_compound_are_read_past_other_packets() {
        // SDES first, then an SR whose block is about us, as libwebrtc sends.
        let mut compound = vec![0x81, 202, 0, 2, 0, 0, 0, 1, 1, 2, 0, 0];
        compound.extend(packet(PT_SR, &[block(5, 26)], true));
        assert_eq!(fraction_lost(&compound, 5), Some(26));
    }

    #[test]
    fn malformed_packets_find_nothing_and_do_not_panic() {
        let rr = receiver_report(5, 26);
        for cut in 0..rr.len() {
            assert_eq!(fraction_lost(&rr[..cut], 5), None, "cut at {cut}");
        }
        let mut lying = rr.clone();
        lying[0] = 0x80 | 31; // claims 31 blocks, has one
        assert_eq!(fraction_lost(&lying, 5), Some(26));
        let mut huge = rr.clone();
        huge[2..4].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(fraction_lost(&huge, 5), None);
        let mut version = rr;
        version[0] = 0x40 | 1;
        assert_eq!(fraction_lost(&version, 5), None);
        assert_eq!(fraction_lost(&[], 5), None);
    }
}
