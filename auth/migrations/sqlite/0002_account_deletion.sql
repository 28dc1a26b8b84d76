-- See the PostgreSQL twin: accounts being deleted are marked first.
ALTER TABLE users ADD COLUMN deleting_since TEXT;
CREATE INDEX users_deleting ON users (deleting_since) WHERE deleting_since IS NOT NULL;
