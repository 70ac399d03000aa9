-- The answers to writes that carried an Idempotency-Key, by user and key, so that a retry is
-- answered the same without acting again. `status` is NULL while the first request runs: it
-- holds the key until `locked_until`, and `token` names which request holds it.
CREATE TABLE idempotency_keys (
    user_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    token TEXT NOT NULL,
    locked_until BIGINT NOT NULL,
    status BIGINT,
    body TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, idempotency_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
