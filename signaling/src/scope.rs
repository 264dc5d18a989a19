//! How far an operator's authority reaches in the organisation.
//!
//! The root operator key and unscoped API keys act for the whole
//! organisation; a key scoped to a unit (a district office's) acts only in
//! that unit's subtree. Every operator handler asks one of the helpers here,
//! so the rule "a unit is covered when the scope's unit is the unit itself
//! or one of its ancestors" lives in one place:
//!
//! - [`Scope::covers`]: given a unit's ancestry (as
//!   [`OrgStore::ancestry`] returns it), for one room or one unit;
//! - [`Scope::covers_unit`]: the same, looking the ancestry up;
//! - [`Scope::subtree`]: the set of covered unit ids, computed once from
//!   [`OrgStore::units`], for filtering long lists without a query per item;
//! - [`room_in_scope`]: 404 for a room outside the scope, so a district's
//!   operator cannot even learn that another district's room exists.
//!
//! Rooms without a unit are organisation-wide: only organisation-wide
//! operators cover them.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::backend::{OrgStore, Room, StoreError, Unit};
use crate::problem::ApiError;

/// The reach of an operator credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "scope", content = "unit", rename_all = "lowercase")]
pub enum Scope {
    /// The whole organisation, including rooms without a unit.
    Organisation,
    /// The unit with this id and everything under it.
    Unit(String),
}

impl Scope {
    /// From a stored key's unit column (`None` = the whole organisation).
    pub fn from_unit(unit: Option<String>) -> Self {
        unit.map_or(Self::Organisation, Self::Unit)
    }

    pub fn is_organisation(&self) -> bool {
        matches!(self, Self::Organisation)
    }

    /// Whether a unit with `ancestry` (the unit itself first, then its
    /// ancestors, as [`OrgStore::ancestry`] gives it) is within this scope.
    /// An empty ancestry (no such unit) is covered only by the whole
    /// organisation.
    pub fn covers(&self, ancestry: &[Unit]) -> bool {
        match self {
            Self::Organisation => true,
            Self::Unit(own) => ancestry.iter().any(|u| &u.id == own),
        }
    }

    /// Whether `unit` (`None`: organisation-wide) is within this scope,
    /// looking up its ancestry when that matters.
    pub async fn covers_unit(
        &self,
        org: &dyn OrgStore,
        unit: Option<&str>,
    ) -> Result<bool, StoreError> {
        match (self, unit) {
            (Self::Organisation, _) => Ok(true),
            (Self::Unit(_), None) => Ok(false),
            (Self::Unit(_), Some(unit)) => Ok(self.covers(&org.ancestry(unit).await?)),
        }
    }

    /// The ids of every unit within this scope among `units` (the whole
    /// organisation), or `None` when the scope is the whole organisation
    /// (everything is covered, including rooms without a unit).
    pub fn subtree(&self, units: &[Unit]) -> Option<HashSet<String>> {
        let Self::Unit(own) = self else {
            return None;
        };
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        for u in units {
            if let Some(parent) = &u.parent {
                children.entry(parent.as_str()).or_default().push(&u.id);
            }
        }
        let mut covered = HashSet::new();
        if !units.iter().any(|u| &u.id == own) {
            return Some(covered);
        }
        let mut todo = vec![own.as_str()];
        while let Some(id) = todo.pop() {
            if covered.insert(id.to_owned()) {
                todo.extend(children.get(id).into_iter().flatten());
            }
        }
        Some(covered)
    }

    /// [`Scope::subtree`] loaded from the store (one query), for handlers
    /// that filter lists.
    pub async fn load_subtree(
        &self,
        org: &dyn OrgStore,
    ) -> Result<Option<HashSet<String>>, StoreError> {
        if self.is_organisation() {
            return Ok(None);
        }
        Ok(self.subtree(&org.units().await?))
    }
}

/// Whether a room with `unit` is in a subtree from [`Scope::subtree`]
/// (`None`: everything is).
pub fn in_subtree(subtree: Option<&HashSet<String>>, unit: Option<&str>) -> bool {
    match (subtree, unit) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(set), Some(unit)) => set.contains(unit),
    }
}

/// `Ok` when `room` is within `scope`; otherwise 404 "no such room", the
/// same answer as for a room that does not exist.
pub async fn room_in_scope(org: &dyn OrgStore, scope: &Scope, room: &Room) -> Result<(), ApiError> {
    if scope.covers_unit(org, room.unit.as_deref()).await? {
        Ok(())
    } else {
        Err(ApiError::NotFound("room"))
    }
}

/// 403 unless `scope` is the whole organisation; `what` names the action.
pub fn require_organisation(scope: &Scope, what: &str) -> Result<(), ApiError> {
    if scope.is_organisation() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{what} needs an organisation-wide operator key; this key is scoped to a unit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(id: &str, parent: Option<&str>) -> Unit {
        Unit {
            id: id.into(),
            kind: "x".into(),
            name: id.into(),
            parent: parent.map(Into::into),
        }
    }

    fn org() -> Vec<Unit> {
        vec![
            unit("st", None),
            unit("d1", Some("st")),
            unit("d2", Some("st")),
            unit("m1", Some("d1")),
            unit("b1", Some("m1")),
            unit("m2", Some("d2")),
        ]
    }

    #[test]
    fn covers_by_ancestry() {
        let d1 = Scope::Unit("d1".into());
        let chain = [
            unit("b1", Some("m1")),
            unit("m1", Some("d1")),
            unit("d1", Some("st")),
        ];
        assert!(d1.covers(&chain));
        assert!(d1.covers(&chain[2..]));
        assert!(!d1.covers(&[unit("m2", Some("d2")), unit("d2", Some("st"))]));
        assert!(!d1.covers(&[]));
        assert!(Scope::Organisation.covers(&[]));
    }

    #[test]
    fn subtree_is_the_unit_and_below() {
        let set = Scope::Unit("d1".into()).subtree(&org()).unwrap();
        let mut ids: Vec<_> = set.iter().map(String::as_str).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["b1", "d1", "m1"]);
        assert!(
            Scope::Unit("gone".into())
                .subtree(&org())
                .unwrap()
                .is_empty()
        );
        assert_eq!(Scope::Organisation.subtree(&org()), None);
    }

    #[test]
    fn rooms_without_unit_are_organisation_wide() {
        let set = Scope::Unit("d1".into()).subtree(&org());
        assert!(!in_subtree(set.as_ref(), None));
        assert!(in_subtree(set.as_ref(), Some("b1")));
        assert!(!in_subtree(set.as_ref(), Some("m2")));
        assert!(in_subtree(None, None));
    }

    #[test]
    fn only_organisation_passes_require_organisation() {
        assert!(require_organisation(&Scope::Organisation, "x").is_ok());
        let err = require_organisation(&Scope::Unit("d1".into()), "x").unwrap_err();
        assert_eq!(err.status(), 403);
    }
}
