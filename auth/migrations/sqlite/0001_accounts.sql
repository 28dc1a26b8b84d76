-- Accounts and sessions (SQLite twin of the PostgreSQL schema; UUIDs are 16-byte BLOBs,
-- timestamps ISO-8601 TEXT, as sqlx encodes them).
CREATE TABLE users (
    id            BLOB NOT NULL PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE sessions (
    id           BLOB NOT NULL PRIMARY KEY,
    user_id      BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_hash TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    revoked_at   TEXT,
    client_ip    TEXT NOT NULL,
    user_agent   TEXT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE revocations (
    session_id    BLOB    NOT NULL PRIMARY KEY,
    revoked_at_ms INTEGER NOT NULL,
    forget_after  INTEGER NOT NULL
);
CREATE INDEX revocations_by_time ON revocations (revoked_at_ms);
