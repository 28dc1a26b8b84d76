-- Whether the event's audit entry reached the logger. The work and its audit are two
-- steps: a logger outage delays the audit entry (the event is retried for it alone), it
-- never repeats the work.
ALTER TABLE processed_events ADD COLUMN audited BOOLEAN NOT NULL DEFAULT FALSE;
