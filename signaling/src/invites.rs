//! Invites: room tokens for every member (or every unit) of a subtree, for
//! an operator to send by SMS or mail merge.
//!
//! `GET /v1/rooms/{id}/invite?unit=U[&per=member|unit]` (operator): one
//! token per member of U's subtree (or per unit, for shared booth phones),
//! with the member's name, `member` and `unit` claims, so attendance shows
//! who came. U must lie inside the room's audience (422 otherwise). JSON,
//! or CSV with `Accept: text/csv`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::Operator;
use crate::members::in_subtree;
use crate::org::subtree;
use crate::pins::{csv_response, in_audience, member_role, member_token_exp, wants_csv};
use crate::problem::ApiError;
use crate::rooms::find_in_scope;
use crate::timestamp::{rfc3339, unix_now};
use crate::token::Claims;

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    #[default]
    Member,
    Unit,
}

#[derive(Debug, Deserialize)]
pub struct InviteQuery {
    pub unit: String,
    #[serde(default)]
    pub per: Per,
}

/// One invite.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invite {
    /// The member id; `None` for a unit's invite.
    pub member: Option<String>,
    pub unit: String,
    pub name: String,
    pub phone: Option<String>,
    pub role: crate::backend::Role,
    pub token: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
    /// `/v1/rooms/{id}/whep?token=…` (`/join?token=…` for a bridge).
    pub url: String,
    /// The page to open, token in the fragment: `/l/{id}#token=…`
    /// (`/b/…` for a bridge, `/h/…` for a host).
    pub link: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invites {
    pub room: String,
    pub invites: Vec<Invite>,
}

/// `GET /v1/rooms/{id}/invite?unit=U[&per=member|unit]`
#[utoipa::path(
    get,
    path = "/v1/rooms/{id}/invite",
    tag = "access",
    summary = "Room tokens for each member or unit of a subtree inside the room's audience",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("unit" = String, Query, description = "the subtree to invite"), ("per" = Option<Per>, Query, description = "member (default) or unit")),
    responses(
        (status = 200, description = "Invites, JSON or CSV (Accept: text/csv)", body = Invites),
        (status = 400, description = "malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn invite(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    Query(q): Query<InviteQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = find_in_scope(&state, &operator.scope, &id).await?;
    if !in_audience(&state, &room, &q.unit).await? {
        return Err(ApiError::Unprocessable(format!(
            "unit {:?} is not in the organisation or not in the room's audience ({})",
            q.unit,
            room.unit.as_deref().unwrap_or("everyone")
        )));
    }
    // (member, unit, name, phone)
    let people: Vec<(Option<String>, String, String, Option<String>)> = match q.per {
        Per::Member => in_subtree(&state, &q.unit)
            .await?
            .into_iter()
            .map(|m| (Some(m.id), m.unit, m.name, m.phone))
            .collect(),
        Per::Unit => {
            let units = state.org.units().await?;
            let under = subtree(&units, &q.unit);
            units
                .into_iter()
                .filter(|u| under.contains(&u.id))
                .map(|u| (None, u.id, u.name, None))
                .collect()
        }
    };
    let now = unix_now();
    let exp = member_token_exp(&room, now);
    let path = match room.kind {
        crate::backend::RoomKind::Rally => "whep",
        crate::backend::RoomKind::Bridge => "join",
    };
    let mut invites = Vec::with_capacity(people.len());
    for (member, unit, name, phone) in people {
        let role = member_role(&room, member.as_deref());
        let claims = Claims {
            room: room.id.clone(),
            role,
            name: Some(name.clone()),
            member: member.clone(),
            unit: Some(unit.clone()),
            exp,
            iat: now,
        };
        let token = state
            .auth
            .tokens()
            .mint(&claims)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        invites.push(Invite {
            link: crate::pages::link_for(room.kind, role, &room.id, &token),
            url: format!("/v1/rooms/{}/{path}?token={token}", room.id),
            member,
            unit,
            name,
            phone,
            role,
            token,
            expires_at: rfc3339(exp),
        });
    }
    tracing::info!(room = %room.id, unit = %q.unit, invites = invites.len(), "invites issued");
    if wants_csv(&headers) {
        let mut rows = vec![
            [
                "member",
                "unit",
                "name",
                "phone",
                "role",
                "token",
                "expires_at",
                "url",
                "link",
            ]
            .map(String::from)
            .to_vec(),
        ];
        rows.extend(invites.into_iter().map(|i| {
            vec![
                i.member.unwrap_or_default(),
                i.unit,
                i.name,
                i.phone.unwrap_or_default(),
                i.role.as_str().to_owned(),
                i.token,
                i.expires_at,
                i.url,
                i.link,
            ]
        }));
        return csv_response(rows);
    }
    Ok(Json(Invites {
        room: room.id,
        invites,
    })
    .into_response())
}
