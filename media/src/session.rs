//! One WebRTC peer: a str0m `Rtc` in ICE-lite, RTP mode, plus what the engine
//! needs to route its packets and send it audio.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::format::Codec;
use str0m::media::{Mid, Pt};
use str0m::rtp::RtpWrite;
use str0m::{IceCreds, Rtc};

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

/// The negotiated audio m-line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AudioLine {
    pub mid: Mid,
    /// Opus payload type, as numbered by the client.
    pub pt: Pt,
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
    /// Next outgoing RTP sequence number (extended; starts below 2^16).
    pub seq: u64,
    /// The deadline str0m last asked for; a timer-heap entry is live only
    /// while it matches.
    pub deadline: Option<Instant>,
    /// In the engine's ready queue.
    pub queued: bool,
    pub closing: Option<CloseReason>,
    /// Source addresses routed to this session.
    pub addrs: Vec<SocketAddr>,
}

impl Session {
    pub fn new(
        kind: SessionKind,
        room: RoomIdx,
        rtc: Rtc,
        creds: IceCreds,
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
            seq: u64::from(first_seq),
            deadline: None,
            queued: false,
            closing: None,
            addrs: Vec::new(),
        }
    }

    /// Records the audio m-line once str0m reports it, with the client's Opus PT.
    pub fn resolve_audio(&mut self, mid: Mid) {
        let Some(media) = self.rtc.media(mid) else {
            return;
        };
        let remote = media.remote_pts();
        let pt = self
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| {
                p.spec().codec == Codec::Opus && (remote.is_empty() || remote.contains(&p.pt()))
            })
            .map(|p| p.pt());
        if let (Some(pt), None) = (pt, self.audio) {
            self.audio = Some(AudioLine { mid, pt });
        }
    }

    /// Queues one encoded frame for this peer. `false` when it cannot take
    /// audio yet (not connected, or nothing negotiated to send on).
    pub fn send_audio(&mut self, now: Instant, rtp_time: u32, payload: &Arc<[u8]>) -> bool {
        if !self.connected || self.closing.is_some() {
            return false;
        }
        let Some(line) = self.audio else { return false };
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(line.mid, None) else {
            return false;
        };
        tx.write_rtp(RtpWrite::new(
            line.pt,
            self.seq.into(),
            rtp_time,
            now,
            Arc::clone(payload),
        ));
        self.seq += 1;
        true
    }

    pub fn is_talker(&self) -> bool {
        matches!(self.kind, SessionKind::Publish | SessionKind::Join)
    }
}
