-- Edits, deletes and reactions. A deleted message stays as a tombstone (its row keeps
-- its place in history, so cursors keep working): an empty body and `deleted_at` set.
ALTER TABLE messages ADD COLUMN edited_at TIMESTAMPTZ;
ALTER TABLE messages ADD COLUMN deleted_at TIMESTAMPTZ;

-- One row per user and emoji on a message; the key makes adding twice one reaction, and
-- its prefix serves both the page's counts (message_id IN ...) and one emoji's count.
CREATE TABLE reactions (
    message_id UUID        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    emoji      TEXT        NOT NULL,
    user_id    UUID        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
);
-- A deleted account's reactions go with it.
CREATE INDEX reactions_by_user ON reactions (user_id);
