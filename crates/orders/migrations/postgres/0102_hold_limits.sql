-- When an order stopped being live (paid, cancelled or lapsed), in unix milliseconds: a buyer
-- who released a ticket waits a while before holding it again. Orders that ended before this
-- column have no time, and so no wait.
ALTER TABLE orders ADD COLUMN finished_at BIGINT;

-- A buyer's live holds, counted before each new one.
CREATE INDEX orders_live_by_user ON orders (user_id)
    WHERE status IN ('created', 'awaiting:payment');
