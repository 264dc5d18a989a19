//! Which database the store opens: a URL, parsed once at startup.
//!
//! `sqlite:PATH` (or `sqlite://PATH`) is the embedded default; `postgres://`
//! or `postgresql://` selects PostgreSQL. Anything else is an error before
//! the server starts, so a typo never falls back to a local file.
//!
//! A PostgreSQL URL may carry a password, so [`DatabaseUrl`] prints (both
//! `Display` and `Debug`) only the backend and where it is: the SQLite file,
//! or the PostgreSQL host.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use sqlx::any::AnyConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use url::Url;

/// The databases the store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// A database URL naming a backend the store supports.
#[derive(Clone)]
pub struct DatabaseUrl {
    backend: Backend,
    /// The SQLite file or the PostgreSQL host: all that logs may show.
    location: String,
    options: AnyConnectOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("the database setting is not a URL ({0}); expected sqlite:PATH or postgres://…")]
    NotAUrl(url::ParseError),
    #[error(
        "unsupported database URL scheme `{0}:`; expected sqlite:PATH or \
         postgres://USER@HOST[:PORT]/DATABASE (postgresql:// also works)"
    )]
    Scheme(String),
    #[error("invalid {backend} database URL: {reason}")]
    Invalid { backend: Backend, reason: String },
    #[error("the SQLite path {} is not valid UTF-8; set a sqlite: URL instead", .0.display())]
    NotUtf8(PathBuf),
}

/// Bytes escaped in a SQLite path inside a URL: those a URL parser would
/// read as something else (`%` too, since sqlx percent-decodes the path).
const PATH_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

impl DatabaseUrl {
    /// Parses a `sqlite:`, `postgres://` or `postgresql://` URL.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let url = Url::parse(text.trim()).map_err(UrlError::NotAUrl)?;
        match url.scheme() {
            "sqlite" => Self::sqlite(url),
            "postgres" | "postgresql" => Self::postgres(url),
            other => Err(UrlError::Scheme(other.to_owned())),
        }
    }

    /// The SQLite file at `path`, created if missing. Relative paths are
    /// made absolute against the working directory, so the URL has no host
    /// part to misread.
    pub fn sqlite_file(path: &Path) -> Result<Self, UrlError> {
        let absolute = std::path::absolute(path).map_err(|e| UrlError::Invalid {
            backend: Backend::Sqlite,
            reason: format!("cannot resolve {}: {e}", path.display()),
        })?;
        let text = absolute
            .to_str()
            .ok_or_else(|| UrlError::NotUtf8(absolute.clone()))?;
        Self::parse(&format!(
            "sqlite://{}?mode=rwc",
            utf8_percent_encode(text, PATH_ESCAPES)
        ))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What the store connects with (the full URL: never log it).
    pub(super) fn connect_options(&self) -> &AnyConnectOptions {
        &self.options
    }

    /// The same server with another database (each test creates its own).
    #[cfg(test)]
    pub(super) fn with_database(&self, name: &str) -> Self {
        let mut options = self.options.clone();
        options.database_url.set_path(name);
        Self {
            options,
            ..self.clone()
        }
    }

    fn sqlite(mut url: Url) -> Result<Self, UrlError> {
        // Like the default file: create the database unless told otherwise.
        if !url.query_pairs().any(|(key, _)| key == "mode") {
            url.query_pairs_mut().append_pair("mode", "rwc");
        }
        let parsed = SqliteConnectOptions::from_str(url.as_str())
            .map_err(|e| invalid(Backend::Sqlite, e))?;
        Ok(Self {
            backend: Backend::Sqlite,
            location: parsed.get_filename().display().to_string(),
            options: AnyConnectOptions::from_str(url.as_str())
                .map_err(|e| invalid(Backend::Sqlite, e))?,
        })
    }

    fn postgres(url: Url) -> Result<Self, UrlError> {
        let parsed =
            PgConnectOptions::from_str(url.as_str()).map_err(|e| invalid(Backend::Postgres, e))?;
        let location = match parsed.get_socket() {
            Some(socket) => socket.display().to_string(),
            None => parsed.get_host().to_owned(),
        };
        Ok(Self {
            backend: Backend::Postgres,
            location,
            options: AnyConnectOptions::from_str(url.as_str())
                .map_err(|e| invalid(Backend::Postgres, e))?,
        })
    }
}

fn invalid(backend: Backend, error: sqlx::Error) -> UrlError {
    UrlError::Invalid {
        backend,
        reason: error.to_string(),
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.backend {
            Backend::Sqlite => write!(f, "sqlite file {}", self.location),
            Backend::Postgres => write!(f, "postgres on {}", self.location),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseUrl")
            .field("backend", &self.backend)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_select_postgres_and_hide_the_password() {
        for text in [
            "postgres://sabha:hunter2@db.example:5433/sabha",
            "postgresql://sabha:hunter2@db.example/sabha?sslmode=disable",
        ] {
            let url = DatabaseUrl::parse(text).unwrap();
            assert_eq!(url.backend(), Backend::Postgres);
            assert_eq!(url.to_string(), "postgres on db.example");
            let debug = format!("{url:?}");
            assert!(
                !debug.contains("hunter2") && !debug.contains("sabha@"),
                "{debug}"
            );
        }
        let socket = DatabaseUrl::parse("postgres:///sabha?host=/run/postgresql").unwrap();
        assert_eq!(socket.to_string(), "postgres on /run/postgresql");
    }

    #[test]
    fn sqlite_urls_and_files() {
        let url = DatabaseUrl::parse("sqlite:///var/lib/sabha/rooms.db").unwrap();
        assert_eq!(url.backend(), Backend::Sqlite);
        assert_eq!(url.to_string(), "sqlite file /var/lib/sabha/rooms.db");
        assert!(url.options.database_url.as_str().ends_with("?mode=rwc"));
        let read_only = DatabaseUrl::parse("sqlite:///x.db?mode=ro").unwrap();
        assert!(
            read_only
                .options
                .database_url
                .as_str()
                .ends_with("?mode=ro")
        );
        assert!(DatabaseUrl::parse("sqlite:///x.db?mode=sideways").is_err());
    }

    /// The file the driver opens is exactly the file named, whatever its
    /// characters.
    #[test]
    fn odd_sqlite_paths_survive_the_url() {
        for name in [
            "plain.db",
            "with space.db",
            "50%.db",
            "q?.db",
            "h#.db",
            "सभा.db",
        ] {
            let path = Path::new("/tmp/sabha dir").join(name);
            let url = DatabaseUrl::sqlite_file(&path).unwrap();
            let opened = SqliteConnectOptions::from_str(url.options.database_url.as_str()).unwrap();
            assert_eq!(opened.get_filename(), path, "{name}");
            assert_eq!(url.to_string(), format!("sqlite file {}", path.display()));
        }
        let relative = DatabaseUrl::sqlite_file(Path::new("data/sabha.db")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            relative.location,
            cwd.join("data/sabha.db").display().to_string()
        );
    }

    #[test]
    fn other_schemes_and_non_urls_are_errors() {
        assert!(matches!(
            DatabaseUrl::parse("mysql://root@localhost/sabha"),
            Err(UrlError::Scheme(s)) if s == "mysql"
        ));
        assert!(matches!(
            DatabaseUrl::parse("/var/lib/sabha.db"),
            Err(UrlError::NotAUrl(_))
        ));
        assert!(matches!(
            DatabaseUrl::parse("postgres://db.example:notaport/sabha"),
            Err(UrlError::NotAUrl(_))
        ));
    }
}
