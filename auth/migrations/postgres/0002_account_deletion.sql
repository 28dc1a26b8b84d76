-- Deleting an account is a saga across services: the row is marked first (login refused,
-- sessions revoked), the user's data elsewhere is removed, then the row goes.
ALTER TABLE users ADD COLUMN deleting_since TIMESTAMPTZ;
CREATE INDEX users_deleting ON users (deleting_since) WHERE deleting_since IS NOT NULL;
