-- Search. Words are kept reduced as event duplicate keys are (case, accents and punctuation
-- dropped, in the service), so that both databases match alike. Rows made before this are
-- filled in by the service in the background once it has started (their `''`).
--
-- Words arrive with accents gone; the marks that stay (Indic vowel signs, viramas) are parts of
-- words, as on PostgreSQL. The FTS5 tables keep their own copy of the words, and each row's FTS
-- rowid is noted in `search_rowid`: a table without an INTEGER PRIMARY KEY may have its rowids
-- renumbered by VACUUM, so they cannot link the two.

-- An event's name, venue and city; its city alone, to filter by; its date on the venue's clocks
-- (YYYY-MM-DD), to filter by day.
ALTER TABLE events ADD COLUMN words TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN city_key TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN local_date TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN search_rowid INTEGER;
CREATE INDEX events_newest ON events (created_at DESC, id DESC);
CREATE INDEX events_by_city ON events (city_key, local_date);

CREATE VIRTUAL TABLE events_search USING fts5 (
    event_id UNINDEXED, words, tokenize = "unicode61 remove_diacritics 0 categories 'L* N* M* Co'"
);

CREATE TRIGGER events_search_insert AFTER INSERT ON events BEGIN
    INSERT INTO events_search (event_id, words) VALUES (new.id, new.words);
    UPDATE events SET search_rowid = last_insert_rowid() WHERE id = new.id;
END;

CREATE TRIGGER events_search_update AFTER UPDATE OF words ON events
WHEN old.words IS NOT new.words BEGIN
    DELETE FROM events_search WHERE rowid = old.search_rowid;
    INSERT INTO events_search (event_id, words) VALUES (new.id, new.words);
    UPDATE events SET search_rowid = last_insert_rowid() WHERE id = new.id;
END;

-- A ticket's title, and a copy of its event's words and start: events never change, and with
-- them here one statement serves a search, a filter or an order on them.
ALTER TABLE tickets ADD COLUMN title_words TEXT NOT NULL DEFAULT '';
ALTER TABLE tickets ADD COLUMN event_words TEXT NOT NULL DEFAULT '';
ALTER TABLE tickets ADD COLUMN event_starts_at INTEGER;
ALTER TABLE tickets ADD COLUMN search_rowid INTEGER;
-- No index orders the tickets for sale by price or by date here, unlike on PostgreSQL: every
-- reservation and release would move its ticket in each, and on the one writer that cost a
-- flash sale a fifth of its reservations a second. Sorted, the lists read their rows instead.

CREATE VIRTUAL TABLE tickets_search USING fts5 (
    ticket_id UNINDEXED, title_words, event_words, tokenize = "unicode61 remove_diacritics 0 categories 'L* N* M* Co'"
);

CREATE TRIGGER tickets_search_insert AFTER INSERT ON tickets BEGIN
    INSERT INTO tickets_search (ticket_id, title_words, event_words)
        VALUES (new.id, new.title_words, new.event_words);
    UPDATE tickets SET search_rowid = last_insert_rowid() WHERE id = new.id;
END;

-- Only when the words change: a reservation sets the title it was ordered at, mostly the same.
-- The FTS row keeps its rowid, which search reads newest first by (a row filled in only now
-- gets its first).
CREATE TRIGGER tickets_search_update AFTER UPDATE OF title_words, event_words ON tickets
WHEN old.title_words IS NOT new.title_words OR old.event_words IS NOT new.event_words BEGIN
    DELETE FROM tickets_search WHERE rowid = old.search_rowid;
    INSERT INTO tickets_search (rowid, ticket_id, title_words, event_words)
        VALUES (old.search_rowid, new.id, new.title_words, new.event_words);
    UPDATE tickets SET search_rowid = last_insert_rowid() WHERE id = new.id;
END;
