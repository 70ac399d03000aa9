-- Tombstones are pruned by age (rows older than the retention go), so they are read by age.
CREATE INDEX cancelled_orders_by_age ON cancelled_orders (cancelled_at);
