-- Conversations (public rooms and 1:1 directs), their members and messages, and the
-- open sockets behind presence. Room names are stored lowercase; "C" collation makes
-- them sort byte-wise, as SQLite does.
CREATE TABLE conversations (
    id         UUID        PRIMARY KEY,
    kind       TEXT        NOT NULL CHECK (kind IN ('room', 'direct')),
    -- Rooms only (NULL for directs), so UNIQUE holds among rooms.
    name       TEXT        COLLATE "C" UNIQUE,
    topic      TEXT        NOT NULL,
    -- Directs only: both member ids, smaller first, so a pair has one conversation.
    direct_key TEXT        UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    CHECK ((kind = 'room') = (name IS NOT NULL)),
    CHECK ((kind = 'direct') = (direct_key IS NOT NULL))
);

CREATE TABLE memberships (
    conversation_id UUID        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         UUID        NOT NULL,
    username        TEXT        NOT NULL,
    joined_at       TIMESTAMPTZ NOT NULL,
    last_read_id    UUID,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);

-- Ids are UUIDv7, so (conversation_id, id) is also time order: the history cursor.
CREATE TABLE messages (
    id              UUID        PRIMARY KEY,
    conversation_id UUID        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sender_id       UUID        NOT NULL,
    sender_name     TEXT        NOT NULL,
    body            TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, id);

-- One row per open socket, over every broker instance.
CREATE TABLE connections (
    id        UUID        PRIMARY KEY,
    user_id   UUID        NOT NULL,
    username  TEXT        NOT NULL,
    broker_id TEXT        NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX connections_by_user ON connections (user_id);
CREATE INDEX connections_by_broker ON connections (broker_id);

-- When each user's last socket closed.
CREATE TABLE last_seen (
    user_id  UUID        PRIMARY KEY,
    username TEXT        NOT NULL,
    at       TIMESTAMPTZ NOT NULL
);
