//! The organisation's hierarchy: units with the organisation's own ids,
//! loaded by the operator and read back as a tree.
//!
//! `PUT /v1/org` takes CSV (`id,kind,name,parent`, for a spreadsheet
//! export of tens of thousands of booths) or JSON (`{"units": […],
//! "remove": […]}`). An import is an upsert: units not named stay, and
//! removals are explicit (JSON `remove`). The whole resulting tree is
//! checked before anything is written — every parent exists, nothing is its
//! own ancestor, no removed unit keeps children — so a bad file changes
//! nothing, and the store writes the rest in one transaction.
//!
//! `GET /v1/org` lists every unit (or, with `?parent=ID`, one unit's
//! children); `GET /v1/org/{id}` gives a unit with its ancestors and
//! children. All operator only; an import needs an organisation-wide key,
//! and a key scoped to a unit reads that unit's subtree only.

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::Operator;
use crate::backend::Unit;
use crate::extract::has_media_type;
use crate::problem::ApiError;
use crate::scope::require_organisation;

/// Largest `PUT /v1/org` body: about 200,000 booths of CSV.
pub const ORG_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Deepest tree accepted (state → … → booth is 5).
pub const MAX_DEPTH: usize = 16;

/// The JSON form of an import.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Import {
    #[serde(default)]
    pub units: Vec<Unit>,
    /// Ids to delete (with all their children named too).
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Imported {
    pub upserted: usize,
    pub removed: usize,
    /// Units in the organisation afterwards.
    pub units: usize,
}

/// What is wrong with an import: the first problem, naming the unit (and
/// the CSV line when there is one).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrgError {
    #[error("{0}")]
    Malformed(String),
    #[error("unit {0:?}: the id must be 1–64 of A–Z a–z 0–9 . _ -")]
    BadId(String),
    #[error("unit {0:?}: the kind must be 1–32 of a–z and _")]
    BadKind(String),
    #[error("unit {0:?}: the name must be 1–200 characters")]
    BadName(String),
    #[error("unit {0:?} is named twice in the import")]
    Duplicate(String),
    #[error("unit {unit:?}: its parent {parent:?} is not in the organisation")]
    UnknownParent { unit: String, parent: String },
    #[error("unit {0:?} is its own ancestor, or the tree is deeper than {MAX_DEPTH}")]
    Cycle(String),
    #[error("unit {unit:?} cannot be removed: {child:?} is under it and stays")]
    HasChildren { unit: String, child: String },
    #[error("unit {0:?} is not in the organisation")]
    UnknownRemoval(String),
}

impl From<OrgError> for ApiError {
    fn from(e: OrgError) -> Self {
        match e {
            OrgError::Malformed(m) => ApiError::BadRequest(m),
            other => ApiError::Unprocessable(other.to_string()),
        }
    }
}

pub(crate) fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_kind(kind: &str) -> bool {
    (1..=32).contains(&kind.len()) && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Reads `id,kind,name,parent` CSV (a header line first; `parent` empty
/// for a root). Fields are trimmed; a leading UTF-8 byte-order mark (as
/// spreadsheets write) is skipped.
pub fn parse_csv(body: &[u8]) -> Result<Vec<Unit>, OrgError> {
    let rows = crate::csv_rows::rows(body, &["id", "kind", "name"], &["parent"])
        .map_err(OrgError::Malformed)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let [id, kind, name, parent]: [String; 4] =
                row.try_into().expect("four columns asked for");
            Unit {
                id,
                kind,
                name,
                parent: Some(parent).filter(|p| !p.is_empty()),
            }
        })
        .collect())
}

/// Checks `import` against the `existing` units; returns the number of
/// units after it. Nothing is written by this function.
pub fn check(existing: &[Unit], import: &Import) -> Result<usize, OrgError> {
    let mut seen = HashSet::with_capacity(import.units.len());
    for u in &import.units {
        if !valid_id(&u.id) {
            return Err(OrgError::BadId(u.id.clone()));
        }
        if !valid_kind(&u.kind) {
            return Err(OrgError::BadKind(u.id.clone()));
        }
        if u.name.trim().is_empty() || u.name.chars().count() > 200 {
            return Err(OrgError::BadName(u.id.clone()));
        }
        if !seen.insert(u.id.as_str()) {
            return Err(OrgError::Duplicate(u.id.clone()));
        }
    }
    let mut parent_of: HashMap<&str, Option<&str>> = existing
        .iter()
        .map(|u| (u.id.as_str(), u.parent.as_deref()))
        .collect();
    for id in &import.remove {
        if parent_of.remove(id.as_str()).is_none() && !seen.contains(id.as_str()) {
            return Err(OrgError::UnknownRemoval(id.clone()));
        }
    }
    for u in &import.units {
        parent_of.insert(&u.id, u.parent.as_deref());
    }
    // Removing and re-adding the same id in one import keeps it.
    let removed: HashSet<&str> = import
        .remove
        .iter()
        .map(String::as_str)
        .filter(|id| !seen.contains(id))
        .collect();
    for (&unit, &parent) in &parent_of {
        let Some(parent) = parent else { continue };
        if !parent_of.contains_key(parent) {
            return Err(if removed.contains(parent) {
                OrgError::HasChildren {
                    unit: parent.to_owned(),
                    child: unit.to_owned(),
                }
            } else {
                OrgError::UnknownParent {
                    unit: unit.to_owned(),
                    parent: parent.to_owned(),
                }
            });
        }
    }
    // Every unit reaches a root within MAX_DEPTH steps (a cycle never does).
    for u in &import.units {
        let mut at = u.parent.as_deref();
        let mut depth = 0;
        while let Some(p) = at {
            depth += 1;
            if p == u.id || depth > MAX_DEPTH {
                return Err(OrgError::Cycle(u.id.clone()));
            }
            at = parent_of.get(p).copied().flatten();
        }
    }
    Ok(parent_of.len())
}

/// The body of a CSV-or-JSON import (`PUT /v1/org`, `PUT /v1/members`):
/// `text/csv` through `csv`, `application/json` as `JsonBody` would read
/// it (bad syntax 400, the wrong shape 422), anything else 415.
pub(crate) fn import_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
    csv: impl FnOnce(&[u8]) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    if has_media_type(headers, "text/csv") {
        csv(body)
    } else if has_media_type(headers, "application/json") {
        serde_json::from_slice(body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::Unprocessable(format!("{what}: {e}")),
            _ => ApiError::BadRequest(format!("{what}: {e}")),
        })
    } else {
        Err(ApiError::UnsupportedMediaType(
            "text/csv or application/json",
        ))
    }
}

/// `PUT /v1/org` (`text/csv` or `application/json`)
#[utoipa::path(
    put,
    path = "/v1/org",
    tag = "organisation",
    summary = "Import units (CSV or JSON): upsert, removals explicit",
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
    require_organisation(&operator.scope, "importing the organisation")?;
    let import = import_body(&headers, &body, "the import JSON", |csv| {
        Ok(Import {
            units: parse_csv(csv)?,
            remove: Vec::new(),
        })
    })?;
    let existing = state.org.units().await?;
    let units = check(&existing, &import)?;
    state.org.apply_org(&import.units, &import.remove).await?;
    let removed = import.remove.len();
    tracing::info!(
        upserted = import.units.len(),
        removed,
        units,
        "organisation imported"
    );
    Ok(Json(Imported {
        upserted: import.units.len(),
        removed,
        units,
    }))
}

/// The ids of `root` and every unit under it (empty when there is no
/// such unit).
pub fn subtree(units: &[Unit], root: &str) -> HashSet<String> {
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for u in units {
        if let Some(p) = &u.parent {
            children.entry(p.as_str()).or_default().push(&u.id);
        }
    }
    let mut out = HashSet::new();
    if !units.iter().any(|u| u.id == root) {
        return out;
    }
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if out.insert(id.to_owned()) {
            stack.extend(children.get(id).into_iter().flatten().copied());
        }
    }
    out
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    parent: Option<String>,
    /// Only the top of what the caller sees: the roots of the organisation
    /// (for a scoped key, its own unit). Where a tree view starts.
    #[serde(default)]
    roots: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnitList {
    pub units: Vec<Unit>,
}

/// `GET /v1/org[?parent=ID][?roots=true]`
#[utoipa::path(
    get,
    path = "/v1/org",
    tag = "organisation",
    summary = "List units",
    security(("bearer" = [])),
    params(
        ("parent" = Option<String>, Query, description = "only children of this unit"),
        ("roots" = Option<bool>, Query, description = "only the top units the caller sees (a scoped key: its unit)"),
    ),
    responses(
        (status = 200, description = "Units", body = UnitList),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    operator: Operator,
    Query(q): Query<ListQuery>,
) -> Result<Json<UnitList>, ApiError> {
    let mut units = state.org.units().await?;
    if let Some(subtree) = operator.scope.subtree(&units) {
        units.retain(|u| subtree.contains(&u.id));
    }
    if let Some(parent) = q.parent {
        units.retain(|u| u.parent.as_deref() == Some(parent.as_str()));
    }
    if q.roots {
        let seen: HashSet<String> = units.iter().map(|u| u.id.clone()).collect();
        units.retain(|u| u.parent.as_ref().is_none_or(|p| !seen.contains(p)));
    }
    Ok(Json(UnitList { units }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnitView {
    pub unit: Unit,
    /// From the root down to the parent.
    pub ancestors: Vec<Unit>,
    pub children: Vec<Unit>,
}

/// `GET /v1/org/{id}`
#[utoipa::path(
    get,
    path = "/v1/org/{id}",
    tag = "organisation",
    summary = "A unit with its ancestors and children",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Unit id")),
    responses(
        (status = 200, description = "The unit", body = UnitView),
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
) -> Result<Json<UnitView>, ApiError> {
    let mut units = state.org.units().await?;
    // A scoped operator sees its subtree only: other units are 404, and
    // the ancestors above its own unit are left out.
    if let Some(subtree) = operator.scope.subtree(&units) {
        units.retain(|u| subtree.contains(&u.id));
    }
    let by_id: HashMap<&str, &Unit> = units.iter().map(|u| (u.id.as_str(), u)).collect();
    let unit = by_id
        .get(id.as_str())
        .copied()
        .cloned()
        .ok_or(ApiError::NotFound("unit"))?;
    let mut ancestors = Vec::new();
    let mut at = unit.parent.as_deref();
    while let Some(p) = at.and_then(|p| by_id.get(p)) {
        ancestors.push((*p).clone());
        at = p.parent.as_deref();
        if ancestors.len() > MAX_DEPTH {
            break;
        }
    }
    ancestors.reverse();
    let children = units
        .iter()
        .filter(|u| u.parent.as_deref() == Some(id.as_str()))
        .cloned()
        .collect();
    Ok(Json(UnitView {
        unit,
        ancestors,
        children,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(id: &str, parent: Option<&str>) -> Unit {
        Unit {
            id: id.into(),
            kind: "booth".into(),
            name: format!("Unit {id}"),
            parent: parent.map(Into::into),
        }
    }

    fn import(units: Vec<Unit>, remove: &[&str]) -> Import {
        Import {
            units,
            remove: remove.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn csv_in_any_column_order_with_empty_parents() {
        let body =
            b"name, parent ,id,kind\nMaharashtra,,MH,state\n\"Pune, city\",MH,MH-PUNE,district\n";
        let units = parse_csv(body).unwrap();
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].parent, None);
        assert_eq!(
            (
                units[1].id.as_str(),
                units[1].name.as_str(),
                units[1].parent.as_deref()
            ),
            ("MH-PUNE", "Pune, city", Some("MH"))
        );
        assert!(matches!(
            parse_csv(b"id,name\nx,y\n"),
            Err(OrgError::Malformed(_))
        ));
        let from_a_spreadsheet = b"\xef\xbb\xbfid,kind,name,parent\nMH,state,Maharashtra,\n";
        assert_eq!(parse_csv(from_a_spreadsheet).unwrap()[0].id, "MH");
        assert!(matches!(
            parse_csv(b"id,kind,name\nx,booth\n"),
            Err(OrgError::Malformed(_))
        ));
    }

    #[test]
    fn parents_may_come_after_children_and_from_the_store() {
        let existing = [unit("MH", None)];
        let new = import(vec![unit("B1", Some("D1")), unit("D1", Some("MH"))], &[]);
        assert_eq!(check(&existing, &new), Ok(3));
    }

    #[test]
    fn every_bad_tree_is_refused_with_the_unit_named() {
        let existing = [unit("MH", None), unit("D1", Some("MH"))];
        let cases = [
            (import(vec![unit("B1", Some("NOPE"))], &[]), "NOPE"),
            (
                import(vec![unit("A", Some("B")), unit("B", Some("A"))], &[]),
                "is its own ancestor",
            ),
            (import(vec![unit("S", Some("S"))], &[]), "its own ancestor"),
            (import(vec![], &["MH"]), "\"D1\" is under it"),
            (import(vec![], &["GHOST"]), "not in the organisation"),
            (import(vec![unit("X", None), unit("X", None)], &[]), "twice"),
            (import(vec![unit("bad id", None)], &[]), "the id must be"),
            (
                import(
                    vec![Unit {
                        kind: "Booth".into(),
                        ..unit("K", None)
                    }],
                    &[],
                ),
                "the kind must be",
            ),
            (
                import(
                    vec![Unit {
                        name: " ".into(),
                        ..unit("N", None)
                    }],
                    &[],
                ),
                "the name must be",
            ),
        ];
        for (case, expected) in cases {
            let error = check(&existing, &case).unwrap_err().to_string();
            assert!(error.contains(expected), "{error} (expected {expected})");
        }
    }

    #[test]
    fn removals_with_their_children_and_moves_are_fine() {
        let existing = [
            unit("MH", None),
            unit("D1", Some("MH")),
            unit("B1", Some("D1")),
        ];
        assert_eq!(check(&existing, &import(vec![], &["B1", "D1"])), Ok(1));
        // B1 moves to a new district; D1 can then go.
        let moved = import(
            vec![unit("D2", Some("MH")), unit("B1", Some("D2"))],
            &["D1"],
        );
        assert_eq!(check(&existing, &moved), Ok(3));
    }

    #[test]
    fn a_tree_deeper_than_the_limit_is_refused() {
        let chain: Vec<Unit> = (0..=MAX_DEPTH + 1)
            .map(|i| {
                unit(
                    &format!("u{i}"),
                    (i > 0).then(|| format!("u{}", i - 1)).as_deref(),
                )
            })
            .collect();
        assert!(matches!(
            check(&[], &import(chain, &[])),
            Err(OrgError::Cycle(_))
        ));
    }
}
