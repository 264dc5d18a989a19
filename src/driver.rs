//! The tokio driver of one media thread: owns its UDP socket and timers.
//!
//! Each media thread runs a current-thread runtime with one task that owns
//! its [`Engine`] outright (no locks on media state). Signaling talks to it
//! only through a command channel (`media_threads` routes each command to
//! the thread of its room); HTTP load can never delay a mixer tick because
//! the two never share a thread. The loop: drain the engine's outputs (send
//! datagrams), then wait for a datagram, a command, or the next deadline.
//!
//! The driver also maps the engine's internal session ids to the opaque,
//! unguessable ids clients see in `Location: /v1/sessions/{id}`, tells the
//! [`Placement`] which sessions it opened and closed, and hands the
//! engine's counters to the [`StatsBoard`] once a second.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sabha_media::sdp::OfferError;
use sabha_media::{
    CloseReason, Engine, Event, MixRate, OpenError, Output, Profile, SessionId, SessionKind,
};
use sabha_signaling::{
    ListenProfile, MediaError, MediaEvent, OpenSession, OpenedSession, RoomKind, SpeakerLevel,
};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::media_threads::StatsBoard;
use crate::placement::Placement;
use crate::udp_batch::BatchSender;

/// Datagrams read per wake-up before outputs are drained again.
const RECV_BATCH: usize = 64;
/// What the signaling side asks of a media thread.
pub enum Command {
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

/// Starts media thread number `index` on `socket`, driving `engine`.
pub fn spawn(
    index: usize,
    engine: Engine,
    socket: std::net::UdpSocket,
    shared: Shared,
) -> io::Result<mpsc::Sender<Command>> {
    let local = socket.local_addr()?;
    let send_socket = socket.try_clone()?;
    let (commands, rx) = mpsc::channel(1024);
    std::thread::Builder::new()
        .name(format!("sabha-media-{index}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(rt) => rt.block_on(async move {
                    match UdpSocket::from_std(socket) {
                        Ok(socket) => {
                            Driver::new(index, engine, socket, send_socket, local, shared)
                                .run(rx)
                                .await
                        }
                        Err(e) => tracing::error!(error = %e, thread = index, "media socket"),
                    }
                }),
                Err(e) => tracing::error!(error = %e, thread = index, "media runtime"),
            }
        })?;
    Ok(commands)
}

/// What every media thread shares with the others and with signaling.
#[derive(Clone)]
pub struct Shared {
    pub events: broadcast::Sender<MediaEvent>,
    pub placement: Arc<Placement>,
    pub stats: Arc<StatsBoard>,
}

/// What clients know a session by.
struct PublicSession {
    id: String,
    room: String,
}

struct Driver {
    /// Which media thread this is.
    index: usize,
    engine: Engine,
    socket: UdpSocket,
    /// The same socket as a plain non-blocking `std` one, for batched sends.
    send_socket: std::net::UdpSocket,
    local: SocketAddr,
    /// Client-visible session id → engine session.
    public_ids: HashMap<String, SessionId>,
    /// Engine session → its client-visible id and room.
    engine_ids: HashMap<SessionId, PublicSession>,
    shared: Shared,
    batch: BatchSender,
    send_failures: u64,
    next_metrics: Instant,
}

impl Driver {
    fn new(
        index: usize,
        engine: Engine,
        socket: UdpSocket,
        send_socket: std::net::UdpSocket,
        local: SocketAddr,
        shared: Shared,
    ) -> Self {
        Self {
            index,
            engine,
            socket,
            send_socket,
            local,
            public_ids: HashMap::new(),
            engine_ids: HashMap::new(),
            shared,
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
        tracing::info!(thread = self.index, "media driver stopped");
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
                self.shared.placement.closed(&public.room);
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
        let _ = self.shared.events.send(media_event);
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
        self.shared.placement.opened(&request.room);
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
        self.shared
            .stats
            .publish(self.index, self.engine.stats(), self.send_failures);
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
