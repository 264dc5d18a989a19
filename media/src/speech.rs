//! Who is talking, and which talkers enter the mix.
//!
//! A bridge of 200 has a few people talking at any moment. Mixing only the
//! loudest N keeps the mix intelligible and keeps cost tied to talkers, not
//! participants: encodes per tick are at most N + 1. Loudness is each
//! decoded frame's RMS, tracked with an instant attack and a slow release,
//! and a talker who stops stays "speaking" for a hang-over so a pause between
//! words does not cut them out. A talker already in the mix gets a small
//! bonus when ranking, so two similar voices do not flap in and out.

/// Silence, in the level scale used throughout (dBFS, and RFC 6464 −dBov).
pub const SILENCE_DB: f32 = -127.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeechConfig {
    /// N: at most this many talkers are mixed per tick.
    pub max_mixed: usize,
    /// A frame louder than this (RMS dBFS) is speech.
    pub speech_dbfs: f32,
    /// Ticks a talker stays speaking after their last speech frame.
    pub hold_ticks: u32,
    /// How fast the tracked level falls, per tick.
    pub release_db_per_tick: f32,
    /// Ranking bonus of a talker already in the mix.
    pub incumbent_bonus_db: f32,
    /// A packet whose RFC 6464 level (−dBov) is at or above this is silence:
    /// a talker outside the mix sending such packets is not decoded at all.
    pub silent_ext_level: u8,
}

impl Default for SpeechConfig {
    fn default() -> Self {
        Self {
            max_mixed: 4,
            speech_dbfs: -50.0,
            hold_ticks: 25,
            release_db_per_tick: 1.5,
            incumbent_bonus_db: 6.0,
            silent_ext_level: 90,
        }
    }
}

/// One talker's tracked loudness.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loudness {
    level_db: f32,
    hold: u32,
}

impl Default for Loudness {
    fn default() -> Self {
        Self {
            level_db: SILENCE_DB,
            hold: 0,
        }
    }
}

impl Loudness {
    /// Feeds this tick's frame level (`None`: nothing decoded this tick).
    pub fn update(&mut self, frame_db: Option<f32>, config: &SpeechConfig) {
        let now = frame_db.unwrap_or(SILENCE_DB);
        self.level_db = now
            .max(self.level_db - config.release_db_per_tick)
            .max(SILENCE_DB);
        if now > config.speech_dbfs {
            self.hold = config.hold_ticks;
        } else {
            self.hold = self.hold.saturating_sub(1);
        }
    }

    pub fn speaking(&self) -> bool {
        self.hold > 0
    }

    pub fn level_db(&self) -> f32 {
        self.level_db
    }

    /// The level as RFC 6464 −dBov: 0 loudest, 127 silence.
    pub fn rfc6464(&self) -> u8 {
        (-self.level_db).clamp(0.0, 127.0) as u8
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// RMS level of a frame in dBFS (a full-scale sine is about −3).
pub fn frame_dbfs(pcm: &[i16]) -> f32 {
    let sum: i64 = pcm.iter().map(|&s| i64::from(s) * i64::from(s)).sum();
    let mean = sum as f64 / pcm.len() as f64;
    if mean < 1.0 {
        return SILENCE_DB;
    }
    (10.0 * (mean / (32768.0 * 32768.0)).log10()).max(f64::from(SILENCE_DB)) as f32
}

/// Marks which candidates enter the mix: `candidates` holds (talker index,
/// level dB, already in the mix); returns the indices chosen, reordered in
/// place so the first `n` are the winners. Never allocates.
pub fn select_loudest<'a>(
    candidates: &'a mut [(usize, f32, bool)],
    config: &SpeechConfig,
) -> &'a [(usize, f32, bool)] {
    let n = config.max_mixed.min(candidates.len());
    if n < candidates.len() {
        let score =
            |c: &(usize, f32, bool)| c.1 + if c.2 { config.incumbent_bonus_db } else { 0.0 };
        candidates.sort_unstable_by(|a, b| score(b).total_cmp(&score(a)));
    }
    &candidates[..n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opus::FRAME_SAMPLES;

    #[test]
    fn levels_of_frames() {
        assert_eq!(frame_dbfs(&[0; FRAME_SAMPLES]), SILENCE_DB);
        let square = [16_384i16; FRAME_SAMPLES];
        assert!((frame_dbfs(&square) + 6.02).abs() < 0.1);
    }

    #[test]
    fn attack_is_instant_release_is_slow_and_hold_bridges_pauses() {
        let config = SpeechConfig::default();
        let mut l = Loudness::default();
        l.update(Some(-20.0), &config);
        assert_eq!(l.level_db(), -20.0);
        assert!(l.speaking());
        for _ in 0..10 {
            l.update(None, &config);
        }
        assert_eq!(l.level_db(), -35.0);
        assert!(l.speaking(), "a 200 ms pause keeps the talker speaking");
        for _ in 0..config.hold_ticks {
            l.update(None, &config);
        }
        assert!(!l.speaking());
        assert_eq!(l.rfc6464(), 72);
    }

    #[test]
    fn quiet_frames_are_not_speech() {
        let config = SpeechConfig::default();
        let mut l = Loudness::default();
        l.update(Some(-70.0), &config);
        assert!(!l.speaking());
    }

    /// The indices `select_loudest` picks, sorted.
    fn chosen(c: &mut [(usize, f32, bool)], config: &SpeechConfig) -> Vec<usize> {
        let mut picked: Vec<usize> = select_loudest(c, config).iter().map(|c| c.0).collect();
        picked.sort();
        picked
    }

    #[test]
    fn the_loudest_win_and_incumbents_are_sticky() {
        let config = SpeechConfig {
            max_mixed: 2,
            ..SpeechConfig::default()
        };
        let mut c = [
            (0, -30.0, false),
            (1, -10.0, false),
            (2, -20.0, false),
            (3, -40.0, false),
        ];
        assert_eq!(chosen(&mut c, &config), vec![1, 2]);
        // Talker 0 is 4 dB louder than talker 2, but 2 is already mixed.
        let mut c = [(0, -16.0, false), (1, -10.0, true), (2, -20.0, true)];
        assert_eq!(chosen(&mut c, &config), vec![1, 2]);
        let mut few = [(5, -50.0, false)];
        assert_eq!(select_loudest(&mut few, &config).len(), 1);
    }
}
