//! What a peer heard: its decoded PCM over a window of arrival times, judged
//! for tone, level and continuity. Built on `sabha_media::analysis`
//! (Goertzel power, dominant frequency, RMS).

use std::time::{Duration, Instant};

use sabha_media::analysis::{dominant_frequency, rms_dbfs, tone_power};
use sabha_media::opus::SAMPLE_RATE;

use crate::peer::Heard;

/// Continuity is judged on chunks this long: each must carry the tone.
const CHUNK: Duration = Duration::from_millis(200);
/// Longest acceptable stretch without a packet (20 ms is the norm).
const MAX_GAP: Duration = Duration::from_millis(250);

/// The PCM of the packets that arrived in `[from, to)`, in arrival order.
pub struct Window {
    pub pcm: Vec<i16>,
    pub packets: usize,
    /// The widest audio band of any packet in the window, in Hz.
    pub widest_band_hz: u32,
    /// Longest stretch without a packet, window edges included.
    pub max_gap: Duration,
    pub length: Duration,
}

impl Window {
    pub fn of(heard: &Heard, from: Instant, to: Instant) -> Window {
        let mut pcm = Vec::new();
        let (mut packets, mut last, mut max_gap) = (0, from, Duration::ZERO);
        let mut widest_band_hz = 0;
        for p in heard.packets.iter().filter(|p| p.at >= from && p.at < to) {
            pcm.extend_from_slice(&p.pcm);
            packets += 1;
            widest_band_hz = widest_band_hz.max(p.band_hz);
            max_gap = max_gap.max(p.at.saturating_duration_since(last));
            last = p.at;
        }
        let max_gap = max_gap.max(to.saturating_duration_since(last));
        let length = to.saturating_duration_since(from);
        Window {
            pcm,
            packets,
            widest_band_hz,
            max_gap,
            length,
        }
    }

    /// Seconds of audio decoded in the window, over its length.
    pub fn decoded_fraction(&self) -> f64 {
        self.pcm.len() as f64 / f64::from(SAMPLE_RATE) / self.length.as_secs_f64()
    }
}

/// Level of the strongest line within `hz ± tol_hz`, as a sine's peak
/// amplitude in dBFS (a 0.3 sine reads −10.5).
pub fn tone_dbfs(pcm: &[i16], hz: f64, tol_hz: f64) -> f64 {
    let steps = (tol_hz / 0.25).round() as i32;
    let best = (-steps..=steps)
        .map(|k| tone_power(pcm, SAMPLE_RATE, (hz + f64::from(k) * 0.25) as f32))
        .fold(0.0f64, f64::max);
    // tone_power of a sine of amplitude A is A²/4
    10.0 * (4.0 * best).max(1e-24).log10()
}

/// Share of the signal's power that is the tone at `hz` (±5 Hz): about 1 for
/// a clean tone, near 0 for silence under noise, another tone or a glitch.
fn tone_share(pcm: &[i16], hz: f64) -> f64 {
    let mean_square = pcm
        .iter()
        .map(|&s| (f64::from(s) / 32768.0).powi(2))
        .sum::<f64>()
        / pcm.len().max(1) as f64;
    let power = (-5..=5)
        .map(|k| tone_power(pcm, SAMPLE_RATE, (hz + f64::from(k)) as f32))
        .fold(0.0f64, f64::max);
    if mean_square <= 1e-12 {
        0.0
    } else {
        2.0 * power / mean_square
    }
}

/// A talker must hear every tone of `others` (at −40 dBFS or louder),
/// without gaps, and its own tone at least `below_db` under the weakest.
pub fn mix_minus_problems(w: &Window, own: f64, others: &[f64], below_db: f64) -> Vec<String> {
    let levels: Vec<(f64, f64)> = others
        .iter()
        .map(|&hz| (hz, tone_dbfs(&w.pcm, hz, 5.0)))
        .collect();
    let own_dbfs = tone_dbfs(&w.pcm, own, 5.0);
    eprintln!(
        "{own} Hz talker hears (Hz, dBFS) {levels:.1?}, itself at {own_dbfs:.1} dBFS; {} packets, longest gap {:?}",
        w.packets, w.max_gap
    );
    let mut out = Vec::new();
    for &(hz, dbfs) in &levels {
        if dbfs < -40.0 {
            out.push(format!("does not hear {hz} Hz ({dbfs:.1} dBFS)"));
        }
    }
    let weakest = levels.iter().map(|l| l.1).fold(f64::INFINITY, f64::min);
    if own_dbfs > weakest - below_db {
        out.push(format!(
            "hears itself: own tone {own_dbfs:.1} dBFS, weakest other {weakest:.1} dBFS (need {below_db} dB under it)"
        ));
    }
    if w.decoded_fraction() < 0.85 || w.max_gap > MAX_GAP {
        out.push(format!(
            "gaps: {:.0} % decoded, longest gap {:?}",
            100.0 * w.decoded_fraction(),
            w.max_gap
        ));
    }
    out
}

/// How one receiver heard one expected tone.
#[derive(Debug)]
pub struct ToneCheck {
    pub dominant_hz: f64,
    pub rms_dbfs: f64,
    pub clipped: usize,
    pub decoded_fraction: f64,
    /// Chunks of the window that carry the tone (share ≥ 0.5, > −40 dBFS).
    pub chunks_with_tone: usize,
    pub chunks: usize,
    pub max_gap_ms: u128,
    pub packets: usize,
}

impl ToneCheck {
    pub fn of(w: &Window, hz: f64) -> ToneCheck {
        let chunk = (CHUNK.as_secs_f64() * f64::from(SAMPLE_RATE)) as usize;
        let chunks: Vec<&[i16]> = w.pcm.chunks_exact(chunk).collect();
        let with_tone = chunks
            .iter()
            .filter(|c| tone_share(c, hz) >= 0.5 && rms_dbfs(c) > -40.0)
            .count();
        let dominant = if w.pcm.len() >= chunk {
            f64::from(dominant_frequency(&w.pcm, SAMPLE_RATE))
        } else {
            0.0
        };
        ToneCheck {
            dominant_hz: dominant,
            rms_dbfs: f64::from(rms_dbfs(&w.pcm)),
            clipped: w
                .pcm
                .iter()
                .filter(|&&s| s == i16::MAX || s == i16::MIN)
                .count(),
            decoded_fraction: w.decoded_fraction(),
            chunks_with_tone: with_tone,
            chunks: chunks.len(),
            max_gap_ms: w.max_gap.as_millis(),
            packets: w.packets,
        }
    }

    /// What is wrong with it, in words; empty if it heard `hz` well.
    pub fn problems(&self, hz: f64) -> Vec<String> {
        let mut out = Vec::new();
        if self.packets == 0 {
            return vec!["received no RTP in the window".to_owned()];
        }
        if (self.dominant_hz - hz).abs() > 5.0 {
            out.push(format!("hears {:.1} Hz, not {hz} ± 5", self.dominant_hz));
        }
        if !(-40.0..=-1.0).contains(&self.rms_dbfs) || self.clipped > 0 {
            out.push(format!(
                "level {:.1} dBFS, {} clipped samples",
                self.rms_dbfs, self.clipped
            ));
        }
        if self.decoded_fraction < 0.85 {
            out.push(format!(
                "only {:.0} % of the window decoded",
                100.0 * self.decoded_fraction
            ));
        }
        if self.chunks == 0 || self.chunks_with_tone * 10 < self.chunks * 9 {
            out.push(format!(
                "tone in only {} of {} chunks of {CHUNK:?}",
                self.chunks_with_tone, self.chunks
            ));
        }
        if self.max_gap_ms > MAX_GAP.as_millis() {
            out.push(format!("a {} ms gap between packets", self.max_gap_ms));
        }
        out
    }
}

/// When `hz` was first heard in `[from, to)`: the arrival of the last packet
/// of the first 5-packet run (100 ms at 20 ms ptime) that reads `hz` ± 15 Hz
/// above −40 dBFS.
pub fn first_heard(heard: &Heard, from: Instant, to: Instant, hz: f64) -> Option<Instant> {
    let after: Vec<_> = heard
        .packets
        .iter()
        .filter(|p| p.at >= from && p.at < to)
        .collect();
    after.windows(5).find_map(|run| {
        let pcm: Vec<i16> = run.iter().flat_map(|p| p.pcm.iter().copied()).collect();
        let heard_hz = f64::from(dominant_frequency(&pcm, SAMPLE_RATE));
        ((heard_hz - hz).abs() <= 15.0 && rms_dbfs(&pcm) > -40.0).then(|| run[4].at)
    })
}

/// The checks above fail on what they must catch (synthetic audio, no server).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::Packet;

    const FRAMES: usize = 100; // 2 s of 20 ms packets

    /// `tones` (Hz, amplitude) as 20 ms packets arriving every 20 ms from
    /// `t0`, except the packets in `lost`.
    fn heard(tones: &[(f64, f64)], lost: std::ops::Range<usize>) -> (Heard, Instant) {
        let t0 = Instant::now();
        let frame = 960;
        let packets = (0..FRAMES)
            .filter(|i| !lost.contains(i))
            .map(|i| {
                let pcm = (0..frame)
                    .map(|k| {
                        let t = (i * frame + k) as f64 / f64::from(SAMPLE_RATE);
                        let x: f64 = tones
                            .iter()
                            .map(|&(hz, a)| a * (2.0 * std::f64::consts::PI * hz * t).sin())
                            .sum();
                        (x * 32767.0) as i16
                    })
                    .collect();
                let at = t0 + Duration::from_millis(20 * (i as u64 + 1));
                Packet {
                    at,
                    pcm,
                    band_hz: 20_000,
                }
            })
            .collect();
        let heard = Heard {
            packets,
            decode_errors: 0,
        };
        (heard, t0)
    }

    fn tone_problems(tones: &[(f64, f64)], lost: std::ops::Range<usize>) -> Vec<String> {
        let (h, t0) = heard(tones, lost);
        let w = Window::of(&h, t0, t0 + Duration::from_millis(20 * FRAMES as u64));
        ToneCheck::of(&w, 440.0).problems(440.0)
    }

    fn mix_minus(tones: &[(f64, f64)]) -> Vec<String> {
        let (h, t0) = heard(tones, 0..0);
        let w = Window::of(&h, t0, t0 + Duration::from_millis(20 * FRAMES as u64));
        mix_minus_problems(&w, 440.0, &[660.0, 880.0], 30.0)
    }

    #[test]
    fn tone_check_passes_the_tone_and_fails_the_rest() {
        assert_eq!(tone_problems(&[(440.0, 0.3)], 0..0), Vec::<String>::new());
        let wrong = tone_problems(&[(660.0, 0.3)], 0..0);
        assert!(wrong.iter().any(|p| p.contains("hears 660")), "{wrong:?}");
        let quiet = tone_problems(&[(440.0, 0.001)], 0..0);
        assert!(quiet.iter().any(|p| p.contains("level")), "{quiet:?}");
        let gap = tone_problems(&[(440.0, 0.3)], 40..55);
        assert!(gap.iter().any(|p| p.contains("ms gap")), "{gap:?}");
        let silence = tone_problems(&[], 0..0);
        assert!(!silence.is_empty());
        let nothing = tone_problems(&[(440.0, 0.3)], 0..FRAMES);
        assert!(nothing[0].contains("no RTP"), "{nothing:?}");
    }

    #[test]
    fn mix_minus_flags_an_echo_and_a_missing_talker() {
        let mix = [(660.0, 0.3), (880.0, 0.3)];
        assert_eq!(mix_minus(&mix), Vec::<String>::new());
        // codec by-products 50 dB down are no echo
        let faint = mix_minus(&[(660.0, 0.3), (880.0, 0.3), (440.0, 0.001)]);
        assert_eq!(faint, Vec::<String>::new());
        let echo = mix_minus(&[(660.0, 0.3), (880.0, 0.3), (440.0, 0.3)]);
        assert!(echo.iter().any(|p| p.contains("hears itself")), "{echo:?}");
        let missing = mix_minus(&[(660.0, 0.3)]);
        assert!(missing.iter().any(|p| p.contains("880")), "{missing:?}");
    }

    #[test]
    fn first_heard_is_the_first_run_that_holds_the_tone() {
        let (mut h, t0) = heard(&[(440.0, 0.3)], 0..0);
        for p in &mut h.packets[..30] {
            p.pcm.iter_mut().for_each(|s| *s = 0);
        }
        let end = t0 + Duration::from_secs(10);
        let at = first_heard(&h, t0, end, 440.0).expect("the tone is there");
        assert_eq!(
            at, h.packets[30].at,
            "the first run that holds a tone packet"
        );
        assert_eq!(first_heard(&h, t0, end, 660.0), None);
    }
}
