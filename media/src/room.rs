//! One room's audio: its stage (talkers), its listeners, and the 20 ms tick
//! that turns the stage into encoded mixes.
//!
//! A room knows nothing about WebRTC: it takes Opus payloads in from talkers
//! and says, each tick, which encoded payload every member receives. That is
//! what keeps the mixer open to legs that are not WebRTC (SIP, recording, an
//! HTTP stream, an edge node) — they are just more members.
//!
//! Encoding is the expensive part (≈ 10× a decode), so the room encodes the
//! **program** (everyone on stage) once per tick and every listener gets the
//! very same bytes (`Arc<[u8]>`); only a talker who is currently talking — and
//! who hears the room — gets a mix-minus of their own, with their own encoder
//! so the stream they hear stays continuous.
//!
//! A room decodes, mixes and encodes at one [`MixRate`]: 48 kHz for a rally,
//! whose program is fullband, 16 kHz for a bridge, which is speech coded
//! wideband anyway (a third of the samples, and no resampling inside Opus).

use std::sync::Arc;

use crate::SessionId;
use crate::jitter::{JitterBuffer, JitterStats, Playout};
use crate::listener_set::ListenerSet;
use crate::loss::LossTally;
use crate::mixer::MixBus;
use crate::opus::{
    Application, Bandwidth, CodecError, DTX_MAX_LEN, EncoderSettings, FRAME_SAMPLES, Frame,
    MAX_PACKET, MixRate, OpusDecoder, OpusEncoder, carries_fec,
};
use crate::speech::{Loudness, SpeechConfig, frame_dbfs, select_loudest};

/// Tunables of every room, chosen by measurement (docs/media.md).
#[derive(Debug, Clone, Copy)]
pub struct RoomConfig {
    /// Frames a talker's jitter buffer holds before playout (20 ms each).
    pub jitter_depth: usize,
    /// The program while the room has listeners (a rally): what the many hear.
    pub encoder: EncoderSettings,
    /// Every mix-minus, and the program while the room has no listeners (a
    /// bridge, where only its talkers hear it): speech, so wideband SILK at a
    /// fraction of the cost of fullband.
    pub bridge_encoder: EncoderSettings,
    /// Ticks a talker keeps their own mix-minus after their last frame, so a
    /// pause between words does not flip them between two encoders.
    pub talker_hangover_ticks: u32,
    /// Ticks of an empty stage after which the room stops encoding silence.
    pub idle_after_ticks: u32,
    /// Loudest-N selection and speaking detection.
    pub speech: SpeechConfig,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            jitter_depth: 2,
            encoder: EncoderSettings::default(),
            bridge_encoder: BRIDGE_ENCODER,
            talker_hangover_ticks: 50,
            idle_after_ticks: 10,
            speech: SpeechConfig::default(),
        }
    }
}

struct Talker {
    id: SessionId,
    jitter: JitterBuffer,
    decoder: OpusDecoder,
    /// This tick's decoded frame, when `active`.
    pcm: Box<Frame>,
    /// Decoded audio this tick.
    active: bool,
    /// Server-side mute: packets are drained, never decoded or mixed.
    muted: bool,
    loudness: Loudness,
    /// In this tick's mix (one of the loudest N).
    in_mix: bool,
    /// RFC 6464 level of the newest packet, when the client sends it.
    ext_level: Option<u8>,
    /// Present when the talker hears the room (a `/join` session).
    minus: Option<MinusMix>,
    decode_errors: u64,
}

/// A talker's own mix-minus stream.
struct MinusMix {
    encoder: OpusEncoder,
    /// Ticks left in which this talker gets their own mix.
    hangover: u32,
    /// This tick's payload; `None` while they hear the program.
    payload: Option<Arc<[u8]>>,
}

/// How a listener wants the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// 32 kb/s, 20 ms packets.
    #[default]
    Standard,
    /// For phones on 3G and for fan-out cost: 16 kb/s with in-band FEC in
    /// 60 ms packets (a third of the packets, about 23 kb/s on the wire).
    Low,
}

/// Settings of bridge encoders (docs/media.md, "Measured costs").
pub const BRIDGE_ENCODER: EncoderSettings = EncoderSettings {
    bitrate_bps: 32_000,
    complexity: 1,
    bandwidth: Bandwidth::Wide,
    application: Application::Voip,
    inband_fec: true,
    dtx: false,
};

/// Settings of the low-rate program encoder.
const LOW_PROFILE: EncoderSettings = EncoderSettings {
    bitrate_bps: 16_000,
    complexity: 5,
    bandwidth: Bandwidth::Full,
    application: Application::Voip,
    inband_fec: true,
    dtx: false,
};
/// Ticks per low-rate packet: 60 ms.
const LOW_TICKS: usize = 3;

/// Which mix a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    Program,
    LowProgram,
    MixMinus,
}

/// What one member receives this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a> {
    pub mix: Mix,
    pub payload: &'a Arc<[u8]>,
    /// RTP timestamp (48 kHz) of the payload's first sample.
    pub rtp_time: u32,
    /// The program packet of the tick before, exactly one frame earlier:
    /// RFC 2198 redundancy for listeners who take it. Program only.
    pub previous: Option<&'a Arc<[u8]>>,
}

impl<'a> Delivery<'a> {
    pub fn payload(self) -> &'a Arc<[u8]> {
        self.payload
    }

    /// How many 48 kHz samples the payload covers.
    pub fn samples(self) -> u32 {
        let frames = match self.mix {
            Mix::LowProgram => LOW_TICKS,
            Mix::Program | Mix::MixMinus => 1,
        };
        (frames * FRAME_SAMPLES) as u32
    }
}

/// The low-rate program: three ticks of program PCM, encoded as one packet.
struct LowProgram {
    encoder: OpusEncoder,
    pcm: Box<[i16; FRAME_SAMPLES * LOW_TICKS]>,
    frames: usize,
    payload: Option<Arc<[u8]>>,
    rtp_time: u32,
}

/// Counters of one room (monotonic).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoomStats {
    pub ticks: u64,
    pub encodes: u64,
    /// Of `encodes`, the packets that carry in-band FEC: where receivers
    /// report loss (see `loss`).
    pub encodes_with_fec: u64,
    pub decodes: u64,
    /// Packets played out without decoding (muted, or silent by RFC 6464).
    pub decodes_skipped: u64,
    pub concealed: u64,
    pub fec_recovered: u64,
    pub decode_errors: u64,
}

pub struct Room {
    config: RoomConfig,
    rate: MixRate,
    talkers: Vec<Talker>,
    listeners: ListenerSet,
    low_listeners: ListenerSet,
    /// Created with the first low-profile listener.
    low: Option<LowProgram>,
    bus: MixBus,
    program_encoder: OpusEncoder,
    program: Option<Arc<[u8]>>,
    /// The last tick's program, kept one tick for redundancy (RED).
    previous_program: Option<Arc<[u8]>>,
    /// (talker index, level, was in the mix): reused every tick.
    candidates: Vec<(usize, f32, bool)>,
    scratch: Box<Frame>,
    packet: Box<[u8; MAX_PACKET]>,
    idle_ticks: u32,
    tick: u64,
    stats: RoomStats,
}

impl RoomStats {
    /// Adds another room's counters to these.
    pub fn add(&mut self, other: &RoomStats) {
        self.ticks += other.ticks;
        self.encodes += other.encodes;
        self.encodes_with_fec += other.encodes_with_fec;
        self.decodes += other.decodes;
        self.decodes_skipped += other.decodes_skipped;
        self.concealed += other.concealed;
        self.fec_recovered += other.fec_recovered;
        self.decode_errors += other.decode_errors;
    }
}

impl Room {
    /// A room at 48 kHz.
    pub fn new(config: RoomConfig) -> Result<Self, CodecError> {
        Self::with_rate(config, MixRate::Full)
    }

    pub fn with_rate(config: RoomConfig, rate: MixRate) -> Result<Self, CodecError> {
        Ok(Self {
            config,
            rate,
            talkers: Vec::new(),
            listeners: ListenerSet::default(),
            low_listeners: ListenerSet::default(),
            low: None,
            bus: MixBus::default(),
            program_encoder: OpusEncoder::with_rate(config.bridge_encoder, rate)?,
            program: None,
            previous_program: None,
            candidates: Vec::new(),
            scratch: Box::new([0; FRAME_SAMPLES]),
            packet: Box::new([0; MAX_PACKET]),
            idle_ticks: u32::MAX,
            tick: 0,
            stats: RoomStats::default(),
        })
    }

    /// Puts a session on stage. `hears_room`: it also receives mix-minus-self.
    pub fn add_talker(&mut self, id: SessionId, hears_room: bool) -> Result<(), CodecError> {
        let minus = if hears_room {
            Some(MinusMix {
                encoder: OpusEncoder::with_rate(self.config.bridge_encoder, self.rate)?,
                hangover: 0,
                payload: None,
            })
        } else {
            None
        };
        self.talkers.push(Talker {
            id,
            jitter: JitterBuffer::new(self.config.jitter_depth),
            decoder: OpusDecoder::with_rate(self.rate)?,
            pcm: Box::new([0; FRAME_SAMPLES]),
            active: false,
            muted: false,
            loudness: Loudness::default(),
            in_mix: false,
            ext_level: None,
            minus,
            decode_errors: 0,
        });
        Ok(())
    }

    pub fn add_listener(&mut self, id: SessionId, profile: Profile) -> Result<(), CodecError> {
        match profile {
            Profile::Standard => {
                self.listeners.insert(id);
            }
            Profile::Low => {
                if self.low.is_none() {
                    self.low = Some(LowProgram {
                        encoder: OpusEncoder::with_rate(LOW_PROFILE, self.rate)?,
                        pcm: Box::new([0; FRAME_SAMPLES * LOW_TICKS]),
                        frames: 0,
                        payload: None,
                        rtp_time: 0,
                    });
                }
                self.low_listeners.insert(id);
            }
        }
        Ok(())
    }

    /// `id` leaves: O(1) for a listener, a scan of the (few) talkers else.
    pub fn remove(&mut self, id: SessionId) {
        if !self.listeners.remove(id) && !self.low_listeners.remove(id) {
            self.talkers.retain(|t| t.id != id);
        }
    }

    /// Gives back the member lists' memory after most members left (the
    /// engine calls it once a sweep; it allocates only when it shrinks).
    pub fn shrink_members(&mut self) {
        fn shrunk<T>(v: &mut Vec<T>) {
            if v.capacity() > 16 && v.len() * 4 < v.capacity() {
                v.shrink_to(v.len() * 2);
            }
        }
        shrunk(&mut self.talkers);
        self.listeners.shrink();
        self.low_listeners.shrink();
    }

    pub fn is_empty(&self) -> bool {
        self.talkers.is_empty() && self.listeners.is_empty() && self.low_listeners.is_empty()
    }

    pub fn members(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.talkers
            .iter()
            .map(|t| t.id)
            .chain(self.listeners.iter())
            .chain(self.low_listeners.iter())
    }

    pub fn stats(&self) -> RoomStats {
        self.stats
    }

    pub fn rate(&self) -> MixRate {
        self.rate
    }

    pub fn jitter_stats(&self, id: SessionId) -> Option<JitterStats> {
        self.talkers
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.jitter.stats())
    }

    /// The RTP timestamp (48 kHz) of the frame produced by the last tick.
    pub fn rtp_time(&self) -> u32 {
        (self.tick.wrapping_mul(FRAME_SAMPLES as u64)) as u32
    }

    /// An Opus payload from a talker, with its RFC 6464 level (−dBov) when
    /// the client sends one. Unknown senders are ignored.
    pub fn receive(&mut self, from: SessionId, seq: u64, payload: &[u8], ext_level: Option<u8>) {
        if let Some(t) = self.talkers.iter_mut().find(|t| t.id == from) {
            t.jitter.insert(seq, payload);
            t.ext_level = ext_level;
        }
    }

    /// Server-side mute: the talker's audio is left out of every mix,
    /// whatever the client sends. `false` when `id` is not a talker here.
    pub fn set_muted(&mut self, id: SessionId, muted: bool) -> bool {
        let Some(t) = self.talkers.iter_mut().find(|t| t.id == id) else {
            return false;
        };
        t.muted = muted;
        if muted {
            t.in_mix = false;
            t.loudness.reset();
        }
        true
    }

    /// Talkers speaking now with their RFC 6464 level (0 loudest).
    pub fn speakers(&self) -> impl Iterator<Item = (SessionId, u8)> + '_ {
        self.talkers
            .iter()
            .filter(|t| !t.muted && t.loudness.speaking())
            .map(|t| (t.id, t.loudness.rfc6464()))
    }

    /// Tells every encoder the loss its receivers report, `loss_of` a
    /// member in percent (see `loss`): a mix-minus its talker's, the
    /// program its listeners' and `/join` talkers' (they hear it while
    /// silent), the low-rate program its listeners'. The engine calls it
    /// about once a second; it allocates nothing.
    pub fn plan_for_loss(&mut self, loss_of: impl Fn(SessionId) -> u8) {
        let mut program = LossTally::default();
        for id in self.listeners.iter() {
            program.add(loss_of(id));
        }
        for t in &mut self.talkers {
            let Some(minus) = t.minus.as_mut() else {
                continue;
            };
            let pct = loss_of(t.id);
            program.add(pct);
            plan(&mut minus.encoder, Some(pct));
        }
        plan(&mut self.program_encoder, program.planned());
        if let Some(low) = self.low.as_mut() {
            let mut audience = LossTally::default();
            for id in self.low_listeners.iter() {
                audience.add(loss_of(id));
            }
            plan(&mut low.encoder, audience.planned());
        }
    }

    /// Whether `id` was mixed in the last tick.
    pub fn is_mixed(&self, id: SessionId) -> bool {
        self.talkers.iter().any(|t| t.id == id && t.in_mix)
    }

    /// Runs one 20 ms tick: play out, decode, pick the loudest N, mix, encode.
    pub fn tick(&mut self) {
        self.tick += 1;
        self.stats.ticks += 1;
        self.bus.clear();
        let speech = self.config.speech;
        let n = self.rate.frame_len();
        for t in &mut self.talkers {
            // Muted talkers and talkers whose packets say "silence" are not
            // decoded (unless they are mid-word in the mix).
            let says_silence = t.ext_level.is_some_and(|l| l >= speech.silent_ext_level);
            let quiet = !t.in_mix && !t.loudness.speaking();
            let decode = !t.muted && (!quiet || !says_silence);
            Self::play_out(t, decode, quiet, &mut self.stats);
            t.loudness
                .update(t.active.then(|| frame_dbfs(&t.pcm[..n])), &speech);
        }
        self.select_mix();
        for t in &self.talkers {
            if t.in_mix && t.active {
                self.bus.add(&t.pcm[..n]);
            }
        }
        self.idle_ticks = if self.bus.contributors() > 0 {
            0
        } else {
            self.idle_ticks.saturating_add(1)
        };
        let idle = self.idle_ticks > self.config.idle_after_ticks;
        self.encode_minus_mixes(idle);
        self.previous_program = self.program.take();
        if !idle && self.program_has_audience() {
            self.tune_program_encoder();
            self.bus.program(&mut self.scratch[..n]);
            self.program = encode(
                &mut self.program_encoder,
                &self.scratch[..n],
                &mut self.packet,
                &mut self.stats,
            );
        }
        self.encode_low_program(idle);
    }

    /// Rally quality while listeners hear the program, bridge quality while
    /// only the room's own talkers do. Opus switches between two frames.
    fn tune_program_encoder(&mut self) {
        let want = if self.listeners.is_empty() {
            self.config.bridge_encoder
        } else {
            self.config.encoder
        };
        if let Err(e) = self.program_encoder.reconfigure(want) {
            tracing::warn!(error = %e, "program encoder kept its settings");
        }
    }

    /// Every third tick, the last 60 ms of program as one low-rate packet.
    fn encode_low_program(&mut self, idle: bool) {
        let tick_time = self.rtp_time();
        let Some(low) = self.low.as_mut().filter(|_| !self.low_listeners.is_empty()) else {
            return;
        };
        low.payload = None;
        if idle {
            low.frames = 0;
            return;
        }
        let frame = self.rate.frame_len();
        self.bus.program(&mut self.scratch[..frame]);
        let at = low.frames * frame;
        low.pcm[at..at + frame].copy_from_slice(&self.scratch[..frame]);
        low.frames += 1;
        if low.frames < LOW_TICKS {
            return;
        }
        low.frames = 0;
        low.rtp_time = tick_time.wrapping_sub(((LOW_TICKS - 1) * FRAME_SAMPLES) as u32);
        self.stats.encodes += 1;
        low.payload = match low
            .encoder
            .encode_samples(&low.pcm[..LOW_TICKS * frame], &mut self.packet)
        {
            Ok(n) if n > DTX_MAX_LEN => {
                self.stats.encodes_with_fec += u64::from(carries_fec(&self.packet[..n]));
                Some(Arc::from(&self.packet[..n]))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "low-rate encoder failed; packet dropped");
                None
            }
        };
    }

    /// Who receives what this tick. Members not listed receive nothing (DTX).
    pub fn deliveries(&self) -> impl Iterator<Item = (SessionId, Delivery<'_>)> + '_ {
        let rtp_time = self.rtp_time();
        let previous = self.previous_program.as_ref();
        let program = self.program.as_ref().map(|payload| Delivery {
            mix: Mix::Program,
            payload,
            rtp_time,
            previous,
        });
        let talkers = self.talkers.iter().filter_map(move |t| {
            let minus = t.minus.as_ref()?;
            match (&minus.payload, program) {
                (Some(payload), _) => Some((
                    t.id,
                    Delivery {
                        mix: Mix::MixMinus,
                        payload,
                        rtp_time,
                        previous: None,
                    },
                )),
                (None, Some(p)) if minus.hangover == 0 => Some((t.id, p)),
                _ => None,
            }
        });
        let listeners = self
            .listeners
            .iter()
            .filter_map(move |l| program.map(|p| (l, p)));
        let low = self.low.as_ref().and_then(|low| {
            let payload = low.payload.as_ref()?;
            Some(Delivery {
                mix: Mix::LowProgram,
                payload,
                rtp_time: low.rtp_time,
                previous: None,
            })
        });
        let low_listeners = self
            .low_listeners
            .iter()
            .filter_map(move |l| low.map(|d| (l, d)));
        talkers.chain(listeners).chain(low_listeners)
    }

    /// Chooses this tick's mix: the loudest N of the talkers speaking.
    fn select_mix(&mut self) {
        self.candidates.clear();
        for (i, t) in self.talkers.iter_mut().enumerate() {
            // Speaking, not necessarily heard this tick: a talker whose packets
            // stall for a moment keeps their slot through the hang-over.
            if !t.muted && t.loudness.speaking() {
                self.candidates.push((i, t.loudness.level_db(), t.in_mix));
            }
            t.in_mix = false;
        }
        for &(i, _, _) in select_loudest(&mut self.candidates, &self.config.speech) {
            self.talkers[i].in_mix = true;
        }
    }

    /// `quiet`: the talker is neither mixed nor speaking, so an Opus DTX
    /// frame (≤ 2 bytes: silence or comfort noise) from them is not decoded.
    fn play_out(t: &mut Talker, decode: bool, quiet: bool, stats: &mut RoomStats) {
        let playout = t.jitter.pop();
        let dtx = matches!(playout, Playout::Packet(p) if p.len() <= DTX_MAX_LEN);
        if !decode || (quiet && dtx) {
            t.active = false;
            if !matches!(playout, Playout::Silent) {
                stats.decodes_skipped += 1;
            }
            return;
        }
        let result = match playout {
            Playout::Silent => {
                t.active = false;
                return;
            }
            Playout::Packet(p) => {
                stats.decodes += 1;
                t.decoder.decode(p, &mut t.pcm)
            }
            Playout::Lost { next: Some(next) } => {
                stats.fec_recovered += 1;
                t.decoder.decode_fec(next, &mut t.pcm)
            }
            Playout::Lost { next: None } => {
                stats.concealed += 1;
                t.decoder.conceal(&mut t.pcm)
            }
        };
        t.active = result.is_ok();
        if result.is_err() {
            t.decode_errors += 1;
            stats.decode_errors += 1;
        }
    }

    fn encode_minus_mixes(&mut self, idle: bool) {
        let n = self.rate.frame_len();
        for t in &mut self.talkers {
            let Some(minus) = t.minus.as_mut() else {
                continue;
            };
            minus.payload = None;
            let own: &[i16] = if t.in_mix && t.active {
                minus.hangover = self.config.talker_hangover_ticks;
                &t.pcm[..n]
            } else if minus.hangover == 0 || idle {
                minus.hangover = 0;
                continue;
            } else {
                // Hang-over: not in the mix, so their mix-minus is the program,
                // but from their own encoder so their stream stays continuous.
                minus.hangover -= 1;
                &SILENT_FRAME[..n]
            };
            self.bus.minus(own, &mut self.scratch[..n]);
            // `None` here is DTX silence on their own stream: they stay on it.
            minus.payload = encode(
                &mut minus.encoder,
                &self.scratch[..n],
                &mut self.packet,
                &mut self.stats,
            );
        }
    }

    fn program_has_audience(&self) -> bool {
        !self.listeners.is_empty()
            || self.talkers.iter().any(|t| {
                t.minus
                    .as_ref()
                    .is_some_and(|m| m.payload.is_none() && m.hangover == 0)
            })
    }
}

const SILENT_FRAME: Frame = [0; FRAME_SAMPLES];

/// `None`: the mix has no receivers now, its plan stays.
fn plan(encoder: &mut OpusEncoder, pct: Option<u8>) {
    if let Some(Err(e)) = pct.map(|pct| encoder.set_expected_loss(pct)) {
        tracing::warn!(error = %e, "encoder kept its loss plan");
    }
}

/// Encodes one frame; `None` for DTX silence (nothing to send).
fn encode(
    encoder: &mut OpusEncoder,
    pcm: &[i16],
    packet: &mut [u8; MAX_PACKET],
    stats: &mut RoomStats,
) -> Option<Arc<[u8]>> {
    stats.encodes += 1;
    match encoder.encode_samples(pcm, packet) {
        Ok(n) if n > DTX_MAX_LEN => {
            stats.encodes_with_fec += u64::from(carries_fec(&packet[..n]));
            Some(Arc::from(&packet[..n]))
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "encoder failed; frame dropped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{dominant_frequency, relative_db};
    use crate::opus::SAMPLE_RATE;
    use crate::opus::tests::tone_frame;

    /// A talker feeding the room: encodes its tone like a client would.
    struct Source {
        id: SessionId,
        freq: f32,
        encoder: OpusEncoder,
        seq: u64,
        amplitude: f32,
    }

    impl Source {
        fn new(id: u64, freq: f32) -> Self {
            Self {
                id: SessionId(id),
                freq,
                encoder: OpusEncoder::new(EncoderSettings::default()).unwrap(),
                seq: 0,
                amplitude: 0.2,
            }
        }
        fn send(&mut self, room: &mut Room) {
            let mut packet = [0u8; MAX_PACKET];
            let n = self
                .encoder
                .encode(
                    &tone_frame(self.freq, self.amplitude, self.seq as usize),
                    &mut packet,
                )
                .unwrap();
            room.receive(self.id, self.seq, &packet[..n], None);
            self.seq += 1;
        }
    }

    /// Decodes what every member receives.
    #[derive(Default)]
    struct Ears(std::collections::HashMap<SessionId, (OpusDecoder, Vec<i16>)>);

    impl Ears {
        fn hear(&mut self, room: &Room) {
            for (id, d) in room.deliveries() {
                let (dec, pcm) = self
                    .0
                    .entry(id)
                    .or_insert_with(|| (OpusDecoder::new().unwrap(), Vec::new()));
                // 20 ms packets, or 60 ms ones for a low-profile listener.
                let mut out = [0i16; LOW_TICKS * FRAME_SAMPLES];
                let n = dec.decode_any(d.payload(), &mut out).unwrap();
                assert_eq!(n as u32, d.samples(), "{:?}", d.mix);
                pcm.extend_from_slice(&out[..n]);
            }
        }
        fn tail(&self, id: u64) -> &[i16] {
            let pcm = &self.0[&SessionId(id)].1;
            &pcm[pcm.len().saturating_sub(24_000)..]
        }
    }

    #[test]
    fn listeners_share_one_program_encode() {
        let mut room = Room::new(RoomConfig::default()).unwrap();
        let mut speaker = Source::new(1, 440.0);
        room.add_talker(speaker.id, false).unwrap();
        for l in 10..110 {
            room.add_listener(SessionId(l), Profile::Standard).unwrap();
        }
        let mut ears = Ears::default();
        for _ in 0..100 {
            speaker.send(&mut room);
            room.tick();
            ears.hear(&room);
            let payloads: Vec<_> = room
                .deliveries()
                .map(|(_, d)| Arc::as_ptr(d.payload()).cast::<u8>())
                .collect();
            assert!(
                payloads.windows(2).all(|w| w[0] == w[1]),
                "every listener gets the same bytes"
            );
        }
        assert!(
            room.stats().encodes <= 100,
            "one encode per tick, got {}",
            room.stats().encodes
        );
        let hz = dominant_frequency(ears.tail(57), SAMPLE_RATE);
        assert!((hz - 440.0).abs() < 5.0, "listener heard {hz} Hz");
    }

    #[test]
    fn talkers_hear_the_others_and_not_themselves() {
        let mut room = Room::new(RoomConfig::default()).unwrap();
        let mut sources = [
            Source::new(1, 400.0),
            Source::new(2, 650.0),
            Source::new(3, 900.0),
        ];
        for s in &sources {
            room.add_talker(s.id, true).unwrap();
        }
        room.add_listener(SessionId(9), Profile::Standard).unwrap();
        let mut ears = Ears::default();
        talk(&mut room, &mut sources, &mut ears, 100);
        for s in &sources {
            let heard = ears.tail(s.id.0);
            for other in sources.iter().filter(|o| o.id != s.id) {
                let own_vs_other = relative_db(heard, SAMPLE_RATE, s.freq, other.freq);
                assert!(
                    own_vs_other < -30.0,
                    "talker {} hears itself at {own_vs_other} dB",
                    s.id.0
                );
            }
        }
        let program = ears.tail(9);
        for s in &sources {
            assert!(
                relative_db(program, SAMPLE_RATE, s.freq, 400.0).abs() < 3.0,
                "{} Hz missing in program",
                s.freq
            );
        }
        assert!(
            room.stats().encodes <= 4 * 100,
            "≤ talkers + 1 encodes per tick"
        );
    }

    #[test]
    fn an_empty_stage_stops_encoding_and_a_returning_speaker_is_heard() {
        let mut room = Room::new(RoomConfig::default()).unwrap();
        room.add_listener(SessionId(5), Profile::Standard).unwrap();
        for _ in 0..50 {
            room.tick();
        }
        assert_eq!(room.stats().encodes, 0);
        assert_eq!(room.deliveries().count(), 0);
        let mut speaker = Source::new(1, 523.0);
        room.add_talker(speaker.id, false).unwrap();
        let mut ears = Ears::default();
        for _ in 0..60 {
            speaker.send(&mut room);
            room.tick();
            ears.hear(&room);
        }
        let hz = dominant_frequency(ears.tail(5), SAMPLE_RATE);
        assert!((hz - 523.0).abs() < 5.0, "heard {hz}");
    }

    #[test]
    fn garbage_from_a_talker_does_not_disturb_the_others() {
        let mut room = Room::new(RoomConfig::default()).unwrap();
        let mut good = Source::new(1, 440.0);
        room.add_talker(good.id, false).unwrap();
        room.add_talker(SessionId(2), false).unwrap();
        room.add_listener(SessionId(3), Profile::Standard).unwrap();
        let mut ears = Ears::default();
        for i in 0..80u64 {
            good.send(&mut room);
            room.receive(SessionId(2), i, &[0xff, 0xfe, 0x01], None);
            room.tick();
            ears.hear(&room);
        }
        assert!(room.stats().decode_errors > 0);
        let hz = dominant_frequency(ears.tail(3), SAMPLE_RATE);
        assert!((hz - 440.0).abs() < 5.0, "heard {hz}");
    }

    /// `ticks` ticks of every source sending, the room mixing, everyone hearing.
    fn talk(room: &mut Room, sources: &mut [Source], ears: &mut Ears, ticks: usize) {
        for _ in 0..ticks {
            for s in sources.iter_mut() {
                s.send(room);
            }
            room.tick();
            ears.hear(room);
        }
    }

    fn six_talkers() -> (Room, Vec<Source>) {
        let mut room = Room::new(RoomConfig::default()).unwrap();
        let mut sources: Vec<Source> = [300.0, 420.0, 540.0, 660.0, 780.0, 900.0]
            .iter()
            .enumerate()
            .map(|(i, &f)| Source::new(i as u64 + 1, f))
            .collect();
        // Loudest first: 300 Hz at 0.12 … 900 Hz at 0.02.
        for (i, s) in sources.iter_mut().enumerate() {
            s.amplitude = 0.12 - 0.02 * i as f32;
            room.add_talker(s.id, true).unwrap();
        }
        room.add_listener(SessionId(99), Profile::Standard).unwrap();
        (room, sources)
    }

    #[test]
    fn only_the_four_loudest_of_six_talkers_are_mixed() {
        let (mut room, mut sources) = six_talkers();
        let mut ears = Ears::default();
        talk(&mut room, &mut sources, &mut ears, 100);
        let program = ears.tail(99);
        for s in &sources[..4] {
            let rel = relative_db(program, SAMPLE_RATE, s.freq, 300.0);
            assert!(
                rel > -15.0,
                "{} Hz (mixed) is {rel:.1} dB under 300 Hz",
                s.freq
            );
            assert!(room.is_mixed(s.id));
        }
        for s in &sources[4..] {
            let rel = relative_db(program, SAMPLE_RATE, s.freq, 300.0);
            assert!(
                rel < -35.0,
                "{} Hz (not mixed) is heard at {rel:.1} dB",
                s.freq
            );
            assert!(!room.is_mixed(s.id));
        }
        // A mixed talker hears the other three mixed talkers and not itself.
        let second = ears.tail(2);
        assert!(relative_db(second, SAMPLE_RATE, 420.0, 300.0) < -30.0);
        assert!(relative_db(second, SAMPLE_RATE, 660.0, 300.0) > -15.0);
        assert!(room.stats().encodes <= 5 * 100, "≤ N + 1 encodes per tick");
        let speaking: Vec<SessionId> = room.speakers().map(|(id, _)| id).collect();
        assert_eq!(speaking.len(), 6, "all six are speaking, four are mixed");
    }

    #[test]
    fn a_muted_talker_is_heard_by_nobody_until_unmuted() {
        let (mut room, mut sources) = six_talkers();
        sources.truncate(2);
        room.remove(SessionId(3));
        room.remove(SessionId(4));
        room.remove(SessionId(5));
        room.remove(SessionId(6));
        let mut ears = Ears::default();
        assert!(room.set_muted(SessionId(1), true));
        talk(&mut room, &mut sources, &mut ears, 60);
        let before = room.stats().decodes;
        talk(&mut room, &mut sources, &mut ears, 25);
        assert!(
            room.stats().decodes - before <= 25,
            "the muted talker is not decoded"
        );
        let program = ears.tail(99);
        assert!(
            relative_db(program, SAMPLE_RATE, 300.0, 420.0) < -35.0,
            "muted 300 Hz is heard"
        );
        assert!(room.speakers().all(|(id, _)| id != SessionId(1)));
        assert!(room.set_muted(SessionId(1), false));
        talk(&mut room, &mut sources, &mut ears, 60);
        let program = ears.tail(99);
        assert!(
            relative_db(program, SAMPLE_RATE, 300.0, 420.0) > -6.0,
            "unmuted 300 Hz is heard again"
        );
        assert!(
            !room.set_muted(SessionId(99), true),
            "a listener is not a talker"
        );
    }

    #[test]
    fn silent_talkers_cost_no_decode() {
        let mut room = Room::new(RoomConfig::default()).unwrap();
        let mut talking: Vec<Source> = (0..3)
            .map(|i| Source::new(i, 300.0 + 200.0 * i as f32))
            .collect();
        for i in 0..20 {
            room.add_talker(SessionId(i), true).unwrap();
        }
        let mut quiet_encoder = OpusEncoder::new(EncoderSettings::default()).unwrap();
        let mut packet = [0u8; MAX_PACKET];
        for tick in 0..50u64 {
            for s in &mut talking {
                s.send(&mut room);
            }
            // Talker 10 sends packets its client marks as silence (RFC 6464 127).
            let n = quiet_encoder
                .encode(&[0; FRAME_SAMPLES], &mut packet)
                .unwrap();
            room.receive(SessionId(10), tick, &packet[..n], Some(127));
            room.tick();
        }
        let stats = room.stats();
        assert!(
            stats.decodes <= 3 * 50,
            "{} decodes for 3 talkers over 50 ticks",
            stats.decodes
        );
        assert!(
            stats.decodes_skipped >= 45,
            "talker 10's packets were skipped: {stats:?}"
        );
        assert!(stats.encodes <= 4 * 50);
    }

    /// A client in Opus DTX sends TOC-only frames: a talker who is not
    /// speaking costs no decode for them, even without RFC 6464 levels.
    #[test]
    fn dtx_frames_of_a_quiet_talker_are_not_decoded() {
        let mut room = Room::new(RoomConfig::default()).unwrap();
        room.add_talker(SessionId(1), true).unwrap();
        room.add_talker(SessionId(2), true).unwrap();
        for tick in 0..50u64 {
            room.receive(SessionId(1), tick, &[0x48], None);
            room.tick();
        }
        let stats = room.stats();
        assert_eq!(stats.decodes, 0, "{stats:?}");
        assert!(stats.decodes_skipped >= 45, "{stats:?}");
    }

    #[test]
    fn low_profile_listeners_share_one_60ms_encode_under_24_kbps() {
        let mut room = Room::new(RoomConfig::default()).unwrap();
        let mut speaker = Source::new(1, 440.0);
        room.add_talker(speaker.id, false).unwrap();
        room.add_listener(SessionId(2), Profile::Standard).unwrap();
        for l in 10..60 {
            room.add_listener(SessionId(l), Profile::Low).unwrap();
        }
        let mut decoder = OpusDecoder::new().unwrap();
        let (mut heard, mut bytes, mut packets) = (Vec::new(), 0usize, 0usize);
        let ticks = 150;
        for _ in 0..ticks {
            speaker.send(&mut room);
            room.tick();
            let low: Vec<Delivery<'_>> = room
                .deliveries()
                .filter(|(_, d)| d.mix == Mix::LowProgram)
                .map(|(_, d)| d)
                .collect();
            if let Some(d) = low.first() {
                assert_eq!(low.len(), 50, "every low listener gets it");
                assert!(
                    low.iter().all(|x| Arc::ptr_eq(x.payload, d.payload)),
                    "one shared encode"
                );
                assert_eq!(
                    room.rtp_time().wrapping_sub(d.rtp_time),
                    2 * FRAME_SAMPLES as u32
                );
                let mut pcm = [0i16; 6 * FRAME_SAMPLES];
                let n = decoder.decode_any(d.payload, &mut pcm).unwrap();
                assert_eq!(n, 3 * FRAME_SAMPLES, "60 ms packets");
                heard.extend_from_slice(&pcm[..n]);
                bytes += d.payload.len();
                packets += 1;
            }
        }
        assert!(
            (ticks / 3 - 2..=ticks / 3).contains(&packets),
            "{packets} low-rate packets"
        );
        let kbps = bytes as f64 * 8.0 / (ticks as f64 * 0.02) / 1000.0;
        assert!(kbps <= 24.0, "low profile payload {kbps:.1} kb/s");
        let hz = dominant_frequency(&heard[heard.len() - 24_000..], SAMPLE_RATE);
        assert!((hz - 440.0).abs() < 5.0, "low profile heard {hz} Hz");
        // Program (1 per tick) + low program (1 per 3 ticks), whatever the listeners.
        assert!(
            room.stats().encodes <= ticks as u64 + ticks as u64 / 3 + 1,
            "{:?}",
            room.stats()
        );
    }

    /// The audio band of an Opus packet from its TOC byte (RFC 6716 §3.1), Hz.
    fn band_hz(packet: &[u8]) -> u32 {
        match packet[0] >> 3 {
            0..=3 | 16..=19 => 4_000,
            4..=7 => 6_000,
            8..=11 | 20..=23 => 8_000,
            12..=13 | 24..=27 => 12_000,
            _ => 20_000,
        }
    }

    /// A bridge codes wideband speech: 1 kHz and 6 kHz tones pass its
    /// mix-minus and program alike, 11 kHz does not; once the room has
    /// listeners (a rally) the program encoder is the fullband one again.
    #[test]
    fn a_bridge_passes_speech_band_and_a_rally_stays_fullband() {
        let mut room = Room::new(RoomConfig::default()).unwrap();
        let mut sources = [
            Source::new(1, 1_000.0),
            Source::new(2, 6_000.0),
            Source::new(3, 11_000.0),
        ];
        for s in &sources {
            room.add_talker(s.id, true).unwrap();
        }
        room.add_talker(SessionId(4), true).unwrap(); // silent: hears the program
        let mut ears = Ears::default();
        for tick in 0..100 {
            for s in sources.iter_mut() {
                s.send(&mut room);
            }
            room.tick();
            ears.hear(&room);
            // Never more than wideband; the encoder starts narrow on the
            // silence of the jitter buffer's priming and widens within a second.
            for (_, d) in room.deliveries() {
                let band = band_hz(d.payload);
                assert!(band <= 8_000, "tick {tick}: {:?} codes {band} Hz", d.mix);
                assert!(
                    tick < 50 || band == 8_000,
                    "tick {tick}: {:?} {band} Hz",
                    d.mix
                );
            }
        }
        let own = ears.tail(1);
        let rel = relative_db(own, SAMPLE_RATE, 11_000.0, 6_000.0);
        assert!(rel < -30.0, "11 kHz at {rel:.1} dB in a wideband mix-minus");
        let rel = relative_db(own, SAMPLE_RATE, 1_000.0, 6_000.0);
        assert!(rel < -30.0, "the 1 kHz talker hears itself at {rel:.1} dB");
        let program = ears.tail(4);
        let rel = relative_db(program, SAMPLE_RATE, 6_000.0, 1_000.0);
        assert!(rel.abs() < 6.0, "6 kHz is {rel:.1} dB against 1 kHz");
        let rel = relative_db(program, SAMPLE_RATE, 11_000.0, 1_000.0);
        assert!(rel < -30.0, "11 kHz at {rel:.1} dB in a wideband program");

        // A listener joins: the program becomes fullband, mix-minus stays wideband.
        room.add_listener(SessionId(9), Profile::Standard).unwrap();
        for _ in 0..50 {
            for s in sources.iter_mut() {
                s.send(&mut room);
            }
            room.tick();
            ears.hear(&room);
        }
        // The band within the limit is the encoder's choice by content.
        assert_eq!(room.program_encoder.settings(), room.config.encoder);
        for (id, d) in room.deliveries().filter(|(_, d)| d.mix == Mix::MixMinus) {
            let band = band_hz(d.payload);
            assert_eq!(band, 8_000, "member {} gets {:?} at {band} Hz", id.0, d.mix);
        }
    }

    /// A bridge mixed at 16 kHz: talkers hear the others and not themselves,
    /// and what a WHEP listener gets, at the standard and the low profile
    /// alike, is wideband speech (the rally encoder's settings, clamped to
    /// what 16 kHz holds), with the tones of every talker.
    #[test]
    fn a_bridge_at_16_khz_mixes_minus_and_program_in_wideband() {
        let mut room = Room::with_rate(RoomConfig::default(), MixRate::Wide).unwrap();
        let mut sources = [
            Source::new(1, 400.0),
            Source::new(2, 1_000.0),
            Source::new(3, 6_000.0),
            Source::new(4, 11_000.0),
        ];
        for s in &sources {
            room.add_talker(s.id, true).unwrap();
        }
        room.add_listener(SessionId(9), Profile::Standard).unwrap();
        room.add_listener(SessionId(10), Profile::Low).unwrap();
        let mut ears = Ears::default();
        for tick in 0..150 {
            for s in sources.iter_mut() {
                s.send(&mut room);
            }
            room.tick();
            for (id, d) in room.deliveries() {
                let band = band_hz(d.payload);
                assert!(band <= 8_000, "tick {tick}: {} gets {band} Hz", id.0);
            }
            ears.hear(&room);
        }
        let speech = &sources[..3];
        for s in speech {
            let heard = ears.tail(s.id.0);
            for other in speech.iter().filter(|o| o.id != s.id) {
                let own = relative_db(heard, SAMPLE_RATE, s.freq, other.freq);
                assert!(own < -30.0, "talker {} hears itself at {own:.1} dB", s.id.0);
            }
        }
        for (name, program) in [("program", ears.tail(9)), ("low program", ears.tail(10))] {
            for s in &speech[1..] {
                let rel = relative_db(program, SAMPLE_RATE, s.freq, 400.0);
                assert!(rel.abs() < 6.0, "{name}: {} Hz at {rel:.1} dB", s.freq);
            }
            let rel = relative_db(program, SAMPLE_RATE, 11_000.0, 400.0);
            assert!(rel < -30.0, "{name}: 11 kHz at {rel:.1} dB");
        }
        assert_eq!(room.rate(), MixRate::Wide);
    }

    /// Whether what each member receives this tick carries in-band FEC.
    fn fec_by_member(room: &Room) -> impl Iterator<Item = (u64, bool)> + '_ {
        room.deliveries()
            .map(|(id, d)| (id.0, carries_fec(d.payload)))
    }

    #[test]
    fn each_mix_codes_fec_for_the_loss_its_receivers_report() {
        let mut room = Room::with_rate(RoomConfig::default(), MixRate::Wide).unwrap();
        let mut sources = [Source::new(1, 300.0), Source::new(2, 500.0)];
        for s in &sources {
            room.add_talker(s.id, true).unwrap();
        }
        room.add_listener(SessionId(9), Profile::Standard).unwrap();
        let run = |room: &mut Room, sources: &mut [Source], loss: [u8; 3]| {
            let loss_of = |id: SessionId| match id.0 {
                1 => loss[0],
                2 => loss[1],
                _ => loss[2],
            };
            room.plan_for_loss(loss_of);
            let mut with_fec = std::collections::BTreeMap::new();
            for tick in 0..50 {
                for s in sources.iter_mut() {
                    // Syllables: SILK codes FEC only for frames its VAD
                    // takes for speech, and a steady tone soon is not.
                    s.amplitude = if tick / 5 % 2 == 0 { 0.3 } else { 0.06 };
                    s.send(room);
                }
                room.tick();
                // A packet carries the FEC of the frame before: the first
                // after a change may still follow the old plan.
                if tick < 2 {
                    continue;
                }
                for (id, fec) in fec_by_member(room) {
                    *with_fec.entry(id).or_insert(0) += usize::from(fec);
                }
            }
            with_fec
        };
        // Everyone on stage speaking, and mixed.
        run(&mut room, &mut sources, [10, 10, 10]);
        // Before any report: FEC for everyone, as for an unreported path.
        let unplanned = run(&mut room, &mut sources, [10, 10, 10]);
        assert!(unplanned.values().all(|&n| n > 20), "{unplanned:?}");
        let before = room.stats().encodes_with_fec;
        let clean = run(&mut room, &mut sources, [0, 0, 0]);
        assert!(clean.values().all(|&n| n == 0), "{clean:?}");
        // The counter sees the same: at most the two ticks of the change.
        let counted = room.stats().encodes_with_fec - before;
        assert!(counted <= 6, "{counted} encodes with FEC on clean paths");
        // Talker 1 is on a lossy path: their mix-minus codes FEC, and the
        // program, which they hear when silent, does too; talker 2's not.
        let lossy = run(&mut room, &mut sources, [20, 0, 0]);
        assert!(lossy[&1] > 20 && lossy[&9] > 20, "{lossy:?}");
        assert_eq!(lossy[&2], 0, "{lossy:?}");
    }

    /// A mixed talker whose packets stall for 80 ms (still speaking under the
    /// hang-over) keeps their slot; the next in line does not take it.
    #[test]
    fn a_brief_stall_does_not_cost_a_talker_their_slot() {
        let (mut room, mut sources) = six_talkers();
        for _ in 0..50 {
            for s in &mut sources {
                s.send(&mut room);
            }
            room.tick();
        }
        assert!(room.is_mixed(SessionId(1)) && !room.is_mixed(SessionId(5)));
        for tick in 0..30 {
            for s in sources.iter_mut() {
                let stalled = s.id == SessionId(1) && (5..9).contains(&tick);
                if stalled {
                    s.seq += 1; // the packet is lost in the network
                } else {
                    s.send(&mut room);
                }
            }
            room.tick();
            assert!(
                room.is_mixed(SessionId(1)),
                "tick {tick}: the stalled talker lost its slot"
            );
            assert!(
                !room.is_mixed(SessionId(5)),
                "tick {tick}: the fifth talker took a slot"
            );
        }
    }
}
