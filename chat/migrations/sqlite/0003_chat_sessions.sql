-- Login sessions as chat knows them, from user.logged_in / user.logged_out events
-- (the listener calls StartChatSession / EndChatSession): who is signed in, since when,
-- from which client. Kept in chat's database, so a restart of chat changes nothing.
CREATE TABLE chat_sessions (
    session_id BLOB NOT NULL PRIMARY KEY,
    user_id    BLOB NOT NULL,
    username   TEXT NOT NULL,
    started_at TEXT NOT NULL,
    expires_at TEXT,
    ended_at   TEXT,
    client_ip  TEXT NOT NULL,
    user_agent TEXT NOT NULL
);

CREATE INDEX chat_sessions_by_user ON chat_sessions (user_id);
