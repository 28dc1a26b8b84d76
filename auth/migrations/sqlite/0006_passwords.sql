-- Passwords, sessions and email verification (see the PostgreSQL twin).
ALTER TABLE users ADD COLUMN email_verified_at TEXT;

ALTER TABLE sessions ADD COLUMN last_used_at TEXT;

CREATE TABLE account_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    purpose    TEXT NOT NULL CHECK (purpose IN ('reset', 'verify')),
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
);
CREATE INDEX account_tokens_by_user ON account_tokens (user_id, purpose);
