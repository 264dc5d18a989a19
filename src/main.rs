//! `sabha`: the server, and the operator's client for it.
//!
//! `sabha serve` (also plain `sabha`) is the composition root: it resolves the
//! configuration once ([`config`]), prepares the data directory ([`secrets`],
//! [`store`]), starts the media driver ([`driver`]) and serves the HTTP API
//! of `sabha-signaling` until SIGINT or SIGTERM, which drain it first
//! ([`drain`]). `sabha rooms …` and
//! `sabha token …` ([`cli`]) are HTTP clients of a running server.

mod cli;
mod config;
mod drain;
mod driver;
mod heap_trim;
mod media_threads;
mod placement;
mod secrets;
mod socket_buffers;
mod store;
mod udp_batch;
mod webhooks;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use metrics_exporter_prometheus::PrometheusBuilder;
use sabha_signaling::hub::Hub;
use sabha_signaling::scheduler::{Scheduler, SystemClock};
use sabha_signaling::timestamp::unix_now;
use sabha_signaling::{AppState, Auth, MediaControl, Settings, router_with_hub};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::cli::{
    AttendanceArgs, ClientArgs, KeysCommand, MembersCommand, OrgCommand, PinsCommand, ReachArgs,
    RoomsCommand, TokenArgs,
};
use crate::config::{ServeArgs, ServeConfig};
use crate::secrets::KeyOrigin;
use crate::store::Store;

/// mimalloc, not glibc's malloc: a join holds a full WebRTC stack (~53 KB)
/// for a few seconds, and glibc kept that memory in its arenas after the
/// listener retired it (66 KB of RSS per listener after 1,000 joined at once;
/// 16 KB with mimalloc and no huge pages, see [`no_transparent_huge_pages`],
/// and 11 KB with the C heap trimmed too, [`heap_trim`];
/// docs/benchmarks.md, "Where a listener's memory goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often histogram summaries are refreshed when no one scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(name = "sabha", version, about = "Virtual rallies and audio bridges")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (what `sabha` alone does)
    Serve(Box<ServeArgs>),
    /// Manage the rooms of a running server
    Rooms {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: RoomsCommand,
    },
    /// Mint a room token on a running server; prints only the token
    Token {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Import or show the organisation's units on a running server
    Org {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Create, list or revoke operator API keys on a running server
    Keys {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print a room's attendance (JSON, or CSV with --csv)
    Attendance {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        attendance: AttendanceArgs,
    },
    /// Print which booths a room reached, per unit (JSON, or CSV with --csv)
    Reach {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        reach: ReachArgs,
    },
    /// Import or show the organisation's members on a running server
    Members {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: MembersCommand,
    },
    /// Issue PINs for PIN join on a running server
    Pins {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: PinsCommand,
    },
}

fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or_else(|| {
        // `sabha` alone: parse as `sabha serve`, so SABHA_* variables apply.
        Cli::parse_from(["sabha", "serve"])
            .command
            .expect("`serve` is a command")
    });
    match command {
        Command::Serve(args) => serve_main(*args),
        Command::Rooms { client, command } => client_exit(cli::rooms(&client, &command)),
        Command::Token { client, token } => client_exit(cli::token(&client, &token)),
        Command::Org { client, command } => client_exit(cli::org(&client, &command)),
        Command::Keys { client, command } => client_exit(cli::keys(&client, &command)),
        Command::Attendance { client, attendance } => {
            client_exit(cli::attendance(&client, &attendance))
        }
        Command::Reach { client, reach } => client_exit(cli::reach(&client, &reach)),
        Command::Members { client, command } => client_exit(cli::members(&client, &command)),
        Command::Pins { client, command } => client_exit(cli::pins(&client, &command)),
    }
}

fn client_exit(result: Result<(), cli::CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sabha: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process, before its threads
/// start. The heap after a join storm is sparse: a few live objects per
/// 64 KiB allocator page. With THP the kernel's khugepaged collapses such
/// ranges into 2 MiB pages, all resident: with 1,000 listeners RSS grew by
/// ~12 MB every 10 s (its scan period) with the live heap unchanged. The
/// mimalloc build flag `no_thp` stops mimalloc asking for huge pages; this
/// covers kernels set to `always` and every other allocator in the process.
fn no_transparent_huge_pages() {
    if let Err(error) = nix::sys::prctl::set_thp_disable(true) {
        tracing::warn!(%error, "transparent huge pages left on: RSS may grow over time");
    }
}

fn serve_main(args: ServeArgs) -> ExitCode {
    let config = match ServeConfig::load(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sabha: {error}");
            return ExitCode::from(2);
        }
    };
    let filter = match EnvFilter::try_new(&config.log) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!("sabha: invalid log filter {:?}: {error}", config.log);
            return ExitCode::from(2);
        }
    };
    // Logs on stderr; stdout carries only what a script may capture.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    no_transparent_huge_pages();
    heap_trim::spawn_trimmer(heap_trim::TRIM_EVERY);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "sabha stopped");
            ExitCode::FAILURE
        }
    }
}

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    #[error("{database}: {source}")]
    Store {
        /// Backend and file or host only: never the URL's password.
        database: String,
        source: store::OpenError,
    },
    #[error("cannot close the sessions of the last run: {0}")]
    Attendance(#[from] sabha_signaling::StoreError),
    #[error("cannot read the webhook outbox: {0}")]
    Outbox(sabha_signaling::StoreError),
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    #[error("cannot start the media driver on {addr}: {source}")]
    Media {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
}

async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| ServeError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let jwt_secret = secrets::jwt_secret(dir)?;
    let webhook_key = secrets::webhook_key(dir, config.webhook_key.clone())?;
    let (operator_key, origin) = secrets::operator_key(dir, config.operator_key.clone())?;
    if origin == KeyOrigin::Generated {
        let path = dir.join(secrets::OPERATOR_KEY_FILE);
        // Stdout, not the log: shown once to the person starting the server.
        println!(
            "operator key (shown once, stored in {}): {}",
            path.display(),
            operator_key.expose()
        );
    }
    tracing::info!(key = ?origin, "operator key loaded");

    let store = Store::open(&config.database)
        .await
        .map_err(|source| ServeError::Store {
            database: config.database.to_string(),
            source,
        })?;
    let store = Arc::new(store);
    tracing::info!(database = %config.database, "store opened");
    let interrupted = store.close_interrupted_sessions(unix_now()).await?;
    if interrupted > 0 {
        tracing::info!(
            sessions = interrupted,
            "closed sessions left open by the last run (server_restart)"
        );
    }
    spawn_heartbeat(store.clone());
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });

    // Webhooks: the outbox sink (also for other tasks that publish events,
    // e.g. a scheduler: clone `events`) and one delivery worker per endpoint.
    let outbox = webhooks::OutboxSink::new(store.clone(), &config.webhook_urls)
        .await
        .map_err(ServeError::Outbox)?;
    webhooks::spawn(&outbox, webhook_key, config.webhook_delivery.clone());
    let events: Arc<dyn sabha_signaling::EventSink> = Arc::new(outbox);
    if !config.webhook_urls.is_empty() {
        tracing::info!(endpoints = config.webhook_urls.len(), "webhooks enabled");
    }

    let settings = media_threads::MediaSettings {
        bind: config.media,
        advertise: config.advertise,
        threads: config.media_threads,
    };
    let media = media_threads::start(settings)
        .await
        .map_err(|source| ServeError::Media {
            addr: config.media,
            source,
        })?;
    let media = Arc::new(drain::DrainableMedia::new(media));

    let state = AppState {
        media: media.clone(),
        rooms: store.clone(),
        attendance: store.clone(),
        org: store.clone(),
        auth: Auth::new(&jwt_secret, operator_key),
        metrics: Arc::new(move || prometheus.render()),
        cors: config.cors,
        settings: Settings {
            time_zone: config.time_zone.clone(),
            early_join_grace_s: config.early_join_grace_s,
            pin_limits: config.pin_limits.clone(),
            request_limits: config.request_limits,
        },
        events,
        keys: store.clone(),
        members: store.clone(),
        pin_key: sabha_signaling::PinKey::derive(&jwt_secret),
    };
    let listener = TcpListener::bind(config.http)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.http,
            source,
        })?;
    let http = listener.local_addr().unwrap_or(config.http);
    tracing::info!(%http, media = %config.media, data_dir = %dir.display(), "sabha serving");

    // The scheduler and the router share the rooms' state: the scheduler
    // ends and reopens rooms there, the router wakes it on changes. Its
    // first tick reconciles with the clock (windows missed while down).
    let hub = Hub::default();
    let scheduler = Scheduler::new(state.clone(), hub.clone(), Arc::new(SystemClock));
    tokio::spawn(scheduler.run());
    let shutdown = drain_on_signal(Drain {
        hub: hub.clone(),
        media,
        store: store.clone(),
        timeout: config.drain_timeout,
    });
    // With the peer address: PIN join limits and logs are per client IP.
    axum::serve(
        listener,
        router_with_hub(state, hub).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(ServeError::Http)?;
    // Sessions still open end now, as far as the record goes: the next
    // start closes them at this heartbeat.
    if let Err(e) = store.heartbeat(unix_now()).await {
        tracing::warn!(error = %e, "last heartbeat not recorded");
    }
    store.close().await;
    tracing::info!("sabha stopped");
    Ok(())
}

/// Records every [`store::HEARTBEAT_EVERY`] that the server is alive, so
/// that after a crash open sessions are closed at the last sign of life.
fn spawn_heartbeat(store: Arc<Store>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(store::HEARTBEAT_EVERY);
        loop {
            tick.tick().await;
            if let Err(e) = store.heartbeat(unix_now()).await {
                tracing::warn!(error = %e, "heartbeat not recorded");
            }
        }
    });
}

/// What a drain works on.
struct Drain {
    hub: Hub,
    media: Arc<drain::DrainableMedia>,
    store: Arc<Store>,
    timeout: Duration,
}

/// How long a drain waits for the attendance of sessions that ended to be
/// written before it closes the rest itself.
const ATTENDANCE_FLUSH: Duration = Duration::from_secs(3);

/// Resolves when the HTTP server should stop: after the first signal, the
/// drain ([`drain`]): no new sessions, open ones go on until they end, the
/// deadline, or a second signal; then what is still open is recorded as
/// `server_shutdown` and closed.
async fn drain_on_signal(d: Drain) {
    let mut signals = Signals::new();
    let first = signals.next().await;
    d.media.drain();
    let open = d.hub.session_count();
    tracing::info!(
        signal = first,
        sessions = open,
        timeout_s = d.timeout.as_secs(),
        "draining: no new sessions; the open ones go on until they end or the deadline"
    );
    let end = drain::wait_for_sessions(&d.hub, d.timeout, async {
        let again = signals.next().await;
        tracing::info!(signal = again, "second signal: ending the drain now");
    })
    .await;
    let rooms = d.hub.live_rooms();
    if end != drain::DrainEnd::Empty {
        // Recorded before the rooms close, so their reason is the shutdown
        // (the closes that follow find the rows already closed).
        match d
            .store
            .close_open_sessions(unix_now(), store::SERVER_SHUTDOWN)
            .await
        {
            Ok(n) => tracing::info!(sessions = n, ?end, "drain ended: sessions closed"),
            Err(e) => tracing::warn!(error = %e, "open sessions not recorded as closed"),
        }
        for room in &rooms {
            if let Err(e) = d.media.close_room(room).await {
                tracing::warn!(%room, error = %e, "room not closed");
            }
        }
    } else {
        // Every session ended on its own; let their leaves be written.
        let flushed = tokio::time::Instant::now() + ATTENDANCE_FLUSH;
        while d.store.open_session_count().await.unwrap_or(0) > 0
            && tokio::time::Instant::now() < flushed
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Err(e) = d
            .store
            .close_open_sessions(unix_now(), store::SERVER_SHUTDOWN)
            .await
        {
            tracing::warn!(error = %e, "open sessions not recorded as closed");
        }
        tracing::info!("drain ended: every session had left");
    }
}

/// SIGINT (Ctrl-C) and SIGTERM (systemd, docker stop, Kubernetes), as one
/// stream.
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let terminate = signal(SignalKind::terminate())
                .inspect_err(|error| tracing::error!(%error, "cannot listen for SIGTERM"))
                .ok();
            Self { terminate }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        let interrupt = async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(%error, "cannot listen for SIGINT");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let terminate = async {
            match self.terminate.as_mut() {
                Some(sigterm) => {
                    sigterm.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = interrupt => "SIGINT",
            () = terminate => "SIGTERM",
        }
    }
}
