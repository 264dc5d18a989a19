//! The node's media: one engine per media thread, and the signaling side's
//! one handle on all of them.
//!
//! A media engine is single-threaded by design (sans-IO, no locks), so a
//! node uses several cores by running several: thread `k` binds the media
//! port plus `k` and owns the rooms [`Placement`] put on it, with every
//! session, mix and packet of them. A bridge's decode, mix and encodes thus
//! stay on one core, and bridges spread over all of them. One rally stays
//! on one thread, whatever its size (docs/media.md, "Media threads").
//!
//! The handle routes each command: an offer to its room's thread, a close
//! or mute by session id to whichever thread has it (ids are random, so it
//! asks each in turn), and collects every thread's counters into one set of
//! metrics.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use sabha_media::{Engine, EngineConfig, EngineStats, RoomConfig};
use sabha_signaling::{MediaControl, MediaError, MediaEvent, OpenSession, OpenedSession};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::driver::{self, Command, Shared};
use crate::placement::Placement;
use crate::socket_buffers;

/// Where the media sockets listen and what address clients are told.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Thread 0's socket; thread `k` binds the next port but `k` (or a
    /// free one each, when the port is 0).
    pub bind: SocketAddr,
    /// The IP put in the ICE host candidate; defaults to the bound IP.
    pub advertise: Option<IpAddr>,
    pub threads: usize,
}

/// Sessions per node before new ones get 503 (memory and CPU budget).
const MAX_SESSIONS: usize = 20_000;
/// Media events buffered for slow subscribers before they lag: more than a
/// node has sessions, so a room's end (every session closing at once) fits
/// while attendance writes them. tokio rounds it up to 65,536 slots of
/// 128 B and writes every slot when it makes the channel: 8.4 MB resident
/// from the start (part of the baseline, not of any listener).
const EVENT_BUFFER: usize = 2 * MAX_SESSIONS;

/// Binds every media socket and starts the media threads.
pub async fn start(settings: MediaSettings) -> io::Result<Arc<dyn MediaControl>> {
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let shared = Shared {
        events: events.clone(),
        placement: Arc::new(Placement::new(settings.threads)),
        stats: Arc::new(StatsBoard::new(settings.threads)),
    };
    let mut threads = Vec::with_capacity(settings.threads);
    for index in 0..settings.threads {
        let socket = bind(settings.bind, index)?;
        let local = socket.local_addr()?;
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
            // One room may hold the node's every session; the node's total
            // is held to the same number by the handle.
            max_sessions: MAX_SESSIONS,
        };
        let engine =
            Engine::new(config, Instant::now()).map_err(|e| io::Error::other(e.to_string()))?;
        threads.push(driver::spawn(index, engine, socket, shared.clone())?);
        tracing::info!(thread = index, %local, %advertised, "media socket ready");
    }
    Ok(Arc::new(MediaHandle {
        threads,
        placement: shared.placement,
        events,
    }))
}

/// Thread `index`'s socket: the port after the media port by `index`.
fn bind(base: SocketAddr, index: usize) -> io::Result<std::net::UdpSocket> {
    let port = match base.port() {
        0 => Some(0),
        port => u16::try_from(index).ok().and_then(|k| port.checked_add(k)),
    };
    let Some(port) = port else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "media thread {index} would need port {} + {index}",
                base.port()
            ),
        ));
    };
    let socket = std::net::UdpSocket::bind(SocketAddr::new(base.ip(), port))?;
    socket.set_nonblocking(true)?;
    match socket_buffers::enlarge(&socket) {
        Ok(granted) if granted.is_capped() => tracing::warn!(
            receive = granted.receive,
            send = granted.send,
            want = socket_buffers::WANT_BYTES,
            "media socket buffers capped by the system: raise net.core.rmem_max and wmem_max"
        ),
        Ok(granted) => tracing::debug!(
            receive = granted.receive,
            send = granted.send,
            "media socket buffers"
        ),
        Err(e) => tracing::warn!(error = %e, "media socket buffers left at the system's default"),
    }
    Ok(socket)
}

/// The signaling side's handle on the media threads.
struct MediaHandle {
    threads: Vec<mpsc::Sender<Command>>,
    placement: Arc<Placement>,
    events: broadcast::Sender<MediaEvent>,
}

#[async_trait]
impl MediaControl for MediaHandle {
    async fn open_session(&self, request: OpenSession) -> Result<OpenedSession, MediaError> {
        if self.placement.sessions() >= MAX_SESSIONS {
            return Err(MediaError::AtCapacity);
        }
        // Held until the thread has answered: it counts the session as open
        // itself before it replies.
        let pending = self.placement.reserve(&request.room);
        let thread = &self.threads[pending.thread];
        ask(thread, |reply| Command::Open { request, reply }).await?
    }

    async fn close_session(&self, session: &str) -> Result<bool, MediaError> {
        for thread in &self.threads {
            let session = session.to_owned();
            if ask(thread, |reply| Command::Close { session, reply }).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn set_muted(&self, session: &str, muted: bool) -> Result<bool, MediaError> {
        for thread in &self.threads {
            let session = session.to_owned();
            let command = |reply| Command::SetMuted {
                session,
                muted,
                reply,
            };
            if ask(thread, command).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn subscribe(&self) -> broadcast::Receiver<MediaEvent> {
        self.events.subscribe()
    }

    async fn close_room(&self, room: &str) -> Result<(), MediaError> {
        // A room that is not placed has no session on any thread.
        let Some(index) = self.placement.thread_of(room) else {
            return Ok(());
        };
        let room = room.to_owned();
        ask(&self.threads[index], |reply| Command::CloseRoom {
            room,
            reply,
        })
        .await
    }
}

/// Sends a command to a media thread and waits for its reply.
async fn ask<T>(
    thread: &mpsc::Sender<Command>,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, MediaError> {
    let (reply, answer) = oneshot::channel();
    thread
        .send(command(reply))
        .await
        .map_err(|_| MediaError::Unavailable)?;
    answer.await.map_err(|_| MediaError::Unavailable)
}

/// Every media thread's latest counters; the node's metrics are their sum.
#[derive(Debug)]
pub struct StatsBoard {
    /// Per thread: its engine's figures and its failed sends.
    slots: Mutex<Vec<(EngineStats, u64)>>,
}

impl StatsBoard {
    pub fn new(threads: usize) -> Self {
        Self {
            slots: Mutex::new(vec![Default::default(); threads]),
        }
    }

    /// Thread `index`'s figures now; exports the node's sum (once a second
    /// per thread).
    pub fn publish(&self, index: usize, stats: EngineStats, send_failures: u64) {
        let (sum, failures) = {
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(slot) = slots.get_mut(index) {
                *slot = (stats, send_failures);
            }
            sum(&slots)
        };
        export(&sum, failures);
        // How evenly the rooms spread: one series per thread.
        let sessions = stats.sessions_publish + stats.sessions_listen + stats.sessions_join;
        metrics::gauge!("sabha_media_thread_sessions", "thread" => index.to_string())
            .set(sessions as f64);
    }
}

fn sum(slots: &[(EngineStats, u64)]) -> (EngineStats, u64) {
    let mut total = EngineStats::default();
    let mut failures = 0;
    for (stats, failed) in slots {
        total.add(stats);
        failures += failed;
    }
    (total, failures)
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
    counter!("sabha_opus_encodes_with_fec_total").absolute(s.audio.encodes_with_fec);
    counter!("sabha_loss_reports_total").absolute(s.loss_reports);
    counter!("sabha_opus_decodes_total").absolute(s.audio.decodes);
    counter!("sabha_opus_decodes_skipped_total").absolute(s.audio.decodes_skipped);
    counter!("sabha_opus_decode_errors_total").absolute(s.audio.decode_errors);
    counter!("sabha_frames_concealed_total").absolute(s.audio.concealed);
    counter!("sabha_frames_fec_recovered_total").absolute(s.audio.fec_recovered);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_reports_the_sum_of_its_threads() {
        let board = StatsBoard::new(2);
        let thread = |listen, packets, ticks| EngineStats {
            sessions_listen: listen,
            audio_packets_out: packets,
            ticks,
            ..EngineStats::default()
        };
        board.publish(0, thread(3, 100, 50), 1);
        board.publish(1, thread(2, 40, 50), 0);
        // A thread's second report replaces its first.
        board.publish(1, thread(4, 90, 100), 2);
        let slots = board.slots.lock().unwrap();
        let (total, failures) = sum(&slots);
        assert_eq!(total.sessions_listen, 7);
        assert_eq!(total.audio_packets_out, 190);
        assert_eq!(total.ticks, 150);
        assert_eq!(failures, 3);
    }

    #[test]
    fn thread_k_binds_the_media_port_plus_k() {
        let (first, base) = loop {
            let first = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let base = first.local_addr().unwrap();
            if base.port() < u16::MAX - 2 {
                break (first, base);
            }
        };
        drop(first);
        let sockets: Vec<_> = (0..2).map(|k| bind(base, k)).collect();
        match &sockets[..] {
            [Ok(a), Ok(b)] => {
                assert_eq!(a.local_addr().unwrap(), base);
                assert_eq!(b.local_addr().unwrap().port(), base.port() + 1);
            }
            // Someone else took a port in between: nothing to judge.
            _ => eprintln!("a port was taken meanwhile: {sockets:?}"),
        }
        let zero = bind("127.0.0.1:0".parse().unwrap(), 5).unwrap();
        assert_ne!(zero.local_addr().unwrap().port(), 0);
        let past_the_end = bind(SocketAddr::from(([127, 0, 0, 1], u16::MAX)), 1);
        assert_eq!(
            past_the_end.unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
