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

use std::sync::Arc;

use crate::SessionId;
use crate::jitter::{JitterBuffer, JitterStats, Playout};
use crate::mixer::MixBus;
use crate::opus::{
    CodecError, DTX_MAX_LEN, EncoderSettings, FRAME_SAMPLES, Frame, MAX_PACKET, OpusDecoder,
    OpusEncoder,
};

/// Tunables of every room, chosen by measurement (docs/media.md).
#[derive(Debug, Clone, Copy)]
pub struct RoomConfig {
    /// Frames a talker's jitter buffer holds before playout (20 ms each).
    pub jitter_depth: usize,
    pub encoder: EncoderSettings,
    /// Ticks a talker keeps their own mix-minus after their last frame, so a
    /// pause between words does not flip them between two encoders.
    pub talker_hangover_ticks: u32,
    /// Ticks of an empty stage after which the room stops encoding silence.
    pub idle_after_ticks: u32,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            jitter_depth: 2,
            encoder: EncoderSettings::default(),
            talker_hangover_ticks: 50,
            idle_after_ticks: 10,
        }
    }
}

struct Talker {
    id: SessionId,
    jitter: JitterBuffer,
    decoder: OpusDecoder,
    /// This tick's decoded frame, when `active`.
    pcm: Box<Frame>,
    active: bool,
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

/// What one member receives this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery<'a> {
    Program(&'a Arc<[u8]>),
    MixMinus(&'a Arc<[u8]>),
}

impl<'a> Delivery<'a> {
    pub fn payload(self) -> &'a Arc<[u8]> {
        match self {
            Delivery::Program(p) | Delivery::MixMinus(p) => p,
        }
    }
}

/// Counters of one room.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoomStats {
    pub ticks: u64,
    pub encodes: u64,
    pub decodes: u64,
    pub concealed: u64,
    pub fec_recovered: u64,
    pub decode_errors: u64,
}

pub struct Room {
    config: RoomConfig,
    talkers: Vec<Talker>,
    listeners: Vec<SessionId>,
    bus: MixBus,
    program_encoder: OpusEncoder,
    program: Option<Arc<[u8]>>,
    scratch: Box<Frame>,
    packet: Box<[u8; MAX_PACKET]>,
    idle_ticks: u32,
    tick: u64,
    stats: RoomStats,
}

impl Room {
    pub fn new(config: RoomConfig) -> Result<Self, CodecError> {
        Ok(Self {
            config,
            talkers: Vec::new(),
            listeners: Vec::new(),
            bus: MixBus::default(),
            program_encoder: OpusEncoder::new(config.encoder)?,
            program: None,
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
                encoder: OpusEncoder::new(self.config.encoder)?,
                hangover: 0,
                payload: None,
            })
        } else {
            None
        };
        self.talkers.push(Talker {
            id,
            jitter: JitterBuffer::new(self.config.jitter_depth),
            decoder: OpusDecoder::new()?,
            pcm: Box::new([0; FRAME_SAMPLES]),
            active: false,
            minus,
            decode_errors: 0,
        });
        Ok(())
    }

    pub fn add_listener(&mut self, id: SessionId) {
        self.listeners.push(id);
    }

    pub fn remove(&mut self, id: SessionId) {
        self.talkers.retain(|t| t.id != id);
        self.listeners.retain(|&l| l != id);
    }

    pub fn is_empty(&self) -> bool {
        self.talkers.is_empty() && self.listeners.is_empty()
    }

    pub fn members(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.talkers
            .iter()
            .map(|t| t.id)
            .chain(self.listeners.iter().copied())
    }

    pub fn stats(&self) -> RoomStats {
        self.stats
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

    /// An Opus payload from a talker. Unknown senders are ignored.
    pub fn receive(&mut self, from: SessionId, seq: u64, payload: &[u8]) {
        if let Some(t) = self.talkers.iter_mut().find(|t| t.id == from) {
            t.jitter.insert(seq, payload);
        }
    }

    /// Runs one 20 ms tick: play out, decode, mix, encode.
    pub fn tick(&mut self) {
        self.tick += 1;
        self.stats.ticks += 1;
        self.bus.clear();
        for t in &mut self.talkers {
            Self::play_out(t, &mut self.stats);
            if t.active {
                self.bus.add(&t.pcm);
            }
        }
        self.idle_ticks = if self.bus.contributors() > 0 {
            0
        } else {
            self.idle_ticks.saturating_add(1)
        };
        let idle = self.idle_ticks > self.config.idle_after_ticks;
        self.encode_minus_mixes(idle);
        self.program = None;
        if !idle && self.program_has_audience() {
            self.bus.program(&mut self.scratch);
            self.program = encode(
                &mut self.program_encoder,
                &self.scratch,
                &mut self.packet,
                &mut self.stats,
            );
        }
    }

    /// Who receives what this tick. Members not listed receive nothing (DTX).
    pub fn deliveries(&self) -> impl Iterator<Item = (SessionId, Delivery<'_>)> + '_ {
        let program = self.program.as_ref();
        let talkers = self.talkers.iter().filter_map(move |t| {
            let minus = t.minus.as_ref()?;
            match (&minus.payload, program) {
                (Some(p), _) => Some((t.id, Delivery::MixMinus(p))),
                (None, Some(p)) if minus.hangover == 0 => Some((t.id, Delivery::Program(p))),
                _ => None,
            }
        });
        let listeners = self
            .listeners
            .iter()
            .filter_map(move |&l| program.map(|p| (l, Delivery::Program(p))));
        talkers.chain(listeners)
    }

    fn play_out(t: &mut Talker, stats: &mut RoomStats) {
        let result = match t.jitter.pop() {
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
        for t in &mut self.talkers {
            let Some(minus) = t.minus.as_mut() else {
                continue;
            };
            minus.payload = None;
            if t.active {
                minus.hangover = self.config.talker_hangover_ticks;
            } else if minus.hangover == 0 || idle {
                minus.hangover = 0;
                continue;
            } else {
                minus.hangover -= 1;
                t.pcm.fill(0);
            }
            self.bus.minus(&t.pcm, &mut self.scratch);
            // `None` here is DTX silence on their own stream: they stay on it.
            minus.payload = encode(
                &mut minus.encoder,
                &self.scratch,
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

/// Encodes one frame; `None` for DTX silence (nothing to send).
fn encode(
    encoder: &mut OpusEncoder,
    pcm: &Frame,
    packet: &mut [u8; MAX_PACKET],
    stats: &mut RoomStats,
) -> Option<Arc<[u8]>> {
    stats.encodes += 1;
    match encoder.encode(pcm, packet) {
        Ok(n) if n > DTX_MAX_LEN => Some(Arc::from(&packet[..n])),
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
    }

    impl Source {
        fn new(id: u64, freq: f32) -> Self {
            Self {
                id: SessionId(id),
                freq,
                encoder: OpusEncoder::new(EncoderSettings::default()).unwrap(),
                seq: 0,
            }
        }
        fn send(&mut self, room: &mut Room) {
            let mut packet = [0u8; MAX_PACKET];
            let n = self
                .encoder
                .encode(&tone_frame(self.freq, 0.2, self.seq as usize), &mut packet)
                .unwrap();
            room.receive(self.id, self.seq, &packet[..n]);
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
                let mut out = [0i16; FRAME_SAMPLES];
                dec.decode(d.payload(), &mut out).unwrap();
                pcm.extend_from_slice(&out);
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
            room.add_listener(SessionId(l));
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
        room.add_listener(SessionId(9));
        let mut ears = Ears::default();
        for _ in 0..100 {
            for s in &mut sources {
                s.send(&mut room);
            }
            room.tick();
            ears.hear(&room);
        }
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
        room.add_listener(SessionId(5));
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
        room.add_listener(SessionId(3));
        let mut ears = Ears::default();
        for i in 0..80u64 {
            good.send(&mut room);
            room.receive(SessionId(2), i, &[0xff, 0xfe, 0x01]);
            room.tick();
            ears.hear(&room);
        }
        assert!(room.stats().decode_errors > 0);
        let hz = dominant_frequency(ears.tail(3), SAMPLE_RATE);
        assert!((hz - 440.0).abs() < 5.0, "heard {hz}");
    }
}
