-- Brokers that follow some chat instance's live stream, and when one was last seen
-- doing so. Several chat instances share it: an instance whose stream from a broker ended
-- forgets that broker's sockets only if no other instance has seen the broker since,
-- and any instance sweeps the sockets of brokers nobody has seen for a while.
CREATE TABLE live_brokers (
    broker_id TEXT NOT NULL PRIMARY KEY,
    seen_at   TEXT NOT NULL
);
