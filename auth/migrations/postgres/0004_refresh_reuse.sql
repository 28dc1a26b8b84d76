-- The refresh token a rotation replaced, and when: presenting it again after the grace
-- period means two parties hold the session's tokens (one of them stole them), so the
-- session ends. Only hashes, as for the current token.
ALTER TABLE sessions ADD COLUMN previous_refresh_hash TEXT;
ALTER TABLE sessions ADD COLUMN rotated_at TIMESTAMPTZ;
