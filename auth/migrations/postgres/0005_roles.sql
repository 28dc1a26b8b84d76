-- Roles by user id (never by name), accounts an administrator deactivated (the name and
-- the data stay; logins are refused), and usernames that stay taken for good.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'member'
    CHECK (role IN ('owner', 'admin', 'member'));
ALTER TABLE users ADD COLUMN deactivated_at TIMESTAMPTZ;

-- Every username ever registered. Rows are never deleted, so a deleted account's name is
-- never handed to a newcomer (who would otherwise inherit its mentions and history).
CREATE TABLE usernames (
    username TEXT        PRIMARY KEY,
    user_id  UUID        NOT NULL,
    taken_at TIMESTAMPTZ NOT NULL
);
INSERT INTO usernames (username, user_id, taken_at) SELECT username, id, created_at FROM users;

-- One row, inserted by the first registration (which makes that account the owner): two
-- concurrent first registrations cannot both insert it. Role changes update it first, so
-- they run one at a time and "the last owner stays" holds under concurrency. An install
-- that already has accounts gets the row without an owner: nobody is promoted by an
-- upgrade; the operator names one with `microchat admin grant USER --role owner`.
CREATE TABLE ownership (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    first_owner  UUID,
    role_changes BIGINT  NOT NULL DEFAULT 0
);
INSERT INTO ownership (id, first_owner) SELECT 1, NULL WHERE EXISTS (SELECT 1 FROM users);
