-- See the PostgreSQL twin: roles by user id, deactivated accounts, usernames taken for
-- good, and the ownership row (first owner, and the lock of role changes).
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'member'
    CHECK (role IN ('owner', 'admin', 'member'));
ALTER TABLE users ADD COLUMN deactivated_at TEXT;

CREATE TABLE usernames (
    username TEXT NOT NULL PRIMARY KEY,
    user_id  BLOB NOT NULL,
    taken_at TEXT NOT NULL
);
INSERT INTO usernames (username, user_id, taken_at) SELECT username, id, created_at FROM users;

CREATE TABLE ownership (
    id           INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    first_owner  BLOB,
    role_changes INTEGER NOT NULL DEFAULT 0
);
INSERT INTO ownership (id, first_owner) SELECT 1, NULL WHERE EXISTS (SELECT 1 FROM users);
