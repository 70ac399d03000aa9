-- Headers published beside a message (the W3C trace context), as a JSON object; NULL when none.
ALTER TABLE messages ADD COLUMN headers TEXT;
