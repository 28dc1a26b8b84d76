-- @mentions (SQLite twin of the PostgreSQL table): one row per member mentioned in a
-- message, written in the message's transaction.
CREATE TABLE notifications (
    id              BLOB NOT NULL PRIMARY KEY,
    user_id         BLOB NOT NULL,
    message_id      BLOB NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    conversation_id BLOB NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sender_id       BLOB NOT NULL,
    sender_name     TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    read_at         TEXT
);
CREATE INDEX notifications_by_user ON notifications (user_id, id);
CREATE INDEX notifications_unread ON notifications (user_id, id) WHERE read_at IS NULL;
CREATE INDEX notifications_by_message ON notifications (message_id);
