-- Members of the organisation (workers), each in one unit, and PINs.
-- A PIN is stored only as HMAC-SHA256(server key, PIN) in hex; the hash
-- is also the primary key, so a join is one indexed lookup and PINs are
-- unique across members and units. One PIN per owner.
CREATE TABLE members (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    phone   TEXT,
    unit_id TEXT NOT NULL
);

CREATE INDEX members_unit ON members (unit_id);

CREATE TABLE pins (
    hash       TEXT PRIMARY KEY,
    owner_kind TEXT NOT NULL,
    owner_id   TEXT NOT NULL,
    UNIQUE (owner_kind, owner_id)
);
