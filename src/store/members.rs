//! Members and PIN hashes (`sabha_signaling::MemberStore`). Imports and
//! PIN rotations arrive checked and are written in one transaction each.

use async_trait::async_trait;
use sabha_signaling::{Member, MemberStore, PinOwner, StoreError};

use super::{Store, store_error};

type MemberRow = (String, String, Option<String>, String);

fn member((id, name, phone, unit): MemberRow) -> Member {
    Member {
        id,
        name,
        phone,
        unit,
    }
}

#[async_trait]
impl MemberStore for Store {
    async fn members(&self) -> Result<Vec<Member>, StoreError> {
        let rows: Vec<MemberRow> =
            sqlx::query_as("SELECT id, name, phone, unit_id FROM members ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(rows.into_iter().map(member).collect())
    }

    async fn member(&self, id: &str) -> Result<Option<Member>, StoreError> {
        let row: Option<MemberRow> =
            sqlx::query_as("SELECT id, name, phone, unit_id FROM members WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(row.map(member))
    }

    async fn apply_members(&self, upsert: &[Member], remove: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        for id in remove {
            sqlx::query("DELETE FROM members WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            sqlx::query("DELETE FROM pins WHERE owner_kind = 'member' AND owner_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        for m in upsert {
            sqlx::query(
                "INSERT INTO members (id, name, phone, unit_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, phone = excluded.phone, \
                 unit_id = excluded.unit_id",
            )
            .bind(&m.id)
            .bind(&m.name)
            .bind(&m.phone)
            .bind(&m.unit)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    async fn pin_hashes(&self) -> Result<Vec<(String, PinOwner)>, StoreError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT hash, owner_kind, owner_id FROM pins")
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
        rows.into_iter()
            .map(|(hash, kind, id)| {
                PinOwner::from_parts(&kind, id)
                    .map(|owner| (hash, owner))
                    .ok_or_else(|| StoreError(format!("unknown PIN owner kind {kind:?}")))
            })
            .collect()
    }

    async fn replace_pins(&self, pins: &[(PinOwner, String)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        for (owner, _) in pins {
            sqlx::query("DELETE FROM pins WHERE owner_kind = $1 AND owner_id = $2")
                .bind(owner.kind())
                .bind(owner.id())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        for (owner, hash) in pins {
            sqlx::query("INSERT INTO pins (hash, owner_kind, owner_id) VALUES ($1, $2, $3)")
                .bind(hash)
                .bind(owner.kind())
                .bind(owner.id())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    async fn pin_owner(&self, hash: &str) -> Result<Option<PinOwner>, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT owner_kind, owner_id FROM pins WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(row.and_then(|(kind, id)| PinOwner::from_parts(&kind, id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::{TestDb, on_both_backends};

    on_both_backends!(
        members_upsert_and_remove_with_their_pins,
        pins_rotate_and_are_unique,
        thirty_thousand_members_import_in_seconds
    );

    fn m(id: &str, unit: &str, phone: Option<&str>) -> Member {
        Member {
            id: id.into(),
            name: format!("Member {id}"),
            phone: phone.map(Into::into),
            unit: unit.into(),
        }
    }

    async fn members_upsert_and_remove_with_their_pins(db: &TestDb) {
        let store = db.open().await;
        store
            .apply_members(
                &[m("m1", "B1", Some("+919800000001")), m("m2", "B2", None)],
                &[],
            )
            .await
            .unwrap();
        store
            .replace_pins(&[(PinOwner::Member("m2".into()), "h2".into())])
            .await
            .unwrap();
        assert_eq!(
            store.member("m1").await.unwrap(),
            Some(m("m1", "B1", Some("+919800000001")))
        );
        store
            .apply_members(&[m("m1", "B9", None)], &["m2".into()])
            .await
            .unwrap();
        assert_eq!(store.members().await.unwrap(), [m("m1", "B9", None)]);
        assert_eq!(store.member("m2").await.unwrap(), None);
        assert_eq!(store.pin_owner("h2").await.unwrap(), None);
        store.close().await;
    }

    async fn pins_rotate_and_are_unique(db: &TestDb) {
        let store = db.open().await;
        let (a, u) = (PinOwner::Member("m1".into()), PinOwner::Unit("B1".into()));
        store
            .replace_pins(&[(a.clone(), "h1".into()), (u.clone(), "h2".into())])
            .await
            .unwrap();
        assert_eq!(store.pin_owner("h1").await.unwrap(), Some(a.clone()));
        assert_eq!(store.pin_owner("h2").await.unwrap(), Some(u.clone()));
        // Rotating m1 retires h1; B1 keeps h2.
        store
            .replace_pins(&[(a.clone(), "h3".into())])
            .await
            .unwrap();
        assert_eq!(store.pin_owner("h1").await.unwrap(), None);
        let mut all = store.pin_hashes().await.unwrap();
        all.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(all, [("h2".to_owned(), u), ("h3".to_owned(), a)]);
        // A hash already in use by another owner is refused, atomically.
        let other = PinOwner::Member("m2".into());
        assert!(store.replace_pins(&[(other, "h2".into())]).await.is_err());
        assert_eq!(store.pin_hashes().await.unwrap().len(), 2);
        store.close().await;
    }

    async fn thirty_thousand_members_import_in_seconds(db: &TestDb) {
        let store = db.open().await;
        let members: Vec<Member> = (0..30_000)
            .map(|i| m(&format!("w{i}"), "B1", Some("+919800000001")))
            .collect();
        let started = std::time::Instant::now();
        store.apply_members(&members, &[]).await.unwrap();
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
        assert_eq!(store.members().await.unwrap().len(), 30_000);
        store.close().await;
    }
}
