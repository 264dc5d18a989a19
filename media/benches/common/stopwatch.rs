//! The stopwatch the fan-out benches put around every call into the
//! engine (the simulation's `engine_enter`/`engine_exit`/`engine_polled`
//! hooks): total engine time, and the time of the `poll_output` calls that
//! handed out an audio packet, with their count. Per thread, so the
//! simulated clients' own work is never counted.

use std::cell::Cell;
use std::time::Instant;

use sabha_media::Output;

use crate::sim;

thread_local! {
    static ENTERED: Cell<Option<Instant>> = const { Cell::new(None) };
    static LAST_CALL_NS: Cell<u64> = const { Cell::new(0) };
    static ENGINE_NS: Cell<u64> = const { Cell::new(0) };
    static AUDIO_NS: Cell<u64> = const { Cell::new(0) };
    static AUDIO_PACKETS: Cell<u64> = const { Cell::new(0) };
}

fn enter() {
    ENTERED.set(Some(Instant::now()));
}

fn exit() {
    if let Some(t) = ENTERED.take() {
        let ns = t.elapsed().as_nanos() as u64;
        LAST_CALL_NS.set(ns);
        ENGINE_NS.set(ENGINE_NS.get() + ns);
    }
}

fn polled(out: &Output, datagram: &[u8]) {
    if matches!(out, Output::Transmit(_)) && sim::is_rtp(datagram) {
        AUDIO_PACKETS.set(AUDIO_PACKETS.get() + 1);
        AUDIO_NS.set(AUDIO_NS.get() + LAST_CALL_NS.get());
    }
}

/// Times every engine call of `sim` from now on.
pub fn attach(sim: &mut sim::Sim) {
    sim.engine_enter = enter;
    sim.engine_exit = exit;
    sim.engine_polled = polled;
}

/// Starts counting from zero.
pub fn reset() {
    ENGINE_NS.set(0);
    AUDIO_NS.set(0);
    AUDIO_PACKETS.set(0);
}

/// Nanoseconds in every engine call since [`reset`].
pub fn engine_ns() -> u64 {
    ENGINE_NS.get()
}

/// Nanoseconds in the `poll_output` calls that handed out audio.
pub fn audio_ns() -> u64 {
    AUDIO_NS.get()
}

/// Audio packets handed out since [`reset`].
pub fn audio_packets() -> u64 {
    AUDIO_PACKETS.get()
}
