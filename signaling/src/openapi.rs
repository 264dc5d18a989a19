//! The OpenAPI 3.1 document of the API, served at `GET /v1/openapi.json`.
//!
//! Generated from code, never written by hand: each handler carries its
//! `#[utoipa::path]` (method, path, parameters, bodies, every status it can
//! answer) and each body type derives `utoipa::ToSchema`. The router
//! ([`crate::app::router`]) registers routes *through* those annotations
//! (`utoipa_axum::routes!`), so a route without documentation cannot be
//! added and the document cannot name a route the server does not have.
//! This module adds what no single handler knows: the title, version,
//! credentials scheme and tags.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The parts of the document that are not routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sabha",
        description = "Virtual rallies and audio bridges: rooms, WHIP/WHEP/join signaling, \
            moderation, the organisation, attendance and reach. Errors are \
            application/problem+json (RFC 9457). docs/http-api.md is the prose contract.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "rooms", description = "Operator: rooms, their schedule, and room tokens"),
        (name = "sessions", description = "WebRTC sessions: one SDP offer, one answer"),
        (name = "events", description = "Room events over a WebSocket"),
        (name = "moderation", description = "Hosts: the roster and room commands"),
        (name = "attendance", description = "Who was in a room, and which booths it reached"),
        (name = "organisation", description = "Operator: the hierarchy of units"),
        (name = "access", description = "Join links, PINs and PIN join for members and booths"),
        (name = "operators", description = "Operator API keys, each scoped to the organisation or a unit subtree"),
        (name = "health", description = "Liveness and metrics"),
    )
)]
struct Base;

/// `bearer`: the operator key or a room token, as `Authorization: Bearer`.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The operator key (operator routes; also host of every room) or a \
                         room token (JWT) that grants one role in one room.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document's skeleton, before the router adds the routes.
pub fn base() -> utoipa::openapi::OpenApi {
    let mut api = Base::openapi();
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    api
}

/// The finished document as JSON, rendered once when the router is built.
#[derive(Clone, Debug)]
pub struct Document(Arc<str>);

impl Document {
    pub fn new(api: &utoipa::openapi::OpenApi) -> Self {
        let json = api
            .to_json()
            .expect("an OpenAPI document of plain structs serializes");
        Self(json.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "health",
    summary = "This document",
    responses(
        (status = 200, description = "OpenAPI 3.1", body = Object, content_type = "application/json"),
    )
)]
pub async fn document(State(document): State<Document>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document.as_str().to_owned(),
    )
        .into_response()
}
