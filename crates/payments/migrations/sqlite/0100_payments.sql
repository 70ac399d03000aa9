-- A replica of the orders service's orders, fed by order:created, order:cancelled and
-- order:completed in version order. `declined_attempts` is ours: it counts the declined charges
-- of the order, so that each new attempt gets a fresh idempotency key.
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents > 0),
    expires_at INTEGER NOT NULL,
    version INTEGER NOT NULL,
    declined_attempts INTEGER NOT NULL DEFAULT 0
);

-- Payments. A row is inserted as 'pending' before the card is charged (the claim) and becomes
-- 'succeeded' with the processor's id. A charge whose order is cancelled (before or after it
-- settled) becomes 'refund_due', then 'refunding' while the refund call is in flight, then
-- 'refunded'. A declined or failed claim is deleted, so the buyer may try another card.
CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (id),
    status TEXT NOT NULL CHECK (
        status IN ('pending', 'succeeded', 'refund_due', 'refunding', 'refunded')
    ),
    stripe_id TEXT,
    amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
    currency TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- One payment per order, whatever races: a second claim for the same order fails here, before
-- any card is charged.
CREATE UNIQUE INDEX payments_one_per_order ON payments (order_id);
-- Webhooks find a payment by the processor's id.
CREATE UNIQUE INDEX payments_by_stripe_id ON payments (stripe_id);
-- The refunder's work: refunds owed and refunds in flight.
CREATE INDEX payments_refund_work ON payments (updated_at)
    WHERE status IN ('refund_due', 'refunding');

-- Every refund, whoever started it: our refunder (reason 'order_cancelled') or the processor's
-- dashboard, seen through a charge.refunded webhook (reason 'processor').
CREATE TABLE refunds (
    id TEXT PRIMARY KEY,
    payment_id TEXT NOT NULL REFERENCES payments (id),
    stripe_refund_id TEXT NOT NULL UNIQUE,
    amount_cents INTEGER NOT NULL,
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Webhook events already processed: Stripe delivers at least once.
CREATE TABLE webhook_events (
    id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    received_at INTEGER NOT NULL
);

-- The sandbox processor's own books (used only without a Stripe key): every charge it made and
-- whether it was refunded. The idempotency key is unique, so a repeated request returns the
-- charge it made the first time, as Stripe does.
CREATE TABLE sandbox_charges (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    amount_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    token TEXT NOT NULL,
    order_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    refund_id TEXT UNIQUE,
    refunded_at INTEGER
);
