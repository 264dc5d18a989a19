//! Errors at the HTTP edge, rendered as `application/problem+json` (RFC 9457).
//!
//! Every handler and extractor fails with one [`ApiError`]; the modules below
//! keep their own small error enums ([`MediaError`], [`StoreError`],
//! [`AuthError`]) and this is the one place that turns them into a status,
//! a body and the headers a client needs to act (`WWW-Authenticate`,
//! `Retry-After`, `Allow`). Problem `type` is always `about:blank`, so the
//! `title` is the status phrase and the `detail` says what to fix.
//!
//! Client input never yields a 5xx, and 5xx bodies never carry internals:
//! store and internal errors are logged here and answered generically.
//! [`normalize`] rewrites the few plain-text errors axum produces on its own
//! (405 from routing, extractor rejections we did not wrap) into the same shape.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::auth::AuthError;
use crate::backend::{MediaError, StoreError};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client should wait before retrying when the server is full.
pub const RETRY_AFTER_SECS: u32 = 5;

/// `Retry-After` of a refusal by a draining server: short, because the
/// client should go to another node (through the load balancer) at once.
pub const DRAIN_RETRY_AFTER_SECS: u32 = 2;

/// Why a request failed, in the terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such room, session or route; the `&str` names which.
    #[error("no such {0}")]
    NotFound(&'static str),
    /// No usable credentials: answered with `WWW-Authenticate: Bearer`.
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// Valid credentials that do not allow this request.
    #[error("{0}")]
    Forbidden(String),
    /// The body has the wrong media type; the `&str` is the expected one.
    #[error("expected Content-Type: {0}")]
    UnsupportedMediaType(&'static str),
    /// The body is not well-formed (JSON syntax, SDP not UTF-8, ...).
    #[error("{0}")]
    BadRequest(String),
    /// The body is well-formed but its content is invalid (unknown field,
    /// empty name, TTL out of range).
    #[error("{0}")]
    Unprocessable(String),
    #[error(
        "the request body is too large: at most {limit} bytes ({org} for PUT /v1/org)",
        limit = crate::BODY_LIMIT,
        org = crate::org::ORG_BODY_LIMIT
    )]
    PayloadTooLarge,
    /// The method exists in HTTP but not on this resource; the `&str` is the
    /// `Allow` header.
    #[error("method not allowed; allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// The room is locked by its host: only hosts may open sessions.
    #[error("the room is locked: only hosts may join until it is unlocked")]
    Locked,
    /// The room's event has ended: no session opens in it any more.
    #[error("the room has ended")]
    Ended,
    /// The room's window has not opened yet (and the caller may not wait in
    /// its lobby).
    #[error("the room opens at {starts_at}; join from {opens_for_joining}")]
    TooEarly {
        starts_at: jiff::Timestamp,
        opens_for_joining: jiff::Timestamp,
    },
    /// A host of the new room is a host of another room at the same time.
    #[error("host {host:?} is already a host of room {room} from {start} to {end}")]
    HostConflict {
        host: String,
        room: String,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
    },
    /// The room holds as many sessions as its `capacity`.
    #[error("the room is at its capacity of {0} sessions")]
    RoomFull(u32),
    /// `POST /v1/pin-join` with a wrong room code or PIN: one answer for
    /// both, so a guesser learns nothing about which was wrong.
    #[error("the room code or PIN is wrong")]
    WrongPin,
    /// Rate limited or locked out; the value is `Retry-After` in seconds.
    #[error("too many attempts: try again in {0} seconds")]
    TooManyRequests(u64),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or an environment failure; the text is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of an error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// With `425 Too Early`: when the room's next window opens (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<jiff::Timestamp>,
    /// With `409 Conflict` on a host double-booking: the other room's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicting_room: Option<String>,
}

impl Problem {
    /// An `about:blank` problem: the title is the status phrase.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            starts_at: None,
            conflicting_room: None,
        }
    }

    /// The response: status, `Content-Type: application/problem+json`, body.
    pub fn into_response_with(self, status: StatusCode) -> Response {
        let body = serde_json::to_vec(&self).expect("a struct of strings serializes");
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Locked => StatusCode::LOCKED,
            Self::Ended => StatusCode::GONE,
            Self::TooEarly { .. } => StatusCode::TOO_EARLY,
            Self::HostConflict { .. } => StatusCode::CONFLICT,
            Self::RoomFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::WrongPin => StatusCode::UNAUTHORIZED,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Media(e) => media_status(e),
            Self::Store(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told. Internals stay in the log.
    pub fn detail(&self) -> String {
        match self {
            Self::Media(MediaError::NoOpus) => {
                "the offer has no Opus audio: offer an audio m-line with opus/48000/2".to_owned()
            }
            Self::Store(_) | Self::Internal(_) => {
                "the server could not complete the request; the cause is in its log".to_owned()
            }
            other => other.to_string(),
        }
    }

    fn extra_header(&self) -> Option<(header::HeaderName, HeaderValue)> {
        match self {
            Self::Unauthorized(e) => Some((header::WWW_AUTHENTICATE, e.challenge())),
            Self::Media(MediaError::AtCapacity) | Self::RoomFull(_) => {
                Some((header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS)))
            }
            Self::Media(MediaError::Draining) => Some((
                header::RETRY_AFTER,
                HeaderValue::from(DRAIN_RETRY_AFTER_SECS),
            )),
            Self::TooManyRequests(secs) => {
                Some((header::RETRY_AFTER, HeaderValue::from((*secs).max(1))))
            }
            Self::MethodNotAllowed(allow) => Some((header::ALLOW, HeaderValue::from_static(allow))),
            _ => None,
        }
    }
}

fn media_status(error: &MediaError) -> StatusCode {
    match error {
        MediaError::MalformedOffer(_) | MediaError::WrongDirection(_) => StatusCode::BAD_REQUEST,
        MediaError::NoOpus => StatusCode::NOT_ACCEPTABLE,
        MediaError::AtCapacity | MediaError::Unavailable | MediaError::Draining => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // A draining server refuses every new session on purpose: that is
        // not an error worth a log line per request.
        if status.is_server_error() && !matches!(self, Self::Media(MediaError::Draining)) {
            tracing::error!(error = %self, "request failed");
        }
        let mut problem = Problem::new(status, self.detail());
        match &self {
            Self::TooEarly { starts_at, .. } => problem.starts_at = Some(*starts_at),
            Self::HostConflict { room, .. } => problem.conflicting_room = Some(room.clone()),
            _ => {}
        }
        let mut response = problem.into_response_with(status);
        if let Some((name, value)) = self.extra_header() {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// Answers unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

/// Middleware: rewrites any error response that is not already problem+json
/// (axum's own 405, rejections from extractors we did not wrap) into one,
/// keeping its status and headers (`Allow`, CORS).
pub async fn normalize(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail = plain_detail(status, &String::from_utf8_lossy(&text));
    parts.headers.remove(header::CONTENT_LENGTH);
    let rewritten = Problem::new(status, detail).into_response_with(status);
    let (new_parts, new_body) = rewritten.into_parts();
    parts.headers.extend(new_parts.headers);
    Response::from_parts(parts, new_body)
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

/// A detail for a plain error body: its text for 4xx (it describes the
/// client's input), never for 5xx (it might describe ours).
fn plain_detail(status: StatusCode, text: &str) -> String {
    let text = text.trim();
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            "this method is not allowed on this resource; see the Allow header".to_owned()
        }
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge.to_string(),
        s if s.is_client_error() && !text.is_empty() => text.to_owned(),
        s if s.is_server_error() => ApiError::Internal(String::new()).detail(),
        s => s.canonical_reason().unwrap_or("error").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn render(error: ApiError) -> (StatusCode, axum::http::HeaderMap, Problem) {
        let response = error.into_response();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[test]
    fn statuses() {
        let cases: Vec<(ApiError, u16)> = vec![
            (ApiError::NotFound("room"), 404),
            (AuthError::Missing.into(), 401),
            (AuthError::Expired.into(), 401),
            (ApiError::Forbidden("no".into()), 403),
            (ApiError::UnsupportedMediaType("application/sdp"), 415),
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::Unprocessable("x".into()), 422),
            (ApiError::PayloadTooLarge, 413),
            (ApiError::MethodNotAllowed("DELETE"), 405),
            (ApiError::Locked, 423),
            (ApiError::Ended, 410),
            (MediaError::MalformedOffer("x".into()).into(), 400),
            (MediaError::NoOpus.into(), 406),
            (MediaError::WrongDirection("x".into()).into(), 400),
            (MediaError::AtCapacity.into(), 503),
            (MediaError::Unavailable.into(), 503),
            (MediaError::Draining.into(), 503),
            (StoreError("disk".into()).into(), 500),
            (ApiError::Internal("bug".into()), 500),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
        }
    }

    #[tokio::test]
    async fn body_is_problem_json() {
        let response = ApiError::NotFound("room").into_response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let (status, _, problem) = render(ApiError::NotFound("room")).await;
        assert_eq!(status, 404);
        assert_eq!(
            problem,
            Problem {
                kind: "about:blank".into(),
                title: "Not Found".into(),
                status: 404,
                detail: "no such room".into(),
                starts_at: None,
                conflicting_room: None,
            }
        );
    }

    #[tokio::test]
    async fn too_early_names_the_start() {
        let starts_at: jiff::Timestamp = "2026-12-07T12:30:00Z".parse().unwrap();
        let error = ApiError::TooEarly {
            starts_at,
            opens_for_joining: "2026-12-07T12:20:00Z".parse().unwrap(),
        };
        let (status, _, problem) = render(error).await;
        assert_eq!(status, 425);
        assert_eq!(problem.starts_at, Some(starts_at));
        assert!(
            problem.detail.contains("2026-12-07T12:30:00Z"),
            "{}",
            problem.detail
        );
    }

    #[tokio::test]
    async fn no_opus_says_so() {
        let (_, _, problem) = render(MediaError::NoOpus.into()).await;
        assert!(problem.detail.contains("the offer has no Opus audio"));
        assert_eq!(problem.title, "Not Acceptable");
    }

    #[tokio::test]
    async fn store_errors_hide_internals() {
        let (_, _, problem) = render(StoreError("/var/lib/sabha.db locked".into()).into()).await;
        assert!(!problem.detail.contains("sabha.db"), "{}", problem.detail);
        assert_eq!(problem.status, 500);
    }

    #[tokio::test]
    async fn unauthorized_challenges() {
        let (_, headers, _) = render(AuthError::Missing.into()).await;
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let (_, headers, _) = render(AuthError::Invalid.into()).await;
        let challenge = headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.contains("invalid_token"), "{challenge}");
    }

    #[tokio::test]
    async fn capacity_says_when_to_retry() {
        let (_, headers, _) = render(MediaError::AtCapacity.into()).await;
        assert_eq!(headers[header::RETRY_AFTER], "5");
        let (_, headers, _) = render(MediaError::Unavailable.into()).await;
        assert!(headers.get(header::RETRY_AFTER).is_none());
        let (_, headers, _) = render(MediaError::Draining.into()).await;
        assert_eq!(headers[header::RETRY_AFTER], "2");
    }

    #[tokio::test]
    async fn method_not_allowed_names_allowed_methods() {
        let (_, headers, _) = render(ApiError::MethodNotAllowed("DELETE")).await;
        assert_eq!(headers[header::ALLOW], "DELETE");
    }

    #[test]
    fn plain_details() {
        assert_eq!(
            plain_detail(StatusCode::BAD_REQUEST, " bad path \n"),
            "bad path"
        );
        assert_eq!(plain_detail(StatusCode::BAD_REQUEST, ""), "Bad Request");
        let hidden = plain_detail(StatusCode::INTERNAL_SERVER_ERROR, "panic at foo.rs:3");
        assert!(!hidden.contains("foo.rs"));
        assert!(
            plain_detail(StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded").contains("65536")
        );
    }
}
