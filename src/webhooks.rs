//! Webhook delivery: the binary's [`EventSink`] and the worker that POSTs
//! what it records.
//!
//! At least once, through the database: [`OutboxSink::publish`] writes one
//! outbox row per event and endpoint (one transaction, committed before the
//! handler answers) and wakes the endpoint's worker. Each endpoint has its
//! own tokio task ([`spawn`]), so one slow or dead receiver delays only its
//! own events. A worker takes due rows oldest first and POSTs them one at a
//! time (blocking `ureq` in `spawn_blocking`, timeout [`Delivery::timeout`]):
//! a 2xx marks a row delivered; anything else (connection error, timeout,
//! other status) schedules a retry after [`backoff`] — 1 s, 2 s, 4 s …
//! capped at 10 min, each plus up to 25 % jitter — until
//! [`Delivery::max_attempts`], when the row is marked failed and logged.
//! After a restart the workers start with whatever is still pending.
//!
//! Ordering: the first attempts of one endpoint's events go out one at a
//! time in creation order; a retried event may arrive after later ones.
//! Receivers that care order by the body's `created_at` and de-duplicate
//! by `webhook-id` (the same on every retry).
//!
//! Metrics: `sabha_webhook_deliveries_total{result="ok|retried|failed"}`,
//! `sabha_webhook_outbox_pending`, `sabha_webhook_publish_errors_total`.

pub mod sign;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use sabha_signaling::{EventSink, StoreError, WebhookEvent};
use tokio::sync::Notify;

use crate::store::{OutboxRow, Store};
pub use sign::SigningKey;

/// Rows a worker reads at once.
const BATCH: i64 = 100;
/// How often the pending gauge is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(5);
/// Longest a worker sleeps without looking (a wake-up is never needed for
/// correctness, only for speed).
const IDLE_POLL: Duration = Duration::from_secs(30);

/// How deliveries are made and retried.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The first retry's delay; each further one doubles it.
    pub retry_base: Duration,
    /// The longest delay between two attempts.
    pub retry_cap: Duration,
    /// Attempts before a row is given up (marked failed).
    pub max_attempts: u32,
    /// Per attempt: connect, send, and the receiver's answer.
    pub timeout: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(600),
            max_attempts: 15,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The delay after the `failures`-th failed attempt (1-based), before
/// jitter: `base × 2^(failures−1)`, at most `cap`.
pub fn backoff(delivery: &Delivery, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1));
    delivery
        .retry_base
        .saturating_mul(factor)
        .min(delivery.retry_cap)
}

/// [`backoff`] plus up to a quarter more, at random, so that receivers
/// coming back are not hit by every sender at the same instant.
fn jittered(delivery: &Delivery, failures: u32) -> Duration {
    let delay = backoff(delivery, failures);
    delay + delay.mul_f64(rand::rng().random_range(0.0..0.25))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One endpoint and the worker's doorbell.
struct Endpoint {
    url: String,
    wake: Notify,
}

/// The [`EventSink`] of the server: outbox rows in the database.
pub struct OutboxSink {
    store: Arc<Store>,
    endpoints: Vec<Arc<Endpoint>>,
    /// Last `seq` handed out: strictly increasing, above every stored one.
    seq: AtomicI64,
}

impl OutboxSink {
    /// The sink for `urls` (none: events are dropped), continuing `seq`
    /// above what the outbox holds.
    pub async fn new(store: Arc<Store>, urls: &[String]) -> Result<Self, StoreError> {
        let stored = store.outbox_max_seq().await?;
        Ok(Self {
            store,
            endpoints: urls
                .iter()
                .map(|url| {
                    Arc::new(Endpoint {
                        url: url.clone(),
                        wake: Notify::new(),
                    })
                })
                .collect(),
            seq: AtomicI64::new(stored.max(now_ms().saturating_mul(1000))),
        })
    }

    fn next_seq(&self) -> i64 {
        let floor = now_ms().saturating_mul(1000);
        let previous = self
            .seq
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(last.saturating_add(1).max(floor))
            })
            .unwrap_or(floor);
        previous.saturating_add(1).max(floor)
    }
}

#[async_trait]
impl EventSink for OutboxSink {
    async fn publish(&self, events: &[WebhookEvent]) -> Result<(), StoreError> {
        if self.endpoints.is_empty() || events.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(events.len() * self.endpoints.len());
        for event in events {
            let seq = self.next_seq();
            let body = event.body();
            for endpoint in &self.endpoints {
                rows.push(OutboxRow {
                    endpoint: endpoint.url.clone(),
                    event_id: event.id.clone(),
                    seq,
                    event_type: event.event_type.as_str().to_owned(),
                    body: body.clone(),
                    created_at: event.created_at_ms,
                    attempts: 0,
                });
            }
        }
        if let Err(error) = self.store.enqueue(&rows, now_ms()).await {
            metrics::counter!("sabha_webhook_publish_errors_total").increment(events.len() as u64);
            return Err(error);
        }
        for endpoint in &self.endpoints {
            endpoint.wake.notify_one();
        }
        Ok(())
    }
}

/// Starts one delivery worker per endpoint of `sink`, and the pending gauge.
pub fn spawn(sink: &OutboxSink, key: SigningKey, delivery: Delivery) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(delivery.timeout))
        .http_status_as_error(false)
        .build()
        .new_agent();
    for endpoint in &sink.endpoints {
        let worker = Worker {
            store: sink.store.clone(),
            endpoint: endpoint.clone(),
            key: key.clone(),
            delivery: delivery.clone(),
            agent: agent.clone(),
        };
        tokio::spawn(worker.run());
    }
    let store = sink.store.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(GAUGE_EVERY);
        loop {
            tick.tick().await;
            match store.outbox_pending().await {
                Ok(n) => metrics::gauge!("sabha_webhook_outbox_pending").set(n as f64),
                Err(error) => tracing::warn!(%error, "webhook outbox not readable"),
            }
        }
    });
}

struct Worker {
    store: Arc<Store>,
    endpoint: Arc<Endpoint>,
    key: SigningKey,
    delivery: Delivery,
    agent: ureq::Agent,
}

impl Worker {
    async fn run(self) {
        let url = self.endpoint.url.clone();
        loop {
            let now = now_ms();
            match self.store.due(&url, now, BATCH).await {
                Ok(rows) if !rows.is_empty() => {
                    for row in rows {
                        self.attempt(row).await;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, endpoint = %url, "webhook outbox not readable")
                }
            }
            let wait = match self.store.next_due(&url).await {
                Ok(Some(at)) => Duration::from_millis(u64::try_from(at - now).unwrap_or(0)),
                _ => IDLE_POLL,
            };
            let _ = tokio::time::timeout(wait.min(IDLE_POLL), self.endpoint.wake.notified()).await;
        }
    }

    /// One POST of `row`, and its outcome recorded.
    async fn attempt(&self, row: OutboxRow) {
        let attempts = row.attempts.saturating_add(1);
        let outcome = self.post(&row).await;
        let url = &self.endpoint.url;
        let recorded = match outcome {
            Ok(()) => {
                metrics::counter!("sabha_webhook_deliveries_total", "result" => "ok").increment(1);
                self.store
                    .mark_delivered(url, &row.event_id, attempts, now_ms())
                    .await
            }
            Err(error) if attempts >= i64::from(self.delivery.max_attempts) => {
                metrics::counter!("sabha_webhook_deliveries_total", "result" => "failed")
                    .increment(1);
                tracing::error!(endpoint = %url, event = %row.event_id, attempts, %error,
                    "webhook given up");
                self.store
                    .mark_failed(url, &row.event_id, attempts, now_ms(), &error)
                    .await
            }
            Err(error) => {
                metrics::counter!("sabha_webhook_deliveries_total", "result" => "retried")
                    .increment(1);
                let failures = u32::try_from(attempts).unwrap_or(u32::MAX);
                let delay = jittered(&self.delivery, failures);
                tracing::warn!(endpoint = %url, event = %row.event_id, attempts, %error,
                    retry_in_ms = delay.as_millis() as u64, "webhook delivery failed");
                let at =
                    now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                self.store
                    .schedule_retry(url, &row.event_id, attempts, at, &error)
                    .await
            }
        };
        if let Err(error) = recorded {
            // The row stays due: it is sent again (at least once), after a
            // pause so that a read-only database is not a busy loop.
            tracing::warn!(%error, endpoint = %url, "webhook outcome not recorded");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// POSTs `row` signed; `Err` with a short reason unless the answer is 2xx.
    async fn post(&self, row: &OutboxRow) -> Result<(), String> {
        let timestamp = now_ms() / 1000;
        let signature = self.key.sign(&row.event_id, timestamp, &row.body);
        let agent = self.agent.clone();
        let url = self.endpoint.url.clone();
        let id = row.event_id.clone();
        let body = row.body.clone();
        let answer = tokio::task::spawn_blocking(move || {
            agent
                .post(&url)
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", &signature)
                .header("user-agent", concat!("sabha/", env!("CARGO_PKG_VERSION")))
                .content_type("application/json")
                .send(body)
                .map(|response| response.status().as_u16())
        })
        .await;
        match answer {
            Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
            Ok(Ok(status)) => Err(format!("HTTP {status}")),
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(format!("delivery task failed: {error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let d = Delivery::default();
        let secs: Vec<u64> = (1..=12).map(|n| backoff(&d, n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(backoff(&d, u32::MAX), Duration::from_secs(600));
        let fast = Delivery {
            retry_base: Duration::from_millis(100),
            ..Delivery::default()
        };
        assert_eq!(backoff(&fast, 3), Duration::from_millis(400));
    }

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        let d = Delivery::default();
        for n in 1..=12 {
            let base = backoff(&d, n);
            for _ in 0..50 {
                let j = jittered(&d, n);
                assert!(
                    j >= base && j < base + base / 4 + Duration::from_millis(1),
                    "{n}: {j:?}"
                );
            }
        }
    }
}
