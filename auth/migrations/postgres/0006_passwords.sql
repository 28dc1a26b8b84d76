-- Passwords, sessions and email verification.
-- An address is verified once its owner opened a mailed link; until then only the
-- verification mail itself is sent to it. Accounts from before this migration start
-- unverified and can ask for a link from their account page.
ALTER TABLE users ADD COLUMN email_verified_at TIMESTAMPTZ;

-- The last login or refresh of a session, for "my sessions".
ALTER TABLE sessions ADD COLUMN last_used_at TIMESTAMPTZ;

-- One-time tokens of mailed links (password reset, email verification). Only the
-- SHA-256 of a token is kept; a token works once (used_at), until expires_at, and for
-- a verification only while the account still has the address it was sent to.
CREATE TABLE account_tokens (
    token_hash TEXT        PRIMARY KEY,
    purpose    TEXT        NOT NULL CHECK (purpose IN ('reset', 'verify')),
    user_id    UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email      TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ
);
CREATE INDEX account_tokens_by_user ON account_tokens (user_id, purpose);
