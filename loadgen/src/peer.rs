//! One WebRTC peer: a webrtc-rs sans-IO `RTCPeerConnection` on its own UDP
//! socket (one 5-tuple), driven by the shard that owns it.
//!
//! Per-packet cost is what matters (thousands of peers share two cores with
//! the server), so a peer that is not sampled counts an SRTP packet from its
//! clear RTP header and never hands it to `rtc`; STUN, DTLS and RTCP always
//! go to `rtc`. A sampled peer gives `rtc` everything, and decodes the Opus
//! it gets back.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use sabha_media::opus::{FRAME_SAMPLES, OpusDecoder, SAMPLE_RATE};

use crate::audio::Clip;

/// Opus payload type we offer (the one browsers use).
const OPUS_PT: u8 = 111;
/// An interarrival longer than this is a gap.
pub const GAP: Duration = Duration::from_millis(100);
/// A sampled peer keeps at most this much decoded audio (10 s).
const MAX_PCM: usize = 10 * SAMPLE_RATE as usize;
/// A silent member sends its DTX frame this often, like a browser.
const DTX_EVERY: Duration = Duration::from_millis(400);
const FRAME: Duration = Duration::from_millis(20);
/// Pace of the client's ICE connectivity checks.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Receiver reports: the first a second after audio starts, then at
/// libwebrtc's interval for audio. The server plans its FEC on them.
const FIRST_REPORT_AFTER: Duration = Duration::from_secs(1);
const REPORT_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("socket: {0}")]
    Socket(#[from] io::Error),
    #[error("webrtc: {0}")]
    Rtc(#[from] rtc::shared::error::Error),
    #[error("no local description after set_local_description")]
    NoOffer,
}

/// What a peer sends.
#[derive(Clone)]
pub enum Send {
    Nothing,
    /// The clip in a loop, one frame every 20 ms.
    Tone(Arc<Clip>),
    /// The clip's one DTX frame every 400 ms, the timestamp advancing.
    Silence(Arc<Clip>),
}

/// How a peer's connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum State {
    Connecting,
    Connected,
    /// ICE failed (no STUN answer): `Failed` before ICE connected.
    IceFailed,
    /// ICE connected but DTLS did not.
    DtlsFailed,
}

/// Counters of received RTP, from the clear header.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rx {
    pub packets: u64,
    pub bytes: u64,
    /// Highest extended sequence number seen.
    pub ext_max: Option<i64>,
    pub first_at: Option<Instant>,
    pub last_at: Option<Instant>,
    /// Interarrivals longer than [`GAP`].
    pub gaps: u64,
}

impl Rx {
    fn count(&mut self, seq: u16, len: usize, now: Instant) {
        self.packets += 1;
        self.bytes += len as u64;
        let ext = match self.ext_max {
            None => i64::from(seq),
            Some(max) => max + i64::from(seq.wrapping_sub(max as u16) as i16),
        };
        self.ext_max = Some(self.ext_max.map_or(ext, |m| m.max(ext)));
        match self.last_at {
            Some(last) if now.saturating_duration_since(last) > GAP => self.gaps += 1,
            None => self.first_at = Some(now),
            _ => {}
        }
        self.last_at = Some(now);
    }
}

/// RTCP receiver reports about the server's stream (RFC 3550 §6.4.2),
/// from the clear RTP headers every peer counts.
#[derive(Debug, Clone, Copy, Default)]
struct Reports {
    /// Off: the peer never reports.
    enabled: bool,
    /// Our SSRC, the reporter's.
    ssrc: u32,
    /// The server's, from its first packet.
    remote_ssrc: Option<u32>,
    /// Extended highest sequence number and packets received at the last
    /// report (at the first packet: one before it, and none).
    at_last: Option<(i64, u64)>,
    lost_total: u64,
    next_at: Option<Instant>,
}

impl Reports {
    /// Notes a counted packet's SSRC; `rx` has counted it.
    fn saw(&mut self, ssrc: u32, rx: &Rx) {
        if self.remote_ssrc.is_none() {
            self.remote_ssrc = Some(ssrc);
            self.at_last = rx.ext_max.map(|max| (max - 1, rx.packets - 1));
        }
    }

    /// The report due at `now`, if one is: fraction lost since the last
    /// one (in 256ths), cumulative lost, extended highest sequence number.
    fn due(&mut self, now: Instant, rx: &Rx) -> Option<(u32, u8, u32, u32)> {
        let (true, remote, Some(max), Some((last_max, last_packets))) =
            (self.enabled, self.remote_ssrc?, rx.ext_max, self.at_last)
        else {
            return None;
        };
        if now < *self.next_at.get_or_insert(now + FIRST_REPORT_AFTER) {
            return None;
        }
        self.next_at = Some(now + REPORT_EVERY);
        let expected = (max - last_max).max(0) as u64;
        let received = rx.packets - last_packets;
        let lost = expected.saturating_sub(received);
        self.lost_total += lost;
        self.at_last = Some((max, rx.packets));
        let fraction = (lost * 256)
            .checked_div(expected)
            .map_or(0, |f| f.min(255) as u8);
        Some((
            remote,
            fraction,
            self.lost_total.min(0x7f_ffff) as u32,
            max as u32,
        ))
    }
}

/// The sending half of a talker.
struct Sender {
    id: RTCRtpSenderId,
    send: Send,
    ssrc: u32,
    pt: u8,
    seq: u16,
    ts: u32,
    frame: usize,
}

/// A peer whose offer is ready to POST.
pub struct Peer {
    pub id: usize,
    pub sampled: bool,
    pc: RTCPeerConnection,
    socket: mio::net::UdpSocket,
    local: SocketAddr,
    sender: Option<Sender>,
    decoder: Option<OpusDecoder>,
    pcm_out: Vec<i16>,
    pub pcm: Vec<i16>,
    pub recording: bool,
    pub state: State,
    ice_connected: bool,
    pub posted_at: Instant,
    pub connected_at: Option<Instant>,
    pub rx: Rx,
    reports: Reports,
    pub rtc_errors: u64,
    pub send_errors: u64,
    pub decode_errors: u64,
    /// The deadline the shard's timer heap holds for this peer.
    pub next_timeout: Option<Instant>,
    /// The `rtc` deadline that is in the shard's heap.
    pub rtc_armed: Option<Instant>,
    /// When the next frame is due (talkers).
    pub next_send: Option<Instant>,
    /// Whether `next_send` is in the shard's heap.
    pub send_armed: bool,
}

impl Peer {
    /// Binds a socket on 127.0.0.1, builds the connection and its offer
    /// (the host candidate included: signaling is non-trickle).
    /// `reports`: it sends RTCP receiver reports, as browsers do.
    pub fn offer(
        id: usize,
        sampled: bool,
        reports: bool,
        send: Send,
    ) -> Result<(Peer, String), PeerError> {
        let std_socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        std_socket.set_nonblocking(true)?;
        let local = std_socket.local_addr()?;
        let socket = mio::net::UdpSocket::from_std(std_socket);

        let mut media = MediaEngine::default();
        media.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus_codec(),
                payload_type: OPUS_PT,
            },
            RtpCodecKind::Audio,
        )?;
        let now = Instant::now();
        // webrtc-rs nominates on its check tick (200 ms by default), which
        // would put ~400 ms of client pacing into join → first audio;
        // browsers are quicker, so is this.
        let settings = SettingEngineBuilder::new()
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), None)
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .with_media_engine(media)
            .build(now)?;

        let ssrc = rand_u32(id);
        let direction = match send {
            Send::Nothing => RTCRtpTransceiverDirection::Recvonly,
            Send::Tone(_) | Send::Silence(_) => RTCRtpTransceiverDirection::Sendrecv,
        };
        let send_encodings = match send {
            Send::Nothing => vec![],
            _ => vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: opus_codec(),
                ..Default::default()
            }],
        };
        let init = RTCRtpTransceiverInit {
            direction,
            streams: vec![],
            send_encodings,
        };
        pc.add_transceiver_from_kind(RtpCodecKind::Audio, Some(init))?;
        let sender = match send {
            Send::Nothing => None,
            send => pc.get_senders().next().map(|id| Sender {
                id,
                send,
                ssrc,
                pt: OPUS_PT,
                seq: ssrc as u16,
                ts: ssrc.rotate_left(7),
                frame: 0,
            }),
        };

        let offer = pc.create_offer(None)?;
        pc.set_local_description(now, offer)?;
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: local.ip().to_string(),
                port: local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()?;
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
        let sdp = pc.local_description().ok_or(PeerError::NoOffer)?.sdp;

        let peer = Peer {
            id,
            sampled,
            pc,
            socket,
            local,
            sender,
            decoder: if sampled {
                Some(OpusDecoder::new().map_err(|e| io::Error::other(e.to_string()))?)
            } else {
                None
            },
            pcm_out: if sampled { vec![0; 5760] } else { vec![] },
            pcm: Vec::new(),
            recording: false,
            state: State::Connecting,
            ice_connected: false,
            posted_at: now,
            connected_at: None,
            rx: Rx::default(),
            reports: Reports {
                enabled: reports,
                ssrc,
                ..Reports::default()
            },
            rtc_errors: 0,
            send_errors: 0,
            decode_errors: 0,
            next_timeout: None,
            rtc_armed: None,
            next_send: None,
            send_armed: false,
        };
        Ok((peer, sdp))
    }

    /// Applies the server's answer; the payload type it gave Opus is the
    /// one a talker sends.
    pub fn answer(&mut self, sdp: String) -> Result<(), PeerError> {
        let answer = RTCSessionDescription::answer(sdp)?;
        self.pc.set_remote_description(Instant::now(), answer)?;
        if let Some(s) = self.sender.as_mut()
            && let Some(mut sender) = self.pc.rtp_sender(s.id)
            && let Some(codec) = sender.get_parameters().rtp_parameters.codecs.first()
        {
            s.pt = codec.payload_type;
        }
        Ok(())
    }

    pub fn socket(&mut self) -> &mut mio::net::UdpSocket {
        &mut self.socket
    }

    /// Reads every datagram waiting on the socket (edge-triggered epoll).
    /// `now` is read once per wake-up, not per datagram: arrival times only
    /// feed gaps of over 100 ms.
    pub fn on_readable(&mut self, buf: &mut [u8], now: Instant) {
        loop {
            match self.socket.recv_from(buf) {
                Ok((n, from)) => self.on_datagram(&buf[..n], from, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.rtc_errors += 1;
                    break;
                }
            }
        }
        self.report(now);
    }

    /// Sends a receiver report when one is due, as a browser does: the
    /// server tunes its in-band FEC to the loss it reports.
    fn report(&mut self, now: Instant) {
        if self.state != State::Connected {
            return;
        }
        let Some((remote, fraction_lost, total_lost, max)) = self.reports.due(now, &self.rx) else {
            return;
        };
        let rr = rtc::rtcp::receiver_report::ReceiverReport {
            ssrc: self.reports.ssrc,
            reports: vec![rtc::rtcp::reception_report::ReceptionReport {
                ssrc: remote,
                fraction_lost,
                total_lost,
                last_sequence_number: max,
                ..Default::default()
            }],
            profile_extensions: bytes::Bytes::new(),
        };
        let Some(id) = self.pc.get_receivers().next() else {
            return;
        };
        let sent = self
            .pc
            .rtp_receiver(id)
            .map(|mut receiver| receiver.write_rtcp(now, vec![Box::new(rr)]));
        if !matches!(sent, Some(Ok(()))) {
            self.send_errors += 1;
        }
        self.drain(now);
    }

    fn on_datagram(&mut self, d: &[u8], from: SocketAddr, now: Instant) {
        // RFC 7983: 128..=191 is RTP or RTCP; RTCP types are 64..=95 after
        // the marker bit (RFC 5761).
        if d.len() >= 12 && (128..=191).contains(&d[0]) && !(64..=95).contains(&(d[1] & 0x7f)) {
            self.rx
                .count(u16::from_be_bytes([d[2], d[3]]), d.len(), now);
            self.reports
                .saw(u32::from_be_bytes([d[8], d[9], d[10], d[11]]), &self.rx);
            if !self.sampled {
                return;
            }
        }
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(d),
        };
        if self.pc.handle_read(msg).is_err() {
            self.rtc_errors += 1;
        }
        self.drain(now);
    }

    /// `rtc`'s timer fired.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.pc.handle_timeout(now).is_err() {
            self.rtc_errors += 1;
        }
        self.drain(now);
    }

    /// Sends the frame that is due and sets when the next one is.
    pub fn on_send(&mut self, now: Instant) {
        let (Some(due), Some(s)) = (self.next_send, self.sender.as_mut()) else {
            return;
        };
        let (payload, step, every) = match &s.send {
            Send::Nothing => return,
            Send::Tone(clip) => {
                let f = &clip.frames[s.frame % clip.frames.len()];
                (f, FRAME_SAMPLES as u32, FRAME)
            }
            Send::Silence(clip) => (&clip.frames[0], 20 * FRAME_SAMPLES as u32, DTX_EVERY),
        };
        let packet = rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: s.pt,
                sequence_number: s.seq,
                timestamp: s.ts,
                ssrc: s.ssrc,
                marker: s.frame == 0,
                ..Default::default()
            },
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        s.seq = s.seq.wrapping_add(1);
        s.ts = s.ts.wrapping_add(step);
        s.frame += 1;
        let id = s.id;
        if self.state == State::Connected {
            let sent = self
                .pc
                .rtp_sender(id)
                .map(|mut sender| sender.write_rtp(now, packet));
            if !matches!(sent, Some(Ok(()))) {
                self.send_errors += 1;
            }
            self.drain(now);
        }
        // Keep the pace even when a poll wakes late: never drift, never burst.
        let mut next = due + every;
        if next < now {
            next = now + every;
        }
        self.next_send = Some(next);
    }

    /// Sends what `rtc` wants sent, follows its state and reads its RTP.
    fn drain(&mut self, now: Instant) {
        while let Some(msg) = self.pc.poll_write() {
            if self
                .socket
                .send_to(&msg.message, msg.transport.peer_addr)
                .is_err()
            {
                self.send_errors += 1;
            }
        }
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                    RTCIceConnectionState::Connected,
                ) => self.ice_connected = true,
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) => match s {
                    RTCPeerConnectionState::Connected => {
                        self.state = State::Connected;
                        self.connected_at.get_or_insert(now);
                        if self.sender.is_some() && self.next_send.is_none() {
                            self.next_send = Some(now);
                        }
                    }
                    RTCPeerConnectionState::Failed if self.ice_connected => {
                        self.state = State::DtlsFailed
                    }
                    RTCPeerConnectionState::Failed => self.state = State::IceFailed,
                    _ => {}
                },
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            let RTCMessage::RtpPacket(_, packet) = message else {
                continue;
            };
            let Some(dec) = self.decoder.as_mut() else {
                continue;
            };
            match dec.decode_any(&packet.payload, &mut self.pcm_out) {
                Ok(n) if self.recording && self.pcm.len() + n <= MAX_PCM => {
                    self.pcm.extend_from_slice(&self.pcm_out[..n]);
                }
                Ok(_) => {}
                Err(_) => self.decode_errors += 1,
            }
        }
        self.next_timeout = self.pc.poll_timeout();
    }

    /// Closes the connection (a DTLS close alert), best effort.
    pub fn close(&mut self) {
        let _ = self.pc.close();
        while let Some(msg) = self.pc.poll_write() {
            let _ = self.socket.send_to(&msg.message, msg.transport.peer_addr);
        }
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: SAMPLE_RATE,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// A distinct, well-spread SSRC per peer without a random crate (splitmix64).
fn rand_u32(id: usize) -> u32 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_extend_across_the_wrap_and_gaps_count() {
        let mut rx = Rx::default();
        let t0 = Instant::now();
        for (i, seq) in [65534u16, 65535, 0, 1].into_iter().enumerate() {
            rx.count(seq, 100, t0 + FRAME * i as u32);
        }
        assert_eq!(rx.ext_max, Some(65537));
        assert_eq!((rx.packets, rx.bytes, rx.gaps), (4, 400, 0));
        rx.count(3, 100, t0 + Duration::from_millis(500));
        assert_eq!((rx.ext_max, rx.gaps), (Some(65539), 1));
        // A late, reordered packet does not move the maximum back.
        rx.count(2, 100, t0 + Duration::from_millis(510));
        assert_eq!(rx.ext_max, Some(65539));
    }

    #[test]
    fn receiver_reports_give_the_loss_since_the_last_one() {
        let mut rx = Rx::default();
        let mut reports = Reports {
            enabled: true,
            ..Reports::default()
        };
        let t0 = Instant::now();
        assert_eq!(reports.due(t0, &rx), None, "nothing received");
        // 10 of 20 packets arrive (every other one), across the wrap.
        for seq in (65530u16..65535).chain(0..15).step_by(2) {
            rx.count(seq, 100, t0);
            reports.saw(0xabcd, &rx);
        }
        assert_eq!(reports.due(t0, &rx), None, "the first waits a second");
        let first = t0 + FIRST_REPORT_AFTER;
        // 65530 to 65536 + 13: 20 expected, 10 received.
        let (ssrc, fraction, total, max) = reports.due(first, &rx).unwrap();
        assert_eq!((ssrc, fraction, total, max), (0xabcd, 128, 10, 65536 + 13));
        assert_eq!(reports.due(first + REPORT_EVERY / 2, &rx), None);
        // Then 11 more, none lost.
        for seq in 14..25 {
            rx.count(seq, 100, first);
        }
        let (_, fraction, total, _) = reports.due(first + REPORT_EVERY, &rx).unwrap();
        assert_eq!((fraction, total), (0, 10));
        reports.enabled = false;
        assert_eq!(reports.due(first + REPORT_EVERY * 2, &rx), None, "off");
    }
}
