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
//!   retirement is taken as its `close_notify`, but nothing here can
//!   authenticate it (the keys stayed inside str0m's DTLS), so it only says
//!   goodbye: unless a verified consent check follows within
//!   [`GOODBYE_GRACE`], the session ends as `Left`. A live peer checks
//!   more often than that, so an alert forged from its address (or junk
//!   that looks like one) ends nothing. Any other DTLS record is dropped:
//!   garbage, or a peer that missed our final flight (kept for
//!   [`crate::session::RETIRE_GRACE`] against that), whose own handshake
//!   timer fails it so that it reconnects.
//! - A server-side close sends no `close_notify`: the client hears of it
//!   from the room's event socket, or when its consent checks go unanswered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::crypto::Sha1HmacProvider;
use str0m::ice::{StunMessage, TransId};

use crate::rtcp;
use crate::session::CloseReason;

/// A retired listener whose consent checks stop for this long is gone
/// (the same window str0m's ICE-lite agent allows, `is` crate's pair.rs).
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(15);

/// After what looks like the peer's `close_notify`, how long a verified
/// consent check has to arrive for the session to go on: more than RFC
/// 7675's interval between checks (5 s ± 20 %; browsers check every
/// 2.5 s), so a live peer always answers an alert it did not send.
pub const GOODBYE_GRACE: Duration = Duration::from_secs(8);

/// A retired listener's ICE consent: when the peer last proved it still
/// wants our audio, the answer we owe it, and whether it said goodbye.
#[derive(Debug)]
pub(crate) struct Consent {
    last_request: Instant,
    owed: Option<Answer>,
    /// When a DTLS alert came from the peer's address, if no verified
    /// request has come since.
    goodbye: Option<Instant>,
}

impl Consent {
    pub fn new(now: Instant) -> Self {
        Self {
            last_request: now,
            owed: None,
            goodbye: None,
        }
    }

    /// A binding request from `from` whose MESSAGE-INTEGRITY verified: the
    /// peer is here, whatever alert came before.
    pub fn requested(&mut self, now: Instant, trans_id: TransId, from: SocketAddr) {
        self.last_request = now;
        self.owed = Some(Answer { trans_id, to: from });
        self.goodbye = None;
    }

    /// A DTLS alert from the peer's address, unauthenticated.
    pub fn said_goodbye(&mut self, now: Instant) {
        self.goodbye.get_or_insert(now);
    }

    /// Whether the consent has ended by `now`, and why: `Left` (it said
    /// goodbye and went quiet) or `IceTimeout` (its checks stopped).
    pub fn ended(&self, now: Instant) -> Option<CloseReason> {
        let since = |t: Instant| now.saturating_duration_since(t);
        verdict(since(self.last_request), self.goodbye.map(since))
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

/// How a consent quiet for `quiet_for` (since its last verified request)
/// ends, if it does: a goodbye `goodbye_for` ago with nothing verified
/// since ends it after [`GOODBYE_GRACE`], silence after [`CONSENT_TIMEOUT`].
fn verdict(quiet_for: Duration, goodbye_for: Option<Duration>) -> Option<CloseReason> {
    if goodbye_for.is_some_and(|g| g >= GOODBYE_GRACE) {
        Some(CloseReason::Left)
    } else if quiet_for >= CONSENT_TIMEOUT {
        Some(CloseReason::IceTimeout)
    } else {
        None
    }
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
    /// SRTP: nothing a listener sends us is played.
    Rtp,
    /// SRTCP (RFC 5761 §4): the peer's receiver reports.
    Rtcp,
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
            d if rtcp::is_rtcp(d) => Self::Rtcp,
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
        let ms = Duration::from_millis;
        assert_eq!(verdict(Duration::ZERO, None), None);
        assert_eq!(verdict(CONSENT_TIMEOUT - ms(1), None), None);
        assert_eq!(
            verdict(CONSENT_TIMEOUT, None),
            Some(CloseReason::IceTimeout)
        );
    }

    #[test]
    fn a_goodbye_ends_consent_only_if_nothing_verified_follows_it() {
        let ms = Duration::from_millis;
        // Said goodbye, quiet since: left, after the grace and not before.
        assert_eq!(verdict(ms(3000), Some(GOODBYE_GRACE - ms(1))), None);
        assert_eq!(
            verdict(GOODBYE_GRACE, Some(GOODBYE_GRACE)),
            Some(CloseReason::Left)
        );
        // A goodbye is not needed to lapse.
        assert_eq!(
            verdict(CONSENT_TIMEOUT, Some(ms(1))),
            Some(CloseReason::IceTimeout)
        );
        // The grace is longer than the checks of a live peer (RFC 7675:
        // every 5 s ± 20 %), so one of them always lands inside it.
        assert!(GOODBYE_GRACE > ms(6000));
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
        assert_eq!(AfterRetirement::of(&[0x80, 200]), AfterRetirement::Rtcp);
        assert_eq!(AfterRetirement::of(&[0x81, 201]), AfterRetirement::Rtcp);
        assert_eq!(AfterRetirement::of(&[0x90, 111]), AfterRetirement::Rtp);
        // The marker bit set on payload type 111: RTP, not RTCP's 239.
        assert_eq!(AfterRetirement::of(&[0x80, 0xef]), AfterRetirement::Rtp);
        assert_eq!(AfterRetirement::of(&[]), AfterRetirement::Malformed);
        assert_eq!(AfterRetirement::of(&[255, 0]), AfterRetirement::Malformed);
    }
}
