-- Full-text search over message bodies (issue 25): an FTS5 index over `messages`
-- (external content: the words are indexed, the bodies stay in `messages` only), kept in
-- step by triggers on every insert, update of `body` (an edit, or a deletion's tombstone,
-- whose body is '') and delete (including those cascading from a conversation). Its rows
-- are the messages' rowids, which VACUUM could renumber: chat never runs it, and after
-- one `INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')` restores the index.
-- unicode61 with remove_diacritics 2 folds case and accents, so "Élan" finds "elan".
CREATE VIRTUAL TABLE messages_fts USING fts5(
    body,
    content = 'messages',
    content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES (new.rowid, new.body);
END;

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.rowid, old.body);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.rowid, old.body);
    INSERT INTO messages_fts (rowid, body) VALUES (new.rowid, new.body);
END;

-- The messages already there.
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
