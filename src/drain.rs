//! Graceful drain: what SIGTERM does to a node in the middle of a rally.
//!
//! A rolling restart or a scale-down must not cut off 50,000 listeners. So
//! the first SIGINT/SIGTERM does not stop the server; it drains it:
//! 1. new sessions are refused with 503 and a short `Retry-After`
//!    ([`MediaError::Draining`]) and `GET /readyz` answers 503, so a load
//!    balancer sends new clients to other nodes ([`DrainableMedia`]);
//! 2. the sessions already open go on, with their audio, until the last one
//!    ends, the drain deadline passes, or a second signal comes
//!    ([`wait_for_sessions`]);
//! 3. then the binary records the sessions still open as left with reason
//!    `server_shutdown`, closes their rooms, and exits 0 (`main.rs`).
//!
//! The refusal is here, in front of the media driver, rather than in the
//! HTTP layer: every way to open a session (WHIP, WHEP, `/join`, PIN join)
//! goes through [`MediaControl::open_session`], so none can slip past.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sabha_signaling::{Hub, MediaControl, MediaError, MediaEvent, OpenSession, OpenedSession};
use tokio::sync::broadcast;

/// How often a drain looks whether the last session has gone.
const POLL: Duration = Duration::from_millis(100);

/// The media driver, refusing new sessions once [`DrainableMedia::drain`]
/// was called. Everything else (closing, muting, events) passes through.
pub struct DrainableMedia {
    inner: Arc<dyn MediaControl>,
    draining: AtomicBool,
}

impl DrainableMedia {
    pub fn new(inner: Arc<dyn MediaControl>) -> Self {
        Self {
            inner,
            draining: AtomicBool::new(false),
        }
    }

    /// From now on, new sessions are refused. Idempotent.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl MediaControl for DrainableMedia {
    async fn open_session(&self, request: OpenSession) -> Result<OpenedSession, MediaError> {
        if !self.accepting() {
            return Err(MediaError::Draining);
        }
        self.inner.open_session(request).await
    }

    async fn close_session(&self, session: &str) -> Result<bool, MediaError> {
        self.inner.close_session(session).await
    }

    async fn close_room(&self, room: &str) -> Result<(), MediaError> {
        self.inner.close_room(room).await
    }

    async fn set_muted(&self, session: &str, muted: bool) -> Result<bool, MediaError> {
        self.inner.set_muted(session, muted).await
    }

    fn subscribe(&self) -> broadcast::Receiver<MediaEvent> {
        self.inner.subscribe()
    }

    fn accepting(&self) -> bool {
        !self.draining.load(Ordering::SeqCst) && self.inner.accepting()
    }
}

/// Why [`wait_for_sessions`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainEnd {
    /// Every session ended on its own.
    Empty,
    /// The deadline passed with sessions still open.
    Deadline,
    /// Another signal came: the operator wants it to stop now.
    Interrupted,
}

/// Waits until `hub` has no live session, `deadline` passes, or
/// `interrupt` resolves, whichever is first.
pub async fn wait_for_sessions(
    hub: &Hub,
    deadline: Duration,
    interrupt: impl Future<Output = ()>,
) -> DrainEnd {
    let empty = async {
        while hub.session_count() > 0 {
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::select! {
        () = empty => DrainEnd::Empty,
        () = tokio::time::sleep(deadline) => DrainEnd::Deadline,
        () = interrupt => DrainEnd::Interrupted,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use sabha_signaling::{ListenProfile, Participant, Role, RoomKind, SessionKind};

    use super::*;

    /// Opens every session it is asked for; records what it was asked.
    #[derive(Default)]
    struct Recorder {
        opened: Mutex<Vec<String>>,
        closed_rooms: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl MediaControl for Recorder {
        async fn open_session(&self, r: OpenSession) -> Result<OpenedSession, MediaError> {
            self.opened.lock().unwrap().push(r.room.clone());
            Ok(OpenedSession {
                session: format!("s-{}", r.room),
                answer: "v=0\r\n".into(),
            })
        }
        async fn close_session(&self, _: &str) -> Result<bool, MediaError> {
            Ok(true)
        }
        async fn close_room(&self, room: &str) -> Result<(), MediaError> {
            self.closed_rooms.lock().unwrap().push(room.to_owned());
            Ok(())
        }
        async fn set_muted(&self, _: &str, _: bool) -> Result<bool, MediaError> {
            Ok(true)
        }
        fn subscribe(&self) -> broadcast::Receiver<MediaEvent> {
            broadcast::channel(1).1
        }
    }

    fn request(room: &str) -> OpenSession {
        OpenSession {
            room: room.into(),
            room_kind: RoomKind::Rally,
            kind: SessionKind::Listen,
            offer: "v=0\r\n".into(),
            name: None,
            role: Role::Listener,
            profile: ListenProfile::Standard,
        }
    }

    fn listener(id: &str) -> Participant {
        Participant {
            id: id.into(),
            name: None,
            role: Role::Listener,
            kind: SessionKind::Listen,
            muted: false,
            speaking: false,
            hand_raised: false,
            on_stage: false,
        }
    }

    #[tokio::test]
    async fn a_draining_node_refuses_new_sessions_and_passes_the_rest_through() {
        let inner = Arc::new(Recorder::default());
        let media = DrainableMedia::new(inner.clone());
        assert!(media.accepting());
        media.open_session(request("a")).await.unwrap();

        media.drain();
        assert!(!media.accepting());
        assert_eq!(
            media.open_session(request("b")).await.unwrap_err(),
            MediaError::Draining
        );
        assert_eq!(
            *inner.opened.lock().unwrap(),
            ["a"],
            "b never reached media"
        );
        // Ending what is open still works while draining.
        media.close_room("a").await.unwrap();
        assert_eq!(*inner.closed_rooms.lock().unwrap(), ["a"]);
        assert!(media.close_session("s-a").await.unwrap());
        assert!(media.set_muted("s-a", true).await.unwrap());
    }

    #[tokio::test]
    async fn the_wait_ends_when_the_last_session_leaves() {
        let hub = Hub::default();
        hub.join("r", listener("s1")).unwrap();
        hub.join("r", listener("s2")).unwrap();
        let leaver = hub.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            leaver.leave("s1", "left");
            tokio::time::sleep(Duration::from_millis(150)).await;
            leaver.leave("s2", "left");
        });
        let started = Instant::now();
        let end = wait_for_sessions(&hub, Duration::from_secs(30), std::future::pending()).await;
        assert_eq!(end, DrainEnd::Empty);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "{took:?}: both left first"
        );
        assert!(took < Duration::from_secs(10), "{took:?}: not the deadline");
    }

    #[tokio::test]
    async fn the_wait_ends_at_the_deadline_or_a_second_signal() {
        let hub = Hub::default();
        hub.join("r", listener("s1")).unwrap();
        let end = wait_for_sessions(&hub, Duration::from_millis(200), std::future::pending()).await;
        assert_eq!(end, DrainEnd::Deadline);
        assert_eq!(hub.session_count(), 1, "the wait closes nothing itself");

        let end = wait_for_sessions(&hub, Duration::from_secs(30), async {}).await;
        assert_eq!(end, DrainEnd::Interrupted);
    }

    #[tokio::test]
    async fn an_empty_node_drains_at_once() {
        let hub = Hub::default();
        let started = Instant::now();
        let end = wait_for_sessions(&hub, Duration::from_secs(30), std::future::pending()).await;
        assert_eq!(end, DrainEnd::Empty);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
