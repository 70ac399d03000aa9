-- E-mail is stored trimmed and lower-cased; the unique index is what makes two concurrent
-- sign-ups with one address end in one account.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
