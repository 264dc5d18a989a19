//! Any WebSocket text frame as a moderation command (`GET
//! /v1/rooms/{id}/events`, signaling/src/events.rs): serde_json must refuse
//! or accept it, never panic, and no nesting depth may overflow the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sabha_signaling::Command;

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = serde_json::from_slice::<Command>(data) {
        // A command that parsed is a plain value: printing it is total.
        let _ = format!("{command:?}");
    }
});
