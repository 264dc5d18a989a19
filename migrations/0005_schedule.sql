-- Rooms for a unit of the organisation, on a schedule, with a numeric code
-- for PIN join; attendance rows say which member and unit a session was.
-- Times are Unix seconds (BIGINT) like attendance's, so the scheduler's
-- window arithmetic is plain integer comparison on both backends.

-- The target unit (its subtree is the audience); NULL: the whole organisation.
ALTER TABLE rooms ADD COLUMN unit_id TEXT;
-- The first window; both NULL for a room with no schedule.
ALTER TABLE rooms ADD COLUMN starts_at BIGINT;
ALTER TABLE rooms ADD COLUMN ends_at BIGINT;
-- IANA zone the schedule is written in (recurrence repeats in wall time there).
ALTER TABLE rooms ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'UTC';
-- RRULE subset as given, NULL for a one-off.
ALTER TABLE rooms ADD COLUMN recurrence TEXT;
ALTER TABLE rooms ADD COLUMN capacity BIGINT;
-- Host ids, one per line (ids and names hold no newline).
ALTER TABLE rooms ADD COLUMN hosts TEXT NOT NULL DEFAULT '';
-- 0 or 1 (sqlx's Any driver has no SQLite boolean).
ALTER TABLE rooms ADD COLUMN lobby BIGINT NOT NULL DEFAULT 0 CHECK (lobby IN (0, 1));
-- Rooms from before this migration get their code from their id's row
-- number on first start (see Store::open); new rooms get a random one.
ALTER TABLE rooms ADD COLUMN code TEXT;
ALTER TABLE rooms ADD COLUMN status TEXT NOT NULL DEFAULT 'open'
    CHECK (status IN ('scheduled', 'open', 'ended', 'missed'));

CREATE UNIQUE INDEX rooms_code ON rooms (code);
CREATE INDEX rooms_unit ON rooms (unit_id);
CREATE INDEX rooms_starts_at ON rooms (starts_at);

ALTER TABLE attendance ADD COLUMN member_id TEXT;
ALTER TABLE attendance ADD COLUMN unit_id TEXT;
