-- Signing out everywhere raises a user's session generation; tokens carry the generation they were
-- issued under, and every service refuses those below the one it heard of last.
ALTER TABLE users ADD COLUMN session_generation INTEGER NOT NULL DEFAULT 0;
