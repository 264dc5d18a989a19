-- The organisation: units of a hierarchy (state → district → assembly seat
-- → mandal → booth, or whatever the organisation calls its levels), each
-- with the operator's own id and an optional parent. No foreign key: an
-- import brings children and parents together in any order, and the
-- server checks the whole tree (every parent exists, no cycles) before it
-- writes anything.
CREATE TABLE units (
    id        TEXT PRIMARY KEY,
    kind      TEXT NOT NULL,
    name      TEXT NOT NULL,
    parent_id TEXT
);

CREATE INDEX units_parent ON units (parent_id);
