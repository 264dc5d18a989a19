//! Opus encode/decode for the mixer, behind a small wrapper.
//!
//! We use `ropus`, a pure-Rust, bit-exact port of libopus: the build needs no
//! cmake or system library, so `cargo run` works on a machine with only the
//! Rust toolchain. The wrapper keeps the choice in one place (a libopus
//! binding would slot in here) and gives the rest of the crate one error type.
//!
//! All audio inside Sabha is 48 kHz mono, 20 ms frames ([`FRAME_SAMPLES`]).
//! Stereo packets from clients are decoded down to mono by the decoder.

use crate::loss::{MAX_PCT, UNREPORTED_PCT};
use ropus::{Bitrate, Channels, DecodeMode, InbandFec, Signal};

/// Sample rate of every PCM buffer in the media core.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms mono frame at 48 kHz: the mixer's tick.
pub const FRAME_SAMPLES: usize = 960;
/// Largest Opus packet we produce or accept (RFC 6716 §3.4: 1275 bytes per frame).
pub const MAX_PACKET: usize = 1500;
/// Encoded frames this short carry no audio (DTX silence): they are not sent.
pub const DTX_MAX_LEN: usize = 2;

/// One 20 ms mono frame at 48 kHz (a room at [`MixRate::Wide`] uses the
/// first [`MixRate::frame_len`] samples).
pub type Frame = [i16; FRAME_SAMPLES];

/// The rate a room decodes, mixes and encodes at. Only PCM changes: Opus's
/// RTP clock is 48 kHz whatever the rate (RFC 7587 §4.1), so timestamps and
/// [`FRAME_SAMPLES`] stay as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MixRate {
    /// 48 kHz: a rally, whose program is fullband.
    #[default]
    Full,
    /// 16 kHz: a bridge, speech in wideband. SILK codes wideband at 16 kHz
    /// inside, so decoders and encoders skip Opus's resamplers, and the
    /// mixer handles a third of the samples (docs/media.md).
    Wide,
}

impl MixRate {
    pub fn hz(self) -> u32 {
        match self {
            MixRate::Full => SAMPLE_RATE,
            MixRate::Wide => 16_000,
        }
    }

    /// Samples in one 20 ms mono frame.
    pub fn frame_len(self) -> usize {
        self.hz() as usize / 50
    }

    /// The widest band PCM at this rate holds: `wanted`, or less.
    fn band(self, wanted: Bandwidth) -> Bandwidth {
        match (self, wanted) {
            (MixRate::Wide, Bandwidth::SuperWide | Bandwidth::Full) => Bandwidth::Wide,
            _ => wanted,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("opus encoder: {0}")]
    Encode(String),
    #[error("opus decoder: {0}")]
    Decode(String),
}

/// The widest audio band an encoder may code (RFC 6716 §2: the encoder
/// picks the mode within it). Speech needs no more than wideband; a phone
/// leg is narrowband anyway. Wideband and below is SILK only, which costs
/// about a third of fullband hybrid SILK + CELT (docs/media.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bandwidth {
    /// 4 kHz audio band (8 kHz sampling).
    Narrow,
    /// 8 kHz audio band (16 kHz sampling).
    Wide,
    /// 12 kHz audio band.
    SuperWide,
    /// 20 kHz audio band; the encoder chooses by bitrate.
    #[default]
    Full,
}

impl Bandwidth {
    fn to_ropus(self) -> ropus::Bandwidth {
        match self {
            Bandwidth::Narrow => ropus::Bandwidth::Narrowband,
            Bandwidth::Wide => ropus::Bandwidth::Wideband,
            Bandwidth::SuperWide => ropus::Bandwidth::Superwideband,
            Bandwidth::Full => ropus::Bandwidth::Fullband,
        }
    }

    /// The highest frequency the band carries, in Hz.
    pub fn top_hz(self) -> u32 {
        match self {
            Bandwidth::Narrow => 4_000,
            Bandwidth::Wide => 8_000,
            Bandwidth::SuperWide => 12_000,
            Bandwidth::Full => 20_000,
        }
    }
}

/// The encoder's tuning (RFC 6716 `OPUS_APPLICATION_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Application {
    /// Speech: favours SILK and intelligibility.
    #[default]
    Voip,
    /// Music and general audio: favours CELT.
    Audio,
}

/// Settings of one encoder. Chosen by measurement, documented in docs/media.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSettings {
    pub bitrate_bps: u32,
    /// 0..=10. Encodes dominate mixer CPU; see `sabha bench` for the trade-off.
    pub complexity: u8,
    /// The widest band coded.
    pub bandwidth: Bandwidth,
    pub application: Application,
    pub inband_fec: bool,
    /// Off by default: Opus DTX classifies a steady tone or hum as background
    /// noise and replaces it with comfort noise after about a second. Rooms
    /// suppress silence themselves (an empty stage sends nothing).
    pub dtx: bool,
}

impl Default for EncoderSettings {
    fn default() -> Self {
        Self {
            bitrate_bps: 32_000,
            complexity: 5,
            bandwidth: Bandwidth::Full,
            application: Application::Voip,
            inband_fec: true,
            dtx: false,
        }
    }
}

/// Encodes the 20 ms frames of one mix.
pub struct OpusEncoder {
    inner: ropus::Encoder,
    settings: EncoderSettings,
    rate: MixRate,
    /// The packet loss (percent) its receivers report, which sizes the
    /// in-band FEC (see `loss`).
    expected_loss: u8,
}

impl OpusEncoder {
    /// An encoder of 48 kHz PCM.
    pub fn new(settings: EncoderSettings) -> Result<Self, CodecError> {
        Self::with_rate(settings, MixRate::Full)
    }

    /// An encoder of PCM at `rate`; at 16 kHz it codes wideband at most,
    /// whatever `settings.bandwidth` asks.
    pub fn with_rate(settings: EncoderSettings, rate: MixRate) -> Result<Self, CodecError> {
        let err = |e: &dyn std::fmt::Display| CodecError::Encode(e.to_string());
        let application = match settings.application {
            Application::Voip => ropus::Application::Voip,
            Application::Audio => ropus::Application::Audio,
        };
        let inner = ropus::Encoder::builder(rate.hz(), Channels::Mono, application)
            .bitrate(bitrate(settings)?)
            .complexity(settings.complexity)
            .max_bandwidth(rate.band(settings.bandwidth).to_ropus())
            .signal(Signal::Voice)
            .inband_fec(inband_fec(settings))
            .packet_loss_perc(loss_perc(settings, UNREPORTED_PCT))
            .dtx(settings.dtx)
            .build()
            .map_err(|e| err(&e))?;
        Ok(Self {
            inner,
            settings,
            rate,
            expected_loss: UNREPORTED_PCT,
        })
    }

    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// Switches to other settings mid-stream, as Opus allows (the encoder
    /// changes mode or band between two frames; the decoder follows). A
    /// different [`Application`] needs a new encoder: that one starts afresh.
    pub fn reconfigure(&mut self, settings: EncoderSettings) -> Result<(), CodecError> {
        if settings == self.settings {
            return Ok(());
        }
        if settings.application != self.settings.application {
            let expected_loss = self.expected_loss;
            *self = Self::with_rate(settings, self.rate)?;
            return self.set_expected_loss(expected_loss);
        }
        let err = |e: ropus::EncodeError| CodecError::Encode(e.to_string());
        self.inner.set_bitrate(bitrate(settings)?).map_err(err)?;
        self.inner
            .set_complexity(settings.complexity)
            .map_err(err)?;
        self.inner
            .set_max_bandwidth(self.rate.band(settings.bandwidth).to_ropus())
            .map_err(err)?;
        self.inner
            .set_inband_fec(inband_fec(settings))
            .map_err(err)?;
        self.inner
            .set_packet_loss_perc(loss_perc(settings, self.expected_loss))
            .map_err(err)?;
        self.inner.set_dtx(settings.dtx).map_err(err)?;
        self.settings = settings;
        Ok(())
    }

    /// Plans the in-band FEC for `pct` percent packet loss (capped at
    /// [`MAX_PCT`]); at 0 the encoder codes none. Kept across
    /// [`reconfigure`](Self::reconfigure); nothing changes while FEC is off
    /// in the settings.
    pub fn set_expected_loss(&mut self, pct: u8) -> Result<(), CodecError> {
        let pct = pct.min(MAX_PCT);
        if pct == self.expected_loss {
            return Ok(());
        }
        self.inner
            .set_packet_loss_perc(loss_perc(self.settings, pct))
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        self.expected_loss = pct;
        Ok(())
    }

    /// The packet loss (percent) the FEC is planned for.
    pub fn expected_loss(&self) -> u8 {
        self.expected_loss
    }

    /// Encodes one 48 kHz frame into `out`, returning the packet length.
    pub fn encode(&mut self, pcm: &Frame, out: &mut [u8; MAX_PACKET]) -> Result<usize, CodecError> {
        self.encode_samples(pcm, out)
    }

    /// Encodes a packet of any Opus duration (2.5 to 60 ms of mono samples
    /// at the encoder's rate).
    pub fn encode_samples(
        &mut self,
        pcm: &[i16],
        out: &mut [u8; MAX_PACKET],
    ) -> Result<usize, CodecError> {
        self.inner
            .encode(pcm, out)
            .map_err(|e| CodecError::Encode(e.to_string()))
    }
}

fn bitrate(settings: EncoderSettings) -> Result<Bitrate, CodecError> {
    Bitrate::try_bits(settings.bitrate_bps).map_err(|e| CodecError::Encode(e.to_string()))
}

fn inband_fec(settings: EncoderSettings) -> InbandFec {
    if settings.inband_fec {
        InbandFec::Enabled
    } else {
        InbandFec::Disabled
    }
}

fn loss_perc(settings: EncoderSettings, expected: u8) -> u8 {
    if settings.inband_fec { expected } else { 0 }
}

/// Whether an Opus packet carries in-band FEC (LBRR) for the frame before
/// it. `false` for anything that does not parse.
pub fn carries_fec(packet: &[u8]) -> bool {
    // ropus indexes the TOC byte before it checks the length.
    !packet.is_empty()
        && ropus::opus::decoder::opus_packet_has_lbrr(packet, packet.len() as i32).unwrap_or(false)
}

/// Decodes one talker's packets, with loss concealment and in-band FEC.
pub struct OpusDecoder {
    inner: ropus::Decoder,
    rate: MixRate,
}

impl OpusDecoder {
    /// A decoder to 48 kHz PCM.
    pub fn new() -> Result<Self, CodecError> {
        Self::with_rate(MixRate::Full)
    }

    /// A decoder to PCM at `rate` (any Opus packet decodes at any rate).
    pub fn with_rate(rate: MixRate) -> Result<Self, CodecError> {
        let inner = ropus::Decoder::new(rate.hz(), Channels::Mono)
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        Ok(Self { inner, rate })
    }

    /// Decodes a packet of any duration into `out` (size it for 120 ms,
    /// 5760 samples, to take anything); returns the samples written.
    pub fn decode_any(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        self.inner
            .decode(packet, out, DecodeMode::Normal)
            .map_err(|e| CodecError::Decode(e.to_string()))
    }

    /// Recovers the `out.len()` samples lost before `next` from `next`'s
    /// in-band FEC (or conceals them when it carries none).
    pub fn decode_fec_any(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        self.inner
            .decode(next, out, DecodeMode::Fec)
            .map_err(|e| CodecError::Decode(e.to_string()))
    }

    /// Decodes a packet holding exactly 20 ms, what talkers send (`ptime` 20),
    /// into the first [`MixRate::frame_len`] samples of `out`. Packets of
    /// other durations are rejected.
    pub fn decode(&mut self, packet: &[u8], out: &mut Frame) -> Result<(), CodecError> {
        self.decode_mode(packet, out, DecodeMode::Normal)
    }

    /// Recovers the frame *before* `next` from `next`'s in-band FEC data,
    /// falling back to concealment inside the decoder when it carries none.
    pub fn decode_fec(&mut self, next: &[u8], out: &mut Frame) -> Result<(), CodecError> {
        self.decode_mode(next, out, DecodeMode::Fec)
    }

    /// Packet loss concealment: synthesises 20 ms from the decoder's state.
    pub fn conceal(&mut self, out: &mut Frame) -> Result<(), CodecError> {
        self.decode_mode(&[], out, DecodeMode::Normal)
    }

    fn decode_mode(
        &mut self,
        packet: &[u8],
        out: &mut Frame,
        mode: DecodeMode,
    ) -> Result<(), CodecError> {
        let want = self.rate.frame_len();
        let n = self
            .inner
            .decode(packet, &mut out[..want], mode)
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        if n != want {
            return Err(CodecError::Decode(format!(
                "packet holds {n} samples, expected {want}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sine tone, frame `index` of a continuous signal.
    pub(crate) fn tone_frame(freq: f32, amplitude: f32, index: usize) -> Frame {
        let mut f = [0i16; FRAME_SAMPLES];
        for (i, s) in f.iter_mut().enumerate() {
            let t = (index * FRAME_SAMPLES + i) as f32 / SAMPLE_RATE as f32;
            *s = (amplitude * 32767.0 * (2.0 * std::f32::consts::PI * freq * t).sin()) as i16;
        }
        f
    }

    #[test]
    fn tone_survives_encode_and_decode() {
        let mut enc = OpusEncoder::new(EncoderSettings::default()).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut packet = [0u8; MAX_PACKET];
        let mut pcm = Vec::new();
        for i in 0..150 {
            let n = enc.encode(&tone_frame(440.0, 0.2, i), &mut packet).unwrap();
            let mut out = [0i16; FRAME_SAMPLES];
            dec.decode(&packet[..n], &mut out).unwrap();
            pcm.extend_from_slice(&out);
        }
        let hz = crate::analysis::dominant_frequency(&pcm[pcm.len() - 24_000..], SAMPLE_RATE);
        assert!((hz - 440.0).abs() < 5.0, "heard {hz} Hz");
    }

    /// Share of 50 wideband speech-band packets that carry FEC, the first
    /// two not counted: a packet carries the FEC of the frame before, so
    /// the first after a change may still follow the old plan.
    fn fec_share(enc: &mut OpusEncoder, from: usize) -> f32 {
        let mut packet = [0u8; MAX_PACKET];
        let mut with = 0;
        for i in from..from + 52 {
            // Syllables: SILK codes FEC only for frames its VAD takes for
            // speech, and a steady tone soon is not.
            let amplitude = if i / 5 % 2 == 0 { 0.3 } else { 0.06 };
            let frame = tone_frame(300.0 + (i % 7) as f32 * 40.0, amplitude, i);
            // 16 kHz: every third sample of a 48 kHz frame.
            let pcm: Vec<i16> = frame.iter().step_by(3).copied().collect();
            let n = enc.encode_samples(&pcm, &mut packet).unwrap();
            if i >= from + 2 {
                with += usize::from(carries_fec(&packet[..n]));
            }
        }
        with as f32 / 50.0
    }

    #[test]
    fn fec_follows_the_expected_loss_and_survives_reconfiguring() {
        let settings = crate::room::BRIDGE_ENCODER;
        let mut enc = OpusEncoder::with_rate(settings, MixRate::Wide).unwrap();
        assert_eq!(enc.expected_loss(), UNREPORTED_PCT);
        assert!(fec_share(&mut enc, 0) > 0.4, "unreported: FEC on");
        enc.set_expected_loss(0).unwrap();
        assert_eq!(fec_share(&mut enc, 50), 0.0, "a clean path: no FEC");
        let louder = EncoderSettings {
            bitrate_bps: 40_000,
            ..settings
        };
        enc.reconfigure(louder).unwrap();
        assert_eq!(fec_share(&mut enc, 100), 0.0, "kept across reconfigure");
        enc.set_expected_loss(200).unwrap();
        assert_eq!(enc.expected_loss(), MAX_PCT);
        assert!(fec_share(&mut enc, 150) > 0.4, "a lossy path: FEC back");
        let no_fec = EncoderSettings {
            inband_fec: false,
            ..louder
        };
        enc.reconfigure(no_fec).unwrap();
        assert_eq!(fec_share(&mut enc, 200), 0.0, "settings without FEC win");
        for garbage in [&[][..], &[0xff; 3], &[0x0b], &[0x4b, 0xff, 0xff]] {
            assert!(!carries_fec(garbage), "{garbage:?}");
        }
    }

    #[test]
    fn concealment_and_fec_produce_full_frames() {
        let mut enc = OpusEncoder::new(EncoderSettings::default()).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut packet = [0u8; MAX_PACKET];
        let mut out = [0i16; FRAME_SAMPLES];
        let n = enc.encode(&tone_frame(440.0, 0.3, 0), &mut packet).unwrap();
        dec.decode(&packet[..n], &mut out).unwrap();
        dec.conceal(&mut out).unwrap();
        let n = enc.encode(&tone_frame(440.0, 0.3, 1), &mut packet).unwrap();
        dec.decode_fec(&packet[..n], &mut out).unwrap();
    }

    #[test]
    fn garbage_packet_is_an_error_not_a_panic() {
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = [0i16; FRAME_SAMPLES];
        for garbage in [
            &[0xffu8; 7][..],
            &[0x03, 0xff, 0xff, 0xff][..],
            &[0xfc; 1][..],
        ] {
            let _ = dec.decode(garbage, &mut out);
        }
    }
}
