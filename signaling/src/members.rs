//! The organisation's members (workers): who they are, which unit they
//! belong to, and how to reach them — so that a PIN or an invite can be
//! tied to a person and attendance shows who joined.
//!
//! `PUT /v1/members` takes CSV (`id,name,phone,unit`) or JSON
//! (`{"members": […], "remove": […]}`), like `PUT /v1/org`: an upsert,
//! removals explicit, the whole import checked against the organisation
//! before anything is written, one transaction in the store.
//! `GET /v1/members?unit=U` lists the members of U's subtree,
//! `GET /v1/members/{id}` one member. All operator only.
//!
//! [`MemberStore`] also keeps the PINs ([`crate::pins`]): only their keyed
//! hashes, which double as the lookup key of a join.

use std::collections::HashSet;

use async_trait::async_trait;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::Operator;
use crate::backend::StoreError;
use crate::org::{subtree, valid_id};
use crate::problem::ApiError;

/// Largest `PUT /v1/members` body, as for the organisation.
pub const MEMBERS_BODY_LIMIT: usize = crate::org::ORG_BODY_LIMIT;

/// One member of the organisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The organisation's own id: 1–64 of `A–Z a–z 0–9 . _ -`.
    pub id: String,
    pub name: String,
    /// `+` and digits (E.164-ish); `None` when unknown.
    #[serde(default)]
    pub phone: Option<String>,
    /// The unit the member belongs to; must exist.
    pub unit: String,
}

/// Whose PIN a stored PIN hash is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum PinOwner {
    Member(String),
    Unit(String),
}

impl PinOwner {
    /// As stored: `member` or `unit`.
    pub fn kind(&self) -> &'static str {
        match self {
            PinOwner::Member(_) => "member",
            PinOwner::Unit(_) => "unit",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            PinOwner::Member(id) | PinOwner::Unit(id) => id,
        }
    }

    /// The inverse of `kind()` + `id()`.
    pub fn from_parts(kind: &str, id: String) -> Option<Self> {
        match kind {
            "member" => Some(PinOwner::Member(id)),
            "unit" => Some(PinOwner::Unit(id)),
            _ => None,
        }
    }
}

/// Members and the PIN hashes of members and units.
#[async_trait]
pub trait MemberStore: Send + Sync + 'static {
    /// Every member, by id.
    async fn members(&self) -> Result<Vec<Member>, StoreError>;
    async fn member(&self, id: &str) -> Result<Option<Member>, StoreError>;
    /// Inserts or replaces `upsert` and deletes `remove` (and their PINs),
    /// atomically.
    async fn apply_members(&self, upsert: &[Member], remove: &[String]) -> Result<(), StoreError>;
    /// Every stored PIN hash with its owner.
    async fn pin_hashes(&self) -> Result<Vec<(String, PinOwner)>, StoreError>;
    /// Replaces the PINs of the owners named, atomically: each owner's old
    /// PIN stops working. Hashes are unique across all owners.
    async fn replace_pins(&self, pins: &[(PinOwner, String)]) -> Result<(), StoreError>;
    /// Whose PIN hashes to `hash` (one indexed lookup).
    async fn pin_owner(&self, hash: &str) -> Result<Option<PinOwner>, StoreError>;
}

/// The JSON form of an import.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Import {
    #[serde(default)]
    pub members: Vec<Member>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Imported {
    pub upserted: usize,
    pub removed: usize,
    /// Members afterwards.
    pub members: usize,
}

/// What is wrong with an import: the first problem, naming the member.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    #[error("{0}")]
    Malformed(String),
    #[error("member {0:?}: the id must be 1–64 of A–Z a–z 0–9 . _ -")]
    BadId(String),
    #[error("member {0:?}: the name must be 1–200 characters")]
    BadName(String),
    #[error("member {0:?}: the phone must be + and 6–15 digits")]
    BadPhone(String),
    #[error("member {0:?} is named twice in the import")]
    Duplicate(String),
    #[error("member {member:?}: unit {unit:?} is not in the organisation")]
    UnknownUnit { member: String, unit: String },
    #[error("member {0:?} is not there to remove")]
    UnknownRemoval(String),
}

impl From<MemberError> for ApiError {
    fn from(e: MemberError) -> Self {
        match e {
            MemberError::Malformed(m) => ApiError::BadRequest(m),
            other => ApiError::Unprocessable(other.to_string()),
        }
    }
}

fn valid_phone(phone: &str) -> bool {
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Reads `id,name,phone,unit` CSV (header first, any column order, `phone`
/// may be missing or empty). A leading UTF-8 byte-order mark is skipped.
pub fn parse_csv(body: &[u8]) -> Result<Vec<Member>, MemberError> {
    let rows = crate::csv_rows::rows(body, &["id", "name", "unit"], &["phone"])
        .map_err(MemberError::Malformed)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let [id, name, unit, phone]: [String; 4] =
                row.try_into().expect("four columns asked for");
            Member {
                id,
                name,
                phone: Some(phone).filter(|p| !p.is_empty()),
                unit,
            }
        })
        .collect())
}

/// Checks `import` against the organisation's unit ids and the existing
/// member ids; returns the number of members after it.
pub fn check(
    units: &HashSet<&str>,
    existing: &HashSet<&str>,
    import: &Import,
) -> Result<usize, MemberError> {
    let mut seen = HashSet::with_capacity(import.members.len());
    for m in &import.members {
        if !valid_id(&m.id) {
            return Err(MemberError::BadId(m.id.clone()));
        }
        if m.name.trim().is_empty() || m.name.chars().count() > 200 || m.name.contains('\n') {
            return Err(MemberError::BadName(m.id.clone()));
        }
        if m.phone.as_deref().is_some_and(|p| !valid_phone(p)) {
            return Err(MemberError::BadPhone(m.id.clone()));
        }
        if !units.contains(m.unit.as_str()) {
            return Err(MemberError::UnknownUnit {
                member: m.id.clone(),
                unit: m.unit.clone(),
            });
        }
        if !seen.insert(m.id.as_str()) {
            return Err(MemberError::Duplicate(m.id.clone()));
        }
    }
    let mut after: HashSet<&str> = existing.clone();
    for id in &import.remove {
        if !after.remove(id.as_str()) && !seen.contains(id.as_str()) {
            return Err(MemberError::UnknownRemoval(id.clone()));
        }
    }
    after.extend(seen);
    Ok(after.len())
}

/// `PUT /v1/members` (`text/csv` or `application/json`)
#[utoipa::path(
    put,
    path = "/v1/members",
    tag = "organisation",
    summary = "Import members (CSV id,name,phone,unit or JSON): upsert, removals explicit",
    security(("bearer" = [])),
    request_body(content((Import = "application/json"), (String = "text/csv"))),
    responses(
        (status = 200, description = "Counts", body = Imported),
        (status = 400, description = "malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "wrong Content-Type", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    operator: Operator,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Imported>, ApiError> {
    crate::scope::require_organisation(&operator.scope, "importing members")?;
    let import = crate::org::import_body(&headers, &body, "the members JSON", |csv| {
        Ok(Import {
            members: parse_csv(csv)?,
            remove: Vec::new(),
        })
    })?;
    let units = state.org.units().await?;
    let unit_ids: HashSet<&str> = units.iter().map(|u| u.id.as_str()).collect();
    let existing = state.members.members().await?;
    let existing_ids: HashSet<&str> = existing.iter().map(|m| m.id.as_str()).collect();
    let members = check(&unit_ids, &existing_ids, &import)?;
    state
        .members
        .apply_members(&import.members, &import.remove)
        .await?;
    tracing::info!(
        upserted = import.members.len(),
        removed = import.remove.len(),
        members,
        "members imported"
    );
    Ok(Json(Imported {
        upserted: import.members.len(),
        removed: import.remove.len(),
        members,
    }))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    unit: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberList {
    pub members: Vec<Member>,
}

/// The members whose unit is in U's subtree; 404 for an unknown unit.
pub(crate) async fn in_subtree(state: &AppState, unit: &str) -> Result<Vec<Member>, ApiError> {
    let units = state.org.units().await?;
    let under = subtree(&units, unit);
    if under.is_empty() {
        return Err(ApiError::NotFound("unit"));
    }
    let mut members = state.members.members().await?;
    members.retain(|m| under.contains(&m.unit));
    Ok(members)
}

/// `GET /v1/members[?unit=U]`
#[utoipa::path(
    get,
    path = "/v1/members",
    tag = "organisation",
    summary = "Members of a unit's subtree",
    security(("bearer" = [])),
    params(("unit" = Option<String>, Query, description = "only members in this unit's subtree")),
    responses(
        (status = 200, description = "Members", body = MemberList),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    operator: Operator,
    Query(q): Query<ListQuery>,
) -> Result<Json<MemberList>, ApiError> {
    // A scoped operator sees the members of its own subtree only; a unit
    // outside it is as unknown as a unit that does not exist.
    let unit = match (q.unit, &operator.scope) {
        (Some(unit), _) => Some(unit),
        (None, crate::scope::Scope::Unit(own)) => Some(own.clone()),
        (None, crate::scope::Scope::Organisation) => None,
    };
    if let Some(unit) = &unit
        && !operator.scope.covers_unit(&*state.org, Some(unit)).await?
    {
        return Err(ApiError::NotFound("unit"));
    }
    let members = match unit {
        Some(unit) => in_subtree(&state, &unit).await?,
        None => state.members.members().await?,
    };
    Ok(Json(MemberList { members }))
}

/// `GET /v1/members/{id}`
#[utoipa::path(
    get,
    path = "/v1/members/{id}",
    tag = "organisation",
    summary = "One member",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Member id")),
    responses(
        (status = 200, description = "The member", body = Member),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
) -> Result<Json<Member>, ApiError> {
    if !valid_id(&id) {
        return Err(ApiError::NotFound("member"));
    }
    let member = state
        .members
        .member(&id)
        .await?
        .ok_or(ApiError::NotFound("member"))?;
    if !operator
        .scope
        .covers_unit(&*state.org, Some(&member.unit))
        .await?
    {
        return Err(ApiError::NotFound("member"));
    }
    Ok(Json(member))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, unit: &str) -> Member {
        Member {
            id: id.into(),
            name: format!("Member {id}"),
            phone: Some("+919800000001".into()),
            unit: unit.into(),
        }
    }

    #[test]
    fn csv_in_any_order_with_a_bom_and_empty_phones() {
        let body =
            b"\xef\xbb\xbfunit,name,id,phone\nB1,\"Rao, Asha\",m1,+919800000001\nB2,Ravi,m2,\n";
        let members = parse_csv(body).unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].name, "Rao, Asha");
        assert_eq!(members[0].phone.as_deref(), Some("+919800000001"));
        assert_eq!(members[1].phone, None);
        assert!(matches!(
            parse_csv(b"id,name\nx,y\n"),
            Err(MemberError::Malformed(_))
        ));
    }

    #[test]
    fn every_bad_member_is_refused_by_name() {
        let units: HashSet<&str> = ["B1"].into();
        let existing: HashSet<&str> = ["m0"].into();
        let cases = [
            (vec![member("bad id", "B1")], vec![], "the id must be"),
            (
                vec![Member {
                    name: " ".into(),
                    ..member("m1", "B1")
                }],
                vec![],
                "the name must be",
            ),
            (
                vec![Member {
                    phone: Some("98-00".into()),
                    ..member("m1", "B1")
                }],
                vec![],
                "the phone must be",
            ),
            (vec![member("m1", "NOPE")], vec![], "\"NOPE\" is not in"),
            (
                vec![member("m1", "B1"), member("m1", "B1")],
                vec![],
                "twice",
            ),
            (vec![], vec!["ghost".to_owned()], "not there to remove"),
        ];
        for (members, remove, expected) in cases {
            let error = check(&units, &existing, &Import { members, remove })
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{error} (expected {expected})");
        }
        let fine = Import {
            members: vec![member("m1", "B1"), member("m0", "B1")],
            remove: vec!["m0".into()],
        };
        assert_eq!(check(&units, &existing, &fine), Ok(2));
    }
}
