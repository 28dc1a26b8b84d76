-- Attachments (docs/ARCHITECTURE.md, "Attachments"): one row per uploaded file, beside
-- its conversation; its bytes (and its thumbnail's) are objects in the object store
-- under keys made from the id. A row is written before its first byte is stored
-- ('uploading') and made 'ready' with its size once every byte is; until a message
-- claims it, `message_id` is NULL (an unclaimed row, or one whose upload never finished,
-- expires: the sweep deletes it with an `attachment.removed` event in one transaction,
-- and the event deletes the objects). Deleting a conversation cascades to its rows: the
-- code that deletes one writes their event in the same transaction first.
CREATE TABLE attachments (
    id              UUID        PRIMARY KEY,
    conversation_id UUID        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    uploader_id     UUID        NOT NULL,
    message_id      UUID        REFERENCES messages (id) ON DELETE SET NULL,
    -- Its place among its message's attachments.
    position        SMALLINT    NOT NULL DEFAULT 0,
    name            TEXT        NOT NULL,
    content_type    TEXT        NOT NULL,
    size            BIGINT      NOT NULL CHECK (size >= 0),
    -- Images only (PNG, JPEG, GIF, WebP); NULL otherwise.
    width           INTEGER,
    height          INTEGER,
    -- Set once the thumbnail is made (images only).
    thumbnail_type  TEXT,
    thumbnail_size  BIGINT,
    state           TEXT        NOT NULL CHECK (state IN ('uploading', 'ready')),
    created_at      TIMESTAMPTZ NOT NULL
);
-- A page of history's attachments (message_id IN ...), in their order.
CREATE INDEX attachments_by_message ON attachments (message_id, position);
-- A user's quota (the sum of their sizes) and what an account's deletion removes.
CREATE INDEX attachments_by_uploader ON attachments (uploader_id);
-- The expiry sweep: unclaimed rows, oldest first.
CREATE INDEX attachments_unclaimed ON attachments (created_at) WHERE message_id IS NULL;
-- What a conversation's deletion removes.
CREATE INDEX attachments_by_conversation ON attachments (conversation_id);
