//! Operator API keys (`api_keys`), behind `sabha_signaling::KeyStore`. The
//! store sees only the hash of a key's secret; checking a presented key is
//! `sabha_signaling::keys::resolve`'s job.

use async_trait::async_trait;
use sabha_signaling::{ApiKey, KeyCredential, KeyStore, NewKey, StoreError};

use super::{Store, store_error};

type KeyRow = (
    String,
    String,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
);

fn seconds(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn unix(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}

fn key((id, name, unit, created_at, revoked_at, last_used_at): KeyRow) -> ApiKey {
    ApiKey {
        id,
        name,
        unit,
        created_at: unix(created_at),
        revoked_at: revoked_at.map(unix),
        last_used_at: last_used_at.map(unix),
    }
}

#[async_trait]
impl KeyStore for Store {
    async fn create_key(&self, new: NewKey) -> Result<ApiKey, StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, unit_id, secret_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&new.id)
        .bind(&new.name)
        .bind(&new.unit)
        .bind(&new.secret_hash)
        .bind(seconds(new.created_at))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(ApiKey {
            id: new.id,
            name: new.name,
            unit: new.unit,
            created_at: new.created_at,
            revoked_at: None,
            last_used_at: None,
        })
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT id, name, unit_id, created_at, revoked_at, last_used_at \
             FROM api_keys ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(rows.into_iter().map(key).collect())
    }

    async fn revoke_key(&self, id: &str, at: u64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(seconds(at))
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn key_credential(&self, id: &str) -> Result<Option<KeyCredential>, StoreError> {
        let row: Option<(Option<String>, String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT unit_id, secret_hash, revoked_at, last_used_at FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(row.map(
            |(unit, secret_hash, revoked_at, last_used_at)| KeyCredential {
                unit,
                secret_hash,
                revoked: revoked_at.is_some(),
                last_used_at: last_used_at.map(unix),
            },
        ))
    }

    async fn touch_key(&self, id: &str, at: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(seconds(at))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::{TestDb, on_both_backends};

    on_both_backends!(keys_are_stored_listed_and_revoked);

    async fn keys_are_stored_listed_and_revoked(db: &TestDb) {
        let store = db.open().await;
        let (secret, new) =
            sabha_signaling::keys::generate("Pune office".into(), Some("D1".into()), 100);
        let created = store.create_key(new.clone()).await.unwrap();
        assert_eq!((created.created_at, created.revoked_at), (100, None));
        let (org_secret, org) = sabha_signaling::keys::generate("Deputy".into(), None, 200);
        store.create_key(org).await.unwrap();

        let listed = store.list_keys().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0], created);
        assert_eq!(listed[1].unit, None);

        // Only the hash is stored, and resolving goes through it.
        let cred = store.key_credential(&new.id).await.unwrap().unwrap();
        assert_eq!(cred.secret_hash, new.secret_hash);
        assert!(
            !cred
                .secret_hash
                .contains(secret.rsplit('_').next().unwrap())
        );
        let scope = sabha_signaling::keys::resolve(&store, &secret, 500)
            .await
            .unwrap();
        assert_eq!(scope, Some(sabha_signaling::Scope::Unit("D1".into())));
        let scope = sabha_signaling::keys::resolve(&store, &org_secret, 500)
            .await
            .unwrap();
        assert_eq!(scope, Some(sabha_signaling::Scope::Organisation));
        let used = store.list_keys().await.unwrap();
        assert_eq!(used[0].last_used_at, Some(500));

        assert!(store.revoke_key(&new.id, 600).await.unwrap());
        assert!(!store.revoke_key(&new.id, 700).await.unwrap(), "once");
        assert!(!store.revoke_key("nosuchkey123", 700).await.unwrap());
        let cred = store.key_credential(&new.id).await.unwrap().unwrap();
        assert!(cred.revoked);
        assert_eq!(store.list_keys().await.unwrap()[0].revoked_at, Some(600));
        let refused = sabha_signaling::keys::resolve(&store, &secret, 800).await;
        assert_eq!(refused.unwrap_err().status(), 401);
        assert!(
            store
                .key_credential("nosuchkey123")
                .await
                .unwrap()
                .is_none()
        );
        store.close().await;
    }
}
