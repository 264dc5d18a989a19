//! PINs: how a worker on a cheap phone joins with two numbers — the room
//! code and a 6-digit PIN — instead of a link.
//!
//! `POST /v1/pins` (operator) issues (rotates) personal PINs for the
//! members and/or unit PINs for the units of a subtree and returns them
//! once. Only HMAC-SHA256(key, PIN) is stored: a 6-digit PIN resists no
//! offline search whatever the hash, so the server-side key is the
//! protection, and since the HMAC is deterministic it is also the index
//! that makes a join one lookup. PINs are unique across all members and
//! units.
//!
//! `POST /v1/pin-join` (no auth) turns a room code and a PIN into a room
//! token, after the brute-force checks of [`crate::limits`]. A wrong code
//! and a wrong PIN get the same 401.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{ConnectInfo, State};

use crate::redact::ClientIp;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::app::AppState;
use crate::auth::Operator;
use crate::backend::{Role, Room, RoomKind};
use crate::extract::JsonBody;
use crate::ids::is_room_code;
use crate::limits::{PinGuard, Refusal};
use crate::members::{Member, PinOwner};
use crate::org::subtree;
use crate::problem::ApiError;
use crate::rooms::{DEFAULT_TTL_S, MAX_TTL_S};
use crate::timestamp::{rfc3339, unix_now};
use crate::token::Claims;

/// PINs in use at most: half the 6-digit space, so a fresh one is found
/// in a couple of draws.
pub const MAX_PINS: usize = 500_000;
/// How long past a scheduled room's end a member's token still works.
pub const END_MARGIN_S: u64 = 3600;

/// The key PINs are hashed with. Its `Debug` does not print it.
#[derive(Clone)]
pub struct PinKey(Arc<[u8; 32]>);

impl std::fmt::Debug for PinKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinKey(<redacted>)")
    }
}

impl PinKey {
    /// A key of its own derived from the server secret (HMAC with a fixed
    /// label), so that PIN hashes and token signatures never share a key.
    pub fn derive(server_secret: &[u8]) -> Self {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(server_secret).expect("HMAC takes a key of any length");
        mac.update(b"sabha pin lookup v1");
        Self(Arc::new(mac.finalize().into_bytes().into()))
    }

    /// The stored form and lookup key of `pin`: hex HMAC-SHA256.
    pub fn hash(&self, pin: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0[..]).expect("HMAC takes a key of any length");
        mac.update(pin.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Whether `pin` looks like a PIN: exactly 6 ASCII digits.
pub fn is_pin(pin: &str) -> bool {
    pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit())
}

/// `POST /v1/pins` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    pub unit: String,
    /// PINs for the subtree's members (default true).
    #[serde(default = "yes")]
    pub members: bool,
    /// PINs for the subtree's units (default false).
    #[serde(default)]
    pub units: bool,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("room_code", &self.room_code)
            .field("pin", &"…")
            .finish()
    }
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined")
            .field("token", &crate::redact::Token(&self.token))
            .field("room", &self.room)
            .field("role", &self.role)
            .field("name", &self.name)
            .field("member", &self.member)
            .field("unit", &self.unit)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl std::fmt::Debug for IssuedPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedPin")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("name", &self.name)
            .field("unit", &self.unit)
            .field("phone", &self.phone)
            .field("pin", &"…")
            .finish()
    }
}

fn yes() -> bool {
    true
}

/// One issued PIN, shown once. `Debug` hides the PIN.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedPin {
    /// `member` or `unit`.
    pub kind: String,
    pub id: String,
    pub name: String,
    /// The member's unit, or the unit itself.
    pub unit: String,
    pub phone: Option<String>,
    pub pin: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Issued {
    pub pins: Vec<IssuedPin>,
}

/// Whether the request asks for CSV (`Accept: text/csv`).
pub(crate) fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("text/csv"))
}

/// A CSV response (never cached: it may hold PINs or tokens).
pub(crate) fn csv_response(rows: Vec<Vec<String>>) -> Result<Response, ApiError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer
            .write_record(&row)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    let body = writer
        .into_inner()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response())
}

/// `POST /v1/pins`: new PINs for the members and/or units under `unit`.
#[utoipa::path(
    post,
    path = "/v1/pins",
    tag = "access",
    summary = "Issue (rotate) PINs for the members and/or units of a subtree; shown once",
    security(("bearer" = [])),
    request_body(content = IssueRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The PINs, JSON or CSV (Accept: text/csv)", body = Issued),
        (status = 400, description = "malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "wrong Content-Type", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn issue(
    State(state): State<AppState>,
    operator: Operator,
    headers: HeaderMap,
    JsonBody(request): JsonBody<IssueRequest>,
) -> Result<Response, ApiError> {
    if !operator
        .scope
        .covers_unit(&*state.org, Some(&request.unit))
        .await?
    {
        return Err(ApiError::Forbidden(format!(
            "unit {:?} is outside this key's scope",
            request.unit
        )));
    }
    if !request.members && !request.units {
        return Err(ApiError::Unprocessable(
            "ask for member PINs, unit PINs or both".into(),
        ));
    }
    let units = state.org.units().await?;
    let under = subtree(&units, &request.unit);
    if under.is_empty() {
        return Err(ApiError::Unprocessable(format!(
            "no unit {:?} in the organisation",
            request.unit
        )));
    }
    let mut targets: Vec<(PinOwner, IssuedPin)> = Vec::new();
    if request.units {
        for u in units.iter().filter(|u| under.contains(&u.id)) {
            targets.push((
                PinOwner::Unit(u.id.clone()),
                issued("unit", &u.id, &u.name, &u.id, None),
            ));
        }
    }
    if request.members {
        for m in state.members.members().await? {
            if under.contains(&m.unit) {
                targets.push((
                    PinOwner::Member(m.id.clone()),
                    issued("member", &m.id, &m.name, &m.unit, m.phone.clone()),
                ));
            }
        }
    }
    let owners: HashSet<&PinOwner> = targets.iter().map(|(o, _)| o).collect();
    let mut taken: HashSet<String> = state
        .members
        .pin_hashes()
        .await?
        .into_iter()
        .filter(|(_, owner)| !owners.contains(owner))
        .map(|(hash, _)| hash)
        .collect();
    if taken.len() + targets.len() > MAX_PINS {
        return Err(ApiError::Unprocessable(format!(
            "at most {MAX_PINS} PINs can be in use at once"
        )));
    }
    let mut rows = Vec::with_capacity(targets.len());
    {
        let mut rng = rand::rng();
        for (owner, shown) in &mut targets {
            let (pin, hash) = loop {
                let pin = format!("{:06}", rng.random_range(0..1_000_000u32));
                let hash = state.pin_key.hash(&pin);
                if !taken.contains(&hash) {
                    break (pin, hash);
                }
            };
            taken.insert(hash.clone());
            shown.pin = pin;
            rows.push((owner.clone(), hash));
        }
    }
    state.members.replace_pins(&rows).await?;
    tracing::info!(unit = %request.unit, pins = rows.len(), "PINs issued");
    let pins: Vec<IssuedPin> = targets.into_iter().map(|(_, shown)| shown).collect();
    if wants_csv(&headers) {
        let mut out = vec![
            ["kind", "id", "name", "unit", "phone", "pin"]
                .map(String::from)
                .to_vec(),
        ];
        out.extend(pins.into_iter().map(|p| {
            vec![
                p.kind,
                p.id,
                p.name,
                p.unit,
                p.phone.unwrap_or_default(),
                p.pin,
            ]
        }));
        return csv_response(out);
    }
    let mut response = Json(Issued { pins }).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn issued(kind: &str, id: &str, name: &str, unit: &str, phone: Option<String>) -> IssuedPin {
    IssuedPin {
        kind: kind.into(),
        id: id.into(),
        name: name.into(),
        unit: unit.into(),
        phone,
        pin: String::new(),
    }
}

/// When a token issued to a member or unit for `room` expires: an hour
/// after a one-off scheduled room ends, else the default lifetime.
pub fn member_token_exp(room: &Room, now: u64) -> u64 {
    let scheduled_end = room
        .ends_at
        .filter(|_| room.recurrence.is_none())
        .and_then(|end| u64::try_from(end.as_second()).ok())
        .map(|end| end + END_MARGIN_S)
        .filter(|&exp| exp > now);
    scheduled_end
        .unwrap_or(now + DEFAULT_TTL_S)
        .min(now + MAX_TTL_S)
}

/// The role a member (or a unit's shared phone, `member: None`) has in `room`.
pub fn member_role(room: &Room, member: Option<&str>) -> Role {
    if member.is_some_and(|m| room.hosts.iter().any(|h| h == m)) {
        return Role::Host;
    }
    match room.kind {
        RoomKind::Rally => Role::Listener,
        RoomKind::Bridge => Role::Participant,
    }
}

/// Whether `unit` lies in the audience of `room` (the subtree of its unit;
/// any unit when the room has none).
pub(crate) async fn in_audience(
    state: &AppState,
    room: &Room,
    unit: &str,
) -> Result<bool, ApiError> {
    let chain = state.org.ancestry(unit).await?;
    Ok(match &room.unit {
        _ if chain.is_empty() => false,
        None => true,
        Some(audience) => chain.iter().any(|u| &u.id == audience),
    })
}

/// `POST /v1/pin-join` body. `Debug` hides the PIN.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub room_code: String,
    pub pin: String,
}

/// `POST /v1/pin-join` answer. `Debug` shows the token redacted.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct Joined {
    pub token: String,
    pub room: String,
    pub role: Role,
    pub name: String,
    pub member: Option<String>,
    pub unit: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
    /// Where a listener sends its WHEP offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whep_url: Option<String>,
    /// Where a bridge participant sends its offer (`/join`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_url: Option<String>,
    /// Where a rally host publishes (WHIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whip_url: Option<String>,
    /// The web page for this role (`/l/{room}`, `/b/{room}` or
    /// `/h/{room}`); it reads the token from `#token=`.
    pub page: String,
}

/// `POST /v1/pin-join` (no auth).
#[utoipa::path(
    post,
    path = "/v1/pin-join",
    tag = "access",
    summary = "Trade a room code and PIN for a room token (rate limited, lockout)",
    request_body(content = JoinRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A room token for the member or unit", body = Joined),
        (status = 400, description = "malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "wrong Content-Type", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many attempts", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn join(
    State(state): State<AppState>,
    State(guard): State<Arc<PinGuard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(request): JsonBody<JoinRequest>,
) -> Result<Json<Joined>, ApiError> {
    let ip = peer.ip();
    let code = request.room_code.trim();
    if let Err(refusal) = guard.admit(ip, code, Instant::now()) {
        let retry = refusal.retry_after_s();
        match refusal {
            Refusal::LockedOut(_) => {
                tracing::warn!(ip = %ClientIp(ip), retry_after_s = retry, "PIN join refused: locked out");
                metrics::counter!("sabha_pin_join_refusals_total", "reason" => "locked_out")
                    .increment(1);
            }
            Refusal::RateLimited(_) => {
                tracing::warn!(ip = %ClientIp(ip), retry_after_s = retry, "PIN join refused: rate limited");
                metrics::counter!("sabha_pin_join_refusals_total", "reason" => "rate_limited")
                    .increment(1);
            }
        }
        return Err(ApiError::TooManyRequests(retry));
    }
    match resolve(&state, code, request.pin.trim()).await? {
        Some(joined) => {
            guard.succeeded(ip);
            metrics::counter!("sabha_pin_joins_total").increment(1);
            tracing::info!(ip = %ClientIp(ip), room = %joined.room, member = ?joined.member, unit = %joined.unit, "PIN join");
            Ok(Json(joined))
        }
        None => {
            let locked = guard.failed(ip, code, Instant::now());
            metrics::counter!("sabha_pin_join_failures_total").increment(1);
            tracing::warn!(ip = %ClientIp(ip), "PIN join failed: wrong room code or PIN");
            if locked.ip {
                metrics::counter!("sabha_pin_lockouts_total", "scope" => "ip").increment(1);
                tracing::warn!(ip = %ClientIp(ip), lockout_s = state.settings.pin_limits.lockout_s, "PIN join: IP locked out");
            }
            if locked.room {
                metrics::counter!("sabha_pin_lockouts_total", "scope" => "room").increment(1);
                tracing::warn!(ip = %ClientIp(ip), lockout_s = state.settings.pin_limits.lockout_s, "PIN join: room code locked after too many failures");
            }
            Err(ApiError::WrongPin)
        }
    }
}

/// The token for `code` + `pin`, or `None` for every kind of wrong (so
/// the caller answers all of them alike).
async fn resolve(state: &AppState, code: &str, pin: &str) -> Result<Option<Joined>, ApiError> {
    if !is_room_code(code) || !is_pin(pin) {
        return Ok(None);
    }
    let Some(room) = state.rooms.room_by_code(code).await? else {
        return Ok(None);
    };
    let Some(owner) = state.members.pin_owner(&state.pin_key.hash(pin)).await? else {
        return Ok(None);
    };
    let (member, name, unit): (Option<Member>, String, String) = match owner {
        PinOwner::Member(id) => {
            let Some(m) = state.members.member(&id).await? else {
                return Ok(None);
            };
            (Some(m.clone()), m.name, m.unit)
        }
        PinOwner::Unit(id) => {
            let Some(u) = state.org.ancestry(&id).await?.into_iter().next() else {
                return Ok(None);
            };
            (None, u.name, u.id)
        }
    };
    if !in_audience(state, &room, &unit).await? {
        return Ok(None);
    }
    let member_id = member.map(|m| m.id);
    let role = member_role(&room, member_id.as_deref());
    let now = unix_now();
    let claims = Claims {
        room: room.id.clone(),
        role,
        name: Some(name.clone()),
        member: member_id.clone(),
        unit: Some(unit.clone()),
        exp: member_token_exp(&room, now),
        iat: now,
    };
    let token = state
        .auth
        .tokens()
        .mint(&claims)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let base = format!("/v1/rooms/{}", room.id);
    let (mut whep_url, mut join_url, mut whip_url) = (None, None, None);
    match (room.kind, role) {
        (RoomKind::Bridge, _) => join_url = Some(format!("{base}/join")),
        (RoomKind::Rally, Role::Host) => {
            whip_url = Some(format!("{base}/whip"));
            whep_url = Some(format!("{base}/whep"));
        }
        (RoomKind::Rally, _) => whep_url = Some(format!("{base}/whep")),
    }
    Ok(Some(Joined {
        page: crate::pages::page_for(room.kind, role, &room.id),
        token,
        room: room.id,
        role,
        name,
        member: member_id,
        unit,
        expires_at: rfc3339(claims.exp),
        whep_url,
        join_url,
        whip_url,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_keyed_and_stable() {
        let a = PinKey::derive(b"secret one");
        let b = PinKey::derive(b"secret two");
        assert_eq!(a.hash("123456"), a.hash("123456"));
        assert_ne!(a.hash("123456"), a.hash("123457"));
        assert_ne!(a.hash("123456"), b.hash("123456"));
        assert_eq!(a.hash("123456").len(), 64);
        assert!(!format!("{a:?}").contains("secret"));
    }

    #[test]
    fn pins_are_six_digits() {
        assert!(is_pin("012345"));
        for bad in ["12345", "1234567", "12345a", "", "١٢٣٤٥٦"] {
            assert!(!is_pin(bad), "{bad}");
        }
    }
}
