-- Events people buy tickets for. Times are unix milliseconds; `time_zone` is the venue's IANA
-- zone, in which the start is shown. `duplicate_key` is the name and venue reduced to their words
-- and the start's minute: unique, so one event created twice, even at once, is stored once.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    venue TEXT NOT NULL,
    city TEXT NOT NULL,
    starts_at INTEGER NOT NULL,
    time_zone TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    duplicate_key TEXT NOT NULL UNIQUE
);

-- Events soonest first.
CREATE INDEX events_by_start ON events (starts_at, id);

-- A ticket may be for an event, set when it is listed, and then may name its seat.
ALTER TABLE tickets ADD COLUMN event_id TEXT REFERENCES events (id);
ALTER TABLE tickets ADD COLUMN seat_section TEXT;
ALTER TABLE tickets ADD COLUMN seat_row TEXT;
ALTER TABLE tickets ADD COLUMN seat TEXT;

-- An event's tickets for sale, cheapest first.
CREATE INDEX tickets_of_event_for_sale ON tickets (event_id, price_cents, id)
    WHERE order_id IS NULL AND event_id IS NOT NULL;
