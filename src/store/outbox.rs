//! The webhook outbox: one row per event and endpoint, committed before the
//! fact it reports is acknowledged, so a crash never loses an event. The
//! delivery worker (`crate::webhooks`) reads due rows and records each
//! attempt's outcome here; rows are kept (delivered or failed) as a log.
//!
//! Times are Unix milliseconds. `seq` orders the rows of one endpoint by
//! creation; [`Store::enqueue`] takes it from the caller, which keeps it
//! increasing across restarts (milliseconds × 1000 plus a counter).

use sabha_signaling::StoreError;

use super::{Store, store_error};

/// One delivery to make (or retry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    pub endpoint: String,
    pub event_id: String,
    pub seq: i64,
    pub event_type: String,
    pub body: String,
    pub created_at: i64,
    /// Attempts made so far.
    pub attempts: i64,
}

impl Store {
    /// Writes `rows` (attempts 0, due now) in one transaction.
    pub async fn enqueue(&self, rows: &[OutboxRow], now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        for row in rows {
            sqlx::query(
                "INSERT INTO webhook_outbox (endpoint, event_id, seq, event_type, body, \
                 created_at, attempts, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
            )
            .bind(&row.endpoint)
            .bind(&row.event_id)
            .bind(row.seq)
            .bind(&row.event_type)
            .bind(&row.body)
            .bind(row.created_at)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    /// Up to `limit` undelivered, not given-up rows of `endpoint` whose next
    /// attempt is due at `now`, oldest first.
    pub async fn due(
        &self,
        endpoint: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows: Vec<(String, String, i64, String, String, i64, i64)> = sqlx::query_as(
            "SELECT endpoint, event_id, seq, event_type, body, created_at, attempts \
             FROM webhook_outbox WHERE endpoint = $1 AND delivered_at IS NULL \
             AND failed_at IS NULL AND next_attempt_at <= $2 ORDER BY seq LIMIT $3",
        )
        .bind(endpoint)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(
                |(endpoint, event_id, seq, event_type, body, created_at, attempts)| OutboxRow {
                    endpoint,
                    event_id,
                    seq,
                    event_type,
                    body,
                    created_at,
                    attempts,
                },
            )
            .collect())
    }

    /// When the next pending row of `endpoint` is due, if any is pending.
    pub async fn next_due(&self, endpoint: &str) -> Result<Option<i64>, StoreError> {
        let (at,): (Option<i64>,) = sqlx::query_as(
            "SELECT MIN(next_attempt_at) FROM webhook_outbox WHERE endpoint = $1 \
             AND delivered_at IS NULL AND failed_at IS NULL",
        )
        .bind(endpoint)
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(at)
    }

    /// Records a 2xx answer.
    pub async fn mark_delivered(
        &self,
        endpoint: &str,
        event_id: &str,
        attempts: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_outbox SET delivered_at = $1, attempts = $2, last_error = NULL \
             WHERE endpoint = $3 AND event_id = $4",
        )
        .bind(now)
        .bind(attempts)
        .bind(endpoint)
        .bind(event_id)
        .execute(&self.pool)
        .await
        .map_err(store_error)
        .map(drop)
    }

    /// Records a failed attempt and when to try again.
    pub async fn schedule_retry(
        &self,
        endpoint: &str,
        event_id: &str,
        attempts: i64,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_outbox SET attempts = $1, next_attempt_at = $2, last_error = $3 \
             WHERE endpoint = $4 AND event_id = $5",
        )
        .bind(attempts)
        .bind(next_attempt_at)
        .bind(error)
        .bind(endpoint)
        .bind(event_id)
        .execute(&self.pool)
        .await
        .map_err(store_error)
        .map(drop)
    }

    /// Gives up on a row after its last attempt.
    pub async fn mark_failed(
        &self,
        endpoint: &str,
        event_id: &str,
        attempts: i64,
        now: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_outbox SET failed_at = $1, attempts = $2, last_error = $3 \
             WHERE endpoint = $4 AND event_id = $5",
        )
        .bind(now)
        .bind(attempts)
        .bind(error)
        .bind(endpoint)
        .bind(event_id)
        .execute(&self.pool)
        .await
        .map_err(store_error)
        .map(drop)
    }

    /// Rows neither delivered nor given up, over every endpoint.
    pub async fn outbox_pending(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(n)
    }

    /// The largest `seq` written, so a restarted writer continues above it.
    pub async fn outbox_max_seq(&self) -> Result<i64, StoreError> {
        let (n,): (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM webhook_outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(n.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::{TestDb, on_both_backends};

    on_both_backends!(
        enqueued_rows_are_due_in_order_per_endpoint,
        delivered_and_failed_rows_are_no_longer_due,
        a_retry_waits_until_its_time
    );

    fn row(endpoint: &str, id: &str, seq: i64) -> OutboxRow {
        OutboxRow {
            endpoint: endpoint.into(),
            event_id: id.into(),
            seq,
            event_type: "room_started".into(),
            body: format!(r#"{{"id":"{id}"}}"#),
            created_at: 1_000,
            attempts: 0,
        }
    }

    async fn enqueued_rows_are_due_in_order_per_endpoint(db: &TestDb) {
        let store = db.open().await;
        let rows = [
            row("http://a", "e2", 2),
            row("http://a", "e1", 1),
            row("http://b", "e1", 1),
        ];
        store.enqueue(&rows, 1_000).await.unwrap();
        let due = store.due("http://a", 1_000, 10).await.unwrap();
        let ids: Vec<&str> = due.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(ids, ["e1", "e2"]);
        assert_eq!(due[0], row("http://a", "e1", 1));
        assert_eq!(store.due("http://a", 1_000, 1).await.unwrap().len(), 1);
        assert_eq!(store.due("http://b", 1_000, 10).await.unwrap().len(), 1);
        assert_eq!(store.outbox_pending().await.unwrap(), 3);
        assert_eq!(store.outbox_max_seq().await.unwrap(), 2);
        assert_eq!(store.next_due("http://a").await.unwrap(), Some(1_000));
        // The same event twice for one endpoint is refused, all or none.
        assert!(
            store
                .enqueue(&[row("http://c", "x", 3), row("http://a", "e1", 4)], 1_000)
                .await
                .is_err()
        );
        assert!(store.due("http://c", 1_000, 10).await.unwrap().is_empty());
        store.close().await;
    }

    async fn delivered_and_failed_rows_are_no_longer_due(db: &TestDb) {
        let store = db.open().await;
        store
            .enqueue(&[row("http://a", "e1", 1), row("http://a", "e2", 2)], 1_000)
            .await
            .unwrap();
        store
            .mark_delivered("http://a", "e1", 1, 1_100)
            .await
            .unwrap();
        store
            .mark_failed("http://a", "e2", 5, 1_200, "HTTP 500")
            .await
            .unwrap();
        assert!(store.due("http://a", 9_999, 10).await.unwrap().is_empty());
        assert_eq!(store.outbox_pending().await.unwrap(), 0);
        assert_eq!(store.next_due("http://a").await.unwrap(), None);
        store.close().await;
    }

    async fn a_retry_waits_until_its_time(db: &TestDb) {
        let store = db.open().await;
        store
            .enqueue(&[row("http://a", "e1", 1)], 1_000)
            .await
            .unwrap();
        store
            .schedule_retry("http://a", "e1", 1, 3_000, "connection refused")
            .await
            .unwrap();
        assert!(store.due("http://a", 2_999, 10).await.unwrap().is_empty());
        assert_eq!(store.next_due("http://a").await.unwrap(), Some(3_000));
        let due = store.due("http://a", 3_000, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].attempts, 1);
        assert_eq!(store.outbox_pending().await.unwrap(), 1);
        store.close().await;
    }
}
