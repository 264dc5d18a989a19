//! Attendance rows: written at join, completed at leave, each in its own
//! committed statement (the database's write-ahead log makes it durable
//! before the call returns), so a crash loses nothing already written.
//!
//! A session still open when the server stopped (crash, kill, power) is
//! closed on the next start by [`Store::close_interrupted_sessions`],
//! with reason `server_restart` and the time of the server's last heartbeat
//! ([`Store::heartbeat`], every [`HEARTBEAT_EVERY`]) rather than the
//! restart time, so a night-long outage does not count as listening.
//!
//! A drain (SIGTERM) that reaches its deadline closes the sessions still
//! open itself, with reason `server_shutdown` ([`Store::close_open_sessions`]).

use std::time::Duration;

use async_trait::async_trait;
use sabha_signaling::{
    AttendanceStore, Leave, Role, SessionKind, SessionRecord, StoreError, Traffic,
};

use super::{Store, store_error};

/// How often the running server records that it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
/// The leave reason of sessions the server was serving when it stopped.
pub const SERVER_RESTART: &str = "server_restart";
/// The leave reason of sessions still open when a drain ended.
pub const SERVER_SHUTDOWN: &str = "server_shutdown";

/// The columns `attendance` selects, in order.
type Row = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
);

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Store {
    /// Records that the server is alive now (Unix seconds).
    pub async fn heartbeat(&self, now: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO server_heartbeat (id, alive_at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET alive_at = excluded.alive_at",
        )
        .bind(int(now))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    /// Closes every session left open by a previous run, at the last
    /// heartbeat (or `now` if there was none), never before its join.
    /// Returns how many were closed.
    pub async fn close_interrupted_sessions(&self, now: u64) -> Result<u64, StoreError> {
        let alive: Option<(i64,)> =
            sqlx::query_as("SELECT alive_at FROM server_heartbeat WHERE id = 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
        let at = alive.map_or(now, |(t,)| unsigned(t).min(now));
        self.close_open_sessions(at, SERVER_RESTART).await
    }

    /// Closes every open session at `at` (never before its join) with
    /// `reason`. Returns how many were closed.
    pub async fn close_open_sessions(&self, at: u64, reason: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE attendance SET leave_reason = $1, \
             left_at = CASE WHEN joined_at > $2 THEN joined_at ELSE $2 END \
             WHERE left_at IS NULL",
        )
        .bind(reason)
        .bind(int(at))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected())
    }

    /// Sessions recorded as open (joined, not yet left).
    pub async fn open_session_count(&self) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM attendance WHERE left_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(unsigned(n))
    }
}

#[async_trait]
impl AttendanceStore for Store {
    async fn record_join(&self, r: SessionRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO attendance \
             (session_id, room_id, name, member_id, unit_id, role, kind, joined_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&r.session)
        .bind(&r.room)
        .bind(&r.name)
        .bind(&r.member)
        .bind(&r.unit)
        .bind(r.role.as_str())
        .bind(r.kind.as_str())
        .bind(int(r.joined_at))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn record_leaves(&self, leaves: &[Leave]) -> Result<u64, StoreError> {
        // One transaction: one commit (one fsync) for a whole room's end.
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let mut closed = 0;
        for leave in leaves {
            let t = leave.traffic;
            let done = sqlx::query(
                "UPDATE attendance SET left_at = $2, leave_reason = $3, packets_in = $4, \
                 bytes_in = $5, packets_out = $6, bytes_out = $7 \
                 WHERE session_id = $1 AND left_at IS NULL",
            )
            .bind(&leave.session)
            .bind(int(leave.left_at))
            .bind(&leave.reason)
            .bind(int(t.packets_in))
            .bind(int(t.bytes_in))
            .bind(int(t.packets_out))
            .bind(int(t.bytes_out))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            closed += done.rows_affected();
        }
        tx.commit().await.map_err(store_error)?;
        Ok(closed)
    }

    async fn attendance(&self, room: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT session_id, room_id, name, member_id, unit_id, role, kind, joined_at, left_at, leave_reason, \
             packets_in, bytes_in, packets_out, bytes_out \
             FROM attendance WHERE room_id = $1 ORDER BY joined_at, session_id",
        )
        .bind(room)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter().map(record).collect()
    }
}

fn record(row: Row) -> Result<SessionRecord, StoreError> {
    let (session, room, name, member, unit, role, kind, joined, left, reason, pi, bi, po, bo) = row;
    let role = match role.as_str() {
        "host" => Role::Host,
        "speaker" => Role::Speaker,
        "listener" => Role::Listener,
        "participant" => Role::Participant,
        other => {
            return Err(StoreError(format!(
                "session {session}: unknown role {other:?}"
            )));
        }
    };
    let kind = match kind.as_str() {
        "publish" => SessionKind::Publish,
        "listen" => SessionKind::Listen,
        "join" => SessionKind::Join,
        other => {
            return Err(StoreError(format!(
                "session {session}: unknown kind {other:?}"
            )));
        }
    };
    Ok(SessionRecord {
        session,
        room,
        name,
        member,
        unit,
        role,
        kind,
        joined_at: unsigned(joined),
        left_at: left.map(unsigned),
        leave_reason: reason,
        traffic: Traffic {
            packets_in: unsigned(pi),
            bytes_in: unsigned(bi),
            packets_out: unsigned(po),
            bytes_out: unsigned(bo),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::{TestDb, on_both_backends};

    on_both_backends!(
        joins_and_leaves_are_recorded_per_room_in_order,
        a_restart_closes_open_sessions_at_the_last_heartbeat,
        without_a_heartbeat_open_sessions_close_at_restart,
        a_drain_closes_what_is_open_with_its_reason,
    );

    fn joined(session: &str, room: &str, at: u64) -> SessionRecord {
        SessionRecord {
            session: session.into(),
            room: room.into(),
            name: Some(format!("booth {session}")),
            member: Some(format!("m-{session}")),
            unit: Some("booth-7".into()),
            role: Role::Listener,
            kind: SessionKind::Listen,
            joined_at: at,
            left_at: None,
            leave_reason: None,
            traffic: Traffic::default(),
        }
    }

    async fn joins_and_leaves_are_recorded_per_room_in_order(db: &TestDb) {
        let store = db.open().await;
        store.record_join(joined("b", "r1", 200)).await.unwrap();
        store.record_join(joined("a", "r1", 100)).await.unwrap();
        store.record_join(joined("c", "r2", 150)).await.unwrap();
        let traffic = Traffic {
            packets_in: 1,
            bytes_in: 2,
            packets_out: 3,
            bytes_out: u64::from(u32::MAX) * 4,
        };
        let leave = Leave {
            session: "a".into(),
            left_at: 160,
            reason: "left".into(),
            traffic,
        };
        let unknown = Leave {
            session: "zz".into(),
            left_at: 1,
            reason: "left".into(),
            traffic,
        };
        let batch = [leave.clone(), unknown];
        assert_eq!(store.record_leaves(&batch).await.unwrap(), 1);
        assert_eq!(
            store.record_leaves(&[leave]).await.unwrap(),
            0,
            "a second leave changes nothing"
        );

        let r1 = store.attendance("r1").await.unwrap();
        let ids: Vec<&str> = r1.iter().map(|r| r.session.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(r1[0].left_at, Some(160));
        assert_eq!(r1[0].leave_reason.as_deref(), Some("left"));
        assert_eq!(r1[0].traffic, traffic, "64-bit counters survive");
        assert_eq!(r1[0].name.as_deref(), Some("booth a"));
        assert_eq!((r1[1].left_at, r1[1].leave_reason.as_deref()), (None, None));
        assert_eq!(store.attendance("r2").await.unwrap().len(), 1);
        assert!(store.attendance("r3").await.unwrap().is_empty());
        store.close().await;
    }

    async fn a_restart_closes_open_sessions_at_the_last_heartbeat(db: &TestDb) {
        let store = db.open().await;
        store
            .record_join(joined("early", "r", 1_000))
            .await
            .unwrap();
        store.record_join(joined("late", "r", 1_090)).await.unwrap();
        store.record_join(joined("done", "r", 1_000)).await.unwrap();
        let leave = Leave {
            session: "done".into(),
            left_at: 1_010,
            reason: "left".into(),
            traffic: Traffic::default(),
        };
        store.record_leaves(&[leave]).await.unwrap();
        store.heartbeat(1_050).await.unwrap();
        store.heartbeat(1_060).await.unwrap();
        // The process dies here; the next one opens the same database.
        drop(store);
        let store = db.open().await;
        assert_eq!(store.close_interrupted_sessions(9_999).await.unwrap(), 2);
        let rows = store.attendance("r").await.unwrap();
        let by = |id: &str| rows.iter().find(|r| r.session == id).unwrap().clone();
        assert_eq!(
            (by("early").left_at, by("early").leave_reason.as_deref()),
            (Some(1_060), Some(SERVER_RESTART))
        );
        // Joined after the last heartbeat: closed at its own join, 0 s.
        assert_eq!(by("late").left_at, Some(1_090));
        assert_eq!(by("done").leave_reason.as_deref(), Some("left"));
        assert_eq!(store.close_interrupted_sessions(9_999).await.unwrap(), 0);
        store.close().await;
    }

    async fn without_a_heartbeat_open_sessions_close_at_restart(db: &TestDb) {
        let store = db.open().await;
        store.record_join(joined("a", "r", 100)).await.unwrap();
        assert_eq!(store.close_interrupted_sessions(500).await.unwrap(), 1);
        let rows = store.attendance("r").await.unwrap();
        assert_eq!(rows[0].left_at, Some(500));
        store.close().await;
    }

    async fn a_drain_closes_what_is_open_with_its_reason(db: &TestDb) {
        let store = db.open().await;
        store.record_join(joined("a", "r", 100)).await.unwrap();
        store.record_join(joined("b", "r", 300)).await.unwrap();
        store.record_join(joined("c", "r", 100)).await.unwrap();
        let leave = Leave {
            session: "c".into(),
            left_at: 150,
            reason: "left".into(),
            traffic: Traffic::default(),
        };
        store.record_leaves(&[leave]).await.unwrap();
        assert_eq!(store.open_session_count().await.unwrap(), 2);
        assert_eq!(
            store
                .close_open_sessions(200, SERVER_SHUTDOWN)
                .await
                .unwrap(),
            2
        );
        assert_eq!(store.open_session_count().await.unwrap(), 0);
        let rows = store.attendance("r").await.unwrap();
        let by = |id: &str| rows.iter().find(|r| r.session == id).unwrap().clone();
        assert_eq!(
            (by("a").left_at, by("a").leave_reason.as_deref()),
            (Some(200), Some(SERVER_SHUTDOWN))
        );
        assert_eq!(by("b").left_at, Some(300), "never before its join");
        assert_eq!(by("c").leave_reason.as_deref(), Some("left"));
        store.close().await;
    }
}
