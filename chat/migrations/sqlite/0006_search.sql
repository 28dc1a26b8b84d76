-- Full-text search over message bodies (issue 25): an FTS5 index over `messages`
-- (external content: the words are indexed, the bodies stay in `messages` only), kept in
-- step with every insert (by the store, see below), and by triggers with every update of
-- `body` (an edit, or a deletion's tombstone, whose body is '') and delete (including
-- those cascading from a conversation). Its rows
-- are the messages' rowids, which VACUUM could renumber: chat never runs it, and after
-- one `INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')` restores the index.
-- unicode61 with remove_diacritics 2 folds case and accents, so "Élan" finds "elan".
--
-- Each message's conversation is indexed too, as one word (its id in hex, a generated
-- column that takes no space), so a search ANDs the words with the caller's
-- conversations inside FTS5 and stops at the newest matches in them, however common
-- the words are elsewhere (chat/src/store/search.rs).
ALTER TABLE messages
    ADD COLUMN conversation_key TEXT GENERATED ALWAYS AS (hex(conversation_id)) VIRTUAL;

CREATE VIRTUAL TABLE messages_fts USING fts5(
    body,
    conversation_key,
    content = 'messages',
    content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2'
);

-- New messages are indexed by the store, one INSERT ... SELECT per batch in the batch's
-- own transaction (SearchSql::index_inserted in chat/src/store/search.rs): a trigger per
-- row cost about three times as much CPU per message, on the path of every send.
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body, conversation_key)
    VALUES ('delete', old.rowid, old.body, old.conversation_key);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body, conversation_key)
    VALUES ('delete', old.rowid, old.body, old.conversation_key);
    INSERT INTO messages_fts (rowid, body, conversation_key)
    VALUES (new.rowid, new.body, new.conversation_key);
END;

-- The messages already there.
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
