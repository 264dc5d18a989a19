//! When a scheduled room is open: its windows, from `starts_at`/`ends_at`,
//! the zone they are written in, and an RRULE subset.
//!
//! A weekly rally is "Mondays at 18:00 in Asia/Kolkata", not "every 604,800
//! seconds": occurrences are computed in the room's zone, at the first
//! window's wall-clock time, so a zone with daylight saving keeps the local
//! time and a zone without it (India's) is plain arithmetic. Each window is
//! as long as the first.
//!
//! The rule subset is what operators need for evening bridges and weekly
//! rallies (RFC 5545 §3.3.10 names): `FREQ=DAILY|WEEKLY`, `INTERVAL=n`,
//! `BYDAY=MO,TU,…` (weekly only), and at most one of `COUNT=n` and
//! `UNTIL=…` (RFC 3339, or the RFC 5545 form `20261231T235959Z`). Anything
//! else is refused when the room is created, with the reason.
//!
//! Pure functions of the room and an instant: the scheduler, the session
//! handlers and the conflict check all ask the same [`Schedule`].

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

use crate::backend::Room;

/// Most occurrences of one series (with `COUNT`).
pub const MAX_COUNT: u32 = 1000;
/// Largest `INTERVAL`.
pub const MAX_INTERVAL: u32 = 365;
/// How far ahead an open-ended series is looked at: conflicts and the
/// next window are found within it.
pub const HORIZON: SignedDuration = SignedDuration::from_hours(24 * 400);
/// Longest window: a day.
pub const MAX_WINDOW: SignedDuration = SignedDuration::from_hours(24);

/// One open period of a room, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }

    pub fn overlaps(&self, other: &Window) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// How often.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frequency {
    Daily,
    Weekly,
}

/// Where a series stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeriesEnd {
    /// After this many occurrences, the first included.
    Count(u32),
    /// No occurrence starts after this instant.
    Until(Timestamp),
}

/// A parsed rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recurrence {
    pub frequency: Frequency,
    pub interval: u32,
    /// Weekly only; empty: the first window's weekday.
    pub by_day: Vec<Weekday>,
    pub end: Option<SeriesEnd>,
}

/// Why a rule or a schedule is refused. Shown to the operator (422).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("recurrence: {0}")]
    Rule(String),
    #[error("a recurrence needs starts_at and ends_at")]
    RuleWithoutWindow,
    #[error("a window may last at most 24 hours")]
    TooLong,
    #[error("unknown time zone {0:?}")]
    Zone(String),
}

fn rule_error(text: impl Into<String>) -> ScheduleError {
    ScheduleError::Rule(text.into())
}

fn weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "MO" => Weekday::Monday,
        "TU" => Weekday::Tuesday,
        "WE" => Weekday::Wednesday,
        "TH" => Weekday::Thursday,
        "FR" => Weekday::Friday,
        "SA" => Weekday::Saturday,
        "SU" => Weekday::Sunday,
        _ => return None,
    })
}

fn until(text: &str) -> Option<Timestamp> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Some(t);
    }
    // RFC 5545 UTC form: 20261231T235959Z.
    let digits = text.strip_suffix('Z')?;
    let dt: DateTime = jiff::fmt::strtime::parse("%Y%m%dT%H%M%S", digits)
        .ok()?
        .to_datetime()
        .ok()?;
    dt.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

impl Recurrence {
    /// Parses `FREQ=WEEKLY;BYDAY=MO,TH;COUNT=10` (an `RRULE:` prefix is
    /// allowed; names are case-insensitive).
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let text = text.trim();
        let text = text
            .strip_prefix("RRULE:")
            .or_else(|| text.strip_prefix("rrule:"))
            .unwrap_or(text);
        let (mut frequency, mut interval, mut by_day, mut end) = (None, None, None, None);
        for part in text.split(';').filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| rule_error(format!("{part:?} is not NAME=VALUE")))?;
            let value = value.trim().to_ascii_uppercase();
            let duplicate = || rule_error(format!("{name} is given twice"));
            match name.trim().to_ascii_uppercase().as_str() {
                "FREQ" => {
                    let f = match value.as_str() {
                        "DAILY" => Frequency::Daily,
                        "WEEKLY" => Frequency::Weekly,
                        other => {
                            return Err(rule_error(format!(
                                "FREQ={other} is not supported (DAILY or WEEKLY)"
                            )));
                        }
                    };
                    if frequency.replace(f).is_some() {
                        return Err(duplicate());
                    }
                }
                "INTERVAL" => {
                    let n: u32 = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_INTERVAL).contains(n))
                        .ok_or_else(|| {
                            rule_error(format!("INTERVAL must be 1 to {MAX_INTERVAL}"))
                        })?;
                    if interval.replace(n).is_some() {
                        return Err(duplicate());
                    }
                }
                "BYDAY" => {
                    let mut days = Vec::new();
                    for code in value.split(',') {
                        let day = weekday(code.trim()).ok_or_else(|| {
                            rule_error(format!("BYDAY {code:?}: use MO, TU, WE, TH, FR, SA, SU"))
                        })?;
                        if !days.contains(&day) {
                            days.push(day);
                        }
                    }
                    days.sort_by_key(|d| d.to_monday_zero_offset());
                    if by_day.replace(days).is_some() {
                        return Err(duplicate());
                    }
                }
                "COUNT" => {
                    let n: u32 = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_COUNT).contains(n))
                        .ok_or_else(|| rule_error(format!("COUNT must be 1 to {MAX_COUNT}")))?;
                    if end.replace(SeriesEnd::Count(n)).is_some() {
                        return Err(rule_error("give COUNT or UNTIL, once"));
                    }
                }
                "UNTIL" => {
                    let t = until(&value).ok_or_else(|| {
                        rule_error("UNTIL must be RFC 3339 or like 20261231T235959Z")
                    })?;
                    if end.replace(SeriesEnd::Until(t)).is_some() {
                        return Err(rule_error("give COUNT or UNTIL, once"));
                    }
                }
                other => {
                    return Err(rule_error(format!(
                        "{other} is not supported (FREQ, INTERVAL, BYDAY, COUNT, UNTIL)"
                    )));
                }
            }
        }
        let frequency = frequency.ok_or_else(|| rule_error("FREQ is required"))?;
        let by_day = by_day.unwrap_or_default();
        if frequency == Frequency::Daily && !by_day.is_empty() {
            return Err(rule_error("BYDAY goes with FREQ=WEEKLY"));
        }
        Ok(Self {
            frequency,
            interval: interval.unwrap_or(1),
            by_day,
            end,
        })
    }
}

/// A room's schedule, ready to answer questions about instants.
#[derive(Clone, Debug)]
pub struct Schedule {
    first: Window,
    zone: TimeZone,
    /// The first start's wall-clock time and date in `zone`.
    local_start: DateTime,
    rule: Option<Recurrence>,
}

impl Schedule {
    /// The schedule of `room`; `Ok(None)` for a room without one.
    pub fn of(room: &Room) -> Result<Option<Self>, ScheduleError> {
        Self::new(
            room.starts_at,
            room.ends_at,
            &room.time_zone,
            room.recurrence.as_deref(),
        )
    }

    /// Checks and builds; what room creation validates.
    pub fn new(
        starts_at: Option<Timestamp>,
        ends_at: Option<Timestamp>,
        zone: &str,
        recurrence: Option<&str>,
    ) -> Result<Option<Self>, ScheduleError> {
        let (Some(start), Some(end)) = (starts_at, ends_at) else {
            return match recurrence {
                Some(_) => Err(ScheduleError::RuleWithoutWindow),
                None => Ok(None),
            };
        };
        if end.duration_since(start) > MAX_WINDOW {
            return Err(ScheduleError::TooLong);
        }
        let zone_name = zone;
        let zone =
            TimeZone::get(zone_name).map_err(|_| ScheduleError::Zone(zone_name.to_owned()))?;
        let rule = recurrence.map(Recurrence::parse).transpose()?;
        Ok(Some(Self {
            first: Window { start, end },
            local_start: zone.to_datetime(start),
            zone,
            rule,
        }))
    }

    fn length(&self) -> SignedDuration {
        self.first.end.duration_since(self.first.start)
    }

    fn window_on(&self, date: Date) -> Option<Window> {
        let local = date.to_datetime(self.local_start.time());
        let start = self
            .zone
            .to_ambiguous_zoned(local)
            .compatible()
            .ok()?
            .timestamp();
        let end = start.checked_add(self.length()).ok()?;
        Some(Window { start, end })
    }

    /// Every window in order, from the first; finite for `COUNT`/`UNTIL`,
    /// otherwise bounded by [`HORIZON`] after `from` (and the first).
    pub fn windows(&self, from: Timestamp) -> impl Iterator<Item = Window> + '_ {
        let horizon = from.max(self.first.start).checked_add(HORIZON).ok();
        let dates = self.dates();
        let mut count = 0u32;
        dates
            .filter_map(move |date| self.window_on(date))
            .filter(|w| w.start >= self.first.start)
            .take_while(move |w| horizon.is_some_and(|h| w.start <= h))
            .take_while(move |w| match self.rule.as_ref().and_then(|r| r.end) {
                Some(SeriesEnd::Until(until)) => w.start <= until,
                _ => true,
            })
            .take_while(move |_| {
                count += 1;
                match self.rule.as_ref().and_then(|r| r.end) {
                    Some(SeriesEnd::Count(n)) => count <= n,
                    _ => true,
                }
            })
    }

    /// Candidate dates in order (the rule's days, from the first's).
    fn dates(&self) -> Box<dyn Iterator<Item = Date> + '_> {
        let first = self.local_start.date();
        let Some(rule) = &self.rule else {
            return Box::new(std::iter::once(first));
        };
        let interval = i64::from(rule.interval);
        match rule.frequency {
            Frequency::Daily => Box::new(
                (0..)
                    .map(move |k: i64| first.checked_add((k * interval).days()))
                    .map_while(Result::ok),
            ),
            Frequency::Weekly => {
                let days = if rule.by_day.is_empty() {
                    vec![first.weekday()]
                } else {
                    rule.by_day.clone()
                };
                let monday =
                    first.checked_sub(i64::from(first.weekday().to_monday_zero_offset()).days());
                let Ok(monday) = monday else {
                    return Box::new(std::iter::empty());
                };
                Box::new(
                    (0..)
                        .map(move |k: i64| monday.checked_add((k * interval * 7).days()))
                        .map_while(Result::ok)
                        .flat_map(move |week| {
                            days.clone().into_iter().filter_map(move |day| {
                                week.checked_add(i64::from(day.to_monday_zero_offset()).days())
                                    .ok()
                            })
                        })
                        .filter(move |date| *date >= first),
                )
            }
        }
    }

    /// The window open at `t`, else the next one to open; `None` when the
    /// series is over (or nothing opens within the horizon).
    pub fn current_or_next(&self, t: Timestamp) -> Option<Window> {
        self.windows(t).find(|w| t < w.end)
    }

    /// The first window.
    pub fn first(&self) -> Window {
        self.first
    }

    /// `t` in the schedule's zone, RFC 3339 with its offset.
    pub fn local(&self, t: Timestamp) -> String {
        t.to_zoned(self.zone.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }
}

/// The first pair of overlapping windows of `a` and `b` from `from` on.
pub fn first_overlap(a: &Schedule, b: &Schedule, from: Timestamp) -> Option<(Window, Window)> {
    let mut theirs = b.windows(from).filter(|w| w.end > from).peekable();
    for mine in a.windows(from).filter(|w| w.end > from) {
        while theirs.peek().is_some_and(|w| w.end <= mine.start) {
            theirs.next();
        }
        let other = *theirs.peek()?;
        if mine.overlaps(&other) {
            return Some((mine, other));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn schedule(start: &str, end: &str, zone: &str, rule: Option<&str>) -> Schedule {
        Schedule::new(Some(t(start)), Some(t(end)), zone, rule)
            .unwrap()
            .unwrap()
    }

    fn starts(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        s.windows(t(from))
            .take(n)
            .map(|w| s.local(w.start))
            .collect()
    }

    #[test]
    fn rules_parse_and_bad_ones_say_why() {
        let r = Recurrence::parse("RRULE:FREQ=WEEKLY;BYDAY=TH,MO;COUNT=8").unwrap();
        assert_eq!(r.frequency, Frequency::Weekly);
        assert_eq!(r.by_day, [Weekday::Monday, Weekday::Thursday]);
        assert_eq!(r.end, Some(SeriesEnd::Count(8)));
        let r = Recurrence::parse("freq=daily;interval=2;until=20261231T235959Z").unwrap();
        assert_eq!(r.interval, 2);
        assert_eq!(r.end, Some(SeriesEnd::Until(t("2026-12-31T23:59:59Z"))));
        for (bad, says) in [
            ("FREQ=MONTHLY", "MONTHLY"),
            ("BYDAY=MO", "FREQ is required"),
            ("FREQ=DAILY;BYDAY=MO", "WEEKLY"),
            ("FREQ=WEEKLY;BYDAY=XX", "XX"),
            (
                "FREQ=WEEKLY;COUNT=2;UNTIL=20261231T000000Z",
                "COUNT or UNTIL",
            ),
            ("FREQ=WEEKLY;COUNT=0", "COUNT"),
            ("FREQ=WEEKLY;INTERVAL=0", "INTERVAL"),
            ("FREQ=WEEKLY;BYHOUR=3", "BYHOUR"),
            ("FREQ=WEEKLY;FREQ=DAILY", "twice"),
            ("FREQ", "NAME=VALUE"),
        ] {
            let error = Recurrence::parse(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn a_one_off_has_one_window() {
        let s = schedule("2026-12-07T12:30:00Z", "2026-12-07T14:00:00Z", "UTC", None);
        let all: Vec<Window> = s.windows(t("2026-01-01T00:00:00Z")).collect();
        assert_eq!(all, [s.first()]);
        assert_eq!(
            s.current_or_next(t("2026-12-07T13:00:00Z")),
            Some(s.first())
        );
        assert_eq!(
            s.current_or_next(t("2026-12-07T14:00:00Z")),
            None,
            "end is exclusive"
        );
    }

    /// India has no daylight saving: 18:00 IST is 12:30 UTC every week, and
    /// a Monday/Thursday series crosses the Sunday→Monday week boundary.
    #[test]
    fn weekly_in_a_zone_without_dst_across_the_week_boundary() {
        // Thursday 3 Dec 2026, 18:00 IST.
        let s = schedule(
            "2026-12-03T12:30:00Z",
            "2026-12-03T13:30:00Z",
            "Asia/Kolkata",
            Some("FREQ=WEEKLY;BYDAY=MO,TH;COUNT=5"),
        );
        assert_eq!(
            starts(&s, "2026-11-01T00:00:00Z", 10),
            [
                "2026-12-03T18:00:00+05:30",
                "2026-12-07T18:00:00+05:30",
                "2026-12-10T18:00:00+05:30",
                "2026-12-14T18:00:00+05:30",
                "2026-12-17T18:00:00+05:30",
            ]
        );
        // Sunday night, between Thursday's and Monday's windows.
        let next = s.current_or_next(t("2026-12-06T20:00:00Z")).unwrap();
        assert_eq!(next.start, t("2026-12-07T12:30:00Z"));
        assert_eq!(
            s.current_or_next(t("2026-12-17T13:30:00Z")),
            None,
            "COUNT=5 is over"
        );
    }

    #[test]
    fn daily_with_interval_and_until() {
        let s = schedule(
            "2026-12-30T14:00:00Z",
            "2026-12-30T15:00:00Z",
            "UTC",
            Some("FREQ=DAILY;INTERVAL=2;UNTIL=2027-01-05T14:00:00Z"),
        );
        assert_eq!(
            starts(&s, "2026-12-01T00:00:00Z", 10),
            [
                "2026-12-30T14:00:00+00:00",
                "2027-01-01T14:00:00+00:00",
                "2027-01-03T14:00:00+00:00",
                "2027-01-05T14:00:00+00:00",
            ]
        );
    }

    /// Where clocks change, the local time holds and the UTC time moves.
    #[test]
    fn weekly_keeps_the_wall_clock_time_across_dst() {
        let s = schedule(
            "2026-03-24T18:00:00Z", // Tuesday 19:00 in Berlin (CET)
            "2026-03-24T19:00:00Z",
            "Europe/Berlin",
            Some("FREQ=WEEKLY"),
        );
        let next: Vec<Window> = s.windows(t("2026-03-01T00:00:00Z")).take(2).collect();
        assert_eq!(next[1].start, t("2026-03-31T17:00:00Z"), "19:00 CEST");
        assert_eq!(s.local(next[1].start), "2026-03-31T19:00:00+02:00");
    }

    #[test]
    fn an_open_ended_series_stops_at_the_horizon() {
        let s = schedule(
            "2026-12-01T10:00:00Z",
            "2026-12-01T11:00:00Z",
            "UTC",
            Some("FREQ=DAILY"),
        );
        let n = s.windows(t("2026-12-01T00:00:00Z")).count();
        assert!((399..=401).contains(&n), "{n}");
        let later = s.current_or_next(t("2030-06-01T10:30:00Z")).unwrap();
        assert_eq!(later.start, t("2030-06-01T10:00:00Z"));
    }

    #[test]
    fn schedules_are_checked() {
        let start = Some(t("2026-12-01T10:00:00Z"));
        assert_eq!(
            Schedule::new(None, None, "UTC", Some("FREQ=DAILY")).unwrap_err(),
            ScheduleError::RuleWithoutWindow
        );
        assert_eq!(
            Schedule::new(start, Some(t("2026-12-02T10:00:01Z")), "UTC", None).unwrap_err(),
            ScheduleError::TooLong
        );
        assert!(matches!(
            Schedule::new(start, Some(t("2026-12-01T11:00:00Z")), "Nowhere/Land", None),
            Err(ScheduleError::Zone(_))
        ));
        assert!(Schedule::new(None, None, "UTC", None).unwrap().is_none());
    }

    #[test]
    fn overlaps_are_found_across_series() {
        // Mondays 18:00–19:00 IST, and a daily 18:30–19:30 IST from Wednesday.
        let weekly = schedule(
            "2026-12-07T12:30:00Z",
            "2026-12-07T13:30:00Z",
            "Asia/Kolkata",
            Some("FREQ=WEEKLY"),
        );
        let daily = schedule(
            "2026-12-09T13:00:00Z",
            "2026-12-09T14:00:00Z",
            "Asia/Kolkata",
            Some("FREQ=DAILY;COUNT=10"),
        );
        let from = t("2026-12-01T00:00:00Z");
        let (mine, theirs) = first_overlap(&weekly, &daily, from).unwrap();
        assert_eq!(mine.start, t("2026-12-14T12:30:00Z"));
        assert_eq!(theirs.start, t("2026-12-14T13:00:00Z"));
        let back_to_back = schedule(
            "2026-12-07T13:30:00Z",
            "2026-12-07T14:00:00Z",
            "Asia/Kolkata",
            None,
        );
        assert_eq!(
            first_overlap(&weekly, &back_to_back, from),
            None,
            "end is exclusive"
        );
    }
}
