//! The organisation's units. An import arrives checked (whole tree, see
//! `sabha_signaling::org`) and is written here in one transaction, so a
//! reader sees the tree before or after it, never half of it.

use async_trait::async_trait;
use sabha_signaling::{OrgStore, StoreError, Unit};

use super::{Store, store_error};

#[async_trait]
impl OrgStore for Store {
    async fn units(&self) -> Result<Vec<Unit>, StoreError> {
        let rows: Vec<(String, String, String, Option<String>)> =
            sqlx::query_as("SELECT id, kind, name, parent_id FROM units ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|(id, kind, name, parent)| Unit {
                id,
                kind,
                name,
                parent,
            })
            .collect())
    }

    async fn apply_org(&self, upsert: &[Unit], remove: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        for id in remove {
            sqlx::query("DELETE FROM units WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        for u in upsert {
            sqlx::query(
                "INSERT INTO units (id, kind, name, parent_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name, \
                 parent_id = excluded.parent_id",
            )
            .bind(&u.id)
            .bind(&u.kind)
            .bind(&u.name)
            .bind(&u.parent)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    async fn ancestry(&self, id: &str) -> Result<Vec<Unit>, StoreError> {
        let mut chain: Vec<Unit> = Vec::new();
        let mut next = Some(id.to_owned());
        while let Some(id) = next.take() {
            // An import never writes a cycle; this guards against a database
            // edited by hand.
            if chain.iter().any(|u| u.id == id) {
                return Err(StoreError(format!("the unit tree has a cycle at {id}")));
            }
            let row: Option<(String, String, String, Option<String>)> =
                sqlx::query_as("SELECT id, kind, name, parent_id FROM units WHERE id = $1")
                    .bind(&id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)?;
            let Some((id, kind, name, parent)) = row else {
                break;
            };
            next.clone_from(&parent);
            chain.push(Unit {
                id,
                kind,
                name,
                parent,
            });
        }
        Ok(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::{TestDb, on_both_backends};

    on_both_backends!(
        an_import_upserts_and_removes_atomically,
        ancestry_walks_up_to_the_root
    );

    async fn ancestry_walks_up_to_the_root(db: &TestDb) {
        let store = db.open().await;
        let units = [
            unit("MH", "Maharashtra", None),
            unit("D1", "Pune", Some("MH")),
            unit("B1", "Booth 1", Some("D1")),
        ];
        store.apply_org(&units, &[]).await.unwrap();
        let ids = |chain: Vec<Unit>| chain.into_iter().map(|u| u.id).collect::<Vec<_>>();
        assert_eq!(ids(store.ancestry("B1").await.unwrap()), ["B1", "D1", "MH"]);
        assert_eq!(ids(store.ancestry("MH").await.unwrap()), ["MH"]);
        assert!(store.ancestry("nope").await.unwrap().is_empty());
        store.close().await;
    }

    fn unit(id: &str, name: &str, parent: Option<&str>) -> Unit {
        Unit {
            id: id.into(),
            kind: "booth".into(),
            name: name.into(),
            parent: parent.map(Into::into),
        }
    }

    async fn an_import_upserts_and_removes_atomically(db: &TestDb) {
        let store = db.open().await;
        let first = [
            unit("MH", "Maharashtra", None),
            unit("D1", "Pune", Some("MH")),
            unit("B1", "Booth 1", Some("D1")),
        ];
        store.apply_org(&first, &[]).await.unwrap();
        assert_eq!(store.units().await.unwrap().len(), 3);
        // Rename one, remove one, add one.
        let second = [
            unit("D1", "Pune city", Some("MH")),
            unit("B2", "Booth 2", Some("MH")),
        ];
        store.apply_org(&second, &["B1".into()]).await.unwrap();
        let units = store.units().await.unwrap();
        let ids: Vec<&str> = units.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["B2", "D1", "MH"]);
        assert_eq!(units[1].name, "Pune city");
        assert_eq!(units[2].parent, None);
        store.close().await;
    }
}
