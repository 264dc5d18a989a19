//! The media engine of one shard: every session and room, one UDP socket.
//!
//! Run loop (the driver's side of the contract): feed every datagram to
//! [`Engine::handle_receive`], call [`Engine::handle_timeout`] when the last
//! [`Output::Timeout`] is reached, and after **every** call drain
//! [`Engine::poll_output`] until it returns a timeout. The engine never reads
//! a clock: every call carries `now`.
//!
//! Demultiplexing is O(1) per datagram: a STUN binding request names its
//! session by the server's ICE ufrag (we choose one per session), and that
//! binds the sender's address to the session; DTLS, RTP and RTCP from a bound
//! address go straight to it. Timers live in a heap and only sessions that
//! received input or a write sit in the ready queue, so an idle listener
//! costs nothing per poll.
//!
//! Output goes into the caller's buffer (`poll_output(&mut buf)`, as quinn's
//! `poll_transmit`). Audio the rooms produce waits in the fan-out queue as
//! small records (member, shared payload, RTP time) and is built and
//! SRTP-protected into that buffer only when polled, by `srtp`: no
//! allocation per forwarded packet. str0m's own datagrams (STUN, DTLS, RTCP)
//! are copied in.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::config::{CryptoProvider, DtlsCert};
use str0m::ice::{StunMessage, TransId};
use str0m::media::MediaKind;
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{
    Candidate, Event as RtcEvent, IceConnectionState, IceCreds, Input, Output as RtcOutput, Rtc,
};

use crate::consent::AfterRetirement;
use crate::loss::UNREPORTED_PCT;
use crate::opus::{FRAME_SAMPLES, MixRate};
use crate::red;
use crate::room::{Delivery, Profile, Room, RoomConfig, RoomStats};
use crate::rtcp;
use crate::sdp::{OfferError, check_offer};
use crate::session::{CloseReason, IceText, Session, Stack, Traffic};
use crate::srtp;
use crate::{RoomIdx, SessionId, SessionKind};

/// The mixer's tick: one 20 ms Opus frame.
pub const TICK: Duration = Duration::from_millis(20);
/// How long a session may take from answer to connected.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often sessions are swept for connect timeouts.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The address clients reach the media socket on: the ICE host candidate.
    pub advertised: SocketAddr,
    pub room: RoomConfig,
    /// Sessions beyond this are refused with [`OpenError::AtCapacity`].
    pub max_sessions: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error("the server is at capacity ({0} sessions)")]
    AtCapacity(usize),
    #[error("could not set up the session: {0}")]
    Setup(String),
}

/// A session was opened: its id and the SDP answer for the client.
#[derive(Debug, Clone)]
pub struct Opened {
    pub id: SessionId,
    pub answer: String,
}

/// The buffer [`Engine::poll_output`] writes into must be at least this long.
pub const DATAGRAM_MAX: usize = 2048;

/// A datagram the engine wrote into the caller's buffer: `buf[..len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub len: usize,
}

/// What the engine tells its driver.
#[derive(Debug)]
pub enum Output {
    /// Send `buf[..len]` (the buffer given to `poll_output`).
    Transmit(Transmit),
    Event(Event),
    /// Nothing more until this time (or new input).
    Timeout(Instant),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected {
        id: SessionId,
    },
    Closed {
        id: SessionId,
        reason: CloseReason,
        /// Everything the session sent and received.
        traffic: Traffic,
    },
    /// Who speaks in `room` now, with RFC 6464 levels (0 loudest). Emitted
    /// at most every [`SPEAKING_EVERY_TICKS`] ticks, only when it changed.
    Speaking {
        room: String,
        speakers: Vec<(SessionId, u8)>,
    },
}

/// Speaking updates go out at most every 10 ticks (200 ms).
pub const SPEAKING_EVERY_TICKS: u64 = 10;
/// A level change smaller than this (dB) is not news.
const SPEAKING_LEVEL_STEP: u8 = 6;

/// Datagrams dropped before reaching a session, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drops {
    /// Not STUN naming one of our sessions, and from no known address.
    pub unknown_source: u64,
    /// Not STUN, DTLS, RTP or RTCP.
    pub malformed: u64,
    /// A session's WebRTC stack refused it (bad SRTP auth, replay, …).
    pub rejected: u64,
    /// Outgoing audio that could not be protected (unsupported SRTP
    /// profile, a payload too large for the buffer).
    pub unsendable: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    pub sessions_publish: usize,
    pub sessions_listen: usize,
    pub sessions_join: usize,
    /// Of `sessions_listen`, those whose str0m `Rtc` was retired after the
    /// handshake (`consent`).
    pub listeners_retired: usize,
    pub rooms: usize,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Of `datagrams_out`, the audio packets of the fan-out path.
    pub audio_packets_out: u64,
    /// Talkers' audio packets that passed SRTP (authenticated, not a
    /// replay) and reached their room's jitter buffer.
    pub audio_packets_in: u64,
    pub drops: Drops,
    /// RTCP report blocks about our audio read from receivers (the loss
    /// that plans the FEC, see `loss`).
    pub loss_reports: u64,
    pub ticks: u64,
    /// Ticks that ran more than one tick late.
    pub tick_overruns: u64,
    /// Codec work and loss repair summed over every room, past and present.
    pub audio: RoomStats,
}

impl Drops {
    /// Adds another engine's drops to these.
    pub fn add(&mut self, other: &Drops) {
        let Drops {
            unknown_source,
            malformed,
            rejected,
            unsendable,
        } = other;
        self.unknown_source += unknown_source;
        self.malformed += malformed;
        self.rejected += rejected;
        self.unsendable += unsendable;
    }
}

impl EngineStats {
    /// Adds another engine's figures to these: a node with one engine per
    /// media thread reports their sum. `other` is taken apart field by
    /// field, so a field added to the struct must be added here too.
    pub fn add(&mut self, other: &EngineStats) {
        let EngineStats {
            sessions_publish,
            sessions_listen,
            sessions_join,
            listeners_retired,
            rooms,
            datagrams_in,
            datagrams_out,
            bytes_in,
            bytes_out,
            audio_packets_out,
            audio_packets_in,
            drops,
            loss_reports,
            ticks,
            tick_overruns,
            audio,
        } = other;
        self.sessions_publish += sessions_publish;
        self.sessions_listen += sessions_listen;
        self.sessions_join += sessions_join;
        self.listeners_retired += listeners_retired;
        self.rooms += rooms;
        self.datagrams_in += datagrams_in;
        self.datagrams_out += datagrams_out;
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
        self.audio_packets_out += audio_packets_out;
        self.audio_packets_in += audio_packets_in;
        self.drops.add(drops);
        self.loss_reports += loss_reports;
        self.ticks += ticks;
        self.tick_overruns += tick_overruns;
        self.audio.add(audio);
    }
}

/// Hashes a [`SessionId`] with one multiply: ids are counted out by the
/// engine, never chosen by a peer, so SipHash's flooding resistance buys
/// nothing on the map every forwarded packet looks up (docs/media.md,
/// "Where the time goes").
#[derive(Default)]
struct SessionIdHasher(u64);

impl Hasher for SessionIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `SessionId`'s derived `Hash`; this
        // keeps any other key correct, if slower.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: the table indexes by the low bits and tags by
        // the top seven, and the multiply spreads sequential ids over both.
        self.0 = (self.0 ^ id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Sessions inline, not boxed: a listener's retained state then lives in
/// the table's one allocation, not amid its handshake's (session.rs). An
/// empty slot costs a whole `Session`, up to half the table (1,266 B of
/// engine heap per listener at 1,000, against 994 B boxed), but a boxed
/// session, allocated among its handshake's allocations, kept their pages
/// resident: ≈ 1 KB more RSS per listener. str0m's `Rtc` (about 10 KB
/// inline) stays boxed, so that retiring it gives all of it back.
type SessionMap = HashMap<SessionId, Session, BuildHasherDefault<SessionIdHasher>>;

struct RoomEntry {
    key: String,
    room: Room,
    /// The speakers last reported.
    speakers: Vec<(SessionId, u8)>,
}

/// A STUN binding request that verified, as much of it as an answer needs.
#[derive(Debug, Clone, Copy)]
struct Binding {
    trans_id: TransId,
    use_candidate: bool,
}

/// One member's share of a tick, waiting in the fan-out queue: 16 bytes.
#[derive(Debug, Clone, Copy)]
struct Outgoing {
    session: SessionId,
    /// Index into the fan-out payloads.
    payload: u32,
    rtp_time: u32,
}

/// An encoded payload of this tick, shared by everyone it goes to.
struct SharedPayload {
    payload: Arc<[u8]>,
    /// Its duration in 48 kHz samples.
    samples: u32,
    /// The frame before it, for RED listeners.
    previous: Option<Arc<[u8]>>,
}

impl SharedPayload {
    fn of(delivery: Delivery<'_>) -> Self {
        Self {
            payload: Arc::clone(delivery.payload),
            samples: delivery.samples(),
            previous: delivery.previous.map(Arc::clone),
        }
    }
}

/// The RED payload last built: every RED listener of one program packet
/// (with the same Opus payload type) is sent the same bytes.
struct RedScratch {
    /// (fan-out payload index, Opus payload type) it was built for.
    built_for: Option<(u32, u8)>,
    len: usize,
    buf: Box<[u8; DATAGRAM_MAX]>,
}

pub struct Engine {
    config: EngineConfig,
    crypto: Arc<CryptoProvider>,
    dtls_cert: DtlsCert,
    sessions: SessionMap,
    rooms: HashMap<RoomIdx, RoomEntry>,
    room_index: HashMap<String, RoomIdx>,
    by_ufrag: HashMap<IceText, SessionId>,
    by_addr: HashMap<SocketAddr, SessionId>,
    timers: BinaryHeap<Reverse<(Instant, SessionId)>>,
    ready: VecDeque<SessionId>,
    /// Audio to send, in tick order. Its capacity is kept, so a steady
    /// room allocates nothing here.
    fanout: VecDeque<Outgoing>,
    /// The encoded payloads `fanout` refers to (shared, one per distinct
    /// mix); cleared once it drains.
    fanout_payloads: Vec<SharedPayload>,
    red: RedScratch,
    /// Where a peer's SRTCP is decrypted for its loss reports.
    rtcp_scratch: Box<[u8; DATAGRAM_MAX + srtp::SRTCP_SLACK]>,
    events: VecDeque<Event>,
    next_tick: Instant,
    next_sweep: Instant,
    next_session: u64,
    next_room: u32,
    /// The time of the latest input: when `poll_output` retires a session.
    last_input: Instant,
    stats: EngineStats,
}

/// A speaking event when the room's speakers changed since the last one.
fn speaking_news(entry: &mut RoomEntry) -> Option<Event> {
    let mut now: Vec<(SessionId, u8)> = entry.room.speakers().collect();
    now.sort_by_key(|&(_, level)| level);
    let same = now.len() == entry.speakers.len()
        && now.iter().all(|&(id, level)| {
            entry
                .speakers
                .iter()
                .any(|&(was, before)| was == id && before.abs_diff(level) < SPEAKING_LEVEL_STEP)
        });
    if same {
        return None;
    }
    entry.speakers.clone_from(&now);
    Some(Event::Speaking {
        room: entry.key.clone(),
        speakers: now,
    })
}

/// Whether a table of `len` entries in `capacity` slots is worth shrinking:
/// small tables are left alone, as are tables that still hold a quarter.
fn mostly_empty(len: usize, capacity: usize) -> bool {
    capacity > SHRINK_ABOVE && len * 4 < capacity
}

/// Tables with at most this many slots are never shrunk.
const SHRINK_ABOVE: usize = 64;

impl Engine {
    pub fn new(config: EngineConfig, now: Instant) -> Result<Self, OpenError> {
        let crypto = Arc::new(srtp::capturing_provider());
        let dtls_cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| OpenError::Setup("could not generate a DTLS certificate".into()))?;
        Ok(Self {
            config,
            crypto,
            dtls_cert,
            sessions: SessionMap::default(),
            rooms: HashMap::new(),
            room_index: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            fanout: VecDeque::new(),
            fanout_payloads: Vec::new(),
            red: RedScratch {
                built_for: None,
                len: 0,
                buf: Box::new([0; DATAGRAM_MAX]),
            },
            rtcp_scratch: Box::new([0; DATAGRAM_MAX + srtp::SRTCP_SLACK]),
            events: VecDeque::new(),
            next_tick: now + TICK,
            next_sweep: now + SWEEP_EVERY,
            next_session: 1,
            next_room: 1,
            last_input: now,
            stats: EngineStats::default(),
        })
    }

    /// Accepts an SDP offer into `room`, created on first use to mix at
    /// `rate` (a room keeps the rate it was created with).
    /// `profile` applies to listeners (WHEP); talkers always get 20 ms frames.
    pub fn open_session(
        &mut self,
        now: Instant,
        room: &str,
        rate: MixRate,
        kind: SessionKind,
        profile: Profile,
        offer: &str,
    ) -> Result<Opened, OpenError> {
        if self.sessions.len() >= self.config.max_sessions {
            return Err(OpenError::AtCapacity(self.config.max_sessions));
        }
        let offer = check_offer(offer, kind)?;
        let (creds, texts) = self.unique_ice_creds()?;
        let config = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            // RED only for listeners: a talker's RED would need unwrapping
            // on the way in (not built yet).
            .enable_opus(true, kind == SessionKind::Listen)
            .set_dtls_cert(self.dtls_cert.clone())
            .set_crypto_provider(Arc::clone(&self.crypto))
            .set_local_ice_credentials(creds.clone())
            .set_stats_interval(None);
        let (mut rtc, keys) = srtp::build_capturing(|| config.build(now));
        let keys =
            keys.ok_or_else(|| OpenError::Setup("DTLS keys would not be captured".into()))?;
        let candidate = Candidate::host(self.config.advertised, "udp")
            .map_err(|e| OpenError::Setup(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| OpenError::Offer(OfferError::Malformed(e.to_string())))?;

        let room_idx = self.room_for(room, rate)?;
        let id = SessionId(self.next_session);
        self.next_session += 1;
        let entry = self
            .rooms
            .get_mut(&room_idx)
            .expect("room_for returns a live room");
        match kind {
            SessionKind::Publish => entry.room.add_talker(id, false),
            SessionKind::Join => entry.room.add_talker(id, true),
            SessionKind::Listen => entry.room.add_listener(id, profile),
        }
        .map_err(|e| OpenError::Setup(e.to_string()))?;

        self.by_ufrag.insert(texts.0, id);
        let first_seq = rand::random::<u16>() >> 1;
        let session = Session::new(kind, room_idx, rtc, texts, keys, now, first_seq);
        self.sessions.insert(id, session);
        self.enqueue(id);
        tracing::debug!(session = id.0, room, ?kind, "session opened");
        Ok(Opened {
            id,
            answer: answer.to_sdp_string(),
        })
    }

    /// Ends a session; it leaves every mix at once. `false` if unknown.
    pub fn close_session(&mut self, id: SessionId, reason: CloseReason) -> bool {
        let Some(s) = self.sessions.get_mut(&id) else {
            return false;
        };
        if s.closing.is_none() {
            s.closing = Some(reason);
            // A retired listener has no DTLS left to send close_notify with.
            if let Some(Err(e)) = s.rtc().map(Rtc::close) {
                tracing::debug!(session = id.0, error = %e, "close");
            }
            if let Some(entry) = self.rooms.get_mut(&s.room) {
                entry.room.remove(id);
            }
            self.enqueue(id);
        }
        true
    }

    /// Server-side mute of a talker (a listener has nothing to mute).
    /// `false` when the session does not exist.
    pub fn set_muted(&mut self, id: SessionId, muted: bool) -> bool {
        let Some(s) = self.sessions.get(&id) else {
            return false;
        };
        if let Some(entry) = self.rooms.get_mut(&s.room) {
            entry.room.set_muted(id, muted);
        }
        true
    }

    /// Ends every session of `room`; returns how many.
    pub fn close_room(&mut self, room: &str) -> usize {
        let Some(idx) = self.room_index.get(room) else {
            return 0;
        };
        let members: Vec<SessionId> = self.rooms[idx].room.members().collect();
        for &id in &members {
            self.close_session(id, CloseReason::RoomClosed);
        }
        members.len()
    }

    /// One datagram from the media socket.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) {
        self.last_input = now;
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        let Some((id, binding)) = self.route(source, bytes) else {
            self.stats.drops.unknown_source += 1;
            return;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        s.traffic.received(bytes.len());
        if let Stack::Retired(consent) = &mut s.stack {
            match AfterRetirement::of(bytes) {
                AfterRetirement::Stun => {
                    if let Some(binding) = binding {
                        consent.requested(now, binding.trans_id, source);
                        if binding.use_candidate {
                            s.media_destination = Some(source);
                        }
                        self.enqueue(id);
                    }
                }
                AfterRetirement::Rtp => {}
                AfterRetirement::Rtcp => {
                    let scratch = &mut self.rtcp_scratch[..];
                    match s.read_rtcp(now, &self.crypto, bytes, scratch) {
                        Ok(report) => self.stats.loss_reports += u64::from(report),
                        Err(_) => self.stats.drops.rejected += 1,
                    }
                }
                // Unauthenticated: a goodbye only if no verified consent
                // check follows (consent.rs).
                AfterRetirement::DtlsAlert => consent.said_goodbye(now),
                // A handshake record: the peer missed our final flight,
                // which nothing here can send again (its own handshake
                // timer then fails it and the client reconnects), or
                // garbage from its address, which must not end the session.
                AfterRetirement::DtlsOther => self.stats.drops.rejected += 1,
                AfterRetirement::Malformed => self.stats.drops.malformed += 1,
            }
            return;
        }
        let Ok(contents) = DatagramRecv::try_from(bytes) else {
            self.stats.drops.malformed += 1;
            return;
        };
        if let Some(&first) = bytes.first() {
            s.saw_datagram(now, first);
        }
        if rtcp::is_rtcp(bytes) {
            // str0m reads it too, for itself; a packet it rejects is counted
            // there, so a failure here is not counted twice.
            let scratch = &mut self.rtcp_scratch[..];
            if let Ok(true) = s.read_rtcp(now, &self.crypto, bytes, scratch) {
                self.stats.loss_reports += 1;
            }
        }
        let Some(rtc) = s.rtc() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        if let Err(e) = rtc.handle_input(input) {
            self.stats.drops.rejected += 1;
            tracing::debug!(session = id.0, error = %e, "datagram rejected");
        }
        self.enqueue(id);
    }

    /// Time has reached a deadline the engine asked for (earlier is fine).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_input = now;
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            if s.deadline != Some(t) {
                continue; // superseded by a later poll.
            }
            s.deadline = None;
            if let Some(Err(e)) = s.rtc().map(|rtc| rtc.handle_input(Input::Timeout(now))) {
                tracing::debug!(session = id.0, error = %e, "timeout handling failed");
            }
            self.enqueue(id);
        }
        self.run_due_ticks(now);
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            self.sweep(now);
        }
    }

    /// Next thing to do; a datagram is written into `buf` (at least
    /// [`DATAGRAM_MAX`] bytes). Drain until [`Output::Timeout`] after every
    /// input.
    pub fn poll_output(&mut self, buf: &mut [u8]) -> Output {
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        if let Some(t) = self.poll_fanout(buf) {
            return Output::Transmit(t);
        }
        loop {
            if let Some(e) = self.events.pop_front() {
                return Output::Event(e);
            }
            let Some(&id) = self.ready.front() else { break };
            let Some(s) = self.sessions.get_mut(&id) else {
                self.ready.pop_front();
                continue;
            };
            let s: &mut Session = s;
            let rtc = match &mut s.stack {
                Stack::Full(rtc) => rtc,
                Stack::Retired(consent) => {
                    if s.closing.is_none() {
                        let hmac = self.crypto.sha1_hmac_provider;
                        if let Some((to, len)) = consent.take_reply(&s.ice_pass, hmac, buf) {
                            self.stats.datagrams_out += 1;
                            self.stats.bytes_out += len as u64;
                            s.traffic.sent(len);
                            return Output::Transmit(Transmit {
                                source: self.config.advertised,
                                destination: to,
                                len,
                            });
                        }
                    }
                    self.ready.pop_front();
                    s.queued = false;
                    if s.closing.is_some() {
                        self.remove_session(id);
                    }
                    continue;
                }
            };
            match rtc.poll_output() {
                Ok(RtcOutput::Transmit(t)) => {
                    let len = t.contents.len();
                    let Some(out) = buf.get_mut(..len) else {
                        tracing::warn!(session = id.0, len, "datagram larger than the buffer");
                        continue;
                    };
                    out.copy_from_slice(&t.contents);
                    // DTLS (20..=63) and RTCP (128..=191) go to the nominated
                    // pair; STUN answers go to whoever asked.
                    if matches!(out.first(), Some(20..=63 | 128..=191)) {
                        s.media_destination = Some(t.destination);
                    }
                    self.stats.datagrams_out += 1;
                    self.stats.bytes_out += len as u64;
                    s.traffic.sent(len);
                    return Output::Transmit(Transmit {
                        source: t.source,
                        destination: t.destination,
                        len,
                    });
                }
                Ok(RtcOutput::Event(e)) => self.handle_rtc_event(id, e),
                Ok(RtcOutput::Timeout(t)) => {
                    self.ready.pop_front();
                    s.queued = false;
                    if !rtc.is_alive() {
                        self.remove_session(id);
                    } else if s.try_retire(self.last_input, &self.crypto) {
                        s.deadline = None;
                        tracing::debug!(session = id.0, "listener retired its WebRTC stack");
                    } else {
                        s.deadline = Some(t);
                        self.timers.push(Reverse((t, id)));
                    }
                }
                Err(e) => {
                    tracing::debug!(session = id.0, error = %e, "session failed");
                    self.ready.pop_front();
                    s.queued = false;
                    if s.closing.is_none() {
                        self.close_session(id, CloseReason::Failed);
                    }
                    self.remove_session(id);
                }
            }
        }
        Output::Timeout(self.next_deadline())
    }

    /// The next audio packet of the fan-out queue, protected into `buf`.
    fn poll_fanout(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(o) = self.fanout.pop_front() {
            let Some(s) = self.sessions.get_mut(&o.session) else {
                continue;
            };
            // Not connected yet, or closing: skip before building any RED.
            let (true, Some((opus_pt, red_pt))) = (s.takes_audio(), s.payload_types()) else {
                continue;
            };
            let shared = &self.fanout_payloads[o.payload as usize];
            let mut pt = opus_pt;
            let mut payload: &[u8] = &shared.payload;
            if let (Some(red_pt), Some(previous)) = (red_pt, &shared.previous) {
                let red = &mut self.red;
                if red.built_for != Some((o.payload, opus_pt)) {
                    let offset = FRAME_SAMPLES as u32;
                    let encoded = red::encode(opus_pt, previous, offset, payload, &mut red.buf[..]);
                    red.len = encoded.unwrap_or(0);
                    red.built_for = Some((o.payload, opus_pt));
                }
                if red.len > 0 {
                    pt = red_pt;
                    payload = &red.buf[..red.len];
                }
            }
            match s.write_audio(&self.crypto, pt, o.rtp_time, shared.samples, payload, buf) {
                Ok(Some((destination, len))) => {
                    s.traffic.sent(len);
                    self.stats.datagrams_out += 1;
                    self.stats.audio_packets_out += 1;
                    self.stats.bytes_out += len as u64;
                    return Some(Transmit {
                        source: self.config.advertised,
                        destination,
                        len,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    self.stats.drops.unsendable += 1;
                    tracing::debug!(session = o.session.0, error = %e, "audio not sent");
                }
            }
        }
        self.fanout_payloads.clear();
        self.red.built_for = None;
        None
    }

    pub fn stats(&self) -> EngineStats {
        let mut st = self.stats;
        st.sessions_publish = 0;
        st.sessions_listen = 0;
        st.sessions_join = 0;
        st.listeners_retired = 0;
        for s in self.sessions.values() {
            st.listeners_retired += usize::from(s.is_retired());
            match s.kind {
                SessionKind::Publish => st.sessions_publish += 1,
                SessionKind::Listen => st.sessions_listen += 1,
                SessionKind::Join => st.sessions_join += 1,
            }
        }
        st.rooms = self.rooms.len();
        for entry in self.rooms.values() {
            let rs = entry.room.stats();
            st.audio.add(&rs);
        }
        st
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    fn handle_rtc_event(&mut self, id: SessionId, event: RtcEvent) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        match event {
            RtcEvent::Connected => {
                s.set_connected(self.last_input);
                self.events.push_back(Event::Connected { id });
            }
            RtcEvent::MediaAdded(m) if m.kind == MediaKind::Audio => s.resolve_audio(m.mid),
            RtcEvent::RtpPacket(pkt) if s.is_talker() => {
                let from_audio = s.audio.is_some_and(|a| a.pt == pkt.header.payload_type);
                if let (true, Some(entry)) = (from_audio, self.rooms.get_mut(&s.room)) {
                    self.stats.audio_packets_in += 1;
                    let level = pkt.header.ext_vals.audio_level.map(i8::unsigned_abs);
                    entry.room.receive(id, *pkt.seq_no, &pkt.payload, level);
                }
            }
            RtcEvent::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.close_session(id, CloseReason::IceTimeout);
            }
            _ => {}
        }
    }

    /// The session a datagram is for, and the binding request it is, if
    /// it is one that verified.
    fn route(&mut self, source: SocketAddr, bytes: &[u8]) -> Option<(SessionId, Option<Binding>)> {
        if let Some((id, binding)) = self.stun_owner(bytes) {
            if self.by_addr.insert(source, id) != Some(id)
                && let Some(s) = self.sessions.get_mut(&id)
            {
                s.addrs.push(source);
            }
            return Some((id, Some(binding)));
        }
        self.by_addr.get(&source).map(|&id| (id, None))
    }

    /// The session a STUN binding request is for, by the server ufrag in its
    /// USERNAME (`server:client`) — and only when its MESSAGE-INTEGRITY
    /// verifies with that session's ICE password, so nobody who merely saw
    /// the ufrag can bind their address to someone else's session.
    fn stun_owner(&self, bytes: &[u8]) -> Option<(SessionId, Binding)> {
        // RFC 7983: STUN starts with 0 or 1, and has a 20-byte header.
        if bytes.len() < 20 || bytes[0] > 3 {
            return None;
        }
        let msg = StunMessage::parse(bytes).ok()?;
        if !msg.is_binding_request() {
            return None;
        }
        let (ours, _) = msg.split_username()?;
        let id = *self.by_ufrag.get(ours)?;
        let session = self.sessions.get(&id)?;
        let hmac = self.crypto.sha1_hmac_provider;
        msg.verify(session.ice_pass.as_bytes(), |key, parts| {
            hmac.sha1_hmac(key, parts)
        })
        .then_some((
            id,
            Binding {
                trans_id: msg.trans_id(),
                use_candidate: msg.use_candidate(),
            },
        ))
    }

    fn run_due_ticks(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.run_tick();
        self.next_tick += TICK;
        if now >= self.next_tick + TICK {
            // More than one tick behind: skip ahead rather than burst.
            self.stats.tick_overruns += 1;
            self.next_tick = now + TICK;
        } else if now >= self.next_tick {
            self.run_tick();
            self.next_tick += TICK;
        }
    }

    fn run_tick(&mut self) {
        self.stats.ticks += 1;
        let report_speakers = self.stats.ticks.is_multiple_of(SPEAKING_EVERY_TICKS);
        for entry in self.rooms.values_mut() {
            entry.room.tick();
            if report_speakers && let Some(event) = speaking_news(entry) {
                self.events.push_back(event);
            }
            // Whether a member can take audio yet is checked once, when its
            // record is polled (`poll_fanout`): looking the session up here
            // as well would cost a second cache miss per packet.
            for (id, delivery) in entry.room.deliveries() {
                // Deliveries of one payload come together: compare with the last.
                let last = self.fanout_payloads.last();
                if !last.is_some_and(|p| Arc::ptr_eq(&p.payload, delivery.payload)) {
                    self.fanout_payloads.push(SharedPayload::of(delivery));
                }
                self.fanout.push_back(Outgoing {
                    session: id,
                    payload: (self.fanout_payloads.len() - 1) as u32,
                    rtp_time: delivery.rtp_time,
                });
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let stale: Vec<(SessionId, CloseReason)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.closing.is_none())
            .filter_map(|(&id, s)| match &s.stack {
                _ if !s.connected() => (now.saturating_duration_since(s.created) > CONNECT_TIMEOUT)
                    .then_some((id, CloseReason::ConnectTimeout)),
                Stack::Retired(consent) => consent.ended(now).map(|reason| (id, reason)),
                Stack::Full(_) => None,
            })
            .collect();
        for (id, reason) in stale {
            self.close_session(id, reason);
        }
        let sessions = &self.sessions;
        let loss_of = |id| {
            sessions
                .get(&id)
                .map_or(UNREPORTED_PCT, Session::planned_loss)
        };
        for entry in self.rooms.values_mut() {
            entry.room.plan_for_loss(loss_of);
        }
        self.shrink_tables();
    }

    /// Gives back the memory of tables that grew for a crowd that has left
    /// (a rally's end, a wave of abandoned phones): a table at most a
    /// quarter full is shrunk to twice its length. Rehashing allocates, so
    /// it happens here, once a sweep, and only after such a drop.
    fn shrink_tables(&mut self) {
        fn shrunk<K, V, S>(map: &mut HashMap<K, V, S>)
        where
            K: Eq + std::hash::Hash,
            S: std::hash::BuildHasher,
        {
            if mostly_empty(map.len(), map.capacity()) {
                map.shrink_to(map.len() * 2);
            }
        }
        shrunk(&mut self.sessions);
        shrunk(&mut self.by_ufrag);
        shrunk(&mut self.by_addr);
        shrunk(&mut self.rooms);
        shrunk(&mut self.room_index);
        if mostly_empty(self.ready.len(), self.ready.capacity()) {
            self.ready.shrink_to(self.ready.len() * 2);
        }
        if mostly_empty(self.events.len(), self.events.capacity()) {
            self.events.shrink_to(self.events.len() * 2);
        }
        // A session's timer entries are dropped lazily, when they come to
        // the top; those of closed sessions can lie far in the future.
        // Rebuilt when mostly stale, so they cannot pile up over a day of
        // rallies.
        if self.timers.len() > SHRINK_ABOVE + 2 * self.sessions.len() {
            let sessions = &self.sessions;
            self.timers.retain(|&Reverse((t, id))| {
                sessions.get(&id).is_some_and(|s| s.deadline == Some(t))
            });
        }
        if mostly_empty(self.timers.len(), self.timers.capacity()) {
            self.timers.shrink_to(self.timers.len() * 2);
        }
        // One packet per member and tick, two ticks' worth when the driver
        // fell behind: room for that stays, so a steady room never regrows.
        let packets = self.sessions.len() * 2;
        if mostly_empty(packets, self.fanout.capacity()) {
            self.fanout.shrink_to(packets * 2);
        }
        for entry in self.rooms.values_mut() {
            entry.room.shrink_members();
        }
    }

    fn next_deadline(&mut self) -> Instant {
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            match self.sessions.get(&id) {
                Some(s) if s.deadline == Some(t) => return t.min(self.next_tick),
                _ => {
                    self.timers.pop();
                }
            }
        }
        self.next_tick
    }

    fn enqueue(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.get_mut(&id)
            && !s.queued
        {
            s.queued = true;
            self.ready.push_back(id);
        }
    }

    fn remove_session(&mut self, id: SessionId) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        self.by_ufrag.remove(&s.ufrag);
        for addr in &s.addrs {
            if self.by_addr.get(addr) == Some(&id) {
                self.by_addr.remove(addr);
            }
        }
        if let Some(entry) = self.rooms.get_mut(&s.room) {
            entry.room.remove(id);
            if entry.room.is_empty() {
                let entry = self.rooms.remove(&s.room).expect("just looked up");
                self.room_index.remove(&entry.key);
                // Keep the totals monotonic for metrics.
                let retired = entry.room.stats();
                self.stats.audio.add(&retired);
            }
        }
        let reason = s.closing.unwrap_or(CloseReason::Failed);
        self.events.push_back(Event::Closed {
            id,
            reason,
            traffic: s.traffic,
        });
        tracing::debug!(session = id.0, reason = reason.as_str(), "session closed");
    }

    fn room_for(&mut self, key: &str, rate: MixRate) -> Result<RoomIdx, OpenError> {
        if let Some(&idx) = self.room_index.get(key) {
            return Ok(idx);
        }
        let room =
            Room::with_rate(self.config.room, rate).map_err(|e| OpenError::Setup(e.to_string()))?;
        let idx = RoomIdx(self.next_room);
        self.next_room += 1;
        self.rooms.insert(
            idx,
            RoomEntry {
                key: key.to_owned(),
                room,
                speakers: Vec::new(),
            },
        );
        self.room_index.insert(key.to_owned(), idx);
        Ok(idx)
    }

    /// Fresh ICE credentials no session has, for str0m and kept inline.
    fn unique_ice_creds(&self) -> Result<(IceCreds, (IceText, IceText)), OpenError> {
        loop {
            let creds = IceCreds::new();
            if self.by_ufrag.contains_key(creds.ufrag.as_str()) {
                continue;
            }
            let inline = |text: &str| {
                IceText::from(text).map_err(|_| {
                    OpenError::Setup(format!("ICE credential of {} bytes", text.len()))
                })
            };
            let texts = (inline(&creds.ufrag)?, inline(&creds.pass)?);
            return Ok((creds, texts));
        }
    }
}
