//! Attendance: who was in a room, from when to when, and why they left.
//!
//! Written as it happens, so a crash loses nothing that was committed: the
//! join when the session's answer goes out ([`crate::sessions`]), the leave
//! when the media side reports the session closed ([`follow_media`]; a
//! `DELETE`, ICE timeout, room end and failure all arrive that way). A
//! session still open when the server stopped is closed at the next start
//! with reason `server_restart` (the binary's store does that).
//!
//! Read with `GET /v1/rooms/{id}/attendance` (JSON) or
//! `…/attendance.csv` (one row per session), by the operator or a host of
//! the room.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::app::AppState;
use crate::auth::Grant;
use crate::backend::{
    AttendanceStore, Leave, MediaEvent, Role, SessionKind, SessionRecord, Traffic,
};
use crate::participants::hosted;
use crate::problem::ApiError;
use crate::timestamp::{rfc3339, unix_now};
use crate::webhooks::{self, EventSink, WebhookEvent};

/// Records every session close the media side reports, then publishes a
/// `participant_left` webhook event for each leave recorded.
pub fn follow_media(
    store: Arc<dyn AttendanceStore>,
    sink: Arc<dyn EventSink>,
    events: broadcast::Receiver<MediaEvent>,
) {
    tokio::spawn(run_follower(store, sink, events));
}

/// Leaves written in one go, at most.
const LEAVE_BATCH: usize = 1024;

fn leave_of(event: MediaEvent) -> Option<(String, Leave)> {
    match event {
        MediaEvent::Closed {
            room,
            session,
            reason,
            traffic,
        } => Some((
            room,
            Leave {
                session,
                left_at: unix_now(),
                reason,
                traffic,
            },
        )),
        _ => None,
    }
}

/// Waits for a close, takes every other close already queued (a room's
/// end brings thousands at once), and writes them together.
async fn run_follower(
    store: Arc<dyn AttendanceStore>,
    sink: Arc<dyn EventSink>,
    mut events: broadcast::Receiver<MediaEvent>,
) {
    use broadcast::error::{RecvError, TryRecvError};
    let mut batch = Vec::with_capacity(LEAVE_BATCH);
    loop {
        match events.recv().await {
            Ok(event) => batch.extend(leave_of(event)),
            Err(RecvError::Lagged(missed)) => lagged(missed),
            Err(RecvError::Closed) => return,
        }
        while batch.len() < LEAVE_BATCH {
            match events.try_recv() {
                Ok(event) => batch.extend(leave_of(event)),
                Err(TryRecvError::Lagged(missed)) => lagged(missed),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let leaves: Vec<Leave> = batch.iter().map(|(_, leave)| leave.clone()).collect();
        match store.record_leaves(&leaves).await {
            Ok(_) => publish_leaves(store.as_ref(), &sink, &batch).await,
            Err(e) => {
                tracing::warn!(error = %e, leaves = batch.len(), "attendance: leaves not recorded");
            }
        }
        batch.clear();
    }
}

/// One `participant_left` per recorded leave of `batch`, with the whole
/// attendance row (who, since when, traffic): read back once per room.
async fn publish_leaves(
    store: &dyn AttendanceStore,
    sink: &Arc<dyn EventSink>,
    batch: &[(String, Leave)],
) {
    let mut rooms: Vec<&str> = batch.iter().map(|(room, _)| room.as_str()).collect();
    rooms.sort_unstable();
    rooms.dedup();
    let mut events = Vec::new();
    for room in rooms {
        let records = match store.attendance(room).await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(error = %e, room, "participant_left events not published");
                continue;
            }
        };
        let left: HashSet<&str> = batch
            .iter()
            .filter(|(r, _)| r == room)
            .map(|(_, leave)| leave.session.as_str())
            .collect();
        events.extend(
            records
                .iter()
                .filter(|r| r.left_at.is_some() && left.contains(r.session.as_str()))
                .map(WebhookEvent::participant_left),
        );
    }
    webhooks::emit(sink, events).await;
}

fn lagged(missed: u64) {
    // Those sessions stay open in the record until the next restart closes
    // them (`server_restart`). The media side's event buffer holds more
    // events than a node has sessions, so this takes a stalled database.
    tracing::warn!(missed, "attendance fell behind the media side");
}

/// One row of the report: a session, with its times as RFC 3339 and its
/// length in seconds (up to now while open).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionRow {
    pub session: String,
    pub name: Option<String>,
    pub member: Option<String>,
    pub unit: Option<String>,
    pub role: Role,
    pub kind: SessionKind,
    pub joined_at: String,
    pub left_at: Option<String>,
    pub seconds: u64,
    pub leave_reason: Option<String>,
    #[serde(flatten)]
    pub traffic: Traffic,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Totals {
    pub sessions: usize,
    /// Sessions not yet ended.
    pub open: usize,
    /// Sum of every session's seconds.
    pub seconds: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub room: String,
    pub sessions: Vec<SessionRow>,
    pub totals: Totals,
}

fn row(record: SessionRecord, now: u64) -> SessionRow {
    let until = record.left_at.unwrap_or(now);
    SessionRow {
        session: record.session,
        name: record.name,
        member: record.member,
        unit: record.unit,
        role: record.role,
        kind: record.kind,
        joined_at: rfc3339(record.joined_at),
        left_at: record.left_at.map(rfc3339),
        seconds: until.saturating_sub(record.joined_at),
        leave_reason: record.leave_reason,
        traffic: record.traffic,
    }
}

async fn report(state: &AppState, grant: &Grant, room: &str) -> Result<Report, ApiError> {
    let room = hosted(state, grant, room).await?;
    let now = unix_now();
    let sessions: Vec<SessionRow> = state
        .attendance
        .attendance(&room)
        .await?
        .into_iter()
        .map(|r| row(r, now))
        .collect();
    let totals = Totals {
        sessions: sessions.len(),
        open: sessions.iter().filter(|s| s.left_at.is_none()).count(),
        seconds: sessions.iter().map(|s| s.seconds).sum(),
    };
    Ok(Report {
        room,
        sessions,
        totals,
    })
}

/// `GET /v1/rooms/{id}/attendance`
#[utoipa::path(
    get,
    path = "/v1/rooms/{id}/attendance",
    tag = "attendance",
    summary = "Attendance: one row per session",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 200, description = "Attendance", body = Report),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn json(
    State(state): State<AppState>,
    Path(room): Path<String>,
    grant: Grant,
) -> Result<Json<Report>, ApiError> {
    Ok(Json(report(&state, &grant, &room).await?))
}

/// The CSV columns, in order (documented in docs/http-api.md).
pub const CSV_COLUMNS: [&str; 14] = [
    "session",
    "name",
    "member",
    "unit",
    "role",
    "kind",
    "joined_at",
    "left_at",
    "seconds",
    "leave_reason",
    "packets_in",
    "bytes_in",
    "packets_out",
    "bytes_out",
];

/// `GET /v1/rooms/{id}/attendance.csv`
#[utoipa::path(
    get,
    path = "/v1/rooms/{id}/attendance.csv",
    tag = "attendance",
    summary = "Attendance as CSV",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 200, description = "One row per session", body = String, content_type = "text/csv"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn csv(
    State(state): State<AppState>,
    Path(room): Path<String>,
    grant: Grant,
) -> Result<Response, ApiError> {
    let report = report(&state, &grant, &room).await?;
    let body =
        to_csv(&report.sessions).map_err(|e| ApiError::Internal(format!("attendance CSV: {e}")))?;
    csv_attachment(&format!("attendance-{}.csv", report.room), body)
}

/// A CSV download: `text/csv; charset=utf-8`, saved as `filename`.
pub(crate) fn csv_attachment(filename: &str, body: String) -> Result<Response, ApiError> {
    let disposition = format!("attachment; filename=\"{filename}\"");
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        ),
        (
            header::CONTENT_DISPOSITION,
            HeaderValue::try_from(disposition)
                .map_err(|_| ApiError::Internal(format!("unusable file name {filename:?}")))?,
        ),
    ];
    Ok((headers, body).into_response())
}

fn to_csv(rows: &[SessionRow]) -> Result<String, csv::Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(CSV_COLUMNS)?;
    for r in rows {
        let numbers = [
            r.seconds,
            r.traffic.packets_in,
            r.traffic.bytes_in,
            r.traffic.packets_out,
            r.traffic.bytes_out,
        ]
        .map(|n| n.to_string());
        let [seconds, packets_in, bytes_in, packets_out, bytes_out] = numbers;
        out.write_record([
            r.session.as_str(),
            &spreadsheet_safe(r.name.as_deref().unwrap_or("")),
            &spreadsheet_safe(r.member.as_deref().unwrap_or("")),
            &spreadsheet_safe(r.unit.as_deref().unwrap_or("")),
            r.role.as_str(),
            r.kind.as_str(),
            &r.joined_at,
            r.left_at.as_deref().unwrap_or(""),
            &seconds,
            r.leave_reason.as_deref().unwrap_or(""),
            &packets_in,
            &bytes_in,
            &packets_out,
            &bytes_out,
        ])?;
    }
    let bytes = out.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A name a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab,
/// CR) is prefixed with `'` (OWASP's advice for CSV injection).
pub(crate) fn spreadsheet_safe(name: &str) -> std::borrow::Cow<'_, str> {
    if name.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{name}").into()
    } else {
        name.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, left: Option<u64>) -> SessionRecord {
        SessionRecord {
            session: "s1".into(),
            room: "r".into(),
            name: Some(name.into()),
            member: None,
            unit: None,
            role: Role::Listener,
            kind: SessionKind::Listen,
            joined_at: 1_700_000_000,
            left_at: left,
            leave_reason: left.map(|_| "left".into()),
            traffic: Traffic {
                packets_in: 1,
                bytes_in: 2,
                packets_out: 3,
                bytes_out: 4,
            },
        }
    }

    #[test]
    fn an_open_session_counts_up_to_now() {
        let r = row(record("a", None), 1_700_000_090);
        assert_eq!((r.seconds, r.left_at), (90, None));
        let r = row(record("a", Some(1_700_000_030)), 1_700_000_090);
        assert_eq!(r.seconds, 30);
        assert_eq!(r.left_at.as_deref(), Some("2023-11-14T22:13:50Z"));
    }

    #[test]
    fn csv_has_the_documented_columns_and_quotes_what_needs_it() {
        let mut member = record("Booth 12, Ward \"A\"", Some(1_700_000_030));
        member.member = Some("m-17".into());
        member.unit = Some("booth-0042".into());
        let rows = [
            row(member, 0),
            row(record("=HYPERLINK(\"x\")", None), 1_700_000_005),
        ];
        let text = to_csv(&rows).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), CSV_COLUMNS.join(","));
        assert_eq!(
            lines.next().unwrap(),
            "s1,\"Booth 12, Ward \"\"A\"\"\",m-17,booth-0042,listener,listen,2023-11-14T22:13:20Z,\
             2023-11-14T22:13:50Z,30,left,1,2,3,4"
        );
        assert_eq!(
            lines.next().unwrap(),
            "s1,\"'=HYPERLINK(\"\"x\"\")\",,,listener,listen,2023-11-14T22:13:20Z,,5,,1,2,3,4"
        );
        assert_eq!(lines.next(), None);
    }
}
