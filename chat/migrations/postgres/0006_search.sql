-- Full-text search over message bodies (issue 25): each body's words as a stored
-- `tsvector`, generated from `body`, so an UPDATE of `body` (an edit, or a deletion's
-- tombstone, whose body is '') re-indexes the row by itself, and a GIN index over them.
-- The `simple` configuration lowercases and keeps every word as written (no stemming,
-- no stop words), so every language is searched literally. Stored rather than an
-- expression index: a search walks a conversation's newest messages and tests each
-- one's words (see chat/src/store/search.rs), which must not mean parsing every body
-- again (that was 15 µs a row). GIN's fastupdate (on by default) keeps each insert's
-- share of the index small: new entries go to a pending list merged in bulk.
ALTER TABLE messages
    ADD COLUMN body_words tsvector GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED;
CREATE INDEX messages_search ON messages USING GIN (body_words);
