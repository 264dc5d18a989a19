//! What was heard: tone frequency and level of decoded PCM.
//!
//! Used by the simulation tests and by the load generator to check audio
//! through the server, not merely that packets arrived. Goertzel filters are
//! cheap enough to scan a band, then refine around the peak.

/// Power of `freq` in `pcm` (Goertzel), normalised so a full-scale sine ≈ 0.25.
pub fn tone_power(pcm: &[i16], sample_rate: u32, freq: f32) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * f64::from(freq) / f64::from(sample_rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in pcm {
        let s0 = f64::from(x) / 32768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let n = pcm.len() as f64;
    power / (n * n)
}

/// The strongest frequency between 50 Hz and 4 kHz, to about 0.1 Hz.
///
/// A coarse scan over the first 100 ms (a 10 Hz wide main lobe, so 5 Hz
/// steps cannot step over a tone) finds the region; the whole window then
/// refines it.
pub fn dominant_frequency(pcm: &[i16], sample_rate: u32) -> f32 {
    let best_in = |pcm: &[i16], from: f32, to: f32, step: f32| {
        let mut best = (from, -1.0f64);
        let mut f = from;
        while f <= to {
            let p = tone_power(pcm, sample_rate, f);
            if p > best.1 {
                best = (f, p);
            }
            f += step;
        }
        best.0
    };
    let head = &pcm[..pcm.len().min(sample_rate as usize / 10)];
    let coarse = best_in(head, 50.0, 4000.0, 5.0);
    let mid = best_in(pcm, coarse - 10.0, coarse + 10.0, 1.0);
    best_in(pcm, mid - 1.0, mid + 1.0, 0.1)
}

/// RMS level in dBFS (a full-scale sine reads about −3 dBFS); −120 for silence.
pub fn rms_dbfs(pcm: &[i16]) -> f32 {
    if pcm.is_empty() {
        return -120.0;
    }
    let sum: f64 = pcm.iter().map(|&s| (f64::from(s) / 32768.0).powi(2)).sum();
    let rms = (sum / pcm.len() as f64).sqrt();
    if rms <= 1e-6 {
        -120.0
    } else {
        (20.0 * rms.log10()) as f32
    }
}

/// Level of `freq` relative to `reference` in dB (positive: `freq` is louder).
pub fn relative_db(pcm: &[i16], sample_rate: u32, freq: f32, reference: f32) -> f64 {
    let p = tone_power(pcm, sample_rate, freq).max(1e-20);
    let r = tone_power(pcm, sample_rate, reference).max(1e-20);
    10.0 * (p / r).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, amp: f32, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amp * 32767.0 * (2.0 * std::f32::consts::PI * freq * i as f32 / 48_000.0).sin())
                    as i16
            })
            .collect()
    }

    #[test]
    fn finds_the_tone() {
        for f in [300.0, 440.0, 447.5, 1000.0, 3103.0] {
            let hz = dominant_frequency(&sine(f, 0.3, 24_000), 48_000);
            assert!((hz - f).abs() < 1.0, "{f} read as {hz}");
        }
    }

    #[test]
    fn finds_the_louder_of_two_tones_and_their_ratio() {
        let mut pcm = sine(440.0, 0.3, 24_000);
        for (x, y) in pcm.iter_mut().zip(sine(660.0, 0.03, 24_000)) {
            *x += y;
        }
        assert!((dominant_frequency(&pcm, 48_000) - 440.0).abs() < 1.0);
        let rel = relative_db(&pcm, 48_000, 660.0, 440.0);
        assert!((rel + 20.0).abs() < 1.0, "660 Hz is {rel} dB below 440 Hz");
    }

    #[test]
    fn levels() {
        assert!((rms_dbfs(&sine(440.0, 1.0, 4800)) + 3.0).abs() < 0.2);
        assert_eq!(rms_dbfs(&[0; 960]), -120.0);
    }
}
