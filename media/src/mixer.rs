//! Mix arithmetic: one program mix and a mix-minus per talker from one sum.
//!
//! Samples are summed into an `i32` accumulator, so the program (clamped to
//! `i16`) can clip while a talker's mix-minus — computed from the unclamped
//! sum minus their own frame — stays exact: a loud talker never hears their
//! own clipping artefacts folded into everyone else.
//!
//! Frames are slices: a room at 16 kHz mixes the first 320 samples of the
//! bus, one at 48 kHz all 960. Every frame of one tick has the same length.

use crate::opus::FRAME_SAMPLES;

pub struct MixBus {
    acc: Box<[i32; FRAME_SAMPLES]>,
    contributors: usize,
}

impl Default for MixBus {
    fn default() -> Self {
        Self {
            acc: Box::new([0; FRAME_SAMPLES]),
            contributors: 0,
        }
    }
}

impl MixBus {
    /// Starts a new tick.
    pub fn clear(&mut self) {
        self.acc.fill(0);
        self.contributors = 0;
    }

    pub fn add(&mut self, frame: &[i16]) {
        for (a, &s) in self.acc.iter_mut().zip(frame) {
            *a += i32::from(s);
        }
        self.contributors += 1;
    }

    /// How many frames were added this tick.
    pub fn contributors(&self) -> usize {
        self.contributors
    }

    /// Everyone, clamped to 16 bits.
    pub fn program(&self, out: &mut [i16]) {
        for (o, &a) in out.iter_mut().zip(self.acc.iter()) {
            *o = saturate(a);
        }
    }

    /// Everyone but `own`, clamped to 16 bits.
    pub fn minus(&self, own: &[i16], out: &mut [i16]) {
        for ((o, &a), &s) in out.iter_mut().zip(self.acc.iter()).zip(own) {
            *o = saturate(a - i32::from(s));
        }
    }
}

fn saturate(x: i32) -> i16 {
    x.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opus::Frame;

    fn frame(v: i16) -> Frame {
        [v; FRAME_SAMPLES]
    }

    #[test]
    fn program_is_the_sum_and_minus_removes_only_self() {
        let mut bus = MixBus::default();
        let (a, b, c) = (frame(100), frame(-30), frame(7));
        bus.add(&a);
        bus.add(&b);
        bus.add(&c);
        let mut out = frame(0);
        bus.program(&mut out);
        assert_eq!(out[0], 77);
        bus.minus(&a, &mut out);
        assert_eq!(out[0], -23);
        bus.minus(&b, &mut out);
        assert_eq!(out[0], 107);
        assert_eq!(bus.contributors(), 3);
    }

    #[test]
    fn program_clips_but_minus_uses_the_exact_sum() {
        let mut bus = MixBus::default();
        let loud = frame(30_000);
        let quiet = frame(5_000);
        bus.add(&loud);
        bus.add(&loud);
        bus.add(&quiet);
        let mut out = frame(0);
        bus.program(&mut out);
        assert_eq!(out[0], i16::MAX);
        bus.minus(&loud, &mut out);
        assert_eq!(out[0], i16::MAX, "30000 + 5000 still clips");
        let mut bus = MixBus::default();
        bus.add(&frame(i16::MIN));
        bus.add(&frame(i16::MIN));
        bus.add(&quiet);
        bus.program(&mut out);
        assert_eq!(out[0], i16::MIN);
        bus.minus(&frame(i16::MIN), &mut out);
        assert_eq!(out[0], i16::MIN + 5_000);
    }

    #[test]
    fn clear_starts_a_new_tick() {
        let mut bus = MixBus::default();
        bus.add(&frame(9));
        bus.clear();
        let mut out = frame(1);
        bus.program(&mut out);
        assert_eq!(out, frame(0));
        assert_eq!(bus.contributors(), 0);
    }
}

/// Property: for any frames (extremes included) and any number of
/// contributors, `program` and `minus` equal the clamped exact sum: no
/// wrap-around, no contributor's sample lost.
#[cfg(test)]
mod props {
    use super::*;
    use crate::opus::Frame;
    use proptest::prelude::*;

    /// A frame that is mostly one of the extremes, or arbitrary samples.
    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            prop_oneof![
                Just(i16::MIN),
                Just(i16::MAX),
                Just(0),
                Just(-1),
                any::<i16>()
            ]
            .prop_map(|v| [v; FRAME_SAMPLES]),
            proptest::collection::vec(any::<i16>(), FRAME_SAMPLES)
                .prop_map(|v| v.try_into().expect("FRAME_SAMPLES samples")),
        ]
    }

    fn clamp(x: i64) -> i16 {
        x.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn program_and_minus_never_wrap(
            frames in proptest::collection::vec(frame(), 0..40),
        ) {
            let mut bus = MixBus::default();
            for f in &frames {
                bus.add(f);
            }
            prop_assert_eq!(bus.contributors(), frames.len());
            let sum: Vec<i64> = (0..FRAME_SAMPLES)
                .map(|i| frames.iter().map(|f| i64::from(f[i])).sum())
                .collect();
            let mut out = [0i16; FRAME_SAMPLES];
            bus.program(&mut out);
            for i in 0..FRAME_SAMPLES {
                prop_assert_eq!(out[i], clamp(sum[i]), "program sample {}", i);
            }
            for own in &frames {
                bus.minus(own, &mut out);
                for i in 0..FRAME_SAMPLES {
                    prop_assert_eq!(out[i], clamp(sum[i] - i64::from(own[i])), "minus sample {}", i);
                }
            }
        }

        /// Many full-scale talkers: the `i32` accumulator holds 65 535 of
        /// them exactly (2³¹ / 2¹⁵), far more than any stage.
        #[test]
        fn many_extreme_contributors_do_not_overflow(n in 1usize..2_000, loud in any::<bool>()) {
            let v = if loud { i16::MAX } else { i16::MIN };
            let f = [v; FRAME_SAMPLES];
            let mut bus = MixBus::default();
            for _ in 0..n {
                bus.add(&f);
            }
            let mut out = [0i16; FRAME_SAMPLES];
            bus.program(&mut out);
            prop_assert!(out.iter().all(|&s| s == v || n == 0));
            bus.minus(&f, &mut out);
            let expect = clamp(i64::from(v) * (n as i64 - 1));
            prop_assert!(out.iter().all(|&s| s == expect));
        }
    }
}
