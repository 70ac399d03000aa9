-- When the account was announced as user:created (unix millis). Accounts made before the event
-- existed have none until the service announces them at start; the index holds only those, so
-- that looking for them costs nothing once they are announced.
ALTER TABLE users ADD COLUMN announced_at INTEGER;
CREATE INDEX users_unannounced ON users (id) WHERE announced_at IS NULL;
