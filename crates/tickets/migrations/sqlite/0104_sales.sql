-- What each sale owes its seller: the price the buyer paid less the marketplace's fee at the
-- time, recorded when the ticket changes hands. Paying it out is for the operator: `status`
-- stays 'owed' until then.
CREATE TABLE payouts (
    order_id TEXT PRIMARY KEY,
    ticket_id TEXT NOT NULL,
    seller_id TEXT NOT NULL,
    title TEXT NOT NULL,
    price_cents BIGINT NOT NULL,
    fee_cents BIGINT NOT NULL,
    owed_cents BIGINT NOT NULL,
    sold_at BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'owed'
);
CREATE INDEX payouts_by_seller ON payouts (seller_id, sold_at DESC, order_id DESC);

-- An owner may list a ticket they bought again: each listing is numbered, 0 for the first, so
-- that orders can tell the orders of one listing from another's.
ALTER TABLE tickets ADD COLUMN listing BIGINT NOT NULL DEFAULT 0;
