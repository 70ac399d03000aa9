-- Sessions revoked by sign-out, kept until their token would have expired anyway.
CREATE TABLE revoked_sessions (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX revoked_sessions_by_expiry ON revoked_sessions (expires_at);

-- Per user, the session generation below which every session is revoked (sign out everywhere),
-- kept until the last such token would have expired.
CREATE TABLE revoked_generations (
    user_id TEXT PRIMARY KEY,
    below INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX revoked_generations_by_expiry ON revoked_generations (expires_at);
