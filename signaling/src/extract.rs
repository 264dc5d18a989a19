//! Body extractors whose rejections are [`ApiError`]s, not axum's plain text.
//!
//! axum's `Json` answers bad input with `text/plain`; clients of this API
//! parse one error shape, so [`JsonBody`] wraps it and maps each rejection by
//! its status (400 syntax, 422 content, 415 media type, 413 size).
//! [`SdpBody`] is the WHIP/WHEP body: exactly `application/sdp`, UTF-8, and
//! not empty. Size is bounded for both by the router's `DefaultBodyLimit`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// The media type of WHIP/WHEP offers and answers (RFC 9725).
pub const APPLICATION_SDP: &str = "application/sdp";

/// A JSON request body (`Content-Type: application/json`).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType("application/json"),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(rejection.body_text()),
        _ => ApiError::BadRequest(rejection.body_text()),
    }
}

/// An SDP offer (`Content-Type: application/sdp`).
#[derive(Debug)]
pub struct SdpBody(pub String);

impl<S: Send + Sync> FromRequest<S> for SdpBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_media_type(request.headers(), APPLICATION_SDP) {
            return Err(ApiError::UnsupportedMediaType(APPLICATION_SDP));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| bytes_rejection(&rejection))?;
        let offer = String::from_utf8(bytes.into())
            .map_err(|_| ApiError::BadRequest("the SDP offer is not UTF-8".to_owned()))?;
        if offer.trim().is_empty() {
            return Err(ApiError::BadRequest("the SDP offer is empty".to_owned()));
        }
        Ok(Self(offer))
    }
}

fn bytes_rejection(rejection: &BytesRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::BadRequest(rejection.body_text()),
    }
}

/// Whether `Content-Type` is `expected`, ignoring parameters and case
/// (`application/SDP; charset=utf-8` is `application/sdp`).
pub(crate) fn has_media_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(expected))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::HeaderValue;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Thing {
        name: String,
    }

    fn request(content_type: Option<&str>, body: impl Into<Body>) -> Request {
        let mut builder = Request::builder().method("POST").uri("/");
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        builder.body(body.into()).unwrap()
    }

    async fn json(ct: Option<&str>, body: &'static str) -> Result<JsonBody<Thing>, ApiError> {
        JsonBody::<Thing>::from_request(request(ct, body), &()).await
    }

    async fn sdp(ct: Option<&str>, body: impl Into<Body>) -> Result<SdpBody, ApiError> {
        SdpBody::from_request(request(ct, body), &()).await
    }

    #[test]
    fn media_types() {
        let mut headers = HeaderMap::new();
        assert!(!has_media_type(&headers, APPLICATION_SDP));
        for (value, ok) in [
            ("application/sdp", true),
            ("Application/SDP; charset=utf-8", true),
            ("application/sdp+xml", false),
            ("text/plain", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(has_media_type(&headers, APPLICATION_SDP), ok, "{value}");
        }
    }

    #[tokio::test]
    async fn json_rejections_map_to_statuses() {
        let ct = Some("application/json");
        assert!(json(ct, r#"{"name":"a"}"#).await.is_ok());
        assert_eq!(json(ct, "{not json").await.unwrap_err().status(), 400);
        assert_eq!(
            json(ct, r#"{"name":"a","x":1}"#)
                .await
                .unwrap_err()
                .status(),
            422
        );
        assert_eq!(json(ct, r#"{"name":3}"#).await.unwrap_err().status(), 422);
        assert_eq!(
            json(None, r#"{"name":"a"}"#).await.unwrap_err().status(),
            415
        );
        assert_eq!(
            json(Some("text/plain"), r#"{"name":"a"}"#)
                .await
                .unwrap_err()
                .status(),
            415
        );
    }

    #[tokio::test]
    async fn unknown_field_detail_names_the_field() {
        let err = json(Some("application/json"), r#"{"name":"a","colour":1}"#)
            .await
            .unwrap_err();
        assert!(err.detail().contains("colour"), "{}", err.detail());
    }

    #[tokio::test]
    async fn sdp_body() {
        let SdpBody(offer) = sdp(Some("application/sdp"), "v=0\r\n").await.unwrap();
        assert_eq!(offer, "v=0\r\n");
        assert_eq!(sdp(None, "v=0").await.unwrap_err().status(), 415);
        assert_eq!(
            sdp(Some("application/json"), "v=0")
                .await
                .unwrap_err()
                .status(),
            415
        );
        assert_eq!(
            sdp(Some("application/sdp"), "  ")
                .await
                .unwrap_err()
                .status(),
            400
        );
        let not_utf8 = sdp(Some("application/sdp"), vec![0xff, 0xfe])
            .await
            .unwrap_err();
        assert_eq!(not_utf8.status(), 400);
    }
}
