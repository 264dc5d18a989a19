//! A worker thread owning a shard of peers and their sockets: one epoll
//! (`mio`) loop and one timer heap for all of them, no thread or task per
//! peer. The main thread talks to it through a channel and a waker.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use crate::peer::{Peer, Rx, State};

const WAKER: Token = Token(usize::MAX);
/// The loop wakes at least this often, so commands are never starved.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// What the main thread asks of a shard.
pub enum Command {
    Add(Box<Peer>),
    /// Per-peer counters. `record`: start keeping sampled peers' PCM (from
    /// empty); `take_pcm`: hand it over and stop.
    Snapshot {
        record: bool,
        take_pcm: bool,
        reply: mpsc::Sender<Vec<PeerSnap>>,
    },
    Stop,
}

/// One peer's counters at one instant.
pub struct PeerSnap {
    pub id: usize,
    pub state: State,
    pub posted_at: Instant,
    pub connected_at: Option<Instant>,
    pub rx: Rx,
    pub rtc_errors: u64,
    pub send_errors: u64,
    pub decode_errors: u64,
    pub pcm: Option<Vec<i16>>,
}

/// The main thread's handle of a shard.
pub struct Shard {
    tx: mpsc::Sender<Command>,
    waker: std::sync::Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("epoll: {0}")]
    Poll(#[from] std::io::Error),
    #[error("shard thread is gone")]
    Gone,
}

impl Shard {
    pub fn start(index: usize) -> Result<Shard, ShardError> {
        let poll = Poll::new()?;
        let waker = std::sync::Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name(format!("shard-{index}"))
            .spawn(move || run(poll, rx))?;
        Ok(Shard {
            tx,
            waker,
            thread: Some(thread),
        })
    }

    /// A handle the join threads use to hand peers over.
    pub fn adder(&self) -> Adder {
        Adder {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        }
    }

    pub fn snapshot(&self, record: bool, take_pcm: bool) -> Result<Vec<PeerSnap>, ShardError> {
        let (reply, rx) = mpsc::channel();
        self.send(Command::Snapshot {
            record,
            take_pcm,
            reply,
        })?;
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| ShardError::Gone)
    }

    fn send(&self, c: Command) -> Result<(), ShardError> {
        self.tx.send(c).map_err(|_| ShardError::Gone)?;
        self.waker.wake().map_err(ShardError::Poll)
    }

    pub fn stop(mut self) {
        let _ = self.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hands peers to a shard from another thread.
#[derive(Clone)]
pub struct Adder {
    tx: mpsc::Sender<Command>,
    waker: std::sync::Arc<Waker>,
}

impl Adder {
    pub fn add(&self, peer: Peer) -> Result<(), ShardError> {
        self.tx
            .send(Command::Add(Box::new(peer)))
            .map_err(|_| ShardError::Gone)?;
        self.waker.wake().map_err(ShardError::Poll)
    }
}

/// Timer kinds in the heap.
const RTC: u8 = 0;
const SEND: u8 = 1;

fn run(mut poll: Poll, commands: mpsc::Receiver<Command>) {
    let mut peers: Vec<Peer> = Vec::new();
    let mut heap: Heap = BinaryHeap::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 2048];
    loop {
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                Command::Add(mut peer) => {
                    let idx = peers.len();
                    if poll
                        .registry()
                        .register(peer.socket(), Token(idx), Interest::READABLE)
                        .is_err()
                    {
                        peer.rtc_errors += 1;
                    }
                    // Its first STUN checks go out now.
                    let now = Instant::now();
                    peer.on_timeout(now);
                    arm(&mut heap, &mut peer, idx, now);
                    peers.push(*peer);
                }
                Command::Snapshot {
                    record,
                    take_pcm,
                    reply,
                } => {
                    let snaps = peers
                        .iter_mut()
                        .map(|p| snap(p, record, take_pcm))
                        .collect();
                    let _ = reply.send(snaps);
                }
                Command::Stop => {
                    peers.iter_mut().for_each(Peer::close);
                    return;
                }
            }
        }
        let now = Instant::now();
        let sleep = heap
            .peek()
            .map_or(MAX_SLEEP, |Reverse((at, _, _))| {
                at.saturating_duration_since(now)
            })
            .min(MAX_SLEEP);
        if poll.poll(&mut events, Some(sleep)).is_err() {
            thread::sleep(Duration::from_millis(1));
        }
        let now = Instant::now();
        for ev in events.iter() {
            let Token(idx) = ev.token();
            if let Some(peer) = peers.get_mut(idx) {
                peer.on_readable(&mut buf, now);
                arm(&mut heap, peer, idx, now);
            }
        }
        let now = Instant::now();
        while let Some(&Reverse((at, idx, kind))) = heap.peek() {
            if at > now {
                break;
            }
            heap.pop();
            let peer = &mut peers[idx];
            if kind == SEND {
                peer.send_armed = false;
                peer.on_send(now);
            } else if peer.rtc_armed == Some(at) {
                // Stale entries (the deadline moved since) are skipped.
                peer.rtc_armed = None;
                peer.on_timeout(now);
            }
            arm(&mut heap, peer, idx, now);
        }
    }
}

type Heap = BinaryHeap<Reverse<(Instant, usize, u8)>>;

/// Puts the peer's current `rtc` deadline and its next frame in the heap,
/// unless they are there already. A deadline already past is taken as 1 ms
/// from now, so a connection that keeps asking for "now" cannot spin.
fn arm(heap: &mut Heap, peer: &mut Peer, idx: usize, now: Instant) {
    if let Some(at) = peer.next_timeout
        && peer.rtc_armed != Some(at)
    {
        let at = at.max(now + Duration::from_millis(1));
        peer.next_timeout = Some(at);
        peer.rtc_armed = Some(at);
        heap.push(Reverse((at, idx, RTC)));
    }
    if let Some(at) = peer.next_send
        && !peer.send_armed
    {
        peer.send_armed = true;
        heap.push(Reverse((at, idx, SEND)));
    }
}

fn snap(p: &mut Peer, record: bool, take_pcm: bool) -> PeerSnap {
    let pcm = if take_pcm && p.sampled {
        p.recording = false;
        Some(std::mem::take(&mut p.pcm))
    } else {
        None
    };
    if record && p.sampled {
        p.pcm.clear();
        p.recording = true;
    }
    PeerSnap {
        id: p.id,
        state: p.state,
        posted_at: p.posted_at,
        connected_at: p.connected_at,
        rx: p.rx,
        rtc_errors: p.rtc_errors,
        send_errors: p.send_errors,
        decode_errors: p.decode_errors,
        pcm,
    }
}
