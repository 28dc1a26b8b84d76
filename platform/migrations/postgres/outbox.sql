-- The transactional outbox (platform::events::outbox): each event is written in the
-- transaction of its state change; the relay publishes rows and deletes them once the
-- event bus confirmed them.
CREATE TABLE outbox (
    seq         BIGSERIAL PRIMARY KEY,
    event_id    UUID NOT NULL UNIQUE,
    routing_key TEXT NOT NULL,
    payload     BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
