-- Tombstones are pruned by age (rows older than the retention go), so they are read by age.
CREATE INDEX finished_orders_by_age ON finished_orders (finished_at);
