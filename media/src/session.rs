//! One WebRTC peer: a str0m `Rtc` in ICE-lite, RTP mode, plus what the engine
//! needs to route its packets and send it audio.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::config::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{Mid, Pt};
use str0m::{IceCreds, Rtc};

use crate::srtp::{KeySlot, SrtpError, SrtpSender};
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

pub(crate) struct Session {
    pub kind: SessionKind,
    pub room: RoomIdx,
    pub rtc: Rtc,
    pub ufrag: String,
    /// ICE password: verifies STUN requests before their address is trusted.
    pub ice_pass: String,
    pub created: Instant,
    pub audio: Option<AudioLine>,
    pub connected: bool,
    /// Where the DTLS-SRTP keys of this session arrive.
    keys: KeySlot,
    /// Our outgoing audio, built and protected by us (see `srtp`); made on
    /// the first send after the keys arrived.
    sender: Option<SrtpSender>,
    /// Sequence number of the first audio packet (random, below 2^15).
    first_seq: u16,
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
    pub addrs: Vec<SocketAddr>,
    pub traffic: Traffic,
}

impl Session {
    pub fn new(
        kind: SessionKind,
        room: RoomIdx,
        rtc: Rtc,
        creds: IceCreds,
        keys: KeySlot,
        now: Instant,
        first_seq: u16,
    ) -> Self {
        Self {
            kind,
            room,
            rtc,
            ufrag: creds.ufrag,
            ice_pass: creds.pass,
            created: now,
            audio: None,
            connected: false,
            keys,
            sender: None,
            first_seq,
            media_destination: None,
            deadline: None,
            queued: false,
            closing: None,
            addrs: Vec::new(),
            traffic: Traffic::default(),
        }
    }

    /// Records the audio m-line once str0m reports it, with the client's Opus PT.
    pub fn resolve_audio(&mut self, mid: Mid) {
        let Some(media) = self.rtc.media(mid) else {
            return;
        };
        let remote = media.remote_pts();
        let offered = |pt: &Pt| remote.is_empty() || remote.contains(pt);
        let opus = self
            .rtc
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
        self.connected && self.closing.is_none() && self.audio.is_some()
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

    /// The sender, once DTLS has exported keys and str0m has made the send
    /// stream (its SSRC is in our answer).
    fn new_sender(&mut self, crypto: &CryptoProvider) -> Result<Option<SrtpSender>, SrtpError> {
        let (Some(keys), Some(line)) = (self.keys.get(), self.audio) else {
            return Ok(None);
        };
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(line.mid, None) else {
            return Ok(None);
        };
        let ssrc = *tx.ssrc();
        SrtpSender::new(crypto, keys, ssrc, self.first_seq).map(Some)
    }

    pub fn is_talker(&self) -> bool {
        matches!(self.kind, SessionKind::Publish | SessionKind::Join)
    }
}
