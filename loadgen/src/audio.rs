//! Pre-encoded audio and the checks of what was heard.
//!
//! Talkers must cost almost nothing, since the load generator shares the
//! machine with the server: a tone is encoded once (one second, 50 frames of
//! 20 ms, a whole number of cycles, so the loop has no seam) and replayed;
//! a silent member replays one DTX frame. The tone comes in syllables, five
//! a second, because the server's encoders treat speech and a steady tone
//! differently: Opus codes in-band FEC only for frames its voice activity
//! detector takes for speech, and it soon stops taking a steady tone. The checks read decoded PCM with
//! `sabha_media::analysis`.

use sabha_media::analysis::{dominant_frequency, rms_dbfs, tone_power};
use sabha_media::opus::{
    CodecError, EncoderSettings, FRAME_SAMPLES, MAX_PACKET, OpusEncoder, SAMPLE_RATE,
};

/// Amplitude of every tone: four of them sum to 1.2 before the mixer's
/// limiter, two to 0.6.
const TONE_AMPLITUDE: f64 = 0.3;
/// Frames in the replayed loop: one second.
pub const LOOP_FRAMES: usize = 50;
/// Syllables per second: the tone's level swings from 1 to 0.2 of
/// [`TONE_AMPLITUDE`] and back this often (a raised cosine, 14 dB deep),
/// a whole number of times per loop.
const SYLLABLES_HZ: f64 = 5.0;
/// Tones of a room's talkers, in join order. Whole hertz, so one second is
/// a whole number of cycles; chosen so that no sum or difference of two or
/// three of them (2a−b, a+b−c) lands within 10 Hz of another.
pub const TALKER_HZ: [u32; 4] = [440, 620, 830, 1070];
/// The rally publisher's tone.
pub const PUBLISHER_HZ: u32 = 440;
/// A heard tone must be at least this loud.
pub const AUDIBLE_DBFS: f64 = -40.0;
/// A talker's own tone must be this far under the weakest other tone.
pub const MIX_MINUS_DB: f64 = 30.0;

/// One second of a tone as Opus packets, ready to replay.
pub struct Clip {
    pub frames: Vec<Vec<u8>>,
}

impl Clip {
    /// Encodes two seconds of `hz` and keeps the second, so the encoder's
    /// state at the loop's start is that of a running tone.
    pub fn tone(hz: u32) -> Result<Clip, CodecError> {
        let mut enc = OpusEncoder::new(EncoderSettings::default())?;
        let mut out = [0u8; MAX_PACKET];
        let mut frame = [0i16; FRAME_SAMPLES];
        let w = 2.0 * std::f64::consts::PI * f64::from(hz) / f64::from(SAMPLE_RATE);
        let mut frames = Vec::with_capacity(LOOP_FRAMES);
        for n in 0..2 * LOOP_FRAMES {
            for (i, s) in frame.iter_mut().enumerate() {
                let t = ((n % LOOP_FRAMES) * FRAME_SAMPLES + i) as f64;
                *s = (TONE_AMPLITUDE * envelope(t) * (w * t).sin() * f64::from(i16::MAX)) as i16;
            }
            let len = enc.encode(&frame, &mut out)?;
            if n >= LOOP_FRAMES {
                frames.push(out[..len].to_vec());
            }
        }
        Ok(Clip { frames })
    }

    /// The frame a DTX encoder sends for silence (a packet of a byte or
    /// two), as one frame.
    pub fn silence() -> Result<Clip, CodecError> {
        let settings = EncoderSettings {
            dtx: true,
            ..EncoderSettings::default()
        };
        let mut enc = OpusEncoder::new(settings)?;
        let mut out = [0u8; MAX_PACKET];
        let mut len = 0;
        for _ in 0..LOOP_FRAMES {
            len = enc.encode(&[0i16; FRAME_SAMPLES], &mut out)?;
        }
        Ok(Clip {
            frames: vec![out[..len].to_vec()],
        })
    }
}

/// The syllables' level at sample `t`: 1 at the start of each, 0.2 halfway.
fn envelope(t: f64) -> f64 {
    let phase = 2.0 * std::f64::consts::PI * SYLLABLES_HZ * t / f64::from(SAMPLE_RATE);
    0.6 + 0.4 * phase.cos()
}

/// Level of `hz` in `pcm`, as the dBFS (RMS) of a sine that strong; the best
/// of `hz` ± 1 Hz.
pub fn tone_dbfs(pcm: &[i16], hz: u32) -> f64 {
    let p = [-1.0f32, 0.0, 1.0]
        .iter()
        .map(|d| tone_power(pcm, SAMPLE_RATE, hz as f32 + d))
        .fold(0.0f64, f64::max);
    // A sine of amplitude a has power a²/4 and RMS² a²/2.
    10.0 * (2.0 * p).max(1e-12).log10()
}

/// What one sampled peer heard, and whether that is right.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub peer: usize,
    pub role: String,
    /// Tones it should hear.
    pub want_hz: Vec<u32>,
    /// Its own tone, which it must not hear (a bridge talker).
    pub own_hz: Option<u32>,
    /// The strongest frequency it heard.
    pub heard_hz: f32,
    pub rms_dbfs: f32,
    /// dBFS of each wanted tone, in `want_hz` order.
    pub want_dbfs: Vec<f64>,
    pub own_dbfs: Option<f64>,
    pub samples: usize,
    pub ok: bool,
    pub problem: Option<String>,
}

impl Verdict {
    /// Judges the last second of `pcm`.
    pub fn judge(
        peer: usize,
        role: &str,
        pcm: &[i16],
        want_hz: &[u32],
        own_hz: Option<u32>,
    ) -> Verdict {
        let second = SAMPLE_RATE as usize;
        let tail = &pcm[pcm.len().saturating_sub(second)..];
        let mut v = Verdict {
            peer,
            role: role.to_owned(),
            want_hz: want_hz.to_vec(),
            own_hz,
            heard_hz: 0.0,
            rms_dbfs: rms_dbfs(tail),
            want_dbfs: want_hz.iter().map(|&hz| tone_dbfs(tail, hz)).collect(),
            own_dbfs: own_hz.map(|hz| tone_dbfs(tail, hz)),
            samples: pcm.len(),
            ok: false,
            problem: None,
        };
        v.problem = v.find_problem(tail);
        v.ok = v.problem.is_none();
        v
    }

    fn find_problem(&mut self, tail: &[i16]) -> Option<String> {
        if tail.len() < SAMPLE_RATE as usize / 2 {
            return Some(format!("only {} samples decoded", self.samples));
        }
        self.heard_hz = dominant_frequency(tail, SAMPLE_RATE);
        if self.want_hz.len() == 1 && (self.heard_hz - self.want_hz[0] as f32).abs() > 2.0 {
            return Some(format!(
                "heard {:.1} Hz, want {} Hz",
                self.heard_hz, self.want_hz[0]
            ));
        }
        for (&hz, &db) in self.want_hz.iter().zip(&self.want_dbfs) {
            if db < AUDIBLE_DBFS {
                return Some(format!("{hz} Hz at {db:.1} dBFS (< {AUDIBLE_DBFS})"));
            }
        }
        if let (Some(own), Some(own_db)) = (self.own_hz, self.own_dbfs) {
            let weakest = self.want_dbfs.iter().copied().fold(f64::INFINITY, f64::min);
            if own_db > weakest - MIX_MINUS_DB {
                return Some(format!(
                    "hears itself: own {own} Hz at {own_db:.1} dBFS, weakest other {weakest:.1} dBFS"
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sabha_media::opus::OpusDecoder;

    fn decode(clip: &Clip, loops: usize) -> Vec<i16> {
        let mut dec = OpusDecoder::new().unwrap();
        let mut pcm = Vec::new();
        let mut out = vec![0i16; 5760];
        for _ in 0..loops {
            for f in &clip.frames {
                let n = dec.decode_any(f, &mut out).unwrap();
                pcm.extend_from_slice(&out[..n]);
            }
        }
        pcm
    }

    #[test]
    fn a_replayed_tone_reads_as_its_frequency() {
        let clip = Clip::tone(620).unwrap();
        assert_eq!(clip.frames.len(), LOOP_FRAMES);
        let pcm = decode(&clip, 2);
        let v = Verdict::judge(0, "listener", &pcm, &[620], None);
        assert!(v.ok, "{v:?}");
        let wrong = Verdict::judge(0, "listener", &pcm, &[440], None);
        assert!(!wrong.ok, "{wrong:?}");
    }

    /// Frames of the second second of `pcm` that a bridge encoder, planning
    /// for 10 % loss, codes with FEC.
    fn fec_frames(pcm: &[i16]) -> usize {
        let settings = sabha_media::room::BRIDGE_ENCODER;
        let mut enc = OpusEncoder::with_rate(settings, sabha_media::MixRate::Full).unwrap();
        let mut out = [0u8; MAX_PACKET];
        let mut with_fec = 0;
        for (n, frame) in pcm.chunks_exact(FRAME_SAMPLES).enumerate() {
            let len = enc.encode_samples(frame, &mut out).unwrap();
            with_fec +=
                usize::from(n >= LOOP_FRAMES && sabha_media::opus::carries_fec(&out[..len]));
        }
        with_fec
    }

    /// The server codes FEC only for what Opus takes for speech: the
    /// syllables pass for it, their level swings, and a steady tone does not.
    #[test]
    fn a_tone_in_syllables_passes_for_speech() {
        let pcm = decode(&Clip::tone(440).unwrap(), 2);
        let frame_dbfs: Vec<f32> = pcm.chunks(FRAME_SAMPLES).map(rms_dbfs).collect();
        let (lo, hi) = frame_dbfs[LOOP_FRAMES..]
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &d| (lo.min(d), hi.max(d)));
        assert!(hi - lo > 10.0, "level swings {lo:.1}..{hi:.1} dBFS");
        let syllables = fec_frames(&pcm);
        assert!(syllables >= 20, "{syllables} of 50 frames coded with FEC");
        let w = 2.0 * std::f64::consts::PI * 440.0 / f64::from(SAMPLE_RATE);
        let steady: Vec<i16> = (0..pcm.len())
            .map(|t| (TONE_AMPLITUDE * (w * t as f64).sin() * f64::from(i16::MAX)) as i16)
            .collect();
        assert_eq!(fec_frames(&steady), 0, "a steady tone is no speech to Opus");
    }

    #[test]
    fn mix_minus_fails_when_a_talker_hears_itself() {
        let (a, b) = (
            decode(&Clip::tone(440).unwrap(), 1),
            decode(&Clip::tone(620).unwrap(), 1),
        );
        let mix: Vec<i16> = a.iter().zip(&b).map(|(x, y)| x / 2 + y / 2).collect();
        assert!(Verdict::judge(0, "talker", &b, &[620], Some(440)).ok);
        let echo = Verdict::judge(0, "talker", &mix, &[620], Some(440));
        assert!(!echo.ok, "{echo:?}");
    }

    #[test]
    fn silence_is_a_tiny_frame_and_reads_as_silence() {
        let clip = Clip::silence().unwrap();
        assert!(clip.frames[0].len() <= 3, "{} bytes", clip.frames[0].len());
        let v = Verdict::judge(0, "silent", &decode(&clip, 50), &[440], None);
        assert!(!v.ok);
    }
}
