-- Full-text search over message bodies (issue 25). An expression index, not a stored
-- column: the words of a body are only ever needed to find it, so the table stays as it
-- is and an UPDATE of `body` (an edit, or a deletion's tombstone, whose body is '')
-- re-indexes the row by itself. The `simple` configuration lowercases and keeps every
-- word as written (no stemming, no stop words), so every language is searched literally.
-- The query must use the same expression: to_tsvector('simple', body). GIN's fastupdate
-- (on by default) keeps the cost of each insert small: new entries go to a pending list
-- merged in bulk.
CREATE INDEX messages_search ON messages USING GIN (to_tsvector('simple', body));
