-- When the event a replicated ticket is for starts (unix milliseconds), as ticket:created
-- announced it (never changed): its sale ends then, and so does any hold on it.
ALTER TABLE tickets ADD COLUMN sale_ends_at INTEGER;
