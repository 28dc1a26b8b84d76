-- Conversations, members, messages and presence (SQLite twin of the PostgreSQL schema;
-- UUIDs are 16-byte BLOBs, which compare byte-wise, so UUIDv7 ids sort in time order;
-- timestamps are ISO-8601 TEXT, as sqlx encodes them).
CREATE TABLE conversations (
    id         BLOB NOT NULL PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('room', 'direct')),
    -- Rooms only (NULL for directs), so UNIQUE holds among rooms.
    name       TEXT UNIQUE,
    topic      TEXT NOT NULL,
    -- Directs only: both member ids, smaller first, so a pair has one conversation.
    direct_key TEXT UNIQUE,
    created_at TEXT NOT NULL,
    CHECK ((kind = 'room') = (name IS NOT NULL)),
    CHECK ((kind = 'direct') = (direct_key IS NOT NULL))
);

CREATE TABLE memberships (
    conversation_id BLOB NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         BLOB NOT NULL,
    username        TEXT NOT NULL,
    joined_at       TEXT NOT NULL,
    last_read_id    BLOB,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);

CREATE TABLE messages (
    id              BLOB NOT NULL PRIMARY KEY,
    conversation_id BLOB NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sender_id       BLOB NOT NULL,
    sender_name     TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, id);

CREATE TABLE connections (
    id        BLOB NOT NULL PRIMARY KEY,
    user_id   BLOB NOT NULL,
    username  TEXT NOT NULL,
    broker_id TEXT NOT NULL,
    opened_at TEXT NOT NULL
);
CREATE INDEX connections_by_user ON connections (user_id);
CREATE INDEX connections_by_broker ON connections (broker_id);

CREATE TABLE last_seen (
    user_id  BLOB NOT NULL PRIMARY KEY,
    username TEXT NOT NULL,
    at       TEXT NOT NULL
);
