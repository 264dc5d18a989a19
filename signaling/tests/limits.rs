//! Router tests of the per-IP rate limits on session creation and minting
//! (`crate::throttle`).

mod fakes;

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Request, header};
use sabha_signaling::{Auth, OperatorKey, Rate, RequestLimits, Settings, router};
use serde_json::json;
use tower::ServiceExt;

const KEY: &str = "sk_test_operator_key_0123456789";

fn app(limits: RequestLimits) -> Router {
    let auth = Auth::new(b"test secret, 32 bytes long......", OperatorKey::new(KEY));
    let settings = Settings {
        request_limits: limits,
        ..Settings::default()
    };
    router(fakes::app_state(auth, settings))
}

fn tight() -> RequestLimits {
    let rate = Rate {
        burst: 2,
        per_second: 0.5,
    };
    RequestLimits {
        sessions: rate,
        minting: rate,
    }
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

async fn send(app: &Router, ip: [u8; 4], request: Request<Body>) -> Reply {
    let response = app
        .clone()
        .layer(MockConnectInfo(SocketAddr::from((ip, 40000))))
        .oneshot(request)
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: axum::body::to_bytes(body, 1 << 20).await.unwrap(),
    }
}

fn post(uri: &str, ctype: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, ctype)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn assert_too_many(reply: &Reply) {
    assert_eq!(
        reply.status,
        429,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let retry: u64 = reply.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // One token at 0.5/s: two seconds.
    assert_eq!(retry, 2);
    let problem: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(problem["status"], 429);
}

#[tokio::test]
async fn session_routes_are_limited_per_ip_with_429_and_retry_after() {
    let app = app(tight());
    // The three session routes share one bucket per IP; the limit applies
    // before auth, so unauthenticated floods are bounded too.
    let a = [198, 51, 100, 7];
    let first = send(&app, a, post("/v1/rooms/r1/whip", "application/sdp", "v=0")).await;
    assert_eq!(first.status, 401);
    let second = send(&app, a, post("/v1/rooms/r1/whep", "application/sdp", "v=0")).await;
    assert_eq!(second.status, 401);
    let third = send(&app, a, post("/v1/rooms/r1/join", "application/sdp", "v=0")).await;
    assert_too_many(&third);
    // Another IP is unaffected.
    let b = [198, 51, 100, 8];
    let other = send(&app, b, post("/v1/rooms/r1/whep", "application/sdp", "v=0")).await;
    assert_eq!(other.status, 401);
    // Minting has its own bucket: the limited IP may still mint.
    let mint = send(
        &app,
        a,
        post("/v1/rooms/r1/tokens", "application/json", "{}"),
    )
    .await;
    assert_eq!(mint.status, 401);
}

#[tokio::test]
async fn minting_routes_are_limited_per_ip_and_reads_are_not() {
    let app = app(tight());
    let a = [198, 51, 100, 9];
    let bearer = |r: Request<Body>| {
        let (mut parts, body) = r.into_parts();
        parts.headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {KEY}").parse().unwrap(),
        );
        Request::from_parts(parts, body)
    };
    // GET /v1/keys shares a method router with POST /v1/keys but is a
    // read: never limited.
    for _ in 0..5 {
        let list = send(
            &app,
            a,
            bearer(Request::get("/v1/keys").body(Body::empty()).unwrap()),
        )
        .await;
        assert_eq!(list.status, 200);
    }
    let body = json!({"unit": null, "name": "ci"}).to_string();
    let r1 = send(&app, a, bearer(post("/v1/pins", "application/json", "{}"))).await;
    assert_ne!(r1.status, 429);
    let r2 = send(&app, a, bearer(post("/v1/keys", "application/json", &body))).await;
    assert_ne!(r2.status, 429);
    let r3 = send(
        &app,
        a,
        bearer(
            Request::get("/v1/rooms/r1/invite")
                .body(Body::empty())
                .unwrap(),
        ),
    )
    .await;
    assert_too_many(&r3);
    let r4 = send(
        &app,
        a,
        bearer(post("/v1/rooms/r1/tokens", "application/json", "{}")),
    )
    .await;
    assert_too_many(&r4);
    let other = send(
        &app,
        [198, 51, 100, 10],
        bearer(post("/v1/rooms/r1/tokens", "application/json", "{}")),
    )
    .await;
    assert_ne!(other.status, 429);
}
