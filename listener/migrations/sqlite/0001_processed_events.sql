-- Events whose work is done: a redelivered event is acknowledged without doing its work
-- again (delivery is at least once). Old rows are pruned after the retention period.
CREATE TABLE processed_events (
    event_id     BLOB NOT NULL PRIMARY KEY,
    routing_key  TEXT NOT NULL,
    processed_at TEXT NOT NULL
);

CREATE INDEX processed_events_by_time ON processed_events (processed_at);
