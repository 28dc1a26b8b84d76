-- @mentions: one row per member mentioned in a message, written in the message's
-- transaction. The list is read newest first per user (ids are UUIDv7); the unread ones
-- have an index of their own, so counting them never reads the read ones.
CREATE TABLE notifications (
    id              UUID        PRIMARY KEY,
    user_id         UUID        NOT NULL,
    message_id      UUID        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    conversation_id UUID        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sender_id       UUID        NOT NULL,
    sender_name     TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    read_at         TIMESTAMPTZ
);
CREATE INDEX notifications_by_user ON notifications (user_id, id);
CREATE INDEX notifications_unread ON notifications (user_id, id) WHERE read_at IS NULL;
CREATE INDEX notifications_by_message ON notifications (message_id);
