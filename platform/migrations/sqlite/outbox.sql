-- The transactional outbox (platform::events::outbox): each event is written in the
-- transaction of its state change; the relay publishes rows and deletes them once the
-- event bus confirmed them.
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    BLOB NOT NULL UNIQUE,
    routing_key TEXT NOT NULL,
    payload     BLOB NOT NULL,
    created_at  TEXT NOT NULL
);
