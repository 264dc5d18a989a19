//! One WebRTC peer: a str0m `Rtc` in ICE-lite, RTP mode, plus what the engine
//! needs to route its packets and send it audio. A listener's `Rtc` is
//! retired once its handshake is over (see `consent`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arrayvec::ArrayString;
use smallvec::SmallVec;
use str0m::Rtc;
use str0m::config::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{Mid, Pt};

use crate::consent::Consent;
use crate::loss::ReportedLoss;
use crate::rtcp;
use crate::srtp::{ExportedKeys, KeySlot, SrtcpError, SrtcpReceiver, SrtpError, SrtpSender};
use crate::{RoomIdx, SessionKind};

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client asked (HTTP DELETE).
    Left,
    /// The room was deleted or ended.
    RoomClosed,
    /// ICE consent expired: the client went away without saying so.
    IceTimeout,
    /// ICE/DTLS never completed after the answer.
    ConnectTimeout,
    /// The WebRTC stack failed (e.g. DTLS handshake error).
    Failed,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Left => "left",
            CloseReason::RoomClosed => "room_closed",
            CloseReason::IceTimeout => "ice_timeout",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::Failed => "failed",
        }
    }
}

/// What one session sent and received, for attendance records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// Datagrams from the peer (STUN, DTLS, RTP, RTCP).
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Datagrams to the peer, audio included.
    pub packets_out: u64,
    pub bytes_out: u64,
}

impl Traffic {
    pub fn received(&mut self, bytes: usize) {
        self.packets_in += 1;
        self.bytes_in += bytes as u64;
    }

    pub fn sent(&mut self, bytes: usize) {
        self.packets_out += 1;
        self.bytes_out += bytes as u64;
    }
}

/// The negotiated audio m-line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AudioLine {
    pub mid: Mid,
    /// Opus payload type, as numbered by the client.
    pub pt: Pt,
    /// RFC 2198 RED's payload type, when both sides negotiated it.
    pub red: Option<Pt>,
}

/// How long after connecting a listener whose peer has sent no SRTP or
/// SRTCP keeps its `Rtc`, counted from the last DTLS datagram it got: as
/// DTLS server we send the handshake's final flight, and if that is lost
/// the peer retransmits its own (after 1 s, then 2 s, …), which only the
/// `Rtc` can answer. A peer that sends SRTP or SRTCP has all our flights.
pub const RETIRE_GRACE: Duration = Duration::from_secs(5);

/// The WebRTC stack behind a session.
pub(crate) enum Stack {
    /// str0m does ICE, DTLS, RTCP and the peer's SRTP. Boxed, so that a
    /// retired session gives back all of it.
    Full(Box<Rtc>),
    /// A listener after its handshake: we answer consent checks, and
    /// `srtp` does the audio (see `consent`).
    Retired(Consent),
}

/// An ICE ufrag or password of ours, kept inline: str0m makes them 16 and
/// 22 characters long.
pub(crate) type IceText = ArrayString<32>;

/// Addresses a session is routed from: one, or a few if its path changes.
pub(crate) type Sources = SmallVec<[SocketAddr; 2]>;

/// Everything here is inline or dies with the `Rtc` (`keys` is dropped on
/// retirement) but the two ciphers, which are made at retirement at the
/// latest, after the handshake's allocations: a connected listener keeps no
/// small heap allocation of its own, made amid its handshake's, that would
/// pin the pages the handshake used (docs/benchmarks.md, "Where a
/// listener's memory goes").
pub(crate) struct Session {
    pub kind: SessionKind,
    pub room: RoomIdx,
    pub stack: Stack,
    pub ufrag: IceText,
    /// ICE password: verifies STUN requests before their address is trusted.
    pub ice_pass: IceText,
    pub created: Instant,
    pub audio: Option<AudioLine>,
    /// When str0m said connected.
    connected_at: Option<Instant>,
    /// The last DTLS datagram from the peer.
    last_dtls_in: Option<Instant>,
    /// SRTP or SRTCP came from the peer after connecting: it has our keys,
    /// so our final DTLS flight arrived.
    peer_has_keys: bool,
    /// Where the DTLS-SRTP keys of this session arrive; `None` once retired.
    keys: Option<KeySlot>,
    /// Our outgoing audio, built and protected by us (see `srtp`); made on
    /// the first send after the keys arrived.
    sender: Option<SrtpSender>,
    /// Sequence number of the first audio packet (random, below 2^15).
    first_seq: u16,
    /// Reads the peer's SRTCP for its loss reports; made with the first
    /// SRTCP after the sender, or at retirement.
    srtcp: Option<SrtcpReceiver>,
    /// The loss the peer reports about our audio.
    reported_loss: ReportedLoss,
    /// Where str0m sends this peer's DTLS and RTCP: the nominated candidate
    /// pair's remote address, so also where audio goes.
    pub media_destination: Option<SocketAddr>,
    /// The deadline str0m last asked for; a timer-heap entry is live only
    /// while it matches.
    pub deadline: Option<Instant>,
    /// In the engine's ready queue.
    pub queued: bool,
    pub closing: Option<CloseReason>,
    /// Source addresses routed to this session.
    pub addrs: Sources,
    pub traffic: Traffic,
}

impl Session {
    pub fn new(
        kind: SessionKind,
        room: RoomIdx,
        rtc: Rtc,
        (ufrag, ice_pass): (IceText, IceText),
        keys: KeySlot,
        now: Instant,
        first_seq: u16,
    ) -> Self {
        Self {
            kind,
            room,
            stack: Stack::Full(Box::new(rtc)),
            ufrag,
            ice_pass,
            created: now,
            audio: None,
            connected_at: None,
            last_dtls_in: None,
            peer_has_keys: false,
            keys: Some(keys),
            sender: None,
            first_seq,
            srtcp: None,
            reported_loss: ReportedLoss::default(),
            media_destination: None,
            deadline: None,
            queued: false,
            closing: None,
            addrs: Sources::new(),
            traffic: Traffic::default(),
        }
    }

    /// The exported DTLS-SRTP keys, once the handshake made them and until
    /// the session is retired.
    fn keys(&self) -> Option<&ExportedKeys> {
        self.keys.as_ref()?.get()
    }

    /// The str0m `Rtc`, until the session is retired.
    pub fn rtc(&mut self) -> Option<&mut Rtc> {
        match &mut self.stack {
            Stack::Full(rtc) => Some(rtc),
            Stack::Retired(_) => None,
        }
    }

    pub fn is_retired(&self) -> bool {
        matches!(self.stack, Stack::Retired(_))
    }

    pub fn set_connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    pub fn connected(&self) -> bool {
        self.connected_at.is_some()
    }

    /// Notes what a datagram from the peer tells about its handshake.
    pub fn saw_datagram(&mut self, now: Instant, first_byte: u8) {
        match first_byte {
            20..=63 => self.last_dtls_in = Some(now),
            128..=191 if self.connected() => self.peer_has_keys = true,
            _ => {}
        }
    }

    /// Retires a listener's `Rtc` once nothing of the handshake can still be
    /// asked of it (see [`RETIRE_GRACE`]), making its audio sender first.
    /// `true` if it was retired now.
    pub fn try_retire(&mut self, now: Instant, crypto: &CryptoProvider) -> bool {
        let (SessionKind::Listen, None, Some(connected_at), Some(keys)) =
            (self.kind, self.closing, self.connected_at, self.keys())
        else {
            return false;
        };
        if self.is_retired() {
            return false;
        }
        let quiet_since = self
            .last_dtls_in
            .map_or(connected_at, |t| t.max(connected_at));
        let handshake_over = keys.we_were_client()
            || self.peer_has_keys
            || now.saturating_duration_since(quiet_since) >= RETIRE_GRACE;
        if !handshake_over {
            return false;
        }
        if self.sender.is_none() {
            match self.new_sender(crypto) {
                Ok(Some(sender)) => self.sender = Some(sender),
                // No send stream yet, or keys we cannot use: keep str0m.
                Ok(None) | Err(_) => return false,
            }
        }
        // The keys go now; without a receiver its reports go unread.
        self.make_srtcp_receiver(crypto);
        self.stack = Stack::Retired(Consent::new(now));
        self.keys = None;
        true
    }

    /// Records the audio m-line once str0m reports it, with the client's Opus PT.
    pub fn resolve_audio(&mut self, mid: Mid) {
        let Some(rtc) = self.rtc() else {
            return;
        };
        let Some(media) = rtc.media(mid) else {
            return;
        };
        let remote = media.remote_pts();
        let offered = |pt: &Pt| remote.is_empty() || remote.contains(pt);
        let opus = rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == Codec::Opus && offered(&p.pt()))
            // str0m keeps RED on the Opus parameters only when both sides had it.
            .map(|p| (p.pt(), p.red()));
        if let (Some((pt, red)), None) = (opus, self.audio) {
            self.audio = Some(AudioLine { mid, pt, red });
        }
    }

    /// Whether this peer can be sent audio now.
    pub fn takes_audio(&self) -> bool {
        self.connected() && self.closing.is_none() && self.audio.is_some()
    }

    /// The Opus and (if negotiated) RED payload types of our audio.
    pub fn payload_types(&self) -> Option<(u8, Option<u8>)> {
        self.audio.map(|a| (*a.pt, a.red.map(|red| *red)))
    }

    /// Writes one SRTP packet carrying `payload` (of payload type `pt`)
    /// into `out`, with no allocation once the sender exists; returns where
    /// it goes and its length. `Ok(None)` when this peer cannot take audio
    /// (yet).
    pub fn write_audio(
        &mut self,
        crypto: &CryptoProvider,
        pt: u8,
        rtp_time: u32,
        samples: u32,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<Option<(SocketAddr, usize)>, SrtpError> {
        let (true, Some(destination)) = (self.takes_audio(), self.media_destination) else {
            return Ok(None);
        };
        if self.sender.is_none() {
            self.sender = self.new_sender(crypto)?;
        }
        let Some(sender) = self.sender.as_mut() else {
            return Ok(None);
        };
        let len = sender.write(pt, rtp_time, samples, payload, out)?;
        Ok(Some((destination, len)))
    }

    /// Reads the loss the peer reports about our audio out of one SRTCP
    /// datagram, decrypted into `scratch` (see [`SrtcpReceiver::unprotect`]);
    /// `true` if it had a report about our stream. Nothing is read before
    /// we send: there is nothing to report on.
    pub fn read_rtcp(
        &mut self,
        now: Instant,
        crypto: &CryptoProvider,
        datagram: &[u8],
        scratch: &mut [u8],
    ) -> Result<bool, SrtcpError> {
        let Some(ssrc) = self.sender.as_ref().map(SrtpSender::ssrc) else {
            return Ok(false);
        };
        self.make_srtcp_receiver(crypto);
        let Some(receiver) = self.srtcp.as_mut() else {
            return Ok(false);
        };
        let plain = receiver.unprotect(datagram, scratch)?;
        let fraction = rtcp::fraction_lost(plain, ssrc);
        if let Some(fraction) = fraction {
            self.reported_loss.report(now, fraction);
        }
        Ok(fraction.is_some())
    }

    /// Makes the SRTCP receiver from the keys, once, while there are keys.
    fn make_srtcp_receiver(&mut self, crypto: &CryptoProvider) {
        if self.srtcp.is_none() {
            self.srtcp = self.keys().and_then(|k| SrtcpReceiver::new(crypto, k).ok());
        }
    }

    /// The loss (percent) to plan this peer's audio for (see `loss`).
    pub fn planned_loss(&self) -> u8 {
        self.reported_loss.pct()
    }

    /// The sender, once DTLS has exported keys and str0m has made the send
    /// stream (its SSRC is in our answer).
    fn new_sender(&mut self, crypto: &CryptoProvider) -> Result<Option<SrtpSender>, SrtpError> {
        let (Some(line), Stack::Full(rtc)) = (self.audio, &mut self.stack) else {
            return Ok(None);
        };
        let Some(ssrc) = rtc
            .direct_api()
            .stream_tx_by_mid(line.mid, None)
            .map(|tx| *tx.ssrc())
        else {
            return Ok(None);
        };
        let Some(keys) = self.keys() else {
            return Ok(None);
        };
        SrtpSender::new(crypto, keys, ssrc, self.first_seq).map(Some)
    }

    pub fn is_talker(&self) -> bool {
        matches!(self.kind, SessionKind::Publish | SessionKind::Join)
    }
}
