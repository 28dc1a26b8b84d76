-- Pending mention digests: the first @mention of an offline user starts one, due one
-- period later; the digest task mails the mentions still unread then and deletes the
-- row. Kept here, next to the processed events, so a restart loses none.
CREATE TABLE mention_digests (
    user_id  UUID        NOT NULL PRIMARY KEY,
    username TEXT        NOT NULL,
    -- Mentions from this time on belong to the digest.
    since    TIMESTAMPTZ NOT NULL,
    -- The newest mention noted (a later one keeps the row for the next digest).
    last_at  TIMESTAMPTZ NOT NULL,
    due_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX mention_digests_by_due ON mention_digests (due_at);
