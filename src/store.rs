//! Rooms and attendance in SQLite or PostgreSQL, behind the [`RoomStore`]
//! and `AttendanceStore` traits of `sabha-signaling`.
//!
//! One pool type for both: sqlx's `Any` driver picks the backend from the
//! URL ([`DatabaseUrl`]), so every query is written once. The SQL is kept
//! portable for that — `$n` placeholders, `TEXT` and `BIGINT` columns,
//! Rust `String`/`i64`/`bool` values, no backend-specific syntax in queries
//! or migrations. Queries are checked at run time (no `query!` macros), so
//! building needs no database; the unit tests below run every query against
//! a real SQLite file and a real PostgreSQL database instead.
//!
//! SQLite runs in WAL mode: readers (room lookups on every WHIP/WHEP
//! request) never wait for a writer. Its pragmas are set on each new
//! connection, and only there: nothing else here is SQLite-specific.

mod database_url;

use std::time::Duration;

use async_trait::async_trait;
use sabha_signaling::timestamp::{rfc3339, unix_now};
use sabha_signaling::{
    ListenProfile, NewRoom, Occurrence, Outcome, Room, RoomKind, RoomStatus, RoomStore, StoreError,
    ids,
};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AnyPool, Executor};

mod attendance;
mod keys;
mod members;
mod org;
mod outbox;

pub use attendance::{HEARTBEAT_EVERY, SERVER_SHUTDOWN};
pub use database_url::{Backend, DatabaseUrl, UrlError};
pub use outbox::OutboxRow;

/// The schema, embedded from `migrations/` at build time. The same files run
/// on both backends.
static MIGRATOR: Migrator = sqlx::migrate!();

/// Connections in the pool. SQLite serializes writers anyway; a few readers
/// are plenty for room lookups. PostgreSQL takes more, but each one costs
/// the server a process.
const fn max_connections(backend: Backend) -> u32 {
    match backend {
        Backend::Sqlite => 4,
        Backend::Postgres => 8,
    }
}
/// How long a request waits for a free connection before failing. At
/// startup, also how long a database that refuses connections (still
/// starting, say) gets to come up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Set on every new SQLite connection, in this order. `busy_timeout` (ms):
/// how long a statement waits for a lock before failing. WAL is a property
/// of the file, set by the first connection; later ones confirm it.
const SQLITE_PRAGMAS: [&str; 2] = ["PRAGMA busy_timeout = 5000", "PRAGMA journal_mode = WAL"];
/// Attempts at a fresh id when one collides (≈62-bit ids: never, in practice).
const ID_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "no connection to the database within {}s: is it running, and are the URL's \
         host and port right?", ACQUIRE_TIMEOUT.as_secs()
    )]
    Unreachable,
    #[error("cannot open the database: {0}")]
    Connect(#[from] sqlx::Error),
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] MigrateError),
}

/// The room store: one connection pool, to SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
}

/// The columns of `rooms`, in `room_columns!` order.
#[derive(sqlx::FromRow)]
struct RoomRow {
    id: String,
    name: String,
    kind: String,
    profile: String,
    created_at: String,
    unit_id: Option<String>,
    starts_at: Option<i64>,
    ends_at: Option<i64>,
    time_zone: String,
    recurrence: Option<String>,
    capacity: Option<i64>,
    hosts: String,
    lobby: i64,
    code: Option<String>,
    status: String,
}

/// The column list of `rooms`, as a macro so that queries stay `&'static
/// str` (`concat!`), which sqlx requires of SQL text.
macro_rules! room_columns {
    () => {
        "id, name, kind, profile, created_at, unit_id, starts_at, ends_at, \
         time_zone, recurrence, capacity, hosts, lobby, code, status"
    };
}

impl Store {
    /// Connects to the database at `url` (creating a SQLite file if
    /// missing) and migrates it.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, OpenError> {
        sqlx::any::install_default_drivers();
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections(url.backend()))
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if url.backend() == Backend::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    for pragma in SQLITE_PRAGMAS {
                        conn.execute(pragma).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = match options.connect_with(url.connect_options().clone()).await {
            Ok(pool) => pool,
            // sqlx retries refused connections until the timeout, then says only this.
            Err(sqlx::Error::PoolTimedOut) => return Err(OpenError::Unreachable),
            Err(e) => return Err(e.into()),
        };
        MIGRATOR.run(&pool).await?;
        let store = Self { pool };
        store.backfill_room_codes().await?;
        Ok(store)
    }

    /// Waits for open connections to finish and closes them.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn insert(&self, room: &Room) -> Result<(), sqlx::Error> {
        sqlx::query(concat!(
            "INSERT INTO rooms (",
            room_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ))
        .bind(&room.id)
        .bind(&room.name)
        .bind(kind_text(room.kind))
        .bind(profile_text(room.profile))
        .bind(&room.created_at)
        .bind(&room.unit)
        .bind(room.starts_at.map(|t| t.as_second()))
        .bind(room.ends_at.map(|t| t.as_second()))
        .bind(&room.time_zone)
        .bind(&room.recurrence)
        .bind(room.capacity.map(i64::from))
        .bind(room.hosts.join("\n"))
        .bind(i64::from(room.lobby))
        .bind(&room.code)
        .bind(room.status.as_str())
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Gives rooms made before room codes existed a code of their own.
    async fn backfill_room_codes(&self) -> Result<(), sqlx::Error> {
        let ids: Vec<(String,)> = sqlx::query_as("SELECT id FROM rooms WHERE code IS NULL")
            .fetch_all(&self.pool)
            .await?;
        for (id,) in ids {
            for attempt in 1..=ID_ATTEMPTS {
                let done = sqlx::query("UPDATE rooms SET code = $1 WHERE id = $2")
                    .bind(ids::room_code())
                    .bind(&id)
                    .execute(&self.pool)
                    .await;
                match done {
                    Err(sqlx::Error::Database(e))
                        if e.is_unique_violation() && attempt < ID_ATTEMPTS => {}
                    other => {
                        other?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl RoomStore for Store {
    async fn create_room(&self, new: NewRoom) -> Result<Room, StoreError> {
        let status = if new.starts_at.is_some() {
            RoomStatus::Scheduled
        } else {
            RoomStatus::Open
        };
        let mut room = Room {
            id: String::new(),
            name: new.name,
            kind: new.kind,
            profile: new.profile,
            created_at: rfc3339(unix_now()),
            unit: new.unit,
            starts_at: new.starts_at,
            ends_at: new.ends_at,
            time_zone: new.time_zone.unwrap_or_else(|| "UTC".to_owned()),
            recurrence: new.recurrence,
            capacity: new.capacity,
            hosts: new.hosts,
            lobby: new.lobby,
            code: String::new(),
            status,
        };
        for _ in 0..ID_ATTEMPTS {
            room.id = ids::room_id();
            room.code = ids::room_code();
            match self.insert(&room).await {
                Ok(()) => return Ok(room),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(StoreError(format!(
            "{ID_ATTEMPTS} room id collisions in a row"
        )))
    }

    async fn list_rooms(&self) -> Result<Vec<Room>, StoreError> {
        let rows: Vec<RoomRow> = sqlx::query_as(concat!(
            "SELECT ",
            room_columns!(),
            " FROM rooms ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter().map(room_from_row).collect()
    }

    async fn get_room(&self, id: &str) -> Result<Option<Room>, StoreError> {
        let row: Option<RoomRow> = sqlx::query_as(concat!(
            "SELECT ",
            room_columns!(),
            " FROM rooms WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.map(room_from_row).transpose()
    }

    async fn room_by_code(&self, code: &str) -> Result<Option<Room>, StoreError> {
        let row: Option<RoomRow> = sqlx::query_as(concat!(
            "SELECT ",
            room_columns!(),
            " FROM rooms WHERE code = $1"
        ))
        .bind(code)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.map(room_from_row).transpose()
    }

    async fn delete_room(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM rooms WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_status(&self, id: &str, status: RoomStatus) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE rooms SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(status.as_str())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_occurrence(&self, o: &Occurrence) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO room_occurrences (room_id, starts_at, ends_at, outcome) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, starts_at) DO NOTHING",
        )
        .bind(&o.room)
        .bind(o.starts_at.as_second())
        .bind(o.ends_at.as_second())
        .bind(match o.outcome {
            Outcome::Held => "held",
            Outcome::Missed => "missed",
        })
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn occurrences(&self, room: &str) -> Result<Vec<Occurrence>, StoreError> {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT starts_at, ends_at, outcome FROM room_occurrences \
             WHERE room_id = $1 ORDER BY starts_at",
        )
        .bind(room)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter()
            .map(|(start, end, outcome)| {
                let time = |t: i64| {
                    jiff::Timestamp::from_second(t)
                        .map_err(|e| StoreError(format!("room {room}: occurrence time {e}")))
                };
                let outcome = match outcome.as_str() {
                    "held" => Outcome::Held,
                    "missed" => Outcome::Missed,
                    other => return Err(StoreError(format!("room {room}: outcome {other:?}"))),
                };
                Ok(Occurrence {
                    room: room.to_owned(),
                    starts_at: time(start)?,
                    ends_at: time(end)?,
                    outcome,
                })
            })
            .collect()
    }
}

pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    StoreError(error.to_string())
}

fn kind_text(kind: RoomKind) -> &'static str {
    match kind {
        RoomKind::Rally => "rally",
        RoomKind::Bridge => "bridge",
    }
}

fn profile_text(profile: ListenProfile) -> &'static str {
    match profile {
        ListenProfile::Standard => "standard",
        ListenProfile::Low => "low",
    }
}

fn room_from_row(row: RoomRow) -> Result<Room, StoreError> {
    let id = row.id;
    let kind = match row.kind.as_str() {
        "rally" => RoomKind::Rally,
        "bridge" => RoomKind::Bridge,
        other => return Err(StoreError(format!("room {id} has unknown kind {other:?}"))),
    };
    let profile = match row.profile.as_str() {
        "standard" => ListenProfile::Standard,
        "low" => ListenProfile::Low,
        other => {
            return Err(StoreError(format!(
                "room {id} has unknown profile {other:?}"
            )));
        }
    };
    let status = RoomStatus::parse(&row.status)
        .ok_or_else(|| StoreError(format!("room {id} has unknown status {:?}", row.status)))?;
    let time = |t: Option<i64>| {
        t.map(jiff::Timestamp::from_second)
            .transpose()
            .map_err(|e| StoreError(format!("room {id} has a time out of range: {e}")))
    };
    let capacity = row
        .capacity
        .map(u32::try_from)
        .transpose()
        .map_err(|_| StoreError(format!("room {id} has capacity {:?}", row.capacity)))?;
    Ok(Room {
        starts_at: time(row.starts_at)?,
        ends_at: time(row.ends_at)?,
        id,
        name: row.name,
        kind,
        profile,
        created_at: row.created_at,
        unit: row.unit_id,
        time_zone: row.time_zone,
        recurrence: row.recurrence,
        capacity,
        hosts: row
            .hosts
            .split('\n')
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect(),
        lobby: row.lobby != 0,
        code: row.code.unwrap_or_default(),
        status,
    })
}

#[cfg(test)]
pub(crate) mod test_db;

#[cfg(test)]
mod reach_test;

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::test_db::{TestDb, on_both_backends};
    use super::*;

    on_both_backends!(
        create_get_list_delete,
        rooms_survive_reopening,
        names_are_stored_verbatim,
        a_room_keeps_its_listening_profile,
        a_room_keeps_its_schedule_unit_hosts_and_code,
        status_and_occurrences_are_kept,
        a_duplicate_id_is_a_unique_violation,
        the_schema_rejects_unknown_kinds_and_profiles,
        unknown_kind_in_the_database_is_an_error_not_a_panic,
    );

    fn new_room(name: &str, kind: RoomKind) -> NewRoom {
        NewRoom::unscheduled(name, kind)
    }

    async fn create_get_list_delete(db: &TestDb) {
        let store = db.open().await;
        let a = store
            .create_room(new_room("Rally", RoomKind::Rally))
            .await
            .unwrap();
        let b = store
            .create_room(new_room("Bridge", RoomKind::Bridge))
            .await
            .unwrap();
        assert!(ids::is_room_id(&a.id));
        assert_eq!((a.name.as_str(), a.kind), ("Rally", RoomKind::Rally));
        assert!(a.created_at.ends_with('Z'));

        assert_eq!(store.get_room(&b.id).await.unwrap(), Some(b.clone()));
        assert_eq!(store.get_room("nosuchroom00").await.unwrap(), None);

        let mut listed = store.list_rooms().await.unwrap();
        listed.sort_by(|x, y| x.id.cmp(&y.id));
        let mut expected = vec![a.clone(), b.clone()];
        expected.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(listed, expected);

        assert!(store.delete_room(&a.id).await.unwrap());
        assert!(!store.delete_room(&a.id).await.unwrap());
        assert_eq!(store.get_room(&a.id).await.unwrap(), None);
        assert_eq!(store.list_rooms().await.unwrap(), vec![b]);
        store.close().await;
    }

    /// Reopening also re-runs the migrator on a migrated database.
    async fn rooms_survive_reopening(db: &TestDb) {
        let store = db.open().await;
        let room = store
            .create_room(new_room("Kept", RoomKind::Bridge))
            .await
            .unwrap();
        store.close().await;
        let store = db.open().await;
        assert_eq!(store.get_room(&room.id).await.unwrap(), Some(room));
        store.close().await;
    }

    async fn names_are_stored_verbatim(db: &TestDb) {
        let store = db.open().await;
        let name = "'; DROP TABLE rooms; -- सभा 🎤 \\ $1 %";
        let room = store
            .create_room(new_room(name, RoomKind::Rally))
            .await
            .unwrap();
        assert_eq!(store.get_room(&room.id).await.unwrap().unwrap().name, name);
        store.close().await;
    }

    async fn a_room_keeps_its_listening_profile(db: &TestDb) {
        let store = db.open().await;
        let low = NewRoom {
            profile: ListenProfile::Low,
            ..new_room("3G rally", RoomKind::Rally)
        };
        let created = store.create_room(low).await.unwrap();
        let plain = store
            .create_room(new_room("Bridge", RoomKind::Bridge))
            .await
            .unwrap();
        let got = store.get_room(&created.id).await.unwrap().unwrap();
        assert_eq!(got.profile, ListenProfile::Low);
        let listed = store.list_rooms().await.unwrap();
        let profiles: Vec<_> = listed.iter().map(|r| (r.id.clone(), r.profile)).collect();
        assert!(profiles.contains(&(plain.id, ListenProfile::Standard)));
        store.close().await;
    }

    async fn a_room_keeps_its_schedule_unit_hosts_and_code(db: &TestDb) {
        let store = db.open().await;
        let start: jiff::Timestamp = "2026-12-07T12:30:00Z".parse().unwrap();
        let scheduled = NewRoom {
            unit: Some("D07".into()),
            starts_at: Some(start),
            ends_at: Some(start + jiff::SignedDuration::from_hours(1)),
            time_zone: Some("Asia/Kolkata".into()),
            recurrence: Some("FREQ=WEEKLY;BYDAY=MO".into()),
            capacity: Some(500),
            hosts: vec!["m-1".into(), "Asha Rao".into()],
            lobby: true,
            ..new_room("Weekly rally", RoomKind::Rally)
        };
        let created = store.create_room(scheduled).await.unwrap();
        assert_eq!(created.status, RoomStatus::Scheduled);
        assert!(ids::is_room_code(&created.code), "{}", created.code);
        let got = store.get_room(&created.id).await.unwrap().unwrap();
        assert_eq!(got, created);
        assert_eq!(
            store.room_by_code(&created.code).await.unwrap(),
            Some(created.clone())
        );
        assert_eq!(store.room_by_code("00000000").await.unwrap(), None);
        let plain = store
            .create_room(new_room("Now", RoomKind::Bridge))
            .await
            .unwrap();
        assert_eq!(plain.status, RoomStatus::Open);
        assert_ne!(plain.code, created.code);
        let plain = store.get_room(&plain.id).await.unwrap().unwrap();
        assert_eq!(
            (plain.hosts.len(), plain.lobby, plain.unit),
            (0, false, None)
        );
        store.close().await;
    }

    async fn status_and_occurrences_are_kept(db: &TestDb) {
        let store = db.open().await;
        let room = store
            .create_room(new_room("Weekly", RoomKind::Rally))
            .await
            .unwrap();
        assert!(store.set_status(&room.id, RoomStatus::Ended).await.unwrap());
        assert!(
            !store
                .set_status("nosuchroom00", RoomStatus::Ended)
                .await
                .unwrap()
        );
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let held = Occurrence {
            room: room.id.clone(),
            starts_at: at("2026-12-07T12:30:00Z"),
            ends_at: at("2026-12-07T13:30:00Z"),
            outcome: Outcome::Held,
        };
        let missed = Occurrence {
            starts_at: at("2026-12-03T12:30:00Z"),
            ends_at: at("2026-12-03T13:30:00Z"),
            outcome: Outcome::Missed,
            ..held.clone()
        };
        store.record_occurrence(&held).await.unwrap();
        store.record_occurrence(&missed).await.unwrap();
        let again = Occurrence {
            outcome: Outcome::Missed,
            ..held.clone()
        };
        store.record_occurrence(&again).await.unwrap();
        store.close().await;
        let store = db.open().await;
        let got = store.get_room(&room.id).await.unwrap().unwrap();
        assert_eq!(got.status, RoomStatus::Ended);
        assert_eq!(store.occurrences(&room.id).await.unwrap(), [missed, held]);
        store.close().await;
    }

    /// What `create_room` retries on when a fresh id collides.
    async fn a_duplicate_id_is_a_unique_violation(db: &TestDb) {
        let store = db.open().await;
        let room = store
            .create_room(new_room("First", RoomKind::Rally))
            .await
            .unwrap();
        match store.insert(&room).await {
            Err(sqlx::Error::Database(e)) => assert!(e.is_unique_violation(), "{e}"),
            other => panic!("a second insert of {} gave {other:?}", room.id),
        }
        store.close().await;
    }

    /// The migrations' CHECK constraints hold on every backend.
    async fn the_schema_rejects_unknown_kinds_and_profiles(db: &TestDb) {
        let store = db.open().await;
        for (kind, profile) in [("party", "standard"), ("rally", "hifi")] {
            let inserted = sqlx::query(
                "INSERT INTO rooms (id, name, kind, profile, created_at) \
                 VALUES ('oddroom00000', 'x', $1, $2, '2025-01-01T00:00:00Z')",
            )
            .bind(kind)
            .bind(profile)
            .execute(&store.pool)
            .await;
            match inserted {
                Err(sqlx::Error::Database(e)) => {
                    assert_eq!(e.kind(), sqlx::error::ErrorKind::CheckViolation, "{e}");
                }
                other => panic!("{kind}/{profile} gave {other:?}"),
            }
        }
        store.close().await;
    }

    async fn unknown_kind_in_the_database_is_an_error_not_a_panic(db: &TestDb) {
        let store = db.open().await;
        // Bypass the CHECK constraint the way a future migration bug might.
        let mut conn = db.connect().await;
        let bypass = match db.url.backend() {
            Backend::Sqlite => "PRAGMA ignore_check_constraints = ON",
            // This test's own database: dropping the constraint harms no other.
            Backend::Postgres => "ALTER TABLE rooms DROP CONSTRAINT rooms_kind_check",
        };
        conn.execute(bypass).await.unwrap();
        conn.execute(
            "INSERT INTO rooms (id, name, kind, created_at) \
             VALUES ('oddroom00000', 'x', 'party', '2025-01-01T00:00:00Z')",
        )
        .await
        .unwrap();
        conn.close().await.unwrap();
        assert!(store.get_room("oddroom00000").await.is_err());
        assert!(store.list_rooms().await.is_err());
        store.close().await;
    }

    #[tokio::test]
    async fn sqlite_database_is_in_wal_mode() {
        let db = TestDb::sqlite();
        let store = db.open().await;
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        store.close().await;
        db.finish().await;
    }

    /// The PostgreSQL tests really reach PostgreSQL, each in its own
    /// database: the backend is not silently SQLite.
    #[tokio::test]
    async fn postgres_store_is_on_its_own_postgres_database() {
        let db = TestDb::postgres().await;
        let store = db.open().await;
        let (version, database): (String, String) =
            sqlx::query_as("SELECT version(), current_database()::text")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert!(version.starts_with("PostgreSQL "), "{version}");
        assert!(database.starts_with("sabha_test_"), "{database}");
        let (migrated,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(migrated, MIGRATOR.iter().count() as i64);
        store.close().await;
        db.finish().await;
    }
}
