-- A ticket its buyer lists again is sold again: each time it is listed it is a new listing,
-- numbered from 0 (as ticket:updated announces it), and an order is placed on the listing the
-- replica shows. The double-sale guard holds per listing: at most one order that is not
-- cancelled per ticket and listing, so the paid order of an earlier listing does not hold a
-- resale back, and still holds back any other order of its own.
ALTER TABLE tickets ADD COLUMN listing BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN listing BIGINT NOT NULL DEFAULT 0;
DROP INDEX orders_one_live_order_per_ticket;
CREATE UNIQUE INDEX orders_one_live_order_per_listing ON orders (ticket_id, listing)
    WHERE status <> 'cancelled';
