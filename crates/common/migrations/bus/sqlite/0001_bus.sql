-- The embedded bus log. `seq` orders the log; `id` is the message id publishes are
-- de-duplicated by.
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    published_at INTEGER NOT NULL
);
CREATE INDEX messages_by_subject ON messages (subject, seq);

-- One row per durable consumer (group and type): how far into the log it has read.
CREATE TABLE consumers (
    name TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    cursor INTEGER NOT NULL
);

-- Messages handed to a consumer and not yet acknowledged; due again at `due_at`.
CREATE TABLE pending (
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, seq)
);
CREATE INDEX pending_by_due ON pending (consumer, due_at);

CREATE TABLE dead_letters (
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    deliveries INTEGER NOT NULL,
    reason TEXT NOT NULL,
    dead_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, seq)
);
