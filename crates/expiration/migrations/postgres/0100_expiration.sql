-- One job per live order, due when the order's payment window closes (`due_at`, the order's
-- expiresAt in unix milliseconds). The scheduler announces expiration:complete and deletes the job
-- in one transaction, so each job fires once.
CREATE TABLE jobs (
    order_id TEXT PRIMARY KEY,
    due_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The scheduler's two questions: which jobs are due, and when is the next one.
CREATE INDEX jobs_by_due_at ON jobs (due_at);

-- Orders whose window is over: cancelled, completed (paid) or expired. order:created travels on
-- its own consumer and may arrive late or again; a tombstone keeps it from scheduling a job for
-- an order that is already over.
CREATE TABLE finished_orders (
    order_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL CHECK (reason IN ('cancelled', 'completed', 'expired')),
    finished_at BIGINT NOT NULL
);
