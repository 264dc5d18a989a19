-- Operator API keys. A key is `sk_<id>_<secret>`: the id is public and the
-- primary key; only the SHA-256 of the secret is kept (hex), never the
-- secret. `unit_id` NULL = the whole organisation, else the unit whose
-- subtree the key may act in (no foreign key, like rooms.unit_id: the org
-- import owns units). Times are Unix seconds; `revoked_at` set = the key no
-- longer works.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    unit_id      TEXT,
    secret_hash  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
