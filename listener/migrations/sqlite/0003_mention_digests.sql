-- Pending mention digests (SQLite twin of the PostgreSQL table): the first @mention of
-- an offline user starts one, due one period later; a restart loses none.
CREATE TABLE mention_digests (
    user_id  BLOB NOT NULL PRIMARY KEY,
    username TEXT NOT NULL,
    since    TEXT NOT NULL,
    last_at  TEXT NOT NULL,
    due_at   TEXT NOT NULL
);
CREATE INDEX mention_digests_by_due ON mention_digests (due_at);
