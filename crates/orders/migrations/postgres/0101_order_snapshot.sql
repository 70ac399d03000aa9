-- An order keeps the ticket as its buyer saw it when placing it: the title, the price and the
-- ticket's version. What the order shows and charges no longer follows the seller's later edits.
-- Orders placed before this take their ticket as the replica holds it now.
ALTER TABLE orders ADD COLUMN title TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN price_cents BIGINT NOT NULL DEFAULT 1 CHECK (price_cents > 0);
ALTER TABLE orders ADD COLUMN ticket_version BIGINT NOT NULL DEFAULT 0;
UPDATE orders SET
    title = (SELECT tickets.title FROM tickets WHERE tickets.id = orders.ticket_id),
    price_cents = (SELECT tickets.price_cents FROM tickets WHERE tickets.id = orders.ticket_id),
    ticket_version = (SELECT tickets.version FROM tickets WHERE tickets.id = orders.ticket_id);
-- The defaults only filled the rows already there; every order is written with its snapshot.
ALTER TABLE orders
    ALTER COLUMN title DROP DEFAULT,
    ALTER COLUMN price_cents DROP DEFAULT,
    ALTER COLUMN ticket_version DROP DEFAULT;
