-- Rooms: the only persistent state of the server (sessions live in the media
-- driver and die with it). Plain types and no SQLite-only syntax, so the same
-- file runs on PostgreSQL later.
CREATE TABLE rooms (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('rally', 'bridge')),
    -- RFC 3339 UTC with second precision, so text order is time order.
    created_at TEXT NOT NULL
);

CREATE INDEX rooms_created_at ON rooms (created_at);
