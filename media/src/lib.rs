//! The sans-IO media core of Sabha.
//!
//! Everything here is a state machine fed with datagrams, commands and the
//! current time; nothing reads a clock, opens a socket or spawns a task. The
//! binary's driver owns the UDP socket and timers and runs this loop:
//!
//! ```text
//! loop {
//!     match engine.poll_output(&mut buf) {  // drain after every input
//!         Output::Transmit(t) => socket.send_to(&buf[..t.len], t.destination),
//!         Output::Event(e)    => tell signaling (connected / closed),
//!         Output::Timeout(t)  => wait for a datagram, a command, or t;
//!                                then engine.handle_receive(now, ..)
//!                                or engine.handle_timeout(now)
//!     }
//! }
//! ```
//!
//! The parts, bottom up:
//! - [`opus`]: encode/decode 20 ms mono frames (pure-Rust libopus port).
//! - [`jitter`]: per-talker reorder/loss buffer, one decision per tick.
//! - [`mixer`]: program mix and mix-minus arithmetic.
//! - [`red`]: RFC 2198 redundancy (the previous frame) for listeners.
//! - [`room`]: a room's stage and listeners; the 20 ms tick that decodes,
//!   mixes and encodes once per distinct mix. Knows nothing of WebRTC.
//! - [`sdp`]: offer checks with errors a client can act on.
//! - `session`: one str0m `Rtc` (ICE-lite, DTLS-SRTP, RTP mode).
//! - `consent`: what is left of a listener once its `Rtc` is retired after
//!   the handshake: answers to its ICE consent checks.
//! - [`srtp`]: the fan-out send path — RTP built and SRTP-protected into the
//!   driver's buffer with the session's DTLS-exported keys, no allocation;
//!   and the peer's SRTCP read back with the same keys.
//! - [`rtcp`]: the loss a receiver report gives about our stream.
//! - [`loss`]: reported loss → the loss each encoder plans its FEC for.
//! - [`engine`]: all sessions and rooms of a shard, datagram demux, timers.
//! - [`analysis`]: tone frequency and level of PCM, for tests and load checks.

pub mod analysis;
mod consent;
pub mod engine;
pub mod jitter;
mod listener_set;
pub mod loss;
pub mod mixer;
pub mod opus;
pub mod red;
pub mod room;
pub mod rtcp;
pub mod sdp;
mod session;
pub mod speech;
pub mod srtp;

pub use engine::{
    DATAGRAM_MAX, Drops, Engine, EngineConfig, EngineStats, Event, OpenError, Opened, Output,
    SPEAKING_EVERY_TICKS, TICK, Transmit,
};
pub use opus::MixRate;
pub use room::{Profile, RoomConfig};
pub use session::{CloseReason, Traffic};

/// Identifies a session inside one engine. Not exposed to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Index of a room inside one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RoomIdx(pub u32);

/// How a session takes part in its room's audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// Sends to the stage, receives nothing (WHIP).
    Publish,
    /// Receives the program mix (WHEP).
    Listen,
    /// Sends to the stage and receives mix-minus-self (`/join`).
    Join,
}
