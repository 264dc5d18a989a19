//! Deterministic simulation: the engine and many WebRTC clients on a virtual
//! network, advanced in virtual time.
//!
//! Clients are str0m peers in their default (frame) mode acting as browsers
//! would: they offer, take the engine's answer, do ICE/DTLS/SRTP with it, and
//! send or receive Opus. The network delivers datagrams after a fixed latency
//! and drops them per link with a seeded RNG, so a run is repeatable.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sabha_media::opus::{
    EncoderSettings, FRAME_SAMPLES, Frame, MAX_PACKET, OpusDecoder, OpusEncoder, SAMPLE_RATE,
};
use sabha_media::{
    CloseReason, DATAGRAM_MAX, Engine, EngineConfig, Event as EngineEvent, MixRate, Output,
    Profile, RoomConfig, SessionId, SessionKind,
};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};

pub const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 8443);

/// A datagram in flight.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Flight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

pub struct Client {
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pending: Option<SdpPendingOffer>,
    pub mid: Option<Mid>,
    pub connected: bool,
    /// Probability that a datagram from or to this client is lost.
    pub loss: f64,
    /// Extra random delay, up to this much, on datagrams from or to this
    /// client (reorders them).
    pub jitter: Duration,
    /// Sending: a tone, encoded like a browser would.
    tone: Option<(f32, OpusEncoder, usize)>,
    /// The tone comes in syllables (100 ms loud, 100 ms soft), which
    /// Opus's voice activity detector takes for speech, as it soon stops
    /// taking a steady tone.
    pub syllables: bool,
    /// Packets received that carry in-band FEC (Opus LBRR).
    pub fec_packets: usize,
    /// Receiving: decoded audio.
    decoder: OpusDecoder,
    /// Decoded audio on the RTP timeline: a missing frame leaves silence,
    /// a gap of up to three frames is concealed as a browser would.
    pub heard: Vec<i16>,
    /// RTP time of `heard[0]`.
    timeline_origin: Option<u64>,
    /// Samples in the last packet decoded.
    packet_samples: usize,
    pub frames_received: usize,
    /// Distinct RTP times of every frame that arrived, in time for playout
    /// or not (a RED-recovered frame comes after the packet that carried it,
    /// which a browser's jitter buffer still plays).
    pub frames_arrived: BTreeSet<u64>,
    /// Bytes of every datagram delivered to this client (SRTP, RTCP, STUN, DTLS).
    pub bytes_received: u64,
    /// Virtual time of the first decoded frame.
    pub first_frame_at: Option<Instant>,
    deadline: Instant,
}

impl Client {
    /// From now on this client sends a sine tone at `freq`.
    pub fn send_tone(&mut self, freq: f32) {
        self.tone = Some((
            freq,
            OpusEncoder::new(EncoderSettings::default()).expect("encoder"),
            0,
        ));
    }

    fn send_frame(&mut self, now: Instant) {
        let (Some(mid), true) = (self.mid, self.connected) else {
            return;
        };
        let Some((freq, enc, index)) = self.tone.as_mut() else {
            return;
        };
        let amplitude = if self.syllables && *index / 5 % 2 == 1 {
            0.06
        } else {
            0.3
        };
        let mut frame: Frame = [0; FRAME_SAMPLES];
        for (i, s) in frame.iter_mut().enumerate() {
            let t = (*index * FRAME_SAMPLES + i) as f32 / SAMPLE_RATE as f32;
            *s = (amplitude * 32767.0 * (2.0 * std::f32::consts::PI * *freq * t).sin()) as i16;
        }
        let mut packet = [0u8; MAX_PACKET];
        let n = enc.encode(&frame, &mut packet).expect("encode");
        let rtp_time = (*index * FRAME_SAMPLES) as u64;
        *index += 1;
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
        else {
            return;
        };
        let _ = writer.write(
            pt,
            now,
            str0m::media::MediaTime::new(rtp_time, str0m::media::Frequency::FORTY_EIGHT_KHZ),
            packet[..n].to_vec(),
        );
    }

    /// Stops sending and tells the engine it left, like an HTTP DELETE.
    pub fn stop_tone(&mut self) {
        self.tone = None;
    }

    fn handle_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Connected => self.connected = true,
            Event::MediaAdded(m) if m.kind == MediaKind::Audio => self.mid = Some(m.mid),
            Event::MediaData(data) => {
                let mut out: Frame = [0; FRAME_SAMPLES];
                self.fec_packets += usize::from(sabha_media::opus::carries_fec(&data.data));
                let time = data.time.numer();
                self.frames_arrived.insert(time);
                let origin = *self.timeline_origin.get_or_insert(time);
                let at = time.saturating_sub(origin) as usize;
                if at < self.heard.len() {
                    return; // a duplicate or a frame from the past
                }
                // Like a browser's jitter buffer: the packet just before this
                // one comes back from this one's in-band FEC, and up to 200 ms
                // more are concealed; a longer outage is silence.
                let missing = at - self.heard.len();
                let mut pcm = [0i16; 6 * FRAME_SAMPLES];
                // The lost packet is taken to be as long as the last one heard.
                let from_fec = missing.min(self.packet_samples);
                let concealed = missing - from_fec;
                for _ in 0..concealed / FRAME_SAMPLES {
                    if concealed <= 10 * FRAME_SAMPLES && self.decoder.conceal(&mut out).is_ok() {
                        self.heard.extend_from_slice(&out);
                    } else {
                        self.heard.extend_from_slice(&[0; FRAME_SAMPLES]);
                    }
                }
                if from_fec > 0 {
                    let recovered = self
                        .decoder
                        .decode_fec_any(&data.data, &mut pcm[..from_fec]);
                    if !matches!(recovered, Ok(n) if n == from_fec) {
                        pcm[..from_fec].fill(0);
                    }
                    self.heard.extend_from_slice(&pcm[..from_fec]);
                }
                self.heard.resize(at, 0);
                // Packets may hold 20 ms (program) or 60 ms (low-rate profile).
                if let Ok(n) = self.decoder.decode_any(&data.data, &mut pcm) {
                    self.packet_samples = n;
                    self.frames_received += 1;
                    self.first_frame_at.get_or_insert(now);
                    self.heard.extend_from_slice(&pcm[..n]);
                }
            }
            _ => {}
        }
    }

    /// The last `seconds` of decoded audio.
    pub fn tail(&self, seconds: f32) -> &[i16] {
        let n = (seconds * SAMPLE_RATE as f32) as usize;
        &self.heard[self.heard.len().saturating_sub(n)..]
    }
}

/// RTP, not RTCP (RFC 5761 §4) nor STUN or DTLS (RFC 7983).
pub fn is_rtp(datagram: &[u8]) -> bool {
    matches!(datagram, [0x80..=0xbf, pt, ..] if !(192..=223).contains(pt))
}

pub struct Sim {
    pub now: Instant,
    pub engine: Engine,
    pub clients: Vec<Client>,
    by_addr: HashMap<SocketAddr, usize>,
    /// The engine's id of each client's session.
    pub session_ids: Vec<sabha_media::SessionId>,
    /// The SDP offer each client sent (as the engine got it).
    pub offers: Vec<String>,
    /// The SDP answer each client got.
    pub answers: Vec<String>,
    net: BinaryHeap<Reverse<Flight>>,
    flight_seq: u64,
    latency: Duration,
    rng: StdRng,
    next_frame: Instant,
    pub dropped: u64,
    /// Every session the engine closed, why, and when (virtual time).
    pub closed: Vec<(SessionId, CloseReason, Instant)>,
    /// Called around every call into the engine (and only the engine), so a
    /// test can measure what the engine alone does, e.g. allocations.
    pub engine_enter: fn(),
    pub engine_exit: fn(),
    /// Called with every output of `poll_output` and the datagram it wrote,
    /// right after `engine_exit`.
    pub engine_polled: fn(&Output, &[u8]),
    /// Called with every datagram delivered to the engine (the fuzz seed
    /// generator, tests/fuzz_seeds.rs, records them).
    pub engine_received: fn(&[u8]),
    /// The buffer the engine writes datagrams into.
    buf: Box<[u8; DATAGRAM_MAX]>,
    /// When false, the engine's RTP (audio) never reaches the clients:
    /// a benchmark of the engine's send side need not pay for 10,000
    /// clients decrypting and decoding. RTCP, STUN and DTLS still flow, so
    /// sessions stay up.
    pub deliver_audio: bool,
    /// The rate rooms the clients open are created at (48 kHz unless a
    /// test sets it, as the server does for a bridge).
    pub room_rate: MixRate,
}

impl Sim {
    pub fn new(seed: u64) -> Self {
        // The only clock read: the origin of virtual time.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let config = EngineConfig {
            advertised: SERVER,
            room: RoomConfig::default(),
            max_sessions: 100_000,
        };
        Self {
            now,
            engine: Engine::new(config, now).expect("engine"),
            clients: Vec::new(),
            by_addr: HashMap::new(),
            session_ids: Vec::new(),
            offers: Vec::new(),
            answers: Vec::new(),
            net: BinaryHeap::new(),
            flight_seq: 0,
            latency: Duration::from_millis(10),
            rng: StdRng::seed_from_u64(seed),
            next_frame: now,
            dropped: 0,
            closed: Vec::new(),
            engine_enter: || {},
            engine_exit: || {},
            engine_polled: |_, _| {},
            engine_received: |_| {},
            buf: Box::new([0; DATAGRAM_MAX]),
            deliver_audio: true,
            room_rate: MixRate::Full,
        }
    }

    /// Adds a client that offers `direction` audio to the room over `kind`.
    /// Adds a client that sends a tone at `freq`.
    pub fn join_with_tone(&mut self, room: &str, kind: SessionKind, freq: f32) -> usize {
        let i = self.join(room, kind);
        self.clients[i].send_tone(freq);
        i
    }

    /// Adds a client to the room over `kind` (publish, listen or join).
    pub fn join(&mut self, room: &str, kind: SessionKind) -> usize {
        self.join_with_profile(room, kind, Profile::Standard)
    }

    /// Adds a client with a listening profile.
    pub fn join_with_profile(&mut self, room: &str, kind: SessionKind, profile: Profile) -> usize {
        self.join_as(room, kind, profile, false, |offer| offer)
    }

    /// Adds a client that offers RFC 2198 RED next to Opus, as Chrome does.
    pub fn join_offering_red(&mut self, room: &str, kind: SessionKind) -> usize {
        self.join_as(room, kind, Profile::Standard, true, |offer| offer)
    }

    /// Adds a client whose offer is changed by `edit` on its way to the
    /// engine (a tampered offer: the client itself still acts on its own).
    pub fn join_with_edited_offer(
        &mut self,
        room: &str,
        kind: SessionKind,
        edit: impl FnOnce(String) -> String,
    ) -> usize {
        self.join_as(room, kind, Profile::Standard, false, edit)
    }

    fn join_as(
        &mut self,
        room: &str,
        kind: SessionKind,
        profile: Profile,
        red: bool,
        edit: impl FnOnce(String) -> String,
    ) -> usize {
        let index = self.clients.len();
        let addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 1 + (index / 60_000) as u8, 1)),
            10_000 + (index % 60_000) as u16,
        );
        let mut rtc = Rtc::builder()
            .set_rtp_mode(false)
            .enable_opus(true, red)
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let direction = match kind {
            SessionKind::Publish => Direction::SendOnly,
            SessionKind::Listen => Direction::RecvOnly,
            SessionKind::Join => Direction::SendRecv,
        };
        let mut change = rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, direction, None, None, None);
        let (offer, pending) = change.apply().expect("offer");
        let offer = edit(offer.to_sdp_string());
        (self.engine_enter)();
        let opened = self
            .engine
            .open_session(self.now, room, self.room_rate, kind, profile, &offer)
            .expect("engine accepts the offer");
        (self.engine_exit)();
        self.session_ids.push(opened.id);
        self.offers.push(offer);
        self.answers.push(opened.answer.clone());
        let answer = SdpAnswer::from_sdp_string(&opened.answer).expect("answer parses");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        self.by_addr.insert(addr, index);
        self.clients.push(Client {
            addr,
            rtc,
            pending: None,
            mid: Some(mid), // the offerer gets no MediaAdded for its own m-line
            connected: false,
            loss: 0.0,
            jitter: Duration::ZERO,
            tone: None,
            syllables: false,
            fec_packets: 0,
            decoder: OpusDecoder::new().expect("decoder"),
            heard: Vec::new(),
            timeline_origin: None,
            packet_samples: FRAME_SAMPLES,
            frames_received: 0,
            frames_arrived: BTreeSet::new(),
            bytes_received: 0,
            first_frame_at: None,
            deadline: self.now,
        });
        self.drain_engine();
        index
    }

    /// Advances virtual time by `duration`.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.drain_engine();
            let next = self.next_event().min(end);
            self.now = next.max(self.now);
            self.deliver_due();
            self.fire_timeouts();
        }
    }

    fn next_event(&mut self) -> Instant {
        let polled = self.poll_engine();
        let engine = match polled {
            Output::Timeout(t) => t,
            _ => self.now, // more output pending
        };
        let net = self.net.peek().map(|f| f.0.at).unwrap_or(engine);
        let clients = self
            .clients
            .iter()
            .map(|c| c.deadline)
            .min()
            .unwrap_or(engine);
        engine.min(net).min(clients).min(self.next_frame)
    }

    fn deliver_due(&mut self) {
        while self.net.peek().is_some_and(|f| f.0.at <= self.now) {
            let Reverse(f) = self.net.pop().expect("peeked");
            if f.to == SERVER {
                (self.engine_received)(&f.bytes);
                (self.engine_enter)();
                self.engine.handle_receive(self.now, f.from, f.to, &f.bytes);
                (self.engine_exit)();
                self.drain_engine();
            } else if let Some(&i) = self.by_addr.get(&f.to) {
                let Ok(contents) = f.bytes.as_slice().try_into() else {
                    continue;
                };
                let input = Input::Receive(
                    self.now,
                    Receive {
                        proto: Protocol::Udp,
                        source: f.from,
                        destination: f.to,
                        contents,
                    },
                );
                self.clients[i].bytes_received += f.bytes.len() as u64;
                let _ = self.clients[i].rtc.handle_input(input);
                self.drain_client(i);
            }
        }
    }

    fn fire_timeouts(&mut self) {
        (self.engine_enter)();
        self.engine.handle_timeout(self.now);
        (self.engine_exit)();
        self.drain_engine();
        if self.now >= self.next_frame {
            self.next_frame += Duration::from_millis(20);
            for i in 0..self.clients.len() {
                if self.clients[i].tone.is_some() {
                    self.clients[i].send_frame(self.now);
                    self.drain_client(i);
                }
            }
        }
        for i in 0..self.clients.len() {
            if self.clients[i].deadline <= self.now {
                let _ = self.clients[i].rtc.handle_input(Input::Timeout(self.now));
                self.drain_client(i);
            }
        }
    }

    fn send(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
        (loss, jitter): (f64, Duration),
    ) {
        if loss > 0.0 && self.rng.random_bool(loss) {
            self.dropped += 1;
            return;
        }
        let extra = if jitter.is_zero() {
            Duration::ZERO
        } else {
            jitter.mul_f64(self.rng.random::<f64>())
        };
        self.flight_seq += 1;
        self.net.push(Reverse(Flight {
            at: self.now + self.latency + extra,
            seq: self.flight_seq,
            from,
            to,
            bytes,
        }));
    }

    /// The longest run of silence (10 ms windows under −40 dBFS) in `pcm`.
    pub fn longest_gap(pcm: &[i16]) -> Duration {
        let window = SAMPLE_RATE as usize / 100;
        let (mut run, mut longest) = (0u32, 0u32);
        for w in pcm.chunks(window) {
            if sabha_media::analysis::rms_dbfs(w) < -40.0 {
                run += 1;
                longest = longest.max(run);
            } else {
                run = 0;
            }
        }
        Duration::from_millis(u64::from(longest) * 10)
    }

    fn poll_engine(&mut self) -> Output {
        (self.engine_enter)();
        let out = self.engine.poll_output(&mut self.buf[..]);
        (self.engine_exit)();
        let written = match &out {
            Output::Transmit(t) => &self.buf[..t.len],
            _ => &[],
        };
        (self.engine_polled)(&out, written);
        out
    }

    fn drain_engine(&mut self) {
        loop {
            match self.poll_engine() {
                Output::Transmit(t) => {
                    if !self.deliver_audio && is_rtp(&self.buf[..t.len]) {
                        continue;
                    }
                    let link = self
                        .by_addr
                        .get(&t.destination)
                        .map_or((0.0, Duration::ZERO), |&i| {
                            (self.clients[i].loss, self.clients[i].jitter)
                        });
                    let bytes = self.buf[..t.len].to_vec();
                    self.send(t.source, t.destination, bytes, link);
                }
                Output::Event(EngineEvent::Closed { id, reason, .. }) => {
                    self.closed.push((id, reason, self.now));
                }
                Output::Event(_) => {}
                Output::Timeout(_) => break,
            }
        }
    }

    fn drain_client(&mut self, i: usize) {
        loop {
            let c = &mut self.clients[i];
            match c.rtc.poll_output() {
                Ok(RtcOutput::Transmit(t)) => {
                    let link = (c.loss, c.jitter);
                    self.send(t.source, t.destination, t.contents.to_vec(), link);
                }
                Ok(RtcOutput::Event(e)) => c.handle_event(e, self.now),
                Ok(RtcOutput::Timeout(t)) => {
                    c.deadline = t;
                    break;
                }
                Err(e) => panic!("client {i} failed: {e}"),
            }
        }
    }
}
