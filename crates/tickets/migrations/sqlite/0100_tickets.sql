-- Tickets listed for sale. `order_id` is set while an order holds the ticket (reserved) and
-- cleared when that order is cancelled. `version` counts every change others are told about
-- (ticket:updated), so replicas can apply changes in order.
CREATE TABLE tickets (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents > 0),
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    order_id TEXT,
    created_at INTEGER NOT NULL
);

-- The listing: tickets for sale, newest first.
CREATE INDEX tickets_for_sale ON tickets (created_at DESC, id DESC) WHERE order_id IS NULL;

-- Orders known to be cancelled. order:created and order:cancelled travel on different consumers
-- and may arrive in either order; a tombstone makes an order:created that arrives after its own
-- cancellation reserve nothing.
CREATE TABLE cancelled_orders (
    order_id TEXT PRIMARY KEY,
    ticket_id TEXT NOT NULL,
    cancelled_at INTEGER NOT NULL
);
