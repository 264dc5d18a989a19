//! Counts heap allocations on the mixing and fan-out path with a counting
//! global allocator.
//!
//! The room's tick must allocate per *encode* (one shared `Arc<[u8]>` per
//! distinct mix), never per listener, and the engine must forward audio
//! (RTP + SRTP into the driver's buffer) with no allocation at all.

// A global allocator is an `unsafe impl`; this one only delegates to the
// system allocator and counts. It is the only unsafe code in the workspace.
#![allow(unsafe_code)]

mod sim;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sabha_media::opus::{EncoderSettings, MAX_PACKET, OpusEncoder};
use sabha_media::room::{Profile, Room, RoomConfig};
use sabha_media::{Output, SessionId, SessionKind};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; counting touches no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATIONS.load(Ordering::Relaxed) - before)
}

/// Allocations of one room over 200 ticks with one talker and `listeners`.
fn room_allocations(listeners: u64) -> (u64, usize) {
    let mut room = Room::new(RoomConfig::default()).expect("room");
    room.add_talker(SessionId(0), false).expect("talker");
    for l in 0..listeners {
        room.add_listener(SessionId(1 + l), Profile::Standard)
            .expect("listener");
    }
    let mut enc = OpusEncoder::new(EncoderSettings::default()).expect("encoder");
    let mut packet = [0u8; MAX_PACKET];
    let tone: [i16; 960] = std::array::from_fn(|i| ((i as f32 * 0.0576).sin() * 8000.0) as i16);
    let (mut allocations, mut delivered) = (0, 0);
    for seq in 0..200u64 {
        let n = enc.encode(&tone, &mut packet).expect("encode");
        let ((), a) = counted(|| {
            room.receive(SessionId(0), seq, &packet[..n], None);
            room.tick();
            delivered += room.deliveries().count();
        });
        allocations += a;
    }
    (allocations, delivered)
}

/// The room allocates per encode (the codec's scratch and one shared
/// `Arc<[u8]>`), never per listener: 10,000 listeners cost the same
/// allocations as 10.
#[test]
fn a_room_tick_allocates_per_encode_not_per_listener() {
    let (few, delivered_few) = room_allocations(10);
    let (many, delivered_many) = room_allocations(10_000);
    assert!(
        delivered_few >= 1_900 && delivered_many >= 1_900_000,
        "{delivered_few} / {delivered_many} deliveries"
    );
    assert!(
        many <= few + few / 50,
        "10 listeners: {few} allocations; 10,000 listeners: {many}"
    );
}

thread_local! {
    static BEFORE_CALL: Cell<u64> = const { Cell::new(0) };
    static AUDIO_PACKETS: Cell<u64> = const { Cell::new(0) };
    static AUDIO_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// RTP, not RTCP (RFC 5761 §4: RTCP packet types 192–223 in the second byte).
fn is_rtp(datagram: &[u8]) -> bool {
    matches!(datagram, [0x80..=0xbf, pt, ..] if !(192..=223).contains(pt))
}

/// The fan-out hot path allocates nothing: every `poll_output` call that
/// hands out an audio packet (program to listeners, RED to listeners who
/// offered it, mix-minus to bridge talkers) is counted on its own, over thousands of packets, and together
/// they allocate zero times. The engine's total per datagram (str0m's
/// receive path, RTCP, the codec) is printed for the record.
#[test]
fn forwarding_audio_allocates_nothing() {
    let mut sim = sim::Sim::new(1);
    sim.join_with_tone("rally", SessionKind::Publish, 440.0);
    for _ in 0..40 {
        sim.join("rally", SessionKind::Listen);
    }
    for _ in 0..10 {
        sim.join_offering_red("rally", SessionKind::Listen);
    }
    for freq in [440.0, 660.0, 880.0] {
        sim.join_with_tone("bridge", SessionKind::Join, freq);
    }
    sim.run_for(Duration::from_secs(2));
    let out_before = sim.engine.stats().datagrams_out;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    sim.engine_enter = || {
        BEFORE_CALL.set(ALLOCATIONS.load(Ordering::Relaxed));
        COUNTING.with(|c| c.set(true));
    };
    sim.engine_exit = || COUNTING.with(|c| c.set(false));
    sim.engine_polled = |out, datagram| {
        if matches!(out, Output::Transmit(_)) && is_rtp(datagram) {
            AUDIO_PACKETS.set(AUDIO_PACKETS.get() + 1);
            let during = ALLOCATIONS.load(Ordering::Relaxed) - BEFORE_CALL.get();
            AUDIO_ALLOCATIONS.set(AUDIO_ALLOCATIONS.get() + during);
        }
    };
    sim.run_for(Duration::from_secs(2));
    sim.engine_enter = || {};
    sim.engine_polled = |_, _| {};
    let total = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let datagrams = sim.engine.stats().datagrams_out - out_before;
    let packets = AUDIO_PACKETS.get();
    // 50 listeners and 3 talkers, 50 packets a second each, for 2 s.
    assert!(packets > 5_000, "{packets} audio packets in 2 s");
    assert_eq!(
        AUDIO_ALLOCATIONS.get(),
        0,
        "allocations while forwarding {packets} audio packets"
    );
    let per = total as f64 / datagrams as f64;
    println!(
        "engine: {packets} audio packets forwarded with 0 allocations; \
         {per:.2} allocations per datagram out overall ({total} / {datagrams}: \
         talkers' SRTP in, decode, encode, RTCP)"
    );
}
