-- Accounts and sessions. Usernames and emails are stored lowercase, so the plain
-- UNIQUE constraints are case-insensitive uniqueness.
CREATE TABLE users (
    id            UUID        PRIMARY KEY,
    username      TEXT        NOT NULL UNIQUE,
    email         TEXT        NOT NULL UNIQUE,
    password_hash TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE sessions (
    id           UUID        PRIMARY KEY,
    user_id      UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_hash TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ,
    client_ip    TEXT        NOT NULL,
    user_agent   TEXT        NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- The revocation feed every auth replica polls: one row per ended session, kept until
-- every token of that session has expired (forget_after, epoch seconds).
CREATE TABLE revocations (
    session_id    UUID   PRIMARY KEY,
    revoked_at_ms BIGINT NOT NULL,
    forget_after  BIGINT NOT NULL
);
CREATE INDEX revocations_by_time ON revocations (revoked_at_ms);
