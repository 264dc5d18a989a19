//! Which media thread a room lives on.
//!
//! Each media thread owns an engine of its own (no state shared with the
//! others, no lock on the packet path), so every session of a room must go
//! to the same thread: the room's mix is made there. A room is placed when
//! its first session is asked for, on the thread with the fewest sessions
//! then, and stays there while it has sessions; when the last one ends, the
//! place is forgotten and the room's next session places it afresh.
//!
//! Counting happens in two halves, so that no path can count a session
//! twice or not at all. The signaling side holds a [`Pending`] while it
//! waits for a thread to open a session (dropped on every outcome, a
//! cancelled HTTP request included). The media thread itself reports the
//! sessions it opened and closed ([`Placement::opened`],
//! [`Placement::closed`]), under the same lock, before it replies. A room is
//! forgotten only when it has neither.
//!
//! The lock is taken once per session opened or closed, never per packet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Rooms and their media threads, shared by the signaling side and every
/// media thread.
#[derive(Debug)]
pub struct Placement {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rooms: HashMap<String, Place>,
    /// Sessions open or being opened, per thread.
    load: Vec<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Place {
    thread: usize,
    open: usize,
    pending: usize,
}

/// A session being opened in `room` on `thread`; dropping it ends the wait.
#[derive(Debug)]
pub struct Pending {
    placement: Arc<Placement>,
    room: String,
    pub thread: usize,
}

impl Placement {
    pub fn new(threads: usize) -> Self {
        assert!(threads > 0, "at least one media thread");
        Self {
            state: Mutex::new(State {
                rooms: HashMap::new(),
                load: vec![0; threads],
            }),
        }
    }

    /// Places `room` if it is not placed yet and counts a session pending
    /// on its thread.
    pub fn reserve(self: &Arc<Self>, room: &str) -> Pending {
        let mut state = self.lock();
        let thread = match state.rooms.get_mut(room) {
            Some(place) => {
                place.pending += 1;
                place.thread
            }
            None => {
                let thread = state.least_loaded();
                let place = Place {
                    thread,
                    open: 0,
                    pending: 1,
                };
                state.rooms.insert(room.to_owned(), place);
                thread
            }
        };
        state.load[thread] += 1;
        Pending {
            placement: Arc::clone(self),
            room: room.to_owned(),
            thread,
        }
    }

    /// A media thread opened a session of `room` (while a [`Pending`] for it
    /// is held, so the room is placed).
    pub fn opened(&self, room: &str) {
        let mut state = self.lock();
        if let Some(place) = state.rooms.get_mut(room) {
            place.open += 1;
            let thread = place.thread;
            state.load[thread] += 1;
        }
    }

    /// A media thread's session of `room` ended.
    pub fn closed(&self, room: &str) {
        let mut state = self.lock();
        if let Some(place) = state.rooms.get_mut(room) {
            place.open = place.open.saturating_sub(1);
            let thread = place.thread;
            state.load[thread] = state.load[thread].saturating_sub(1);
            state.forget_if_unused(room);
        }
    }

    /// The thread `room` is on, if it has sessions.
    pub fn thread_of(&self, room: &str) -> Option<usize> {
        self.lock().rooms.get(room).map(|p| p.thread)
    }

    /// Sessions open or being opened on every thread.
    pub fn sessions(&self) -> usize {
        self.lock().load.iter().sum()
    }

    /// Sessions open or being opened, per thread.
    #[cfg(test)]
    fn load(&self) -> Vec<usize> {
        self.lock().load.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the counts whole, so a panic
        // elsewhere while one was held leaves nothing half-done.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// The thread with the fewest sessions; the lowest-numbered of equals.
    fn least_loaded(&self) -> usize {
        (0..self.load.len())
            .min_by_key(|&t| self.load[t])
            .unwrap_or(0)
    }

    fn forget_if_unused(&mut self, room: &str) {
        if self
            .rooms
            .get(room)
            .is_some_and(|p| p.open == 0 && p.pending == 0)
        {
            self.rooms.remove(room);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut state = self.placement.lock();
        if let Some(place) = state.rooms.get_mut(&self.room) {
            place.pending = place.pending.saturating_sub(1);
            state.load[self.thread] = state.load[self.thread].saturating_sub(1);
            state.forget_if_unused(&self.room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a media thread does when asked to open: count it, then the
    /// signaling side drops its `Pending`.
    fn open(placement: &Arc<Placement>, room: &str) -> usize {
        let pending = placement.reserve(room);
        placement.opened(room);
        pending.thread
    }

    #[test]
    fn a_room_goes_to_the_thread_with_the_fewest_sessions_and_stays_there() {
        let placement = Arc::new(Placement::new(2));
        assert_eq!(open(&placement, "a"), 0);
        assert_eq!(open(&placement, "b"), 1);
        // Both have one: the first of equals.
        assert_eq!(open(&placement, "c"), 0);
        // "a" stays on 0 although 0 is now the busier thread.
        assert_eq!(open(&placement, "a"), 0);
        assert_eq!(placement.load(), vec![3, 1]);
        assert_eq!(open(&placement, "d"), 1);
        assert_eq!(placement.sessions(), 5);
    }

    #[test]
    fn a_room_is_forgotten_with_its_last_session_and_placed_afresh() {
        let placement = Arc::new(Placement::new(2));
        open(&placement, "a");
        open(&placement, "a");
        open(&placement, "b");
        open(&placement, "b");
        open(&placement, "c"); // thread 0, with "a"
        placement.closed("a");
        assert_eq!(placement.thread_of("a"), Some(0));
        placement.closed("a");
        assert_eq!(placement.thread_of("a"), None);
        assert_eq!(placement.load(), vec![1, 2]);
        // Placed afresh: thread 0 has fewer sessions now.
        assert_eq!(open(&placement, "a"), 0);
    }

    #[test]
    fn an_open_that_failed_or_was_abandoned_counts_nothing() {
        let placement = Arc::new(Placement::new(2));
        // Refused by the engine (a malformed offer): no `opened`.
        drop(placement.reserve("a"));
        assert_eq!(placement.thread_of("a"), None);
        assert_eq!(placement.sessions(), 0);
        // A second session waits while the first is being opened: one place.
        let first = placement.reserve("b");
        let second = placement.reserve("b");
        assert_eq!(first.thread, second.thread);
        placement.opened("b");
        drop(first);
        drop(second);
        assert_eq!(placement.sessions(), 1);
        placement.closed("b");
        assert_eq!(placement.sessions(), 0);
        assert_eq!(placement.thread_of("b"), None);
    }

    #[test]
    fn a_close_of_an_unknown_room_changes_nothing() {
        let placement = Arc::new(Placement::new(1));
        open(&placement, "a");
        placement.closed("nowhere");
        assert_eq!(placement.sessions(), 1);
    }
}
