-- The embedded run's durable event bus (`<data dir>/events.db`): what RabbitMQ's durable
-- queues hold in the dev stack and the cluster. See platform/src/events/embedded.rs.

-- Which routing keys each queue receives (a queue bound to a topic exchange). Kept, so
-- events published before the consumer binds on a later start are routed as before.
CREATE TABLE bindings (
    queue   TEXT NOT NULL,
    pattern TEXT NOT NULL,
    PRIMARY KEY (queue, pattern)
);

-- Each queue's consumer generation: raised whenever a consumer binds, so the rows a dead
-- process had claimed (and never settled) are free again without rewriting them.
CREATE TABLE consumers (
    queue TEXT    NOT NULL PRIMARY KEY,
    epoch INTEGER NOT NULL
);

-- One row per event per queue, from its publication until its consumer settles it: an
-- ack deletes the row, a retry moves its due time, parking marks it (kept until replayed).
CREATE TABLE queued (
    -- AUTOINCREMENT: a settled row's number is never given to a newer one.
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    queue       TEXT    NOT NULL,
    event_id    BLOB    NOT NULL,
    routing_key TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    -- Unix milliseconds from which it may be delivered (its publication, or a retry's).
    due_at      INTEGER NOT NULL,
    -- The consumer epoch that holds it now; any other value (0: none) means it is free.
    claimed_by  INTEGER NOT NULL DEFAULT 0,
    parked_at   INTEGER,
    park_reason TEXT,
    -- A relay that publishes a batch again (it crashed before deleting its outbox rows)
    -- adds nothing while the first copy waits.
    UNIQUE (queue, event_id)
);

CREATE INDEX queued_due ON queued (queue, due_at, seq) WHERE parked_at IS NULL;
CREATE INDEX queued_parked ON queued (queue, parked_at, seq) WHERE parked_at IS NOT NULL;
