//! What a listener still needs once its handshake is over: ICE consent.
//!
//! A WHEP listener's str0m `Rtc` costs about 55 KB (docs/benchmarks.md,
//! "Where a listener's memory goes") and wakes on its own timers, yet after
//! DTLS has exported the SRTP keys the listener's audio is built and
//! protected by [`crate::srtp`] alone. What the peer still expects from us
//! is an answer to its consent checks (RFC 7675: a STUN binding request
//! every few seconds, which it must see answered or it stops listening).
//! So the engine *retires* the `Rtc` of a listener whose handshake is done
//! (`Session::try_retire`) and keeps this instead: a few dozen bytes,
//! no timer, the same as a SIP phone leg will need.
//!
//! What a retired listener does not do any more, by design:
//! - RTCP: reports from the peer are counted and dropped; we send no sender
//!   reports (str0m's carried zero counts for the streams we write anyway).
//! - DTLS: an encrypted alert (epoch ≥ 1) from the peer's address after
//!   retirement is taken as its `close_notify` and ends the session as
//!   `Left`, unauthenticated (its keys stay inside str0m's DTLS): someone
//!   who can send from the listener's exact address and port can hang it
//!   up. Any other DTLS record is dropped: garbage, or a peer that missed
//!   our final flight (kept for [`crate::session::RETIRE_GRACE`] against
//!   that), whose own handshake timer fails it so that it reconnects.
//! - A server-side close sends no `close_notify`: the client hears of it
//!   from the room's event socket, or when its consent checks go unanswered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::crypto::Sha1HmacProvider;
use str0m::ice::{StunMessage, TransId};

/// A retired listener whose consent checks stop for this long is gone
/// (the same window str0m's ICE-lite agent allows, `is` crate's pair.rs).
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(15);

/// A retired listener's ICE consent: when the peer last proved it still
/// wants our audio, and the answer we owe it.
#[derive(Debug)]
pub(crate) struct Consent {
    last_request: Instant,
    owed: Option<Answer>,
}

impl Consent {
    pub fn new(now: Instant) -> Self {
        Self {
            last_request: now,
            owed: None,
        }
    }

    /// A binding request from `from` whose MESSAGE-INTEGRITY verified.
    pub fn requested(&mut self, now: Instant, trans_id: TransId, from: SocketAddr) {
        self.last_request = now;
        self.owed = Some(Answer { trans_id, to: from });
    }

    pub fn expired(&self, now: Instant) -> bool {
        lapsed(now.saturating_duration_since(self.last_request))
    }

    /// Writes the owed answer, if any, into `buf`: where it goes and its
    /// length. Each request is answered once.
    pub fn take_reply(
        &mut self,
        password: &str,
        hmac: &dyn Sha1HmacProvider,
        buf: &mut [u8],
    ) -> Option<(SocketAddr, usize)> {
        self.owed.take()?.write(password, hmac, buf)
    }
}

/// Whether consent has lapsed after this long without a verified request.
fn lapsed(quiet_for: Duration) -> bool {
    quiet_for >= CONSENT_TIMEOUT
}

/// The binding success owed for a verified request: its transaction and
/// where it came from (the XOR-MAPPED-ADDRESS of the answer).
#[derive(Debug, Clone, Copy)]
struct Answer {
    trans_id: TransId,
    to: SocketAddr,
}

impl Answer {
    /// Writes the answer into `buf`, signed with our ICE `password` and
    /// with FINGERPRINT; consumed, so it goes out once.
    fn write(
        self,
        password: &str,
        hmac: &dyn Sha1HmacProvider,
        buf: &mut [u8],
    ) -> Option<(SocketAddr, usize)> {
        let reply = StunMessage::binding_reply(self.trans_id, self.to);
        let len = reply
            .to_bytes(Some(password.as_bytes()), buf, |key, parts| {
                hmac.sha1_hmac(key, parts)
            })
            .ok()?;
        Some((self.to, len))
    }
}

/// What a datagram from a retired listener's address is (RFC 7983's
/// first-byte ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterRetirement {
    /// STUN: verified binding requests were recognised while routing; any
    /// other STUN (an indication, a response) needs nothing from us.
    Stun,
    /// A DTLS alert under the handshake's keys (epoch ≥ 1): the peer's
    /// `close_notify`, the only alert a live peer sends.
    DtlsAlert,
    /// Any other DTLS record: the peer is still handshaking.
    DtlsOther,
    /// SRTP or SRTCP: the peer's receiver reports, nothing we act on.
    Rtp,
    Malformed,
}

/// DTLS record header: type (1), version (2), epoch (2), sequence (6), length (2).
const DTLS_HEADER_LEN: usize = 13;
const DTLS_ALERT: u8 = 21;

impl AfterRetirement {
    pub fn of(datagram: &[u8]) -> Self {
        match datagram {
            [0..=3, ..] => Self::Stun,
            [DTLS_ALERT, _, _, e0, e1, ..]
                if datagram.len() >= DTLS_HEADER_LEN && u16::from_be_bytes([*e0, *e1]) >= 1 =>
            {
                Self::DtlsAlert
            }
            [20..=63, ..] => Self::DtlsOther,
            [128..=191, ..] => Self::Rtp,
            _ => Self::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac() -> &'static dyn Sha1HmacProvider {
        str0m::crypto::from_feature_flags().sha1_hmac_provider
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:40000".parse().expect("addr")
    }

    #[test]
    fn the_answer_is_a_signed_binding_success_to_the_asker() {
        let mut buf = [0u8; 256];
        let id = TransId::new();
        let answer = Answer {
            trans_id: id,
            to: addr(),
        };
        let (to, len) = answer.write("pass", hmac(), &mut buf).expect("fits");
        assert_eq!(to, addr());
        let msg = StunMessage::parse(&buf[..len]).expect("parses");
        assert!(msg.is_successful_binding_response());
        assert_eq!(msg.trans_id(), id);
        assert_eq!(msg.mapped_address(), Some(addr()));
        let verify = |key: &[u8], parts: &[&[u8]]| hmac().sha1_hmac(key, parts);
        assert!(msg.verify(b"pass", verify));
        assert!(!msg.verify(b"other", verify));
    }

    /// Refreshing by a request is heard end to end in
    /// `media/tests/retired_listener_simulation.rs` (no close in 50 s).
    #[test]
    fn consent_lapses_at_the_timeout_and_not_before() {
        assert!(!lapsed(Duration::ZERO));
        assert!(!lapsed(CONSENT_TIMEOUT - Duration::from_millis(1)));
        assert!(lapsed(CONSENT_TIMEOUT));
    }

    #[test]
    fn datagrams_are_told_apart_by_their_first_byte() {
        let mut alert = [0u8; 39];
        alert[..5].copy_from_slice(&[21, 0xfe, 0xfd, 0, 1]);
        assert_eq!(AfterRetirement::of(&alert), AfterRetirement::DtlsAlert);
        // An epoch-0 (unencrypted) alert is not a close_notify of this session.
        alert[4] = 0;
        assert_eq!(AfterRetirement::of(&alert), AfterRetirement::DtlsOther);
        assert_eq!(AfterRetirement::of(&[21, 0xfe]), AfterRetirement::DtlsOther);
        assert_eq!(AfterRetirement::of(&[22; 40]), AfterRetirement::DtlsOther);
        assert_eq!(AfterRetirement::of(&[0, 1, 0, 0]), AfterRetirement::Stun);
        assert_eq!(AfterRetirement::of(&[0x80, 200]), AfterRetirement::Rtp);
        assert_eq!(AfterRetirement::of(&[0x90, 111]), AfterRetirement::Rtp);
        assert_eq!(AfterRetirement::of(&[]), AfterRetirement::Malformed);
        assert_eq!(AfterRetirement::of(&[255, 0]), AfterRetirement::Malformed);
    }
}
