-- Search. Words are kept reduced as event duplicate keys are (case, accents and punctuation
-- dropped, in the service), so that both databases match alike; `simple` adds no stemming and no
-- stop words. Rows made before this are filled in by the service in the background once it has
-- started (their `''`).

-- An event's name, venue and city; its city alone, to filter by; its date on the venue's clocks
-- (YYYY-MM-DD), to filter by day.
ALTER TABLE events ADD COLUMN words TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN city_key TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN local_date TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN search tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', words)) STORED;
CREATE INDEX events_search ON events USING GIN (search);
CREATE INDEX events_newest ON events (created_at DESC, id DESC);
CREATE INDEX events_by_city ON events (city_key, local_date);

-- A ticket's title, and a copy of its event's words and start: events never change, and with
-- them here one index serves a search, a filter or an order on them.
ALTER TABLE tickets ADD COLUMN title_words TEXT NOT NULL DEFAULT '';
ALTER TABLE tickets ADD COLUMN event_words TEXT NOT NULL DEFAULT '';
ALTER TABLE tickets ADD COLUMN event_starts_at BIGINT;
ALTER TABLE tickets ADD COLUMN search tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', title_words || ' ' || event_words)) STORED;
-- Only tickets for sale are searched: a reservation takes its ticket's words out of the index,
-- rather than writing them again, and sold tickets do not weigh on it.
CREATE INDEX tickets_search ON tickets USING GIN (search) WHERE order_id IS NULL;
CREATE INDEX tickets_for_sale_by_price ON tickets (price_cents, id) WHERE order_id IS NULL;
-- Soonest event first; tickets of no event last.
CREATE INDEX tickets_for_sale_by_date
    ON tickets ((COALESCE(event_starts_at, 9223372036854775807)), id) WHERE order_id IS NULL;
