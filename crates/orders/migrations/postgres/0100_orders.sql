-- The orders service's replica of the tickets, fed only by ticket:created and ticket:updated.
-- `version` is the version of the last event applied; updates are applied in version order.
CREATE TABLE tickets (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents > 0),
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL
);

-- Orders placed on tickets. `expires_at` and `created_at` are unix milliseconds; `version` is
-- bumped on every change announced (order:cancelled, order:completed).
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    ticket_id TEXT NOT NULL REFERENCES tickets (id),
    status TEXT NOT NULL
        CHECK (status IN ('created', 'cancelled', 'awaiting:payment', 'complete')),
    expires_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

-- The double-sale guard: at most one order that is not cancelled per ticket. Two buyers racing
-- for one ticket both try to insert; the database lets exactly one of them in.
CREATE UNIQUE INDEX orders_one_live_order_per_ticket ON orders (ticket_id)
    WHERE status <> 'cancelled';

-- A user's orders, newest first.
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, id DESC);
