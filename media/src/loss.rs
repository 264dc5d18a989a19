//! From the loss receivers report to the loss each encoder plans for.
//!
//! Opus's in-band FEC (LBRR) re-codes each speech frame at a lower rate
//! inside the next packet, so one lost packet costs nothing audible; it
//! makes a wideband encode about 20 % dearer and the packet about 40 %
//! bigger (docs/media.md, "In-band FEC follows reported loss"). On a clean
//! path it is all cost, on 3G it is what keeps a word whole. So every encoder is
//! told the loss its receivers report (RTCP, see `rtcp`), and Opus decides:
//! no LBRR at 0 %, and, above 5 %, a narrower band rather than no FEC when
//! the bitrate is short.
//!
//! A mix heard by many (the program) plans for all but the worst 5 % of
//! them beyond the first: one phone in a basement does not make a thousand
//! listeners pay, but twenty on a bad tower do. A receiver that has not
//! reported counts as [`UNREPORTED_PCT`], what every encoder planned for
//! before they reported anything.

use std::time::{Duration, Instant};

/// The loss assumed of a receiver that has not reported (yet, or ever:
/// some SIP phones send no RTCP).
pub const UNREPORTED_PCT: u8 = 10;
/// The most an encoder is told: Opus's FEC decision saturates at 25 %.
pub const MAX_PCT: u8 = 25;
/// A reported peak holds this long against lower reports: loss on mobile
/// comes in bursts, and the FEC should still be there for the next one.
pub const PEAK_HOLD: Duration = Duration::from_secs(10);

/// What one receiver has reported about the stream it gets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReportedLoss {
    /// The highest loss (percent) reported within [`PEAK_HOLD`] of it.
    peak: Option<(u8, Instant)>,
}

impl ReportedLoss {
    /// A report block's fraction lost (in 256ths, RFC 3550 §6.4.1).
    pub fn report(&mut self, now: Instant, fraction_lost: u8) {
        let pct = percent(fraction_lost);
        let replaced = self
            .peak
            .is_none_or(|(peak, at)| replaces(peak, now.saturating_duration_since(at), pct));
        if replaced {
            self.peak = Some((pct, now));
        }
    }

    /// The loss to plan for on this receiver's account, in percent.
    pub fn pct(&self) -> u8 {
        self.peak.map_or(UNREPORTED_PCT, |(pct, _)| pct)
    }
}

/// A fraction lost (in 256ths) in whole percent, at most [`MAX_PCT`].
fn percent(fraction_lost: u8) -> u8 {
    (((u32::from(fraction_lost) * 100 + 128) / 256) as u8).min(MAX_PCT)
}

/// Whether a report of `pct` takes the place of a peak of `peak` percent
/// reported `age` ago: a higher one always, a lower one after the hold.
fn replaces(peak: u8, age: Duration, pct: u8) -> bool {
    pct >= peak || age >= PEAK_HOLD
}

/// The losses of one mix's receivers, counted per percent.
#[derive(Debug, Clone)]
pub struct LossTally {
    counts: [u32; MAX_PCT as usize + 1],
    receivers: u32,
}

impl Default for LossTally {
    fn default() -> Self {
        Self {
            counts: [0; MAX_PCT as usize + 1],
            receivers: 0,
        }
    }
}

impl LossTally {
    pub fn add(&mut self, pct: u8) {
        self.counts[usize::from(pct.min(MAX_PCT))] += 1;
        self.receivers += 1;
    }

    /// The loss that all but the worst 5 % (beyond the first) of the
    /// receivers are within; `None` with no receivers.
    pub fn planned(&self) -> Option<u8> {
        let ignored = self.receivers.checked_sub(1)? / 20;
        let mut worse = 0;
        for (pct, &count) in self.counts.iter().enumerate().rev() {
            worse += count;
            if worse > ignored {
                return Some(pct as u8);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_counts_as_unreported_until_it_reports() {
        assert_eq!(ReportedLoss::default().pct(), UNREPORTED_PCT);
        assert_eq!(percent(0), 0);
        assert_eq!(percent(26), 10, "26/256 ≈ 10 %");
        assert_eq!(percent(255), MAX_PCT, "capped");
        assert!(replaces(0, Duration::ZERO, 10), "a higher report");
        assert!(
            !replaces(MAX_PCT, Duration::ZERO, percent(1)),
            "the peak holds"
        );
    }

    #[test]
    fn a_peak_gives_way_to_lower_reports_after_the_hold() {
        assert!(!replaces(20, PEAK_HOLD / 2, percent(13)));
        assert!(replaces(20, PEAK_HOLD, percent(13)));
        assert_eq!(percent(13), 5);
        assert!(
            replaces(5, PEAK_HOLD, 0),
            "a lower report after the hold replaces it"
        );
    }

    fn tally(losses: &[u8]) -> LossTally {
        let mut t = LossTally::default();
        for &l in losses {
            t.add(l);
        }
        t
    }

    #[test]
    fn a_mix_plans_for_all_but_the_worst_five_percent() {
        assert_eq!(tally(&[]).planned(), None);
        assert_eq!(tally(&[7]).planned(), Some(7));
        // Twenty receivers: the worst one still counts.
        let mut twenty = vec![0; 19];
        twenty.push(20);
        assert_eq!(tally(&twenty).planned(), Some(20));
        // A hundred: the worst four are outvoted, the fifth is not.
        let mut hundred = vec![0u8; 96];
        hundred.extend([25, 25, 20, 15]);
        assert_eq!(tally(&hundred).planned(), Some(0));
        hundred[0] = 3;
        assert_eq!(tally(&hundred).planned(), Some(3));
        assert_eq!(tally(&[200]).planned(), Some(MAX_PCT), "capped");
    }
}
