//! Reach: which booths of a room's audience heard it, and for how long.
//!
//! The organisers' question the morning after a rally is "which booths did
//! we reach?", not "how many sessions were there". So the report counts
//! **booths** — the leaves of the room's unit subtree, whatever the
//! organisation calls them — and calls a booth *reached* when at least one
//! listener of it was there for at least `min_minutes`.
//!
//! A listener is one identity: the member id of its token when it has one
//! (a worker whose phone dropped and reconnected is still one listener, and
//! the union of their sessions' intervals is what counts, so overlap from a
//! second tab is not counted twice), otherwise each session on its own. A
//! session belongs to the unit in its token; sessions of a unit outside the
//! subtree, or with no unit, are counted in `unplaced` rather than dropped,
//! so the totals still add up to the attendance list.
//!
//! The computation ([`compute`]) is a pure function of the units, the
//! sessions and the parameters: the handlers only load and render, and the
//! tests check the arithmetic on a generated state-sized organisation.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};

use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::Grant;
use crate::backend::{SessionRecord, Unit};
use crate::participants::hosted;
use crate::problem::ApiError;
use crate::rooms::find;
use crate::timestamp::unix_now;

/// Minutes a listener must stay for its booth to count, unless asked.
pub const DEFAULT_MIN_MINUTES: u64 = 5;
/// Longest threshold accepted: a day.
pub const MAX_MIN_MINUTES: u64 = 24 * 60;

/// `?min_minutes=&kind=&from=&to=` of the reach routes.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReachQuery {
    /// Default [`DEFAULT_MIN_MINUTES`].
    pub min_minutes: Option<u64>,
    /// Only rows of units of this kind (`district`, `mandal`, …).
    pub kind: Option<String>,
    /// Only listening time from this instant on (one occurrence of a
    /// recurring room, say).
    pub from: Option<jiff::Timestamp>,
    /// Only listening time before this instant.
    pub to: Option<jiff::Timestamp>,
}

/// What [`compute`] needs besides the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Seconds a listener must stay.
    pub min_seconds: u64,
    /// Listening before this (Unix seconds) is not counted.
    pub from: u64,
    /// Listening from this on is not counted; also where open sessions end.
    pub to: u64,
}

/// One unit of the subtree with the booths under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UnitReach {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub parent: Option<String>,
    /// Booths (leaves) in this unit's subtree; 1 for a booth itself.
    pub booths: u64,
    /// Of those, booths with a listener for at least the threshold.
    pub booths_reached: u64,
    /// Distinct listeners placed in this unit's subtree.
    pub listeners: u64,
    /// Their listening time, each listener's intervals merged.
    pub listener_seconds: u64,
}

/// Everything the report says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Reach {
    pub room: String,
    /// The room's unit (the subtree's root); `None`: the whole organisation.
    pub unit: Option<String>,
    pub min_minutes: u64,
    /// The root first, then every unit in depth-first order (children by
    /// id), booths included unless `kind` filtered them out.
    pub units: Vec<UnitReach>,
    /// Sessions whose token names no unit, or a unit outside the subtree.
    pub unplaced_sessions: u64,
    /// The subtree's totals (the root's row; the sum over every root when
    /// the room is for the whole organisation).
    pub totals: Totals,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = ReachTotals)]
pub struct Totals {
    pub booths: u64,
    pub booths_reached: u64,
    pub listeners: u64,
    pub listener_seconds: u64,
}

/// One listener's intervals, merged at the end.
#[derive(Default)]
struct Listener {
    intervals: Vec<(u64, u64)>,
}

impl Listener {
    /// Length of the union of the intervals.
    fn seconds(&mut self) -> u64 {
        self.intervals.sort_unstable();
        let mut total = 0;
        let mut current: Option<(u64, u64)> = None;
        for &(start, end) in &self.intervals {
            match current {
                Some((s, e)) if start <= e => current = Some((s, e.max(end))),
                Some((s, e)) => {
                    total += e - s;
                    current = Some((start, end));
                }
                None => current = Some((start, end)),
            }
        }
        total + current.map_or(0, |(s, e)| e - s)
    }
}

/// Reach of `sessions` over the subtree of `root` (every root's when
/// `None`) of the organisation `units`.
///
/// `units` must form a tree (as an import guarantees); a unit whose parent
/// is missing is treated as a root. Runs in O(units + sessions · log).
pub fn compute(
    units: &[Unit],
    root: Option<&str>,
    sessions: &[SessionRecord],
    params: Params,
) -> (Vec<UnitReach>, u64, Totals) {
    let index: HashMap<&str, usize> = units
        .iter()
        .enumerate()
        .map(|(i, u)| (u.id.as_str(), i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); units.len()];
    let mut roots = Vec::new();
    for (i, unit) in units.iter().enumerate() {
        match unit.parent.as_deref().and_then(|p| index.get(p)) {
            Some(&parent) => children[parent].push(i),
            None => roots.push(i),
        }
    }
    for list in &mut children {
        list.sort_by(|&a, &b| units[a].id.cmp(&units[b].id));
    }
    roots.sort_by(|&a, &b| units[a].id.cmp(&units[b].id));
    let starts: Vec<usize> = match root {
        Some(id) => index.get(id).copied().into_iter().collect(),
        None => roots,
    };

    // Depth-first order of the subtree; `order[k]`'s subtree is the
    // contiguous run `order[k..end[k]]`.
    let mut order = Vec::new();
    let mut position = vec![usize::MAX; units.len()];
    let mut stack: Vec<usize> = starts.iter().rev().copied().collect();
    while let Some(i) = stack.pop() {
        position[i] = order.len();
        order.push(i);
        stack.extend(children[i].iter().rev());
    }

    // Listeners by (unit, identity): a member who appears under two units
    // (an old token) counts in each.
    let mut listeners: HashMap<(usize, &str), Listener> = HashMap::new();
    let mut unplaced = 0;
    for s in sessions {
        let placed = s
            .unit
            .as_deref()
            .and_then(|u| index.get(u))
            .filter(|&&i| position[i] != usize::MAX);
        let Some(&unit) = placed else {
            unplaced += 1;
            continue;
        };
        let identity = s.member.as_deref().unwrap_or(&s.session);
        let start = s.joined_at.max(params.from);
        let end = s.left_at.unwrap_or(params.to).min(params.to);
        let entry = listeners.entry((unit, identity)).or_default();
        if start < end {
            entry.intervals.push((start, end));
        }
    }

    // Per unit: its own listeners' count and seconds, and whether one of
    // them stayed long enough.
    let mut own = vec![(0u64, 0u64, false); units.len()];
    for ((unit, _), mut listener) in listeners {
        let seconds = listener.seconds();
        let slot = &mut own[unit];
        slot.0 += 1;
        slot.1 += seconds;
        slot.2 |= seconds >= params.min_seconds && seconds > 0;
    }

    // Sum up the tree, deepest first (reverse depth-first order).
    let mut rows: Vec<UnitReach> = order
        .iter()
        .map(|&i| {
            let unit = &units[i];
            let leaf = children[i].is_empty();
            let (listeners, listener_seconds, reached) = own[i];
            UnitReach {
                id: unit.id.clone(),
                kind: unit.kind.clone(),
                name: unit.name.clone(),
                parent: unit.parent.clone(),
                booths: u64::from(leaf),
                booths_reached: u64::from(leaf && reached),
                listeners,
                listener_seconds,
            }
        })
        .collect();
    for k in (0..order.len()).rev() {
        if let Some(parent) = units[order[k]].parent.as_deref()
            && let Some(&p) = index.get(parent)
            && position[p] != usize::MAX
        {
            let child = rows[k].clone();
            let row = &mut rows[position[p]];
            row.booths += child.booths;
            row.booths_reached += child.booths_reached;
            row.listeners += child.listeners;
            row.listener_seconds += child.listener_seconds;
        }
    }
    let mut totals = Totals::default();
    for &i in &starts {
        let row = &rows[position[i]];
        totals.booths += row.booths;
        totals.booths_reached += row.booths_reached;
        totals.listeners += row.listeners;
        totals.listener_seconds += row.listener_seconds;
    }
    (rows, unplaced, totals)
}

fn params(query: &ReachQuery, now: u64) -> Result<(Params, u64), ApiError> {
    let minutes = query.min_minutes.unwrap_or(DEFAULT_MIN_MINUTES);
    if !(1..=MAX_MIN_MINUTES).contains(&minutes) {
        return Err(ApiError::Unprocessable(format!(
            "min_minutes must be between 1 and {MAX_MIN_MINUTES}"
        )));
    }
    let seconds = |t: jiff::Timestamp| u64::try_from(t.as_second()).unwrap_or(0);
    let from = query.from.map_or(0, seconds);
    let to = query.to.map_or(now, seconds).min(now);
    if from >= to && (query.from.is_some() || query.to.is_some()) {
        return Err(ApiError::Unprocessable(
            "from must be before to (and before now)".into(),
        ));
    }
    Ok((
        Params {
            min_seconds: minutes * 60,
            from,
            to,
        },
        minutes,
    ))
}

async fn report(
    state: &AppState,
    grant: &Grant,
    room: &str,
    query: &ReachQuery,
) -> Result<Reach, ApiError> {
    let room = hosted(state, grant, room).await?;
    let room = find(state, &room).await?;
    let (params, min_minutes) = params(query, unix_now())?;
    let units = state.org.units().await?;
    let sessions = state.attendance.attendance(&room.id).await?;
    let (mut rows, unplaced_sessions, totals) =
        compute(&units, room.unit.as_deref(), &sessions, params);
    if let Some(kind) = &query.kind {
        rows.retain(|r| &r.kind == kind);
    }
    Ok(Reach {
        room: room.id,
        unit: room.unit,
        min_minutes,
        units: rows,
        unplaced_sessions,
        totals,
    })
}

fn query_of(
    query: Result<Query<ReachQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ReachQuery, ApiError> {
    query.map(|Query(q)| q).map_err(|e| {
        ApiError::BadRequest(format!(
            "reach takes min_minutes (1–{MAX_MIN_MINUTES}), kind, from and to (RFC 3339): {e}"
        ))
    })
}

/// `GET /v1/rooms/{id}/reach`
#[utoipa::path(
    get,
    path = "/v1/rooms/{id}/reach",
    tag = "attendance",
    summary = "Booths reached, per unit of the room's subtree",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("min_minutes" = Option<u64>, Query, description = "minutes a listener must stay (default 5)"), ("kind" = Option<String>, Query, description = "only units of this kind"), ("from" = Option<String>, Query, description = "RFC 3339"), ("to" = Option<String>, Query, description = "RFC 3339")),
    responses(
        (status = 200, description = "Reach", body = Reach),
        (status = 400, description = "malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn json(
    State(state): State<AppState>,
    Path(room): Path<String>,
    grant: Grant,
    query: Result<Query<ReachQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Reach>, ApiError> {
    let query = query_of(query)?;
    Ok(Json(report(&state, &grant, &room, &query).await?))
}

/// The CSV columns, in order (documented in docs/http-api.md).
pub const CSV_COLUMNS: [&str; 8] = [
    "unit",
    "kind",
    "name",
    "parent",
    "booths",
    "booths_reached",
    "listeners",
    "listener_seconds",
];

/// `GET /v1/rooms/{id}/reach.csv`: one row per unit.
#[utoipa::path(
    get,
    path = "/v1/rooms/{id}/reach.csv",
    tag = "attendance",
    summary = "Reach as CSV",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("min_minutes" = Option<u64>, Query, description = "minutes a listener must stay (default 5)"), ("kind" = Option<String>, Query, description = "only units of this kind"), ("from" = Option<String>, Query, description = "RFC 3339"), ("to" = Option<String>, Query, description = "RFC 3339")),
    responses(
        (status = 200, description = "One row per unit", body = String, content_type = "text/csv"),
        (status = 400, description = "malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn csv(
    State(state): State<AppState>,
    Path(room): Path<String>,
    grant: Grant,
    query: Result<Query<ReachQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let query = query_of(query)?;
    let reach = report(&state, &grant, &room, &query).await?;
    let body = to_csv(&reach.units).map_err(|e| ApiError::Internal(format!("reach CSV: {e}")))?;
    crate::attendance::csv_attachment(&format!("reach-{}.csv", reach.room), body)
}

fn to_csv(rows: &[UnitReach]) -> Result<String, csv::Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(CSV_COLUMNS)?;
    for r in rows {
        let [booths, reached, listeners, seconds] =
            [r.booths, r.booths_reached, r.listeners, r.listener_seconds].map(|n| n.to_string());
        out.write_record([
            r.id.as_str(),
            &r.kind,
            &crate::attendance::spreadsheet_safe(&r.name),
            r.parent.as_deref().unwrap_or(""),
            &booths,
            &reached,
            &listeners,
            &seconds,
        ])?;
    }
    let bytes = out.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Role, SessionKind, Traffic};

    fn unit(id: &str, kind: &str, parent: Option<&str>) -> Unit {
        Unit {
            id: id.into(),
            kind: kind.into(),
            name: format!("{kind} {id}"),
            parent: parent.map(Into::into),
        }
    }

    fn session(
        id: &str,
        unit: &str,
        member: Option<&str>,
        from: u64,
        to: Option<u64>,
    ) -> SessionRecord {
        SessionRecord {
            session: id.into(),
            room: "r".into(),
            name: None,
            member: member.map(Into::into),
            unit: Some(unit.into()),
            role: Role::Listener,
            kind: SessionKind::Listen,
            joined_at: from,
            left_at: to,
            leave_reason: to.map(|_| "left".into()),
            traffic: Traffic::default(),
        }
    }

    const P: Params = Params {
        min_seconds: 300,
        from: 0,
        to: 100_000,
    };

    fn org() -> Vec<Unit> {
        vec![
            unit("S", "state", None),
            unit("D1", "district", Some("S")),
            unit("D2", "district", Some("S")),
            unit("B1", "booth", Some("D1")),
            unit("B2", "booth", Some("D1")),
            unit("B3", "booth", Some("D2")),
        ]
    }

    #[test]
    fn a_booth_is_reached_by_one_listener_staying_long_enough() {
        let sessions = [
            session("a", "B1", None, 1000, Some(1300)), // exactly 5 min
            session("b", "B2", None, 1000, Some(1299)), // one second short
            session("c", "B3", None, 1000, Some(1100)),
            session("d", "B3", None, 1000, Some(1250)), // two short listeners do not add up
        ];
        let (rows, unplaced, totals) = compute(&org(), None, &sessions, P);
        assert_eq!(unplaced, 0);
        let by_id: HashMap<_, _> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
        assert_eq!(by_id["B1"].booths_reached, 1);
        assert_eq!(by_id["B2"].booths_reached, 0);
        assert_eq!(by_id["B3"].booths_reached, 0);
        assert_eq!((by_id["D1"].booths, by_id["D1"].booths_reached), (2, 1));
        assert_eq!(by_id["D2"].listeners, 2);
        assert_eq!(
            totals,
            Totals {
                booths: 3,
                booths_reached: 1,
                listeners: 4,
                listener_seconds: 300 + 299 + 100 + 250,
            }
        );
        let ids: Vec<_> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["S", "D1", "B1", "B2", "D2", "B3"]);
    }

    #[test]
    fn one_members_reconnects_add_up_and_overlaps_do_not_double() {
        let sessions = [
            session("a", "B1", Some("m1"), 1000, Some(1200)),
            session("b", "B1", Some("m1"), 1250, Some(1360)), // 200 + 110 = 310 s
            session("c", "B2", Some("m2"), 1000, Some(1200)),
            session("d", "B2", Some("m2"), 1100, Some(1250)), // union 250 s, not 350
        ];
        let (rows, _, totals) = compute(&org(), Some("D1"), &sessions, P);
        assert_eq!(rows[0].id, "D1");
        assert_eq!(rows[0].booths_reached, 1);
        assert_eq!(rows[0].listeners, 2);
        assert_eq!(totals.listener_seconds, 310 + 250);
    }

    #[test]
    fn sessions_outside_the_subtree_or_without_unit_are_unplaced() {
        let mut none = session("x", "B1", None, 0, Some(600));
        none.unit = None;
        let sessions = [
            none,
            session("y", "B3", None, 0, Some(600)), // D2's booth, room is for D1
            session("z", "nowhere", None, 0, Some(600)),
            session("w", "D1", None, 0, Some(600)), // a unit PIN of the district itself
        ];
        let (rows, unplaced, totals) = compute(&org(), Some("D1"), &sessions, P);
        assert_eq!(unplaced, 3);
        assert_eq!(
            totals.booths_reached, 0,
            "a district listener reaches no booth"
        );
        assert_eq!(totals.listeners, 1);
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn open_sessions_count_up_to_the_end_of_the_range_and_from_clips() {
        let sessions = [
            session("a", "B1", None, 1000, None),
            session("b", "B2", None, 1000, Some(2000)),
        ];
        let params = Params {
            min_seconds: 300,
            from: 1800,
            to: 1400 + 1000,
        };
        let (rows, _, _) = compute(&org(), Some("D1"), &sessions, params);
        let by_id: HashMap<_, _> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
        assert_eq!(by_id["B1"].listener_seconds, 600); // 1800..2400
        assert_eq!(by_id["B1"].booths_reached, 1);
        assert_eq!(by_id["B2"].listener_seconds, 200); // 1800..2000
        assert_eq!(by_id["B2"].booths_reached, 0);
    }

    #[test]
    fn an_unknown_root_has_no_rows() {
        let (rows, unplaced, totals) = compute(&org(), Some("nope"), &[], P);
        assert!(rows.is_empty());
        assert_eq!((unplaced, totals), (0, Totals::default()));
    }

    #[test]
    fn parameters_are_checked() {
        let query = |min: Option<u64>| ReachQuery {
            min_minutes: min,
            ..ReachQuery::default()
        };
        assert_eq!(params(&query(None), 10_000).unwrap().0.min_seconds, 300);
        assert_eq!(params(&query(Some(0)), 10_000).unwrap_err().status(), 422);
        assert_eq!(
            params(&query(Some(MAX_MIN_MINUTES + 1)), 10_000)
                .unwrap_err()
                .status(),
            422
        );
        let backwards = ReachQuery {
            from: Some("2026-01-02T00:00:00Z".parse().unwrap()),
            to: Some("2026-01-01T00:00:00Z".parse().unwrap()),
            ..ReachQuery::default()
        };
        assert_eq!(params(&backwards, u64::MAX).unwrap_err().status(), 422);
    }

    #[test]
    fn csv_has_the_documented_columns() {
        let (rows, _, _) = compute(&org(), Some("D2"), &[], P);
        let text = to_csv(&rows).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), CSV_COLUMNS.join(","));
        assert_eq!(lines.next().unwrap(), "D2,district,district D2,S,1,0,0,0");
        assert_eq!(lines.next().unwrap(), "B3,booth,booth B3,D2,1,0,0,0");
        assert_eq!(lines.next(), None);
    }
}
