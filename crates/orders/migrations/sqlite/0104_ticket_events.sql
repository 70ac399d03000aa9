-- The event a replicated ticket is for, as ticket:created announced it (never changed), so that
-- a buyer can ask for the best ticket of an event: its tickets by price, cheapest first.
ALTER TABLE tickets ADD COLUMN event_id TEXT;

CREATE INDEX tickets_of_event_by_price ON tickets (event_id, price_cents, id)
    WHERE event_id IS NOT NULL;
