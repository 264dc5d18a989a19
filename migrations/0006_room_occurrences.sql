-- What became of each window of a scheduled room: held (the server opened
-- the room for it) or missed (it passed while the server was down). The
-- scheduler goes on from the latest recorded window, so a restart neither
-- reopens a window it already held nor forgets one it missed.
CREATE TABLE room_occurrences (
    room_id   TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at   BIGINT NOT NULL,
    outcome   TEXT NOT NULL CHECK (outcome IN ('held', 'missed')),
    PRIMARY KEY (room_id, starts_at)
);
