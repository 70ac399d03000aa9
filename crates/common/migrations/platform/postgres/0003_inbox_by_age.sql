-- The inbox is pruned by age (rows older than the retention go), so it is read by age.
CREATE INDEX inbox_by_handled_at ON inbox (handled_at);
