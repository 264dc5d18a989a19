//! Server configuration, resolved once in `main` and passed down typed.
//!
//! Each setting comes from the first of: a command-line flag, its `SABHA_*`
//! environment variable (clap reads both, in that order), the TOML file named
//! by `--config` / `SABHA_CONFIG`, and the default. `deploy/sabha.toml`
//! documents every key. Nothing below `main` reads the environment.
//!
//! Defaults bind to loopback: a fresh install is reachable only from the
//! machine it runs on until someone chooses an interface on purpose.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::builder::BoolishValueParser;
use sabha_signaling::{CorsConfig, CorsError, OperatorKey};
use serde::Deserialize;

use std::time::Duration;

use crate::store::{DatabaseUrl, UrlError};
use crate::webhooks::sign::KeyError;
use crate::webhooks::{Delivery, SigningKey};

/// HTTP API: loopback, the usual development port.
pub const DEFAULT_HTTP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// Media UDP: loopback; 8443 is a port firewalls often already open.
pub const DEFAULT_MEDIA: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8443);
/// Media threads at most: each takes a UDP port, and more than the cores
/// only adds context switches.
pub const MAX_MEDIA_THREADS: usize = 64;
/// Database, JWT secret and operator key live here.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// The embedded SQLite database, in the data directory, unless `database`
/// names another.
pub const DEFAULT_DATABASE_FILE: &str = "sabha.db";
/// `tracing` filter.
pub const DEFAULT_LOG: &str = "info";
/// How long a drain waits for open sessions: long enough for a speaker to
/// finish a sentence and clients to reconnect elsewhere, short enough for
/// Kubernetes' default 30 s grace (set `terminationGracePeriodSeconds` above
/// this).
pub const DEFAULT_DRAIN_TIMEOUT_S: u64 = 30;

/// `sabha serve` flags. Every one is optional: absent means "ask the next
/// source" (environment, file, default).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// HTTP listen address [default: 127.0.0.1:8080]
    #[arg(long, env = "SABHA_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Media UDP listen address [default: 127.0.0.1:8443]
    #[arg(long, env = "SABHA_MEDIA", value_name = "ADDR")]
    pub media: Option<SocketAddr>,
    /// IP announced in ICE candidates [default: the media bind IP]
    #[arg(long, env = "SABHA_ADVERTISE", value_name = "IP")]
    pub advertise: Option<IpAddr>,
    /// Media threads, each with its own UDP port (the media port, then the
    /// ones after it) and its own rooms [default: the CPUs this process may
    /// use]
    #[arg(long, env = "SABHA_MEDIA_THREADS", value_name = "N")]
    pub media_threads: Option<usize>,
    /// Directory for sabha.db, jwt.secret and operator.key [default: ./data]
    #[arg(long, env = "SABHA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite:PATH, or postgres://USER@HOST[:PORT]/DB to use
    /// PostgreSQL; prefer the environment variable if it has a password
    /// [default: the SQLite file <data dir>/sabha.db]
    #[arg(
        long,
        env = "SABHA_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database: Option<String>,
    /// TOML config file (see deploy/sabha.toml)
    #[arg(long, env = "SABHA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Operator key; prefer the environment variable (command lines are
    /// visible to other users) [default: <data dir>/operator.key]
    #[arg(
        long,
        env = "SABHA_OPERATOR_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub operator_key: Option<String>,
    /// Browser origins allowed on every route, comma-separated; `*` for any
    #[arg(
        long,
        env = "SABHA_CORS_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Option<Vec<String>>,
    /// Whether WHEP and session DELETE accept any origin [default: true]
    #[arg(long, env = "SABHA_CORS_WHEP_ANY_ORIGIN", value_name = "BOOL",
          value_parser = BoolishValueParser::new())]
    pub cors_whep_any_origin: Option<bool>,
    /// IANA time zone of schedules that name none, and of times shown to
    /// operators, e.g. Asia/Kolkata [default: UTC]
    #[arg(long, env = "SABHA_TIME_ZONE", value_name = "ZONE")]
    pub time_zone: Option<String>,
    /// Seconds before a scheduled window's start from which sessions may
    /// open; earlier gets 425 Too Early [default: 600]
    #[arg(long, env = "SABHA_EARLY_JOIN_GRACE_S", value_name = "SECONDS")]
    pub early_join_grace_s: Option<u64>,
    /// Seconds open sessions may go on after SIGTERM before their rooms are
    /// closed; new sessions get 503 meanwhile [default: 30]
    #[arg(long, env = "SABHA_DRAIN_TIMEOUT_S", value_name = "SECONDS")]
    pub drain_timeout_s: Option<u64>,
    /// Log filter, e.g. `info` or `sabha=debug,tower_http=debug` [default: info]
    #[arg(long, env = "SABHA_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Webhook endpoint (http://…), repeatable; env: comma-separated
    #[arg(
        long = "webhook-url",
        env = "SABHA_WEBHOOK_URLS",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub webhook_urls: Option<Vec<String>>,
    /// Webhook signing secret, `whsec_<base64>`; prefer the environment
    /// variable [default: <data dir>/webhook.secret]
    #[arg(
        long,
        env = "SABHA_WEBHOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// Tests: first webhook retry delay in ms (doubles each time) [default: 1000]
    #[arg(long, env = "SABHA_WEBHOOK_RETRY_BASE_MS", hide = true)]
    pub webhook_retry_base_ms: Option<u64>,
    /// Tests: longest webhook retry delay in ms [default: 600000]
    #[arg(long, env = "SABHA_WEBHOOK_RETRY_CAP_MS", hide = true)]
    pub webhook_retry_cap_ms: Option<u64>,
    /// Tests: webhook attempts before giving up [default: 15]
    #[arg(long, env = "SABHA_WEBHOOK_MAX_ATTEMPTS", hide = true)]
    pub webhook_max_attempts: Option<u32>,
    /// PIN-join tries per minute from one IP [default: 10]
    #[arg(long, env = "SABHA_PIN_RATE_PER_IP_PER_MINUTE", value_name = "N")]
    pub pin_rate_per_ip_per_minute: Option<u32>,
    /// PIN-join tries per minute at one room code [default: 120]
    #[arg(long, env = "SABHA_PIN_RATE_PER_ROOM_PER_MINUTE", value_name = "N")]
    pub pin_rate_per_room_per_minute: Option<u32>,
    /// Consecutive wrong PINs from one IP before it is locked out [default: 5]
    #[arg(long, env = "SABHA_PIN_FAILURES_BEFORE_LOCKOUT", value_name = "N")]
    pub pin_failures_before_lockout: Option<u32>,
    /// Seconds a PIN-join lockout lasts [default: 900]
    #[arg(long, env = "SABHA_PIN_LOCKOUT_S", value_name = "SECONDS")]
    pub pin_lockout_s: Option<u64>,
    /// Wrong PINs at one room code within a lockout period before the code
    /// is locked [default: 100]
    #[arg(long, env = "SABHA_PIN_ROOM_FAILURES_BEFORE_LOCKOUT", value_name = "N")]
    pub pin_room_failures_before_lockout: Option<u32>,
    /// Session creations (whip, whep, join) one IP may make back to back [default: 120]
    #[arg(long, env = "SABHA_SESSION_RATE_BURST", value_name = "N")]
    pub session_rate_burst: Option<u32>,
    /// Session creations per second one IP may sustain [default: 60]
    #[arg(long, env = "SABHA_SESSION_RATE_PER_S", value_name = "N")]
    pub session_rate_per_s: Option<u32>,
    /// Token/PIN/invite/key mints one IP may make back to back [default: 600]
    #[arg(long, env = "SABHA_MINT_RATE_BURST", value_name = "N")]
    pub mint_rate_burst: Option<u32>,
    /// Token/PIN/invite/key mints per second one IP may sustain [default: 100]
    #[arg(long, env = "SABHA_MINT_RATE_PER_S", value_name = "N")]
    pub mint_rate_per_s: Option<u32>,
}

/// The TOML file: the same settings as the flags, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http: Option<SocketAddr>,
    media: Option<SocketAddr>,
    advertise: Option<IpAddr>,
    media_threads: Option<usize>,
    data_dir: Option<PathBuf>,
    database: Option<String>,
    operator_key: Option<String>,
    cors_origins: Option<Vec<String>>,
    cors_whep_any_origin: Option<bool>,
    time_zone: Option<String>,
    early_join_grace_s: Option<u64>,
    drain_timeout_s: Option<u64>,
    log: Option<String>,
    webhook_urls: Option<Vec<String>>,
    webhook_secret: Option<String>,
    pin_rate_per_ip_per_minute: Option<u32>,
    pin_rate_per_room_per_minute: Option<u32>,
    pin_failures_before_lockout: Option<u32>,
    pin_lockout_s: Option<u64>,
    pin_room_failures_before_lockout: Option<u32>,
    session_rate_burst: Option<u32>,
    session_rate_per_s: Option<u32>,
    mint_rate_burst: Option<u32>,
    mint_rate_per_s: Option<u32>,
}

/// The resolved configuration of `sabha serve`.
#[derive(Debug)]
pub struct ServeConfig {
    pub http: SocketAddr,
    pub media: SocketAddr,
    pub advertise: Option<IpAddr>,
    /// 1 to [`MAX_MEDIA_THREADS`].
    pub media_threads: usize,
    pub data_dir: PathBuf,
    /// Where the rooms are; its `Debug` and `Display` hide any password.
    pub database: DatabaseUrl,
    /// `None`: read or create `<data dir>/operator.key`.
    pub operator_key: Option<OperatorKey>,
    pub cors: CorsConfig,
    /// An IANA zone name that the bundled zone database knows.
    pub time_zone: String,
    pub early_join_grace_s: u64,
    /// How long a drain (SIGTERM) waits for open sessions to end.
    pub drain_timeout: Duration,
    pub log: String,
    /// Checked http:// URLs; empty: no webhooks.
    pub webhook_urls: Vec<String>,
    /// `None`: read or create `<data dir>/webhook.secret`.
    pub webhook_key: Option<SigningKey>,
    pub webhook_delivery: Delivery,
    /// Brute-force limits of `POST /v1/pin-join`; every one at least 1.
    pub pin_limits: sabha_signaling::PinLimits,
    /// Per-IP limits on session creation and minting; every value at least 1.
    pub request_limits: sabha_signaling::RequestLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("the operator key must not be empty")]
    EmptyOperatorKey,
    #[error(transparent)]
    Cors(#[from] CorsError),
    #[error(transparent)]
    Database(#[from] UrlError),
    #[error("unknown time zone {0:?}: use an IANA name such as Asia/Kolkata or UTC")]
    TimeZone(String),
    #[error("webhook URL {0:?}: {1}")]
    WebhookUrl(String, &'static str),
    #[error("webhook secret: {0}")]
    WebhookSecret(#[from] KeyError),
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    #[error("media_threads is {0}: it must be 1 to {MAX_MEDIA_THREADS}")]
    MediaThreads(usize),
}

impl ServeConfig {
    /// Reads the file named by the flags (if any) and resolves every setting.
    pub fn load(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Self::resolve(args, file)
    }

    fn resolve(args: ServeArgs, file: FileConfig) -> Result<Self, ConfigError> {
        let operator_key = match args.operator_key.or(file.operator_key) {
            Some(key) if key.trim().is_empty() => return Err(ConfigError::EmptyOperatorKey),
            Some(key) => Some(OperatorKey::new(key.trim())),
            None => None,
        };
        let origins = args.cors_origins.or(file.cors_origins).unwrap_or_default();
        let whep_any_origin = args
            .cors_whep_any_origin
            .or(file.cors_whep_any_origin)
            .unwrap_or(true);
        let data_dir: PathBuf = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        let database = match args.database.or(file.database) {
            Some(url) => DatabaseUrl::parse(&url)?,
            None => DatabaseUrl::sqlite_file(&data_dir.join(DEFAULT_DATABASE_FILE))?,
        };
        let time_zone = args
            .time_zone
            .or(file.time_zone)
            .unwrap_or_else(|| "UTC".to_owned());
        if jiff::tz::TimeZone::get(&time_zone).is_err() {
            return Err(ConfigError::TimeZone(time_zone));
        }
        let d = sabha_signaling::PinLimits::default();
        let pin_limits = sabha_signaling::PinLimits {
            per_ip_per_minute: args
                .pin_rate_per_ip_per_minute
                .or(file.pin_rate_per_ip_per_minute)
                .unwrap_or(d.per_ip_per_minute),
            per_room_per_minute: args
                .pin_rate_per_room_per_minute
                .or(file.pin_rate_per_room_per_minute)
                .unwrap_or(d.per_room_per_minute),
            failures_before_lockout: args
                .pin_failures_before_lockout
                .or(file.pin_failures_before_lockout)
                .unwrap_or(d.failures_before_lockout),
            lockout_s: args
                .pin_lockout_s
                .or(file.pin_lockout_s)
                .unwrap_or(d.lockout_s),
            room_failures_before_lockout: args
                .pin_room_failures_before_lockout
                .or(file.pin_room_failures_before_lockout)
                .unwrap_or(d.room_failures_before_lockout),
        };
        for (name, value) in [
            (
                "pin_rate_per_ip_per_minute",
                u64::from(pin_limits.per_ip_per_minute),
            ),
            (
                "pin_rate_per_room_per_minute",
                u64::from(pin_limits.per_room_per_minute),
            ),
            (
                "pin_failures_before_lockout",
                u64::from(pin_limits.failures_before_lockout),
            ),
            ("pin_lockout_s", pin_limits.lockout_s),
            (
                "pin_room_failures_before_lockout",
                u64::from(pin_limits.room_failures_before_lockout),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        let defaults = sabha_signaling::RequestLimits::default();
        let rate = |burst: Option<u32>, per_s: Option<u32>, d: sabha_signaling::Rate| {
            sabha_signaling::Rate {
                burst: burst.unwrap_or(d.burst),
                per_second: per_s.map_or(d.per_second, f64::from),
            }
        };
        let request_limits = sabha_signaling::RequestLimits {
            sessions: rate(
                args.session_rate_burst.or(file.session_rate_burst),
                args.session_rate_per_s.or(file.session_rate_per_s),
                defaults.sessions,
            ),
            minting: rate(
                args.mint_rate_burst.or(file.mint_rate_burst),
                args.mint_rate_per_s.or(file.mint_rate_per_s),
                defaults.minting,
            ),
        };
        let (sessions, minting) = (request_limits.sessions, request_limits.minting);
        for (name, value) in [
            ("session_rate_burst", f64::from(sessions.burst)),
            ("session_rate_per_s", sessions.per_second),
            ("mint_rate_burst", f64::from(minting.burst)),
            ("mint_rate_per_s", minting.per_second),
        ] {
            if value <= 0.0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        let webhook_urls = args
            .webhook_urls
            .or(file.webhook_urls)
            .unwrap_or_default()
            .iter()
            .map(|url| webhook_url(url))
            .collect::<Result<Vec<_>, _>>()?;
        let webhook_key = args
            .webhook_secret
            .or(file.webhook_secret)
            .map(|secret| SigningKey::parse(&secret))
            .transpose()?;
        let defaults = Delivery::default();
        let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
        let webhook_delivery = Delivery {
            retry_base: ms(args.webhook_retry_base_ms, defaults.retry_base),
            retry_cap: ms(args.webhook_retry_cap_ms, defaults.retry_cap),
            max_attempts: args
                .webhook_max_attempts
                .unwrap_or(defaults.max_attempts)
                .max(1),
            timeout: defaults.timeout,
        };
        let media_threads = match args.media_threads.or(file.media_threads) {
            Some(n) if (1..=MAX_MEDIA_THREADS).contains(&n) => n,
            Some(n) => return Err(ConfigError::MediaThreads(n)),
            None => default_media_threads(),
        };
        Ok(Self {
            webhook_urls,
            webhook_key,
            webhook_delivery,
            pin_limits,
            request_limits,
            http: args.http.or(file.http).unwrap_or(DEFAULT_HTTP),
            media: args.media.or(file.media).unwrap_or(DEFAULT_MEDIA),
            advertise: args.advertise.or(file.advertise),
            media_threads,
            data_dir,
            database,
            operator_key,
            cors: CorsConfig::parse(&origins, whep_any_origin)?,
            time_zone,
            early_join_grace_s: args
                .early_join_grace_s
                .or(file.early_join_grace_s)
                .unwrap_or(sabha_signaling::app::DEFAULT_EARLY_JOIN_GRACE_S),
            drain_timeout: Duration::from_secs(
                args.drain_timeout_s
                    .or(file.drain_timeout_s)
                    .unwrap_or(DEFAULT_DRAIN_TIMEOUT_S),
            ),
            log: args
                .log
                .or(file.log)
                .unwrap_or_else(|| DEFAULT_LOG.to_owned()),
        })
    }
}

/// A webhook endpoint: an absolute `http://` URL with a host. `https://`
/// is refused for now: this build's HTTP client has no TLS (deliver to a
/// local TLS-terminating relay instead).
/// One media thread per CPU this process may use (its affinity mask and
/// cgroup quota, as the standard library reads them).
fn default_media_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_MEDIA_THREADS)
}

fn webhook_url(text: &str) -> Result<String, ConfigError> {
    let text = text.trim();
    let error = |why| ConfigError::WebhookUrl(text.to_owned(), why);
    let url = url::Url::parse(text).map_err(|_| error("not an absolute URL"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(error(
                "https:// is not supported yet (no TLS in this build); use an http:// relay",
            ));
        }
        _ => return Err(error("only http:// URLs are webhook endpoints")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(error("the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(error(
            "credentials in the URL would be logged; put them elsewhere",
        ));
    }
    Ok(url.to_string())
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

fn parse_file(text: &str) -> Result<FileConfig, toml::de::Error> {
    toml::from_str(text)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};
    use sabha_signaling::cors::Origins;

    use super::*;
    use crate::store::Backend;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn flags(argv: &[&str]) -> ServeArgs {
        Cli::try_parse_from(std::iter::once("sabha").chain(argv.iter().copied()))
            .unwrap()
            .serve
    }

    #[test]
    fn defaults() {
        let config = ServeConfig::resolve(ServeArgs::default(), FileConfig::default()).unwrap();
        assert_eq!(config.http, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.media, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(config.advertise, None);
        assert_eq!(config.media_threads, default_media_threads());
        assert!(config.media_threads >= 1);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        let default_db = std::path::absolute("./data/sabha.db").unwrap();
        assert_eq!(
            config.database.to_string(),
            format!("sqlite file {}", default_db.display())
        );
        assert!(config.operator_key.is_none());
        assert_eq!(config.cors, CorsConfig::default());
        assert_eq!(config.time_zone, "UTC");
        assert_eq!(config.log, "info");
    }

    #[test]
    fn media_threads_are_1_to_the_maximum() {
        let threads = |argv: &[&str], file: &str| {
            ServeConfig::resolve(flags(argv), parse_file(file).unwrap())
                .map(|c| c.media_threads)
                .map_err(|e| e.to_string())
        };
        assert_eq!(threads(&["--media-threads", "3"], ""), Ok(3));
        assert_eq!(threads(&[], "media_threads = 2"), Ok(2));
        assert_eq!(
            threads(&["--media-threads", "1"], "media_threads = 2"),
            Ok(1)
        );
        for bad in ["0", "65"] {
            let error = threads(&["--media-threads", bad], "").unwrap_err();
            assert!(error.contains("must be 1 to 64"), "{error}");
        }
    }

    #[test]
    fn time_zone_must_be_known() {
        let config = ServeConfig::resolve(
            flags(&["--time-zone", "Asia/Kolkata"]),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(config.time_zone, "Asia/Kolkata");
        let error = ServeConfig::resolve(
            flags(&["--time-zone", "Mars/Olympus"]),
            FileConfig::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("Mars/Olympus"), "{error}");
    }

    #[test]
    fn file_fills_what_flags_leave() {
        let file = parse_file(
            r#"
            http = "127.0.0.1:9000"
            media = "127.0.0.1:9443"
            advertise = "127.0.0.2"
            data_dir = "/var/lib/sabha"
            cors_origins = ["https://a.example"]
            cors_whep_any_origin = false
            log = "debug"
            "#,
        )
        .unwrap();
        let args = flags(&["--http", "127.0.0.1:7000", "--log", "warn"]);
        let config = ServeConfig::resolve(args, file).unwrap();
        assert_eq!(config.http, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.media, "127.0.0.1:9443".parse().unwrap());
        assert_eq!(config.advertise, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/sabha"));
        assert_eq!(config.log, "warn");
        assert!(!config.cors.whep_any_origin);
        assert!(matches!(config.cors.origins, Origins::List(ref l) if l.len() == 1));
    }

    #[test]
    fn comma_separated_origins_and_boolish_flags() {
        let args = flags(&[
            "--cors-origins",
            "https://a.example,https://b.example",
            "--cors-whep-any-origin",
            "no",
        ]);
        let config = ServeConfig::resolve(args, FileConfig::default()).unwrap();
        assert!(matches!(config.cors.origins, Origins::List(ref l) if l.len() == 2));
        assert!(!config.cors.whep_any_origin);
    }

    /// `database`: flag (or SABHA_DATABASE_URL, which clap reads for the
    /// flag) over file over the SQLite file in the data directory.
    #[test]
    fn database_url_precedence_and_default() {
        let env = Cli::command()
            .get_arguments()
            .find(|arg| arg.get_id() == "database")
            .and_then(|arg| arg.get_env().map(|e| e.to_owned()));
        assert_eq!(
            env.as_deref(),
            Some(std::ffi::OsStr::new("SABHA_DATABASE_URL"))
        );

        let file = parse_file(
            r#"
            data_dir = "/var/lib/sabha"
            database = "postgresql://sabha:secret@db.example/sabha"
            "#,
        )
        .unwrap();
        let config = ServeConfig::resolve(ServeArgs::default(), file).unwrap();
        assert_eq!(config.database.backend(), Backend::Postgres);
        assert_eq!(config.database.to_string(), "postgres on db.example");
        assert!(!format!("{config:?}").contains("secret"));

        let file = parse_file(r#"database = "postgres://db.example/sabha""#).unwrap();
        let args = flags(&["--database", "sqlite:///srv/rooms.db"]);
        let config = ServeConfig::resolve(args, file).unwrap();
        assert_eq!(config.database.to_string(), "sqlite file /srv/rooms.db");

        let args = flags(&["--data-dir", "/srv/sabha"]);
        let config = ServeConfig::resolve(args, FileConfig::default()).unwrap();
        assert_eq!(
            config.database.to_string(),
            "sqlite file /srv/sabha/sabha.db"
        );
    }

    #[test]
    fn unsupported_database_urls_are_errors() {
        for url in [
            "mysql://db.example/sabha",
            "sabha.db",
            "postgres://h:port/x",
        ] {
            let args = flags(&["--database", url]);
            assert!(
                matches!(
                    ServeConfig::resolve(args, FileConfig::default()),
                    Err(ConfigError::Database(_))
                ),
                "{url}"
            );
        }
        let error = DatabaseUrl::parse("mysql://db.example/sabha").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unsupported database URL scheme `mysql:`")
        );
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        assert!(parse_file("htpp = \"127.0.0.1:1\"").is_err());
        assert!(parse_file("http = \"not an address\"").is_err());
    }

    #[test]
    fn bad_values_are_errors() {
        let args = flags(&["--cors-origins", "not-an-origin"]);
        assert!(matches!(
            ServeConfig::resolve(args, FileConfig::default()),
            Err(ConfigError::Cors(_))
        ));
        let args = flags(&["--operator-key", " "]);
        assert!(matches!(
            ServeConfig::resolve(args, FileConfig::default()),
            Err(ConfigError::EmptyOperatorKey)
        ));
        assert!(Cli::try_parse_from(["sabha", "--http", "nope"]).is_err());
    }

    #[test]
    fn pin_limits_come_from_flags_or_file_and_must_not_be_zero() {
        let config = ServeConfig::resolve(
            flags(&["--pin-lockout-s", "30"]),
            parse_file("pin_failures_before_lockout = 3\n").unwrap(),
        )
        .unwrap();
        assert_eq!(config.pin_limits.lockout_s, 30);
        assert_eq!(config.pin_limits.failures_before_lockout, 3);
        assert_eq!(config.pin_limits.per_ip_per_minute, 10);
        assert!(matches!(
            ServeConfig::resolve(flags(&["--pin-lockout-s", "0"]), FileConfig::default()),
            Err(ConfigError::ZeroLimit("pin_lockout_s"))
        ));
    }

    #[test]
    fn missing_file_is_an_error() {
        let args = ServeArgs {
            config: Some("/nonexistent/sabha.toml".into()),
            ..ServeArgs::default()
        };
        assert!(matches!(
            ServeConfig::load(args),
            Err(ConfigError::Read { .. })
        ));
    }

    /// Uncomments every `# key = value` line of the sample: each key must
    /// exist and the documented defaults must be the real ones.
    #[test]
    fn sample_config_documents_real_keys_and_defaults() {
        let sample = include_str!("../deploy/sabha.toml");
        let uncommented: String = sample
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| {
                line.split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(uncommented.lines().count(), 24, "{uncommented}");
        let file = parse_file(&uncommented).unwrap();
        assert_eq!(file.early_join_grace_s, Some(600));
        assert_eq!(file.drain_timeout_s, Some(DEFAULT_DRAIN_TIMEOUT_S));
        assert_eq!(file.http, Some(DEFAULT_HTTP));
        assert_eq!(file.media, Some(DEFAULT_MEDIA));
        // The one default that depends on the machine: the sample shows
        // what it is on two cores, and says so.
        assert_eq!(file.media_threads, Some(2));
        assert!(sample.contains("Default: the CPUs this process may use"));
        assert_eq!(file.data_dir, Some(PathBuf::from(DEFAULT_DATA_DIR)));
        assert_eq!(file.log.as_deref(), Some(DEFAULT_LOG));
        assert_eq!(file.time_zone.as_deref(), Some("UTC"));
        assert_eq!(file.cors_origins, Some(vec![]));
        assert_eq!(file.cors_whep_any_origin, Some(true));
        assert_eq!(file.webhook_urls, Some(vec![]));
        let d = sabha_signaling::PinLimits::default();
        assert_eq!(file.pin_rate_per_ip_per_minute, Some(d.per_ip_per_minute));
        assert_eq!(
            file.pin_rate_per_room_per_minute,
            Some(d.per_room_per_minute)
        );
        assert_eq!(
            file.pin_failures_before_lockout,
            Some(d.failures_before_lockout)
        );
        assert_eq!(file.pin_lockout_s, Some(d.lockout_s));
        assert_eq!(
            file.pin_room_failures_before_lockout,
            Some(d.room_failures_before_lockout)
        );
        let r = sabha_signaling::RequestLimits::default();
        assert_eq!(file.session_rate_burst, Some(r.sessions.burst));
        assert_eq!(file.session_rate_per_s, Some(r.sessions.per_second as u32));
        assert_eq!(file.mint_rate_burst, Some(r.minting.burst));
        assert_eq!(file.mint_rate_per_s, Some(r.minting.per_second as u32));
        // Examples, not defaults (those depend on data_dir): they must parse.
        DatabaseUrl::parse(&file.database.unwrap()).unwrap();
        SigningKey::parse(&file.webhook_secret.unwrap()).unwrap();
    }

    #[test]
    fn webhook_urls_from_flags_env_style_lists_and_file() {
        let args = flags(&[
            "--webhook-url",
            "http://127.0.0.1:9000/hook",
            "--webhook-url",
            "http://dash.internal/a,http://sms.internal/b",
        ]);
        let config = ServeConfig::resolve(args, FileConfig::default()).unwrap();
        assert_eq!(
            config.webhook_urls,
            [
                "http://127.0.0.1:9000/hook",
                "http://dash.internal/a",
                "http://sms.internal/b"
            ]
        );
        assert!(config.webhook_key.is_none());
        assert_eq!(config.webhook_delivery.max_attempts, 15);
        let file = parse_file(r#"webhook_urls = ["http://a.example/"]"#).unwrap();
        let config = ServeConfig::resolve(ServeArgs::default(), file).unwrap();
        assert_eq!(config.webhook_urls, ["http://a.example/"]);
    }

    #[test]
    fn bad_webhook_urls_and_secrets_are_errors() {
        for url in [
            "ftp://a.example/",
            "https://a.example/",
            "a.example/hook",
            "http://u:p@a.example/",
        ] {
            let error = ServeConfig::resolve(flags(&["--webhook-url", url]), FileConfig::default())
                .unwrap_err();
            assert!(
                matches!(error, ConfigError::WebhookUrl(..)),
                "{url}: {error}"
            );
            assert!(!error.to_string().is_empty());
        }
        let error = ServeConfig::resolve(
            flags(&["--webhook-secret", "hunter2"]),
            FileConfig::default(),
        )
        .unwrap_err();
        assert!(matches!(error, ConfigError::WebhookSecret(_)), "{error}");
        assert!(!error.to_string().contains("hunter2"));
    }
}
