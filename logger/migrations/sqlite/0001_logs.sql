-- Log entries of the embedded run (MongoDB holds them in the dev stack and the cluster).
-- Ids are UUIDv7 as 16-byte BLOBs, which compare byte-wise, so they sort in time order;
-- times are milliseconds since the Unix epoch, the grain of MongoDB's dates, so both
-- stores order and page entries alike. `data` is the text of a JSON object.
CREATE TABLE logs (
    id         BLOB    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    level      TEXT    NOT NULL CHECK (level IN ('trace', 'debug', 'info', 'warn', 'error')),
    service    TEXT    NOT NULL,
    user_id    BLOB,
    trace_id   TEXT,
    created_at INTEGER NOT NULL
);

-- Pages sort by (created_at, id), newest first, so the indexes serving a filter end with
-- both and a page is read off an index, never sorted; the purge walks logs_by_time too.
-- SQLite cannot merge the ranges of `level IN (...)`, so the service index leaves the
-- level out (MongoDB's has it: it merges them) and checks it row by row instead.
CREATE INDEX logs_by_time ON logs (created_at, id);
CREATE INDEX logs_by_service ON logs (service, created_at, id);
CREATE INDEX logs_by_trace ON logs (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX logs_by_user ON logs (user_id, created_at, id) WHERE user_id IS NOT NULL;
