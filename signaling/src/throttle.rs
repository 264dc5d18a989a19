//! The HTTP side of [`crate::limits::RequestGuard`]: route layers that
//! refuse a client IP going faster than its bucket allows, before the
//! handler runs (so a flood costs neither a database query nor an ICE
//! agent). A refusal is `429` problem+json with `Retry-After`.
//!
//! The client IP is the TCP peer (`ConnectInfo`), as for `POST
//! /v1/pin-join`: no forwarding header is trusted, since a client could
//! write any address there. Behind a reverse proxy every client shares the
//! proxy's bucket; raise the limits there (see `docs/http-api.md`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::limits::{RequestClass, RequestGuard};
use crate::problem::ApiError;
use crate::redact::ClientIp;

/// The TCP peer's address; without `ConnectInfo` (a router served without
/// `into_make_service_with_connect_info`) every request shares one bucket,
/// which fails safe: limited, not unlimited.
/// (`MockConnectInfo` is honoured as the `ConnectInfo` extractor does.)
pub fn client_ip(request: &Request) -> IpAddr {
    let extensions = request.extensions();
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| extensions.get::<MockConnectInfo<SocketAddr>>().map(|c| c.0))
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip())
}

async fn limit(
    guard: &RequestGuard,
    class: RequestClass,
    request: Request,
    next: Next,
) -> Response {
    let ip = client_ip(&request);
    match guard.admit(class, ip, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let retry = refusal.retry_after_s();
            let kind = match class {
                RequestClass::Session => "session",
                RequestClass::Minting => "minting",
            };
            tracing::warn!(ip = %ClientIp(ip), class = kind, retry_after_s = retry, "request refused: rate limited");
            metrics::counter!("sabha_rate_limited_total", "class" => kind).increment(1);
            ApiError::TooManyRequests(retry).into_response()
        }
    }
}

/// Route layer for `whip`, `whep` and `join`.
pub async fn limit_sessions(
    State(guard): State<Arc<RequestGuard>>,
    request: Request,
    next: Next,
) -> Response {
    limit(&guard, RequestClass::Session, request, next).await
}

/// Route layer for the token-, PIN-, invite- and key-minting routes.
pub async fn limit_minting(
    State(guard): State<Arc<RequestGuard>>,
    request: Request,
    next: Next,
) -> Response {
    limit(&guard, RequestClass::Minting, request, next).await
}

/// [`limit_minting`] for `POST` only: for a method router that also serves
/// a read (`GET /v1/keys`), which stays unlimited.
pub async fn limit_minting_posts(
    State(guard): State<Arc<RequestGuard>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == axum::http::Method::POST {
        limit(&guard, RequestClass::Minting, request, next).await
    } else {
        next.run(request).await
    }
}
