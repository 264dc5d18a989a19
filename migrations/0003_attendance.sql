-- Attendance: one row per WebRTC session, written when its answer goes out
-- and completed when it ends. Times are Unix seconds (BIGINT), so durations
-- are plain arithmetic on both SQLite and PostgreSQL. Rows outlive their
-- room: they are the record of who was reached.
CREATE TABLE attendance (
    session_id   TEXT PRIMARY KEY,
    room_id      TEXT NOT NULL,
    -- The token's name claim, if any.
    name         TEXT,
    role         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    joined_at    BIGINT NOT NULL,
    -- NULL while the session is open.
    left_at      BIGINT,
    leave_reason TEXT,
    packets_in   BIGINT NOT NULL DEFAULT 0,
    bytes_in     BIGINT NOT NULL DEFAULT 0,
    packets_out  BIGINT NOT NULL DEFAULT 0,
    bytes_out    BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX attendance_room ON attendance (room_id, joined_at);
CREATE INDEX attendance_open ON attendance (left_at) WHERE left_at IS NULL;

-- When the server last said it was alive: sessions it was serving when it
-- stopped are closed at that time on the next start, not at the restart.
CREATE TABLE server_heartbeat (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    alive_at BIGINT NOT NULL
);
