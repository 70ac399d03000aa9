-- The trace context an event was written in, as a JSON object of headers (`traceparent`,
-- `tracestate`), so the relay publishes it beside the event; NULL when there was none.
ALTER TABLE outbox ADD COLUMN headers TEXT;
