//! Fresh databases for store tests, on either backend.
//!
//! SQLite: a file in a new temporary directory. PostgreSQL: a new database,
//! named for this process and test, on the server that
//! `SABHA_TEST_POSTGRES_URL` points to (`scripts/test` starts one). Each
//! test gets its own, so tests run in parallel and none sees another's rows.
//!
//! Without the variable a PostgreSQL test fails: a test that cannot fail
//! would hide a store that only works on SQLite.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{AnyConnection, AssertSqlSafe, ConnectOptions, Connection, Executor};

use super::{Backend, DatabaseUrl, Store};
use crate::secrets::tests::{TempDir, temp_dir};

/// The PostgreSQL server of the tests: a URL whose user may CREATE DATABASE.
pub(crate) const POSTGRES_URL_VAR: &str = "SABHA_TEST_POSTGRES_URL";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// One test's database. Call [`TestDb::finish`] at the end; a test that
/// panics leaves its PostgreSQL database behind (the throwaway server of
/// `scripts/test` goes with it).
pub(crate) struct TestDb {
    pub(crate) url: DatabaseUrl,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite { _dir: TempDir },
    Postgres { server: DatabaseUrl, name: String },
}

impl TestDb {
    pub(crate) async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::postgres().await,
        }
    }

    pub(crate) fn sqlite() -> Self {
        let dir = temp_dir("store");
        let url = DatabaseUrl::sqlite_file(&dir.join("sabha.db")).expect("temp paths are UTF-8");
        Self {
            url,
            cleanup: Cleanup::Sqlite { _dir: dir },
        }
    }

    pub(crate) async fn postgres() -> Self {
        let server = postgres_server();
        let name = unique_name();
        let mut admin = connect(&server).await;
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {server}: {e}"));
        admin.close().await.expect("closing the admin connection");
        Self {
            url: server.with_database(&name),
            cleanup: Cleanup::Postgres { server, name },
        }
    }

    /// Opens (and migrates) the store on this database.
    pub(crate) async fn open(&self) -> Store {
        Store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("opening the store on {}: {e}", self.url))
    }

    /// A plain connection to this database, for looking under the store.
    pub(crate) async fn connect(&self) -> AnyConnection {
        connect(&self.url).await
    }

    /// Removes the database (a SQLite directory goes on drop).
    pub(crate) async fn finish(self) {
        if let Cleanup::Postgres { server, name } = &self.cleanup {
            let mut admin = connect(server).await;
            admin
                .execute(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await
                .unwrap_or_else(|e| panic!("DROP DATABASE {name}: {e}"));
            admin.close().await.expect("closing the admin connection");
        }
    }
}

fn postgres_server() -> DatabaseUrl {
    let url = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_URL_VAR} is not set, so this PostgreSQL test cannot run. \
             Run the suite with `scripts/test`, which starts a throwaway PostgreSQL \
             and sets it, or set it to a postgres:// URL of a server where this \
             user may CREATE DATABASE."
        )
    });
    let url = DatabaseUrl::parse(&url).unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR}: {e}"));
    assert_eq!(
        url.backend(),
        Backend::Postgres,
        "{POSTGRES_URL_VAR} must be a postgres:// URL"
    );
    url
}

async fn connect(url: &DatabaseUrl) -> AnyConnection {
    sqlx::any::install_default_drivers();
    url.connect_options()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// Lowercase, so PostgreSQL needs no quotes; unique across processes.
fn unique_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "sabha_test_{}_{}_{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Each listed `async fn NAME(db: &TestDb)` becomes two tests,
/// `sqlite::NAME` and `postgres::NAME`, each on a fresh database.
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let db = $crate::store::test_db::TestDb::new($crate::store::Backend::Sqlite).await;
                    super::$test(&db).await;
                    db.finish().await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let db = $crate::store::test_db::TestDb::new($crate::store::Backend::Postgres).await;
                    super::$test(&db).await;
                    db.finish().await;
                }
            )+
        }
    };
}
pub(crate) use on_both_backends;
