//! Log hygiene: what a failed PIN join, a forged token and a rate-limited
//! request leave in the log must not name the client's IP, the PIN or the
//! token it sent. Its own test binary: tracing caches which call sites are
//! enabled, so other tests running alongside without a subscriber could
//! hide lines from this one.

mod fakes;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, header};
use fakes::{FakeMedia, FakeMembers, FakeOrg, FakeStore};
use sabha_signaling::{AppState, Auth, OperatorKey, PinKey, Rate, RequestLimits, Settings, router};
use serde_json::json;
use tower::ServiceExt;

const KEY: &str = "sk_test_operator_key_0123456789";

/// A router whose session bucket holds two requests per IP.
fn app() -> Router {
    let store = Arc::new(FakeStore::default());
    let rate = Rate {
        burst: 2,
        per_second: 0.5,
    };
    router(AppState {
        media: Arc::new(FakeMedia::default()),
        rooms: store.clone(),
        attendance: store,
        org: Arc::new(FakeOrg::default()),
        auth: Auth::new(b"test secret, 32 bytes long......", OperatorKey::new(KEY)),
        metrics: Arc::new(String::new),
        cors: Default::default(),
        settings: Settings {
            request_limits: RequestLimits {
                sessions: rate,
                minting: rate,
            },
            ..Settings::default()
        },
        members: Arc::new(FakeMembers::default()),
        pin_key: PinKey::derive(b"test pin key"),
        events: Arc::new(sabha_signaling::webhooks::Discard),
        keys: Arc::new(fakes::FakeKeys::default()),
    })
}

async fn send(app: &Router, ip: [u8; 4], request: Request<Body>) -> u16 {
    app.clone()
        .layer(MockConnectInfo(SocketAddr::from((ip, 40000))))
        .oneshot(request)
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[tokio::test]
async fn logs_of_failed_pin_joins_bad_tokens_and_refusals_name_no_ip_pin_or_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = app();
    let ip = [203, 0, 113, 77];
    // A wrong PIN.
    let pin = "834571";
    let status = send(
        &app,
        ip,
        Request::post("/v1/pin-join")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"room_code": "12345678", "pin": pin}).to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    // A forged room token, in the header and in the query.
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJyb29tIjoicjEiLCJyb2xlIjoiaG9zdCJ9.Zm9yZ2VkU2lnbmF0dXJl";
    let status = send(
        &app,
        ip,
        Request::get(format!("/v1/rooms/r1/summary?token={token}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    // Session creations until refused.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let status = send(
            &app,
            ip,
            Request::post("/v1/rooms/r1/whep")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/sdp")
                .body(Body::from("v=0"))
                .unwrap(),
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(statuses, [401, 401, 429]);

    let logs = captured.text();
    // The test fails if nothing is logged at all: the lines are there,
    // only redacted.
    assert!(logs.contains("PIN join failed"), "{logs}");
    assert!(logs.contains("rate limited"), "{logs}");
    assert!(logs.contains("203.0.113.0/24"), "{logs}");
    assert!(!logs.contains("203.0.113.77"), "{logs}");
    assert!(!logs.contains(pin), "{logs}");
    assert!(!logs.contains("Zm9yZ2VkU2lnbmF0dXJl"), "{logs}");
    assert!(!logs.contains(KEY), "{logs}");
}
