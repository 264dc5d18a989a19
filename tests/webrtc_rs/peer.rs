//! One webrtc-rs peer of the server: a `webrtc` 0.21 `PeerConnection` bound to
//! one UDP socket on 127.0.0.1 (so its offer carries exactly one host
//! candidate), Opus only, the default interceptors (NACK, RTCP reports, TWCC
//! feedback) and the aws-lc-rs crypto provider.
//!
//! Signalling is non-trickle: the offer is POSTed once ICE gathering is
//! complete. A talker (WHIP or `/join`) sends a sine as 20 ms Opus frames,
//! paced in real time; a receiver (WHEP or `/join`) decodes every RTP payload
//! it gets and keeps the PCM with its arrival time, for `hearing` to judge.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rtc::media::Sample;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use sabha_media::opus::{
    EncoderSettings, FRAME_SAMPLES, MAX_PACKET, OpusDecoder, OpusEncoder, SAMPLE_RATE,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder, crypto, register_default_interceptors,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit, RtpSender};

use crate::api::Api;

/// Amplitude of every test tone: −13.5 dBFS RMS, and two of them sum to 0.6
/// (no clipping in a mix).
pub const TONE_AMPLITUDE: f64 = 0.3;
/// Opus payload type we offer (the one browsers use).
const OPUS_PT: u8 = 111;
const FRAME: Duration = Duration::from_millis(20);
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bounds of the send and receive loops (60 s of 20 ms frames).
const MAX_TONE_FRAMES: usize = 3_000;
const MAX_TRACK_EVENTS: usize = 6_000;

/// What a peer sends and receives.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// WHIP: a sendonly offer carrying a tone of this many Hz.
    Publish(f64),
    /// WHEP: a recvonly offer.
    Listen,
    /// `/join`: a sendrecv offer carrying a tone of this many Hz.
    Join(f64),
}

/// One decoded RTP packet.
pub struct Packet {
    pub at: Instant,
    pub pcm: Vec<i16>,
    /// The audio band its Opus TOC byte says it codes, in Hz.
    pub band_hz: u32,
}

/// The audio band an Opus packet codes, from its TOC byte's configuration
/// number (RFC 6716 §3.1): 4, 6, 8, 12 or 20 kHz.
pub fn band_hz(payload: &[u8]) -> u32 {
    match payload.first().map(|toc| toc >> 3) {
        Some(0..=3 | 16..=19) => 4_000,
        Some(4..=7) => 6_000,
        Some(8..=11 | 20..=23) => 8_000,
        Some(12..=13 | 24..=27) => 12_000,
        _ => 20_000,
    }
}

/// Everything a peer received.
#[derive(Default)]
pub struct Heard {
    pub packets: Vec<Packet>,
    pub decode_errors: usize,
}

/// The port of the first `a=candidate` line of `sdp` (RFC 8839 §5.1:
/// foundation, component, transport, priority, address, port, `typ`, …).
fn candidate_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=candidate:"))
        .and_then(|c| c.split_whitespace().nth(5))
        .and_then(|port| port.parse().ok())
}

/// A connected peer. Its tasks die with the test's runtime.
pub struct Peer {
    pub name: String,
    /// `Location` of the answer: `/v1/sessions/{id}`.
    pub location: String,
    /// When the `201` answer arrived.
    pub answered_at: Instant,
    /// When ICE and DTLS were connected.
    pub connected_at: Instant,
    /// The UDP port of the answer's ICE candidate: the media thread's.
    pub media_port: u16,
    pc: Arc<dyn PeerConnection>,
    heard: Arc<Mutex<Heard>>,
    stop: Arc<AtomicBool>,
    tone: Option<JoinHandle<Result<usize, String>>>,
}

impl Peer {
    /// Offers to `path` with `token`, applies the answer and waits until ICE
    /// and DTLS are connected; a talker then starts its tone.
    pub async fn connect(
        api: &Api,
        name: &str,
        path: &str,
        token: &str,
        role: Role,
    ) -> Result<Peer, String> {
        let peer = Self::open(api, name, path, token, role).await;
        peer.map_err(|e| format!("{name}: {e}"))
    }

    async fn open(
        api: &Api,
        name: &str,
        path: &str,
        token: &str,
        role: Role,
    ) -> Result<Peer, String> {
        let heard = Arc::new(Mutex::new(Heard::default()));
        let (gathered_tx, mut gathered) = watch::channel(false);
        let (state_tx, mut state) = watch::channel(RTCPeerConnectionState::New);
        let events = Events {
            gathered: gathered_tx,
            state: state_tx,
            heard: heard.clone(),
        };
        let pc = build_peer_connection(events).await.map_err(fail("build"))?;
        let talker = add_media(&pc, role).await?;
        let offer = gathered_offer(&pc, &mut gathered).await?;

        let answer = api.offer(path, token, offer).await?;
        let answered_at = Instant::now();
        check_answer(path, &answer)?;
        let media_port = candidate_port(&answer.body)
            .ok_or_else(|| format!("no host candidate in the answer to {path}"))?;
        let remote = RTCSessionDescription::answer(answer.body).map_err(fail("answer"))?;
        pc.set_remote_description(remote)
            .await
            .map_err(fail("set remote"))?;
        wait_connected(&mut state).await?;
        let connected_at = Instant::now();

        let stop = Arc::new(AtomicBool::new(false));
        let tone = match talker {
            Some(t) => Some(t.start(stop.clone()).await?),
            None => None,
        };
        Ok(Peer {
            name: name.to_owned(),
            location: answer.location,
            answered_at,
            connected_at,
            media_port,
            pc,
            heard,
            stop,
            tone,
        })
    }

    /// What this peer received so far.
    pub fn heard(&self) -> MutexGuard<'_, Heard> {
        self.heard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the tone and checks it ran without error.
    pub async fn stop_tone(&mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        let Some(task) = self.tone.take() else {
            return Ok(());
        };
        let sent = timeout(Duration::from_secs(5), task)
            .await
            .map_err(|_| format!("{}: tone task did not stop", self.name))?
            .map_err(|e| format!("{}: tone task: {e}", self.name))??;
        if sent == 0 {
            return Err(format!("{}: sent no tone frames", self.name));
        }
        Ok(())
    }

    /// Stops the tone, DELETEs the session (its status is returned) and closes.
    pub async fn hang_up(mut self, api: &Api) -> Result<u16, String> {
        self.stop_tone().await?;
        let status = api.delete(&self.location).await?;
        let _ = timeout(Duration::from_secs(5), self.pc.close()).await;
        Ok(status)
    }
}

/// The events of one peer connection, turned into watch channels.
struct Events {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    heard: Arc<Mutex<Heard>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        tokio::spawn(record(track, self.heard.clone()));
    }
}

/// A talker's track, ready to send once connected.
struct Talker {
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    sender: Option<Arc<dyn RtpSender>>,
    hz: f64,
}

impl Talker {
    /// Spawns the tone on the payload type the answer gave Opus.
    async fn start(
        self,
        stop: Arc<AtomicBool>,
    ) -> Result<JoinHandle<Result<usize, String>>, String> {
        let pt = negotiated_payload_type(self.sender).await?;
        let task = send_tone(self.track, self.ssrc, pt, self.hz, stop);
        Ok(tokio::spawn(task))
    }
}

/// `Display` errors of step `what`, as a `String`.
fn fail<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// One audio transceiver in the role's direction; a talker's gets a tone track.
async fn add_media(pc: &Arc<dyn PeerConnection>, role: Role) -> Result<Option<Talker>, String> {
    let (direction, hz) = match role {
        Role::Publish(hz) => (RTCRtpTransceiverDirection::Sendonly, Some(hz)),
        Role::Listen => (RTCRtpTransceiverDirection::Recvonly, None),
        Role::Join(hz) => (RTCRtpTransceiverDirection::Sendrecv, Some(hz)),
    };
    let init = Some(RTCRtpTransceiverInit {
        direction,
        streams: vec![],
        send_encodings: vec![],
    });
    let Some(hz) = hz else {
        pc.add_transceiver_from_kind(RtpCodecKind::Audio, init)
            .await
            .map_err(fail("add transceiver"))?;
        return Ok(None);
    };
    let ssrc = rand::random::<u32>();
    let track = Arc::new(tone_track(ssrc).map_err(fail("track"))?);
    let transceiver = pc
        .add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, init)
        .await
        .map_err(fail("add track"))?;
    let sender = transceiver.sender().await.map_err(fail("sender"))?;
    Ok(Some(Talker {
        track,
        ssrc,
        sender,
        hz,
    }))
}

/// The offer's SDP once ICE gathering is complete (non-trickle).
async fn gathered_offer(
    pc: &Arc<dyn PeerConnection>,
    gathered: &mut watch::Receiver<bool>,
) -> Result<String, String> {
    let offer = pc.create_offer(None).await.map_err(fail("offer"))?;
    pc.set_local_description(offer)
        .await
        .map_err(fail("set local"))?;
    timeout(GATHER_TIMEOUT, gathered.wait_for(|done| *done))
        .await
        .map_err(|_| format!("ICE gathering not complete in {GATHER_TIMEOUT:?}"))?
        .map_err(fail("gathering"))?;
    let offer = pc.local_description().await.ok_or("no local description")?;
    Ok(offer.sdp)
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

async fn build_peer_connection(events: Events) -> webrtc::error::Result<Arc<dyn PeerConnection>> {
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus_codec(),
            payload_type: OPUS_PT,
        },
        RtpCodecKind::Audio,
    )?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let settings = SettingEngineBuilder::new()
        .with_crypto_provider(Arc::new(crypto::providers::AwsLcRsProvider::new()))
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(Arc::new(events))
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await?;
    Ok(Arc::new(pc))
}

fn tone_track(ssrc: u32) -> webrtc::error::Result<TrackLocalStaticSample> {
    let encoding = RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters {
            ssrc: Some(ssrc),
            ..Default::default()
        },
        codec: opus_codec(),
        ..Default::default()
    };
    let track = MediaStreamTrack::new(
        "sabha-e2e".to_owned(),
        format!("tone-{ssrc:08x}"),
        "tone".to_owned(),
        RtpCodecKind::Audio,
        vec![encoding],
    );
    TrackLocalStaticSample::new(Instant::now(), track)
}

/// The answer must be `201`, `application/sdp`, with `Location: /v1/sessions/{id}`.
fn check_answer(path: &str, a: &crate::api::Answer) -> Result<(), String> {
    if a.status != 201 {
        return Err(format!(
            "POST {path} answered {} (want 201): {}",
            a.status, a.body
        ));
    }
    if !a
        .content_type
        .to_ascii_lowercase()
        .starts_with("application/sdp")
    {
        return Err(format!("answer Content-Type {:?}", a.content_type));
    }
    let id = a.location.strip_prefix("/v1/sessions/").unwrap_or("");
    if id.is_empty() || id.contains('/') {
        return Err(format!("answer Location {:?}", a.location));
    }
    Ok(())
}

async fn wait_connected(state: &mut watch::Receiver<RTCPeerConnectionState>) -> Result<(), String> {
    use RTCPeerConnectionState::{Closed, Connected, Failed};
    let settled = timeout(
        CONNECT_TIMEOUT,
        state.wait_for(|s| matches!(s, Connected | Failed | Closed)),
    )
    .await
    .map(|r| r.map(|s| *s));
    match settled {
        Ok(Ok(Connected)) => Ok(()),
        Ok(Ok(s)) => Err(format!("peer connection {s} instead of connected")),
        Ok(Err(e)) => Err(format!("state channel: {e}")),
        Err(_) => Err(format!(
            "not connected within {CONNECT_TIMEOUT:?} (state {})",
            *state.borrow()
        )),
    }
}

/// The payload type the answer gave the sender's codec; `write_sample` must use it.
async fn negotiated_payload_type(sender: Option<Arc<dyn RtpSender>>) -> Result<u8, String> {
    let sender = sender.ok_or("transceiver without a sender")?;
    let params = sender.get_parameters().await.map_err(|e| e.to_string())?;
    let codec = params.rtp_parameters.codecs.first().ok_or("no codec")?;
    Ok(codec.payload_type)
}

/// Sends `hz` as 20 ms Opus frames, paced by a 20 ms interval, until `stop`.
async fn send_tone(
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    pt: u8,
    hz: f64,
    stop: Arc<AtomicBool>,
) -> Result<usize, String> {
    let mut encoder = OpusEncoder::new(EncoderSettings::default()).map_err(|e| e.to_string())?;
    let mut frame = [0i16; FRAME_SAMPLES];
    let mut out = [0u8; MAX_PACKET];
    let mut ticker = tokio::time::interval(FRAME);
    for n in 0..MAX_TONE_FRAMES {
        if stop.load(Ordering::Relaxed) {
            return Ok(n);
        }
        ticker.tick().await;
        sine(&mut frame, n * FRAME_SAMPLES, hz);
        let len = encoder
            .encode(&frame, &mut out)
            .map_err(|e| e.to_string())?;
        let sample = Sample {
            data: out[..len].to_vec().into(),
            duration: FRAME,
            ..Sample::new(Instant::now())
        };
        track
            .sample_writer(ssrc, pt)
            .write_sample(&sample)
            .await
            .map_err(|e| format!("write_sample: {e}"))?;
    }
    Ok(MAX_TONE_FRAMES)
}

/// Fills `frame` with the sine's samples from sample index `start` on.
fn sine(frame: &mut [i16], start: usize, hz: f64) {
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(SAMPLE_RATE);
    for (i, s) in frame.iter_mut().enumerate() {
        let x = TONE_AMPLITUDE * (w * (start + i) as f64).sin();
        *s = (x * f64::from(i16::MAX)) as i16;
    }
}

/// Decodes every RTP payload of `track` into `heard`, until the track ends.
async fn record(track: Arc<dyn TrackRemote>, heard: Arc<Mutex<Heard>>) {
    let Ok(mut decoder) = OpusDecoder::new() else {
        heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .decode_errors += 1;
        return;
    };
    let mut pcm = vec![0i16; 5_760]; // 120 ms, the longest Opus packet
    for _ in 0..MAX_TRACK_EVENTS {
        let Some(event) = track.poll().await else {
            return;
        };
        match event {
            TrackRemoteEvent::OnRtpPacket(rtp) => {
                let at = Instant::now();
                let decoded = decoder.decode_any(&rtp.payload, &mut pcm);
                let mut heard = heard.lock().unwrap_or_else(PoisonError::into_inner);
                match decoded {
                    Ok(n) => heard.packets.push(Packet {
                        at,
                        pcm: pcm[..n].to_vec(),
                        band_hz: band_hz(&rtp.payload),
                    }),
                    Err(_) => heard.decode_errors += 1,
                }
            }
            TrackRemoteEvent::OnEnded => return,
            _ => {}
        }
    }
}
