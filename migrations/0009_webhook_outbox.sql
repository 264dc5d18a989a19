-- Webhook outbox: one row per event and endpoint, written before the
-- fact is acknowledged and deleted never (delivered_at / failed_at tell).
-- Times are Unix milliseconds. `seq` orders rows of one endpoint by
-- creation (the writer keeps it increasing).
CREATE TABLE webhook_outbox (
    endpoint TEXT NOT NULL,
    event_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    delivered_at BIGINT,
    failed_at BIGINT,
    last_error TEXT,
    PRIMARY KEY (endpoint, event_id)
);

CREATE INDEX webhook_outbox_due ON webhook_outbox (endpoint, delivered_at, failed_at, next_attempt_at);
