-- Mails sent, by the caller's idempotency key (the listener passes the event id): a
-- retried call after a restart of this service is answered from here, not sent again.
-- Rows older than the retention period are pruned.
CREATE TABLE sent_mails (
    idempotency_key TEXT        NOT NULL PRIMARY KEY,
    message_id      TEXT        NOT NULL,
    sent_at         TEXT        NOT NULL
);

CREATE INDEX sent_mails_by_time ON sent_mails (sent_at);
