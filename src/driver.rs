//! The tokio driver of the media engine: owns the UDP socket and the timers.
//!
//! One OS thread runs a current-thread runtime with one task that owns the
//! [`Engine`] outright (no locks on media state). Signaling talks to it only
//! through a command channel; HTTP load can never delay a mixer tick because
//! the two never share a thread. The loop: drain the engine's outputs (send
//! datagrams), then wait for a datagram, a command, or the next deadline.
//!
//! The driver also maps the engine's internal session ids to the opaque,
//! unguessable ids clients see in `Location: /v1/sessions/{id}`, and exports
//! the engine's counters as Prometheus metrics once a second.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sabha_media::sdp::OfferError;
use sabha_media::{
    CloseReason, Engine, EngineConfig, EngineStats, Event, MixRate, OpenError, Output, Profile,
    RoomConfig, SessionId, SessionKind,
};
use sabha_signaling::{
    ListenProfile, MediaControl, MediaError, MediaEvent, OpenSession, OpenedSession, RoomKind,
    SpeakerLevel,
};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::socket_buffers;
use crate::udp_batch::BatchSender;

/// Where the media socket listens and what address clients are told.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub bind: SocketAddr,
    /// The IP put in the ICE host candidate; defaults to the bound IP.
    pub advertise: Option<IpAddr>,
}

/// Sessions per node before new ones get 503 (memory and CPU budget).
const MAX_SESSIONS: usize = 20_000;
/// Datagrams read per wake-up before outputs are drained again.
const RECV_BATCH: usize = 64;
/// Media events buffered for slow subscribers before they lag: more than a
/// node has sessions, so a room's end (every session closing at once) fits
/// while attendance writes them. tokio rounds it up to 65,536 slots of
/// 128 B and writes every slot when it makes the channel: 8.4 MB resident
/// from the start (part of the baseline, not of any listener).
const EVENT_BUFFER: usize = 2 * MAX_SESSIONS;

enum Command {
    Open {
        request: OpenSession,
        reply: oneshot::Sender<Result<OpenedSession, MediaError>>,
    },
    Close {
        session: String,
        reply: oneshot::Sender<bool>,
    },
    CloseRoom {
        room: String,
        reply: oneshot::Sender<()>,
    },
    SetMuted {
        session: String,
        muted: bool,
        reply: oneshot::Sender<bool>,
    },
}

/// The signaling side's handle on the media thread.
struct MediaHandle {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<MediaEvent>,
}

#[async_trait]
impl MediaControl for MediaHandle {
    async fn open_session(&self, request: OpenSession) -> Result<OpenedSession, MediaError> {
        self.ask(|reply| Command::Open { request, reply }).await?
    }

    async fn close_session(&self, session: &str) -> Result<bool, MediaError> {
        let session = session.to_owned();
        self.ask(|reply| Command::Close { session, reply }).await
    }

    async fn set_muted(&self, session: &str, muted: bool) -> Result<bool, MediaError> {
        let session = session.to_owned();
        self.ask(|reply| Command::SetMuted {
            session,
            muted,
            reply,
        })
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<MediaEvent> {
        self.events.subscribe()
    }

    async fn close_room(&self, room: &str) -> Result<(), MediaError> {
        let room = room.to_owned();
        self.ask(|reply| Command::CloseRoom { room, reply }).await
    }
}

impl MediaHandle {
    /// Sends a command to the media thread and waits for its reply.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MediaError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| MediaError::Unavailable)?;
        answer.await.map_err(|_| MediaError::Unavailable)
    }
}

/// Binds the media socket and starts the media thread.
pub async fn start(settings: MediaSettings) -> io::Result<Arc<dyn MediaControl>> {
    let std_socket = std::net::UdpSocket::bind(settings.bind)?;
    std_socket.set_nonblocking(true)?;
    match socket_buffers::enlarge(&std_socket) {
        Ok(granted) if granted.is_capped() => tracing::warn!(
            receive = granted.receive,
            send = granted.send,
            want = socket_buffers::WANT_BYTES,
            "media socket buffers capped by the system: raise net.core.rmem_max and wmem_max"
        ),
        Ok(granted) => tracing::info!(
            receive = granted.receive,
            send = granted.send,
            "media socket buffers"
        ),
        Err(e) => tracing::warn!(error = %e, "media socket buffers left at the system's default"),
    }
    let local = std_socket.local_addr()?;
    let advertised = SocketAddr::new(settings.advertise.unwrap_or(local.ip()), local.port());
    if advertised.ip().is_unspecified() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("media socket bound to {local}: set --advertise to the IP clients reach"),
        ));
    }
    let config = EngineConfig {
        advertised,
        room: RoomConfig::default(),
        max_sessions: MAX_SESSIONS,
    };
    let engine =
        Engine::new(config, Instant::now()).map_err(|e| io::Error::other(e.to_string()))?;
    let send_socket = std_socket.try_clone()?;
    let (commands, rx) = mpsc::channel(1024);
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let driver_events = events.clone();
    std::thread::Builder::new()
        .name("sabha-media".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(rt) => rt.block_on(async move {
                    match UdpSocket::from_std(std_socket) {
                        Ok(socket) => {
                            Driver::new(engine, socket, send_socket, local, driver_events)
                                .run(rx)
                                .await
                        }
                        Err(e) => tracing::error!(error = %e, "media socket"),
                    }
                }),
                Err(e) => tracing::error!(error = %e, "media runtime"),
            }
        })?;
    tracing::info!(%local, %advertised, "media socket ready");
    Ok(Arc::new(MediaHandle { commands, events }))
}

/// What clients know a session by.
struct PublicSession {
    id: String,
    room: String,
}

struct Driver {
    engine: Engine,
    socket: UdpSocket,
    /// The same socket as a plain non-blocking `std` one, for batched sends.
    send_socket: std::net::UdpSocket,
    local: SocketAddr,
    /// Client-visible session id → engine session.
    public_ids: HashMap<String, SessionId>,
    /// Engine session → its client-visible id and room.
    engine_ids: HashMap<SessionId, PublicSession>,
    events: broadcast::Sender<MediaEvent>,
    batch: BatchSender,
    send_failures: u64,
    next_metrics: Instant,
}

impl Driver {
    fn new(
        engine: Engine,
        socket: UdpSocket,
        send_socket: std::net::UdpSocket,
        local: SocketAddr,
        events: broadcast::Sender<MediaEvent>,
    ) -> Self {
        Self {
            engine,
            socket,
            send_socket,
            local,
            public_ids: HashMap::new(),
            engine_ids: HashMap::new(),
            events,
            batch: BatchSender::default(),
            send_failures: 0,
            next_metrics: Instant::now(),
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let deadline = self.drain();
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(c) => self.handle_command(c),
                    None => break,
                },
                received = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, source)) = received {
                        self.engine.handle_receive(Instant::now(), source, self.local, &buf[..n]);
                        self.receive_more(&mut buf);
                    }
                },
                () = tokio::time::sleep_until(deadline.into()) => {
                    self.engine.handle_timeout(Instant::now());
                }
            }
        }
        tracing::info!("media driver stopped");
    }

    /// Reads what else is already queued on the socket, without waiting.
    fn receive_more(&mut self, buf: &mut [u8]) {
        for _ in 0..RECV_BATCH {
            self.drain();
            match self.socket.try_recv_from(buf) {
                Ok((n, source)) => {
                    self.engine
                        .handle_receive(Instant::now(), source, self.local, &buf[..n])
                }
                Err(_) => break,
            }
        }
    }

    /// Sends everything the engine has to send, in batches; returns its next deadline.
    fn drain(&mut self) -> Instant {
        loop {
            match self.engine.poll_output(self.batch.buffer()) {
                Output::Transmit(t) => {
                    if self.batch.commit(t.destination, t.len) {
                        self.flush();
                    }
                }
                Output::Event(e) => self.handle_event(e),
                Output::Timeout(t) => {
                    self.flush();
                    self.export_metrics();
                    return t.min(self.next_metrics);
                }
            }
        }
    }

    /// Never waits: a full socket buffer drops datagrams, it does not stall the mix.
    fn flush(&mut self) {
        let flushed = self.batch.flush(&self.send_socket);
        self.send_failures += flushed.dropped as u64;
    }

    /// Publishes engine events under client-visible ids. Nobody listening is fine.
    fn handle_event(&mut self, event: Event) {
        let media_event = match event {
            Event::Connected { id } => {
                tracing::debug!(session = id.0, "connected");
                let Some(public) = self.engine_ids.get(&id) else {
                    return;
                };
                MediaEvent::Connected {
                    room: public.room.clone(),
                    session: public.id.clone(),
                }
            }
            Event::Closed {
                id,
                reason,
                traffic,
            } => {
                tracing::debug!(session = id.0, reason = reason.as_str(), "closed");
                let Some(public) = self.engine_ids.remove(&id) else {
                    return;
                };
                self.public_ids.remove(&public.id);
                MediaEvent::Closed {
                    room: public.room,
                    session: public.id,
                    reason: reason.as_str().to_owned(),
                    traffic: sabha_signaling::Traffic {
                        packets_in: traffic.packets_in,
                        bytes_in: traffic.bytes_in,
                        packets_out: traffic.packets_out,
                        bytes_out: traffic.bytes_out,
                    },
                }
            }
            Event::Speaking { room, speakers } => {
                let speakers = speakers
                    .into_iter()
                    .filter_map(|(id, level)| {
                        let session = self.engine_ids.get(&id)?.id.clone();
                        Some(SpeakerLevel { session, level })
                    })
                    .collect();
                MediaEvent::Speaking { room, speakers }
            }
        };
        let _ = self.events.send(media_event);
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Open { request, reply } => {
                let _ = reply.send(self.open(request));
            }
            Command::Close { session, reply } => {
                let closed = self
                    .public_ids
                    .get(&session)
                    .is_some_and(|&id| self.engine.close_session(id, CloseReason::Left));
                let _ = reply.send(closed);
            }
            Command::CloseRoom { room, reply } => {
                self.engine.close_room(&room);
                let _ = reply.send(());
            }
            Command::SetMuted {
                session,
                muted,
                reply,
            } => {
                let found = self
                    .public_ids
                    .get(&session)
                    .is_some_and(|&id| self.engine.set_muted(id, muted));
                let _ = reply.send(found);
            }
        }
    }

    fn open(&mut self, request: OpenSession) -> Result<OpenedSession, MediaError> {
        let kind = match request.kind {
            sabha_signaling::SessionKind::Publish => SessionKind::Publish,
            sabha_signaling::SessionKind::Listen => SessionKind::Listen,
            sabha_signaling::SessionKind::Join => SessionKind::Join,
        };
        let profile = match request.profile {
            ListenProfile::Standard => Profile::Standard,
            ListenProfile::Low => Profile::Low,
        };
        let rate = match request.room_kind {
            RoomKind::Bridge => MixRate::Wide,
            RoomKind::Rally => MixRate::Full,
        };
        let opened = self
            .engine
            .open_session(
                Instant::now(),
                &request.room,
                rate,
                kind,
                profile,
                &request.offer,
            )
            .map_err(media_error)?;
        let public = hex::encode(rand::random::<[u8; 16]>());
        self.public_ids.insert(public.clone(), opened.id);
        let known_as = PublicSession {
            id: public.clone(),
            room: request.room,
        };
        self.engine_ids.insert(opened.id, known_as);
        Ok(OpenedSession {
            session: public,
            answer: opened.answer,
        })
    }

    fn export_metrics(&mut self) {
        let now = Instant::now();
        if now < self.next_metrics {
            return;
        }
        self.next_metrics = now + Duration::from_secs(1);
        export(&self.engine.stats(), self.send_failures);
    }
}

fn media_error(e: OpenError) -> MediaError {
    match e {
        OpenError::Offer(OfferError::Malformed(m)) => MediaError::MalformedOffer(m),
        OpenError::Offer(OfferError::NoOpus) => MediaError::NoOpus,
        OpenError::Offer(e @ OfferError::WrongDirection { .. }) => {
            MediaError::WrongDirection(e.to_string())
        }
        OpenError::AtCapacity(_) => MediaError::AtCapacity,
        OpenError::Setup(m) => {
            tracing::warn!(error = %m, "session setup failed");
            MediaError::Unavailable
        }
    }
}

fn export(s: &EngineStats, send_failures: u64) {
    use metrics::{counter, gauge};
    gauge!("sabha_sessions", "kind" => "publish").set(s.sessions_publish as f64);
    gauge!("sabha_sessions", "kind" => "listen").set(s.sessions_listen as f64);
    gauge!("sabha_sessions", "kind" => "join").set(s.sessions_join as f64);
    gauge!("sabha_listeners_retired").set(s.listeners_retired as f64);
    gauge!("sabha_rooms_active").set(s.rooms as f64);
    counter!("sabha_datagrams_in_total").absolute(s.datagrams_in);
    counter!("sabha_datagrams_out_total").absolute(s.datagrams_out);
    counter!("sabha_bytes_in_total").absolute(s.bytes_in);
    counter!("sabha_bytes_out_total").absolute(s.bytes_out);
    counter!("sabha_audio_packets_out_total").absolute(s.audio_packets_out);
    counter!("sabha_audio_packets_in_total").absolute(s.audio_packets_in);
    counter!("sabha_drops_total", "reason" => "unknown_source").absolute(s.drops.unknown_source);
    counter!("sabha_drops_total", "reason" => "malformed").absolute(s.drops.malformed);
    counter!("sabha_drops_total", "reason" => "rejected").absolute(s.drops.rejected);
    counter!("sabha_drops_total", "reason" => "unsendable").absolute(s.drops.unsendable);
    counter!("sabha_drops_total", "reason" => "send_failed").absolute(send_failures);
    counter!("sabha_mixer_ticks_total").absolute(s.ticks);
    counter!("sabha_mixer_tick_overruns_total").absolute(s.tick_overruns);
    counter!("sabha_opus_encodes_total").absolute(s.audio.encodes);
    counter!("sabha_opus_decodes_total").absolute(s.audio.decodes);
    counter!("sabha_opus_decodes_skipped_total").absolute(s.audio.decodes_skipped);
    counter!("sabha_opus_decode_errors_total").absolute(s.audio.decode_errors);
    counter!("sabha_frames_concealed_total").absolute(s.audio.concealed);
    counter!("sabha_frames_fec_recovered_total").absolute(s.audio.fec_recovered);
}
