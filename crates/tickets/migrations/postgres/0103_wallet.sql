-- Tickets change hands: sold to a buyer when the order is paid, or sent on by their owner.
-- `bought_with` is the order that took the ticket off the market for good (null while its first
-- seller has it); the owner keeps it while `order_id` is that order. `acquired_at` is when the
-- owner bought it or was sent it, the order of their wallet.
ALTER TABLE tickets ADD COLUMN bought_with TEXT;
ALTER TABLE tickets ADD COLUMN acquired_at BIGINT;
CREATE INDEX tickets_owned ON tickets (user_id, acquired_at DESC, id DESC)
    WHERE bought_with IS NOT NULL;

-- Accounts as auth announces them, to send a ticket to one by e-mail.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE
);

-- Each change of hands: `sold` (with the price paid and the order) or `sent`.
CREATE TABLE ticket_history (
    id TEXT PRIMARY KEY,
    ticket_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    from_user_id TEXT NOT NULL,
    to_user_id TEXT NOT NULL,
    price_cents BIGINT,
    order_id TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX ticket_history_by_ticket ON ticket_history (ticket_id, at, id);
