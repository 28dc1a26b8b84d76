-- Edits, deletes and reactions (SQLite twin of the PostgreSQL migration). A deleted
-- message stays as a tombstone: an empty body and `deleted_at` set.
ALTER TABLE messages ADD COLUMN edited_at TEXT;
ALTER TABLE messages ADD COLUMN deleted_at TEXT;

CREATE TABLE reactions (
    message_id BLOB NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    emoji      TEXT NOT NULL,
    user_id    BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
);
CREATE INDEX reactions_by_user ON reactions (user_id);
